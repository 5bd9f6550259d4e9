//! `qos-aggregator`: the super-manager's command line. The work is done by the library; this
//! file parses arguments, sets up logging and signals, and maps errors to exit codes:
//! 0 on a clean shutdown, 2 for usage and configuration errors, 1 for runtime errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use qos_aggregator::broker_config::BrokerFile;
use qos_aggregator::broker_run::run_broker;
use qos_aggregator::config::Config;
use qos_aggregator::demo::{run_demo, DemoError, DemoOptions};
use qos_aggregator::serve::run_serve;

/// The super-manager of the QoS-monitoring system.
#[derive(Debug, Parser)]
#[command(name = "qos-aggregator", version, about)]
struct Cli {
    /// Log level: error, warn, info, debug or trace [default: info; warn for demo].
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<tracing::Level>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the super-manager: store, HTTP API (and CoAP ingest) until SIGINT or SIGTERM.
    Serve {
        /// TOML configuration file; without it the defaults apply (see
        /// qos-aggregator.example.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run a stand-alone broker: edges send to it, it queues durably and forwards to the
    /// super-manager (or a parent broker), until SIGINT or SIGTERM.
    Broker {
        /// TOML configuration file; without it the defaults apply (see
        /// qos-broker.example.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Everything on one machine with scripted faults: the super-manager, two brokers, four
    /// edges in two regions, local services (an application with its database, DNS, a
    /// network path per region), incidents and their ranked causes printed as they happen.
    /// Ends on SIGINT/SIGTERM or after --duration, leaving no process behind.
    Demo {
        /// Run this many seconds (at least 30), the fault phases scaled to fit; without it the
        /// faults repeat (each held 60 s) until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        /// Address of the super-manager's HTTP API (the dashboard); port 0 picks a free port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// Data directory: the store, brokers' queues, edges' storage, generated configurations
        /// and the children's logs (its serve/, brokers/, edges/, config/ and logs/ are emptied
        /// at start).
        #[arg(long, value_name = "DIR", default_value = "./qos-demo-data")]
        data: PathBuf,
        /// Use the ten ports PORT..PORT+9 on 127.0.0.1 (UDP and TCP) for the CoAP ingest,
        /// the brokers, the metrics endpoint and the services; default: free ports.
        #[arg(long, value_name = "PORT")]
        port_base: Option<u16>,
        /// Also start this host-sim board binary (boards/host-sim, built with `cargo build`
        /// there: target/debug/qos-board-host-sim) as a fifth edge reporting straight to the
        /// super-manager.
        #[arg(long, value_name = "BIN")]
        host_sim: Option<PathBuf>,
    },
    /// Offline root-cause analysis: rank the components of a case directory (metrics.csv
    /// [+ slis.csv] [+ topology.csv]) for an incident that began at UNIX_TS; JSON on stdout.
    Rca {
        /// The case directory.
        #[arg(long, value_name = "DIR")]
        case: PathBuf,
        /// The estimated start of the incident, Unix seconds.
        #[arg(long, value_name = "UNIX_TS", allow_negative_numbers = true)]
        at: f64,
        /// Print only the N most likely causes.
        #[arg(long, value_name = "N")]
        top: Option<usize>,
        /// Seconds before UNIX_TS that form each series' baseline [default: 1800].
        #[arg(long, value_name = "SECS")]
        lookback: Option<f64>,
        /// Seconds after UNIX_TS that are scored [default: 300].
        #[arg(long, value_name = "SECS")]
        horizon: Option<f64>,
    },
    /// A service's availability, response time by phase, incidents, SLO compliance and
    /// trends over a period, from the store (read-only), as printable HTML or CSV.
    Report(qos_aggregator::report::ReportArgs),
    /// Create fresh OSCORE credentials for an edge: the master secret goes to
    /// DIR/edge-<ID>.key (mode 0600); the configuration fragments for serve ([[oscore.edge]])
    /// and for the edge ([oscore]) are printed.
    Provision {
        /// The edge's numeric id.
        #[arg(long, value_name = "ID")]
        edge: u32,
        /// Where the secret file is written.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Make a new random API token: prints the token (once: it is not stored anywhere) on the
    /// first line, then the `[[http.token]]` table, holding only its hash, for serve's
    /// configuration.
    Token {
        /// What the token allows: viewer (reads) or admin (reads and writes).
        #[arg(long, value_name = "ROLE")]
        role: qos_aggregator::http::auth::Role,
        /// Who holds it (shown in logs for writes; 1 to 64 printable characters).
        #[arg(long, value_name = "NAME")]
        name: String,
    },
    /// Import component metrics from a CSV file of the data sets' layout
    /// (`time,component,metric,value`) into the store of `serve`'s configuration.
    Import {
        /// The CSV file.
        #[arg(long, value_name = "FILE")]
        csv: PathBuf,
        /// The configuration of `serve` (for `store.data_dir`); defaults without it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Demo { .. } => tracing::Level::WARN,
        _ => tracing::Level::INFO,
    };
    qos_host::init_logging(cli.log_level.unwrap_or(default_level));
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Broker { config } => broker(config),
        Command::Demo {
            duration,
            http,
            data,
            port_base,
            host_sim,
        } => demo(DemoOptions {
            duration,
            http,
            data,
            port_base,
            host_sim,
        }),
        Command::Import { csv, config } => import(&csv, config),
        Command::Provision { edge, out } => match qos_aggregator::oscore::provision(edge, &out) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, 1),
        },
        Command::Token { role, name } => token(role, &name),
        Command::Report(args) => report(&args),
        Command::Rca {
            case,
            at,
            top,
            lookback,
            horizon,
        } => {
            let mut config = qos_rca::Config::default();
            config.lookback = lookback.unwrap_or(config.lookback);
            config.horizon = horizon.unwrap_or(config.horizon);
            rca(&case, at, top, &config)
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match &config_path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return fail(&e, 2),
    };
    match &config_path {
        Some(path) => tracing::info!(config = %path.display(), "configuration loaded"),
        None => tracing::info!("no --config given: using the defaults"),
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    qos_host::signal::install(shutdown.clone());
    let reload = Arc::new(AtomicBool::new(false));
    qos_host::signal::on_hup(reload.clone());
    let watcher = qos_aggregator::tls::watch_reload(reload, shutdown.clone());
    let result = run_serve(&config, shutdown.clone()).and_then(|handle| handle.wait());
    // Also when serve could not start: the reload watcher runs until shutdown.
    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Ok(w) = watcher {
        let _ = w.join();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, 1),
    }
}

fn broker(config_path: Option<PathBuf>) -> ExitCode {
    let config = match &config_path {
        Some(path) => BrokerFile::load(path),
        None => Ok(BrokerFile::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return fail(&e, 2),
    };
    match &config_path {
        Some(path) => tracing::info!(config = %path.display(), "configuration loaded"),
        None => tracing::info!("no --config given: using the defaults"),
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    qos_host::signal::install(shutdown.clone());
    // SIGHUP: the [upstream] client certificate and [downstream_tls] listener read again.
    let reload = Arc::new(AtomicBool::new(false));
    qos_host::signal::on_hup(reload.clone());
    let watcher = qos_aggregator::tls::watch_reload(reload, shutdown.clone());
    let result = run_broker(&config, shutdown.clone()).and_then(|handle| handle.wait());
    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Ok(w) = watcher {
        let _ = w.join();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, 1),
    }
}

fn demo(options: DemoOptions) -> ExitCode {
    let shutdown = Arc::new(AtomicBool::new(false));
    qos_host::signal::install(shutdown.clone());
    match run_demo(&options, shutdown) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e @ (DemoError::TooShort(_) | DemoError::PortBase(_))) => fail(&e, 2),
        Err(e) => fail(&e, 1),
    }
}

