//! Helpers for cross-process tests (tier 3 of DESIGN.md §6): real `qos-aggregator` and
//! `qos-edge` processes on loopback.
//!
//! # Where the binaries come from
//! Cargo builds the binaries of the package under test only (`CARGO_BIN_EXE_*`); `qos-aggregator`
//! and `qos-edge` belong to other packages and are binary-only as far as this crate is concerned,
//! so they cannot be dependencies. [`binary`] therefore builds them itself, once per test process
//! (a [`OnceLock`]): it runs `$CARGO build -p qos-aggregator -p qos-edge` with the profile of the
//! running test and the environment it was given (so `CARGO_TARGET_DIR` is honoured), then takes
//! the executables from the target directory of the running test. That directory is found from
//! [`std::env::current_exe`]: a test runs as `<target>/<profile>/deps/<test>-<hash>`, so its
//! grandparent is `<target>/<profile>`, where `cargo build` puts binaries. When the binaries
//! are fresh the build is a no-op that takes well under a second. Set `QOS_E2E_NO_BUILD=1` to
//! skip the build (the binaries must then already be in that directory).
//!
//! # Processes
//! [`Proc`] is a child process that is killed (SIGKILL) when dropped, so a failing test leaves
//! nothing running; [`Proc::stop`] asks it to stop with SIGTERM (through the `kill` command) and
//! waits a bounded time. Standard output and error go to a log file, shown by
//! [`Proc::log_tail`] in assertion messages.
//!
//! # Time
//! Nothing here asserts on wall-clock durations: [`wait_for`] polls a condition until it holds
//! or a generous deadline passes (then the test fails with the last observation).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default deadline of [`wait_for`] conditions.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The directory holding the binaries of the running test's profile (`<target>/<profile>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test");
    // <target>/<profile>/deps/<test>-<hash>
    let deps = exe.parent().expect("the test's directory");
    deps.parent()
        .expect("the profile directory above deps/")
        .to_path_buf()
}

/// Path of the workspace binary `name` (`qos-aggregator` or `qos-edge`), built on first use.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_binaries) {
        panic!("cannot build the binaries under test: {e}");
    }
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing after the build",
        path.display()
    );
    path
}

fn build_binaries() -> Result<(), String> {
    if std::env::var_os("QOS_E2E_NO_BUILD").is_some_and(|v| v == "1") {
        return Ok(());
    }
    let dir = profile_dir();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no profile directory name")?
        .to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "qos-aggregator", "-p", "qos-edge"]);
    // The profile directory is named after the profile, except `dev`, which builds to `debug`.
    match profile.as_str() {
        "debug" => {}
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // Build in the workspace of this crate, wherever the test was started from.
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    // The target directory is that of the running test: derive it if the environment does not
    // name one (a plain `cargo test` in the workspace), so the binaries land beside the test.
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A fresh directory `<base>/<name>-<pid>-<n>` (removed first if it exists). It is kept after
/// the test, for post-mortems; the base (e.g. `CARGO_TARGET_TMPDIR`) is cleaned with the target.
pub fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// A free TCP port on 127.0.0.1 (bound, read, released: the caller binds it again soon).
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    l.local_addr().expect("local address").port()
}

/// A free UDP port on 127.0.0.1 (bound, read, released).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    s.local_addr().expect("local address").port()
}

