//! TCP connect: resolve, connect, close.

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use qos_wire::phase::Phase;

use super::{us, Ctx, Fail};

/// Connect to `addr` within the run's deadline; the time is the `connect` phase.
pub fn connect(ctx: &mut Ctx, addr: SocketAddr) -> Result<TcpStream, Fail> {
    let left = ctx.remaining("connect")?;
    let t = Instant::now();
    let s = TcpStream::connect_timeout(&addr, left)
        .map_err(|e| Fail::io(&format!("connect {addr}"), &e))?;
    ctx.add(Phase::Connect, us(t, Instant::now()));
    Ok(s)
}

/// The TCP probe: connect to `target` (`host:port`) and close.
pub fn run(ctx: &mut Ctx, target: &str) -> Result<(), Fail> {
    let addr = ctx.resolve_target(target)?;
    drop(connect(ctx, addr)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::probe::test_probe as probe;
    use crate::probe::testutil::*;
    use qos_wire::outcome::ErrorClass;
    use qos_wire::phase::Phase;
    use qos_wire::probe::ProbeKind;
    use std::net::TcpListener;

    #[test]
    fn connect_to_a_listener_succeeds_with_phases() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = l.local_addr().unwrap().to_string();
        let r = probe(ProbeKind::Tcp { target: &target }, 2000).result;
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
        let r = probe(ProbeKind::Tcp { target: &target }, 2000).result;
        assert_eq!(r.error, Some(ErrorClass::Refused));
        assert!(r.error_after_us.is_some());
        assert_eq!(r.phases.get(Phase::Total), None);
    }

    #[test]
    fn a_name_is_resolved_and_timed() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let target = format!("localhost:{port}");
        let r = probe(ProbeKind::Tcp { target: &target }, 2000).result;
        assert!(r.phases.get(Phase::Dns).is_some());
    }

    #[test]
    fn a_full_backlog_times_out() {
        // A listener that never accepts, with its backlog filled: further SYNs go unanswered.
        let (target, _fillers, _listener) = unaccepting_listener();
        let r = probe(ProbeKind::Tcp { target: &target }, 300).result;
        assert_eq!(r.error, Some(ErrorClass::Timeout), "{r:?}");
        let after = r.error_after_us.unwrap();
        assert!((250_000..2_000_000).contains(&after), "{after}");
    }
}
