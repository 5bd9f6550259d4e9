//! Probes run by the Linux driver: thin socket code around the protocol logic in
//! `qos_edge_core::probe`. Timings come from the monotonic clock ([`Instant`]), in
//! microseconds.
//!
//! Phase definitions (the same for every kind; a phase that does not apply is absent):
//! - `dns`: name lookup of the target (absent for IP literals); for the DNS probe, the query's
//!   round trip to the resolver.
//! - `connect`: TCP connect; for datagram probes (UDP echo, CoAP ping, ICMP) the round trip.
//! - `tls`: TLS handshake (HTTPS).
//! - `upload`: time to send the request body (HTTP POST).
//! - `first_byte`: from the end of the request to the first byte of the answer.
//! - `download`: from the first byte to the last byte of the answer.
//! - `total`: from the start to the end (present on success; on failure `error_after_us`).
//!
//! With HTTP redirects each phase is the sum over the requests made, and `total` covers all.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use qos_edge_core::probe::classify::{Classify, Transport};
use qos_wire::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use qos_wire::phase::Phase;
use qos_wire::probe::{ProbeKind, ProbeSpec};

pub mod dns;
pub mod http;
pub mod icmp;
pub mod tcp;
pub mod tls;
pub mod transaction;
pub mod udp;

/// Driver options that are not part of the wire's probe specification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Extra trusted CA certificates (PEM) for HTTPS, besides the system trust store.
    pub ca_file: Option<PathBuf>,
}

/// A probe result with what the wire does not carry (shown by `qos-edge probe`).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// What goes into summaries.
    pub result: ProbeResult,
    /// HTTPS: days until the server certificate expires (negative: expired).
    pub cert_days_left: Option<i64>,
    /// Transactions: the time of each step that completed (send to expected answer), µs.
    pub steps_us: Vec<u32>,
    /// A human-readable reason for a failure.
    pub message: Option<String>,
}

/// Run `spec` now (its `timeout_ms` bounds the whole run); `at_ms` is the start time to
/// record (Unix ms).
#[allow(dead_code)] // The plain entry point; the drivers here pass options.
pub fn run(spec: &ProbeSpec<'_>, at_ms: u64) -> ProbeResult {
    run_with(spec, at_ms, &Options::default()).result
}

/// [`run`] with driver options, returning the full report.
pub fn run_with(spec: &ProbeSpec<'_>, at_ms: u64, opts: &Options) -> Report {
    if let ProbeKind::Http { url, .. } = spec.kind {
        if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            // Load the trust store before the clock starts (cached after the first run); an
            // error shows again, classified, when the handshake asks for it.
            let _ = tls::client_config(opts.ca_file.as_deref());
        }
    }
    let mut ctx = Ctx::new(Duration::from_millis(u64::from(spec.timeout_ms.max(1))));
    let outcome = match spec.kind {
        ProbeKind::Tcp { target } => tcp::run(&mut ctx, target),
        ProbeKind::Dns {
            resolver,
            name,
            qtype,
            expect,
        } => dns::run(&mut ctx, resolver, name, qtype, expect),
        ProbeKind::Http {
            method,
            url,
            body,
            expect_status,
            expect_body,
            max_redirects,
        } => http::run(
            &mut ctx,
            &http::Request {
                method,
                url,
                body,
                expect_status,
                expect_body,
                max_redirects,
            },
            opts,
        ),
        ProbeKind::UdpEcho { target, payload } => udp::echo(&mut ctx, target, payload),
        ProbeKind::CoapPing { target } => udp::coap_ping(&mut ctx, target),
        ProbeKind::Icmp { host } => icmp::run(&mut ctx, host),
        ProbeKind::Transaction { target, steps } => transaction::run(&mut ctx, target, steps),
        _ => Err(Fail::new(
            ErrorClass::Other,
            "probe kind not supported by this build",
        )),
    };
    ctx.finish(spec.id, at_ms, outcome)
}

/// Why a probe stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    /// The class reported.
    pub class: ErrorClass,
    /// Why, for people.
    pub message: String,
}

impl Fail {
    /// A failure of `class`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Fail {
            class,
            message: message.into(),
        }
    }

    /// A failure classified by the core.
    pub fn of(what: &impl Classify, message: impl Into<String>) -> Self {
        Fail::new(what.class(), message)
    }

    /// A transport failure from an I/O error while doing `doing`.
    pub fn io(doing: &str, e: &std::io::Error) -> Self {
        Fail::of(&transport(e), format!("{doing}: {e}"))
    }
}

