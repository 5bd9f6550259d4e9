//! The super-manager's local edge: `[[probe]]`s that `serve` runs itself (it embeds the
//! sub-manager's role), with the identity of `[local_edge]`.
//!
//! The logic is the edge's own: `qos-edge-core`'s scheduler, threshold rules, summariser and
//! outbox, and the Linux edge's probe runners (`qos_edge::active`, `qos_edge::probe`).
//! [`LocalEdge`] is sans-IO (Unix milliseconds in; batches, the wire's `POST /u` payloads, out);
//! [`start`] is its thin driver: a thread that runs due probes on short-lived threads (as many
//! at once as the scheduler allows) and hands each batch to an [`Ingest`] of its own, which
//! decodes, validates, deduplicates by (edge, sequence number) and commits it exactly as it does
//! a batch that came over CoAP; the acknowledgement releases the records from the outbox.
//!
//! Why no network hop to its own CoAP socket: the ingest is a function of the payload, so going
//! through UDP would add only a retransmission timer and a rate limiter to a path that cannot
//! lose datagrams, and would tie the local edge's data to the CoAP listener's address. The
//! local edge uses its own store connection (SQLite serialises the two writers; WAL keeps
//! readers unblocked) and shares the ingest counters, so its batches count in `/metrics` and
//! `/api/v1/stats` like any edge's.
//!
//! Sequence numbers: each start is a new boot epoch, one above the epoch of the last sequence
//! number the store holds for this edge id, so numbers never repeat across restarts (the store
//! keeps the truth; nothing else is persisted). A batch the store could not commit stays in
//! flight with its numbers and is offered again after [`RETRY_MS`]. Windows still open at a stop
//! are not sent (like an edge's).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qos_edge::active::{run_scheduled, Active, ActiveProbe};
use qos_edge_core::scheduler::Scheduler;
use qos_edge_core::thresholds::Thresholds;
use qos_edge_core::{Outbox, Summariser};
use qos_wire::codec::{encode_into, WireError};
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::outcome::ProbeResult;
use qos_wire::uplink::{encode_batch_head, RecordKind, MAX_RECORDS};

use crate::config::{Config, LocalEdgeConfig, Synchronous};
use crate::ingest::Ingest;
use crate::serve::{Listener, ServeError};
use crate::stats::IngestStats;
use crate::store::{epoch, SqliteStore, StoreRead};

/// Probes the local edge runs at most.
pub const MAX_PROBES: usize = 32;
/// Threshold rules it evaluates at most.
pub const MAX_RULES: usize = 32;
/// Records its outbox holds while the store refuses them (the oldest summary is dropped beyond).
pub const OUTBOX_RECORDS: usize = 256;
/// Largest encoded record.
pub const RECORD_BYTES: usize = 512;
/// Sketch buckets of its summaries (as the Linux edge's).
pub const SKETCH_BUCKETS: usize = 128;
/// Encoded records in one batch at most, bytes (no datagram limits it; this bounds a commit).
pub const BATCH_BYTES: usize = 16 * 1024;
/// After the store failed to commit a batch, offer it again this many ms later.
pub const RETRY_MS: u64 = 1_000;

/// Why the local edge could not start (the message names the value at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("local edge: {0}")]
pub struct LocalEdgeError(pub String);

/// The local edge's state: what to run when, what to send. No clock, no socket, no thread.
pub struct LocalEdge {
    id: EdgeId,
    active: Active,
    scheduler: Scheduler<MAX_PROBES>,
    thresholds: Thresholds<MAX_RULES>,
    summariser: Summariser<MAX_PROBES, SKETCH_BUCKETS>,
    outbox: Box<Outbox<OUTBOX_RECORDS, RECORD_BYTES>>,
    /// A batch the store refused for now is offered again from then on (Unix ms).
    retry_at_ms: Option<u64>,
}

