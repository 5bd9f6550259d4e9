//! Thin std drivers for CoAP over TCP and TLS (RFC 8323): a listener that accepts connections
//! and a connector that keeps one connection up, reconnecting with back-off. Both run each
//! connection on its own thread and report to the protocol thread through a channel:
//! [`StreamEvent::Connected`] (with the sender to write frames on), one
//! [`StreamEvent::Frame`] per complete frame (split with [`qos_coap::msg::frame_len`]), and
//! [`StreamEvent::Closed`]. The protocol state (CSM, tokens, keep-alive) is the sans-IO
//! [`qos_coap::Link`] of the protocol thread; this module only moves bytes.
//!
//! Dropping the sender of a connection closes it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

/// How long a connection thread blocks in a read before it looks for frames to write.
const IO_POLL: Duration = Duration::from_millis(10);
/// Longest TCP connect and TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest blocking write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait before looking at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// First wait before connecting again.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between connection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// What a connection reports to the protocol thread.
#[derive(Debug)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A connection is up (TLS handshake done): write frames to `tx`; drop it to close.
    Connected {
        /// The other end.
        peer: SocketAddr,
        /// Frames to write.
        tx: Sender<Vec<u8>>,
    },
    /// One complete frame.
    Frame {
        /// The other end.
        peer: SocketAddr,
        /// The frame.
        frame: Vec<u8>,
    },
    /// The connection ended.
    Closed {
        /// The other end.
        peer: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// TLS or not, on the listening side.
#[derive(Debug, Clone)]
pub enum Accept {
    /// Plain TCP (loopback only, checked by the configuration).
    Plain,
    /// TLS with required client certificates (reloadable: each connection takes the current
    /// settings).
    Tls(crate::tls::ServerSlot),
}

/// TLS or not, on the connecting side.
#[derive(Debug, Clone)]
pub enum Connect {
    /// Plain TCP.
    Plain,
    /// TLS, checking the server against `ServerName` (reloadable: each connection takes the
    /// current settings).
    Tls(crate::tls::ClientSlot, ServerName<'static>),
}

/// Reports events as `T` on a channel; `false` when the receiver is gone.
pub type Report<T> = Arc<dyn Fn(StreamEvent) -> Option<T> + Send + Sync>;

fn send<T>(events: &Sender<T>, wrap: &Report<T>, ev: StreamEvent) -> bool {
    match wrap(ev) {
        Some(t) => events.send(t).is_ok(),
        None => true,
    }
}

/// Moves bytes until the connection ends; reports Connected, Frames and Closed.
fn run_io<S: Read + Write, T>(
    mut stream: S,
    peer: SocketAddr,
    max_frame: usize,
    events: &Sender<T>,
    wrap: &Report<T>,
    shutdown: &AtomicBool,
) -> String {
    let (tx, rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = mpsc::channel();
    if !send(events, wrap, StreamEvent::Connected { peer, tx }) {
        return "shutting down".into();
    }
    let mut acc: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return "shutting down".into();
        }
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(frame) => {
                    if let Err(e) = stream.write_all(&frame) {
                        return format!("write failed: {e}");
                    }
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return "closed by this side".into(),
            }
        }
        if wrote {
            if let Err(e) = stream.flush() {
                return format!("write failed: {e}");
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return "closed by the peer".into(),
            Ok(n) => acc.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return format!("read failed: {e}"),
        }
        loop {
            match qos_coap::msg::frame_len(&acc) {
                Ok(Some(n)) if n > max_frame => {
                    return format!("frame of {n} bytes, more than {max_frame}")
                }
                Ok(Some(n)) if n <= acc.len() => {
                    let frame: Vec<u8> = acc.drain(..n).collect();
                    if !send(events, wrap, StreamEvent::Frame { peer, frame }) {
                        return "shutting down".into();
                    }
                }
                Ok(_) => break,
                Err(e) => return format!("malformed frame: {e}"),
            }
        }
    }
}

fn prepare(tcp: &TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))
}

/// Accepts connections on `addr` until `shutdown`; each runs on its own thread. Failed TLS
/// handshakes (no client certificate, one from another CA) are logged and counted in
/// `refused`. Returns the bound address and the acceptor thread.
#[allow(clippy::too_many_arguments)]
pub fn listen<T: Send + 'static>(
    name: &'static str,
    addr: SocketAddr,
    accept: Accept,
    max_frame: usize,
    events: Sender<T>,
    wrap: Report<T>,
    refused: Arc<AtomicU64>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                let (tcp, peer) = match listener.accept() {
                    Ok(c) => c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(IO_POLL * 5);
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, listener = name, "accept failed");
                        std::thread::sleep(IO_POLL * 5);
                        continue;
                    }
                };
                let (events, wrap, refused, shutdown, accept) = (
                    events.clone(),
                    wrap.clone(),
                    refused.clone(),
                    shutdown.clone(),
                    accept.clone(),
                );
                let spawned = std::thread::Builder::new()
                    .name(format!("{name}-conn"))
                    .spawn(move || {
                        serve_connection(
                            tcp, peer, accept, max_frame, &events, &wrap, &refused, &shutdown,
                        )
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, %peer, "cannot start a connection thread");
                }
            }
        })?;
    Ok((local, thread))
}

