#!/usr/bin/env bash
# Load benchmark: cargohold (release build) vs nginx serving the same files from disk.
#
#   benches/load.sh [--quick] [--pin] [--no-access-log] [--keep] [--skip-idle-check]
#
# Everything runs on this machine and talks to 127.0.0.1 only. nginx serves a static sparse
# registry written by `examples/bench_fixture.rs` (the real index files of ../shared/data/index
# plus synthetic .crate files); it is both the baseline and the upstream of the daemon's
# `crates-io` proxy registry. wrk drives both with the same Lua script, alternating rounds.
# The `private` scenario publishes a crate into the daemon's hosted registry (SQL store behind
# the caches) and gives nginx the daemon's rendered index file, byte for byte, to serve.
# Prints one Markdown table. See benches/load/README.md. --pin gives the servers and the load
# generator separate cores (taskset): the servers the first half of the CPUs (daemon `workers`
# and nginx `worker_processes` = that many), wrk, curl and cargo the other half.
#
# Installs `nginx`, `wrk` and `curl` with apt-get when they are missing. Every loop and wait is
# bounded; the EXIT trap stops the daemon and nginx and removes the temp dir (unless --keep).

set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
LOADDIR="$HERE/load"
CMDLINE="benches/load.sh${*:+ $*}"

QUICK=0
PIN=0
ACCESS_LOG=1
KEEP=0
IDLE_CHECK=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --pin) PIN=1 ;;
        --no-access-log) ACCESS_LOG=0 ;;
        --keep) KEEP=1 ;;
        --skip-idle-check) IDLE_CHECK=0 ;;
        -h | --help)
            sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "load.sh: unknown argument \`$1\` (try --help)" >&2
            exit 64
            ;;
    esac
    shift
done

# --- knobs (environment overrides for experiments; the defaults are what the README reports) --
CACHE_MEMORY="${BENCH_CACHE_MEMORY:-256MiB}"
CACHE_DISK="${BENCH_CACHE_DISK:-2GiB}"
INDEX_TTL="${BENCH_INDEX_TTL:-1h}"
if [ "$QUICK" = 1 ]; then
    DURATION="${BENCH_DURATION:-2s}"
    CONNS=(${BENCH_CONNS:-16})
    SCENARIOS=(hot private merged rotate 304 dl-1mb dl-10mb)
    COLD_FILES="${BENCH_COLD_FILES:-10}"
    FETCH_RUNS="${BENCH_FETCH_RUNS:-1}"
else
    DURATION="${BENCH_DURATION:-5s}"
    CONNS=(${BENCH_CONNS:-1 16 64})
    SCENARIOS=(hot private merged rotate 304 dl-1kb dl-1mb dl-10mb)
    COLD_FILES="${BENCH_COLD_FILES:-50}"
    FETCH_RUNS="${BENCH_FETCH_RUNS:-3}"
fi
if [ -n "${BENCH_SCENARIOS:-}" ]; then
    read -r -a SCENARIOS <<<"$BENCH_SCENARIOS"
fi
WRK_TIMEOUT=10s
NCPU="$(nproc)"
SERVER_RUN=()
CLIENT_RUN=()
SERVER_WORKERS=2
WRK_MAX_THREADS=2
if [ "$PIN" = 1 ]; then
    [ "$NCPU" -ge 2 ] || { echo "load.sh: --pin needs at least 2 CPUs" >&2; exit 64; }
    command -v taskset >/dev/null || { echo "load.sh: --pin needs taskset (util-linux)" >&2; exit 64; }
    SERVER_WORKERS=$((NCPU / 2))
    WRK_MAX_THREADS=$((NCPU - SERVER_WORKERS))
    SERVER_CPUS="0-$((SERVER_WORKERS - 1))"
    CLIENT_CPUS="$SERVER_WORKERS-$((NCPU - 1))"
    SERVER_RUN=(taskset -c "$SERVER_CPUS")
    CLIENT_RUN=(taskset -c "$CLIENT_CPUS")
    PIN_NOTE="pinned: servers on CPUs $SERVER_CPUS, wrk/curl/cargo on CPUs $CLIENT_CPUS"
else
    PIN_NOTE="not pinned: servers and wrk share all $NCPU CPUs"
fi
HOT_PATH="se/rd/serde"
ROW_RETRY_PCT=20

