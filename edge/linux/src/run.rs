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
//!
//! Control conversation with the broker (`qos_edge_core::centre`): the edge registers
//! (RFC 9176) after start and on every broker change, refreshes at half of `uplink.lifetime_s`,
//! polls `GET /c` every `uplink.config_poll_s`, and removes its registration on SIGTERM/SIGINT
//! (best effort, at most [`DEREGISTER_WAIT`]). A central configuration replaces the TOML's
//! probes, rules and window without a restart: between two iterations of the main loop the
//! scheduler gets the new cadences (a probe kept with the same interval keeps its grid slot),
//! the threshold rules are replaced (their states start clear), and every open summary window
//! is flushed (closed early and queued) before the summariser starts over with the new window
//! length, so no summary mixes two configurations. Runs in flight finish and are recorded;
//! the recent raw results are kept. The applied configuration is written to
//! `storage.dir/config.cbor` and used at the next start before the centre answers; the
//! centre's etag goes out in the registration (`cfg=`) and as the ETag of each poll.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qos_edge_core::centre::{self, Centre, CentreConfig, CentreEvent, Identity, Limits};
use qos_edge_core::scheduler::Scheduler;
use qos_edge_core::storage::{next_boot, BootError, Slot, Storage};
use qos_edge_core::thresholds::Thresholds;
use qos_edge_core::{Downlink, Outbox, Received, Recent, Summariser, Uplink, UplinkConfig};
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::outcome::ProbeResult;

use qos_edge::active::{run_encoded, run_scheduled, Active};
use qos_edge::probe;

use crate::config::Config;
use crate::hostmetrics::Sampler;
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

/// Longest wait for the answer to the `DELETE` of the registration at a clean stop.
pub const DEREGISTER_WAIT: Duration = Duration::from_millis(1_000);
/// Largest central configuration (one CoAP message).
pub const MAX_CONFIG_BYTES: usize = 1024;

/// What this edge runs of a central configuration.
const LIMITS: Limits = Limits {
    max_probes: MAX_PROBES,
    max_rules: MAX_RULES,
    probe: centre::any_probe,
};

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
    /// A scheduled probe run finished (its slot time, the result).
    Done(u64, ProbeResult),
    /// An on-demand probe finished: the deferred request to answer, the result.
    OnDemand(qos_coap::RequestHandle<SocketAddr>, ProbeResult),
}

