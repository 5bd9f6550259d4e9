//! `qos-edge run`: the thin std driver around the edge core. One thread: it runs the probes
//! that are due, feeds results to the summariser, hands closed windows to the uplink, and moves
//! datagrams between the uplink and a UDP socket. All protocol decisions are in
//! `qos-edge-core`; this file only owns the clock, the sockets and the files.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qos_edge_core::storage::{next_boot, BootError, Slot, Storage};
use qos_edge_core::{Outbox, Summariser, Uplink, UplinkConfig};
use qos_wire::ids::{EdgeId, ProbeId, Seq};

use crate::config::Config;
use crate::probe;
use crate::storage::FileStorage;

/// Records the outbox holds while no broker answers (the oldest summary is dropped beyond).
pub const OUTBOX_RECORDS: usize = 256;
/// Largest encoded record.
pub const RECORD_BYTES: usize = 512;
/// Probes one edge runs at most.
pub const MAX_PROBES: usize = 32;
/// Sketch buckets of a summary made on the edge.
pub const SKETCH_BUCKETS: usize = 128;
/// Brokers an edge knows at most.
pub const MAX_BROKERS: usize = 4;

type EdgeOutbox = Outbox<OUTBOX_RECORDS, RECORD_BYTES>;
type EdgeUplink = Uplink<SocketAddr, MAX_BROKERS, OUTBOX_RECORDS, RECORD_BYTES>;

/// Why the edge could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The storage directory is unusable.
    #[error("storage {path}: {source}")]
    Storage {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The boot epoch could not be advanced.
    #[error("storage {path}: boot state unusable ({detail}); remove the file only if this edge's numbering may restart")]
    Boot {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The UDP socket could not be opened.
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    /// The uplink settings are unusable.
    #[error("uplink: {0}")]
    Uplink(String),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Scheduled {
    id: ProbeId,
    /// Index of the probe's section in the configuration.
    index: usize,
    interval_ms: u64,
    /// Next start, Unix ms, on the probe's grid: starts never drift.
    next_ms: u64,
}

fn schedule(cfg: &Config, now_ms: u64) -> Vec<Scheduled> {
    cfg.probes
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let interval = u64::from(p.interval_ms);
            Scheduled {
                id: ProbeId(p.id),
                index,
                interval_ms: interval,
                next_ms: now_ms - now_ms % interval + interval,
            }
        })
        .collect()
}

fn restore_outbox(storage: &mut FileStorage, epoch: u32) -> EdgeOutbox {
    let mut buf = vec![0u8; OUTBOX_RECORDS * (RECORD_BYTES + 16) + 64];
    let restored = match storage.read(Slot::Outbox, &mut buf) {
        Ok(Some(bytes)) => match EdgeOutbox::load(bytes) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(error = %e, "saved outbox unreadable; starting empty");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "saved outbox unreadable; starting empty");
            None
        }
    };
    let mut outbox = restored.unwrap_or_else(|| EdgeOutbox::new(Seq::first_of_epoch(epoch)));
    if !outbox.is_empty() {
        tracing::info!(records = outbox.len(), "outbox restored");
    }
    outbox.start_epoch(epoch);
    outbox
}

