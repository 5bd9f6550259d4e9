//! The durable [`Queue`]: one SQLite database file in WAL mode with `synchronous = FULL`, so a
//! batch acknowledged to an edge survives a process kill, an OS crash and a power cut.
//!
//! A removal (the upstream acknowledged the batch) commits with `synchronous = NORMAL`: it does
//! not wait for the disk, which halves the waits per forwarded batch. It survives a process
//! kill all the same; an OS crash or power cut can undo it, and then the batch is forwarded
//! again and the super-manager drops the repeated records. The next append's FULL commit
//! makes earlier removals durable too (one write-ahead log).
//!
//! ```sql
//! CREATE TABLE queue (
//!     id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- append order, never reused
//!     edge      INTEGER NOT NULL,
//!     first_seq INTEGER NOT NULL,
//!     last_seq  INTEGER NOT NULL,
//!     payload   BLOB    NOT NULL,                   -- the batch as the edge sent it
//!     queued_at INTEGER NOT NULL                    -- Unix ms
//! );
//! CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
//! CREATE INDEX queue_edge ON queue (edge, id);         -- paced replay: an edge's oldest batch
//! CREATE INDEX queue_queued_at ON queue (queued_at);  -- paced replay: the live batches
//! ```
//!
//! The two indexes serve [`Queue::oldest_live`] (paced replay, [`crate::broker::replay`]); a
//! file written before them gets them when opened (no schema version change: older programs
//! read the file as before).
//!
//! # Quota
//! The payload bytes waiting are kept at or below `max_bytes`: an append that goes beyond drops
//! the OLDEST batches in the same transaction (never those just appended) and counts them in
//! `counters` (`dropped_quota`, `dropped_quota_records`), which survive restarts. Batches
//! appended together ([`Queue::append_all`]) are one transaction, and the quota drops none of
//! them. Dropping at
//! the broker is loss the edge cannot know about (the broker had acknowledged those batches):
//! it shows up at the super-manager as gaps in that edge's sequence numbers (the `gaps` counter
//! of `GET /api/v1/edges`) and here in the broker's counters and log.

use std::path::{Path, PathBuf};

use qos_wire::ids::{EdgeId, Seq};
use rusqlite::{params, Connection, OptionalExtension};

use crate::queue::{NewBatch, Queue, QueueError, QueueId, QueueStats, QueuedBatch};

/// Schema version (`PRAGMA user_version`) this code writes.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    edge      INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    payload   BLOB    NOT NULL,
    queued_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_edge ON queue (edge, id);
CREATE INDEX IF NOT EXISTS queue_queued_at ON queue (queued_at);
";

/// A row of `queue` as a batch: `id, edge, first_seq, last_seq, payload, queued_at`.
fn batch_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedBatch> {
    Ok(QueuedBatch {
        id: QueueId(r.get::<_, i64>(0)? as u64),
        edge: EdgeId(r.get::<_, i64>(1)? as u32),
        first_seq: Seq(r.get::<_, i64>(2)? as u64),
        last_seq: Seq(r.get::<_, i64>(3)? as u64),
        payload: r.get(4)?,
        queued_at_ms: r.get::<_, i64>(5)? as u64,
    })
}

/// A [`Queue`] in a SQLite file.
#[derive(Debug)]
pub struct SqliteQueue {
    conn: Connection,
    path: PathBuf,
    max_bytes: u64,
    stats: QueueStats,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue at `path`, keeping at most `max_bytes` of payload.
    pub fn open(path: &Path, max_bytes: u64) -> Result<SqliteQueue, QueueError> {
        let err = |source| QueueError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(QueueError::Unavailable(format!(
                "{}: cannot switch to WAL mode (got {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(QueueError::Unavailable(format!(
                "{}: schema version {version} is newer than this program's {SCHEMA_VERSION}",
                path.display()
            )));
        }
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        let mut q = SqliteQueue {
            conn,
            path: path.to_path_buf(),
            max_bytes,
            stats: QueueStats::default(),
        };
        q.stats = q.load_stats().map_err(err)?;
        Ok(q)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The quota in payload bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn err(&self, source: rusqlite::Error) -> QueueError {
        QueueError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn load_stats(&self) -> rusqlite::Result<QueueStats> {
        let (len, bytes): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM queue",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let counter = |name: &str| -> rusqlite::Result<u64> {
            let v: Option<i64> = self
                .conn
                .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(v.unwrap_or(0) as u64)
        };
        Ok(QueueStats {
            len: len as u64,
            bytes: bytes as u64,
            dropped_quota: counter("dropped_quota")?,
            dropped_quota_records: counter("dropped_quota_records")?,
        })
    }

