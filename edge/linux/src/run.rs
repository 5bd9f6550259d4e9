//! `qos-edge run`: the thin std driver around the edge core. The main thread owns the core's
//! state machines (scheduler, thresholds, summariser, uplink); probes run on short-lived
//! threads (as many at once as the scheduler allows) and a receiver thread reads the UDP
//! socket; both report to the main loop over one channel. All protocol decisions are in
//! `qos-edge-core`; this file only owns the clock, the sockets, the threads and the files.
//!
//! The uplink socket also serves the centre's requests (`qos_edge_core::downlink`):
//! `GET /.well-known/core`, `GET /r[?p=ID]` (the last `edge.recent_results` raw results) and
//! `POST /p` (run a probe now). An on-demand probe runs on its own scoped thread like a
//! scheduled one, but outside the scheduler's concurrency limit: it is bounded separately
//! ([`MAX_ON_DEMAND`] at once, each at most `MAX_ON_DEMAND_TIMEOUT_MS`), so a request from the
//! centre never delays the schedule, and the schedule never starves a request. Its result goes
//! to the recent ring and back to the requester, but not into the summaries nor the threshold
//! rules: those describe the schedule (runs on a fixed grid at the configured interval), and
//! an extra run asked for by an operator would bias both the window's statistics and the
//! K-of-N rules.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qos_edge_core::scheduler::{Cadence, Scheduler};
use qos_edge_core::storage::{next_boot, BootError, Slot, Storage};
use qos_edge_core::thresholds::Thresholds;
use qos_edge_core::{Downlink, Outbox, Recent, Summariser, Uplink, UplinkConfig};
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use qos_wire::probe::ProbeSpec;

use crate::config::{Config, DriverOptions};
use crate::hostmetrics::Sampler;
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
/// Threshold rules an edge evaluates at most.
pub const MAX_RULES: usize = 32;
/// Brokers an edge knows at most.
pub const MAX_BROKERS: usize = 4;
/// Raw results the recent ring can hold (`edge.recent_results` is at most this).
pub const MAX_RECENT: usize = 1024;
/// On-demand probes running at once at most; more get 5.03 (the CoAP endpoint has 4
/// exchange slots, one for the batch in flight).
pub const MAX_ON_DEMAND: u8 = 2;

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

/// Host metrics sampled on a grid of Unix time (like the summary windows).
struct HostMetrics {
    sampler: Sampler,
    every_s: u64,
    /// The next grid point, Unix s.
    next_s: u64,
}

impl HostMetrics {
    /// Sampling every `every_s` s from now on; a first reading now is the baseline of the first
    /// sample's counters.
    fn start(storage: &std::path::Path, every_s: u16, now_ms: u64) -> Self {
        let every_s = u64::from(every_s.max(1));
        let mut sampler = Sampler::new(storage);
        let _ = sampler.sample(now_ms);
        HostMetrics {
            sampler,
            every_s,
            next_s: (now_ms / 1000 / every_s + 1) * every_s,
        }
    }

    /// When the next sample is due, Unix ms.
    fn deadline_ms(&self) -> u64 {
        self.next_s * 1000
    }

    /// The sample, if one is due at `now_ms`.
    fn poll(&mut self, now_ms: u64) -> Option<qos_wire::metrics::MetricsSample> {
        if now_ms < self.deadline_ms() {
            return None;
        }
        self.next_s = (now_ms / 1000 / self.every_s + 1) * self.every_s;
        Some(self.sampler.sample(now_ms))
    }
}

/// What the main loop waits for.
enum Input {
    /// A datagram from a broker.
    Datagram(SocketAddr, Vec<u8>),
    /// A probe run finished (its index in the configuration, its slot time, the result).
    Done(usize, u64, ProbeResult),
    /// An on-demand probe finished: the deferred request to answer, the result.
    OnDemand(qos_coap::RequestHandle<SocketAddr>, ProbeResult),
}