fn save_outbox(storage: &mut FileStorage, outbox: &EdgeOutbox) {
    let mut buf = vec![0u8; OUTBOX_RECORDS * (RECORD_BYTES + 16) + 64];
    match outbox.save(&mut buf) {
        Ok(bytes) => {
            if let Err(e) = storage.write(Slot::Outbox, bytes) {
                tracing::warn!(error = %e, "cannot save the outbox");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode the outbox"),
    }
}

/// Run until `shutdown` is set.
pub fn run(cfg: &Config, shutdown: &AtomicBool) -> Result<(), RunError> {
    let dir = cfg.storage.dir.display().to_string();
    let mut storage = FileStorage::open(&cfg.storage.dir).map_err(|source| RunError::Storage {
        path: dir.clone(),
        source,
    })?;
    let boot = next_boot(&mut storage).map_err(|e| RunError::Boot {
        path: storage.path(Slot::Boot).display().to_string(),
        detail: match e {
            BootError::Storage(e) => e.to_string(),
            BootError::Corrupt => "corrupt".into(),
            _ => "epoch counter exhausted".into(),
        },
    })?;
    let outbox = restore_outbox(&mut storage, boot.epoch);

    let bind: SocketAddr = if cfg.uplink.brokers[0].is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("literal");
    let socket = UdpSocket::bind(bind).map_err(RunError::Socket)?;
    let u = &cfg.uplink;
    let coap = qos_coap::Config::with_reliability(
        u64::from(u.ack_timeout_ms),
        u.ack_random_factor,
        u.max_retransmit,
    );
    let seed = unix_ms() ^ (u64::from(std::process::id()) << 32) ^ u64::from(cfg.edge.id);
    let mut uplink = EdgeUplink::new(
        EdgeId(cfg.edge.id),
        &u.brokers,
        UplinkConfig {
            coap,
            ..UplinkConfig::default()
        },
        outbox,
        seed,
    )
    .map_err(|e| RunError::Uplink(format!("{e:?}")))?;
    let mut summariser: Summariser<MAX_PROBES, SKETCH_BUCKETS> = Summariser::new(u.window_s);
    let mut probes = schedule(cfg, unix_ms());
    tracing::info!(
        edge = cfg.edge.id, name = %cfg.edge.name, region = %cfg.edge.region, epoch = boot.epoch,
        brokers = ?u.brokers, probes = probes.len(), window_s = u.window_s, "edge running"
    );

    let start = Instant::now();
    let mono = || start.elapsed().as_millis() as u64;
    let mut rx = vec![0u8; 2048];
    let mut tx = vec![0u8; 2048];
    let mut dirty = false;
    while !shutdown.load(Ordering::Relaxed) {
        // Probes that are due, in order.
        let now_unix = unix_ms();
        for p in probes.iter_mut().filter(|p| p.next_ms <= now_unix) {
            let at = p.next_ms;
            let section = &cfg.probes[p.index];
            let steps = section.steps();
            let spec = section.spec(&steps);
            let result = probe::run_with(&spec, at, &section.options()).result;
            tracing::debug!(probe = p.id.0, ok = result.ok(), error = ?result.error, "probe done");
            // Skip missed slots (a slow run) rather than bursting: the grid stays fixed.
            let now_unix = unix_ms();
            p.next_ms += p.interval_ms * (1 + now_unix.saturating_sub(p.next_ms) / p.interval_ms);
            match summariser.record((at / 1000) as u32, &result) {
                Ok(Some(closed)) => dirty |= uplink.push_summary(&closed).is_ok(),
                Ok(None) => {}
                Err(_) => tracing::warn!(probe = p.id.0, "too many probes for the summariser"),
            }
        }
        while let Some(closed) = summariser.poll((unix_ms() / 1000) as u32) {
            dirty |= uplink.push_summary(&closed).is_ok();
        }

        let before = uplink.outbox().stats();
        uplink.poll(mono());
        flush(&socket, &mut uplink, &mut tx, mono());

        // Wait for a datagram until the next deadline.
        let now = mono();
        let now_unix = unix_ms();
        let mut wait_ms: u64 = 250;
        if let Some(t) = uplink.poll_timeout() {
            wait_ms = wait_ms.min(t.saturating_sub(now));
        }
        if let Some(next) = probes.iter().map(|p| p.next_ms).min() {
            wait_ms = wait_ms.min(next.saturating_sub(now_unix));
        }
        if let Some(end) = summariser.next_deadline() {
            wait_ms = wait_ms.min((u64::from(end) * 1000).saturating_sub(now_unix));
        }
        let _ = socket.set_read_timeout(Some(Duration::from_millis(wait_ms.max(1))));
        match socket.recv_from(&mut rx) {
            Ok((n, from)) => {
                if let Some(req) = uplink.handle_datagram(mono(), from, &rx[..n]) {
                    // Requests from the centre (configuration, on-demand probes) are not
                    // served by this build: answer 4.04 so the caller knows at once.
                    let handle = req.handle;
                    let _ = uplink.endpoint().respond(
                        mono(),
                        &handle,
                        qos_coap::Code::NOT_FOUND,
                        |_| Ok(()),
                    );
                }
                uplink.poll(mono());
                flush(&socket, &mut uplink, &mut tx, mono());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => tracing::debug!(error = %e, "receive error"),
        }
        let after = uplink.outbox().stats();
        if dirty || after.acked != before.acked || after.dropped != before.dropped {
            save_outbox(&mut storage, uplink.outbox());
            dirty = false;
        }
    }
    save_outbox(&mut storage, uplink.outbox());
    let s = uplink.stats();
    tracing::info!(
        batches = s.batches,
        acked = s.acked_batches,
        failovers = s.failovers,
        queued = uplink.outbox().len(),
        "edge stopped"
    );
    Ok(())
}

fn flush(socket: &UdpSocket, uplink: &mut EdgeUplink, tx: &mut [u8], now: u64) {
    while let Some((to, n)) = uplink.poll_transmit(now, tx) {
        if let Err(e) = socket.send_to(&tx[..n], to) {
            tracing::debug!(error = %e, peer = %to, "send failed");
        }
    }
}