log() { printf '[load %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# --- cleanup: stop exactly what this script started ------------------------------------------
TMP=""
DPID=""
NPID=""
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local pids=()
    for p in "$DPID" "$NPID"; do
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null
            pids+=("$p")
        fi
    done
    if [ ${#pids[@]} -gt 0 ]; then
        local i alive
        for i in $(seq 1 100); do
            alive=0
            for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.1
        done
        for p in "${pids[@]}"; do
            kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
            wait "$p" 2>/dev/null
        done
    fi
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$KEEP" = 1 ]; then
            log "kept $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    # $@: Debian package names. Runs `apt-get update` once first when the package lists are
    # empty, or again once when an install fails on stale lists.
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    # Never let the package start a system nginx: a temporary policy-rc.d if none exists.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && made_policy=1
    fi
    local ok=0
    if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
        $sudo apt-get update -qq && APT_UPDATED=1
    fi
    if DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2; then
        ok=1
    elif [ "$APT_UPDATED" = 0 ]; then
        $sudo apt-get update -qq && APT_UPDATED=1
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2 && ok=1
    fi
    [ "$made_policy" = 1 ] && $sudo rm -f "$policy"
    [ "$ok" = 1 ] || die "apt-get install $* failed"
}

NGINX_BIN="$(command -v nginx || true)"
[ -z "$NGINX_BIN" ] && [ -x /usr/sbin/nginx ] && NGINX_BIN=/usr/sbin/nginx
missing=()
[ -n "$NGINX_BIN" ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (Debian packages)"
    apt_install "${missing[@]}"
    NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
fi
[ -x "$NGINX_BIN" ] || die "nginx not found after install"
command -v wrk >/dev/null || die "wrk not found after install"
CARGO_BIN="$(rustup which cargo 2>/dev/null || command -v cargo)"

# --- build (once; never clean) -----------------------------------------------------------------
cd "$ROOT"
log "building: cargo build --release --locked; cargo build --release --locked --example bench_fixture"
cargo build --release --locked >&2
cargo build --release --locked --example bench_fixture >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
TARGET_DIR="${TARGET_DIR:-$ROOT/target}"
DAEMON_BIN="$TARGET_DIR/release/cargohold"
FIXTURE_BIN="$TARGET_DIR/release/examples/bench_fixture"
[ -x "$DAEMON_BIN" ] && [ -x "$FIXTURE_BIN" ] || die "build outputs not found under $TARGET_DIR"

# --- helpers -----------------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/cargohold-load.XXXXXX")"
chmod 755 "$TMP"

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p i
    for i in $(seq 1 100); do
        p=$((20000 + RANDOM % 30000))
        if port_is_free "$p"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Percent of CPU time spent non-idle over $1 seconds (whole machine).
cpu_busy() {
    local a b
    a=($(head -1 /proc/stat))
    sleep "$1"
    b=($(head -1 /proc/stat))
    awk -v a="${a[*]}" -v b="${b[*]}" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); tot = 0; idle = 0
        for (i = 2; i <= n; i++) tot += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.0f", (tot > 0 ? 100 * (tot - idle) / tot : 0) }'
}

# CPU ticks used so far by this run: the script and its reaped children (wrk, curl, cargo),
# the daemon, and nginx (master and workers).
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"
proc_ticks() { # pid... -> utime+stime summed
    local p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && sed 's/.*) //' "/proc/$p/stat" 2>/dev/null
    done | awk '{ s += $12 + $13 } END { print s + 0 }'
}
our_ticks() { # sets OURS; must run in the main shell (not in $(...)) for `times` to count
    times >"$TMP/times.txt"
    OURS="$(awk -v hz="$CLK_TCK" -v other="$(proc_ticks "$DPID" "$NPID" $(pgrep -P "$NPID" 2>/dev/null))" '
        { for (i = 1; i <= NF; i++) { split($i, ms, "m"); s += ms[1] * 60 + ms[2] } }
        END { printf "%.0f\n", s * hz + other }' "$TMP/times.txt")"
}
machine_ticks() { # -> "busy total"
    # busy = user + nice + system + irq + softirq (the per-process times we subtract include
    # the softirq work done in their context, e.g. loopback TCP); idle, iowait and steal are not.
    head -1 /proc/stat | awk '{ t = 0; for (i = 2; i <= NF; i++) t += $i; print $2 + $3 + $4 + $7 + $8, t }'
}
# foreign_pct BUSY0 TOT0 OURS0 BUSY1 TOT1 OURS1 -> percent of all CPU time used by other processes
foreign_pct() {
    awk -v b="$(($4 - $1))" -v t="$(($5 - $2))" -v o="$(($6 - $3))" \
        'BEGIN { f = t > 0 ? 100 * (b - o) / t : 0; if (f < 0) f = 0; printf "%.0f", f }'
}

median() { sort -g | awk '{v[NR] = $1} END { if (NR == 0) { print "nan"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# wrk output -> "req/s p50_ms p99_ms non2xx3xx socket_errors"
parse_wrk() {
    awk 'function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /h$/) return substr(v, 1, length(v) - 1) * 3600000
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v + 0 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
        END { printf "%s %s %s %d %d\n", (rps == "" ? 0 : rps), (p50 == "" ? "nan" : p50),
              (p99 == "" ? "nan" : p99), bad + 0, err + 0 }'
}

wait_http() { # url, seconds
    local i
    for i in $(seq 1 $(($2 * 10))); do
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# --- fixture and nginx -------------------------------------------------------------------------
NPORT="$(free_port)" || die "no free port for nginx"
WWW="$TMP/www"
log "writing the fixture (nginx port $NPORT)"
"$FIXTURE_BIN" "$WWW" "$NPORT" "$ROOT/../shared/data/index" >&2
PATHS="$TMP/paths.txt"
grep -v '^[[:space:]]*$' "$ROOT/../shared/data/index/paths.txt" >"$PATHS"
NPATHS=$(wc -l <"$PATHS")
[ -f "$WWW/index/$HOT_PATH" ] || HOT_PATH="$(sed -n "$((NPATHS / 2))p" "$PATHS")"
HOT_BYTES=$(stat -c %s "$WWW/index/$HOT_PATH")

NGX="$TMP/nginx"
mkdir -p "$NGX/tmp" "$NGX/logs"
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user $(id -un) $(id -gn);"
if [ "$ACCESS_LOG" = 1 ]; then
    NGX_ACCESS="access_log $NGX/logs/access.log combined buffer=64k flush=1s;"
    LOG_NOTE="access logs on: nginx \`access_log ... buffer=64k flush=1s\`, daemon at its default \`info\` level (one line per request) to a file"
    DAEMON_RUST_LOG="info"
else
    NGX_ACCESS="access_log off;"
    LOG_NOTE="access logs off: nginx \`access_log off\`, daemon with RUST_LOG=warn"
    DAEMON_RUST_LOG="warn"
fi
sed -e "s|@PREFIX@|$NGX|g" -e "s|@ROOT@|$WWW|g" -e "s|@PORT@|$NPORT|g" \
    -e "s|@USER_LINE@|$USER_LINE|" -e "s|@ACCESS_LOG@|$NGX_ACCESS|" -e "s|@WORKERS@|$SERVER_WORKERS|" \
    "$LOADDIR/nginx.conf.in" >"$NGX/nginx.conf"
"$NGINX_BIN" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" -t >/dev/null 2>&1 ||
    { "$NGINX_BIN" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" -t; die "bad nginx config"; }
${SERVER_RUN[@]+"${SERVER_RUN[@]}"} "$NGINX_BIN" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" </dev/null >"$NGX/stdout.log" 2>&1 &
NPID=$!
NURL="http://127.0.0.1:$NPORT"
wait_http "$NURL/index/config.json" 20 || { cat "$NGX/error.log" >&2; die "nginx did not start"; }
NGINX_VERSION="$("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')"
log "nginx $NGINX_VERSION up at $NURL (pid $NPID)"

# --- the daemon --------------------------------------------------------------------------------
DCONF="$TMP/cargohold.toml"
cat >"$DCONF" <<EOF
listen = "127.0.0.1:0"
data_dir = "$TMP/daemon-data"
# as many edge workers as nginx has worker processes
workers = $SERVER_WORKERS

[cache]
memory = "$CACHE_MEMORY"
disk = "$CACHE_DISK"

[registries.crates-io]
kind = "proxy"
upstream = "sparse+$NURL/index/"
index_ttl = "$INDEX_TTL"

# The merged view over the proxy (issue 4: merged hot hits must cost what proxied ones do).
[registries.local]
kind = "hosted"
upstreams = ["crates-io"]
EOF
# BENCH_STORE_TOML: a [store] section, to measure a node of a cluster (PostgreSQL + S3; the
# S3 credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY as for the daemon).
if [ -n "${BENCH_STORE_TOML:-}" ]; then
    printf '\n%s\n' "$BENCH_STORE_TOML" >>"$DCONF"
    STORE_NOTE="store: $(printf '%s' "$BENCH_STORE_TOML" | sed -n 's/^database *= *"\([a-z]*\):.*/\1/p')$(printf '%s' "$BENCH_STORE_TOML" | sed -n 's/^blobs *= *"\([a-z0-9]*\):.*/ + \1/p')"
else
    STORE_NOTE="store: embedded (SQLite + files)"
fi
for v in $(compgen -e | grep '^CARGOHOLD_' || true); do unset "$v"; done
DLOG="$TMP/daemon.log"
DWARN="$TMP/daemon-warnings.log"
: >"$DWARN"
ADMIN_TOKEN="bench-$RANDOM$RANDOM$RANDOM"
CARGOHOLD_ADMIN_TOKEN="$ADMIN_TOKEN" RUST_LOG="$DAEMON_RUST_LOG" \
    ${SERVER_RUN[@]+"${SERVER_RUN[@]}"} "$DAEMON_BIN" serve --config "$DCONF" </dev/null >"$TMP/daemon.out" 2>>"$DLOG" &
DPID=$!
DURL=""
for i in $(seq 1 300); do
    DURL="$(sed -n 's/^cargohold listening on \(http:[^ ]*\).*/\1/p' "$TMP/daemon.out" | head -1)"
    [ -n "$DURL" ] && break
    kill -0 "$DPID" 2>/dev/null || { cat "$DLOG" >&2; die "the daemon exited"; }
    sleep 0.1
done
[ -n "$DURL" ] || die "the daemon did not print its URL within 30 s"
DURL="${DURL%/}"
wait_http "$DURL/crates-io/index/config.json" 20 || die "the daemon does not answer at $DURL"
log "cargohold up at $DURL (pid $DPID), cache memory $CACHE_MEMORY, disk $CACHE_DISK, index_ttl $INDEX_TTL"

# Saves WARN/ERROR lines of the daemon log and truncates it (it grows by one line a request).
drain_daemon_log() {
    grep -E ' (WARN|ERROR) |"level":"(WARN|ERROR)"' "$DLOG" >>"$DWARN" 2>/dev/null || true
    : >"$DLOG"
    [ "$ACCESS_LOG" = 1 ] && : >"$NGX/logs/access.log"
    return 0
}

# Sum of index-cache lookups that were not HITs (from /-/metrics; empty if unavailable).
# BYPASS (a hosted crate's own file, answered from the rendered-file cache without the upstream
# cache: the `private` row) is not a miss.
non_hits() {
    local m
    m="$(curl -fsS --max-time 5 "$DURL/-/metrics" 2>/dev/null)" || return 0
    awk '/^cargohold_cache_lookups_total/ && /tier="index"/ && !/status="(HIT|BYPASS)"/ { s += $NF }
         END { print s + 0 }' <<<"$m"
}

# --- machine state -----------------------------------------------------------------------------
BUSY_BEFORE="$(cpu_busy 3)"
if [ "$IDLE_CHECK" = 1 ] && [ "$QUICK" = 0 ] && [ "$BUSY_BEFORE" -gt 25 ]; then
    log "the machine is ${BUSY_BEFORE}% busy (another build?); waiting up to 90 s for it to settle"
    for i in $(seq 1 6); do
        sleep 12
        BUSY_BEFORE="$(cpu_busy 3)"
        [ "$BUSY_BEFORE" -le 25 ] && break
    done
    [ "$BUSY_BEFORE" -le 25 ] || log "still ${BUSY_BEFORE}% busy: numbers will be noisy"
fi
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- cold misses: TTFB through the daemon (never-fetched file) vs nginx's own ----------------
log "cold misses: $COLD_FILES index files, nginx TTFB then daemon TTFB for each"
COLD="$TMP/cold.tsv"
: >"$COLD"
step=$((NPATHS / COLD_FILES))
[ "$step" -ge 1 ] || step=1
cold_n=0
cold_bad=0
for idx in $(seq 1 "$step" "$NPATHS"); do
    [ "$cold_n" -ge "$COLD_FILES" ] && break
    p="$(sed -n "${idx}p" "$PATHS")"
    [ "$p" = "$HOT_PATH" ] && continue
    n="$(${CLIENT_RUN[@]+"${CLIENT_RUN[@]}"} curl -sS -o /dev/null --max-time 10 -w '%{time_starttransfer} %{http_code}' "$NURL/index/$p" || true)"
    d="$(${CLIENT_RUN[@]+"${CLIENT_RUN[@]}"} curl -sS -o /dev/null --max-time 20 -w '%{time_starttransfer} %{http_code} %header{x-cache}' \
        "$DURL/crates-io/index/$p" || true)"
    read -r n_t n_code _ <<<"$n x x"
    read -r d_t d_code d_cache _ <<<"$d x x x"
    if [ "$n_code" != 200 ] || [ "$d_code" != 200 ] || [ "$d_cache" != MISS ]; then
        cold_bad=$((cold_bad + 1))
        log "  cold $p: nginx $n_code, daemon $d_code x-cache=$d_cache (not counted)"
    else
        printf '%s\t%s\t%s\t%s\n' "$p" "$n_t" "$d_t" "$(stat -c %s "$WWW/index/$p")" >>"$COLD"
    fi
    cold_n=$((cold_n + 1))
done
cold_n=$(wc -l <"$COLD")
COLD_N_MED="$(cut -f2 "$COLD" | median)"
COLD_D_MED="$(cut -f3 "$COLD" | median)"
COLD_SIZE_MED="$(cut -f4 "$COLD" | median)"

# --- warm the daemon, collect ETags ------------------------------------------------------------
# curl_each BASE PREFIX LIST OUT [etag]: one curl process (keep-alive) over every path of LIST;
# writes "path<TAB>status<TAB>x-cache<TAB>etag" lines. With `etag`, LIST is path<TAB>etag and
# each request carries If-None-Match.
curl_each() {
    local base=$1 prefix=$2 list=$3 out=$4 mode=${5:-} cfg="$TMP/curl.cfg"
    : >"$cfg"
    local first=1
    while IFS=$'\t' read -r p etag; do
        {
            [ "$first" = 1 ] || printf 'next\n'
            first=0
            printf 'url = "%s%s%s"\noutput = "/dev/null"\n' "$base" "$prefix" "$p"
            printf 'write-out = "%s\\t%%{http_code}\\t%%header{x-cache}\\t%%header{etag}\\n"\n' "$p"
            if [ "$mode" = etag ]; then
                printf 'header = "If-None-Match: %s"\n' "${etag//\"/\\\"}"
            fi
        } >>"$cfg"
    done <"$list"
    curl -sS --max-time 600 -K "$cfg" >"$out" || true
}

log "warming the daemon: one pass over all $NPATHS index files"
curl_each "$DURL" /crates-io/index/ "$PATHS" "$TMP/warm.tsv"
warm_bad=$(awk -F'\t' '$2 != 200' "$TMP/warm.tsv" | wc -l)
[ "$warm_bad" = 0 ] || log "warning: $warm_bad index files did not answer 200 through the daemon"
curl_each "$DURL" /crates-io/index/ "$PATHS" "$TMP/etag-daemon.tsv"
curl_each "$NURL" /index/ "$PATHS" "$TMP/etag-nginx.tsv"
not_hit=$(awk -F'\t' '$3 != "HIT"' "$TMP/etag-daemon.tsv" | wc -l)
[ "$not_hit" = 0 ] || log "warning: $not_hit index files were not HITs on the second pass"
for s in daemon nginx; do
    awk -F'\t' '$2 == 200 && $4 != "" { print $1 "\t" $4 }' "$TMP/etag-$s.tsv" >"$TMP/list-304-$s.txt"
    curl_each "$([ $s = daemon ] && echo "$DURL" || echo "$NURL")" \
        "$([ $s = daemon ] && echo /crates-io/index/ || echo /index/)" \
        "$TMP/list-304-$s.txt" "$TMP/check-304-$s.tsv" etag
    n304=$(awk -F'\t' '$2 == 304' "$TMP/check-304-$s.tsv" | wc -l)
    [ "$n304" = "$NPATHS" ] || log "warning: only $n304 of $NPATHS conditional requests got 304 from $s"
done

log "warming the daemon's crate cache"
for c in bench-1kb bench-1mb bench-10mb; do
    want="$(sha256sum "$WWW/dl/$c/1.0.0/download" | cut -d' ' -f1)"
    for pass in 1 2; do
        got="$(curl -fsS --max-time 60 "$DURL/crates-io/api/v1/crates/$c/1.0.0/download" | sha256sum | cut -d' ' -f1)"
        [ "$got" = "$want" ] || die "$c through the daemon: wrong bytes (pass $pass)"
    done
    xc="$(curl -fsS -o /dev/null -D - --max-time 60 "$DURL/crates-io/api/v1/crates/$c/1.0.0/download" |
        tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" { print $2 }')"
    [ "$xc" = HIT ] || log "warning: $c download is x-cache=$xc after two passes"
done

# The private scenario: publish bench-private (the fixture's publish bodies) into the hosted
# `local` registry through the daemon's API, then give nginx the daemon's rendered index file,
# byte for byte, as its baseline.
PRIVATE_PATH="be/nc/bench-private"
PRIVATE_BYTES=0
PRIVATE_VERSIONS=0
if [[ " ${SCENARIOS[*]} " == *" private "* ]]; then
    log "publishing bench-private into the daemon's hosted registry \`local\`"
    while read -r body; do
        [ -n "$body" ] || continue
        code="$(curl -sS -o "$TMP/publish.out" -w '%{http_code}' --max-time 60 -X PUT \
            -H "Authorization: $ADMIN_TOKEN" -H 'Content-Type: application/octet-stream' \
            --data-binary "@$WWW/publish/$body" "$DURL/local/api/v1/crates/new" || true)"
        [ "$code" = 200 ] || die "publishing $body: HTTP $code $(head -c 300 "$TMP/publish.out")"
        PRIVATE_VERSIONS=$((PRIVATE_VERSIONS + 1))
    done <"$WWW/publish/list.txt"
    mkdir -p "$WWW/private/index/$(dirname "$PRIVATE_PATH")"
    curl -fsS --max-time 10 -o "$WWW/private/index/$PRIVATE_PATH" "$DURL/local/index/$PRIVATE_PATH" ||
        die "cannot fetch the private index file from the daemon"
    lines="$(grep -c '"vers"' "$WWW/private/index/$PRIVATE_PATH" || true)"
    [ "$lines" = "$PRIVATE_VERSIONS" ] || die "the private index file has $lines lines, expected $PRIVATE_VERSIONS"
    curl -fsS --max-time 10 "$NURL/private/index/$PRIVATE_PATH" | cmp -s - "$WWW/private/index/$PRIVATE_PATH" ||
        die "nginx does not serve the daemon's private index file byte for byte"
    curl -fsS --max-time 10 "$DURL/local/index/$PRIVATE_PATH" | cmp -s - "$WWW/private/index/$PRIVATE_PATH" ||
        die "the daemon's private index file changed between two reads"
    PRIVATE_BYTES=$(stat -c %s "$WWW/private/index/$PRIVATE_PATH")
    echo "$PRIVATE_PATH" >"$TMP/list-private.txt"
fi
drain_daemon_log

# --- wrk rounds --------------------------------------------------------------------------------
echo "$HOT_PATH" >"$TMP/list-hot.txt"
cp "$PATHS" "$TMP/list-rotate.txt"
for c in 1kb 1mb 10mb; do echo "bench-$c/1.0.0/download" >"$TMP/list-dl-$c.txt"; done

# request list and prefix of a scenario for a server
scenario_args() { # scenario server -> "LIST PREFIX"
    local sc=$1 srv=$2 list prefix
    case "$sc" in
        hot | merged) list="$TMP/list-hot.txt" ;;
        private) list="$TMP/list-private.txt" ;;
        rotate) list="$TMP/list-rotate.txt" ;;
        304) list="$TMP/list-304-$srv.txt" ;;
        dl-*) list="$TMP/list-${sc}.txt" ;;
    esac
    case "$sc:$srv" in
        dl-*:daemon) prefix=/crates-io/api/v1/crates/ ;;
        dl-*:nginx) prefix=/dl/ ;;
        merged:daemon | private:daemon) prefix=/local/index/ ;;
        private:nginx) prefix=/private/index/ ;;
        *:daemon) prefix=/crates-io/index/ ;;
        *:nginx) prefix=/index/ ;;
    esac
    echo "$list $prefix"
}
scenario_label() {
    case "$1" in
        hot) echo "hot index file ($HOT_PATH, $((HOT_BYTES / 1024)) KiB)" ;;
        private) echo "hot private index file (/local, SQL store behind the caches; $PRIVATE_VERSIONS versions, $((PRIVATE_BYTES / 1024)) KiB)" ;;
        merged) echo "same hot file through the merged view (/local over crates-io)" ;;
        rotate) echo "all $NPATHS index files in rotation" ;;
        304) echo "If-None-Match -> 304, all files" ;;
        dl-1kb) echo "download 1 KB .crate (cached)" ;;
        dl-1mb) echo "download 1 MB .crate (cached)" ;;
        dl-10mb) echo "download 10 MB .crate (cached)" ;;
    esac
}

