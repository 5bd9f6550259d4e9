//! WAL checkpoints off the writer's thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that pushes the WAL past 1000 pages,
//! so the ingest thread paid for it (copying pages back into the database file and, unless
//! `synchronous = off`, an fsync of it) before it could acknowledge the group. The writer of a
//! [`crate::store::SqliteStore`] therefore runs with `wal_autocheckpoint = 0` and this
//! thread, on a connection of its own, does the work:
//!
//! - every [`INTERVAL`] a `PASSIVE` checkpoint: it copies what is committed back into the
//!   database without taking the writer's lock, so commits go on meanwhile;
//! - when the WAL holds [`RESTART_FRAMES`] frames or more, a `RESTART` checkpoint. Under
//!   steady ingest the writer appends while a passive checkpoint runs, so the WAL is never
//!   fully copied at the moment the writer starts a transaction and SQLite never rewinds it;
//!   `RESTART` waits for the writer to finish its transaction, copies the last frames (the
//!   passive ones did the rest) and makes the next commit write the WAL from its start. This
//!   bounds the WAL to about [`RESTART_FRAMES`] pages plus what is committed meanwhile.
//!
//! Durability is unchanged: a commit is durable (per `synchronous`) when it is in the WAL;
//! checkpoints only move committed pages into the main file.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::store::StoreError;

/// How often the WAL is checkpointed (passively).
pub const INTERVAL: Duration = Duration::from_millis(50);
/// WAL frames (pages) from which a `RESTART` checkpoint rewinds the WAL: 16 MiB of 4 KiB
/// pages.
pub const RESTART_FRAMES: i64 = 4096;
/// How long a `RESTART` checkpoint waits for the writer's transaction and for readers of
/// older snapshots. It holds the write lock while it waits for readers, so the ingest waits
/// too: kept short, and the checkpoint is tried again at the next round when it gives up.
pub const BUSY: Duration = Duration::from_millis(20);

/// The checkpoint thread of one database; stopped (and joined) on drop.
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// Checkpoint rounds done.
    rounds: Arc<AtomicU64>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Opens a connection to `path` (a database in WAL mode) and starts the thread.
    pub fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        Checkpointer::start_with(path, INTERVAL, RESTART_FRAMES)
    }

    /// [`Checkpointer::start`] with another interval and `RESTART` threshold.
    pub fn start_with(
        path: &Path,
        interval: Duration,
        restart_frames: i64,
    ) -> Result<Checkpointer, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY).map_err(open_err)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let rounds = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, file, done) = (stop.clone(), path.to_path_buf(), rounds.clone());
            let every = Every {
                interval,
                restart_frames,
                done,
            };
            std::thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || run(&conn, &file, &stop, &every))
                .map_err(|source| StoreError::Checkpointer {
                    path: path.to_path_buf(),
                    source,
                })?
        };
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
            rounds,
        })
    }

    /// How many checkpoint rounds (each a `PASSIVE` checkpoint, and a `RESTART` one when the
    /// WAL is long) have been done.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Acquire)
    }
}

struct Every {
    interval: Duration,
    restart_frames: i64,
    done: Arc<AtomicU64>,
}

/// One checkpoint of `mode`: (WAL frames, frames copied), or `None` when another connection
/// held a lock it needed.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Option<(i64, i64)>> {
    let (busy, log, copied): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok((busy == 0).then_some((log, copied)))
}

fn run(conn: &Connection, path: &Path, stop: &(Mutex<bool>, Condvar), every: &Every) {
    let (lock, wake) = stop;
    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        stopped = match wake.wait_timeout(stopped, every.interval) {
            Ok((s, _)) => s,
            Err(e) => e.into_inner().0,
        };
        if *stopped {
            return;
        }
        let result = checkpoint(conn, "PASSIVE").and_then(|r| match r {
            Some((log, _)) if log >= every.restart_frames => checkpoint(conn, "RESTART"),
            other => Ok(other),
        });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "WAL checkpoint failed");
        }
        every.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_is_copied_back_and_rewound_while_the_writer_never_checkpoints() {
        let dir = std::env::temp_dir().join(format!("qos-checkpoint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("qos.sqlite");
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                 PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);",
            )
            .unwrap();
        let page: i64 = writer
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let ckpt = Checkpointer::start_with(&db, Duration::from_millis(2), 64).unwrap();
        let commits = 1000u64;
        for chunk in 0..20 {
            for i in 0..commits / 20 {
                writer
                    .execute(
                        "INSERT INTO t (k, v) VALUES (?1, zeroblob(200))",
                        [(chunk * 1000 + i) as i64],
                    )
                    .unwrap();
            }
            // a whole round after this chunk (bounded by count, not by time)
            let target = ckpt.rounds() + 2;
            let mut polls = 0;
            while ckpt.rounds() < target {
                polls += 1;
                assert!(polls < 100_000, "the checkpoint thread does not run");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Every commit appends at least one page to the WAL: without the thread it would hold
        // 1000 frames or more; rewound, it holds what a few chunks wrote.
        let wal = std::fs::metadata(dir.join("qos.sqlite-wal")).unwrap().len();
        assert!(wal < commits * page as u64 / 2, "WAL of {wal} B");
        // and the main file received the rows: a fresh connection sees them all
        drop(ckpt);
        drop(writer);
        let reader = Connection::open(&db).unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n as u64, commits);
        drop(reader);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
