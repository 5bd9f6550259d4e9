//! SIGINT and SIGTERM as a shutdown flag (and SIGUSR1 as another flag), without extra
//! dependencies.
//!
//! [`install`] registers a handler for both signals (through the C library's `signal(2)`,
//! which std already links on Unix) that only stores `true` into the given flag — an atomic
//! store, which is async-signal-safe. The serving threads poll the flag and shut down in order.
//! A second signal while the flag is already set ends the process at once with `_exit(130)`,
//! for the case where a clean shutdown hangs.
//!
//! Why not a crate: `ctrlc` or `signal-hook` would do the same in more code and more dependencies;
//! the two functions declared below are POSIX and have the same signal numbers (SIGINT 2, SIGTERM
//! 15) on every Unix. On other platforms [`install`] does nothing and Ctrl-C ends the process
//! with the platform's default behaviour (SQLite's journal keeps the store consistent).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Makes SIGINT and SIGTERM set `flag`. Call once; later calls keep the first flag and return
/// `false`.
pub fn install(flag: Arc<AtomicBool>) -> bool {
    imp::install(flag)
}

/// Makes SIGUSR1 set `flag` (e.g. "start draining"). Call once; later calls keep the first flag
/// and return `false`. Does nothing (returns `false`) on platforms without SIGUSR1.
pub fn on_usr1(flag: Arc<AtomicBool>) -> bool {
    imp::on_usr1(flag)
}

/// Makes SIGHUP set `flag` (e.g. "reload certificates"). Call once; later calls keep the first
/// flag and return `false`. Does nothing (returns `false`) on platforms without SIGHUP.
pub fn on_hup(flag: Arc<AtomicBool>) -> bool {
    imp::on_hup(flag)
}

#[cfg(unix)]
#[allow(unsafe_code)]
mod imp {
    use std::os::raw::c_int;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};

    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;
    /// `SIG_ERR` is `(sighandler_t) -1`.
    const SIG_ERR: usize = usize::MAX;

    extern "C" {
        fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        fn _exit(status: c_int) -> !;
    }

    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    static USR1: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    /// SIGUSR1: 10 on Linux, 30 on the BSDs and macOS.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const SIGUSR1: c_int = 10;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const SIGUSR1: c_int = 30;

    extern "C" fn on_usr1_signal(_signum: c_int) {
        // Only an atomic load of the initialised OnceLock and an atomic store.
        if let Some(flag) = USR1.get() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    pub(super) fn on_usr1(flag: Arc<AtomicBool>) -> bool {
        if USR1.set(flag).is_err() {
            return false;
        }
        // SAFETY: as in `install`: a C handler doing async-signal-safe work only.
        let previous = unsafe { signal(SIGUSR1, on_usr1_signal) };
        if previous == SIG_ERR {
            tracing::warn!(signum = SIGUSR1, "cannot install signal handler");
        }
        true
    }

    static HUP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    /// SIGHUP is 1 on every Unix.
    const SIGHUP: c_int = 1;

    extern "C" fn on_hup_signal(_signum: c_int) {
        // Only an atomic load of the initialised OnceLock and an atomic store.
        if let Some(flag) = HUP.get() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    pub(super) fn on_hup(flag: Arc<AtomicBool>) -> bool {
        if HUP.set(flag).is_err() {
            return false;
        }
        // SAFETY: as in `install`: a C handler doing async-signal-safe work only.
        let previous = unsafe { signal(SIGHUP, on_hup_signal) };
        if previous == SIG_ERR {
            tracing::warn!(signum = SIGHUP, "cannot install signal handler");
        }
        true
    }

    extern "C" fn on_signal(_signum: c_int) {
        // Only async-signal-safe operations: an atomic load of the initialised OnceLock, an
        // atomic swap, and _exit.
        if let Some(flag) = FLAG.get() {
            if flag.swap(true, Ordering::SeqCst) {
                // SAFETY: _exit is async-signal-safe and never returns.
                unsafe { _exit(130) }
            }
        }
    }

    pub(super) fn install(flag: Arc<AtomicBool>) -> bool {
        if FLAG.set(flag).is_err() {
            return false;
        }
        for signum in [SIGINT, SIGTERM] {
            // SAFETY: `on_signal` has the C handler signature and only does async-signal-safe
            // work; FLAG is initialised before the handler is registered.
            let previous = unsafe { signal(signum, on_signal) };
            if previous == SIG_ERR {
                tracing::warn!(signum, "cannot install signal handler");
            }
        }
        true
    }
}

#[cfg(not(unix))]
mod imp {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    pub(super) fn install(_flag: Arc<AtomicBool>) -> bool {
        false
    }

    pub(super) fn on_usr1(_flag: Arc<AtomicBool>) -> bool {
        false
    }

    pub(super) fn on_hup(_flag: Arc<AtomicBool>) -> bool {
        false
    }
}
