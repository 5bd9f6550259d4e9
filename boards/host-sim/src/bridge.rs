//! The network of the simulated board: an `embassy-net-driver-channel` device with
//! `HardwareAddress::Ip` (IP packets, no link layer) whose far end is this bridge. It relays
//! IPv4/UDP between the stack and host UDP sockets on 127.0.0.1, so no root, TAP or namespace
//! is needed:
//!
//! - the board is [`GUEST`] (10.0.2.15/24); [`HOST`] (10.0.2.2) stands for the host's
//!   127.0.0.1, as in QEMU's user network;
//! - a datagram from guest port `g` to `HOST:p` leaves through a host socket bound to
//!   `127.0.0.1:0` that belongs to `g` (one per guest port, made on first use) and goes to
//!   `127.0.0.1:p`; what that socket receives from `127.0.0.1:q` comes back to the guest as
//!   `HOST:q → GUEST:g`;
//! - anything else (TCP, other destinations, IP options, fragments) is dropped and counted.
//!
//! A thread per host socket blocks in `recv_from` and hands datagrams to the bridge task
//! through an embassy channel (its critical-section mutex is thread-safe on std).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;

use embassy_futures::select::{select, Either};
use embassy_net_driver_channel as ch;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;

/// The board's address.
pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The host's 127.0.0.1 as the board sees it.
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Largest IP packet.
pub const MTU: usize = 1500;

const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const UDP: u8 = 17;

/// A datagram from the host: (guest port, host port, payload).
type Inbound = (u16, u16, Vec<u8>);

static INBOUND: Channel<CriticalSectionRawMutex, Inbound, 16> = Channel::new();

/// Counters of what the bridge moved and dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// UDP datagrams from the guest sent on host sockets.
    pub out: u64,
    /// UDP datagrams from host sockets delivered to the guest.
    pub inbound: u64,
    /// Guest packets not relayed (not IPv4/UDP to HOST, or malformed).
    pub dropped: u64,
}

/// Run the bridge for ever.
pub async fn run(runner: ch::Runner<'static, MTU>) -> ! {
    let (state, mut rx, mut tx) = runner.split();
    state.set_link_state(embassy_net_driver_channel::driver::LinkState::Up);
    let mut sockets: HashMap<u16, Arc<UdpSocket>> = HashMap::new();
    let mut counters = Counters::default();
    loop {
        match select(tx.tx_buf(), INBOUND.receive()).await {
            Either::First(packet) => {
                match outbound(packet, &mut sockets) {
                    Ok(()) => counters.out += 1,
                    Err(why) => {
                        counters.dropped += 1;
                        log::debug!("bridge: dropped a guest packet ({why}); {counters:?}");
                    }
                }
                tx.tx_done();
            }
            Either::Second((guest_port, host_port, payload)) => {
                let buf = rx.rx_buf().await;
                let n = udp_packet(buf, host_port, guest_port, &payload);
                rx.rx_done(n);
                counters.inbound += 1;
            }
        }
    }
}

/// Relay one packet from the guest.
fn outbound(packet: &[u8], sockets: &mut HashMap<u16, Arc<UdpSocket>>) -> Result<(), &'static str> {
    if packet.len() < IPV4_HEADER || packet[0] != 0x45 {
        return Err("not IPv4 without options");
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total > packet.len() || total < IPV4_HEADER + UDP_HEADER {
        return Err("bad length");
    }
    if u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0 {
        return Err("fragment");
    }
    if packet[9] != UDP {
        return Err("not UDP");
    }
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    if dst != HOST {
        return Err("not to the host");
    }
    let udp = &packet[IPV4_HEADER..total];
    let src_port = u16::from_be_bytes([udp[0], udp[1]]);
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if len < UDP_HEADER || len > udp.len() {
        return Err("bad UDP length");
    }
    let socket = match sockets.get(&src_port) {
        Some(s) => s.clone(),
        None => {
            let s =
                Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|_| "no host socket")?);
            let reader = s.clone();
            std::thread::Builder::new()
                .name(format!("bridge-{src_port}"))
                .spawn(move || receive_for(src_port, &reader))
                .map_err(|_| "no thread")?;
            log::info!(
                "bridge: guest port {src_port} is host {}",
                s.local_addr().map(|a| a.to_string()).unwrap_or_default()
            );
            sockets.insert(src_port, s.clone());
            s
        }
    };
    socket
        .send_to(
            &udp[UDP_HEADER..len],
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, dst_port),
        )
        .map_err(|_| "host send failed")?;
    Ok(())
}

/// The thread of the host socket of guest port `guest_port`.
fn receive_for(guest_port: u16, socket: &UdpSocket) {
    let mut buf = vec![0u8; MTU - IPV4_HEADER - UDP_HEADER];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from.ip() == std::net::IpAddr::V4(Ipv4Addr::LOCALHOST) => {
                let item = (guest_port, from.port(), buf[..n].to_vec());
                embassy_futures::block_on(INBOUND.send(item));
            }
            Ok(_) => {}
            // ICMP port unreachable from an earlier send: keep going.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                log::warn!("bridge: host socket of guest port {guest_port}: {e}");
                return;
            }
        }
    }
}

/// Write the IPv4/UDP packet `HOST:from_port → GUEST:to_port` carrying `payload` into `buf`;
/// returns its length.
fn udp_packet(buf: &mut [u8], from_port: u16, to_port: u16, payload: &[u8]) -> usize {
    let payload = &payload[..payload.len().min(buf.len() - IPV4_HEADER - UDP_HEADER)];
    let udp_len = UDP_HEADER + payload.len();
    let total = IPV4_HEADER + udp_len;
    let ip = &mut buf[..IPV4_HEADER];
    ip.copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, UDP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&HOST.octets());
    ip[16..20].copy_from_slice(&GUEST.octets());
    let sum = checksum(0, ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut buf[IPV4_HEADER..total];
    udp[0..2].copy_from_slice(&from_port.to_be_bytes());
    udp[2..4].copy_from_slice(&to_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    udp[UDP_HEADER..].copy_from_slice(payload);
    // Pseudo header: source, destination, protocol, UDP length.
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&HOST.octets());
    pseudo[4..8].copy_from_slice(&GUEST.octets());
    pseudo[9] = UDP;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let sum = match checksum(sum_words(0, &pseudo), udp) {
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    total
}

fn sum_words(mut acc: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        let lo = pair.get(1).copied().map(u32::from).unwrap_or(0);
        acc += hi | lo;
    }
    acc
}

/// The Internet checksum of `bytes`, starting from the partial sum `acc`.
fn checksum(acc: u32, bytes: &[u8]) -> u16 {
    let mut s = sum_words(acc, bytes);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
