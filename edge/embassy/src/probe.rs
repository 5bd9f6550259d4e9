//! The probes over embassy-net sockets, timed with embassy-time (µs where the board's time
//! driver has µs resolution). Protocol logic (the CoAP ping and its reply, error classes) is
//! `qos-edge-core`'s; this file owns the sockets and the clock.

use embassy_net::tcp::{ConnectError, TcpSocket};
use embassy_net::udp::{PacketMetadata, SendError, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_time::{with_deadline, with_timeout, Duration, Instant};
use qos_edge_core::probe::classify::{Classify, Transport};
use qos_edge_core::probe::coap_ping::{build_ping, check_reply, PingReply, PING_LEN};
use qos_wire::ids::ProbeId;
use qos_wire::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use qos_wire::phase::Phase;

use crate::config::ProbeTarget;

/// Socket buffers of the probes (a TCP connect sends and receives no data; a ping answer is a
/// bare header, larger datagrams are truncated and ignored).
pub struct ProbeBuffers {
    tcp_rx: [u8; 64],
    tcp_tx: [u8; 64],
    udp_rx: [u8; 64],
    udp_tx: [u8; 64],
    rx_meta: [PacketMetadata; 2],
    tx_meta: [PacketMetadata; 2],
}

impl ProbeBuffers {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        ProbeBuffers {
            tcp_rx: [0; 64],
            tcp_tx: [0; 64],
            udp_rx: [0; 64],
            udp_tx: [0; 64],
            rx_meta: [PacketMetadata::EMPTY; 2],
            tx_meta: [PacketMetadata::EMPTY; 2],
        }
    }
}

impl Default for ProbeBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// The edge's probe with its sockets.
pub(crate) enum Prober<'a> {
    Tcp {
        stack: Stack<'a>,
        to: IpEndpoint,
        rx: &'a mut [u8],
        tx: &'a mut [u8],
    },
    Ping {
        socket: UdpSocket<'a>,
        to: IpEndpoint,
        mid: u16,
    },
}

/// How one attempt ended: the time until the answer in µs, or why it failed (and after how
/// long).
type Outcome = Result<u32, (ErrorClass, u32)>;

fn us_since(t: Instant) -> u32 {
    t.elapsed().as_micros().min(u64::from(u32::MAX)) as u32
}

impl<'a> Prober<'a> {
    /// The probe for `target`; a ping binds its UDP socket to `ping_port`.
    pub(crate) fn new(
        stack: Stack<'a>,
        target: ProbeTarget,
        ping_port: u16,
        seed: u64,
        bufs: &'a mut ProbeBuffers,
    ) -> Self {
        match target {
            ProbeTarget::TcpConnect(to) => Prober::Tcp {
                stack,
                to,
                rx: &mut bufs.tcp_rx,
                tx: &mut bufs.tcp_tx,
            },
            ProbeTarget::CoapPing(to) => {
                let mut socket = UdpSocket::new(
                    stack,
                    &mut bufs.rx_meta,
                    &mut bufs.udp_rx,
                    &mut bufs.tx_meta,
                    &mut bufs.udp_tx,
                );
                // Only fails if already bound.
                let _ = socket.bind(ping_port);
                Prober::Ping {
                    socket,
                    to,
                    mid: seed as u16,
                }
            }
        }
    }

    /// Point the probe at `to` (same kind); false if `tcp` is not this probe's kind.
    pub(crate) fn retarget(&mut self, tcp: bool, to: IpEndpoint) -> bool {
        match self {
            Prober::Tcp { to: t, .. } if tcp => *t = to,
            Prober::Ping { to: t, .. } if !tcp => *t = to,
            _ => return false,
        }
        true
    }

    /// Run the probe once (`probe` started at Unix ms `at_ms`), within `timeout`.
    pub(crate) async fn run(
        &mut self,
        probe: ProbeId,
        at_ms: u64,
        timeout: Duration,
    ) -> ProbeResult {
        let outcome = match self {
            Prober::Tcp { stack, to, rx, tx } => tcp_connect(*stack, *to, rx, tx, timeout).await,
            Prober::Ping { socket, to, mid } => {
                *mid = mid.wrapping_add(1);
                coap_ping(socket, *to, *mid, timeout).await
            }
        };
        let mut phases = PhaseTimings::new();
        let (error, error_after_us) = match outcome {
            Ok(us) => {
                phases.set(Phase::Connect, us);
                phases.set(Phase::Total, us);
                (None, None)
            }
            Err((class, us)) => (Some(class), Some(us)),
        };
        ProbeResult {
            probe,
            at_ms,
            phases,
            error,
            error_after_us,
            detail: 0,
            redirects: 0,
        }
    }
}

/// One TCP connect, timed; the connection is aborted at once.
async fn tcp_connect(
    stack: Stack<'_>,
    to: IpEndpoint,
    rx: &mut [u8],
    tx: &mut [u8],
    timeout: Duration,
) -> Outcome {
    let mut socket = TcpSocket::new(stack, rx, tx);
    socket.set_timeout(Some(timeout));
    let started = Instant::now();
    let outcome = with_timeout(timeout, socket.connect(to)).await;
    let us = us_since(started);
    socket.abort();
    let _ = with_timeout(Duration::from_millis(50), socket.flush()).await;
    let transport = match outcome {
        Ok(Ok(())) => return Ok(us),
        Ok(Err(ConnectError::ConnectionReset)) => Transport::Refused,
        Ok(Err(ConnectError::TimedOut)) | Err(_) => Transport::TimedOut,
        Ok(Err(ConnectError::NoRoute)) => Transport::Unreachable,
        Ok(Err(ConnectError::InvalidState)) => Transport::Local,
    };
    Err((transport.class(), us))
}

/// One CoAP ping (empty CON with message id `mid`), timed until the matching RST.
async fn coap_ping(
    socket: &mut UdpSocket<'_>,
    to: IpEndpoint,
    mid: u16,
    timeout: Duration,
) -> Outcome {
    let mut ping = [0u8; PING_LEN];
    let Ok(n) = build_ping(&mut ping, mid) else {
        return Err((Transport::Local.class(), 0));
    };
    // Answers to earlier pings that came after their timeout.
    while socket.may_recv() {
        let mut stale = [0u8; 8];
        if socket.recv_from(&mut stale).await.is_err() {
            break;
        }
    }
    let started = Instant::now();
    if let Err(e) = socket.send_to(&ping[..n], to).await {
        let t = match e {
            SendError::NoRoute => Transport::Unreachable,
            _ => Transport::Local,
        };
        return Err((t.class(), us_since(started)));
    }
    let deadline = started + timeout;
    let mut buf = [0u8; 16];
    loop {
        match with_deadline(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => return Err((Transport::TimedOut.class(), us_since(started))),
            // Truncated (larger than a ping answer): not ours.
            Ok(Err(_)) => continue,
            Ok(Ok((len, meta))) => {
                if meta.endpoint != to {
                    continue;
                }
                match check_reply(&buf[..len], mid) {
                    PingReply::NotOurs => continue,
                    PingReply::Pong => return Ok(us_since(started)),
                    r @ PingReply::Unexpected => return Err((r.class(), us_since(started))),
                }
            }
        }
    }
}
