//! `qos-aggregator broker`: the UDP, TCP and TLS driver around the sans-IO
//! [`qos_broker::Broker`].
//!
//! Two sockets: the downstream one bound to `broker.listen` (edges), the upstream one bound to
//! an ephemeral port of the upstream's address family. A reader thread per socket hands
//! datagrams over a channel to the broker thread, which waits on that channel until the broker's
//! next deadline (at most 100 ms, so it notices the shutdown flag), and sends what the broker
//! has to send.
//!
//! With `[upstream] transport = "tcp"` or `"tls"` there is no upstream socket: a connector
//! thread ([`crate::stream_io::connect_loop`]) keeps one connection up, reconnecting with
//! back-off, and hands frames and connection events over the same channel. With
//! `[downstream_tls]` (or `[downstream_tcp]`) child brokers connect too; their frames reach the
//! same broker state as the edges' datagrams, and answers go back on their connection. The queue is `broker.data_dir/queue.sqlite` ([`qos_broker::SqliteQueue`]);
//! batches left there by an earlier run (or a kill) are forwarded first.
//!
//! Every 5 s, when something changed, the broker logs one line of counters (`received`,
//! `acked`, `forwarded`, `queued`, ...), which is also how tests watch the queue.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use qos_broker::{Broker, BrokerConfig, QueueError, SqliteQueue, MAX_MESSAGE};
use qos_coap::Transport;

use crate::broker_config::BrokerFile;
use crate::coap::coap_config;
use crate::stream_io::{self, Accept, Report, StreamEvent};

/// Longest wait before looking at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// Interval of the counters line in the log.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Why the broker could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum BrokerRunError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The queue could not be opened.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A socket could not be bound.
    #[error("cannot bind the {what} socket to {addr}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Invalid CoAP parameters.
    #[error("invalid [broker.reliability]: {0}")]
    Coap(String),
    /// A thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// Which thread.
        name: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The broker thread panicked.
    #[error("the broker thread stopped unexpectedly")]
    Died,
    /// A TLS file could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The broker's id could not be read or kept (`data_dir/broker-id`).
    #[error("broker id file {}: {source}", path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    listen: SocketAddr,
    stream_listen: Vec<SocketAddr>,
    refused: Arc<AtomicU64>,
}

impl BrokerHandle {
    /// The address edges send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The TLS (then TCP) listeners' addresses for child brokers, if configured.
    pub fn stream_addrs(&self) -> &[SocketAddr] {
        &self.stream_listen
    }

    /// TLS clients refused in the handshake.
    pub fn tls_refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Blocks until the shutdown flag is set (or a thread dies), then joins.
    pub fn wait(self) -> Result<(), BrokerRunError> {
        let mut died = false;
        while !self.shutdown.load(Ordering::SeqCst) {
            if self.threads.iter().any(|t| t.is_finished()) {
                tracing::error!("a broker thread stopped unexpectedly");
                died = true;
                break;
            }
            std::thread::sleep(SHUTDOWN_POLL);
        }
        let result = self.stop();
        if died {
            return Err(BrokerRunError::Died);
        }
        result
    }

