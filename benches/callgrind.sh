#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: the daemon, nginx and a bare hyper
# server (examples/hyper_floor.rs) answering the same requests. Counts do not depend on what
# else the machine is doing, so they compare builds where wrk's req/s are too noisy.
#
#   benches/load.sh --quick --keep          # prints "kept /tmp/cargohold-load.XXXX"
#   benches/callgrind.sh /tmp/cargohold-load.XXXX [304|dl-1kb|hot|private] [seconds]
#
# Uses the kept run's fixture (nginx config and files, the daemon's config and warm data
# directory, the request lists). Each server runs under callgrind on its own free port on
# 127.0.0.1; wrk (1 thread, 4 connections) warms it up, the counters are zeroed, then wrk runs
# for the given seconds (default 8) and the counters are dumped (copied to
# KEPT_DIR/callgrind-<server>-<scenario>.out for callgrind_annotate). Installs valgrind with
# apt-get if missing. Prints one Markdown table. Everything it starts is stopped on exit.

set -Eeuo pipefail

KEPT="${1:?usage: benches/callgrind.sh KEPT_DIR [304|dl-1kb|hot|private] [seconds]}"
SC="${2:-304}"
SECS="${3:-8}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
LUA="$HERE/load/rotate.lua"

log() { printf '[callgrind %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[ -f "$KEPT/cargohold.toml" ] && [ -f "$KEPT/nginx/nginx.conf" ] ||
    die "$KEPT is not a directory kept by benches/load.sh --keep"
case "$SC" in
    304) LD="$KEPT/list-304-daemon.txt" LN="$KEPT/list-304-nginx.txt" PD=/crates-io/index/ PN=/index/ ;;
    dl-1kb) LD="$KEPT/list-dl-1kb.txt" LN="$KEPT/list-dl-1kb.txt" PD=/crates-io/api/v1/crates/ PN=/dl/ ;;
    hot) LD="$KEPT/list-hot.txt" LN="$KEPT/list-hot.txt" PD=/crates-io/index/ PN=/index/ ;;
    # the hosted crate load.sh published (in the kept SQLite store) and nginx's copy of its file
    private) LD="$KEPT/list-private.txt" LN="$KEPT/list-private.txt" PD=/local/index/ PN=/private/index/ ;;
    *) die "unknown scenario \`$SC\` (304, dl-1kb, hot or private)" ;;
esac
command -v valgrind >/dev/null || { log "installing valgrind"; apt-get install -y -qq valgrind >&2; }
command -v wrk >/dev/null || die "wrk not found (benches/load.sh installs it)"

cargo build --release --locked >&2
cargo build --release --locked --example hyper_floor >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-$ROOT/target}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/cargohold-callgrind.XXXXXX")"
PID=""
cleanup() {
    set +e
    [ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && sleep 1 && kill -9 "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 30000))
        ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { echo "$p"; return 0; }
    done
    return 1
}

# measure NAME URL LIST PREFIX -- COMMAND...: prints "NAME requests instructions"
measure() {
    local name=$1 url=$2 list=$3 prefix=$4 out="$WORK/$1.out"
    shift 5
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>"$WORK/$name.err" &
    PID=$!
    local up=0
    for _ in $(seq 1 120); do
        curl -s -o /dev/null --max-time 1 "$url/" && { up=1; break; }
        sleep 0.5
    done
    [ "$up" = 1 ] || die "$name did not answer under valgrind within 60 s ($WORK/$name.err)"
    wrk -t1 -c4 -d3s -s "$LUA" "$url" -- "$list" "$prefix" >/dev/null
    callgrind_control -z "$PID" >/dev/null 2>&1
    local n
    n="$(wrk -t1 -c4 -d"${SECS}s" -s "$LUA" "$url" -- "$list" "$prefix" | awk '/requests in/ {print $1}')"
    callgrind_control -d "$PID" >/dev/null 2>&1
    # The dump is on disk; stop the server (politely, then not).
    kill -INT "$PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
    local total
    total="$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')"
    [ -n "$total" ] && [ "${n:-0}" -gt 0 ] || die "no counts for $name"
    cp "$out.1" "$KEPT/callgrind-$name-$SC.out"
    echo "$name $n $total"
}

# The daemon, on a copy of the kept warm data directory.
DPORT="$(free_port)"
cp -r "$KEPT/daemon-data" "$WORK/daemon-data"
# A long index_ttl: the kept entries stay fresh however old the kept run is (nginx, their
# upstream, is not running while the daemon is measured).
sed -e "s|^listen = .*|listen = \"127.0.0.1:$DPORT\"|" -e "s|^data_dir = .*|data_dir = \"$WORK/daemon-data\"|" \
    -e "s|^index_ttl = .*|index_ttl = \"10000h\"|" "$KEPT/cargohold.toml" >"$WORK/cargohold.toml"
log "daemon under callgrind ($SC, ${SECS}s)"
D="$(CARGOHOLD_ADMIN_TOKEN="callgrind-$RANDOM$RANDOM" RUST_LOG=info measure daemon "http://127.0.0.1:$DPORT" "$LD" "$PD" -- \
    "$TARGET_DIR/release/cargohold" serve --config "$WORK/cargohold.toml")"

# nginx with one worker in the foreground (no master), same files and access log.
NPORT="$(grep -o 'listen 127.0.0.1:[0-9]*' "$KEPT/nginx/nginx.conf" | cut -d: -f2)"
sed -e 's/^worker_processes .*/worker_processes 1;\nmaster_process off;/' -e "s|^pid .*|pid $WORK/nginx.pid;|" \
    "$KEPT/nginx/nginx.conf" >"$WORK/nginx.conf"
log "nginx under callgrind"
N="$(measure nginx "http://127.0.0.1:$NPORT" "$LN" "$PN" -- \
    nginx -p "$KEPT/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log")"

# hyper with nothing on top: a constant 304 (only meaningful next to the 304 scenario).
FPORT="$(free_port)"
log "hyper_floor under callgrind"
F="$(measure hyper_floor "http://127.0.0.1:$FPORT" "$LD" "$PD" -- \
    "$TARGET_DIR/release/examples/hyper_floor" "$FPORT" 1)"

echo "#### Instructions per request ($SC), callgrind — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| server | requests counted | instructions | per request |"
echo "|---|---:|---:|---:|"
for row in "$D" "$N" "$F"; do
    read -r name n total <<<"$row"
    echo "| $name | $n | $total | $((total / n)) |"
done