/// Run the probe of a `POST /p` (validated by the downlink already). HTTPS uses the system
/// trust store only (no `ca_file`: that belongs to a configured probe).
fn run_on_demand(spec_bytes: &[u8]) -> ProbeResult {
    run_encoded(
        spec_bytes,
        ProbeId(0),
        unix_ms(),
        &probe::Options::default(),
    )
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
    let uplink = EdgeUplink::new(
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
    // Block-wise batches (RFC 7959 Block1) for a backlog; not with OSCORE, whose requests
    // brokers relay unopened, one datagram each.
    let uplink = match u.blocks() {
        Some(b) if cfg.oscore.is_none() => uplink.with_blocks(b),
        _ => uplink,
    };
    let mut uplink = match &cfg.oscore {
        Some(o) => {
            let ctx = o.context().map_err(RunError::Uplink)?;
            tracing::info!(kid = %o.kid, "OSCORE with the super-manager");
            uplink.with_oscore(ctx, boot.epoch, qos_edge_core::oscore::COUNTER_BITS)
        }
        None => uplink,
    };
    // A central configuration from an earlier run replaces the TOML's probes and rules.
    let mut cfg_buf = vec![0u8; MAX_CONFIG_BYTES];
    let mut active = match centre::load_config(&mut storage, &mut cfg_buf, &LIMITS) {
        Some((c, _)) => {
            tracing::info!(
                etag = c.etag,
                probes = c.probes.len(),
                "central configuration from storage"
            );
            Active::central(&c).map_err(RunError::Uplink)?
        }
        None => Active::from_sections(cfg.uplink.window_s, &cfg.probes, &cfg.rules)
            .map_err(RunError::Uplink)?,
    };
    let mut centre: Centre<SocketAddr> = Centre::new(
        Identity {
            name: &cfg.edge.name,
            region: &cfg.edge.region,
            id: EdgeId(cfg.edge.id),
            fw: env!("CARGO_PKG_VERSION"),
        },
        CentreConfig {
            lifetime_s: u.lifetime_s,
            config_poll_ms: u64::from(u.config_poll_s) * 1000,
            ..CentreConfig::default()
        },
        active.etag,
    )
    .map_err(|e| RunError::Uplink(format!("registration: {e:?}")))?;
    let mut summariser: Summariser<MAX_PROBES, SKETCH_BUCKETS> = Summariser::new(active.window_s);
    let mut scheduler: Scheduler<MAX_PROBES> =
        Scheduler::new(cfg.edge.max_concurrent_probes, u64::from(cfg.edge.id));
    scheduler
        .set(active.cadences(cfg.edge.confirm_ms), unix_ms())
        .map_err(|_| RunError::Uplink(format!("more than {MAX_PROBES} probes")))?;
    let mut recent: Box<Recent<MAX_RECENT>> =
        Box::new(Recent::with_limit(usize::from(cfg.edge.recent_results)));
    let mut downlink = Downlink::new(MAX_ON_DEMAND);
    let mut thresholds: Thresholds<MAX_RULES> = Thresholds::new();
    // Validated with the configuration, so this only fails on capacity.
    thresholds
        .set(active.rules.iter().copied())
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
        brokers = ?u.brokers, local = %local, probes = scheduler.len(), rules = thresholds.len(),
        window_s = active.window_s, config = ?active.etag,
        metrics_s = host.as_ref().map(|h| h.every_s), "edge running"
    );

    let start = Instant::now();
    let mono = || start.elapsed().as_millis() as u64;
    let (tx_input, inputs) = mpsc::channel::<Input>();
    let mut tx = vec![0u8; 2048];
    std::thread::scope(|scope| {
        // The socket's receiving side, feeding the main loop.
        let to_main = tx_input.clone();
        let receiver = &receiver;
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
                let Some(p) = active.probe(id).cloned() else {
                    continue;
                };
                let to_main = tx_input.clone();
                scope.spawn(move || {
                    let result = run_scheduled(&p, at);
                    let _ = to_main.send(Input::Done(at, result));
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
            centre.poll(mono(), &mut uplink);
            flush(&socket, &mut uplink, &mut tx, mono());

            // Wait for a datagram or a result until the next deadline.
            let now = mono();
            let now_unix = unix_ms();
            let mut wait_ms: u64 = 250;
            for t in [uplink.poll_timeout(), centre.poll_timeout()]
                .into_iter()
                .flatten()
            {
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
                Ok(Input::Datagram(from, mut bytes)) => match {
                    let len = bytes.len();
                    let before = uplink.oscore().map(|o| o.stats());
                    let opened = uplink.open_datagram(&mut bytes, len);
                    if let (Some(b), Some(a)) = (before, uplink.oscore().map(|o| o.stats())) {
                        log_refused_order(&b, &a, from);
                    }
                    opened
                }
                .and_then(|n| uplink.handle(mono(), from, &bytes[..n]))
                {
                    Some(Received::Request(req)) => {
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
                    Some(Received::Control { exchange, message }) => {
                        let event =
                            centre.handle_answer(mono(), exchange, &message, &mut cfg_buf, &LIMITS);
                        match event {
                            Some(CentreEvent::Apply { config, bytes }) => {
                                let etag = config.etag;
                                let result = Active::central(&config).and_then(|next| {
                                    apply(
                                        next,
                                        &mut active,
                                        &mut scheduler,
                                        &mut thresholds,
                                        &mut summariser,
                                        &mut uplink,
                                        cfg.edge.confirm_ms,
                                    )
                                });
                                match result {
                                    Ok(()) => {
                                        dirty = true;
                                        if let Err(e) = storage.write(Slot::Config, bytes) {
                                            tracing::warn!(etag, error = %e, "central configuration applied but not saved");
                                        }
                                        tracing::info!(
                                            etag,
                                            probes = active.probes.len(),
                                            rules = active.rules.len(),
                                            window_s = active.window_s,
                                            "central configuration applied"
                                        );
                                        centre.applied(etag, Ok(()));
                                    }
                                    Err(reason) => {
                                        tracing::warn!(etag, reason = %reason, "central configuration rejected; the one in force stays");
                                        centre.applied(etag, Err(&reason));
                                    }
                                }
                            }
                            Some(CentreEvent::Rejected { etag, reason }) => tracing::warn!(
                                etag, reason = %reason.as_str(),
                                "central configuration rejected; the one in force stays"
                            ),
                            Some(CentreEvent::Registered) => tracing::info!(
                                broker = %uplink.broker(),
                                location = centre.lease().location().unwrap_or(""),
                                "registered"
                            ),
                            Some(CentreEvent::RegistrationFailed(code)) => tracing::warn!(
                                broker = %uplink.broker(), code = %format_args!("{}.{:02}", code.class(), code.detail()),
                                "registration failed; retrying"
                            ),
                            Some(CentreEvent::NoCentralConfig) => {
                                tracing::debug!("no central configuration; the local one stays")
                            }
                            Some(CentreEvent::PollFailed(code)) => tracing::debug!(
                                code = %format_args!("{}.{:02}", code.class(), code.detail()),
                                "configuration poll failed"
                            ),
                            Some(other) => tracing::debug!(event = ?other, "centre"),
                            None => {}
                        }
                    }
                    None => {}
                },
                Ok(Input::OnDemand(mut handle, result)) => {
                    tracing::debug!(probe = result.probe.0, ok = result.ok(), error = ?result.error, "on-demand probe done");
                    recent.push(result);
                    if let Err(e) =
                        downlink.answer_probe(uplink.endpoint(), mono(), &mut handle, &result)
                    {
                        tracing::warn!(error = ?e, "cannot answer an on-demand probe");
                    }
                }
                Ok(Input::Done(at, result)) => {
                    let done = unix_ms();
                    recent.push(result);
                    scheduler.finished(result.probe, result.ok(), done);
                    tracing::debug!(probe = result.probe.0, ok = result.ok(), error = ?result.error, "probe done");
                    // Local thresholds first: a crossing is acted on and queued at once.
                    for ev in thresholds.observe::<MAX_RULES>(&result, done) {
                        let (probe, metric, value) = (ev.probe.0, ev.metric, ev.value);
                        if ev.raised {
                            tracing::warn!(probe, metric = ?metric, value, "threshold raised");
                        } else {
                            tracing::info!(probe, metric = ?metric, value, "threshold cleared");
                        }
                        dirty |= uplink.push_event(&ev).is_ok();
                    }
                    // A run of a probe that a new configuration removed is not summarised.
                    if active.probes.iter().any(|p| p.id == result.probe.0) {
                        match summariser.record((at / 1000) as u32, &result) {
                            Ok(Some(closed)) => dirty |= uplink.push_summary(&closed).is_ok(),
                            Ok(None) => {}
                            Err(_) => tracing::warn!(
                                probe = result.probe.0,
                                "too many probes for the summariser"
                            ),
                        }
                    }
                }
                Err(_) => {}
            }
            uplink.poll(mono());
            centre.poll(mono(), &mut uplink);
            flush(&socket, &mut uplink, &mut tx, mono());
            let after = uplink.outbox().stats();
            if dirty || after.acked != before.acked || after.dropped != before.dropped {
                save_outbox(&mut storage, uplink.outbox());
                dirty = false;
            }
        }
        // Running probes end within their timeout; the scope joins them.
    });
    deregister(&receiver, &socket, &mut uplink, &mut centre, &mut tx, mono);
    save_outbox(&mut storage, uplink.outbox());
    let s = uplink.stats();
    let o = uplink.outbox().stats();
    tracing::info!(
        batches = s.batches,
        acked = s.acked_batches,
        failovers = s.failovers,
        queued = uplink.outbox().len(),
        in_flight = uplink.outbox().in_flight().map_or(0, |f| f.count),
        acked_records = o.acked,
        dropped_records = o.dropped,
        block_batches = s.block_batches,
        blocks = s.blocks,
        block_fallbacks = s.block_fallbacks,
        "edge stopped"
    );
    Ok(())
}

/// Replace the probes, rules and window in force with `next` (see the module's documentation
/// for what is kept). On error nothing changed.
fn apply(
    next: Active,
    active: &mut Active,
    scheduler: &mut Scheduler<MAX_PROBES>,
    thresholds: &mut Thresholds<MAX_RULES>,
    summariser: &mut Summariser<MAX_PROBES, SKETCH_BUCKETS>,
    uplink: &mut EdgeUplink,
    confirm_ms: u32,
) -> Result<(), String> {
    if next.probes.len() > MAX_PROBES || next.rules.len() > MAX_RULES {
        return Err("more probes or rules than this edge runs".into());
    }
    let mut rules: Thresholds<MAX_RULES> = Thresholds::new();
    rules
        .set(next.rules.iter().copied())
        .map_err(|e| format!("rules: {e:?}"))?;
    scheduler
        .set(next.cadences(confirm_ms), unix_ms())
        .map_err(|_| "too many probes".to_string())?;
    *thresholds = rules;
    // Flush every open window: no summary mixes two configurations.
    for p in &active.probes {
        if let Some(open) = summariser.remove(ProbeId(p.id)) {
            if uplink.push_summary(&open).is_err() {
                tracing::debug!(probe = p.id, "flushed window not queued");
            }
        }
    }
    *summariser = Summariser::new(next.window_s);
    *active = next;
    Ok(())
}

/// Clean stop: remove the registration, waiting at most [`DEREGISTER_WAIT`] for the answer.
fn deregister(
    receiver: &UdpSocket,
    socket: &UdpSocket,
    uplink: &mut EdgeUplink,
    centre: &mut Centre<SocketAddr>,
    tx: &mut [u8],
    mono: impl Fn() -> u64,
) {
    if !centre.lease().registered_with(uplink.broker()) {
        return;
    }
    let until = Instant::now() + DEREGISTER_WAIT;
    let mut buf = vec![0u8; 2048];
    let mut scratch = vec![0u8; MAX_CONFIG_BYTES];
    let _ = receiver.set_read_timeout(Some(Duration::from_millis(50)));
    // The DELETE waits for a batch in flight to the same broker (NSTART 1).
    let mut sent = centre.stop(mono(), uplink);
    flush(socket, uplink, tx, mono());
    while (!sent || centre.stopping()) && Instant::now() < until {
        if let Ok((n, from)) = receiver.recv_from(&mut buf) {
            let n = uplink.open_datagram(&mut buf, n).unwrap_or(0);
            if let Some(Received::Control { exchange, message }) =
                uplink.handle(mono(), from, &buf[..n])
            {
                let _ = centre.handle_answer(mono(), exchange, &message, &mut scratch, &LIMITS);
            }
        }
        uplink.poll(mono());
        if !sent {
            sent = centre.stop(mono(), uplink);
        }
        flush(socket, uplink, tx, mono());
    }
    if !sent || centre.stopping() {
        tracing::debug!("no answer to the deregistration");
    } else {
        tracing::info!("registration removed");
    }
}

fn flush(socket: &UdpSocket, uplink: &mut EdgeUplink, tx: &mut [u8], now: u64) {
    while let Some((to, n)) = uplink.poll_transmit(now, tx) {
        if let Err(e) = socket.send_to(&tx[..n], to) {
            tracing::debug!(error = %e, peer = %to, "send failed");
        }
    }
}

/// Logs an order of the centre the OSCORE hook refused (counted in its stats).
fn log_refused_order(
    before: &qos_edge_core::oscore::OscoreStats,
    after: &qos_edge_core::oscore::OscoreStats,
    from: SocketAddr,
) {
    let why = if after.orders_forged > before.orders_forged {
        "does not verify"
    } else if after.orders_replayed > before.orders_replayed {
        "replayed"
    } else if after.orders_unprotected > before.orders_unprotected {
        "not protected"
    } else {
        return;
    };
    tracing::warn!(
        peer = %from, why,
        forged = after.orders_forged, replayed = after.orders_replayed,
        unprotected = after.orders_unprotected,
        "OSCORE order refused"
    );
}