    fn append_tx(
        &mut self,
        batches: &[NewBatch<'_>],
    ) -> rusqlite::Result<(Vec<QueueId>, QueueStats)> {
        let mut stats = self.stats;
        let max = self.max_bytes;
        let tx = self.conn.transaction()?;
        let mut ids = Vec::with_capacity(batches.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO queue (edge, first_seq, last_seq, payload, queued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for b in batches {
                ids.push(insert.insert(params![
                    i64::from(b.edge.0),
                    b.first_seq.0 as i64,
                    b.last_seq.0 as i64,
                    b.payload,
                    b.queued_at_ms as i64
                ])?);
                stats.len += 1;
                stats.bytes += b.payload.len() as u64;
            }
        }
        let Some(&first_new) = ids.first() else {
            return Ok((Vec::new(), stats));
        };
        let mut dropped = 0u64;
        while stats.bytes > max && stats.len > ids.len() as u64 {
            let old: Option<(i64, i64, i64, i64)> = tx
                .query_row(
                    "SELECT id, LENGTH(payload), first_seq, last_seq FROM queue
                     WHERE id < ?1 ORDER BY id LIMIT 1",
                    [first_new],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((old_id, len, first, last)) = old else {
                break;
            };
            tx.execute("DELETE FROM queue WHERE id = ?1", [old_id])?;
            stats.len -= 1;
            stats.bytes -= len as u64;
            stats.dropped_quota += 1;
            stats.dropped_quota_records += (last as u64).wrapping_sub(first as u64) + 1;
            dropped += 1;
        }
        if dropped > 0 {
            for (name, value) in [
                ("dropped_quota", stats.dropped_quota),
                ("dropped_quota_records", stats.dropped_quota_records),
            ] {
                tx.execute(
                    "INSERT INTO counters (name, value) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    params![name, value as i64],
                )?;
            }
            tracing::warn!(
                dropped,
                max_bytes = max,
                "broker queue over its quota: oldest batches dropped (gaps at the super-manager)"
            );
        }
        tx.commit()?;
        Ok((
            ids.into_iter().map(|id| QueueId(id as u64)).collect(),
            stats,
        ))
    }
}

impl Queue for SqliteQueue {
    fn append_all(&mut self, batches: &[NewBatch<'_>]) -> Result<Vec<QueueId>, QueueError> {
        match self.append_tx(batches) {
            Ok((ids, stats)) => {
                self.stats = stats;
                Ok(ids)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn oldest(&mut self) -> Result<Option<QueuedBatch>, QueueError> {
        self.conn
            .prepare_cached(
                "SELECT id, edge, first_seq, last_seq, payload, queued_at FROM queue
                 ORDER BY id LIMIT 1",
            )
            .and_then(|mut st| st.query_row([], batch_of).optional())
            .map_err(|e| self.err(e))
    }

    fn heads(&mut self, n: usize) -> Result<Vec<(QueueId, EdgeId)>, QueueError> {
        let rows = self
            .conn
            .prepare_cached("SELECT id, edge FROM queue ORDER BY id LIMIT ?1")
            .and_then(|mut st| {
                st.query_map([n.min(i64::MAX as usize) as i64], |r| {
                    Ok((
                        QueueId(r.get::<_, i64>(0)? as u64),
                        EdgeId(r.get::<_, i64>(1)? as u32),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            });
        rows.map_err(|e| self.err(e))
    }

    fn get(&mut self, id: QueueId) -> Result<Option<QueuedBatch>, QueueError> {
        self.conn
            .prepare_cached(
                "SELECT id, edge, first_seq, last_seq, payload, queued_at FROM queue WHERE id = ?1",
            )
            .and_then(|mut st| st.query_row([id.0 as i64], batch_of).optional())
            .map_err(|e| self.err(e))
    }

    fn oldest_live(&mut self, since_ms: u64) -> Result<Option<QueuedBatch>, QueueError> {
        self.conn
            .prepare_cached(
                "SELECT id, edge, first_seq, last_seq, payload, queued_at FROM queue AS q
                 WHERE queued_at >= ?1
                   AND NOT EXISTS (SELECT 1 FROM queue AS o WHERE o.edge = q.edge AND o.id < q.id)
                 ORDER BY id LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([since_ms.min(i64::MAX as u64) as i64], batch_of)
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    fn remove(&mut self, id: QueueId) -> Result<bool, QueueError> {
        // Not worth a wait for the disk (see the module documentation); the appends that
        // follow are FULL again.
        let deleted = self
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| {
                self.conn
                    .query_row(
                        "DELETE FROM queue WHERE id = ?1 RETURNING LENGTH(payload)",
                        [id.0 as i64],
                        |r| r.get(0),
                    )
                    .optional()
            });
        let restored = self.conn.pragma_update(None, "synchronous", "FULL");
        let len: Option<i64> = restored.and(deleted).map_err(|e| self.err(e))?;
        match len {
            Some(len) => {
                self.stats.len -= 1;
                self.stats.bytes -= len as u64;
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

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "qos-broker-queue-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn file(&self) -> PathBuf {
            self.0.join("queue.sqlite")
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn fifo_and_data_survive_a_reopen() {
        let dir = TempDir::new("reopen");
        let (a, b);
        {
            let mut q = SqliteQueue::open(&dir.file(), 1 << 20).unwrap();
            a = q.append(EdgeId(7), Seq(0), Seq(2), b"abc", 10).unwrap();
            b = q.append(EdgeId(8), Seq(5), Seq(5), b"de", 11).unwrap();
            assert!(b > a);
            assert_eq!((q.len(), q.bytes()), (2, 5));
            // dropped without any close: what was appended is in the file
        }
        let mut q = SqliteQueue::open(&dir.file(), 1 << 20).unwrap();
        assert_eq!((q.len(), q.bytes()), (2, 5));
        let first = q.oldest().unwrap().unwrap();
        assert_eq!(
            first,
            QueuedBatch {
                id: a,
                edge: EdgeId(7),
                first_seq: Seq(0),
                last_seq: Seq(2),
                payload: b"abc".to_vec(),
                queued_at_ms: 10,
            }
        );
        assert!(q.remove(a).unwrap());
        assert!(!q.remove(a).unwrap());
        assert_eq!(q.oldest().unwrap().unwrap().id, b);
        assert!(q.remove(b).unwrap());
        assert_eq!(q.oldest().unwrap(), None);
        // ids are never reused, even after the queue was empty and reopened
        drop(q);
        let mut q = SqliteQueue::open(&dir.file(), 1 << 20).unwrap();
        assert!(q.is_empty());
        let c = q.append(EdgeId(7), Seq(3), Seq(3), b"x", 12).unwrap();
        assert!(c > b);
    }

    #[test]
    fn appends_wait_for_the_disk_and_removals_do_not() {
        let dir = TempDir::new("sync");
        let mut q = SqliteQueue::open(&dir.file(), 1 << 20).unwrap();
        // 2 = FULL, 1 = NORMAL.
        let sync = |q: &SqliteQueue| -> i64 {
            q.conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        let a = q.append(EdgeId(7), Seq(0), Seq(2), b"abc", 10).unwrap();
        assert_eq!(sync(&q), 2);
        // The removal runs with NORMAL: a trigger sees it when it fires.
        q.conn
            .execute_batch(
                "CREATE TABLE seen (sync INTEGER);
                 CREATE TRIGGER t AFTER DELETE ON queue BEGIN
                     INSERT INTO seen SELECT synchronous FROM pragma_synchronous;
                 END;",
            )
            .unwrap();
        assert!(q.remove(a).unwrap());
        let during: i64 = q
            .conn
            .query_row("SELECT sync FROM seen", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            during, 1,
            "the removal commits without waiting for the disk"
        );
        assert_eq!(sync(&q), 2, "and the next append waits again");
    }

    #[test]
    fn quota_drops_the_oldest_and_counts_across_reopen() {
        let dir = TempDir::new("quota");
        {
            let mut q = SqliteQueue::open(&dir.file(), 10).unwrap();
            q.append(EdgeId(1), Seq(0), Seq(1), &[1; 4], 0).unwrap();
            q.append(EdgeId(1), Seq(2), Seq(2), &[2; 4], 0).unwrap();
            let third = q.append(EdgeId(1), Seq(3), Seq(5), &[3; 4], 0).unwrap();
            let s = q.stats();
            assert_eq!((s.len, s.bytes, s.dropped_quota), (2, 8, 1));
            assert_eq!(s.dropped_quota_records, 2);
            assert_eq!(q.oldest().unwrap().unwrap().first_seq, Seq(2));
            // one batch larger than the quota still goes in, alone
            let big = q.append(EdgeId(1), Seq(6), Seq(6), &[4; 20], 0).unwrap();
            assert!(big > third);
            let s = q.stats();
            assert_eq!((s.len, s.bytes, s.dropped_quota), (1, 20, 3));
            assert_eq!(s.dropped_quota_records, 2 + 1 + 3);
        }
        let q = SqliteQueue::open(&dir.file(), 10).unwrap();
        let s = q.stats();
        assert_eq!((s.len, s.bytes, s.dropped_quota), (1, 20, 3));
        assert_eq!(s.dropped_quota_records, 6);
    }

    #[test]
    fn the_file_is_in_wal_mode_with_the_documented_table() {
        let dir = TempDir::new("schema");
        let mut q = SqliteQueue::open(&dir.file(), 100).unwrap();
        q.append(EdgeId(3), Seq(1), Seq(1), b"p", 5).unwrap();
        let conn = Connection::open(dir.file()).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let row: (i64, i64, i64, Vec<u8>, i64) = conn
            .query_row(
                "SELECT edge, first_seq, last_seq, payload, queued_at FROM queue",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(row, (3, 1, 1, b"p".to_vec(), 5));
    }

    #[test]
    fn oldest_live_skips_old_batches_and_edges_with_older_ones_across_reopen() {
        let dir = TempDir::new("live");
        let c;
        {
            let mut q = SqliteQueue::open(&dir.file(), 1 << 20).unwrap();
            q.append(EdgeId(1), Seq(0), Seq(0), b"a0", 100).unwrap();
            q.append(EdgeId(2), Seq(0), Seq(0), b"b0", 100).unwrap();
            assert_eq!(q.oldest_live(500).unwrap(), None, "all old");
            q.append(EdgeId(1), Seq(1), Seq(1), b"a1", 600).unwrap();
            assert_eq!(
                q.oldest_live(500).unwrap(),
                None,
                "edge 1 has an older batch"
            );
            c = q.append(EdgeId(3), Seq(0), Seq(0), b"c0", 700).unwrap();
            q.append(EdgeId(3), Seq(1), Seq(1), b"c1", 800).unwrap();
        }
        let mut q = SqliteQueue::open(&dir.file(), 1 << 20).unwrap();
        let live = q.oldest_live(500).unwrap().unwrap();
        assert_eq!((live.id, live.payload), (c, b"c0".to_vec()));
        assert_eq!(
            q.oldest_live(750).unwrap(),
            None,
            "edge 3's newer batch waits"
        );
        assert!(q.remove(c).unwrap());
        assert_eq!(q.oldest_live(750).unwrap().unwrap().payload, b"c1");
        let head = q.oldest().unwrap().unwrap();
        assert_eq!(q.oldest_live(0).unwrap(), Some(head));
    }

    #[test]
    fn a_bad_path_names_the_file() {
        let err = SqliteQueue::open(Path::new("/no/such/dir/queue.sqlite"), 1).unwrap_err();
        assert!(
            err.to_string().contains("/no/such/dir/queue.sqlite"),
            "{err}"
        );
    }
}
