#!/usr/bin/env bash
# Builds the Nucleo-F429ZI firmware (release) and prints its flash and static RAM against the
# budget (DESIGN.md §7; the report and the check are the QEMU board's size.sh). Flashing needs
# the board: `cargo run --release` here (probe-rs). Environment: the QOS_* settings of
# src/config.rs; defaults build a valid image for CI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rustup target list --installed | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
(cd "$here" && cargo build --release --locked)
"$here/../qemu-mps2-an386/size.sh" "$here/target/thumbv7em-none-eabihf/release/qos-board-nucleo-f429zi"