/// The transport failure an I/O error stands for.
pub fn transport(e: &std::io::Error) -> Transport {
    match e.kind() {
        ErrorKind::ConnectionRefused => Transport::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Transport::TimedOut,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Transport::Reset
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Transport::Unreachable,
        ErrorKind::UnexpectedEof => Transport::Closed,
        _ => Transport::Local,
    }
}

/// The state of one run: the clock, the deadline, the phases and what the kind adds.
pub struct Ctx {
    start: Instant,
    deadline: Instant,
    /// Phases recorded so far.
    pub phases: PhaseTimings,
    /// Kind-specific detail (HTTP status, DNS rcode, steps done).
    pub detail: u32,
    /// Redirects followed.
    pub redirects: u8,
    /// See [`Report::cert_days_left`].
    pub cert_days_left: Option<i64>,
    /// See [`Report::steps_us`].
    pub steps_us: Vec<u32>,
}

/// Microseconds from `a` to `b`, saturated.
pub fn us(a: Instant, b: Instant) -> u32 {
    u32::try_from(b.saturating_duration_since(a).as_micros()).unwrap_or(u32::MAX)
}

impl Ctx {
    /// A run that starts now and may last `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let start = Instant::now();
        Ctx {
            start,
            deadline: start + timeout,
            phases: PhaseTimings::new(),
            detail: 0,
            redirects: 0,
            cert_days_left: None,
            steps_us: Vec::new(),
        }
    }

    /// Time left before the deadline, or a timeout failure while doing `doing`.
    pub fn remaining(&self, doing: &str) -> Result<Duration, Fail> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(Fail::of(
                &Transport::TimedOut,
                format!("{doing}: timed out"),
            ))
        } else {
            Ok(left)
        }
    }

    /// Add `us` to `phase` (phases accumulate over redirects).
    pub fn add(&mut self, phase: Phase, us: u32) {
        let old = self.phases.get(phase).unwrap_or(0);
        self.phases.set(phase, old.saturating_add(us));
    }

    /// Resolve `host` (a name or an IP literal) with `port`; a name's lookup is the `dns`
    /// phase.
    pub fn resolve(&mut self, host: &str, port: u16) -> Result<SocketAddr, Fail> {
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let t = Instant::now();
        let found = (host, port).to_socket_addrs();
        self.add(Phase::Dns, us(t, Instant::now()));
        match found {
            Ok(mut addrs) => addrs.next().ok_or_else(|| {
                Fail::of(&Transport::NameNotResolved, format!("{host}: no address"))
            }),
            Err(e) => Err(Fail::of(
                &Transport::NameNotResolved,
                format!("{host}: {e}"),
            )),
        }
    }

    /// Resolve a `host:port` target.
    pub fn resolve_target(&mut self, target: &str) -> Result<SocketAddr, Fail> {
        let (host, port) = split_host_port(target).ok_or_else(|| {
            Fail::new(ErrorClass::Other, format!("{target:?}: expected host:port"))
        })?;
        self.resolve(host, port)
    }

    fn finish(
        self,
        probe: qos_wire::ids::ProbeId,
        at_ms: u64,
        outcome: Result<(), Fail>,
    ) -> Report {
        let total = us(self.start, Instant::now());
        let mut r = ProbeResult {
            probe,
            at_ms,
            phases: self.phases,
            error: None,
            error_after_us: None,
            detail: self.detail,
            redirects: self.redirects,
        };
        let message = match outcome {
            Ok(()) => {
                r.phases.set(Phase::Total, total);
                None
            }
            Err(f) => {
                r.error = Some(f.class);
                r.error_after_us = Some(total);
                Some(f.message)
            }
        };
        Report {
            result: r,
            cert_days_left: self.cert_days_left,
            steps_us: self.steps_us,
            message,
        }
    }
}

/// Split `host:port` (`[v6]:port` for IPv6).
pub use qos_probe_config::split_host_port;

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;

/// Run a probe of `kind` with `timeout_ms` (tests).
#[cfg(test)]
pub(crate) fn test_probe(kind: ProbeKind<'_>, timeout_ms: u32) -> Report {
    test_probe_with(kind, timeout_ms, &Options::default())
}

/// [`test_probe`] with options.
#[cfg(test)]
pub(crate) fn test_probe_with(kind: ProbeKind<'_>, timeout_ms: u32, opts: &Options) -> Report {
    let spec = ProbeSpec {
        id: qos_wire::ids::ProbeId(7),
        interval_ms: timeout_ms.max(100),
        timeout_ms,
        kind,
    };
    run_with(&spec, 1, opts)
}