impl LocalEdge {
    /// A local edge with `active` in force, numbering its records from the first of `epoch`,
    /// its schedule starting at `now_ms` (Unix ms).
    pub fn new(
        cfg: &LocalEdgeConfig,
        active: Active,
        epoch: u32,
        now_ms: u64,
    ) -> Result<LocalEdge, LocalEdgeError> {
        let mut scheduler = Scheduler::new(cfg.max_concurrent_probes, u64::from(cfg.id));
        scheduler
            .set(active.cadences(cfg.confirm_ms), now_ms)
            .map_err(|_| LocalEdgeError(format!("more than {MAX_PROBES} probes")))?;
        let mut thresholds = Thresholds::new();
        thresholds
            .set(active.rules.iter().copied())
            .map_err(|e| LocalEdgeError(format!("rules: {e:?}")))?;
        Ok(LocalEdge {
            id: EdgeId(cfg.id),
            summariser: Summariser::new(active.window_s),
            active,
            scheduler,
            thresholds,
            outbox: Box::new(Outbox::new(Seq::first_of_epoch(epoch))),
            retry_at_ms: None,
        })
    }

    /// The next probe run that is due at `now_ms`, with its slot time (call until `None`); the
    /// scheduler counts it as running until [`LocalEdge::finished`].
    pub fn next_due(&mut self, now_ms: u64) -> Option<(Arc<ActiveProbe>, u64)> {
        while let Some((id, at)) = self.scheduler.next_due(now_ms) {
            if let Some(p) = self.active.probe(id) {
                return Some((p.clone(), at));
            }
        }
        None
    }

    /// A run of slot `at` ended at `now_ms` with `result`: the threshold rules see it first
    /// (a crossing is queued at once, ahead of summaries), then its window.
    pub fn finished(&mut self, at: u64, result: &ProbeResult, now_ms: u64) {
        self.scheduler.finished(result.probe, result.ok(), now_ms);
        for ev in self.thresholds.observe::<MAX_RULES>(result, now_ms) {
            let (probe, metric, value) = (ev.probe.0, ev.metric, ev.value);
            if ev.raised {
                tracing::warn!(probe, metric = ?metric, value, "local edge: threshold raised");
            } else {
                tracing::info!(probe, metric = ?metric, value, "local edge: threshold cleared");
            }
            if let Err(e) = self.outbox.push(RecordKind::Event, |e| ev.encode(e)) {
                tracing::warn!(probe, error = ?e, "local edge: event not queued");
            }
        }
        match self.summariser.record((at / 1000) as u32, result) {
            Ok(Some(closed)) => self.queue_summary(&closed),
            Ok(None) => {}
            Err(_) => tracing::warn!(probe = result.probe.0, "too many probes for the summariser"),
        }
    }

    fn queue_summary(&mut self, s: &qos_wire::summary::Summary<SKETCH_BUCKETS>) {
        if let Err(e) = self.outbox.push(RecordKind::Summary, |e| s.encode(e)) {
            tracing::warn!(probe = s.probe.0, error = ?e, "local edge: summary not queued");
        }
    }

    /// Close the windows that have ended by `now_ms`.
    pub fn poll(&mut self, now_ms: u64) {
        while let Some(closed) = self.summariser.poll((now_ms / 1000) as u32) {
            self.queue_summary(&closed);
        }
    }

    /// The batch to hand to the ingest now (the one in flight again, or the next records), as
    /// the payload of an uplink `POST /u`; `None` when there is nothing to send or a refused
    /// batch waits for its retry time.
    pub fn batch(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if self.retry_at_ms.is_some_and(|t| now_ms < t) {
            return None;
        }
        self.retry_at_ms = None;
        loop {
            let flight = self.outbox.start_batch(BATCH_BYTES, MAX_RECORDS)?;
            let mut payload = vec![0u8; BATCH_BYTES + RECORD_BYTES + 64];
            let dropped = self.outbox.stats().dropped;
            let records = &self.outbox;
            let n = encode_into(&mut payload, |e| {
                encode_batch_head(e, self.id, flight.first, dropped, flight.count)?;
                for r in records.in_flight_records() {
                    use minicbor::encode::Write;
                    e.writer_mut()
                        .write_all(r.bytes())
                        .map_err(|_| WireError::BufferFull)?;
                }
                Ok(())
            });
            match n {
                Ok(n) => {
                    payload.truncate(n);
                    return Some(payload);
                }
                Err(e) => {
                    // Cannot happen with records of at most RECORD_BYTES; never loop on it.
                    let lost = self.outbox.drop_in_flight();
                    tracing::error!(error = ?e, lost, "local edge: batch not encodable; dropped");
                }
            }
        }
    }

