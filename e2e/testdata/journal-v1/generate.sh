#!/usr/bin/env bash
# Writes a repository and expect.json like the ones in this directory (see
# README.md). BIN is an etcd-backup binary built from commit 62bca9e; TB the
# directory of etcd-3.6.16 and etcdctl-3.6.16 (make test-deps puts them in
# .cache/test-bin); OUT an empty directory for repo/ and expect.json.
# Needs curl, jq and python3. The ports below must be free.
set -euo pipefail

BIN=${BIN:?BIN: etcd-backup built from commit 62bca9e}
TB=${TB:?TB: directory of etcd-3.6.16 and etcdctl-3.6.16}
OUT=${OUT:?OUT: output directory}
CPORT=${CPORT:-22379}
PPORT=${PPORT:-22380}
APORT=${APORT:-22785}
EP=http://127.0.0.1:$CPORT

mkdir -p "$OUT"
[ ! -e "$OUT/repo" ] || { echo "$OUT/repo exists" >&2; exit 1; }
WORK=$(mktemp -d)
REPO=$OUT/repo

"$TB/etcd-3.6.16" --name gen --data-dir "$WORK/etcd" \
  --listen-client-urls "$EP" --advertise-client-urls "$EP" \
  --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
  --initial-cluster "gen=http://127.0.0.1:$PPORT" --initial-cluster-token journal-v1 \
  --log-level warn >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
AGENT_PID=
cleanup() {
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null || true
  kill "$ETCD_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

ctl() { "$TB/etcdctl-3.6.16" --endpoints "$EP" "$@"; }
for i in $(seq 1 100); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done

lease_id() { awk '/^lease [0-9a-f]+ granted/ {print $2}'; }
rev() { ctl get none -w json | jq -r .header.revision; }

# --- before the snapshot ---
ctl put /app/config/a alpha
ctl put /app/config/b beta
for i in 1 2 3 4 5 6; do ctl put /app/users/$i "user-$i"; done
L1=$(ctl lease grant 3600 | lease_id)   # kept for the whole run
L2=$(ctl lease grant 1800 | lease_id)   # revoked during the journal
ctl put --lease="$L1" /session/keep held
ctl put --lease="$L2" /session/x1 one
ctl put --lease="$L2" /session/x2 two
echo "leases: L1=$L1 (3600s) L2=$L2 (1800s)"

"$BIN" snapshot --endpoints "$EP" --repo "file://$REPO"
SNAP_REV=$(rev)

"$BIN" agent --continuous --journal-flush 300ms --interval 24h \
  --endpoints "$EP" --repo "file://$REPO" --listen "127.0.0.1:$APORT" --state-dir "$WORK/state" \
  >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
sealed() { curl -s "http://127.0.0.1:$APORT/metrics" | awk '/^etcd_backup_journal_sealed_revision / {printf "%d", $2}'; }
for i in $(seq 1 100); do curl -sf "http://127.0.0.1:$APORT/status" >/dev/null && break; sleep 0.1; done
sleep 1

REVS=()
mark() { REVS+=("$(rev)"); }
# batch: wait until the agent has sealed the current revision, so each batch
# ends a segment
settle() {
  local r; r=$(rev)
  for i in $(seq 1 100); do [ "$(sealed)" -ge "$r" ] 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
}

# 1: overwrites and new keys
ctl put /app/config/a alpha-2
mark   # the first journal revision
ctl put /app/new/1 n1
ctl put /app/new/2 n2
mark; settle
# 2: a txn with several puts in one revision
ctl txn <<'EOF'

put /app/txn/1 t1
put /app/txn/2 t2
put /app/config/b beta-2


EOF
mark; settle
# 3: deletes: one key, then a range of two keys in one revision
ctl del /app/users/2
ctl del /app/users/4 /app/users/6   # [4, 6): 4 and 5
mark; settle
# 4: a new lease with keys; the snapshot's lease L2 revoked (its keys go)
L3=$(ctl lease grant 2400 | lease_id)
echo "lease: L3=$L3 (2400s)"
ctl put --lease="$L3" /lease/k1 lk1
ctl put --lease="$L3" /lease/k2 lk2
mark
ctl lease revoke "$L2"
mark; settle
# 5: overwrite again; a key moved off its lease; a key moved onto a lease
ctl put /app/config/a alpha-3
ctl put /lease/k2 lk2-free
ctl put --lease="$L1" /app/new/1 n1-leased
mark; settle
# 6: a txn with a compare, puts and a delete; an empty value; utf-8
ctl txn <<'EOF'
value("/app/config/a") = "alpha-3"

put /app/txn/3 t3
del /app/txn/1
put /app/empty ""

put /never x

EOF
ctl put /app/utf8 'héllo wörld ✓'
mark; settle
# 7: delete and re-create (create_revision moves, version restarts)
ctl del /app/new/2
ctl put /app/new/2 n2-again
ctl put /app/big "$(head -c 1500 /dev/zero | tr '\0' 'b')"
mark; settle
# 8: the last writes
ctl put /app/config/a alpha-4
ctl del /app/users/1
ctl put /app/users/7 user-7
mark; settle

LAST=$(rev)
for i in $(seq 1 100); do [ "$(sealed)" -ge "$LAST" ] && break; sleep 0.1; done
echo "snapshot revision $SNAP_REV, last revision $LAST, sealed $(sealed)"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || { echo "agent exit $?"; }
AGENT_PID=

# expectations: the snapshot's revision and every marked revision, as etcd gives them
mkdir -p "$WORK/raw"
for r in "$SNAP_REV" "${REVS[@]}"; do
  ctl get "" --prefix --rev="$r" -w json >"$WORK/raw/$r.json"
done
python3 - "$WORK/raw" "$SNAP_REV" "$LAST" "$L1=3600" "$L2=1800" "$L3=2400" >"$OUT/expect.json" <<'PY'
import base64, json, os, sys
raw, snap, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
leases = {}
for a in sys.argv[4:]:
    h, ttl = a.split("=")
    leases[str(int(h, 16))] = int(ttl)
revs = {}
for f in sorted(os.listdir(raw), key=lambda n: int(n.split(".")[0])):
    r = int(f.split(".")[0])
    d = json.load(open(os.path.join(raw, f)))
    kvs = []
    for kv in d.get("kvs", []):
        kvs.append({
            "key": base64.b64decode(kv["key"]).decode(),
            "value": base64.b64decode(kv.get("value", "")).decode(),
            "create_revision": kv["create_revision"],
            "mod_revision": kv["mod_revision"],
            "version": kv["version"],
            "lease": kv.get("lease", 0),
        })
    kvs.sort(key=lambda k: k["key"])
    revs[str(r)] = kvs
out = {"snapshot_revision": snap, "last_revision": last, "lease_ttls": leases, "revisions": revs}
d = lambda o: json.dumps(o, ensure_ascii=False)
lines = ['{', ' "snapshot_revision": %d,' % snap, ' "last_revision": %d,' % last,
         ' "lease_ttls": %s,' % d(leases), ' "revisions": {']
for i, (r, kvs) in enumerate(revs.items()):
    lines.append('  "%s": [' % r)
    lines += ['   ' + d(kv) + (',' if j < len(kvs) - 1 else '') for j, kv in enumerate(kvs)]
    lines.append('  ]' + (',' if i < len(revs) - 1 else ''))
lines += [' }', '}']
print("\n".join(lines))
PY
echo "marks: ${REVS[*]}"
rm -rf "$WORK"