#[allow(clippy::too_many_arguments)]
fn serve_connection<T>(
    tcp: TcpStream,
    peer: SocketAddr,
    accept: Accept,
    max_frame: usize,
    events: &Sender<T>,
    wrap: &Report<T>,
    refused: &AtomicU64,
    shutdown: &AtomicBool,
) {
    if let Err(e) = tcp.set_nonblocking(false).and_then(|_| prepare(&tcp)) {
        tracing::debug!(error = %e, %peer, "cannot set up a connection");
        return;
    }
    let reason = match accept {
        Accept::Plain => {
            let _ = tcp.set_read_timeout(Some(IO_POLL));
            run_io(tcp, peer, max_frame, events, wrap, shutdown)
        }
        Accept::Tls(config) => {
            let mut tcp = tcp;
            let handshake = ServerConnection::new(config.current())
                .map_err(std::io::Error::other)
                .and_then(|mut conn| {
                    while conn.is_handshaking() {
                        conn.complete_io(&mut tcp)?;
                    }
                    Ok(conn)
                });
            match handshake {
                Ok(conn) => {
                    let _ = tcp.set_read_timeout(Some(IO_POLL));
                    run_io(
                        StreamOwned::new(conn, tcp),
                        peer,
                        max_frame,
                        events,
                        wrap,
                        shutdown,
                    )
                }
                Err(e) => {
                    let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        %peer,
                        error = %e,
                        refused_total = n,
                        "TLS client refused"
                    );
                    return;
                }
            }
        }
    };
    tracing::info!(%peer, %reason, "CoAP stream connection closed");
    send(events, wrap, StreamEvent::Closed { peer, reason });
}

/// Keeps one connection to `addr` up until `shutdown`: connects (TCP, then the TLS handshake),
/// runs it, and after it ends (or fails to start) waits a back-off from
/// [`RECONNECT_INITIAL`] doubling to [`RECONNECT_MAX`] (back to the start after a connection
/// that stayed up a minute) and connects again.
pub fn connect_loop<T>(
    addr: SocketAddr,
    connect: Connect,
    max_frame: usize,
    events: Sender<T>,
    wrap: Report<T>,
    shutdown: Arc<AtomicBool>,
) {
    let mut backoff = RECONNECT_INITIAL;
    while !shutdown.load(Ordering::Relaxed) {
        let started = Instant::now();
        match connect_once(addr, &connect) {
            Ok(stream) => {
                tracing::info!(upstream = %addr, "upstream connection up");
                let reason = match stream {
                    Either::Plain(s) => run_io(s, addr, max_frame, &events, &wrap, &shutdown),
                    Either::Tls(s) => run_io(*s, addr, max_frame, &events, &wrap, &shutdown),
                };
                tracing::warn!(upstream = %addr, %reason, "upstream connection lost");
                if !send(&events, &wrap, StreamEvent::Closed { peer: addr, reason }) {
                    return;
                }
                if started.elapsed() >= Duration::from_secs(60) {
                    backoff = RECONNECT_INITIAL;
                }
            }
            Err(e) => {
                tracing::warn!(upstream = %addr, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot connect upstream");
            }
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
            std::thread::sleep(SHUTDOWN_POLL.min(until.saturating_duration_since(Instant::now())));
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

enum Either {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

fn connect_once(addr: SocketAddr, connect: &Connect) -> std::io::Result<Either> {
    let mut tcp = TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)?;
    prepare(&tcp)?;
    match connect {
        Connect::Plain => {
            tcp.set_read_timeout(Some(IO_POLL))?;
            Ok(Either::Plain(tcp))
        }
        Connect::Tls(config, name) => {
            let mut conn = ClientConnection::new(config.current(), name.clone())
                .map_err(std::io::Error::other)?;
            while conn.is_handshaking() {
                conn.complete_io(&mut tcp)?;
            }
            tcp.set_read_timeout(Some(IO_POLL))?;
            Ok(Either::Tls(Box::new(StreamOwned::new(conn, tcp))))
        }
    }
}