    /// The store committed the batch up to `acked`.
    pub fn acked(&mut self, acked: Seq) {
        self.outbox.ack(acked);
    }

    /// The store could not commit the batch now: keep it, offer it again at `now_ms` +
    /// [`RETRY_MS`].
    pub fn retry_later(&mut self, now_ms: u64) {
        self.retry_at_ms = Some(now_ms + RETRY_MS);
    }

    /// The ingest refused the batch for good (it cannot change by sending it again): drop it,
    /// counted in the `dropped` figure the next batches carry.
    pub fn refused(&mut self) -> usize {
        self.outbox.drop_in_flight()
    }

    /// Records waiting to be stored.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// When something is due next (a probe, a window's end, a retry), Unix ms.
    pub fn next_deadline(&self) -> Option<u64> {
        let window = self.summariser.next_deadline().map(|s| u64::from(s) * 1000);
        let retry = self.retry_at_ms.filter(|_| !self.outbox.is_empty());
        [self.scheduler.next_deadline(), window, retry]
            .into_iter()
            .flatten()
            .min()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Longest wait of the driver, so it notices the shutdown flag.
const SHUTDOWN_POLL_MS: u64 = 100;

/// Start the local edge of `config` if it has `[[probe]]`s: its own writer on the store at
/// `database` and an [`Ingest`] counting in `stats`. `None` when there is nothing to run.
pub fn start(
    config: &Config,
    database: &Path,
    synchronous: Synchronous,
    stats: Arc<IngestStats>,
    shutdown: Arc<AtomicBool>,
) -> Result<Option<Listener>, ServeError> {
    let Some(cfg) = config.local_edge.clone() else {
        return Ok(None);
    };
    if config.probes.is_empty() {
        return Ok(None);
    }
    let services = |e: String| ServeError::Services(format!("local edge {}: {e}", cfg.id));
    let active =
        Active::from_sections(cfg.window_s, &config.probes, &config.rules).map_err(services)?;
    let store = SqliteStore::open(database, synchronous)?;
    let last = store
        .edges()?
        .into_iter()
        .find(|e| e.edge_id == cfg.id)
        .and_then(|e| e.last_seq);
    let boot = last.map_or(1, |s| epoch(s).saturating_add(1));
    let edge = LocalEdge::new(&cfg, active, boot, unix_ms()).map_err(|e| services(e.0))?;
    let ingest = Ingest::new(Box::new(store), stats);
    tracing::info!(
        edge = cfg.id, name = %cfg.name, region = %cfg.region, epoch = boot,
        probes = config.probes.len(), rules = config.rules.len(), window_s = cfg.window_s,
        "local edge running"
    );
    let thread = std::thread::Builder::new()
        .name("local-edge".into())
        .spawn(move || drive(edge, ingest, &cfg, &shutdown))
        .map_err(|source| ServeError::Spawn {
            name: "local-edge",
            source,
        })?;
    Ok(Some(Listener::thread("local-edge", thread)))
}

/// The driver loop: run what is due, store what is queued, wait for a result or a deadline.
fn drive(mut edge: LocalEdge, mut ingest: Ingest, cfg: &LocalEdgeConfig, shutdown: &AtomicBool) {
    let (tx, results) = mpsc::channel::<(u64, ProbeResult)>();
    std::thread::scope(|scope| {
        while !shutdown.load(Ordering::Relaxed) {
            while let Some((probe, at)) = edge.next_due(unix_ms()) {
                let tx = tx.clone();
                scope.spawn(move || {
                    let _ = tx.send((at, run_scheduled(&probe, at)));
                });
            }
            edge.poll(unix_ms());
            deliver(&mut edge, &mut ingest, cfg, unix_ms());
            let now = unix_ms();
            let wait = edge
                .next_deadline()
                .map_or(SHUTDOWN_POLL_MS, |t| t.saturating_sub(now))
                .clamp(1, SHUTDOWN_POLL_MS);
            if let Ok((at, result)) = results.recv_timeout(Duration::from_millis(wait)) {
                edge.finished(at, &result, unix_ms());
                // Several runs may end together: take every result already there.
                while let Ok((at, result)) = results.try_recv() {
                    edge.finished(at, &result, unix_ms());
                }
            }
        }
        // Runs in flight end within their timeout; the scope joins them.
    });
    while let Ok((at, result)) = results.try_recv() {
        edge.finished(at, &result, unix_ms());
    }
    deliver(&mut edge, &mut ingest, cfg, unix_ms());
    tracing::info!(edge = cfg.id, queued = edge.queued(), "local edge stopped");
}

/// Hand every batch that is ready to the ingest: the same validation, deduplication and
/// counting as a batch from the network.
fn deliver(edge: &mut LocalEdge, ingest: &mut Ingest, cfg: &LocalEdgeConfig, now_ms: u64) {
    while let Some(payload) = edge.batch(now_ms) {
        let stored = ingest.prepare(&payload, now_ms).and_then(|mut batch| {
            batch.set_origin(&cfg.name, &cfg.region);
            ingest.commit(std::slice::from_ref(&batch))
        });
        match stored {
            Ok(acks) => match acks.first() {
                Some(ack) => edge.acked(ack.acked),
                None => break,
            },
            Err(e) if e.is_transient() => {
                tracing::warn!(edge = cfg.id, error = %e, "local edge: store busy; retrying");
                edge.retry_later(now_ms);
                break;
            }
            Err(e) => {
                let lost = edge.refused();
                tracing::error!(edge = cfg.id, error = %e, lost, "local edge: batch refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minicbor::Decoder;
    use qos_probe_config::{ProbeKindConfig, ProbeSection, RuleSection};
    use qos_wire::event::Event;
    use qos_wire::ids::ProbeId;
    use qos_wire::outcome::{ErrorClass, PhaseTimings};
    use qos_wire::phase::Phase;
    use qos_wire::summary::Summary;
    use qos_wire::uplink::Batch;

    fn cfg() -> LocalEdgeConfig {
        LocalEdgeConfig {
            id: 900,
            name: "centre".into(),
            region: "here".into(),
            window_s: 10,
            confirm_ms: 0,
            max_concurrent_probes: 4,
        }
    }

    fn edge(epoch: u32, now_ms: u64) -> LocalEdge {
        let probes = [ProbeSection {
            id: 1,
            interval_ms: 1000,
            timeout_ms: 500,
            kind: ProbeKindConfig::Tcp {
                target: "127.0.0.1:9".into(),
            },
        }];
        let rules = [RuleSection {
            probe: 1,
            metric: "availability".into(),
            raise_ms: 0.0,
            clear_ms: None,
            k: 2,
            n: 3,
        }];
        let active = Active::from_sections(10, &probes, &rules).unwrap();
        LocalEdge::new(&cfg(), active, epoch, now_ms).unwrap()
    }

    fn result(at: u64, ok: bool) -> ProbeResult {
        let mut phases = PhaseTimings::new();
        phases.set(Phase::Connect, 300);
        if ok {
            phases.set(Phase::Total, 400);
        }
        ProbeResult {
            probe: ProbeId(1),
            at_ms: at,
            phases,
            error: (!ok).then_some(ErrorClass::Refused),
            error_after_us: (!ok).then_some(400),
            detail: 0,
            redirects: 0,
        }
    }

    /// Runs every due slot from `from` to `to` (virtual ms) with results of `ok`.
    fn run(e: &mut LocalEdge, from: u64, to: u64, ok: bool) -> usize {
        let mut runs = 0;
        for now in (from..to).step_by(100) {
            while let Some((p, at)) = e.next_due(now) {
                assert_eq!(p.id, 1);
                e.finished(at, &result(at, ok), now + 1);
                runs += 1;
            }
            e.poll(now);
        }
        runs
    }

    /// The records of a batch payload: (seq, kind, body).
    fn records(payload: &[u8]) -> (u32, Vec<(Seq, RecordKind, Vec<u8>)>) {
        let b = Batch::decode(payload).unwrap();
        let recs = b
            .records()
            .map(|r| (r.seq, r.kind, r.body.to_vec()))
            .collect();
        (b.edge.0, recs)
    }

    #[test]
    fn windows_become_numbered_batches_released_by_the_ack() {
        let t0 = 1_000_000;
        let mut e = edge(3, t0);
        assert!(
            e.batch(t0).is_none(),
            "nothing to send before a window ends"
        );
        let runs = run(&mut e, t0, t0 + 10_500, true);
        assert!(runs >= 10, "{runs} runs");
        let payload = e.batch(t0 + 10_500).expect("the first window closed");
        let (edge_id, recs) = records(&payload);
        assert_eq!(edge_id, 900);
        assert_eq!(recs[0].0, Seq::first_of_epoch(3));
        assert_eq!(recs[0].1, RecordKind::Summary);
        let s = Summary::<{ qos_wire::sketch::BUCKETS }>::decode(&mut Decoder::new(&recs[0].2))
            .unwrap();
        assert_eq!((s.probe, s.len_s, s.failed), (ProbeId(1), 10, 0));
        assert!(s.ok > 0);
        // Not acknowledged: the same batch, the same numbers.
        assert_eq!(e.batch(t0 + 10_600).unwrap(), payload);
        e.acked(recs.last().unwrap().0);
        assert_eq!(e.queued(), 0);
        assert!(e.batch(t0 + 10_700).is_none());
        // The next window continues the numbering.
        run(&mut e, t0 + 10_500, t0 + 20_500, true);
        let (_, next) = records(&e.batch(t0 + 20_500).unwrap());
        assert_eq!(next[0].0, Seq(recs.last().unwrap().0 .0 + 1));
    }

    #[test]
    fn failures_raise_an_event_ahead_of_the_summary() {
        let t0 = 2_000_000;
        let mut e = edge(1, t0);
        run(&mut e, t0, t0 + 3_000, true);
        assert!(e.batch(t0 + 3_000).is_none());
        run(&mut e, t0 + 3_000, t0 + 6_000, false);
        let payload = e
            .batch(t0 + 6_000)
            .expect("the raised event is sent at once");
        let (_, recs) = records(&payload);
        assert_eq!(recs.len(), 1, "no window closed yet");
        assert_eq!(recs[0].1, RecordKind::Event);
        let ev = Event::decode(&mut Decoder::new(&recs[0].2)).unwrap();
        assert!(ev.raised);
        assert_eq!(ev.probe, ProbeId(1));
        e.acked(recs[0].0);
        // Good again: cleared.
        run(&mut e, t0 + 6_000, t0 + 9_000, true);
        let (_, recs) = records(&e.batch(t0 + 9_000).unwrap());
        let ev = Event::decode(&mut Decoder::new(&recs[0].2)).unwrap();
        assert!(!ev.raised);
    }

    #[test]
    fn a_batch_the_store_refused_for_now_waits_then_comes_again_unchanged() {
        let t0 = 3_000_000;
        let mut e = edge(1, t0);
        run(&mut e, t0, t0 + 10_500, true);
        let first = e.batch(t0 + 10_500).unwrap();
        e.retry_later(t0 + 10_500);
        assert!(e.batch(t0 + 10_500 + RETRY_MS - 1).is_none());
        assert!(e.next_deadline().unwrap() <= t0 + 10_500 + RETRY_MS);
        assert_eq!(e.batch(t0 + 10_500 + RETRY_MS).unwrap(), first);
        // Refused for good: dropped and counted in the next batch's `dropped`.
        let lost = e.refused();
        assert!(lost >= 1);
        run(&mut e, t0 + 10_500, t0 + 20_500, true);
        let b = e.batch(t0 + 20_500).unwrap();
        assert_eq!(Batch::decode(&b).unwrap().dropped, lost as u64);
    }
}