/// Run the probe of a `POST /p` (validated by the downlink already). HTTPS uses the system
/// trust store only (no `ca_file`: that belongs to a configured probe).
fn run_on_demand(spec_bytes: &[u8]) -> ProbeResult {
    let at = unix_ms();
    match ProbeSpec::decode(&mut minicbor::Decoder::new(spec_bytes)) {
        Ok(spec) => probe::run_with(&spec, at, &probe::Options::default()).result,
        Err(_) => ProbeResult {
            probe: ProbeId(0),
            at_ms: at,
            phases: PhaseTimings::new(),
            error: Some(ErrorClass::Other),
            error_after_us: Some(0),
            detail: 0,
            redirects: 0,
        },
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

    let any: SocketAddr = if cfg.uplink.brokers[0].is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("literal");
    let bind = cfg.uplink.bind.unwrap_or(any);
    let socket = UdpSocket::bind(bind).map_err(RunError::Socket)?;
    let local = socket.local_addr().map_err(RunError::Socket)?;
    let receiver = socket.try_clone().map_err(RunError::Socket)?;
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(RunError::Socket)?;
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
            failover_after_ms: u.failover_after_ms,
            return_after_ms: u.return_after_ms,
            ..UplinkConfig::default()
        },
        outbox,
        seed,
    )
    .map_err(|e| RunError::Uplink(format!("{e:?}")))?;
    let mut summariser: Summariser<MAX_PROBES, SKETCH_BUCKETS> = Summariser::new(u.window_s);
    let mut scheduler: Scheduler<MAX_PROBES> =
        Scheduler::new(cfg.edge.max_concurrent_probes, u64::from(cfg.edge.id));
    let cadences = cfg.probes.iter().map(|p| Cadence {
        id: ProbeId(p.id),
        interval_ms: p.interval_ms,
        confirm_ms: cfg.edge.confirm_ms,
    });
    scheduler
        .set(cadences, unix_ms())
        .map_err(|_| RunError::Uplink(format!("more than {MAX_PROBES} probes")))?;
    let mut recent: Box<Recent<MAX_RECENT>> =
        Box::new(Recent::with_limit(usize::from(cfg.edge.recent_results)));
    let mut downlink = Downlink::new(MAX_ON_DEMAND);
    let mut thresholds: Thresholds<MAX_RULES> = Thresholds::new();
    // Validated with the configuration, so this only fails on capacity.
    thresholds
        .set(
            cfg.rules
                .iter()
                .filter_map(|r| Some((ProbeId(r.probe), r.rule().ok()?))),
        )
        .map_err(|e| RunError::Uplink(format!("rules: {e:?}")))?;
    let mut host = cfg.metrics.enabled.then(|| {
        HostMetrics::start(
            &cfg.storage.dir,
            cfg.metrics.interval_s(u.window_s),
            unix_ms(),
        )
    });
    tracing::info!(
        edge = cfg.edge.id, name = %cfg.edge.name, region = %cfg.edge.region, epoch = boot.epoch,
        brokers = ?u.brokers, local = %local, probes = scheduler.len(), rules = thresholds.len(), window_s = u.window_s,
        metrics_s = host.as_ref().map(|h| h.every_s), "edge running"
    );

    let start = Instant::now();
    let mono = || start.elapsed().as_millis() as u64;
    let (tx_input, inputs) = mpsc::channel::<Input>();
    let mut tx = vec![0u8; 2048];
    std::thread::scope(|scope| {
        // The socket's receiving side, feeding the main loop.
        let to_main = tx_input.clone();
        scope.spawn(move || {
            let mut buf = vec![0u8; 2048];
            while !shutdown.load(Ordering::Relaxed) {
                match receiver.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        if to_main
                            .send(Input::Datagram(from, buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => tracing::debug!(error = %e, "receive error"),
                }
            }
        });

        let mut dirty = false;
        while !shutdown.load(Ordering::Relaxed) {
            // Start the probes that are due, each on its own thread (bounded by the scheduler).
            while let Some((id, at)) = scheduler.next_due(unix_ms()) {
                let Some(index) = cfg.probes.iter().position(|p| p.id == id.0) else {
                    continue;
                };
                let to_main = tx_input.clone();
                scope.spawn(move || {
                    let section = &cfg.probes[index];
                    let steps = section.steps();
                    let spec = section.spec(&steps);
                    let result = probe::run_with(&spec, at, &section.options()).result;
                    let _ = to_main.send(Input::Done(index, at, result));
                });
            }
            while let Some(closed) = summariser.poll((unix_ms() / 1000) as u32) {
                dirty |= uplink.push_summary(&closed).is_ok();
            }
            if let Some(m) = host.as_mut().and_then(|h| h.poll(unix_ms())) {
                // Nothing readable at all (not Linux, no statvfs): nothing to send.
                if !m.is_empty() {
                    match uplink.push_metrics(&m) {
                        Ok(()) => dirty = true,
                        Err(e) => tracing::debug!(error = ?e, "host metrics not queued"),
                    }
                }
            }
            let before = uplink.outbox().stats();
            uplink.poll(mono());
            flush(&socket, &mut uplink, &mut tx, mono());

            // Wait for a datagram or a result until the next deadline.
            let now = mono();
            let now_unix = unix_ms();
            let mut wait_ms: u64 = 250;
            if let Some(t) = uplink.poll_timeout() {
                wait_ms = wait_ms.min(t.saturating_sub(now));
            }
            if let Some(next) = scheduler.next_deadline() {
                wait_ms = wait_ms.min(next.saturating_sub(now_unix));
            }
            if let Some(end) = summariser.next_deadline() {
                wait_ms = wait_ms.min((u64::from(end) * 1000).saturating_sub(now_unix));
            }
            if let Some(h) = &host {
                wait_ms = wait_ms.min(h.deadline_ms().saturating_sub(now_unix));
            }
            match inputs.recv_timeout(Duration::from_millis(wait_ms.max(1))) {
                Ok(Input::Datagram(from, bytes)) => {
                    if let Some(req) = uplink.handle_datagram(mono(), from, &bytes) {
                        // Requests from the centre: answered at once, except an on-demand
                        // probe, which is acknowledged now and answered when it is done.
                        if let Some(order) =
                            downlink.serve(uplink.endpoint(), mono(), req, &*recent)
                        {
                            tracing::info!(
                                probe = order.spec.id.0, kind = order.spec.kind.name(),
                                peer = %from, "on-demand probe"
                            );
                            let spec = order.spec_bytes.to_vec();
                            let handle = order.handle;
                            let to_main = tx_input.clone();
                            scope.spawn(move || {
                                let result = run_on_demand(&spec);
                                let _ = to_main.send(Input::OnDemand(handle, result));
                            });
                        }
                    }
                }
                Ok(Input::OnDemand(mut handle, result)) => {
                    tracing::debug!(probe = result.probe.0, ok = result.ok(), error = ?result.error, "on-demand probe done");
                    recent.push(result);
                    if let Err(e) =
                        downlink.answer_probe(uplink.endpoint(), mono(), &mut handle, &result)
                    {
                        tracing::warn!(error = ?e, "cannot answer an on-demand probe");
                    }
                }
                Ok(Input::Done(index, at, result)) => {
                    let done = unix_ms();
                    recent.push(result);
                    scheduler.finished(result.probe, result.ok(), done);
                    tracing::debug!(probe = result.probe.0, ok = result.ok(), error = ?result.error, "probe done");
                    // Local thresholds first: a crossing is acted on and queued at once.
                    for ev in thresholds.observe::<MAX_RULES>(&result, done) {
                        let rule = &cfg.rules[usize::from(ev.rule)];
                        let (probe, metric, value) = (ev.probe.0, &rule.metric, ev.value);
                        if ev.raised {
                            tracing::warn!(probe, metric = %metric, value, "threshold raised");
                        } else {
                            tracing::info!(probe, metric = %metric, value, "threshold cleared");
                        }
                        dirty |= uplink.push_event(&ev).is_ok();
                    }
                    match summariser.record((at / 1000) as u32, &result) {
                        Ok(Some(closed)) => dirty |= uplink.push_summary(&closed).is_ok(),
                        Ok(None) => {}
                        Err(_) => tracing::warn!(
                            probe = cfg.probes[index].id,
                            "too many probes for the summariser"
                        ),
                    }
                }
                Err(_) => {}
            }
            uplink.poll(mono());
            flush(&socket, &mut uplink, &mut tx, mono());
            let after = uplink.outbox().stats();
            if dirty || after.acked != before.acked || after.dropped != before.dropped {
                save_outbox(&mut storage, uplink.outbox());
                dirty = false;
            }
        }
        // Running probes end within their timeout; the scope joins them.
    });
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