WRKDIR="$TMP/wrk"
mkdir -p "$WRKDIR"
ROWS=()
WARNINGS=()
NONHIT_BEFORE="$(non_hits)"
read -r M_BUSY0 M_TOT0 <<<"$(machine_ticks)"
our_ticks
OURS0=$OURS
round=0
for sc in "${SCENARIOS[@]}"; do
    for c in "${CONNS[@]}"; do
        t=$((c < WRK_MAX_THREADS ? c : WRK_MAX_THREADS))
        order=(daemon nginx)
        [ $((round % 2)) = 1 ] && order=(nginx daemon)
        # One retry (after a pause) when other processes took much of the CPU during the row.
        for attempt in 1 2; do
            declare -A R=()
            read -r rb0 rt0 <<<"$(machine_ticks)"
            our_ticks
            ro0=$OURS
            for srv in "${order[@]}"; do
                read -r list prefix <<<"$(scenario_args "$sc" "$srv")"
                base="$([ "$srv" = daemon ] && echo "$DURL" || echo "$NURL")"
                out="$WRKDIR/$sc-c$c-$srv.txt"
                log "wrk $sc c=$c $srv"
                ${CLIENT_RUN[@]+"${CLIENT_RUN[@]}"} timeout 120 wrk -t "$t" -c "$c" -d "$DURATION" --timeout "$WRK_TIMEOUT" --latency \
                    -s "$LOADDIR/rotate.lua" "$base" -- "$list" "$prefix" >"$out" 2>&1 ||
                    log "warning: wrk exited non-zero ($out)"
                R[$srv]="$(parse_wrk <"$out")"
                drain_daemon_log
                sleep 1
            done
            read -r rb1 rt1 <<<"$(machine_ticks)"
            our_ticks
            row_foreign="$(foreign_pct "$rb0" "$rt0" "$ro0" "$rb1" "$rt1" "$OURS")"
            [ "$row_foreign" -le "$ROW_RETRY_PCT" ] && break
            if [ "$attempt" = 1 ]; then
                log "other processes used ${row_foreign}% of the CPU during this row; retrying it once in 10 s"
                sleep 10
            fi
        done
        read -r d_rps d_p50 d_p99 d_bad d_err <<<"${R[daemon]}"
        read -r n_rps n_p50 n_p99 n_bad n_err <<<"${R[nginx]}"
        [ "$d_bad$d_err" = 00 ] || WARNINGS+=("$sc c=$c daemon: $d_bad non-2xx/3xx, $d_err socket errors")
        [ "$n_bad$n_err" = 00 ] || WARNINGS+=("$sc c=$c nginx: $n_bad non-2xx/3xx, $n_err socket errors")
        ROWS+=("$(awk -v l="$(scenario_label "$sc")" -v c="$c" -v dr="$d_rps" -v nr="$n_rps" \
            -v d5="$d_p50" -v n5="$n_p50" -v d9="$d_p99" -v n9="$n_p99" -v f="$row_foreign" 'BEGIN {
            ratio = nr > 0 ? sprintf("%.2fx", dr / nr) : "-"
            printf "| %s | %d | %.0f | %.0f | %s | %.3f | %.3f | %.3f | %.3f | %d%% |", l, c, dr, nr, ratio, d5, n5, d9, n9, f }')")
        round=$((round + 1))
        unset R
    done
