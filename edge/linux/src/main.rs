//! `qos-edge`: the sub-manager on Linux. `run` probes and reports until SIGINT/SIGTERM;
//! `probe` runs one probe now and prints its phase timings as JSON.
//! Exit codes: 0 success, 1 runtime error (or a failed probe), 2 usage or configuration error.
// The one unsafe call (statvfs) is in `hostmetrics::disk_space`, allowed and documented there.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use qos_edge::probe;

mod config;
#[cfg(test)]
mod config_docs;
mod hostmetrics;
mod json;
mod run;
mod storage;

use config::{
    Config, DriverOptions, Method, ProbeKindConfig, ProbeKindName, ProbeSection, QType, StepConfig,
};

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
    Probe(Box<ProbeArgs>),
}

/// `qos-edge probe`: byte-string flags accept the escapes \r \n \t \0 \\ \xNN.
#[derive(Debug, clap::Args)]
struct ProbeArgs {
    /// Kind of probe.
    #[arg(long, value_enum)]
    kind: ProbeKindName,
    /// Target: host:port (tcp, udp_echo, coap_ping, transaction), the resolver ip or ip:port
    /// (dns), the URL (http, https) or the host (icmp).
    #[arg(long)]
    target: String,
    /// Timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u32,
    /// dns: the name to look up.
    #[arg(long)]
    name: Option<String>,
    /// dns: record type.
    #[arg(long, value_enum, default_value = "A")]
    qtype: QType,
    /// dns: an address the answer must contain.
    #[arg(long)]
    expect: Option<String>,
    /// http: method.
    #[arg(long, value_enum, default_value = "GET")]
    method: Method,
    /// http: request body (sent as POST body).
    #[arg(long, default_value = "")]
    body: String,
    /// http: expected status (0: any 2xx).
    #[arg(long, default_value_t = 0)]
    expect_status: u16,
    /// http: text the body must contain.
    #[arg(long)]
    expect_body: Option<String>,
    /// http: redirects followed at most.
    #[arg(long, default_value_t = config::default_redirects())]
    max_redirects: u8,
    /// https: extra trusted CA certificates (PEM file), besides the system store.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// udp_echo: payload sent and expected back.
    #[arg(long, default_value_t = config::default_payload())]
    payload: String,
    /// transaction: a step `SEND=>EXPECT` (repeat for more steps), e.g. 'PING\r\n=>+PONG'.
    #[arg(long = "step", value_name = "SEND=>EXPECT")]
    steps: Vec<String>,
}

impl ProbeArgs {
    fn section(&self) -> Result<ProbeSection, String> {
        let t = self.target.clone();
        let kind = match self.kind {
            ProbeKindName::Dns => ProbeKindConfig::Dns {
                resolver: t,
                name: self.name.clone().ok_or("--kind dns needs --name")?,
                qtype: self.qtype,
                expect: self.expect.clone(),
            },
            ProbeKindName::Tcp => ProbeKindConfig::Tcp { target: t },
            ProbeKindName::Http => ProbeKindConfig::Http {
                url: t,
                method: self.method,
                body: config::unescape(&self.body)?,
                expect_status: self.expect_status,
                expect_body: self.expect_body.clone(),
                max_redirects: self.max_redirects,
                ca_file: self.ca_file.clone(),
            },
            ProbeKindName::UdpEcho => ProbeKindConfig::UdpEcho {
                target: t,
                payload: config::unescape(&self.payload)?,
            },
            ProbeKindName::CoapPing => ProbeKindConfig::CoapPing { target: t },
            ProbeKindName::Icmp => ProbeKindConfig::Icmp { host: t },
            ProbeKindName::Transaction => {
                if self.steps.is_empty() {
                    return Err("--kind transaction needs at least one --step SEND=>EXPECT".into());
                }
                let steps = self
                    .steps
                    .iter()
                    .map(|s| {
                        let (send, expect) = s.split_once("=>").unwrap_or((s, ""));
                        Ok(StepConfig {
                            send: config::unescape(send)?,
                            expect: config::unescape(expect)?,
                        })
                    })
                    .collect::<Result<_, String>>()?;
                ProbeKindConfig::Transaction { target: t, steps }
            }
        };
        let timeout_ms = self.timeout_ms.max(1);
        let section = ProbeSection {
            id: 1,
            interval_ms: timeout_ms.max(100),
            timeout_ms,
            kind,
        };
        section.validate()?;
        Ok(section)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

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
        Command::Probe(args) => {
            let section = match args.section() {
                Ok(s) => s,
                Err(e) => return qos_host::fail("qos-edge", &UsageError(e), 2),
            };
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let steps = section.steps();
            let spec = section.spec(&steps);
            let report = probe::run_with(&spec, at, &section.options());
            println!(
                "{}",
                json::result(args.kind, section.kind.target(), &report)
            );
            if report.result.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
