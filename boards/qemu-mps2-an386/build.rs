//! Puts `memory.x` where the linker finds it, and fixes the compile-time settings that have a
//! build-time default (see src/config.rs).

use std::time::{SystemTime, UNIX_EPOCH};
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("memory.x", out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    // QOS_EPOCH and QOS_UNIX_BASE default to the time of the build; pass them explicitly (the
    // test does) so that each build gets a fresh boot epoch and a current clock base.
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
