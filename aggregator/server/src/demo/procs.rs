//! The demo's child processes (brokers, edges): each in its own process group, output to a log
//! file, killed with its parent (Linux: `PR_SET_PDEATHSIG`, so even a demo killed with SIGKILL
//! leaves nothing behind), stopped with SIGTERM and reaped, or SIGKILLed on purpose.
//!
//! Children must be spawned from the thread that lives as long as the demo (the main thread):
//! the parent-death signal fires when the spawning *thread* ends.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::DemoError;

/// A running child process.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    reaped: Option<ExitStatus>,
}

/// SIGKILL.
pub const SIGKILL: i32 = 9;
/// SIGTERM.
pub const SIGTERM: i32 = 15;

#[allow(unsafe_code)]
mod sys {
    use std::os::raw::c_int;

    extern "C" {
        fn kill(pid: c_int, sig: c_int) -> c_int;
        #[cfg(target_os = "linux")]
        fn prctl(option: c_int, ...) -> c_int;
    }

    /// Sends `sig` to the process group `pgid` (the child leads its own group).
    pub fn kill_group(pgid: u32, sig: c_int) -> bool {
        let Ok(pgid) = c_int::try_from(pgid) else {
            return false;
        };
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
        unsafe { kill(-pgid, sig) == 0 }
    }

    /// In the child before exec: die with SIGKILL when the parent (thread) ends.
    #[cfg(target_os = "linux")]
    pub fn die_with_parent(cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        const PR_SET_PDEATHSIG: c_int = 1;
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
        // parent; it is all the hook does between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                prctl(PR_SET_PDEATHSIG, super::SIGKILL as std::os::raw::c_ulong);
                Ok(())
            });
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn die_with_parent(_cmd: &mut std::process::Command) {}
}

impl Proc {
    /// Starts `program args` as `name` in a new process group, stdout and stderr appended to
    /// `log`.
    pub fn spawn(name: &str, program: &Path, args: &[&str], log: &Path) -> Result<Proc, DemoError> {
        Proc::spawn_env(name, program, args, &[], log)
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Result<Proc, DemoError> {
        use std::os::unix::process::CommandExt;
        let io = |e: std::io::Error| DemoError::Spawn {
            name: name.to_string(),
            program: program.to_path_buf(),
            source: e,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io)?;
        let err = out.try_clone().map_err(io)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        sys::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(io)?;
        Ok(Proc {
            name: name.to_string(),
            child,
            reaped: None,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs (reaps it if it ended).
    pub fn running(&mut self) -> bool {
        if self.reaped.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.reaped = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// SIGKILL to its group, then reaped.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        if self.running() {
            sys::kill_group(self.pid(), SIGKILL);
            self.reaped = self.child.wait().ok();
        }
        self.reaped
    }

    /// SIGTERM to its group, up to `patience` to end, then SIGKILL; always reaped.
    pub fn stop(&mut self, patience: Duration) -> Option<ExitStatus> {
        if self.running() {
            sys::kill_group(self.pid(), SIGTERM);
            let deadline = Instant::now() + patience;
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.running() {
                tracing::warn!(name = %self.name, "did not stop on SIGTERM; killing it");
            }
        }
        // Anything left in its group (it leads it) goes too.
        sys::kill_group(self.pid(), SIGKILL);
        if self.reaped.is_none() {
            self.reaped = self.child.wait().ok();
        }
        self.reaped
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill9();
        }
    }
}

/// Where `qos-edge` is: next to the running `qos-aggregator`. When it is missing and this
/// process was started by `cargo run` (which sets `CARGO` and `CARGO_MANIFEST_DIR`), it is
/// built once with the same profile; otherwise the error says how to build it.
pub fn find_edge_binary(say: &dyn Fn(&str)) -> Result<PathBuf, DemoError> {
    let exe = std::env::current_exe().map_err(|e| DemoError::NoEdge {
        looked: PathBuf::from("qos-edge"),
        hint: format!("cannot locate the running executable ({e})"),
    })?;
    let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    let edge = dir.join(format!("qos-edge{}", std::env::consts::EXE_SUFFIX));
    if edge.is_file() {
        return Ok(edge);
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release")
        .to_string();
    // Cargo puts a profile's binaries in `<target>/<profile>` (`debug` for dev); a binary
    // elsewhere (copied, installed) gets the release command.
    let flag = match profile.as_str() {
        "debug" => String::new(),
        "release" => "--release".to_string(),
        other
            if dir
                .parent()
                .is_some_and(|t| t.join("CACHEDIR.TAG").is_file()) =>
        {
            format!("--profile {other}")
        }
        _ => "--release".to_string(),
    };
    let hint =
        format!("build it with `cargo build {flag} -p qos-edge`").replace("build  -p", "build -p");
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Err(DemoError::NoEdge { looked: edge, hint });
    };
    say(&format!(
        "qos-edge is not built yet: running `cargo build {flag} -p qos-edge` (once)"
    ));
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "qos-edge"])
        .args(flag.split_whitespace())
        .current_dir(manifest)
        .stdin(Stdio::null());
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
    }
    match cmd.status() {
        Ok(s) if s.success() && edge.is_file() => Ok(edge),
        _ => Err(DemoError::NoEdge { looked: edge, hint }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_child_is_reaped_and_its_group_is_gone() {
        let dir = std::env::temp_dir().join(format!("qos-demo-procs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sleep.log");
        let mut p = Proc::spawn("sleeper", Path::new("sleep"), &["600"], &log).unwrap();
        let pid = p.pid();
        assert!(p.running());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let pgid: u32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pgid, pid, "the child leads its own process group");
        let status = p.stop(Duration::from_secs(10)).unwrap();
        assert!(!status.success());
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
