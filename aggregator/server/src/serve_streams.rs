//! The CoAP ingest with stream listeners: `[coap_tls]` (brokers with client certificates) and
//! `[coap_tcp]` (plain, loopback only) beside the UDP socket of `[coap]`. One thread owns the
//! [`CoapServer`] (and so the store's writer) as without them; a UDP reader thread and the
//! connection threads of [`crate::stream_io`] hand it datagrams, frames and connection events
//! over a channel, and it writes answers to the connection of their address, or to the UDP
//! socket. Without stream listeners the plain UDP driver [`start_ingest`] runs.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{start_ingest_with, Listener, ServeError, SHUTDOWN_POLL};
use crate::centre::Centre;
use crate::coap::{coap_config, CoapServer, MAX_MESSAGE};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::stats::IngestStats;
use crate::store::Store;
use crate::stream_io::{self, Accept, Report, StreamEvent};

enum Input {
    Datagram(SocketAddr, Vec<u8>),
    Stream(StreamEvent),
}

/// Starts the ingest: [`start_ingest`] alone, or with the stream listeners when configured.
/// The ingest's listener comes first (it carries the UDP address), then one per stream
/// listener (carrying its TCP address).
pub(super) fn start(
    config: &Config,
    store: Box<dyn Store>,
    stats: Arc<IngestStats>,
    centre: Arc<Centre>,
    shutdown: Arc<AtomicBool>,
) -> Result<Vec<Listener>, ServeError> {
    let oscore = match &config.oscore {
        Some(o) => {
            let gate = crate::oscore::OscoreGate::load(o, &config.store.data_dir)
                .map_err(|e| ServeError::Oscore(e.to_string()))?;
            tracing::info!(edges = gate.len(), "OSCORE contexts loaded");
            Some(gate)
        }
        None => None,
    };
    if config.coap_tls.is_none() && config.coap_tcp.is_none() {
        return Ok(vec![start_ingest_with(
            &config.coap,
            store,
            stats,
            centre,
            shutdown,
            oscore,
        )?]);
    }
    let accepts: Vec<(&'static str, SocketAddr, Accept)> = config
        .coap_tls
        .iter()
        .map(|t| Ok(("coap-tls", t.listen, t.accept()?)))
        .chain(
            config
                .coap_tcp
                .iter()
                .map(|t| Ok(("coap-tcp", t.listen, Accept::Plain))),
        )
        .collect::<Result<_, crate::tls::TlsError>>()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let coap = &config.coap;
    let bind_err = |source| ServeError::Bind {
        what: "CoAP",
        addr: coap.listen,
        source,
    };
    let socket = UdpSocket::bind(coap.listen).map_err(bind_err)?;
    let local = socket.local_addr().map_err(bind_err)?;
    let reader_socket = socket.try_clone().map_err(bind_err)?;
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let server = CoapServer::new(
        coap_config(&coap.reliability),
        Ingest::new(store, stats),
        seed,
    )
    .map_err(|e| ServeError::Coap(e.to_string()))?
    .with_centre(centre);
    let server = match oscore {
        Some(gate) => server.with_oscore(gate),
        None => server,
    };
    tracing::info!(listen = %local, "CoAP ingest listening");

    let (tx, rx) = mpsc::channel();
    let mut listeners = Vec::new();
    let spawn_err = |name| move |source| ServeError::Spawn { name, source };
    let reader = {
        let (tx, flag) = (tx.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("coap-rx".into())
            .spawn(move || udp_reader(reader_socket, tx, &flag))
            .map_err(spawn_err("coap-rx"))?
    };
    let refused = Arc::new(AtomicU64::new(0));
    let mut stream_listeners = Vec::new();
    for (name, addr, accept) in accepts {
        if matches!(accept, Accept::Plain) {
            crate::stream_config::log_plaintext_listener("coap_tcp", addr);
        }
        let wrap: Report<Input> = Arc::new(|ev| Some(Input::Stream(ev)));
        let (bound, thread) = stream_io::listen(
            name,
            addr,
            accept,
            MAX_MESSAGE,
            tx.clone(),
            wrap,
            refused.clone(),
            shutdown.clone(),
        )
        .map_err(|source| ServeError::Bind {
            what: name,
            addr,
            source,
        })?;
        tracing::info!(listen = %bound, listener = name, "CoAP stream listener accepting brokers");
        stream_listeners.push(Listener {
            name,
            thread: Some(thread),
            local: Some(bound),
        });
    }
    drop(tx);
    let flag = shutdown.clone();
    let main = std::thread::Builder::new()
        .name("coap-ingest".into())
        .spawn(move || ingest_loop(socket, server, rx, &flag))
        .map_err(spawn_err("coap-ingest"))?;
    listeners.push(Listener {
        name: "coap-ingest",
        thread: Some(main),
        local: Some(local),
    });
    listeners.push(Listener::thread("coap-rx", reader));
    listeners.extend(stream_listeners);
    Ok(listeners)
}

fn udp_reader(socket: UdpSocket, tx: Sender<Input>, shutdown: &AtomicBool) {
    if let Err(e) = socket.set_read_timeout(Some(SHUTDOWN_POLL)) {
        tracing::error!(error = %e, "CoAP socket: cannot set timeout");
        return;
    }
    // One byte more than the largest message, to recognise oversized datagrams.
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    while !shutdown.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if tx.send(Input::Datagram(from, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => tracing::debug!(error = %e, "CoAP receive error"),
        }
    }
}

fn ingest_loop(
    socket: UdpSocket,
    mut server: CoapServer<SocketAddr>,
    rx: Receiver<Input>,
    shutdown: &AtomicBool,
) {
    let start = Instant::now();
    let mono = || start.elapsed().as_millis() as u64;
    let unix_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let mut conns: HashMap<SocketAddr, Sender<Vec<u8>>> = HashMap::new();
    let mut tx = vec![0u8; MAX_MESSAGE];
    while !shutdown.load(Ordering::Relaxed) {
        let now = mono();
        let wait = server
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now)))
            .unwrap_or(SHUTDOWN_POLL)
            .clamp(Duration::from_millis(1), SHUTDOWN_POLL);
        let mut next = match rx.recv_timeout(wait) {
            Ok(i) => Some(i),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        while let Some(input) = next.take() {
            let now = mono();
            match input {
                Input::Datagram(from, bytes) if !conns.contains_key(&from) => {
                    server.handle_datagram(now, unix_ms(), from, &bytes)
                }
                Input::Datagram(from, _) => {
                    tracing::debug!(peer = %from, "datagram from a stream peer's address ignored")
                }
                Input::Stream(StreamEvent::Connected { peer, tx }) => {
                    if server.connected(now, peer) {
                        tracing::info!(%peer, "broker connected over a stream");
                        conns.insert(peer, tx);
                    } else {
                        tracing::warn!(%peer, "too many stream connections; closed");
                    }
                }
                Input::Stream(StreamEvent::Frame { peer, frame }) => {
                    server.handle_datagram(now, unix_ms(), peer, &frame)
                }
                Input::Stream(StreamEvent::Closed { peer, .. }) => {
                    if conns.remove(&peer).is_some() {
                        server.disconnected(now, peer);
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        let now = mono();
        server.handle_timeout(now);
        while let Some(peer) = server.poll_disconnect() {
            conns.remove(&peer);
            server.disconnected(now, peer);
        }
        while let Some((to, n)) = server.poll_transmit(now, &mut tx) {
            if let Some(conn) = conns.get(&to) {
                let _ = conn.send(tx[..n].to_vec());
            } else if let Err(e) = socket.send_to(&tx[..n], to) {
                tracing::debug!(error = %e, peer = %to, "CoAP send failed");
            }
        }
    }
}
