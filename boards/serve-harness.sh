# Shared by the boards' run-test.sh scripts (source it after setting `root`): a temporary
# directory cleaned up on exit, free loopback ports, a real `qos-aggregator serve`, and the
# verdict read from its HTTP API.
#
#   start_serve                 # sets http_port, coap_port; api PATH queries /api/v1/PATH
#                               # (serve_toml: more of serve's configuration, e.g. [oscore])
#   check_edge ID MIN_RECEIVED  # the edge is listed with received >= MIN and gaps == 0

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

api() { curl -fsS --max-time 5 "http://127.0.0.1:$http_port/api/v1/$1"; }

start_serve() {
  http_port=$(free_port tcp)
  coap_port=$(free_port udp)
  (cd "$root" && cargo build -q -p qos-aggregator)
  cat > "$tmp/aggregator.toml" <<TOML
[http]
listen = "127.0.0.1:$http_port"

[coap]
listen = "127.0.0.1:$coap_port"

[store]
data_dir = "$tmp/data"

${serve_toml:-}
TOML
  "${CARGO_TARGET_DIR:-$root/target}/debug/qos-aggregator" serve --config "$tmp/aggregator.toml" \
    >"$tmp/aggregator.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do api health >/dev/null 2>&1 && break; sleep 0.1; done
  api health >/dev/null || fail "super-manager did not come up"
  echo "super-manager: http $http_port, coap $coap_port"
}

check_edge() { # ID MIN_RECEIVED
  api edges >"$tmp/edges.json" || fail "GET /api/v1/edges"
  api stats >"$tmp/stats.json" || fail "GET /api/v1/stats"
  echo "edges: $(cat "$tmp/edges.json")"
  echo "stats: $(cat "$tmp/stats.json")"
  python3 - "$tmp/edges.json" "$1" "$2" <<'PY' || fail "edge check"
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
}