/// Polls `probe` every 100 ms until it returns `Ok`, or panics after `patience` with the last
/// `Err` (what was observed) and `what`.
pub fn wait_for<T>(
    what: &str,
    patience: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("gave up waiting for {what} after {patience:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A child process, SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, its output appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[&str], log: &Path) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the process log");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Its whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        let mut out = format!(
            "--- last lines of {} ({}) ---\n",
            self.name,
            self.log.display()
        );
        for l in &lines[from..] {
            let _ = writeln!(out, "{l}");
        }
        out
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (through `kill -TERM`), then wait up to `patience` for the exit; SIGKILL and a
    /// panic if it does not stop in time. Returns the exit status.
    pub fn stop(mut self, patience: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("a running process");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "kill -TERM {} failed",
            child.id()
        );
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the child") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within {patience:?} of SIGTERM\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A raw HTTP/1.1 `GET` (one request per connection): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("GET {path}: {e}");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8(raw).map_err(|e| format!("GET {path}: not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no end of head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// A running `qos-aggregator serve`.
#[derive(Debug)]
pub struct Serve {
    /// The process.
    pub proc: Proc,
    /// HTTP API address.
    pub http: SocketAddr,
    /// CoAP (UDP) address.
    pub coap: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
}

impl Serve {
    /// Starts `serve` with its data in `dir/data`, on free ports, and waits until its API
    /// answers. A port taken between choosing and binding makes the process exit: then it is
    /// started again on other ports (up to 5 times).
    pub fn start(dir: &Path) -> Serve {
        Serve::start_with(dir, "")
    }

    /// [`Serve::start`] with `extra` TOML appended to the configuration (e.g. `[model]` or a
    /// `[coap.rate_limit]` table).
    pub fn start_with(dir: &Path, extra: &str) -> Serve {
        let mut last = String::new();
        for _ in 0..5 {
            let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
            let coap = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
            match Serve::try_start(dir, http, coap, extra) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("serve did not start on free ports: {last}");
    }

    /// Starts `serve` on the given addresses (e.g. again after a kill), retrying for a while if
    /// a port is still held.
    pub fn start_at(dir: &Path, http: SocketAddr, coap: SocketAddr) -> Serve {
        Serve::start_at_with(dir, http, coap, "")
    }

    /// [`Serve::start_at`] with more sections (e.g. `[coap_tls]`) appended to the file.
    pub fn start_at_with(dir: &Path, http: SocketAddr, coap: SocketAddr, extra: &str) -> Serve {
        let mut last = String::new();
        for _ in 0..10 {
            match Serve::try_start(dir, http, coap, extra) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("serve did not start on {http} / {coap}: {last}");
    }

    fn try_start(
        dir: &Path,
        http: SocketAddr,
        coap: SocketAddr,
        extra: &str,
    ) -> Result<Serve, String> {
        let data_dir = dir.join("data");
        let config = dir.join("serve.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"{http}\"\n\n[coap]\nlisten = \"{coap}\"\n\n\
                 [store]\ndata_dir = {:?}\n\n{extra}\n",
                data_dir.display().to_string()
            ),
        )
        .expect("write the serve configuration");
        let proc = Proc::spawn(
            "qos-aggregator serve",
            &binary("qos-aggregator"),
            &["serve", "--config", config.to_str().expect("UTF-8 path")],
            &dir.join("serve.log"),
        );
        let mut serve = Serve {
            proc,
            http,
            coap,
            data_dir,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = serve.proc.exited() {
                return Err(format!("exited with {status}\n{}", serve.proc.log_tail()));
            }
            if matches!(http_get(http, "/api/v1/health"), Ok((200, _))) {
                return Ok(serve);
            }
            if Instant::now() >= deadline {
                return Err(format!("no answer on {http}\n{}", serve.proc.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` parsed as JSON; an error for any status other than 200.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, String> {
        let (status, body) = http_get(self.http, path)?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e} in {body:?}"))
    }

    /// The row of edge `id` in `GET /api/v1/edges`.
    pub fn edge_row(&self, id: u32) -> Result<serde_json::Value, String> {
        let edges = self.get_json("/api/v1/edges")?;
        edges["edges"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["id"] == id).cloned())
            .ok_or_else(|| format!("edge {id} not listed: {edges}"))
    }

    /// Records stored for edge `id` (its `received` count).
    pub fn received(&self, id: u32) -> Result<u64, String> {
        self.edge_row(id)?["received"]
            .as_u64()
            .ok_or_else(|| "no received count".into())
    }

    /// Waits until every edge of `ids` has at least `n` records stored.
    pub fn wait_received(&self, ids: &[u32], n: u64, what: &str, wait: Duration) {
        wait_for(what, wait, || {
            let got: Vec<u64> = ids.iter().map(|&i| self.received(i).unwrap_or(0)).collect();
            if got.iter().all(|&g| g >= n) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        });
    }

    /// The events of `GET /api/v1/events`.
    pub fn events(&self) -> Result<Vec<serde_json::Value>, String> {
        Ok(self.get_json("/api/v1/events")?["events"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The SQLite database file.
    pub fn database(&self) -> PathBuf {
        self.data_dir.join("qos.sqlite")
    }
}

/// Settings of an edge under test.
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    /// Edge id.
    pub id: u32,
    /// Broker (CoAP) addresses, in order of preference.
    pub brokers: Vec<SocketAddr>,
    /// TCP target of its one probe.
    pub target: SocketAddr,
    /// Storage directory (boot epoch, outbox).
    pub storage: PathBuf,
    /// More TOML appended to the configuration (e.g. `[[rule]]` tables).
    pub extra_toml: String,
    /// Local address of the edge's CoAP socket (`uplink.bind`); `None`: any port.
    pub bind: Option<SocketAddr>,
}

/// Starts `qos-edge run` with windows of 1 s and a TCP probe every 200 ms; configuration and
/// log in `dir`.
pub fn start_edge(dir: &Path, spec: &EdgeSpec) -> Proc {
    start_edge_with(dir, spec, "")
}

/// [`start_edge`] with `uplink` lines appended to the `[uplink]` table (e.g.
/// `config_poll_s = 1`).
pub fn start_edge_with(dir: &Path, spec: &EdgeSpec, uplink: &str) -> Proc {
    let config = dir.join(format!("edge-{}.toml", spec.id));
    std::fs::write(
        &config,
        format!(
            "[edge]\nid = {id}\nname = \"e2e-{id}\"\nregion = \"loopback\"\n\n\
             [uplink]\nbrokers = [{brokers}]\nwindow_s = 1\nack_timeout_ms = 500\n{bind}{uplink}\n\
             [storage]\ndir = {storage:?}\n\n\
             [[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"{target}\"\n\
             interval_ms = 200\ntimeout_ms = 150\n\n{extra}",
            id = spec.id,
            brokers = spec
                .brokers
                .iter()
                .map(|b| format!("\"{b}\""))
                .collect::<Vec<_>>()
                .join(", "),
            storage = spec.storage.display().to_string(),
            target = spec.target,
            extra = spec.extra_toml,
            uplink = if uplink.is_empty() {
                String::new()
            } else {
                format!("{uplink}\n")
            },
            bind = spec
                .bind
                .map(|b| format!("bind = \"{b}\"\n"))
                .unwrap_or_default(),
        ),
    )
    .expect("write the edge configuration");
    Proc::spawn(
        &format!("qos-edge {}", spec.id),
        &binary("qos-edge"),
        &["run", "--config", config.to_str().expect("UTF-8 path")],
        &dir.join(format!("edge-{}.log", spec.id)),
    )
}

/// A TCP listener on 127.0.0.1 that accepts and closes every connection (a probe target that
/// is up), until dropped.
#[derive(Debug)]
pub struct TcpTarget {
    /// Its address.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpTarget {
    /// Starts the listener.
    pub fn start() -> TcpTarget {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the probe target");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpTarget {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw HTTP/1.1 request with a body (one per connection): the status code and the body.
/// `patience` bounds the wait for the answer (on-demand probes take a while).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    patience: Duration,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("{method} {path}: {e}");
    s.set_read_timeout(Some(patience)).map_err(io)?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8(raw).map_err(|e| format!("{method} {path}: not UTF-8: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no end of head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Starts `qos-aggregator broker` on `listen`, forwarding to `upstream`, its queue in
/// `dir/broker-data`, with `extra` lines appended to its `[broker]` table; waits until it
/// listens. Retries while the port is still held. `run` numbers its log file.
pub fn start_broker(
    dir: &Path,
    run: usize,
    listen: SocketAddr,
    upstream: SocketAddr,
    extra: &str,
) -> Proc {
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"{listen}\"\nupstream = \"{upstream}\"\ndata_dir = {:?}\n\
             max_queue_bytes = 10485760\n{extra}\n\n[broker.reliability]\nack_timeout_ms = 500\n",
            dir.join("broker-data").display().to_string()
        ),
    )
    .expect("write the broker configuration");
    let mut last = String::new();
    for attempt in 0..10 {
        let log = dir.join(format!("broker-{run}-{attempt}.log"));
        let mut proc = Proc::spawn(
            "qos-aggregator broker",
            &binary("qos-aggregator"),
            &["broker", "--config", config.to_str().expect("UTF-8 path")],
            &log,
        );
        let up = wait_for("the broker to listen or exit", PATIENCE, || {
            if let Some(status) = proc.exited() {
                return Ok(Err(format!("exited with {status}\n{}", proc.log_tail())));
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("broker listening") {
                Ok(Ok(()))
            } else {
                Err(proc.log_tail())
            }
        });
        match up {
            Ok(()) => return proc,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the broker did not start on {listen}: {last}");
}

pub mod fake_edge;
pub mod relay;
pub mod tls;
pub use fake_edge::{Answer, FakeEdge};

/// An edge with the outbox file of the Linux edge ([`EdgeSpec::storage`]`/outbox.bin`): a
/// duplicate in the store panics; `Err` while records are missing or unacknowledged.
/// Records of `spec`'s edge stored: every sequence number it used, once (its outbox empty).
pub fn all_stored(serve: &Serve, spec: &EdgeSpec) -> Result<usize, String> {
    let bytes = std::fs::read(spec.storage.join("outbox.bin")).map_err(|e| e.to_string())?;
    let outbox = qos_edge_core::Outbox::<256, 512>::load(&bytes).map_err(|e| format!("{e}"))?;
    if !outbox.is_empty() {
        return Err(format!("edge {}: {} unacknowledged", spec.id, outbox.len()));
    }
    let next = outbox.next_seq().0;
    let first = qos_wire::ids::Seq::first_of_epoch((next >> 32) as u32).0;
    let conn = rusqlite::Connection::open_with_flags(
        serve.database(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(|e| e.to_string())?;
    let mut st = conn
        .prepare("SELECT seq FROM records WHERE edge_id = ?1 ORDER BY seq")
        .map_err(|e| e.to_string())?;
    let seqs: Vec<u64> = st
        .query_map([i64::from(spec.id)], |r| r.get::<_, i64>(0))
        .map_err(|e| e.to_string())?
        .map(|r| r.map(|s| s as u64).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "edge {}: a duplicate", spec.id);
    let want: Vec<u64> = (first..next).collect();
    if seqs == want {
        Ok(seqs.len())
    } else {
        Err(format!(
            "edge {}: {} stored of {} numbered",
            spec.id,
            seqs.len(),
            want.len()
        ))
    }
}

/// [`two_limited_edges`]: serve, a broker in front of it, and two edges, one each way.
pub struct LimitedEdges {
    pub serve: Serve,
    /// The broker's listening address.
    pub listen: SocketAddr,
    pub broker: Proc,
    /// The TCP server both edges probe.
    pub target: TcpTarget,
    /// The edge straight to serve, then the one behind the broker.
    pub specs: [EdgeSpec; 2],
    pub edges: [Proc; 2],
}

/// serve and a broker in front of it, both with `limit` as the body of their
/// `[coap.rate_limit]` / `[broker.rate_limit]`, and two Linux edges probing one TCP server:
/// `ids[0]` straight to serve, `ids[1]` through the broker. Returns once both have records
/// stored.
pub fn two_limited_edges(dir: &Path, limit: &str, ids: [u32; 2], wait: Duration) -> LimitedEdges {
    let serve = Serve::start_with(dir, &format!("[coap.rate_limit]\n{limit}"));
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(
        dir,
        0,
        listen,
        serve.coap,
        &format!("report_interval_ms = 500\n[broker.rate_limit]\n{limit}"),
    );
    let target = TcpTarget::start();
    let spec = |id: u32, to: SocketAddr| EdgeSpec {
        id,
        brokers: vec![to],
        target: target.addr,
        storage: dir.join(format!("edge-{id}-data")),
        extra_toml: String::new(),
        bind: None,
    };
    let specs = [spec(ids[0], serve.coap), spec(ids[1], listen)];
    let edges = [start_edge(dir, &specs[0]), start_edge(dir, &specs[1])];
    serve.wait_received(&ids, 2, "both edges stored", wait);
    LimitedEdges {
        serve,
        listen,
        broker,
        target,
        specs,
        edges,
    }
}

impl LimitedEdges {
    /// Waits until serve's `GET /api/v1/stats` counts at least `at_least` (and at least one)
    /// refusals for `reason`; returns the stats.
    pub fn serve_counted(&self, reason: &str, at_least: u64, wait: Duration) -> serde_json::Value {
        wait_for(&format!("{reason} counted at serve"), wait, || {
            let s = self.serve.get_json("/api/v1/stats")?;
            if s["rejected"][reason].as_u64() >= Some(at_least.max(1)) {
                Ok(s)
            } else {
                Err(format!("{s}"))
            }
        })
    }

    /// Waits until the broker's report (`GET /api/v1/brokers`) counts at least `at_least` (and
    /// at least one) refusals for `reason`; returns the report.
    pub fn broker_counted(&self, reason: &str, at_least: u64, wait: Duration) -> serde_json::Value {
        wait_for(&format!("{reason} counted at the broker"), wait, || {
            let b = self.serve.get_json("/api/v1/brokers")?;
            let r = b["brokers"]
                .as_array()
                .and_then(|a| a.iter().find(|b| !b["report"].is_null()))
                .map(|b| b["report"].clone())
                .ok_or_else(|| format!("no report: {b}"))?;
            if r["rejected"][reason].as_u64() >= Some(at_least.max(1)) {
                Ok(r)
            } else {
                Err(format!("{r}"))
            }
        })
    }

    /// Waits until both edges have three more records stored (they are still served), stops
    /// them, waits until every record they had acknowledged is stored, and checks that their
    /// rows show no gap and nothing dropped. Returns the records stored of each.
    pub fn finish(self, wait: Duration) -> Vec<usize> {
        let ids = self.specs.each_ref().map(|s| s.id);
        let serve = &self.serve;
        let before: Vec<u64> = ids.iter().map(|&i| serve.received(i).unwrap()).collect();
        wait_for("both edges progress", wait, || {
            let n: Vec<u64> = ids
                .iter()
                .map(|&i| serve.received(i).unwrap_or(0))
                .collect();
            if n.iter().zip(&before).all(|(n, b)| *n >= b + 3) {
                Ok(())
            } else {
                Err(format!("{n:?} (before {before:?})"))
            }
        });
        for e in self.edges {
            e.stop(wait);
        }
        let counts: Vec<usize> = wait_for("every acknowledged record stored", wait, || {
            self.specs
                .iter()
                .map(|s| all_stored(serve, s))
                .collect::<Result<Vec<_>, _>>()
        });
        for id in ids {
            let row = serve.edge_row(id).unwrap();
            assert_eq!(
                (row["gaps"].as_u64(), row["dropped_at_edge"].as_u64()),
                (Some(0), Some(0)),
                "{row}"
            );
        }
        counts
    }
}
