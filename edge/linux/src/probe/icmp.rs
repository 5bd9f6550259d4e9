//! ICMP echo through unprivileged datagram ICMP sockets (`SOCK_DGRAM`, `IPPROTO_ICMP`): the
//! kernel fills in the identifier and the checksum and hands back only echo replies for this
//! socket. The kernel allows them to the groups in `net.ipv4.ping_group_range` (also for
//! IPv6); where it forbids them the probe fails with a message naming that sysctl.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;
use socket2::{Domain, Protocol, Socket, Type};

use super::{us, Ctx, Fail};

/// The advice given when the kernel refuses the socket.
pub const SYSCTL_HINT: &str = "ICMP datagram sockets are not permitted for this process's group: \
allow them with `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` (net.ipv4.ping_group_range)";

/// Send one echo request to `host` and wait for its reply; the round trip is `connect`.
pub fn run(ctx: &mut Ctx, host: &str) -> Result<(), Fail> {
    let addr = ctx.resolve(host, 0)?;
    let (domain, proto, request_type, reply_type) = match addr.ip() {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let sock =
        Socket::new(domain, Type::DGRAM, Some(proto)).map_err(|e| match e.raw_os_error() {
            Some(1 | 13) => Fail::new(ErrorClass::Other, format!("{SYSCTL_HINT} ({e})")),
            _ => Fail::io("icmp socket", &e),
        })?;
    let seq = (std::process::id() as u16) ^ 0x5a5a;
    let payload = *b"qos-edge icmp probe.";
    let mut pkt = [0u8; 8 + 20];
    pkt[0] = request_type;
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    pkt[8..].copy_from_slice(&payload);
    let to: SocketAddr = SocketAddr::new(addr.ip(), 0);
    let t = Instant::now();
    sock.send_to(&pkt, &to.into())
        .map_err(|e| Fail::io(&format!("echo request to {}", addr.ip()), &e))?;
    let mut buf = [0u8; 1500];
    loop {
        sock.set_read_timeout(Some(ctx.remaining("echo reply")?))
            .map_err(|e| Fail::io("icmp socket", &e))?;
        let n = (&sock)
            .read(&mut buf)
            .map_err(|e| Fail::io(&format!("echo reply from {}", addr.ip()), &e))?;
        let got = &buf[..n];
        if got.len() >= 8
            && got[0] == reply_type
            && got[6..8] == seq.to_be_bytes()
            && got[8..] == payload
        {
            ctx.add(Phase::Connect, us(t, Instant::now()));
            return Ok(());
        }
    }
}
