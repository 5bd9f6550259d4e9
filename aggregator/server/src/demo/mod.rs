//! `qos-aggregator demo`: the whole system on one machine, with scripted faults.
//!
//! What runs (all on 127.0.0.0/8):
//! - the super-manager, in this process ([`crate::serve::run_serve`]: embedded store, HTTP API
//!   whose address is printed as the dashboard);
//! - two brokers (`qos-aggregator broker`, child processes: broker-1 preferred by region
//!   `east`, broker-2 by `west`; each region's edges fail over to the other);
//! - four edges (`qos-edge run`, child processes): `east-1`, `east-2`, `west-1`, `west-2`, each
//!   probing the application over HTTP and its region's DNS every 250 ms, 1 s summary windows;
//! - the services ([`services`]): a database, an application calling it per request, one DNS
//!   responder per region (`dns-east`, `dns-west`), a little user load; and per region a
//!   network path ([`relay`], `path-east`, `path-west`) that the region's edges reach the
//!   application and their DNS through;
//! - component metrics ([`metrics`]) at `GET /metrics` (Prometheus text), sampled and pushed
//!   to serve (`POST /api/v1/metrics`);
//! - serve's service model of it all ([`model`]: `config/model.toml`, named by serve's
//!   `config/serve.toml`), so that serve's engine opens incidents and ranks their causes; the
//!   demo prints them from serve's API ([`incidents`]) — the same incidents the dashboard
//!   shows;
//! - with `--host-sim BIN`, the host-sim board (the no_std edge on embassy's std platform) as
//!   a fifth edge reporting straight to the super-manager.
//!
//! The script ([`script`]): a warm-up, then four faults, each held and followed by a recovery:
//! the database slows down, DNS fails in region west, region east's path gets added latency,
//! broker-1 is killed with SIGKILL and started again. Without `--duration` the script repeats
//! until SIGINT/SIGTERM; with it, the phases are scaled to fit. Children run in their own
//! process groups and are stopped (SIGTERM, then SIGKILL) and reaped at the end; they also die
//! with the demo if it is killed ([`procs`]).
//!
//! At the end, the report of the demo's period (`qos-aggregator report`, every service of the
//! model) is written to `report.html` and `report.csv` in the data directory.

pub mod api;
pub mod incidents;
pub mod metrics;
pub mod model;
pub mod procs;
pub mod relay;
pub mod script;
pub mod services;
pub mod watch;

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError};
use crate::serve::{run_serve, ServeError};

/// The demo's regions, each with its preferred broker (index into the brokers).
pub const REGIONS: [&str; 2] = ["east", "west"];
/// Edges per region.
pub const EDGES_PER_REGION: usize = 2;
/// Summary window of the edges, seconds.
pub const WINDOW_S: u32 = 1;
/// Interval (and timeout) of every probe, ms.
pub const PROBE_INTERVAL_MS: u32 = 250;
/// Probe ids: the HTTP probe of the application and the DNS probe.
pub const PROBE_HTTP: u16 = 1;
/// See [`PROBE_HTTP`].
pub const PROBE_DNS: u16 = 2;

/// The demo's options (see `qos-aggregator demo --help`).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Total run time in seconds; `None`: until SIGINT/SIGTERM.
    pub duration: Option<u64>,
    /// serve's HTTP API (the dashboard).
    pub http: SocketAddr,
    /// Data directory (serve's store, brokers' queues, edges' storage, logs, configurations).
    pub data: PathBuf,
    /// First of ten consecutive ports (UDP and TCP) for the demo's own listeners; `None`:
    /// free ports chosen at start.
    pub port_base: Option<u16>,
    /// A built host-sim board (`boards/host-sim`, binary `qos-board-host-sim`) to start as a
    /// fifth edge, sending straight to the super-manager; `None`: no board.
    pub host_sim: Option<PathBuf>,
}

