//! `qos-edge`: the sub-manager on Linux. `run` probes and reports until SIGINT/SIGTERM;
//! `probe` runs one probe now and prints its phase timings as JSON.
//! Exit codes: 0 success, 1 runtime error (or a failed probe), 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use qos_wire::ids::ProbeId;

mod config;
mod json;
mod probe;
mod run;
mod storage;

use config::{Config, ProbeKindName};

/// The sub-manager of the QoS-monitoring system, on Linux.
#[derive(Debug, Parser)]
#[command(name = "qos-edge", version, about)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe, summarise and send summaries to the brokers until SIGINT or SIGTERM.
    Run {
        /// TOML configuration (see qos-edge.example.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run one probe now and print its phase timings (µs) as JSON on stdout.
    Probe {
        /// Kind of probe.
        #[arg(long, value_enum)]
        kind: ProbeKindName,
        /// Target: host:port.
        #[arg(long)]
        target: String,
        /// Timeout in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    qos_host::init_logging(cli.log_level);
    match cli.command {
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return qos_host::fail("qos-edge", &e, 2),
            };
            let shutdown = Arc::new(AtomicBool::new(false));
            qos_host::signal::install(shutdown.clone());
            match run::run(&cfg, &shutdown) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => qos_host::fail("qos-edge", &e, 1),
            }
        }
        Command::Probe {
            kind,
            target,
            timeout_ms,
        } => {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let timeout = Duration::from_millis(timeout_ms.max(1));
            let r = match kind {
                ProbeKindName::Tcp => probe::tcp_connect(ProbeId(0), &target, timeout, at),
            };
            println!("{}", json::result(kind, &target, &r));
            if r.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
