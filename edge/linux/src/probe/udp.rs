//! Datagram probes: UDP echo and CoAP ping. The round trip is the `connect` phase.

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use qos_edge_core::probe::coap_ping::{build_ping, check_reply, PingReply, PING_LEN};
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;

use super::{us, Ctx, Fail};

fn socket(ctx: &mut Ctx, target: &str) -> Result<(UdpSocket, SocketAddr), Fail> {
    let addr = ctx.resolve_target(target)?;
    let bind: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).map_err(|e| Fail::io("udp socket", &e))?;
    // Connected: only the target's datagrams arrive, and ICMP port unreachable is reported
    // (as "refused") instead of waiting for the timeout.
    sock.connect(addr)
        .map_err(|e| Fail::io(&format!("udp {addr}"), &e))?;
    Ok((sock, addr))
}

fn recv(ctx: &Ctx, sock: &UdpSocket, buf: &mut [u8], addr: SocketAddr) -> Result<usize, Fail> {
    sock.set_read_timeout(Some(ctx.remaining("answer")?))
        .map_err(|e| Fail::io("udp socket", &e))?;
    sock.recv(buf)
        .map_err(|e| Fail::io(&format!("answer from {addr}"), &e))
}

/// Send `payload` to a UDP echo service and expect the same bytes back.
pub fn echo(ctx: &mut Ctx, target: &str, payload: &[u8]) -> Result<(), Fail> {
    let (sock, addr) = socket(ctx, target)?;
    let t = Instant::now();
    sock.send(payload)
        .map_err(|e| Fail::io(&format!("send to {addr}"), &e))?;
    let mut buf = vec![0u8; payload.len().max(1) + 512];
    let n = recv(ctx, &sock, &mut buf, addr)?;
    ctx.add(Phase::Connect, us(t, Instant::now()));
    ctx.detail = n as u32;
    if &buf[..n] != payload {
        return Err(Fail::new(
            ErrorClass::ContentMismatch,
            format!(
                "echo of {} bytes came back as {n} different bytes",
                payload.len()
            ),
        ));
    }
    Ok(())
}

/// CoAP ping: an empty CON, answered by an RST with the same message ID.
pub fn coap_ping(ctx: &mut Ctx, target: &str) -> Result<(), Fail> {
    let (sock, addr) = socket(ctx, target)?;
    let mid = (Instant::now().elapsed().subsec_nanos() ^ std::process::id()) as u16;
    let mut ping = [0u8; PING_LEN];
    let n =
        build_ping(&mut ping, mid).map_err(|e| Fail::new(ErrorClass::Other, format!("{e:?}")))?;
    let t = Instant::now();
    sock.send(&ping[..n])
        .map_err(|e| Fail::io(&format!("send to {addr}"), &e))?;
    let mut buf = [0u8; 1500];
    loop {
        let got = recv(ctx, &sock, &mut buf, addr)?;
        match check_reply(&buf[..got], mid) {
            PingReply::NotOurs => continue,
            PingReply::Pong => {
                ctx.add(Phase::Connect, us(t, Instant::now()));
                return Ok(());
            }
            r @ PingReply::Unexpected => {
                ctx.add(Phase::Connect, us(t, Instant::now()));
                return Err(Fail::of(
                    &r,
                    format!("{addr} answered the ping without RST"),
                ));
            }
        }
    }
}
