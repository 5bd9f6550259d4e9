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

. "$root/boards/serve-harness.sh"
start_serve

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
check_edge "$edge_id" "$min_received"
echo "PASS: host-sim (embassy std platform, UDP bridge) delivered its summaries to qos-aggregator"
