//! `qos-aggregator broker`: the UDP driver around the sans-IO [`qos_broker::Broker`].
//!
//! Two sockets: the downstream one bound to `broker.listen` (edges), the upstream one bound to
//! an ephemeral port of the upstream's address family. A reader thread per socket hands
//! datagrams over a channel to the broker thread, which waits on that channel until the broker's
//! next deadline (at most 100 ms, so it notices the shutdown flag), and sends what the broker
//! has to send. The queue is `broker.data_dir/queue.sqlite` ([`qos_broker::SqliteQueue`]);
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

use qos_broker::{Broker, BrokerConfig, QueueError, SqliteQueue, MAX_MESSAGE};

use crate::broker_config::BrokerSection;
use crate::coap::coap_config;

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
}

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    listen: SocketAddr,
}

impl BrokerHandle {
    /// The address edges send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
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

/// Opens the queue, binds both sockets and starts the threads; returns once listening.
pub fn run_broker(
    config: &BrokerSection,
    shutdown: Arc<AtomicBool>,
) -> Result<BrokerHandle, BrokerRunError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerRunError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let queue = SqliteQueue::open(&config.queue_path(), config.max_queue_bytes)?;
    let restored = qos_broker::Queue::stats(&queue);
    let down = bind("downstream", config.listen)?;
    let listen = down.local_addr().map_err(|source| BrokerRunError::Bind {
        what: "downstream",
        addr: config.listen,
        source,
    })?;
    let any: SocketAddr = match config.upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let up = bind("upstream", any)?;
    let coap = coap_config(&config.reliability);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let broker = Broker::new(
        BrokerConfig {
            downstream: coap,
            upstream: coap,
            hold_ms: config.hold_ms,
            relay_timeout_ms: config.relay_timeout_ms,
            report_interval_ms: config.report_interval_ms,
            ..BrokerConfig::default()
        },
        config.upstream,
        Box::new(queue),
        seed,
    )
    .map_err(|e| BrokerRunError::Coap(e.to_string()))?
    .with_rate_limit(config.rate_limit.limit(), crate::config::rate_key)
    .with_peers(
        config.peers.iter().map(ToString::to_string).collect(),
        config.max_edges,
    );
    // SIGUSR1: drain (turn every edge away to the peers) until restart.
    let drain = Arc::new(AtomicBool::new(false));
    qos_host::signal::on_usr1(drain.clone());
    tracing::info!(
        listen = %listen,
        upstream = %config.upstream,
        queue = %config.queue_path().display(),
        queued = restored.len,
        queued_bytes = restored.bytes,
        "broker listening"
    );

    let (tx, rx) = mpsc::channel();
    let clone = |s: &UdpSocket, what| {
        s.try_clone().map_err(|source| BrokerRunError::Bind {
            what,
            addr: listen,
            source,
        })
    };
    let mut threads = Vec::new();
    for (name, side, socket) in [
        ("broker-rx-down", Side::Down, clone(&down, "downstream")?),
        ("broker-rx-up", Side::Up, clone(&up, "upstream")?),
    ] {
        let tx: Sender<Datagram> = tx.clone();
        let flag = shutdown.clone();
        threads.push(
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || reader(socket, side, tx, &flag))
                .map_err(|source| BrokerRunError::Spawn { name, source })?,
        );
    }
    drop(tx);
    let flag = shutdown.clone();
    threads.push(
        std::thread::Builder::new()
            .name("broker".into())
            .spawn(move || broker_loop(broker, down, up, rx, &flag, &drain))
            .map_err(|source| BrokerRunError::Spawn {
                name: "broker",
                source,
            })?,
    );
    Ok(BrokerHandle {
        shutdown,
        threads,
        listen,
    })
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Down,
    Up,
}

type Datagram = (Side, SocketAddr, Vec<u8>);

fn reader(socket: UdpSocket, side: Side, tx: Sender<Datagram>, shutdown: &AtomicBool) {
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
                if tx.send((side, from, buf[..n].to_vec())).is_err() {
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
    up: UdpSocket,
    rx: Receiver<Datagram>,
    shutdown: &AtomicBool,
    drain: &AtomicBool,
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
        while let Some((side, from, bytes)) = next.take() {
            let now = mono();
            match side {
                Side::Down => broker.handle_downstream(now, unix_ms(), from, &bytes),
                Side::Up => broker.handle_upstream(now, from, &bytes),
            }
            next = rx.try_recv().ok();
        }
        let now = mono();
        broker.poll(now);
        while let Some((to, n)) = broker.poll_transmit_downstream(now, &mut tx) {
            if let Err(e) = down.send_to(&tx[..n], to) {
                tracing::debug!(error = %e, peer = %to, "send to edge failed");
            }
        }
        while let Some((to, n)) = broker.poll_transmit_upstream(now, &mut tx) {
            if let Err(e) = up.send_to(&tx[..n], to) {
                tracing::debug!(error = %e, peer = %to, "send upstream failed");
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
                    rejected = s.rejected_malformed
                        + s.rejected_bad_batch
                        + s.rejected_content_format
                        + s.rejected_registration
                        + s.rejected_not_found
                        + s.rejected_method
                        + s.rejected_rate_limited,
                    edges = broker.registry().edges().count(),
                    registered = broker.registry().registered(now),
                    "broker counters"
                );
            }
        }
    }
}
