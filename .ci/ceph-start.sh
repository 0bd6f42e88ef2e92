#!/usr/bin/env bash
# Starts a throwaway single-node Ceph (1 monitor, 1 OSD on memstore) with the RADOS Gateway,
# a real S3 engine, on 127.0.0.1 for the store tests. Debian's `radosgw ceph-mon ceph-osd` are
# installed if missing (about 30 s); the start takes about 15 s. Makes a user and a bucket, then
# prints:
#   S3_ENDPOINT=http://127.0.0.1:PORT
#   S3_BUCKET=NAME
#   S3_ACCESS_KEY=KEY
#   S3_SECRET_KEY=SECRET
#   CEPH_DIR=DIR          (everything it wrote; remove it after stopping)
#   PIDS=MON OSD RGW      (stop with: kill PID...)
# Env: CEPH_DIR (default: a new temp dir), RGW_PORT (17480), MON_PORT (16789), S3_BUCKET
# (cargohold-ci), RGW_AK / RGW_SK (test keys). The keys are for a throwaway engine on loopback.
# The default ports are below the kernel's ephemeral range, so no outgoing connection (Ceph's
# own included) can hold them when the gateway binds.
set -euo pipefail
if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd >/dev/null
fi
C=${CEPH_DIR:-$(mktemp -d /tmp/cargohold-ceph.XXXXXX)}
PORT=${RGW_PORT:-17480}
MON=${MON_PORT:-16789}
BUCKET=${S3_BUCKET:-cargohold-ci}
AK=${RGW_AK:-CARGOHOLDCIKEY}
SK=${RGW_SK:-cargohold-ci-secret}
mkdir -p "$C"/{mon,osd0,rgw,run,log}
pids() { cat "$C"/run/*.pid 2>/dev/null | tr '\n' ' '; }
# Whatever fails below, nothing is left running.
trap 'rc=$?; if [ $rc -ne 0 ]; then for p in $(pids); do kill "$p" 2>/dev/null || true; done; echo "ceph-start failed; logs in $C/log" >&2; fi' EXIT
FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$C/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = v1:127.0.0.1:$MON
public addr = 127.0.0.1
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
osd crush chooseleaf type = 0
run dir = $C/run
pid file = $C/run/\$name.pid
log file = $C/log/\$name.log
admin socket = $C/run/\$name.asok
[mon.a]
mon data = $C/mon
[osd.0]
osd data = $C/osd0
osd objectstore = memstore
memstore device bytes = 1073741824
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $C/rgw
CONF
ceph_cli=(ceph -c "$C/ceph.conf" --connect-timeout 5)
# A monitor on another port than 6789/3300 needs its v1 address spelled out (`--addv`).
monmaptool --create --addv a "[v1:127.0.0.1:$MON]" --fsid "$FSID" "$C/monmap" >/dev/null
ceph-mon -c "$C/ceph.conf" --mkfs -i a --monmap "$C/monmap"
ceph-mon -c "$C/ceph.conf" -i a
ceph-osd -c "$C/ceph.conf" -i 0 --mkfs 2>/dev/null
"${ceph_cli[@]}" osd new "$(cat "$C/osd0/fsid")" 0 >/dev/null
# The OSD's first boot now and then reaches the monitor before it can answer for the new OSD
# ("wrong fsid") and exits; a second start goes through.
for attempt in 1 2 3 4 5; do
    if ceph-osd -c "$C/ceph.conf" -i 0 2>>"$C/log/osd-start.err"; then break; fi
    [ "$attempt" = 5 ] && { echo "ceph-osd did not start" >&2; exit 1; }
    sleep 1
done
for _ in $(seq 1 300); do
    "${ceph_cli[@]}" osd stat 2>/dev/null | grep -q '1 up' && break
    sleep 0.2
done
radosgw -c "$C/ceph.conf" -n client.rgw
up=""
for _ in $(seq 1 300); do
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then up=1; break; fi
    sleep 0.2
done
[ -n "$up" ] || { echo "radosgw did not answer on 127.0.0.1:$PORT" >&2; exit 1; }
radosgw-admin -c "$C/ceph.conf" user create --uid=cargohold --display-name=cargohold \
    --access-key="$AK" --secret="$SK" >/dev/null
# The bucket, by a SigV4-signed PUT (curl signs it; no S3 SDK needed; RGW wants the payload
# hash header, here the SHA-256 of the empty body). 409 = it exists.
empty_sha=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
code=$(curl -s -o "$C/log/bucket.out" -w '%{http_code}' -X PUT -H "x-amz-content-sha256: $empty_sha" \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AK:$SK" "http://127.0.0.1:$PORT/$BUCKET")
case "$code" in
    200 | 409) ;;
    *) echo "creating bucket $BUCKET failed: HTTP $code $(cat "$C/log/bucket.out")" >&2; exit 1 ;;
esac
echo "S3_ENDPOINT=http://127.0.0.1:$PORT"
echo "S3_BUCKET=$BUCKET"
echo "S3_ACCESS_KEY=$AK"
echo "S3_SECRET_KEY=$SK"
echo "CEPH_DIR=$C"
echo "PIDS=$(pids)"
