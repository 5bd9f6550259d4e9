//! The broker's queue of batches waiting to go upstream: a narrow interface ([`Queue`]) with a
//! durable implementation ([`crate::sqlite_queue::SqliteQueue`]) and an in-memory one for tests
//! ([`MemoryQueue`]).
//!
//! The contract that makes store-and-forward safe: [`Queue::append`] returns `Ok` only once the
//! batch is durable (it survives a process kill, and with the SQLite queue a power cut), because
//! the broker acknowledges the batch to the edge right after and the edge then forgets it.

use std::collections::VecDeque;

use qos_wire::ids::{EdgeId, Seq};

/// Identifies a queued batch; increases in append order and is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u64);

/// A batch waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedBatch {
    /// Its place in the queue.
    pub id: QueueId,
    /// The edge that sent it.
    pub edge: EdgeId,
    /// Sequence number of its first record.
    pub first_seq: Seq,
    /// Sequence number of its last record.
    pub last_seq: Seq,
    /// The encoded batch, exactly as the edge sent it (the payload of `POST /u`).
    pub payload: Vec<u8>,
    /// When it was queued (Unix ms, as given to [`Queue::append`]).
    pub queued_at_ms: u64,
}

/// A batch to append ([`Queue::append_all`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewBatch<'a> {
    /// The edge that sent it.
    pub edge: EdgeId,
    /// Sequence number of its first record.
    pub first_seq: Seq,
    /// Sequence number of its last record.
    pub last_seq: Seq,
    /// The encoded batch.
    pub payload: &'a [u8],
    /// When it was queued (Unix ms).
    pub queued_at_ms: u64,
}

/// Why a queue operation failed. The broker answers 5.03 to the edge when an append fails, so
/// the edge keeps the batch and sends it again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The SQLite database failed (the path of the file and the error).
    #[error("broker queue {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The queue cannot take writes now (in-memory test queue, full disk, ...).
    #[error("broker queue unavailable: {0}")]
    Unavailable(String),
}

/// Counters of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Batches waiting.
    pub len: u64,
    /// Payload bytes waiting.
    pub bytes: u64,
    /// Batches dropped because the quota was exceeded (oldest first), since the queue was
    /// created (persisted by the SQLite queue).
    pub dropped_quota: u64,
    /// Records in those batches.
    pub dropped_quota_records: u64,
}

/// A FIFO of batches, durable on `append`.
pub trait Queue: Send {
    /// Appends a batch; returns once it is durable. May drop the oldest batches to respect a
    /// quota (counted in [`QueueStats::dropped_quota`]).
    fn append(
        &mut self,
        edge: EdgeId,
        first_seq: Seq,
        last_seq: Seq,
        payload: &[u8],
        queued_at_ms: u64,
    ) -> Result<QueueId, QueueError> {
        let batch = NewBatch {
            edge,
            first_seq,
            last_seq,
            payload,
            queued_at_ms,
        };
        let ids = self.append_all(std::slice::from_ref(&batch))?;
        ids.first()
            .copied()
            .ok_or_else(|| QueueError::Unavailable("no id for an appended batch".into()))
    }

    /// Appends `batches` in order, all or none, and returns their ids once they are all durable
    /// (with the SQLite queue: one transaction, one wait for the disk). The quota may drop
    /// older batches, never these.
    fn append_all(&mut self, batches: &[NewBatch<'_>]) -> Result<Vec<QueueId>, QueueError>;

    /// The oldest batch (the next to forward), without removing it.
    fn oldest(&mut self) -> Result<Option<QueuedBatch>, QueueError>;

    /// The ids and edges of the `n` oldest batches, oldest first (no payloads: cheap).
    fn heads(&mut self, n: usize) -> Result<Vec<(QueueId, EdgeId)>, QueueError>;

    /// Batch `id`, if it is still queued.
    fn get(&mut self, id: QueueId) -> Result<Option<QueuedBatch>, QueueError>;

    /// The oldest batch queued at or after `since_ms` (Unix ms) whose edge has no older batch
    /// waiting: the next *live* batch that may go ahead of older batches of other edges without
    /// reordering its own edge's (see [`crate::broker::replay`]). `Ok(None)` if there is none.
    fn oldest_live(&mut self, since_ms: u64) -> Result<Option<QueuedBatch>, QueueError>;

    /// Removes a batch; `Ok(false)` if it was not there (already removed, or dropped by the
    /// quota while in flight).
    fn remove(&mut self, id: QueueId) -> Result<bool, QueueError>;

    /// Counters; `len` and `bytes` are the current depth.
    fn stats(&self) -> QueueStats;

    /// Batches waiting.
    fn len(&self) -> u64 {
        self.stats().len
    }

    /// Whether nothing waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload bytes waiting.
    fn bytes(&self) -> u64 {
        self.stats().bytes
    }
}

/// An in-memory queue (not durable): for tests and simulations. Writes can be made to fail
/// ([`MemoryQueue::set_failing`]) to exercise the broker's error paths.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    items: VecDeque<QueuedBatch>,
    next: u64,
    max_bytes: Option<u64>,
    failing: bool,
    stats: QueueStats,
    appends: u64,
}

impl MemoryQueue {
    /// An empty queue without quota.
    pub fn new() -> Self {
        MemoryQueue::default()
    }