done
NONHIT_AFTER="$(non_hits)"
read -r M_BUSY1 M_TOT1 <<<"$(machine_ticks)"
our_ticks
OURS1=$OURS
# Share of the machine's CPU time that went to other processes during the wrk rounds.
FOREIGN="$(foreign_pct "$M_BUSY0" "$M_TOT0" "$OURS0" "$M_BUSY1" "$M_TOT1" "$OURS1")"
[ "$FOREIGN" -le 10 ] || WARNINGS+=("other processes used ${FOREIGN}% of the CPU during the wrk rounds: numbers are noisy")

# --- cargo fetch -------------------------------------------------------------------------------
FETCH="$TMP/fetch"
mkdir -p "$FETCH"
# fetch_once server tag -> seconds (or "fail")
fetch_once() {
    local srv=$1 tag=$2 dir="$FETCH/$1-$2" index
    index="$([ "$srv" = daemon ] && echo "sparse+$DURL/crates-io/index/" || echo "sparse+$NURL/index/")"
    rm -rf "$dir"
    mkdir -p "$dir/home"
    cp -r "$WWW/project" "$dir/project"
    cat >"$dir/home/config.toml" <<EOF
[source.crates-io]
replace-with = "bench-mirror"

[registries.bench-mirror]
index = "$index"

[net]
retry = 0
EOF
    local t0 t1
    t0=$(date +%s%N)
    if (cd "$dir/project" && CARGO_HOME="$dir/home" ${CLIENT_RUN[@]+"${CLIENT_RUN[@]}"} timeout 300 "$CARGO_BIN" fetch --quiet) >"$dir/out.log" 2>&1; then
        t1=$(date +%s%N)
        local got
        got=$(find "$dir/home/registry/cache" -name '*.crate' 2>/dev/null | wc -l || true)
        if [ "$got" -lt 150 ]; then
            log "warning: cargo fetch via $srv downloaded only $got crates"
        fi
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
    else
        log "cargo fetch via $srv failed: $(tail -3 "$dir/out.log" | tr '\n' ' ')"
        echo fail
    fi
    rm -rf "$dir"
}
log "cargo fetch: warm-up run through each server (not timed)"
fetch_once daemon warm >/dev/null
fetch_once nginx warm >/dev/null
FD=()
FN=()
for r in $(seq 1 "$FETCH_RUNS"); do
    if [ $((r % 2)) = 1 ]; then
        FD+=("$(fetch_once daemon "$r")")
        FN+=("$(fetch_once nginx "$r")")
    else
        FN+=("$(fetch_once nginx "$r")")
        FD+=("$(fetch_once daemon "$r")")
    fi
    log "  run $r: daemon ${FD[-1]} s, nginx ${FN[-1]} s"