fn import(csv: &std::path::Path, config_path: Option<PathBuf>) -> ExitCode {
    let config = match &config_path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return fail(&e, 2),
    };
    if let Err(e) = std::fs::create_dir_all(&config.store.data_dir) {
        return fail(&e, 1);
    }
    match qos_aggregator::services::metrics::import_csv(&config.store.database_path(), csv) {
        Ok((n, bad)) => {
            println!("{{\"imported\":{n},\"rejected\":{bad}}}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, 1),
    }
}

fn token(role: qos_aggregator::http::auth::Role, name: &str) -> ExitCode {
    use qos_aggregator::http::auth;
    let probe = auth::TokenEntry {
        name: name.into(),
        role,
        sha256: auth::hex(&[0; 32]),
    };
    if let Err((_, e)) = auth::Auth::new(&[probe]) {
        eprintln!("qos-aggregator: --name {name:?}: {e}");
        return ExitCode::from(2);
    }
    match auth::new_token() {
        Ok(token) => {
            println!("{token}");
            print!("{}", auth::config_fragment(name, role, &token));
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!("qos-aggregator: the system's random generator failed");
            ExitCode::from(1)
        }
    }
}

fn rca(case: &std::path::Path, at: f64, top: Option<usize>, config: &qos_rca::Config) -> ExitCode {
    match qos_aggregator::rca::run_rca(case, at, top, config) {
        Ok(doc) => {
            println!("{doc}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, 2),
    }
}

fn report(args: &qos_aggregator::report::ReportArgs) -> ExitCode {
    use qos_aggregator::report;
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return fail(&e, 2),
    };
    match report::run(args, &config, qos_aggregator::services::now_s()) {
        Ok((doc, warnings)) => {
            for w in warnings {
                eprintln!("qos-aggregator: warning: {w}");
            }
            if args.out.is_none() {
                print!("{doc}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e, report::exit_code(&e)),
    }
}

/// Prints `error` on one line and returns `code`.
fn fail(error: &dyn std::error::Error, code: u8) -> ExitCode {
    qos_host::fail("qos-aggregator", error, code)
}
