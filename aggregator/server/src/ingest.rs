//! Ingest of uplink batches, sans-IO: payload bytes in, an acknowledgement (or a reason for
//! refusing) out. The CoAP glue ([`crate::coap`]) calls it; the simulator tests drive it too.
//!
//! A batch is decoded and every record body validated *before* anything is written; then all
//! records go to the store in one transaction, deduplicated by (edge, sequence number). Only
//! when the store has committed is the cumulative acknowledgement returned — so anything the
//! edge sees acknowledged is stored exactly once, and nothing is half-written.

use std::sync::Arc;

use minicbor::Decoder;
use qos_wire::codec::WireError;
use qos_wire::event::Event;
use qos_wire::outcome::ProbeResult;
use qos_wire::summary::Summary;
use qos_wire::uplink::{Ack, Batch, RecordKind};

use crate::stats::{IngestStats, RejectReason};
use crate::store::{EdgeKey, NewRecord, Store, SummaryColumns};

/// A summary decoded at the super-manager: its sketch covers every bucket.
pub type CentralSummary = Summary<{ qos_wire::sketch::BUCKETS }>;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason:?}: {detail}")]
pub struct Rejection {
    /// The counter it is counted under.
    pub reason: RejectReason,
    /// A short explanation, sent back in the diagnostic payload.
    pub detail: String,
}

impl Rejection {
    fn wire(e: WireError, what: &str) -> Self {
        let reason = match e {
            WireError::Truncated => RejectReason::Truncated,
            WireError::UnsupportedVersion(_) => RejectReason::UnsupportedVersion,
            _ => RejectReason::Malformed,
        };
        Rejection { reason, detail: format!("{what}: {e}") }
    }

    /// Whether the sender may succeed by sending the same batch again (the store failed).
    pub fn is_transient(&self) -> bool {
        self.reason == RejectReason::StoreError
    }
}

/// What the super-manager does with batches.
pub struct Ingest {
    store: Box<dyn Store>,
    stats: Arc<IngestStats>,
}

fn summary_columns(s: &CentralSummary) -> SummaryColumns {
    let q = |q: f64| s.sketch.quantile(q).map(u64::from);
    SummaryColumns {
        probe: u32::from(s.probe.0),
        window_start: s.start_s,
        window_len: u32::from(s.len_s),
        ok: s.ok,
        failed: s.failed,
        total_p50_us: q(0.5),
        total_p95_us: q(0.95),
        total_p99_us: q(0.99),
    }
}

/// Decode and validate one record body; returns its time (Unix s) and summary columns.
fn validate(kind: RecordKind, body: &[u8]) -> Result<(u32, Option<SummaryColumns>), WireError> {
    let mut d = Decoder::new(body);
    let r = match kind {
        RecordKind::Summary => {
            let s = CentralSummary::decode(&mut d)?;
            (s.start_s, Some(summary_columns(&s)))
        }
        RecordKind::Event => ((Event::decode(&mut d)?.at_ms / 1000) as u32, None),
        RecordKind::Result => ((ProbeResult::decode(&mut d)?.at_ms / 1000) as u32, None),
        _ => return Err(WireError::Invalid("record kind")),
    };
    if d.position() != body.len() {
        return Err(WireError::TrailingBytes);
    }
    Ok(r)
}

impl Ingest {
    /// Ingest into `store`, counting in `stats`.
    pub fn new(store: Box<dyn Store>, stats: Arc<IngestStats>) -> Self {
        Ingest { store, stats }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// The store (for tests and read paths that share the writer).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Handle the payload of one `POST /u` received at `now_ms` (Unix ms).
    pub fn handle_batch(&mut self, payload: &[u8], now_ms: u64) -> Result<Ack, Rejection> {
        let r = self.batch(payload, now_ms);
        if let Err(e) = &r {
            self.stats.reject(e.reason);
        }
        r
    }

    fn batch(&mut self, payload: &[u8], now_ms: u64) -> Result<Ack, Rejection> {
        let batch = Batch::decode(payload).map_err(|e| Rejection::wire(e, "batch"))?;
        self.stats.add_batches(1);
        let mut records = Vec::with_capacity(batch.len());
        for r in batch.records() {
            let (at, summary) = validate(r.kind, r.body)
                .map_err(|e| Rejection::wire(e, &format!("record {} ({})", r.seq.0, r.kind.name())))?;
            records.push(NewRecord { seq: r.seq.0, kind: r.kind as u8, at, body: r.raw.to_vec(), summary });
        }
        if records.len() != batch.len() {
            return Err(Rejection { reason: RejectReason::Malformed, detail: "record count".into() });
        }
        self.stats.add_records(records.len() as u64);
        let mut key = EdgeKey::new(batch.edge.0, now_ms);
        key.dropped_at_edge = Some(batch.dropped);
        let outcome = self.store.insert_batch(&key, &records).map_err(|e| Rejection {
            reason: RejectReason::StoreError,
            detail: e.to_string(),
        })?;
        self.stats.add_stored(outcome.new);
        self.stats.add_duplicates(outcome.duplicates);
        self.stats.add_acked(1);
        Ok(Ack { acked: batch.last_seq() })
    }
}