/// The edge id of the host-sim board.
pub const HOST_SIM_ID: u32 = 201;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `qos-edge` is missing.
    #[error("qos-edge not found at {}: {hint}", looked.display())]
    NoEdge {
        /// Where it was looked for.
        looked: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A child process could not be started.
    #[error("cannot start {name} ({}): {source}", program.display())]
    Spawn {
        /// Which child.
        name: String,
        /// The program.
        program: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file or directory of the demo could not be written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A local service could not listen.
    #[error("cannot start the demo's {what} on {addr}: {source}")]
    Listen {
        /// Which service.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The super-manager could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The configuration written for serve was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--duration` is too short for the script.
    #[error("--duration {0} is too short: the script needs at least {min} s", min = script::MIN_DURATION_S)]
    TooShort(u64),
    /// `--port-base` leaves no room for the ports.
    #[error("--port-base {0} is too high: the demo uses ten ports from it")]
    PortBase(u16),
}

/// Unix time in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The demo's progress output: one line each, on stdout, with the time since start.
#[derive(Debug)]
pub struct Console {
    start: Instant,
    lock: Mutex<()>,
}

impl Console {
    /// Starts the clock.
    pub fn new() -> Console {
        Console {
            start: Instant::now(),
            lock: Mutex::new(()),
        }
    }

    /// Prints `line`.
    pub fn say(&self, line: &str) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{:>6.1}s] {line}", self.start.elapsed().as_secs_f64());
        let _ = out.flush();
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

/// The port at `offset` from the base, or 0 (any free port).
fn port(base: Option<u16>, offset: u16) -> u16 {
    base.map_or(0, |b| b + offset)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A UDP port for a child: `port` if given, else a free one (bound and released).
fn child_udp_port(port: u16) -> Result<u16, DemoError> {
    if port != 0 {
        return Ok(port);
    }
    let addr = loopback(0);
    let s = UdpSocket::bind(addr).map_err(|source| DemoError::Listen {
        what: "port probe".into(),
        addr,
        source,
    })?;
    s.local_addr()
        .map(|a| a.port())
        .map_err(|source| DemoError::Listen {
            what: "port probe".into(),
            addr,
            source,
        })
}

fn write_file(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}

/// Prepares the data directory: the demo's own subdirectories are emptied (nothing else in
/// it is touched).
fn prepare_data(data: &Path) -> Result<(), DemoError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Io { what, path, source }
    };
    std::fs::create_dir_all(data).map_err(io("cannot create", data))?;
    for sub in ["serve", "brokers", "edges", "logs", "config"] {
        let dir = data.join(sub);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("cannot empty", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
    }
    Ok(())
}

/// Everything started by [`run_demo`], for the script.
pub struct Running {
    /// Progress output.
    pub console: Arc<Console>,
    /// The services' knobs.
    pub db: Arc<services::Db>,
    /// DNS responders by region (same order as [`REGIONS`]).
    pub dns: Vec<Arc<services::Dns>>,
    /// Paths by region.
    pub paths: Vec<Arc<relay::Path>>,
    /// The brokers (child processes) with their command lines, to restart them.
    pub brokers: Vec<(procs::Proc, Vec<String>)>,
    /// The edges.
    pub edges: Vec<procs::Proc>,
    /// The edge watcher (told about broker restarts).
    pub watch: Arc<Mutex<watch::EdgeWatch>>,
    /// The flag that ends the demo.
    pub shutdown: Arc<AtomicBool>,
    exe: PathBuf,
    logs: PathBuf,
    /// Edges already reported as exited.
    pub exited: Vec<String>,
}

impl Running {
    /// Starts broker `i` again with its command line.
    pub fn restart_broker(&mut self, i: usize) -> Result<u32, DemoError> {
        let name = format!("broker-{}", i + 1);
        let args: Vec<&str> = self.brokers[i].1.iter().map(String::as_str).collect();
        let p = procs::Proc::spawn(
            &name,
            &self.exe,
            &args,
            &self.logs.join(format!("{name}.log")),
        )?;
        let pid = p.pid();
        let old = std::mem::replace(&mut self.brokers[i].0, p);
        drop(old);
        Ok(pid)
    }
}

/// Runs the demo until `shutdown` is set or `--duration` passed; returns the number of
/// incidents printed.
pub fn run_demo(opts: &DemoOptions, shutdown: Arc<AtomicBool>) -> Result<usize, DemoError> {
    let plan = script::Plan::new(opts.duration)?;
    if opts.port_base.is_some_and(|b| b > u16::MAX - 10) {
        return Err(DemoError::PortBase(opts.port_base.unwrap_or(0)));
    }
    let console = Arc::new(Console::new());
    let say = |s: &str| console.say(s);
    let edge_bin = procs::find_edge_binary(&say)?;
    let exe = std::env::current_exe().map_err(|source| DemoError::Io {
        what: "cannot locate",
        path: PathBuf::from("qos-aggregator"),
        source,
    })?;
    prepare_data(&opts.data)?;
    let logs = opts.data.join("logs");
    let base = opts.port_base;
    let started = unix_now();

    // The services.
    let listen_err = |what: &str, addr: SocketAddr| {
        let what = what.to_string();
        move |source| DemoError::Listen { what, addr, source }
    };
    let db = Arc::new(services::Db::default());
    let a = loopback(port(base, 4));
    let db_addr = db
        .start(a, shutdown.clone())
        .map_err(listen_err("database", a))?;
    let app = Arc::new(services::App::default());
    let a = loopback(port(base, 5));
    let app_addr = app
        .start(a, db_addr, shutdown.clone())
        .map_err(listen_err("application", a))?;
    services::start_load(app_addr, 3, Duration::from_millis(100), shutdown.clone());
    let mut dns = Vec::new();
    let mut paths = Vec::new();
    let mut fronts = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let i = i as u16;
        let d = Arc::new(services::Dns::new(&format!("dns-{region}")));
        let a = loopback(port(base, 6 + i));
        let dns_addr = d
            .start(a, shutdown.clone())
            .map_err(listen_err("DNS responder", a))?;
        let p = Arc::new(relay::Path::new(&format!("path-{region}")));
        let a = loopback(port(base, 8 + i));
        let tcp = p
            .start_tcp(a, app_addr, shutdown.clone())
            .map_err(listen_err("TCP relay", a))?;
        let a = loopback(port(base, 8 + i));
        let udp = p
            .start_udp(a, dns_addr, shutdown.clone())
            .map_err(listen_err("UDP relay", a))?;
        dns.push(d);
        paths.push(p);
        fronts.push((tcp, udp));
    }
    let mut components: Vec<Arc<dyn metrics::Component>> = vec![db.clone(), app.clone()];
    components.extend(dns.iter().map(|d| d.clone() as Arc<dyn metrics::Component>));
    components.extend(
        paths
            .iter()
            .map(|p| p.clone() as Arc<dyn metrics::Component>),
    );
    let a = loopback(port(base, 3));
    let (metrics_addr, _) = metrics::start_exporter(a, components.clone(), shutdown.clone())
        .map_err(listen_err("metrics endpoint", a))?;

    // The super-manager, in this process, with the model of the demo's services.
    let config_dir = opts.data.join("config");
    let edge_list: Vec<(usize, &str)> = REGIONS
        .iter()
        .enumerate()
        .flat_map(|(r, region)| {
            (1..=EDGES_PER_REGION).map(move |n| (r * EDGES_PER_REGION + n, *region))
        })
        .collect();
    let model_file = config_dir.join("model.toml");
    write_file(&model_file, &model::model_toml(&edge_list))?;
    let serve_file = config_dir.join("serve.toml");
    write_file(
        &serve_file,
        &model::serve_toml(
            opts.http,
            loopback(port(base, 0)),
            &opts.data.join("serve"),
            &model_file,
        ),
    )?;
    let config = Config::load(&serve_file)?;
    let serve_flag = Arc::new(AtomicBool::new(false));
    let serve = run_serve(&config, serve_flag.clone())?;
    let http = serve.http_addr();
    let coap = serve.coap_addr();
    console.say(&format!(
        "dashboard: http://{http}/  (API: http://{http}/api/v1/incidents, /api/v1/services, /api/v1/edges)"
    ));
    console.say(&format!(
        "serve's configuration: {}; service model: {} (services {})",
        serve_file.display(),
        model_file.display(),
        model::SERVICES.join(", ")
    ));
    let sampler = metrics::start_sampler(components, http, shutdown.clone())
        .map_err(listen_err("metrics sampler", a))?;
    console.say(&format!(
        "component metrics: http://{metrics_addr}/metrics, pushed to serve every {} ms  (db {db_addr}, app {app_addr}; data in {})",
        metrics::SAMPLE_EVERY.as_millis(),
        opts.data.display()
    ));

    // Brokers.
    let mut brokers = Vec::new();
    let mut broker_addrs = Vec::new();
    for i in 0..REGIONS.len() {
        let name = format!("broker-{}", i + 1);
        let listen = loopback(child_udp_port(port(base, 1 + i as u16))?);
        let file = opts.data.join("config").join(format!("{name}.toml"));
        write_file(
            &file,
            &format!(
                "# Written by qos-aggregator demo.\n[broker]\nid = \"{name}\"\nlisten = \"{listen}\"\nupstream = \"{coap}\"\n\
                 data_dir = \"{}\"\nreport_interval_ms = 2000\n\n[broker.reliability]\nack_timeout_ms = 1000\n",
                opts.data.join("brokers").join(&name).display()
            ),
        )?;
        let args = vec![
            "broker".to_string(),
            "--config".to_string(),
            file.display().to_string(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = procs::Proc::spawn(&name, &exe, &argv, &logs.join(format!("{name}.log")))?;
        console.say(&format!("started {name} on udp {listen} (pid {})", p.pid()));
        brokers.push((p, args));
        broker_addrs.push(listen);
    }

    // Edges.
    let mut edges = Vec::new();
    let mut home = std::collections::BTreeMap::new();
    let return_ms = (plan.hold.as_millis() as u64 * 3 / 2).max(5_000);
    for (r, region) in REGIONS.iter().enumerate() {
        let (tcp, udp) = fronts[r];
        let preferred = broker_addrs[r];
        let other = broker_addrs[(r + 1) % broker_addrs.len()];
        for n in 1..=EDGES_PER_REGION {
            let id = r * EDGES_PER_REGION + n;
            let name = format!("{region}-{n}");
            home.insert(name.clone(), format!("broker-{}", r + 1));
            let file = opts.data.join("config").join(format!("{name}.toml"));
            write_file(
                &file,
                &edge_config(
                    id,
                    &name,
                    region,
                    [preferred, other],
                    return_ms,
                    &opts.data.join("edges").join(&name),
                    tcp,
                    udp,
                ),
            )?;
            let path = file.display().to_string();
            let p = procs::Proc::spawn(
                &name,
                &edge_bin,
                &["run", "--config", &path],
                &logs.join(format!("{name}.log")),
            )?;
            console.say(&format!(
                "started edge {name} (region {region}, via {} to the app {tcp} and DNS {udp}; pid {})",
                metrics::Component::name(paths[r].as_ref()),
                p.pid()
            ));
            edges.push(p);
        }
    }
    match &opts.host_sim {
        Some(bin) => {
            let coap_port = coap.port().to_string();
            let id = HOST_SIM_ID.to_string();
            let p = procs::Proc::spawn_env(
                "host-sim",
                bin,
                &[],
                &[
                    ("QOS_EDGE_ID", id.as_str()),
                    ("QOS_COAP_PORT", coap_port.as_str()),
                    ("QOS_LOG", "warn"),
                ],
                &logs.join("host-sim.log"),
            )?;
            console.say(&format!(
                "started host-sim board (edge {HOST_SIM_ID}, no_std edge on embassy's std platform, CoAP-pings and reports straight to the super-manager at {coap}; pid {})",
                p.pid()
            ));
            edges.push(p);
            // It reports straight to the super-manager, under the name the board gives itself.
            home.insert("qos-edge".to_string(), "direct".to_string());
        }
        None => console.say(
            "host-sim board: not started (a separate firmware workspace; build it and pass --host-sim BIN, see README)",
        ),
    }

    let watch = Arc::new(Mutex::new(watch::EdgeWatch::new(http, home)));
    let detector: Box<dyn incidents::IncidentSource + Send> =
        Box::new(incidents::ServeIncidents::new(http));
    let monitor_flag = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (console, watch, flag) = (console.clone(), watch.clone(), monitor_flag.clone());
        std::thread::Builder::new()
            .name("demo-monitor".into())
            .spawn(move || monitor_loop(detector, &watch, &console, &flag))
            .map_err(listen_err("monitor thread", http))?
    };

    let mut running = Running {
        console: console.clone(),
        db,
        dns,
        paths,
        brokers,
        edges,
        watch: watch.clone(),
        shutdown: shutdown.clone(),
        exe,
        logs,
        exited: Vec::new(),
    };
    let script_result = script::run(&plan, &mut running);

    // Stop: edges first (they deregister), then brokers, then the rest.
    console.say("stopping: edges, brokers, super-manager");
    for p in running
        .edges
        .iter_mut()
        .chain(running.brokers.iter_mut().map(|(p, _)| p))
    {
        let status = p.stop(Duration::from_secs(5));
        console.say(&format!(
            "stopped {} (pid {}, {})",
            p.name(),
            p.pid(),
            status.map_or("status unknown".into(), |s| s.to_string())
        ));
    }
    monitor_flag.store(true, Ordering::SeqCst);
    let incidents = monitor.join().unwrap_or(0);
    {
        let w = watch.lock().unwrap_or_else(|e| e.into_inner());
        let stored: u64 = w.received.values().sum();
        let gaps: u64 = w.gaps.values().sum();
        console.say(&format!(
            "summary: {incidents} incidents; {stored} records stored from {} edges; {gaps} sequence gaps",
            w.received.len()
        ));
    }
    shutdown.store(true, Ordering::SeqCst);
    let dropped = sampler.join().unwrap_or(0);
    if dropped > 0 {
        console.say(&format!(
            "component metrics: {dropped} rounds could not be pushed to serve"
        ));
    }
    let serve_result = serve.stop();
    write_report(&config, &opts.data, started, &console);
    script_result?;
    serve_result?;
    console.say("demo stopped; no child process left");
    Ok(incidents)
}

/// Writes the report of the demo's period (every service of the model) as `report.html` and
/// `report.csv` in `data` and prints their paths; a failure is printed, not fatal.
fn write_report(config: &Config, data: &Path, started: f64, console: &Console) {
    let now = unix_now();
    let req = crate::report::Request {
        services: model::SERVICES.iter().map(|s| s.to_string()).collect(),
        from: started.floor() as u64,
        to: now.ceil() as u64 + 1,
        ..crate::report::Request::default()
    };
    let reports = match crate::report::build(config, &req, now as u64) {
        Ok(r) => r,
        Err(e) => return console.say(&format!("report: {e}")),
    };
    for (name, doc) in [
        ("report.html", crate::report::html::render(&reports)),
        ("report.csv", crate::report::csv::render(&reports)),
    ] {
        let path = data.join(name);
        match std::fs::write(&path, doc) {
            Ok(()) => console.say(&format!("report of the demo's period: {}", path.display())),
            Err(e) => console.say(&format!("report: cannot write {}: {e}", path.display())),
        }
    }
}

fn monitor_loop(
    mut detector: Box<dyn incidents::IncidentSource + Send>,
    watch: &Mutex<watch::EdgeWatch>,
    console: &Console,
    stop: &AtomicBool,
) -> usize {
    let name = |addr: &str| {
        watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .broker_name(addr)
    };
    while !stop.load(Ordering::SeqCst) {
        let tick = Instant::now();
        watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tick(console);
        detector.tick(console, &name);
        while tick.elapsed() < Duration::from_secs(1) && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    detector.opened()
}

/// The configuration of one demo edge.
#[allow(clippy::too_many_arguments)]
fn edge_config(
    id: usize,
    name: &str,
    region: &str,
    brokers: [SocketAddr; 2],
    return_ms: u64,
    storage: &Path,
    app: SocketAddr,
    dns: SocketAddr,
) -> String {
    format!(
        "# Written by qos-aggregator demo.\n\
         [edge]\nid = {id}\nname = \"{name}\"\nregion = \"{region}\"\nconfirm_ms = 0\n\n\
         [uplink]\nbrokers = [\"{}\", \"{}\"]\nwindow_s = {WINDOW_S}\nack_timeout_ms = 1000\n\
         failover_after_ms = 2000\nreturn_after_ms = {return_ms}\nconfig_poll_s = 0\n\n\
         [storage]\ndir = \"{}\"\n\n[metrics]\nenabled = false\n\n\
         [[probe]]\nid = {PROBE_HTTP}\nkind = \"http\"\nurl = \"http://{app}/checkout\"\n\
         interval_ms = {PROBE_INTERVAL_MS}\ntimeout_ms = {PROBE_INTERVAL_MS}\n\n\
         [[probe]]\nid = {PROBE_DNS}\nkind = \"dns\"\nresolver = \"{dns}\"\nname = \"app.demo\"\n\
         expect = \"127.0.0.1\"\ninterval_ms = {PROBE_INTERVAL_MS}\ntimeout_ms = {PROBE_INTERVAL_MS}\n",
        brokers[0],
        brokers[1],
        storage.display()
    )
}