done
drain_daemon_log
FETCH_D_MED="$(printf '%s\n' "${FD[@]}" | grep -v fail | median)"
FETCH_N_MED="$(printf '%s\n' "${FN[@]}" | grep -v fail | median)"
NDEPS_TOTAL=$(awk -F'\t' '$1 == "dep" { print $2 }' "$WWW/manifest.tsv" | sort -u | wc -l)

# --- memory, final state -----------------------------------------------------------------------
VMHWM="$(awk '/^VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$DPID/status" 2>/dev/null || echo "?")"
VMRSS="$(awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$DPID/status" 2>/dev/null || echo "?")"
DISK_USED="$(du -sh "$TMP/daemon-data/cache" 2>/dev/null | cut -f1 || echo "?")"
BUSY_AFTER="$(cpu_busy 3)"
kill -0 "$DPID" 2>/dev/null || WARNINGS+=("the daemon died during the run")
NWARN=$(wc -l <"$DWARN")
[ "$NWARN" = 0 ] || WARNINGS+=("daemon logged $NWARN WARN/ERROR lines, e.g.: $(head -1 "$DWARN" | cut -c1-200)")
[ "$cold_bad" = 0 ] || WARNINGS+=("$cold_bad cold-miss requests were not 200/MISS")

# --- the table ---------------------------------------------------------------------------------
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
ratio_time() { awk -v d="$1" -v n="$2" 'BEGIN { if (d > 0 && n > 0) printf "%.2fx", n / d; else print "-" }'; }
{
    echo
    echo "### cargohold vs nginx — $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), ${CPU_MODEL:-unknown CPU}"
    echo
    echo "Command: \`$CMDLINE\` · wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}') \`-t min($WRK_MAX_THREADS,c) -d $DURATION --latency\`, rounds alternate daemon/nginx · nginx $NGINX_VERSION (\`worker_processes $SERVER_WORKERS\`, sendfile, tcp_nopush) · $PIN_NOTE · $LOG_NOTE · $STORE_NOTE · CPU busy before the run ${BUSY_BEFORE}%, other processes during the wrk rounds ${FOREIGN}%, after ${BUSY_AFTER}% (loadavg at start $LOAD_BEFORE)"
    echo
    echo "| scenario | conns | req/s daemon | req/s nginx | daemon/nginx | p50 daemon ms | p50 nginx ms | p99 daemon ms | p99 nginx ms | other CPU |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    awk -v l="cold miss: TTFB of a never-fetched index file (median of $cold_n, median size $((${COLD_SIZE_MED%.*} / 1024)) KiB)" \
        -v d="$COLD_D_MED" -v n="$COLD_N_MED" 'BEGIN {
        r = (d > 0 && n > 0) ? sprintf("%.2fx", n / d) : "-"
        printf "| %s | 1 | - | - | %s | %.3f | %.3f | - | - | - |\n", l, r, d * 1000, n * 1000 }'
    awk -v l="cargo fetch, $NDEPS_TOTAL deps, fresh CARGO_HOME, warm daemon (median of $FETCH_RUNS, wall s)" \
        -v d="$FETCH_D_MED" -v n="$FETCH_N_MED" 'BEGIN {
        r = (d > 0 && n > 0) ? sprintf("%.2fx", n / d) : "-"
        printf "| %s | cargo | - | - | %s | %.2f s | %.2f s | - | - | - |\n", l, r, d, n }'
    echo
    echo "daemon/nginx: req/s ratio for wrk rows; for the two time rows it is nginx time / daemon time, so in every row below 1.00x means the daemon is slower. other CPU: share of the machine's CPU that processes outside this benchmark used during that row (above ~10% the row is noisy)."
    echo "Daemon peak RSS (VmHWM): $VMHWM (RSS at end $VMRSS) · configured cache: memory $CACHE_MEMORY, disk $CACHE_DISK (daemon cache dir on disk at end: $DISK_USED) · index_ttl $INDEX_TTL · index files: $NPATHS real ($(du -sh "$WWW/index" | cut -f1))."
    echo "cold miss raw: daemon ${COLD_D_MED}s vs nginx ${COLD_N_MED}s TTFB · cargo fetch raw: daemon [${FD[*]}] s, nginx [${FN[*]}] s (daemon/nginx wall-time $(awk -v d="$FETCH_D_MED" -v n="$FETCH_N_MED" 'BEGIN { if (n > 0) printf "%.2f", d / n; else print "-" }'))."
    if [ -n "$NONHIT_BEFORE" ] && [ -n "$NONHIT_AFTER" ]; then
        echo "Index-cache lookups that were not HITs during the wrk rounds: $((NONHIT_AFTER - NONHIT_BEFORE))."
    fi
    for w in "${WARNINGS[@]}"; do echo "WARNING: $w"; done
}
