//! Ingest of uplink batches, sans-IO: payload bytes in, an acknowledgement (or a reason for
//! refusing) out. The CoAP glue ([`crate::coap`]) calls it; the simulator tests drive it too.
//!
//! A batch is decoded and every record body validated *before* anything is written; then all
//! records go to the store in one transaction, deduplicated by (edge, sequence number). Only
//! when the store has committed is the cumulative acknowledgement returned — so anything the
//! edge sees acknowledged is stored exactly once, and nothing is half-written.
//!
//! Group commit: the CoAP driver [`prepare`](Ingest::prepare)s every batch that arrived
//! together (a malformed one is refused alone) and [`commit`](Ingest::commit)s the valid ones
//! in one transaction; if that fails, none of them is acknowledged.

use std::sync::Arc;

use minicbor::Decoder;
use qos_wire::codec::WireError;
use qos_wire::event::Event;
use qos_wire::ids::Seq;
use qos_wire::metrics::MetricsSample;
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
        Rejection {
            reason,
            detail: format!("{what}: {e}"),
        }
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
            // A window has a length: the store refuses 0 (found by the `ingest` fuzz target,
            // which then saw a store error where a refusal was due).
            if s.len_s == 0 {
                return Err(WireError::Invalid("summary window length 0"));
            }
            (s.start_s, Some(summary_columns(&s)))
        }
        RecordKind::Event => ((Event::decode(&mut d)?.at_ms / 1000) as u32, None),
        RecordKind::Result => ((ProbeResult::decode(&mut d)?.at_ms / 1000) as u32, None),
        RecordKind::Metrics => (MetricsSample::decode(&mut d)?.at_s, None),
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
        let batch = self.prepare(payload, now_ms)?;
        Ok(self.commit(std::slice::from_ref(&batch))?.remove(0))
    }

    /// Decodes and validates one `POST /u` payload received at `now_ms` (Unix ms), writing
    /// nothing; a refusal is counted. Store the result with [`Ingest::commit`].
    pub fn prepare(&mut self, payload: &[u8], now_ms: u64) -> Result<Prepared, Rejection> {
        let r = self.decode(payload, now_ms);
        if let Err(e) = &r {
            self.stats.reject(e.reason);
        }
        r
    }

    /// Stores prepared batches in one transaction (group commit) and returns their cumulative
    /// acknowledgements, in order, once the store has committed. On error nothing is stored,
    /// each batch is counted as a store error and none may be acknowledged.
    pub fn commit(&mut self, batches: &[Prepared]) -> Result<Vec<Ack>, Rejection> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let view: Vec<(&EdgeKey, &[NewRecord])> =
            batches.iter().map(|b| (&b.key, &b.records[..])).collect();
        let outcomes = self.store.insert_batches(&view).map_err(|e| {
            for _ in batches {
                self.stats.reject(RejectReason::StoreError);
            }
            Rejection {
                reason: RejectReason::StoreError,
                detail: e.to_string(),
            }
        });
        let outcomes = outcomes?;
        for o in &outcomes {
            self.stats.add_stored(o.new);
            self.stats.add_duplicates(o.duplicates);
        }
        self.stats.add_acked(batches.len() as u64);
        Ok(batches.iter().map(|b| Ack { acked: b.last }).collect())
    }

    fn decode(&mut self, payload: &[u8], now_ms: u64) -> Result<Prepared, Rejection> {
        let batch = Batch::decode(payload).map_err(|e| Rejection::wire(e, "batch"))?;
        self.stats.add_batches(1);
        let mut records = Vec::with_capacity(batch.len());
        for r in batch.records() {
            let (at, summary) = validate(r.kind, r.body).map_err(|e| {
                Rejection::wire(e, &format!("record {} ({})", r.seq.0, r.kind.name()))
            })?;
            records.push(NewRecord {
                seq: r.seq.0,
                kind: r.kind as u8,
                at,
                body: r.raw.to_vec(),
                summary,
            });
        }
        if records.len() != batch.len() {
            return Err(Rejection {
                reason: RejectReason::Malformed,
                detail: "record count".into(),
            });
        }
        self.stats.add_records(records.len() as u64);
        let mut key = EdgeKey::new(batch.edge.0, now_ms);
        key.dropped_at_edge = Some(batch.dropped);
        Ok(Prepared {
            key,
            records,
            last: batch.last_seq(),
        })
    }
}

/// A decoded and validated batch, not stored yet ([`Ingest::prepare`]).
#[derive(Debug)]
pub struct Prepared {
    key: EdgeKey,
    records: Vec<NewRecord>,
    last: Seq,
}

