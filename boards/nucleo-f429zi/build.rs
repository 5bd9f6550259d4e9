//! Fixes the compile-time settings that have a build-time default (see src/config.rs);
//! `memory.x` comes from embassy-stm32's `memory-x` feature.

use std::env;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    // QOS_EPOCH and QOS_UNIX_BASE default to the time of the build, so each build that is
    // flashed starts a fresh boot epoch with a clock base close to the flashing time.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    for (var, out_var) in [
        ("QOS_EPOCH", "QOS_BUILD_EPOCH"),
        ("QOS_UNIX_BASE", "QOS_BUILD_UNIX_BASE"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        let v = env::var(var).unwrap_or_else(|_| now.clone());
        println!("cargo:rustc-env={out_var}={v}");
    }
}