    /// Sets the shutdown flag and joins the threads.
    pub fn stop(self) -> Result<(), BrokerRunError> {
        self.shutdown.store(true, Ordering::SeqCst);
        tracing::info!("broker shutting down");
        let mut died = false;
        for t in self.threads {
            died |= t.join().is_err();
        }
        if died {
            return Err(BrokerRunError::Died);
        }
        tracing::info!("broker stopped");
        Ok(())
    }
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<UdpSocket, BrokerRunError> {
    UdpSocket::bind(addr).map_err(|source| BrokerRunError::Bind { what, addr, source })
}

/// Opens the queue, binds the sockets and listeners, starts the threads; returns once
/// listening.
pub fn run_broker(
    file: &BrokerFile,
    shutdown: Arc<AtomicBool>,
) -> Result<BrokerHandle, BrokerRunError> {
    let config = &file.broker;
    let upstream_addr = file.upstream_address();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerRunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let id_seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let id = config
        .resolve_id(id_seed)
        .map_err(|source| BrokerRunError::Identity {
            path: config.data_dir.join(crate::broker_config::ID_FILE),
            source,
        })?;
    let connect = file.upstream.connect()?;
    let accepts: Vec<(&'static str, SocketAddr, Accept)> = file
        .downstream_tls
        .iter()
        .map(|t| Ok(("broker-tls", t.listen, t.accept()?)))
        .chain(
            file.downstream_tcp
                .iter()
                .map(|t| Ok(("broker-tcp", t.listen, Accept::Plain))),
        )
        .collect::<Result<_, crate::tls::TlsError>>()?;
    let queue = SqliteQueue::open(&config.queue_path(), config.max_queue_bytes)?;
    let restored = qos_broker::Queue::stats(&queue);
    let down = bind("downstream", config.listen)?;
    let listen = down.local_addr().map_err(|source| BrokerRunError::Bind {
        what: "downstream",
        addr: config.listen,
        source,
    })?;
    let any: SocketAddr = match upstream_addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let up = match connect {
        None => Some(bind("upstream", any)?),
        Some(_) => None,
    };
    let coap = coap_config(&config.reliability);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let transport = match connect {
        None => Transport::Datagram,
        Some(_) => Transport::Stream,
    };
    let broker = Broker::with_upstream_transport(
        BrokerConfig {
            downstream: coap,
            upstream: coap,
            hold_ms: config.hold_ms,
            relay_timeout_ms: config.relay_timeout_ms,
            report_interval_ms: config.report_interval_ms,
            ping_interval_ms: config.ping_interval_ms,
            max_body_bytes: config.max_body_bytes,
            replay: config.replay.config(),
            upstream_window: config.upstream_window,
            ..BrokerConfig::default()
        },
        transport,
        qos_coap::link::stream_config(&coap),
        upstream_addr,
        Box::new(queue),
        seed,
    )
    .map_err(|e| BrokerRunError::Coap(e.to_string()))?
    .with_rate_limit(config.rate_limit.limit(), crate::config::rate_key)
    .with_edge_rate_limit(config.rate_limit.edge_limit())
    .with_peers(
        config.peers.iter().map(ToString::to_string).collect(),
        config.max_edges,
    )
    .with_id(&id);
    // SIGUSR1: drain (turn every edge away to the peers) until restart.
    let drain = Arc::new(AtomicBool::new(false));
    qos_host::signal::on_usr1(drain.clone());
    tracing::info!(
        id = %id,
        listen = %listen,
        upstream = %upstream_addr,
        transport = ?file.upstream.transport,
        queue = %config.queue_path().display(),
        queued = restored.len,
        queued_bytes = restored.bytes,
        "broker listening"
    );
    file.upstream.log_plaintext(upstream_addr);
    // A plaintext upstream off loopback (allowed by upstream.allow_plaintext): warned again
    // at every connection of a stream transport.
    let warn_on_connect =
        file.upstream.is_plaintext() && !crate::stream_config::is_loopback(upstream_addr);

    let (tx, rx) = mpsc::channel();
    let clone = |s: &UdpSocket, what| {
        s.try_clone().map_err(|source| BrokerRunError::Bind {
            what,
            addr: listen,
            source,
        })
    };
    let mut threads = Vec::new();
    let mut readers = vec![("broker-rx-down", Side::Down, clone(&down, "downstream")?)];
    if let Some(up) = &up {
        readers.push(("broker-rx-up", Side::Up, clone(up, "upstream")?));
    }
    for (name, side, socket) in readers {
        let tx: Sender<Input> = tx.clone();
        let flag = shutdown.clone();
        threads.push(
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || reader(socket, side, tx, &flag))
                .map_err(|source| BrokerRunError::Spawn { name, source })?,
        );
    }
    if let Some(connect) = connect {
        let (tx, flag) = (tx.clone(), shutdown.clone());
        let wrap: Report<Input> = Arc::new(|ev| Some(Input::Stream(Side::Up, ev)));
        threads.push(
            std::thread::Builder::new()
                .name("broker-up-conn".into())
                .spawn(move || {
                    stream_io::connect_loop(upstream_addr, connect, MAX_MESSAGE, tx, wrap, flag)
                })
                .map_err(|source| BrokerRunError::Spawn {
                    name: "broker-up-conn",
                    source,
                })?,
        );
    }
    let refused = Arc::new(AtomicU64::new(0));
    let mut stream_listen = Vec::new();
    for (name, addr, accept) in accepts {
        if matches!(accept, Accept::Plain) {
            crate::stream_config::log_plaintext_listener("downstream_tcp", addr);
        }
        let wrap: Report<Input> = Arc::new(|ev| Some(Input::Stream(Side::Down, ev)));
        let (local, thread) = stream_io::listen(
            name,
            addr,
            accept,
            MAX_MESSAGE,
            tx.clone(),
            wrap,
            refused.clone(),
            shutdown.clone(),
        )
        .map_err(|source| BrokerRunError::Bind {
            what: "child-broker",
            addr,
            source,
        })?;
        tracing::info!(listen = %local, listener = name, "accepting child brokers");
        stream_listen.push(local);
        threads.push(thread);
    }
    drop(tx);
    let flag = shutdown.clone();
    threads.push(
        std::thread::Builder::new()
            .name("broker".into())
            .spawn(move || broker_loop(broker, down, up, rx, &flag, &drain, warn_on_connect))
            .map_err(|source| BrokerRunError::Spawn {
                name: "broker",
                source,
            })?,
    );
    Ok(BrokerHandle {
        shutdown,
        threads,
        listen,
        stream_listen,
        refused,
    })
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Down,
    Up,
}

/// What the broker thread waits for.
enum Input {
    Datagram(Side, SocketAddr, Vec<u8>),
    Stream(Side, StreamEvent),
}

fn reader(socket: UdpSocket, side: Side, tx: Sender<Input>, shutdown: &AtomicBool) {
    if let Err(e) = socket.set_read_timeout(Some(SHUTDOWN_POLL)) {
        tracing::error!(error = %e, "broker socket: cannot set timeout");
        shutdown.store(true, Ordering::SeqCst);
        return;
    }
    // One byte more than the largest message, to recognise oversized datagrams.
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    while !shutdown.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if tx
                    .send(Input::Datagram(side, from, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP errors of earlier sends (upstream down) surface here on Linux.
            Err(e) => tracing::debug!(error = %e, ?side, "broker receive error"),
        }
    }
}

fn broker_loop(
    mut broker: Broker<SocketAddr>,
    down: UdpSocket,
    up: Option<UdpSocket>,
    rx: Receiver<Input>,
    shutdown: &AtomicBool,
    drain: &AtomicBool,
    warn_on_connect: bool,
) {
    let start = Instant::now();
    let mono = || start.elapsed().as_millis() as u64;
    let unix_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let mut tx = vec![0u8; MAX_MESSAGE];
    let mut last_report = Instant::now();
    let mut reported = None;
    // The upstream connection (stream transports) and the child brokers' connections.
    let mut up_conn: Option<Sender<Vec<u8>>> = None;
    let mut down_conns: HashMap<SocketAddr, Sender<Vec<u8>>> = HashMap::new();
    broker.poll(mono());
    while !shutdown.load(Ordering::Relaxed) {
        let now = mono();
        let wait = broker
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now)))
            .unwrap_or(SHUTDOWN_POLL)
            .clamp(Duration::from_millis(1), SHUTDOWN_POLL);
        let mut next = match rx.recv_timeout(wait) {
            Ok(d) => Some(d),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if drain.load(Ordering::Relaxed) && !broker.draining() {
            broker.set_draining(true);
            tracing::warn!("broker draining (SIGUSR1): edges are sent to its peers");
        }
        // The uplink batches of what waits now are queued together (one wait for the disk).
        broker.begin_group();
        while let Some(input) = next.take() {
            let now = mono();
            match input {
                Input::Datagram(Side::Down, from, bytes) => {
                    if down_conns.contains_key(&from) {
                        // Same address as a child broker's TCP connection: not ours to mix.
                        tracing::debug!(peer = %from, "datagram from a stream peer's address ignored");
                    } else {
                        broker.handle_downstream(now, unix_ms(), from, &bytes)
                    }
                }
                Input::Datagram(Side::Up, from, bytes) => broker.handle_upstream(now, from, &bytes),
                Input::Stream(Side::Up, ev) => match ev {
                    StreamEvent::Connected { tx, peer } => {
                        if warn_on_connect {
                            tracing::warn!(upstream = %peer, "plaintext upstream connection to a non-loopback address (upstream.allow_plaintext = true): neither authenticated nor encrypted");
                        }
                        up_conn = Some(tx);
                        broker.upstream_connected(now);
                    }
                    StreamEvent::Frame { frame, .. } => {
                        let from = broker.upstream_address();
                        broker.handle_upstream(now, from, &frame);
                    }
                    StreamEvent::Closed { .. } => {
                        up_conn = None;
                        broker.upstream_disconnected(now);
                    }
                },
                Input::Stream(Side::Down, ev) => match ev {
                    StreamEvent::Connected { peer, tx } => {
                        if broker.downstream_connected(now, peer) {
                            tracing::info!(%peer, "child broker connected");
                            down_conns.insert(peer, tx);
                        } else {
                            tracing::warn!(%peer, "too many child broker connections; closed");
                        }
                    }
                    StreamEvent::Frame { peer, frame } => {
                        broker.handle_downstream(now, unix_ms(), peer, &frame)
                    }
                    StreamEvent::Closed { peer, .. } => {
                        if down_conns.remove(&peer).is_some() {
                            broker.downstream_disconnected(now, peer);
                        }
                    }
                },
            }
            next = rx.try_recv().ok();
        }
        broker.end_group(mono());
        let now = mono();
        broker.poll(now);
        while let Some(peer) = broker.poll_downstream_disconnect() {
            down_conns.remove(&peer);
            broker.downstream_disconnected(now, peer);
        }
        if broker.poll_upstream_disconnect() {
            // Dropping the sender closes the connection; the connector reconnects.
            up_conn = None;
            broker.upstream_disconnected(now);
        }
        while let Some((to, n)) = broker.poll_transmit_downstream(now, &mut tx) {
            if let Some(conn) = down_conns.get(&to) {
                let _ = conn.send(tx[..n].to_vec());
            } else if let Err(e) = down.send_to(&tx[..n], to) {
                tracing::debug!(error = %e, peer = %to, "send to edge failed");
            }
        }
        while let Some((to, n)) = broker.poll_transmit_upstream(now, &mut tx) {
            match (&up, &up_conn) {
                (Some(up), _) => {
                    if let Err(e) = up.send_to(&tx[..n], to) {
                        tracing::debug!(error = %e, peer = %to, "send upstream failed");
                    }
                }
                (None, Some(conn)) => {
                    let _ = conn.send(tx[..n].to_vec());
                }
                (None, None) => {}
            }
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            let s = broker.stats();
            let q = broker.queue_stats();
            if reported != Some((s, q)) {
                reported = Some((s, q));
                tracing::info!(
                    received = s.received,
                    acked = s.acked,
                    forwarded = s.forwarded,
                    queued = q.len,
                    queued_bytes = q.bytes,
                    queue_failures = s.queue_failures,
                    upstream_failures = s.upstream_failures,
                    dropped_refused = s.dropped_refused,
                    dropped_quota = q.dropped_quota,
                    redirected = s.redirected,
                    protected_relayed = s.protected_relayed,
                    rejected = s.rejected_malformed
                        + s.rejected_bad_batch
                        + s.rejected_content_format
                        + s.rejected_registration
                        + s.rejected_not_found
                        + s.rejected_method
                        + s.rejected_rate_limited
                        + s.rejected_rate_limited_edge,
                    edges = broker.registry().edges().count(),
                    registered = broker.registry().registered(now),
                    "broker counters"
                );
            }
        }
    }
}
