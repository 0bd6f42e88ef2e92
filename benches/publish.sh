#!/usr/bin/env bash
# Publish latency of the private store: SQLite (the embedded default) against the sled store of
# earlier releases, measured in the same run.
#
#   benches/publish.sh [--rounds R] [--quick] [--dir DIR]
#
# Builds `examples/publish_latency.rs` in release and runs it: one in-process RegistryService
# per backend (metadata store + blob files, in a temp dir under DIR, default the system temp
# dir), real publish bodies through `RegistryService::publish`, rounds alternating between the
# backends. Times sequential publishes (new crates, new versions), yanks, a concurrent batch
# (8 tasks at once) and the two halves of a publish (metadata commit, blob write) on their own.
# No network at all. Prints a Markdown table (p50/p99/mean per backend, SQLite/sled ratios).
# DIR should be on the disk a daemon would use (on tmpfs fsync is free).

set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
case "${1:-}" in
    -h | --help)
        sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

cd "$ROOT"
cargo build --release --locked --example publish_latency >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-$ROOT/target}"
exec "$TARGET_DIR/release/examples/publish_latency" "$@"
