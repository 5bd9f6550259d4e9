#!/usr/bin/env bash
# End-to-end test of the QEMU firmware: the Cortex-M4 edge (mps2-an386, LAN9118 on QEMU's user
# network) probes a TCP listener on the host and sends its 1 s summaries over CoAP to a real
# `qos-aggregator serve`; the test then asks the super-manager's HTTP API whether they arrived:
# the edge must be listed with received >= 3 and gaps == 0.
#
# From inside QEMU the host's 127.0.0.1 is 10.0.2.2, the only address the firmware talks to.
# Environment: QOS_EDGE_ID (101), QOS_RUN_SECS (20), QOS_ACK_TARGET (5: the firmware exits once
# this many summaries are acknowledged), MIN_RECEIVED (3), QOS_FEATURES (the firmware's cargo
# features, e.g. `oscore`: then serve gets the board's test credentials in `[oscore]`, so it
# stores only protected batches from this edge, and the verdict needs them). Installs what it misses
# (qemu-system-arm with apt-get, defmt-print with cargo install, the thumbv7em target).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
edge_id=${QOS_EDGE_ID:-101}
min_received=${MIN_RECEIVED:-3}
fw=$here/target/thumbv7em-none-eabihf/release/qos-board-qemu-mps2-an386
features=${QOS_FEATURES:-}

. "$root/boards/serve-harness.sh"

# --- OSCORE: serve holds the board's test credentials (src/config.rs: its QOS_OSCORE_* defaults)
if [[ ",$features," == *,oscore,* ]]; then
  printf '%s' "qemu-test-secret-not-for-use" | od -An -tx1 | tr -d ' \n' >"$tmp/edge.key"
  chmod 600 "$tmp/edge.key"
  serve_toml="[oscore]
[[oscore.edge]]
edge = $edge_id
kid = \"71\"
serve_id = \"73\"
salt = \"\"
secret_file = \"$tmp/edge.key\""
fi

# --- tools --------------------------------------------------------------------------------
if ! command -v qemu-system-arm >/dev/null; then
  # On its own: together with qemu-system-misc the install fails on Debian 12.
  apt-get install -y qemu-system-arm >/dev/null || { apt-get update >/dev/null && apt-get install -y qemu-system-arm >/dev/null; }
fi
command -v defmt-print >/dev/null || cargo install defmt-print --locked
rustup target list --installed | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf

start_serve
probe_port=$(free_port tcp)
echo "probe target: $probe_port"

# --- probe target: accepts and closes connections -----------------------------------------
python3 - "$probe_port" <<'PY' >"$tmp/listener.log" 2>&1 &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(128)
while True:
    c, _ = s.accept()
    c.close()
PY
pids+=($!)

# --- firmware -----------------------------------------------------------------------------
export QOS_EDGE_ID=$edge_id QOS_PROBE_PORT=$probe_port QOS_COAP_PORT=$coap_port
export QOS_RUN_SECS=${QOS_RUN_SECS:-20} QOS_ACK_TARGET=${QOS_ACK_TARGET:-5}
export QOS_EPOCH=$(date +%s) # a fresh boot epoch per build (no persistent storage in QEMU)
(cd "$here" && cargo build -q --release --features "$features")
# Again with the clock base: only the board crate is rebuilt, so the base is current at boot.
(cd "$here" && QOS_UNIX_BASE=$(date +%s) cargo build -q --release --features "$features")
"$here/size.sh"

echo "--- QEMU (mps2-an386) ---"
set +e
timeout 120 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native -nic user,model=lan9118 -kernel "$fw" \
  | defmt-print -e "$fw" | tee "$tmp/firmware.log"
qemu_rc=${PIPESTATUS[0]}
set -e
echo "--- QEMU exit status: $qemu_rc ---"
[ "$qemu_rc" -eq 0 ] || fail "firmware exited with $qemu_rc (124: timeout)"

# --- verdict from the super-manager -------------------------------------------------------
check_edge "$edge_id" "$min_received"
if [[ ",$features," == *,oscore,* ]]; then
  grep -q "OSCORE with the super-manager" "$tmp/firmware.log" || fail "the firmware did not use OSCORE"
  python3 - "$tmp/stats.json" <<'PY' || fail "OSCORE refusals at serve"
import json, sys
rejected = json.load(open(sys.argv[1])).get("rejected", {})
bad = {k: v for k, v in rejected.items() if k.startswith("oscore") and v}
assert not bad, f"serve refused OSCORE datagrams: {bad}"
print("serve: no OSCORE refusals")
PY
fi
echo "PASS: QEMU mps2-an386 firmware${features:+ (features: $features)} delivered its summaries to qos-aggregator"