impl Prepared {
    /// The sending edge.
    pub fn edge(&self) -> u32 {
        self.key.edge_id
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Record the sending edge's name and region with the batch (for a sender whose identity
    /// is known without a registration: the super-manager's local edge).
    pub fn set_origin(&mut self, name: &str, region: &str) {
        self.key.name = Some(name.to_string());
        self.key.region = Some(region.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::SqliteStore;
    use qos_wire::codec::encode_into;
    use qos_wire::ids::{EdgeId, Seq};
    use qos_wire::samples;
    use qos_wire::uplink::{encode_batch_head, encode_record};

    fn ingest(name: &str) -> (Ingest, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("qos-ingest-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("qos.sqlite"), Synchronous::Normal).unwrap();
        (
            Ingest::new(Box::new(store), Arc::new(IngestStats::new())),
            dir,
        )
    }

    fn batch(first: Seq, n: u64) -> Vec<u8> {
        let sums: Vec<Summary<128>> = (0..n).map(|i| samples::http_summary(i, 10, 0)).collect();
        samples::batch(EdgeId(3), first, 2, &sums).unwrap()
    }

    #[test]
    fn a_batch_is_stored_once_and_acknowledged_up_to_its_last_record() {
        let (mut ing, dir) = ingest("once");
        let first = Seq::first_of_epoch(1);
        let bytes = batch(first, 3);
        assert_eq!(ing.handle_batch(&bytes, 1).unwrap().acked, Seq(first.0 + 2));
        // the same batch again (a retransmission whose ack was lost): same ack, nothing new
        assert_eq!(ing.handle_batch(&bytes, 2).unwrap().acked, Seq(first.0 + 2));
        let s = ing.stats().snapshot();
        assert_eq!(
            (s.stored, s.duplicates, s.received.records, s.acked),
            (3, 3, 6, 2)
        );
        let recs = ing.store().records(3).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(ing.store().edges().unwrap()[0].dropped_at_edge, 2);
        // the stored body is the record as sent: [kind, summary]
        let mut d = Decoder::new(&recs[0].body);
        assert_eq!(d.array().unwrap(), Some(2));
        assert_eq!(d.u8().unwrap(), RecordKind::Summary as u8);
        assert_eq!(CentralSummary::decode(&mut d).unwrap().runs(), 6);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn one_bad_record_refuses_the_whole_batch() {
        let (mut ing, dir) = ingest("bad-record");
        let s: Summary<128> = samples::http_summary(1, 10, 0);
        let mut buf = vec![0u8; 2048];
        let n = encode_into(&mut buf, |e| {
            encode_batch_head(e, EdgeId(3), Seq(0), 0, 2)?;
            encode_record(e, RecordKind::Summary, |e| s.encode(e))?;
            // an event record whose body is a summary: well-formed CBOR, wrong schema
            encode_record(e, RecordKind::Event, |e| s.encode(e))
        })
        .unwrap();
        let err = ing.handle_batch(&buf[..n], 1).unwrap_err();
        assert_eq!(err.reason, RejectReason::Malformed);
        assert!(err.detail.contains("record 1 (event)"), "{}", err.detail);
        assert!(!err.is_transient());
        assert_eq!(
            ing.store().count_records(3).unwrap(),
            0,
            "nothing half-written"
        );
        assert_eq!(ing.stats().snapshot().rejected(RejectReason::Malformed), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_summary_window_of_zero_seconds_is_refused_not_a_store_error() {
        let (mut ing, dir) = ingest("zero-window");
        let mut s: Summary<128> = samples::http_summary(1, 10, 0);
        s.len_s = 0;
        let bytes = samples::batch(EdgeId(3), Seq(0), 0, &[s]).unwrap();
        let err = ing.handle_batch(&bytes, 1).unwrap_err();
        assert_eq!(err.reason, RejectReason::Malformed, "{}", err.detail);
        assert!(!err.is_transient());
        assert_eq!(ing.store().count_records(3).unwrap(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn host_metrics_are_validated_and_stored_at_their_time() {
        let (mut ing, dir) = ingest("metrics");
        let m = samples::metrics_sample();
        let s: Summary<128> = samples::http_summary(1, 10, 0);
        let mut buf = vec![0u8; 2048];
        let n = encode_into(&mut buf, |e| {
            encode_batch_head(e, EdgeId(3), Seq(0), 0, 2)?;
            encode_record(e, RecordKind::Summary, |e| s.encode(e))?;
            encode_record(e, RecordKind::Metrics, |e| m.encode(e))
        })
        .unwrap();
        assert_eq!(ing.handle_batch(&buf[..n], 1).unwrap().acked, Seq(1));
        let recs = ing.store().records(3).unwrap();
        assert_eq!(recs.len(), 2);
        let mut d = Decoder::new(&recs[1].body);
        assert_eq!(d.array().unwrap(), Some(2));
        assert_eq!(d.u8().unwrap(), RecordKind::Metrics as u8);
        assert_eq!(MetricsSample::decode(&mut d).unwrap(), m);
        assert_eq!(
            recs[1].at, m.at_s,
            "the record's time is when it was sampled"
        );

        // a metrics record with the same metric twice is refused, nothing stored
        let mut bad = vec![0u8; 64];
        let n = encode_into(&mut bad, |e| {
            encode_batch_head(e, EdgeId(3), Seq(2), 0, 1)?;
            encode_record(e, RecordKind::Metrics, |e| {
                e.array(3)?.u32(10)?.u32(60)?;
                e.array(4)?.u8(3)?.u8(1)?.u8(3)?.u8(2)?;
                Ok(())
            })
        })
        .unwrap();
        let err = ing.handle_batch(&bad[..n], 2).unwrap_err();
        assert_eq!(err.reason, RejectReason::Malformed);
        assert!(err.detail.contains("(metrics)"), "{}", err.detail);
        assert_eq!(ing.store().count_records(3).unwrap(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn version_and_truncation_are_told_apart() {
        let (mut ing, dir) = ingest("reasons");
        let mut bytes = batch(Seq(0), 1);
        assert_eq!(
            ing.handle_batch(&bytes[..bytes.len() - 3], 1)
                .unwrap_err()
                .reason,
            RejectReason::Truncated
        );
        bytes[1] = 9;
        assert_eq!(
            ing.handle_batch(&bytes, 1).unwrap_err().reason,
            RejectReason::UnsupportedVersion
        );
        assert_eq!(
            ing.handle_batch(b"\xff\x00", 1).unwrap_err().reason,
            RejectReason::Malformed
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
