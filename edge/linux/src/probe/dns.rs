//! DNS probe: one query over UDP to a given resolver, timed from send to the answer.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Instant;

use qos_edge_core::probe::classify::dns_verdict;
use qos_edge_core::probe::dns::{build_query, parse_response, DnsError, Verdict, MAX_QUERY};
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;
use qos_wire::probe::DnsType;

use super::{us, Ctx, Fail};

/// Parse a resolver address: `ip:port`, `[v6]:port` or a bare IP (port 53).
pub use qos_probe_config::resolver_addr;

/// A query id that differs between runs.
fn query_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 16) ^ std::process::id()) as u16
}

/// Ask `resolver` for `name`/`qtype`; `expect` (an address) must be in the answer if given.
/// `detail` is the rcode; the `dns` phase is the query's round trip.
pub fn run(
    ctx: &mut Ctx,
    resolver: &str,
    name: &str,
    qtype: DnsType,
    expect: Option<&str>,
) -> Result<(), Fail> {
    let server = resolver_addr(resolver).ok_or_else(|| {
        Fail::new(
            ErrorClass::Other,
            format!("resolver {resolver:?}: expected ip[:port]"),
        )
    })?;
    let expect = match expect {
        Some(e) => Some(e.parse::<IpAddr>().map_err(|_| {
            Fail::new(
                ErrorClass::Other,
                format!("expected address {e:?} is not an IP address"),
            )
        })?),
        None => None,
    };
    let id = query_id();
    let mut query = [0u8; MAX_QUERY];
    let n = build_query(&mut query, id, name, qtype)
        .map_err(|e| Fail::of(&e, format!("query for {name:?}: {e:?}")))?;
    let bind: SocketAddr = if server.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|e| Fail::io("udp socket", &e))?;
    sock.connect(server)
        .map_err(|e| Fail::io(&format!("udp {server}"), &e))?;
    let t = Instant::now();
    sock.send(&query[..n])
        .map_err(|e| Fail::io(&format!("send to {server}"), &e))?;
    let mut buf = [0u8; 4096];
    loop {
        sock.set_read_timeout(Some(ctx.remaining("dns answer")?))
            .map_err(|e| Fail::io("udp socket", &e))?;
        let got = sock
            .recv(&mut buf)
            .map_err(|e| Fail::io(&format!("answer from {server}"), &e))?;
        let answer = match parse_response(&buf[..got], id, name, qtype) {
            // A stray or late datagram: keep waiting for ours.
            Err(DnsError::IdMismatch) => continue,
            Err(e) => {
                ctx.add(Phase::Dns, us(t, Instant::now()));
                return Err(Fail::of(&e, format!("answer from {server}: {e:?}")));
            }
            Ok(a) => a,
        };
        ctx.add(Phase::Dns, us(t, Instant::now()));
        ctx.detail = u32::from(answer.rcode);
        let verdict = answer.verdict(expect);
        return match dns_verdict(verdict) {
            None => Ok(()),
            Some(class) => Err(Fail::new(
                class,
                match verdict {
                    Verdict::Rcode(3) => format!("{name}: NXDOMAIN"),
                    Verdict::Rcode(2) => format!("{name}: SERVFAIL"),
                    Verdict::Rcode(r) => format!("{name}: rcode {r}"),
                    Verdict::NoAnswer => format!("{name}: no {qtype:?} record"),
                    _ => format!("{name}: {:?} not among {:?}", expect, answer.addrs()),
                },
            )),
        };
    }
}
