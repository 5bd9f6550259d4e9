#!/usr/bin/env bash
# Size report of the release firmware against the budget (DESIGN.md §7): flash = text + rodata
# + data (what is stored in the image), static RAM = data + bss (the stack is not counted; it
# takes the rest of the RAM region of memory.x). The firmware has no heap (no allocator).
# Uses llvm-size from rustup's llvm-tools (installed if missing), or arm-none-eabi-size.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
elf=${1:-$here/target/thumbv7em-none-eabihf/release/qos-board-qemu-mps2-an386}
# The budgets of DESIGN.md §7 (the QEMU firmware); another board passes its own
# (QOS_FLASH_BUDGET_KIB, QOS_RAM_BUDGET_KIB).
flash_budget=$((${QOS_FLASH_BUDGET_KIB:-96} * 1024))
ram_budget=$((${QOS_RAM_BUDGET_KIB:-48} * 1024))

size_tool() {
  local sysroot bin
  sysroot=$(rustc --print sysroot)
  bin=$(ls "$sysroot"/lib/rustlib/*/bin/llvm-size 2>/dev/null | head -n1 || true)
  if [ -z "$bin" ]; then
    rustup component add llvm-tools >/dev/null 2>&1 || true
    bin=$(ls "$sysroot"/lib/rustlib/*/bin/llvm-size 2>/dev/null | head -n1 || true)
  fi
  if [ -n "$bin" ]; then echo "$bin"; elif command -v arm-none-eabi-size >/dev/null; then
    echo arm-none-eabi-size; else echo "no llvm-size or arm-none-eabi-size" >&2; exit 1; fi
}
[ -f "$elf" ] || { echo "no firmware at $elf: build it first (cargo build --release)" >&2; exit 1; }
tool=$(size_tool)
"$tool" -A "$elf" | grep -E '^(section|\.vector_table|\.text|\.rodata|\.data|\.bss|\.uninit|\.defmt)' || true

read -r text rodata data bss vt < <("$tool" -A "$elf" | awk '
  $1==".text"{t=$2} $1==".rodata"{r=$2} $1==".data"{d=$2} $1==".bss"{b=$2} $1==".uninit"{b+=$2}
  $1==".vector_table"{v=$2} END{print t+0, r+0, d+0, b+0, v+0}')
flash=$((vt + text + rodata + data))
ram=$((data + bss))
pct() { echo "$(( $1 * 100 / $2 ))%"; }
printf 'flash (vector_table+text+rodata+data): %6d B = %5.1f KiB of %d KiB (%s)\n' \
  "$flash" "$(awk "BEGIN{print $flash/1024}")" $((flash_budget / 1024)) "$(pct "$flash" "$flash_budget")"
printf 'static RAM (data+bss):                 %6d B = %5.1f KiB of %d KiB (%s)\n' \
  "$ram" "$(awk "BEGIN{print $ram/1024}")" $((ram_budget / 1024)) "$(pct "$ram" "$ram_budget")"
echo "heap: none (no global allocator)"
status=0
[ "$flash" -le "$flash_budget" ] || { echo "flash over budget" >&2; status=1; }
[ "$ram" -le "$ram_budget" ] || { echo "static RAM over budget" >&2; status=1; }
exit $status
