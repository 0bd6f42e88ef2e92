#!/usr/bin/env bash
# Publish latency of the private store: SQLite (the embedded default) against the sled store of
# earlier releases and the shared store of several nodes (PostgreSQL + S3), measured in the same
# run.
#
#   benches/publish.sh [--engines] [--rounds R] [--quick] [--dir DIR]
#
# PostgreSQL + S3 is measured when CARGOHOLD_TEST_POSTGRES_URL and CARGOHOLD_TEST_S3_* name
# the engines (as for the tests); with --engines, this script starts throwaway ones on loopback
# (.ci/pg-start.sh, .ci/ceph-start.sh) and stops them by PID at the end.
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
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

cd "$ROOT"
args=()
engines=""
for a in "$@"; do
    if [ "$a" = "--engines" ]; then engines=1; else args+=("$a"); fi
done
pg_pid=""
pg_dir=""
ceph_pids=""
ceph_dir=""
stop_engines() {
    if [ -n "$pg_pid" ]; then
        kill -INT "$pg_pid" 2>/dev/null || true
        while kill -0 "$pg_pid" 2>/dev/null; do sleep 0.1; done
    fi
    if [ -n "$pg_dir" ]; then rm -rf "$pg_dir"; fi
    for p in $ceph_pids; do kill "$p" 2>/dev/null || true; done
    if [ -n "$ceph_dir" ]; then
        for p in $ceph_pids; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
        rm -rf "$ceph_dir"
    fi
}
trap stop_engines EXIT
if [ -n "$engines" ] && [ -z "${CARGOHOLD_TEST_POSTGRES_URL:-}" ]; then
    info=$(PGPORT="${CARGOHOLD_CI_PGPORT:-15432}" "$ROOT/.ci/pg-start.sh")
    pg_pid=$(sed -n 's/^PID=//p' <<<"$info")
    pg_dir=$(sed -n 's/^PG_DIR=//p' <<<"$info")
    export CARGOHOLD_TEST_POSTGRES_URL
    CARGOHOLD_TEST_POSTGRES_URL=$(sed -n 's/^DATABASE_URL=//p' <<<"$info")
fi
if [ -n "$engines" ] && [ -z "${CARGOHOLD_TEST_S3_ENDPOINT:-}" ]; then
    info=$(RGW_PORT="${CARGOHOLD_CI_RGW_PORT:-17480}" MON_PORT="${CARGOHOLD_CI_MON_PORT:-16789}" "$ROOT/.ci/ceph-start.sh")
    ceph_pids=$(sed -n 's/^PIDS=//p' <<<"$info")
    ceph_dir=$(sed -n 's/^CEPH_DIR=//p' <<<"$info")
    export CARGOHOLD_TEST_S3_ENDPOINT CARGOHOLD_TEST_S3_BUCKET CARGOHOLD_TEST_S3_ACCESS_KEY CARGOHOLD_TEST_S3_SECRET_KEY
    CARGOHOLD_TEST_S3_ENDPOINT=$(sed -n 's/^S3_ENDPOINT=//p' <<<"$info")
    CARGOHOLD_TEST_S3_BUCKET=$(sed -n 's/^S3_BUCKET=//p' <<<"$info")
    CARGOHOLD_TEST_S3_ACCESS_KEY=$(sed -n 's/^S3_ACCESS_KEY=//p' <<<"$info")
    CARGOHOLD_TEST_S3_SECRET_KEY=$(sed -n 's/^S3_SECRET_KEY=//p' <<<"$info")
fi
cargo build --release --locked --example publish_latency >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-$ROOT/target}"
"$TARGET_DIR/release/examples/publish_latency" ${args[@]+"${args[@]}"}