    /// An empty queue holding at most `max_bytes` of payload (oldest dropped beyond).
    pub fn with_quota(max_bytes: u64) -> Self {
        MemoryQueue {
            max_bytes: Some(max_bytes),
            ..MemoryQueue::default()
        }
    }

    /// Makes every operation fail (`true`) or work again (`false`).
    pub fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// The batches waiting, oldest first.
    pub fn items(&self) -> impl Iterator<Item = &QueuedBatch> {
        self.items.iter()
    }

    /// Successful [`Queue::append_all`] calls (with the SQLite queue, transactions).
    pub fn appends(&self) -> u64 {
        self.appends
    }

    fn check(&self) -> Result<(), QueueError> {
        if self.failing {
            Err(QueueError::Unavailable("failing on purpose".into()))
        } else {
            Ok(())
        }
    }
}

impl Queue for MemoryQueue {
    fn append_all(&mut self, batches: &[NewBatch<'_>]) -> Result<Vec<QueueId>, QueueError> {
        self.check()?;
        let mut ids = Vec::with_capacity(batches.len());
        for b in batches {
            self.next += 1;
            let id = QueueId(self.next);
            ids.push(id);
            self.items.push_back(QueuedBatch {
                id,
                edge: b.edge,
                first_seq: b.first_seq,
                last_seq: b.last_seq,
                payload: b.payload.to_vec(),
                queued_at_ms: b.queued_at_ms,
            });
            self.stats.len += 1;
            self.stats.bytes += b.payload.len() as u64;
        }
        self.appends += 1;
        if let Some(max) = self.max_bytes {
            while self.stats.bytes > max && self.items.len() > batches.len() {
                let Some(old) = self.items.pop_front() else {
                    break;
                };
                self.stats.len -= 1;
                self.stats.bytes -= old.payload.len() as u64;
                self.stats.dropped_quota += 1;
                self.stats.dropped_quota_records += old.last_seq.0 - old.first_seq.0 + 1;
            }
        }
        Ok(ids)
    }

    fn oldest(&mut self) -> Result<Option<QueuedBatch>, QueueError> {
        self.check()?;
        Ok(self.items.front().cloned())
    }

    fn heads(&mut self, n: usize) -> Result<Vec<(QueueId, EdgeId)>, QueueError> {
        self.check()?;
        Ok(self.items.iter().take(n).map(|b| (b.id, b.edge)).collect())
    }

    fn get(&mut self, id: QueueId) -> Result<Option<QueuedBatch>, QueueError> {
        self.check()?;
        Ok(self.items.iter().find(|b| b.id == id).cloned())
    }

    fn oldest_live(&mut self, since_ms: u64) -> Result<Option<QueuedBatch>, QueueError> {
        self.check()?;
        let mut seen = std::collections::HashSet::new();
        for b in &self.items {
            if b.queued_at_ms >= since_ms && !seen.contains(&b.edge) {
                return Ok(Some(b.clone()));
            }
            seen.insert(b.edge);
        }
        Ok(None)
    }

    fn remove(&mut self, id: QueueId) -> Result<bool, QueueError> {
        self.check()?;
        match self.items.iter().position(|b| b.id == id) {
            Some(i) => {
                let b = self.items.remove(i).expect("index from position");
                self.stats.len -= 1;
                self.stats.bytes -= b.payload.len() as u64;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn stats(&self) -> QueueStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_with_quota_dropping_the_oldest() {
        let mut q = MemoryQueue::with_quota(10);
        let a = q.append(EdgeId(1), Seq(0), Seq(1), &[0; 4], 0).unwrap();
        let b = q.append(EdgeId(1), Seq(2), Seq(2), &[0; 4], 0).unwrap();
        assert_eq!(q.oldest().unwrap().unwrap().id, a);
        q.append(EdgeId(1), Seq(3), Seq(3), &[0; 4], 0).unwrap();
        assert_eq!(q.oldest().unwrap().unwrap().id, b);
        let s = q.stats();
        assert_eq!(
            (s.len, s.bytes, s.dropped_quota, s.dropped_quota_records),
            (2, 8, 1, 2)
        );
        assert!(q.remove(b).unwrap());
        assert!(!q.remove(b).unwrap());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn oldest_live_skips_old_batches_and_edges_with_older_ones() {
        let mut q = MemoryQueue::new();
        q.append(EdgeId(1), Seq(0), Seq(0), &[0], 100).unwrap();
        q.append(EdgeId(2), Seq(0), Seq(0), &[0], 100).unwrap();
        assert_eq!(q.oldest_live(500).unwrap(), None, "all old");
        q.append(EdgeId(1), Seq(1), Seq(1), &[1], 600).unwrap();
        assert_eq!(
            q.oldest_live(500).unwrap(),
            None,
            "edge 1 has an older batch"
        );
        let c = q.append(EdgeId(3), Seq(0), Seq(0), &[3], 700).unwrap();
        q.append(EdgeId(3), Seq(1), Seq(1), &[4], 800).unwrap();
        assert_eq!(q.oldest_live(500).unwrap().unwrap().id, c);
        assert_eq!(
            q.oldest_live(750).unwrap(),
            None,
            "edge 3's newer batch waits"
        );
        assert_eq!(q.oldest_live(0).unwrap().unwrap().edge, EdgeId(1));
    }
}
