#!/usr/bin/env bash
# What distinct anonymous misses cost: daemon RSS, on-disk cache bytes and upstream requests
# before and after N requests for distinct valid names the upstream does not have.
#
#   benches/misses.sh [--daemon PATH] [--names N] [--concurrency C] [--settle SECS]
#
# Builds the release daemon and `examples/miss_cost.rs`, which starts a fake upstream (404 for
# every index file) and the daemon on 127.0.0.1 only, sends the misses, measures, waits SETTLE
# seconds (default 75, past the default `negative_ttl` of 60 s), measures, restarts the daemon
# and measures again. `--daemon` measures another build (e.g. an older commit's binary) with the
# same harness. Prints a Markdown table.

set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DAEMON=""
NAMES=10000
CONC=32
SETTLE=75
while [ $# -gt 0 ]; do
    case "$1" in
        --daemon) DAEMON="$2"; shift ;;
        --names) NAMES="$2"; shift ;;
        --concurrency) CONC="$2"; shift ;;
        --settle) SETTLE="$2"; shift ;;
        -h | --help)
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "misses.sh: unknown argument \`$1\` (try --help)" >&2
            exit 64
            ;;
    esac
    shift
done

cd "$ROOT"
cargo build --release --locked >&2
cargo build --release --locked --example miss_cost >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-$ROOT/target}"
DAEMON="${DAEMON:-$TARGET_DIR/release/cargohold}"
[ -x "$DAEMON" ] || { echo "misses.sh: no daemon binary at $DAEMON" >&2; exit 1; }
exec "$TARGET_DIR/release/examples/miss_cost" "$DAEMON" "$NAMES" "$CONC" "$SETTLE"
