//! Probes run by the Linux driver. Timings come from the monotonic clock, in microseconds.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use qos_wire::ids::ProbeId;
use qos_wire::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use qos_wire::phase::Phase;

fn us_since(t: Instant) -> u32 {
    u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)
}

/// Map an I/O error of a connect to an error class.
pub fn classify(e: &std::io::Error) -> ErrorClass {
    match e.kind() {
        ErrorKind::ConnectionRefused => ErrorClass::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ErrorClass::Timeout,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => ErrorClass::Reset,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => ErrorClass::Unreachable,
        _ => ErrorClass::Other,
    }
}

/// Resolve `target` (`host:port`). The DNS phase is recorded only when `host` is a name.
fn resolve(target: &str, phases: &mut PhaseTimings) -> Result<SocketAddr, ErrorClass> {
    if let Ok(a) = target.parse::<SocketAddr>() {
        return Ok(a);
    }
    let t = Instant::now();
    let addr = target.to_socket_addrs().ok().and_then(|mut it| it.next());
    phases.set(Phase::Dns, us_since(t));
    addr.ok_or(ErrorClass::DnsFailure)
}

/// Open a TCP connection to `target` within `timeout`, then close it.
pub fn tcp_connect(probe: ProbeId, target: &str, timeout: Duration, at_ms: u64) -> ProbeResult {
    let start = Instant::now();
    let mut phases = PhaseTimings::new();
    let outcome = resolve(target, &mut phases).and_then(|addr| {
        let t = Instant::now();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                phases.set(Phase::Connect, us_since(t));
                drop(s);
                Ok(())
            }
            Err(e) => Err(classify(&e)),
        }
    });
    let total = us_since(start);
    let mut r = ProbeResult {
        probe,
        at_ms,
        phases,
        error: None,
        error_after_us: None,
        detail: 0,
        redirects: 0,
    };
    match outcome {
        Ok(()) => r.phases.set(Phase::Total, total),
        Err(c) => {
            r.error = Some(c);
            r.error_after_us = Some(total);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connect_to_a_listener_succeeds_with_phases() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = l.local_addr().unwrap().to_string();
        let r = tcp_connect(ProbeId(1), &target, Duration::from_secs(2), 0);
        assert_eq!(r.error, None);
        let connect = r.phases.get(Phase::Connect).unwrap();
        let total = r.phases.get(Phase::Total).unwrap();
        assert!(connect <= total);
        assert_eq!(
            r.phases.get(Phase::Dns),
            None,
            "an IP literal needs no lookup"
        );
    }

    #[test]
    fn closed_port_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = l.local_addr().unwrap().to_string();
        drop(l);
        let r = tcp_connect(ProbeId(1), &target, Duration::from_secs(2), 0);
        assert_eq!(r.error, Some(ErrorClass::Refused));
        assert!(r.error_after_us.is_some());
        assert_eq!(r.phases.get(Phase::Total), None);
    }

    #[test]
    fn a_name_is_resolved_and_timed() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let r = tcp_connect(
            ProbeId(1),
            &format!("localhost:{port}"),
            Duration::from_secs(2),
            0,
        );
        assert!(r.phases.get(Phase::Dns).is_some());
    }
}
