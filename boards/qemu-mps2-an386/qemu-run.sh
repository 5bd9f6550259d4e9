#!/usr/bin/env bash
# Cargo runner (see .cargo/config.toml): boot FIRMWARE on QEMU's mps2-an386 with a LAN9118 on
# QEMU's user network (the host's 127.0.0.1 is 10.0.2.2 from inside) and decode the defmt log
# it writes over semihosting. The exit status is the firmware's (semihosting exit), or 124 if
# QEMU_TIMEOUT (default 120 s) passed first.
set -euo pipefail
fw=$1
timeout "${QEMU_TIMEOUT:-120}" qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none \
  -serial none -semihosting-config enable=on,target=native -nic user,model=lan9118 \
  -kernel "$fw" | defmt-print -e "$fw"
