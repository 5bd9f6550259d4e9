#!/usr/bin/env bash
# End-to-end test of host-sim: the no_std edge on embassy's std platform, its network bridged
# to host UDP on 127.0.0.1, pings the super-manager's CoAP port (CoAP ping, timed in µs) and
# sends its 1 s summaries over CoAP to a real `qos-aggregator serve`; the test then asks the
# super-manager's HTTP API whether they arrived: the edge must be listed with received >= 3 and
# gaps == 0. No root, loopback only.
#
# Environment: QOS_EDGE_ID (201), QOS_RUN_SECS (20), QOS_ACK_TARGET (5: host-sim stops once this
# many records are acknowledged), MIN_RECEIVED (3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
edge_id=${QOS_EDGE_ID:-201}
min_received=${MIN_RECEIVED:-3}

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  echo "--- aggregator log (tail) ---" >&2
  tail -n 30 "$tmp/aggregator.log" >&2 || true
  exit 1
}
command -v curl >/dev/null || fail "curl is missing"

free_port() { # tcp|udp
  python3 - "$1" <<'PY'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}
http_port=$(free_port tcp)
coap_port=$(free_port udp)
echo "ports: http $http_port, coap $coap_port"

# --- super-manager ------------------------------------------------------------------------
(cd "$root" && cargo build -q -p qos-aggregator)
cat > "$tmp/aggregator.toml" <<TOML
[http]
listen = "127.0.0.1:$http_port"

[coap]
listen = "127.0.0.1:$coap_port"

[store]
data_dir = "$tmp/data"
TOML
"$root/target/debug/qos-aggregator" serve --config "$tmp/aggregator.toml" >"$tmp/aggregator.log" 2>&1 &
pids+=($!)

api() { curl -fsS --max-time 5 "http://127.0.0.1:$http_port/api/v1/$1"; }
for _ in $(seq 100); do api health >/dev/null 2>&1 && break; sleep 0.1; done
api health >/dev/null || fail "super-manager did not come up"

# --- host-sim -----------------------------------------------------------------------------
(cd "$here" && cargo build -q)
echo "--- host-sim ---"
set +e
QOS_EDGE_ID=$edge_id QOS_COAP_PORT=$coap_port QOS_RUN_SECS=${QOS_RUN_SECS:-20} \
  QOS_ACK_TARGET=${QOS_ACK_TARGET:-5} timeout 60 "$here/target/debug/qos-board-host-sim" 2>&1 \
  | tee "$tmp/host-sim.log"
rc=${PIPESTATUS[0]}
set -e
echo "--- host-sim exit status: $rc ---"
[ "$rc" -eq 0 ] || fail "host-sim exited with $rc (124: timeout)"
grep -q "ok [1-9]" "$tmp/host-sim.log" || fail "no successful CoAP ping in any window"

# --- verdict from the super-manager -------------------------------------------------------
api edges >"$tmp/edges.json" || fail "GET /api/v1/edges"
echo "edges: $(cat "$tmp/edges.json")"
python3 - "$tmp/edges.json" "$edge_id" "$min_received" <<'PY' || fail "edge check"
import json, sys
edges = json.load(open(sys.argv[1]))["edges"]
edge_id, min_received = int(sys.argv[2]), int(sys.argv[3])
mine = [e for e in edges if e["id"] == edge_id]
assert mine, f"edge {edge_id} not listed: {edges}"
e = mine[0]
assert e["received"] >= min_received, f"received {e['received']} < {min_received}"
assert e["gaps"] == 0, f"gaps {e['gaps']}"
print(f"edge {edge_id}: received {e['received']}, gaps {e['gaps']}, duplicates {e.get('duplicates')}, last_seq {e['last_seq']:#x}")
PY
echo "PASS: host-sim (embassy std platform, UDP bridge) delivered its summaries to qos-aggregator"
