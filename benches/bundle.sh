#!/usr/bin/env bash
# Bundle throughput: `cargohold export` and `cargohold import` against `tar | zstd` and
# `zstd -d | tar -x` of the same cache, measured in the same run.
#
#   benches/bundle.sh [N] [--dir DIR]     N crates (default 300); DIR for the data (default tmp)
#
# Builds the release binary and `examples/bundle_fixture.rs`, which fills a proxy registry's
# cache with N crates (one index file and one .crate each, 1 KiB .. 1 MiB, incompressible like
# gzip). Then, best of 3 each: export (hash every entry, tar, zstd -3 with checksum), import
# into a fresh data dir (decompress, verify sizes, SHA-256 and index cksums, stage, commit),
# `tar -c cache | zstd -3 -T1` and `zstd -d | tar -x` of the same cache directory; then the same
# export and import through running daemons on 127.0.0.1 (`--server`: the bundle streamed out
# of the admin API and verified again by the client; uploaded and imported by a fresh daemon).
# Prints MB/s of the bundle's payload (index + .crate bytes). Loopback only.

set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
N=300
DIR="${TMPDIR:-/tmp}"
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --dir) DIR="$2"; shift 2 ;;
        *) N="$1"; shift ;;
    esac
done

cd "$ROOT"
cargo build --release --locked --bin cargohold --example bundle_fixture >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/cargohold"

W="$(mktemp -d "$DIR/cargohold-bundle-bench.XXXXXX")"
trap 'rm -rf "$W"' EXIT
printf '[registries.mirror]\nkind = "proxy"\noffline = true\n' >"$W/c.toml"
"$TARGET_DIR/release/examples/bundle_fixture" "$W/src" mirror "$N" >&2

now() { echo "${EPOCHREALTIME/,/.}"; }
best=()
measure() { # name, command...
    local name="$1" b=""
    shift
    for _ in 1 2 3; do
        "$W/prep" 2>/dev/null || true
        local s e
        s="$(now)"
        "$@" >/dev/null 2>"$W/err" || { echo "$name failed:" >&2; cat "$W/err" >&2; exit 1; }
        e="$(now)"
        b="$(awk -v s="$s" -v e="$e" -v b="$b" 'BEGIN { d = e - s; if (b == "" || d < b) print d; else print b }')"
    done
    best+=("$name=$b")
}

: >"$W/prep"
chmod +x "$W/prep"
measure export "$BIN" export --data-dir "$W/src" --config "$W/c.toml" --registry mirror --out "$W/b.bundle"
PAYLOAD="$("$BIN" export --data-dir "$W/src" --config "$W/c.toml" --registry mirror --out "$W/b.bundle" |
    sed -n 's/.*(\([0-9]*\) bytes, \([0-9]*\) in the file).*/\1 \2/p')"
printf '#!/bin/sh\nrm -rf "%s/dst"\n' "$W" >"$W/prep"
measure import "$BIN" import --data-dir "$W/dst" --config "$W/c.toml" "$W/b.bundle"
: >"$W/prep"
measure tar_zstd sh -c "tar -C '$W/src' -cf - cache | zstd -3 -T1 -q -f -o '$W/t.tar.zst'"
printf '#!/bin/sh\nrm -rf "%s/untar"; mkdir -p "%s/untar"\n' "$W" "$W" >"$W/prep"
measure unzstd_untar sh -c "zstd -d -q -c '$W/t.tar.zst' | tar -C '$W/untar' -xf -"

# Through running daemons (admin API), on loopback.
TOKEN="bench-$RANDOM$RANDOM"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_daemon() { # data dir, port; prints the PID once it answers
    CARGOHOLD_ADMIN_TOKEN="$TOKEN" "$BIN" serve --config "$W/c.toml" --data-dir "$1" \
        --listen "127.0.0.1:$2" >"$W/daemon-$2.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:$2/-/healthz" >/dev/null 2>&1 && break
        sleep 0.05
    done
    echo "$pid"
}
SRC_PORT="$(free_port)"
SRC_PID="$(start_daemon "$W/src" "$SRC_PORT")"
DST_PORT="$(free_port)"
echo "" >"$W/dst.pid"
trap 'kill "$SRC_PID" $(cat "$W/dst.pid") 2>/dev/null || true; rm -rf "$W"' EXIT
: >"$W/prep"
measure export_server env CARGOHOLD_ADMIN_TOKEN="$TOKEN" "$BIN" --server "http://127.0.0.1:$SRC_PORT" \
    export --registry mirror --out "$W/s.bundle"
cat >"$W/prep" <<PREP
#!/usr/bin/env bash
kill \$(cat "$W/dst.pid") 2>/dev/null || true
sleep 0.2
rm -rf "$W/dstd"
$(declare -f start_daemon)
BIN="$BIN" W="$W" TOKEN="$TOKEN"
start_daemon "$W/dstd" "$DST_PORT" >"$W/dst.pid"
PREP
measure import_server env CARGOHOLD_ADMIN_TOKEN="$TOKEN" "$BIN" --server "http://127.0.0.1:$DST_PORT" \
    import "$W/b.bundle"

set -- $PAYLOAD
echo
echo "$N crates, payload $1 bytes, bundle $2 bytes, tar.zst $(stat -c %s "$W/t.tar.zst") bytes (best of 3)"
echo
echo "| step | seconds | MB/s of payload |"
echo "|---|---|---|"
for kv in "${best[@]}"; do
    awk -v k="${kv%%=*}" -v t="${kv#*=}" -v p="$1" 'BEGIN { printf "| %s | %.3f | %.0f |\n", k, t, p / t / 1e6 }'
done
