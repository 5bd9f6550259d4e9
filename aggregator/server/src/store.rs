//! Where received records end up: the [`Store`] trait and its SQLite implementation.
//!
//! The trait is deliberately narrow (one write operation, a few reads) so that a server-grade
//! backend can replace SQLite later without touching ingest or HTTP code.
//!
//! # Records and deduplication
//! Every record an edge sends carries a sequence number, unique per edge; the store keeps each
//! `(edge, seq)` once ([`Store::insert_batch`] reports how many were new and how many were
//! duplicates). Sequence numbers are `u64`: the high 32 bits are the edge's boot epoch, the low 32
//! bits a counter restarted at every boot. Records are kept generic — their original CBOR `body`
//! plus `kind` and timestamp — and summaries additionally get queryable columns in `summaries`.
//!
//! # SQLite specifics
//! - WAL journal: readers (the HTTP workers, each on its own read-only connection from
//!   [`Store::open_reader`]) never block the writer and the writer never blocks them.
//! - `synchronous` is `FULL` by default (see [`Synchronous`] for the durability argument).
//! - `busy_timeout` of [`BUSY_TIMEOUT`] for the rare moments two writers meet (a second process,
//!   a checkpoint).
//! - Schema migrations are an ordered list of SQL scripts; `PRAGMA user_version` records how many
//!   have been applied. A database written by a newer binary (higher `user_version`) is refused.
//! - Integers are signed 64-bit in SQLite: `seq` (a `u64`) is stored as its two's-complement bit
//!   pattern, which keeps every value readable as-is for epochs below 2^31 and round-trips all
//!   others exactly. Ordering by `seq` is done in Rust.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;

pub use crate::config::Synchronous;

/// How long a connection waits for a lock held by another connection before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema migrations, in order. Migration `i` (0-based) brings `user_version` from `i` to
/// `i + 1`. Append new migrations; never edit or reorder applied ones.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    -- One row per edge that ever sent a batch. Times are unix milliseconds of reception.
    CREATE TABLE edges (
        edge_id         INTEGER PRIMARY KEY,
        name            TEXT,
        region          TEXT,
        first_seen      INTEGER NOT NULL,
        last_seen       INTEGER NOT NULL,
        last_seq        INTEGER,            -- highest seq stored (u64 bit pattern), NULL if none
        received        INTEGER NOT NULL DEFAULT 0,  -- records stored (new, not duplicates)
        duplicates      INTEGER NOT NULL DEFAULT 0,  -- records received again and ignored
        gaps            INTEGER NOT NULL DEFAULT 0,  -- forward jumps of seq within a boot epoch
        dropped_at_edge INTEGER NOT NULL DEFAULT 0   -- highest cumulative drop count reported
    );
    -- Every record once per (edge_id, seq); body is the original CBOR.
    CREATE TABLE records (
        edge_id     INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        kind        INTEGER NOT NULL,
        at          INTEGER NOT NULL,       -- unix seconds, from the edge
        received_at INTEGER NOT NULL,       -- unix milliseconds, at the super-manager
        body        BLOB NOT NULL,
        PRIMARY KEY (edge_id, seq)
    ) WITHOUT ROWID;
    -- Queryable columns of the records that are summaries; the body stays in records.
    CREATE TABLE summaries (
        edge_id      INTEGER NOT NULL,
        seq          INTEGER NOT NULL,
        probe        INTEGER NOT NULL,
        window_start INTEGER NOT NULL,      -- unix seconds
        window_len   INTEGER NOT NULL CHECK (window_len > 0),  -- seconds
        ok           INTEGER NOT NULL,
        failed       INTEGER NOT NULL,
        total_p50_us INTEGER,
        total_p95_us INTEGER,
        total_p99_us INTEGER,
        PRIMARY KEY (edge_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX summaries_by_probe_window ON summaries (probe, window_start);
    ",
    // 2: central edge configurations and the edges' reports on applying them.
    "
    -- The configuration the centre holds for an edge (GET /c). Times are unix milliseconds.
    CREATE TABLE edge_configs (
        edge_id    INTEGER PRIMARY KEY,
        etag       INTEGER NOT NULL,        -- also the `etag` inside `config`
        config     BLOB NOT NULL,           -- CDDL edge-config (CBOR)
        toml       TEXT NOT NULL,           -- the TOML it was compiled from
        source     TEXT NOT NULL,           -- 'api' or 'config-file'
        updated_at INTEGER NOT NULL
    );
    -- The last config-report of each edge (POST /c), with the last applied and rejected etags.
    CREATE TABLE config_reports (
        edge_id         INTEGER PRIMARY KEY,
        etag            INTEGER NOT NULL,
        accepted        INTEGER NOT NULL,
        reason          TEXT NOT NULL,
        at              INTEGER NOT NULL,
        applied_etag    INTEGER,
        rejected_etag   INTEGER,
        rejected_reason TEXT
    );
    ",
    // 3: services: incidents, events, notification deliveries, component metrics, hourly
    // rollups of aged summaries and the service model set through the API (crate::services).
    crate::services::db::MIGRATION,
];

/// The schema version this binary writes: the number of known migrations.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The boot epoch of a sequence number: its high 32 bits.
pub fn epoch(seq: u64) -> u32 {
    (seq >> 32) as u32
}

/// Who sent a batch, and what the batch says about that edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeKey {
    /// The edge's id.
    pub edge_id: u32,
    /// The edge's name, if the batch (or its registration) told it; `None` keeps the stored one.
    pub name: Option<String>,
    /// The edge's region, if known; `None` keeps the stored one.
    pub region: Option<String>,
    /// The edge's cumulative count of records it had to drop, as reported with this batch.
    /// The store keeps the maximum ever reported (reports may arrive out of order).
    pub dropped_at_edge: Option<u64>,
    /// When the super-manager received the batch, unix milliseconds.
    pub received_at_ms: u64,
}

impl EdgeKey {
    /// A key with only the id and reception time.
    pub fn new(edge_id: u32, received_at_ms: u64) -> EdgeKey {
        EdgeKey {
            edge_id,
            name: None,
            region: None,
            dropped_at_edge: None,
            received_at_ms,
        }
    }
}

/// A record to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Per-edge sequence number (epoch << 32 | counter).
    pub seq: u64,
    /// The record's kind (summary, event, ...) as numbered on the wire.
    pub kind: u8,
    /// When the edge produced it, unix seconds.
    pub at: u32,
    /// The original CBOR encoding.
    pub body: Vec<u8>,
    /// For summaries, the columns to index.
    pub summary: Option<SummaryColumns>,
}

/// The queryable columns of a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryColumns {
    /// The probe's id.
    pub probe: u32,
    /// Start of the summarised window, unix seconds.
    pub window_start: u32,
    /// Length of the window in seconds; must be positive.
    pub window_len: u32,
    /// Successful probe runs in the window.
    pub ok: u32,
    /// Failed probe runs in the window.
    pub failed: u32,
    /// Median of the total response time, microseconds (`None` without successful runs).
    pub total_p50_us: Option<u64>,
    /// 95th percentile of the total response time, microseconds.
    pub total_p95_us: Option<u64>,
    /// 99th percentile of the total response time, microseconds.
    pub total_p99_us: Option<u64>,
}

/// What [`Store::insert_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BatchOutcome {
    /// Records stored for the first time.
    pub new: u64,
    /// Records already stored (also repeated within the batch), ignored.
    pub duplicates: u64,
    /// Forward jumps of the sequence number within a boot epoch that this batch revealed.
    pub gaps: u64,
}

/// One row of the `edges` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeRow {
    /// The edge's id.
    pub edge_id: u32,
    /// Last name reported.
    pub name: Option<String>,
    /// Last region reported.
    pub region: Option<String>,
    /// First reception, unix milliseconds.
    pub first_seen_ms: u64,
    /// Last reception, unix milliseconds.
    pub last_seen_ms: u64,
    /// Highest sequence number stored.
    pub last_seq: Option<u64>,
    /// Records stored.
    pub received: u64,
    /// Records received again and ignored.
    pub duplicates: u64,
    /// Forward jumps of the sequence number within a boot epoch.
    pub gaps: u64,
    /// Highest cumulative drop count the edge reported.
    pub dropped_at_edge: u64,
}

/// A stored record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Sequence number.
    pub seq: u64,
    /// Kind.
    pub kind: u8,
    /// Edge timestamp, unix seconds.
    pub at: u32,
    /// Reception time, unix milliseconds.
    pub received_at_ms: u64,
    /// Original CBOR.
    pub body: Vec<u8>,
}

/// Store-wide totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StoreTotals {
    /// Edges known.
    pub edges: u64,
    /// Records stored.
    pub records: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or configured.
    #[error("cannot open store {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer binary.
    #[error(
        "store {} has schema version {found}, newer than version {supported} known to this \
         qos-aggregator; run a newer release or restore a backup",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// A read-only connection found a schema other than the current one.
    #[error(
        "store {} has schema version {found}, expected {expected} (is the writer running?)",
        path.display()
    )]
    SchemaMismatch {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        expected: u32,
    },
    /// A migration failed; it was rolled back.
    #[error("store {}: migration to schema version {version} failed: {source}", path.display())]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The version the migration leads to.
        version: u32,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// SQLite refused WAL mode (needed so readers never block the writer).
    #[error("store {}: journal mode is {mode:?}, WAL is required", path.display())]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The mode SQLite reported.
        mode: String,
    },
    /// The thread checkpointing the WAL ([`crate::store_checkpoint`]) could not be started.
    #[error("cannot start the checkpoint thread of store {}: {source}", path.display())]
    Checkpointer {
        /// The database file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A query or transaction failed; nothing of it was written.
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// The read side of a store. Implementations answer from committed data only.
pub trait StoreRead: Send {
    /// A cheap query proving the store answers (used by `GET /api/v1/health`).
    fn check(&self) -> Result<(), StoreError>;
    /// Every edge, by id.
    fn edges(&self) -> Result<Vec<EdgeRow>, StoreError>;
    /// Store-wide totals.
    fn totals(&self) -> Result<StoreTotals, StoreError>;
    /// How many records of `edge_id` are stored.
    fn count_records(&self, edge_id: u32) -> Result<u64, StoreError>;
    /// The records of `edge_id`, by sequence number.
    fn records(&self, edge_id: u32) -> Result<Vec<StoredRecord>, StoreError>;
    /// Up to `limit` summaries (edge, original CBOR) whose window starts at or after `since_s`
    /// (unix seconds), oldest window first. Read by `GET /api/v1/summaries`.
    fn summaries_since(
        &self,
        since_s: u32,
        limit: usize,
    ) -> Result<Vec<(u32, Vec<u8>)>, StoreError>;
}

/// A store: the single writer plus the reads. Owned by the ingest thread (or behind a mutex).
pub trait Store: StoreRead {
    /// Stores a batch of records from one edge in one transaction.
    ///
    /// Each `(edge, seq)` is stored once: a record already present (or repeated in the batch) is
    /// counted as a duplicate and otherwise ignored. The edge's row is created or updated in the
    /// same transaction: `last_seen`, `last_seq` (maximum), `received` (+ new), `duplicates`
    /// (+ duplicates), `gaps` (+ forward jumps within an epoch among the new records, taken in
    /// sequence order; a jump to a new epoch is not a gap, a late record is not a gap either),
    /// `dropped_at_edge` (maximum reported), and `name`/`region` when given.
    ///
    /// On error nothing of the batch is written. On `Ok` the batch is committed with the
    /// durability of the configured [`Synchronous`] mode, so it may be acknowledged.
    fn insert_batch(
        &mut self,
        edge: &EdgeKey,
        records: &[NewRecord],
    ) -> Result<BatchOutcome, StoreError>;

    /// Stores several batches (of one or more edges) in ONE transaction (group commit), each
    /// exactly as [`Store::insert_batch`] would in turn, and returns their outcomes in order.
    ///
    /// All or nothing: on error nothing of any batch is written, so none may be acknowledged.
    /// The default stores them one by one (not atomic as a group, each batch still is).
    fn insert_batches(
        &mut self,
        batches: &[(&EdgeKey, &[NewRecord])],
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        batches
            .iter()
            .map(|(edge, records)| self.insert_batch(edge, records))
            .collect()
    }

    /// A new read-only view of this store for another thread; it does not block this writer.
    fn open_reader(&self) -> Result<Box<dyn StoreRead>, StoreError>;
}

/// Converts a `u64` to SQLite's `i64` keeping the bit pattern.
fn to_sql_u64(v: u64) -> i64 {
    v as i64
}

/// Inverse of [`to_sql_u64`].
fn from_sql_u64(v: i64) -> u64 {
    v as u64
}

/// A counter value for SQLite, saturating (counters never approach 2^63 in practice).
fn to_sql_count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A count read from SQLite; negative values cannot occur in a database this code wrote.
fn from_sql_count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The SQLite store: one writer connection. See the module docs.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Checkpoints the WAL on its own connection and thread (the writer does not).
    _checkpointer: crate::store_checkpoint::Checkpointer,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, enables WAL, sets `synchronous`,
    /// and applies pending migrations. The parent directory must exist.
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.pragma_update(None, "synchronous", synchronous.pragma_value())
            .map_err(open_err)?;
        // Checkpoints run on their own thread ([`crate::store_checkpoint`]), not in a commit
        // that an acknowledgement waits for.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            _checkpointer: crate::store_checkpoint::Checkpointer::start(path)?,
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies pending migrations, each in its own immediate transaction that re-reads
    /// `user_version`, so two processes opening the same new file cannot both migrate it.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|source| StoreError::Open {
                    path: path.clone(),
                    source,
                })?;
            let found = user_version(&tx).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
            if found > i64::from(SCHEMA_VERSION) {
                return Err(StoreError::SchemaTooNew {
                    path,
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            if found == i64::from(SCHEMA_VERSION) {
                return Ok(());
            }
            // 0 <= found < SCHEMA_VERSION here (a negative user_version was not written by us).
            let index = usize::try_from(found).map_err(|_| StoreError::SchemaTooNew {
                path: path.clone(),
                found,
                supported: SCHEMA_VERSION,
            })?;
            let version = index as u32 + 1;
            let migration_err = |source| StoreError::Migration {
                path: path.clone(),
                version,
                source,
            };
            tx.execute_batch(MIGRATIONS[index]).map_err(migration_err)?;
            tx.pragma_update(None, "user_version", version)
                .map_err(migration_err)?;
            tx.commit().map_err(migration_err)?;
            tracing::info!(path = %path.display(), version, "store schema migrated");
        }
    }
}

/// Reads `PRAGMA user_version`.
fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// A read-only connection to a [`SqliteStore`]'s database.
pub struct SqliteReader {
    conn: Connection,
}

impl SqliteReader {
    /// Opens `path` read-only. The database must exist with the current schema.
    pub fn open(path: &Path) -> Result<SqliteReader, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let found = user_version(&conn).map_err(open_err)?;
        if found != i64::from(SCHEMA_VERSION) {
            return Err(StoreError::SchemaMismatch {
                path: path.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        Ok(SqliteReader { conn })
    }
}

fn check(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("SELECT count(*) FROM edges", [], |row| row.get::<_, i64>(0))?;
    Ok(())
}

fn edges(conn: &Connection) -> Result<Vec<EdgeRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT edge_id, name, region, first_seen, last_seen, last_seq, received, duplicates,
                gaps, dropped_at_edge
         FROM edges ORDER BY edge_id",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(EdgeRow {
            edge_id: row.get(0)?,
            name: row.get(1)?,
            region: row.get(2)?,
            first_seen_ms: from_sql_count(row.get(3)?),
            last_seen_ms: from_sql_count(row.get(4)?),
            last_seq: row.get::<_, Option<i64>>(5)?.map(from_sql_u64),
            received: from_sql_count(row.get(6)?),
            duplicates: from_sql_count(row.get(7)?),
            gaps: from_sql_count(row.get(8)?),
            dropped_at_edge: from_sql_count(row.get(9)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn totals(conn: &Connection) -> Result<StoreTotals, StoreError> {
    // `received` counts exactly the stored records and is updated in the same transaction, so
    // its sum is the record count without scanning `records`.
    let (edges, records): (i64, i64) = conn.query_row(
        "SELECT count(*), coalesce(sum(received), 0) FROM edges",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(StoreTotals {
        edges: from_sql_count(edges),
        records: from_sql_count(records),
    })
}

fn count_records(conn: &Connection, edge_id: u32) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM records WHERE edge_id = ?1",
        [edge_id],
        |row| row.get(0),
    )?;
    Ok(from_sql_count(n))
}

fn records(conn: &Connection, edge_id: u32) -> Result<Vec<StoredRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, at, received_at, body FROM records WHERE edge_id = ?1",
    )?;
    let rows = stmt.query_map([edge_id], |row| {
        Ok(StoredRecord {
            seq: from_sql_u64(row.get(0)?),
            kind: row.get(1)?,
            at: row.get(2)?,
            received_at_ms: from_sql_count(row.get(3)?),
            body: row.get(4)?,
        })
    })?;
    let mut out: Vec<StoredRecord> = rows.collect::<Result<_, _>>()?;
    out.sort_by_key(|r| r.seq);
    Ok(out)
}

fn summaries_since(
    conn: &Connection,
    since_s: u32,
    limit: usize,
) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.edge_id, r.body FROM summaries s JOIN records r USING (edge_id, seq)
         WHERE s.window_start >= ?1 ORDER BY s.window_start, s.edge_id, s.probe LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![since_s, limit], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

macro_rules! impl_store_read {
    ($ty:ty) => {
        impl StoreRead for $ty {
            fn check(&self) -> Result<(), StoreError> {
                check(&self.conn)
            }
            fn edges(&self) -> Result<Vec<EdgeRow>, StoreError> {
                edges(&self.conn)
            }
            fn totals(&self) -> Result<StoreTotals, StoreError> {
                totals(&self.conn)
            }
            fn count_records(&self, edge_id: u32) -> Result<u64, StoreError> {
                count_records(&self.conn, edge_id)
            }
            fn records(&self, edge_id: u32) -> Result<Vec<StoredRecord>, StoreError> {
                records(&self.conn, edge_id)
            }
            fn summaries_since(
                &self,
                since_s: u32,
                limit: usize,
            ) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
                summaries_since(&self.conn, since_s, limit)
            }
        }
    };
}

impl_store_read!(SqliteStore);
impl_store_read!(SqliteReader);

impl Store for SqliteStore {
    fn insert_batch(
        &mut self,
        edge: &EdgeKey,
        batch: &[NewRecord],
    ) -> Result<BatchOutcome, StoreError> {
        Ok(self.insert_batches(&[(edge, batch)])?.remove(0))
    }

    fn insert_batches(
        &mut self,
        batches: &[(&EdgeKey, &[NewRecord])],
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcomes = insert_group(&tx, batches)?;
        tx.commit()?;
        Ok(outcomes)
    }

    fn open_reader(&self) -> Result<Box<dyn StoreRead>, StoreError> {
        Ok(Box::new(SqliteReader::open(&self.path)?))
    }
}

/// An edge's row as a group of batches changes it, written once at the end of the group.
struct EdgeUpdate<'k> {
    edge_id: i64,
    first_seen: i64,
    last_seen: i64,
    last_seq: Option<u64>,
    name: Option<&'k str>,
    region: Option<&'k str>,
    new: u64,
    duplicates: u64,
    gaps: u64,
    dropped: u64,
}

/// The body of [`Store::insert_batches`] inside the caller's transaction `tx`: the batches in
/// turn, a later batch of an edge seeing the records and `last_seq` of the earlier ones. Each
/// edge's row is read once and written once for the whole group (the sum of what the batches
/// one by one would have done).
fn insert_group<'k>(
    tx: &rusqlite::Transaction<'_>,
    batches: &[(&'k EdgeKey, &[NewRecord])],
) -> Result<Vec<BatchOutcome>, StoreError> {
    let mut edges: Vec<EdgeUpdate<'k>> = Vec::new();
    let mut outcomes = Vec::with_capacity(batches.len());
    let mut select_edge = tx.prepare_cached("SELECT last_seq FROM edges WHERE edge_id = ?1")?;
    let mut insert_record = tx.prepare_cached(
        "INSERT OR IGNORE INTO records (edge_id, seq, kind, at, received_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut insert_summary = tx.prepare_cached(
        "INSERT INTO summaries (edge_id, seq, probe, window_start, window_len, ok, failed,
                                total_p50_us, total_p95_us, total_p99_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut stored = Vec::new();
    for &(key, batch) in batches {
        let now = to_sql_count(key.received_at_ms);
        let edge_id = i64::from(key.edge_id);
        let i = match edges.iter().position(|e| e.edge_id == edge_id) {
            Some(i) => i,
            None => {
                let previous: Option<Option<i64>> = select_edge
                    .query_row([edge_id], |row| row.get(0))
                    .optional()?;
                edges.push(EdgeUpdate {
                    edge_id,
                    first_seen: now,
                    last_seen: now,
                    last_seq: previous.flatten().map(from_sql_u64),
                    name: None,
                    region: None,
                    new: 0,
                    duplicates: 0,
                    gaps: 0,
                    dropped: 0,
                });
                edges.len() - 1
            }
        };
        let edge = &mut edges[i];

        let mut outcome = BatchOutcome::default();
        stored.clear();
        for record in batch {
            let seq = to_sql_u64(record.seq);
            let inserted = insert_record.execute(params![
                edge_id,
                seq,
                record.kind,
                record.at,
                now,
                record.body
            ])?;
            if inserted == 0 {
                outcome.duplicates += 1;
                continue;
            }
            outcome.new += 1;
            stored.push(record.seq);
            if let Some(s) = &record.summary {
                insert_summary.execute(params![
                    edge_id,
                    seq,
                    s.probe,
                    s.window_start,
                    s.window_len,
                    s.ok,
                    s.failed,
                    s.total_p50_us.map(to_sql_count),
                    s.total_p95_us.map(to_sql_count),
                    s.total_p99_us.map(to_sql_count),
                ])?;
            }
        }

        // Gaps: walk the newly stored numbers in order from the previous high-water mark.
        stored.sort_unstable();
        for &seq in &stored {
            match edge.last_seq {
                Some(last) if seq <= last => {} // late (reordered) record: not a gap
                Some(last) => {
                    if epoch(seq) == epoch(last) && seq > last + 1 {
                        outcome.gaps += 1;
                    }
                    edge.last_seq = Some(seq);
                }
                None => edge.last_seq = Some(seq),
            }
        }
        edge.last_seen = edge.last_seen.max(now);
        edge.name = key.name.as_deref().or(edge.name);
        edge.region = key.region.as_deref().or(edge.region);
        edge.new += outcome.new;
        edge.duplicates += outcome.duplicates;
        edge.gaps += outcome.gaps;
        edge.dropped = edge.dropped.max(key.dropped_at_edge.unwrap_or(0));
        outcomes.push(outcome);
    }

    for e in &edges {
        let (name, region, seq) = (e.name, e.region, e.last_seq.map(to_sql_u64));
        let (new, dups, gaps) = (
            to_sql_count(e.new),
            to_sql_count(e.duplicates),
            to_sql_count(e.gaps),
        );
        let dropped = to_sql_count(e.dropped);
        // New edge: its row as is; known edge: the group's sums added to its row.
        tx.prepare_cached(
            "INSERT INTO edges (edge_id, name, region, first_seen, last_seen, last_seq,
                                received, duplicates, gaps, dropped_at_edge)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (edge_id) DO UPDATE SET
                name = coalesce(excluded.name, name),
                region = coalesce(excluded.region, region),
                last_seen = max(last_seen, excluded.last_seen),
                last_seq = excluded.last_seq,
                received = received + excluded.received,
                duplicates = duplicates + excluded.duplicates,
                gaps = gaps + excluded.gaps,
                dropped_at_edge = max(dropped_at_edge, excluded.dropped_at_edge)",
        )?
        .execute(params![
            e.edge_id,
            name,
            region,
            e.first_seen,
            e.last_seen,
            seq,
            new,
            dups,
            gaps,
            dropped
        ])?;
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "qos-aggregator-store-{}-{name}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn db(&self) -> PathBuf {
            self.0.join("qos.sqlite")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(dir: &TempDir) -> SqliteStore {
        SqliteStore::open(&dir.db(), Synchronous::Full).unwrap()
    }

    fn rec(seq: u64) -> NewRecord {
        NewRecord {
            seq,
            kind: 1,
            at: 1_700_000_000,
            body: vec![0x82, 0x01, (seq & 0x17) as u8],
            summary: None,
        }
    }

    fn recs(seqs: &[u64]) -> Vec<NewRecord> {
        seqs.iter().copied().map(rec).collect()
    }

    fn summary(window_len: u32) -> SummaryColumns {
        SummaryColumns {
            probe: 7,
            window_start: 1_700_000_000,
            window_len,
            ok: 58,
            failed: 2,
            total_p50_us: Some(12_000),
            total_p95_us: Some(40_000),
            total_p99_us: None,
        }
    }

    fn edge_row(store: &SqliteStore, edge_id: u32) -> EdgeRow {
        store
            .edges()
            .unwrap()
            .into_iter()
            .find(|e| e.edge_id == edge_id)
            .unwrap()
    }

    fn seqs(store: &SqliteStore, edge_id: u32) -> Vec<u64> {
        store
            .records(edge_id)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect()
    }

    #[test]
    fn migrates_an_empty_file_to_the_current_schema_in_wal_mode() {
        let dir = TempDir::new("migrate");
        let store = open(&dir);
        assert_eq!(
            user_version(&store.conn).unwrap(),
            i64::from(SCHEMA_VERSION)
        );
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let tables: Vec<String> = store
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            tables,
            [
                "component_metrics",
                "config_reports",
                "edge_configs",
                "edges",
                "events",
                "incidents",
                "notifications",
                "records",
                "rollup_hourly",
                "service_model",
                "summaries"
            ]
        );
        assert_eq!(store.totals().unwrap(), StoreTotals::default());
        store.check().unwrap();
    }

    #[test]
    fn normal_synchronous_is_applied() {
        let dir = TempDir::new("normal");
        let store = SqliteStore::open(&dir.db(), Synchronous::Normal).unwrap();
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
    }

    #[test]
    fn the_writer_leaves_checkpoints_to_its_thread() {
        let dir = TempDir::new("autocheckpoint");
        let store = open(&dir);
        let n: i64 = store
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn same_batch_twice_is_stored_once() {
        let dir = TempDir::new("dedup");
        let mut store = open(&dir);
        let batch = recs(&[1, 2, 3]);
        let first = store.insert_batch(&EdgeKey::new(9, 1_000), &batch).unwrap();
        assert_eq!((first.new, first.duplicates), (3, 0));
        let second = store.insert_batch(&EdgeKey::new(9, 2_000), &batch).unwrap();
        assert_eq!((second.new, second.duplicates, second.gaps), (0, 3, 0));
        assert_eq!(store.count_records(9).unwrap(), 3);
        assert_eq!(seqs(&store, 9), [1, 2, 3]);
        let row = edge_row(&store, 9);
        assert_eq!((row.received, row.duplicates), (3, 3));
        assert_eq!(row.last_seq, Some(3));
        assert_eq!((row.first_seen_ms, row.last_seen_ms), (1_000, 2_000));
        assert_eq!(
            store.totals().unwrap(),
            StoreTotals {
                edges: 1,
                records: 3
            }
        );
    }

    #[test]
    fn repeats_within_a_batch_are_duplicates() {
        let dir = TempDir::new("intra");
        let mut store = open(&dir);
        let out = store
            .insert_batch(&EdgeKey::new(1, 1), &recs(&[4, 4, 5, 4]))
            .unwrap();
        assert_eq!((out.new, out.duplicates), (2, 2));
        assert_eq!(seqs(&store, 1), [4, 5]);
    }

    #[test]
    fn same_seq_from_different_edges_is_not_a_duplicate() {
        let dir = TempDir::new("edges");
        let mut store = open(&dir);
        store
            .insert_batch(&EdgeKey::new(1, 1), &recs(&[1]))
            .unwrap();
        let out = store
            .insert_batch(&EdgeKey::new(2, 1), &recs(&[1]))
            .unwrap();
        assert_eq!((out.new, out.duplicates), (1, 0));
        assert_eq!(store.totals().unwrap().edges, 2);
    }

    #[test]
    fn forward_jumps_within_an_epoch_are_gaps() {
        let dir = TempDir::new("gaps");
        let mut store = open(&dir);
        let key = EdgeKey::new(3, 1);
        // Reordered inside the batch, nothing missing: no gap.
        assert_eq!(store.insert_batch(&key, &recs(&[3, 1, 2])).unwrap().gaps, 0);
        // 3 -> 5 skips 4: one gap.
        assert_eq!(store.insert_batch(&key, &recs(&[5])).unwrap().gaps, 1);
        // 5 -> 6 fine, 6 -> 10 a jump: one more gap.
        assert_eq!(store.insert_batch(&key, &recs(&[10, 6])).unwrap().gaps, 1);
        // 4 arrives late: stored, not a gap, high-water mark unchanged.
        let late = store.insert_batch(&key, &recs(&[4])).unwrap();
        assert_eq!((late.new, late.gaps), (1, 0));
        let row = edge_row(&store, 3);
        assert_eq!(row.gaps, 2);
        assert_eq!(row.last_seq, Some(10));
        assert_eq!(row.received, 7);
    }

    #[test]
    fn a_group_is_stored_as_its_batches_in_turn_or_not_at_all() {
        let dir = TempDir::new("group");
        let mut store = open(&dir);
        let (a, b) = (EdgeKey::new(3, 1), EdgeKey::new(4, 1));
        let (r1, r2, r3, r4) = (recs(&[1, 2]), recs(&[2, 5]), recs(&[1]), recs(&[3]));
        let out = store
            .insert_batches(&[(&a, &r1), (&b, &r3), (&a, &r2), (&a, &r4)])
            .unwrap();
        let got: Vec<_> = out.iter().map(|o| (o.new, o.duplicates, o.gaps)).collect();
        // the second batch of edge 3 sees the first: 2 is a duplicate, 5 a gap; 3 is late
        assert_eq!(got, [(2, 0, 0), (1, 0, 0), (1, 1, 1), (1, 0, 0)]);
        assert_eq!(seqs(&store, 3), [1, 2, 3, 5]);
        let row = edge_row(&store, 3);
        assert_eq!((row.received, row.duplicates, row.gaps), (4, 1, 1));
        assert_eq!(row.last_seq, Some(5));

        // A failure in the last batch undoes the whole group.
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER fail_9 BEFORE INSERT ON records WHEN NEW.edge_id = 9
                 BEGIN SELECT RAISE(ABORT, 'forced'); END;",
            )
            .unwrap();
        let c = EdgeKey::new(9, 2);
        let (r5, r6) = (recs(&[6]), recs(&[1]));
        assert!(store
            .insert_batches(&[(&a, &r5), (&b, &r4), (&c, &r6)])
            .is_err());
        assert_eq!(seqs(&store, 3), [1, 2, 3, 5]);
        assert_eq!(seqs(&store, 4), [1]);
        assert_eq!(store.totals().unwrap().edges, 2, "no row for edge 9");
    }

    #[test]
    fn a_new_boot_epoch_is_not_a_gap() {
        let dir = TempDir::new("epoch");
        let mut store = open(&dir);
        let key = EdgeKey::new(4, 1);
        store.insert_batch(&key, &recs(&[1, 2, 7_000])).unwrap();
        assert_eq!(edge_row(&store, 4).gaps, 1);
        let boot1 = 1u64 << 32;
        let out = store
            .insert_batch(&key, &recs(&[boot1 + 1, boot1 + 2]))
            .unwrap();
        assert_eq!(out.gaps, 0);
        // Jumping within the new epoch is a gap again.
        let out = store.insert_batch(&key, &recs(&[boot1 + 9])).unwrap();
        assert_eq!(out.gaps, 1);
        let row = edge_row(&store, 4);
        assert_eq!(row.gaps, 2);
        assert_eq!(row.last_seq, Some(boot1 + 9));
    }

    #[test]
    fn sequence_numbers_above_i64_max_round_trip() {
        let dir = TempDir::new("bigseq");
        let mut store = open(&dir);
        let high = (u64::from(u32::MAX) << 32) | 5;
        store
            .insert_batch(&EdgeKey::new(5, 1), &recs(&[high, high + 1, 3]))
            .unwrap();
        assert_eq!(seqs(&store, 5), [3, high, high + 1]);
        assert_eq!(edge_row(&store, 5).last_seq, Some(high + 1));
        let again = store
            .insert_batch(&EdgeKey::new(5, 2), &recs(&[high]))
            .unwrap();
        assert_eq!(again.duplicates, 1);
    }

    #[test]
    fn an_error_mid_batch_writes_nothing() {
        let dir = TempDir::new("rollback");
        let mut store = open(&dir);
        let key = EdgeKey::new(6, 1_000);
        store.insert_batch(&key, &recs(&[1, 2])).unwrap();
        let before = edge_row(&store, 6);

        // The third record violates CHECK (window_len > 0) after two good inserts.
        let mut batch = recs(&[3, 4, 5, 6]);
        batch[0].summary = Some(summary(60));
        batch[2].summary = Some(summary(0));
        let mut later = key.clone();
        later.received_at_ms = 5_000;
        later.dropped_at_edge = Some(99);
        later.name = Some("should-not-appear".into());
        let err = store.insert_batch(&later, &batch).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");

        assert_eq!(seqs(&store, 6), [1, 2]);
        assert_eq!(edge_row(&store, 6), before);
        let summaries: i64 = store
            .conn
            .query_row("SELECT count(*) FROM summaries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(summaries, 0);

        // The store is usable afterwards and the corrected batch goes in whole.
        batch[2].summary = Some(summary(60));
        let out = store.insert_batch(&later, &batch).unwrap();
        assert_eq!((out.new, out.duplicates), (4, 0));
        assert_eq!(edge_row(&store, 6).dropped_at_edge, 99);
    }

    #[test]
    fn a_failed_first_batch_leaves_no_edge_row() {
        let dir = TempDir::new("rollback-new");
        let mut store = open(&dir);
        let mut batch = recs(&[1, 2]);
        batch[1].summary = Some(summary(0));
        store.insert_batch(&EdgeKey::new(8, 1), &batch).unwrap_err();
        assert!(store.edges().unwrap().is_empty());
        assert_eq!(store.count_records(8).unwrap(), 0);
    }

    #[test]
    fn summaries_get_their_columns() {
        let dir = TempDir::new("summaries");
        let mut store = open(&dir);
        let mut batch = recs(&[1, 2]);
        batch[1].summary = Some(summary(60));
        store.insert_batch(&EdgeKey::new(2, 1), &batch).unwrap();
        // Stored again: no second summaries row, no error.
        store.insert_batch(&EdgeKey::new(2, 2), &batch).unwrap();
        let row: (i64, i64, i64, i64, i64, Option<i64>, Option<i64>) = store
            .conn
            .query_row(
                "SELECT seq, probe, window_len, ok, failed, total_p50_us, total_p99_us
                 FROM summaries",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(row, (2, 7, 60, 58, 2, Some(12_000), None));
    }

    #[test]
    fn edge_metadata_is_kept_and_drops_take_the_maximum() {
        let dir = TempDir::new("meta");
        let mut store = open(&dir);
        let mut key = EdgeKey::new(11, 1);
        key.name = Some("shop-probe".into());
        key.region = Some("eu-west".into());
        key.dropped_at_edge = Some(5);
        store.insert_batch(&key, &recs(&[1])).unwrap();
        // An older report arrives late, without metadata.
        let mut late = EdgeKey::new(11, 2);
        late.dropped_at_edge = Some(3);
        store.insert_batch(&late, &recs(&[2])).unwrap();
        let row = edge_row(&store, 11);
        assert_eq!(row.dropped_at_edge, 5);
        assert_eq!(row.name.as_deref(), Some("shop-probe"));
        assert_eq!(row.region.as_deref(), Some("eu-west"));
        late.dropped_at_edge = Some(9);
        // An empty batch still updates the edge.
        let out = store.insert_batch(&late, &[]).unwrap();
        assert_eq!(out, BatchOutcome::default());
        assert_eq!(edge_row(&store, 11).dropped_at_edge, 9);
    }

    #[test]
    fn refuses_a_database_from_a_newer_binary() {
        let dir = TempDir::new("newer");
        drop(open(&dir));
        let raw = Connection::open(dir.db()).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(raw);
        let err = SqliteStore::open(&dir.db(), Synchronous::Full).unwrap_err();
        match &err {
            StoreError::SchemaTooNew {
                found, supported, ..
            } => {
                assert_eq!(*found, i64::from(SCHEMA_VERSION) + 1);
                assert_eq!(*supported, SCHEMA_VERSION);
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        assert!(err.to_string().contains("qos.sqlite"), "{err}");
        // The reader refuses it too.
        assert!(matches!(
            SqliteReader::open(&dir.db()),
            Err(StoreError::SchemaMismatch { .. })
        ));
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = TempDir::new("garbage");
        std::fs::write(dir.db(), vec![0x5a; 4096]).unwrap();
        let err = SqliteStore::open(&dir.db(), Synchronous::Full).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    }

    #[test]
    fn data_survives_reopening() {
        let dir = TempDir::new("reopen");
        {
            let mut store = open(&dir);
            let mut key = EdgeKey::new(12, 7);
            key.region = Some("ap-south".into());
            store.insert_batch(&key, &recs(&[1, 2, 4])).unwrap();
        }
        let mut store = open(&dir);
        assert_eq!(seqs(&store, 12), [1, 2, 4]);
        let row = edge_row(&store, 12);
        assert_eq!((row.received, row.gaps, row.last_seq), (3, 1, Some(4)));
        assert_eq!(row.region.as_deref(), Some("ap-south"));
        let body = &store.records(12).unwrap()[2].body;
        assert_eq!(body, &rec(4).body);
        let again = store
            .insert_batch(&EdgeKey::new(12, 8), &recs(&[4, 5]))
            .unwrap();
        assert_eq!((again.new, again.duplicates), (1, 1));
    }

    #[test]
    fn readers_see_commits_and_are_not_blocked_by_an_open_write() {
        let dir = TempDir::new("reader");
        let mut store = open(&dir);
        store
            .insert_batch(&EdgeKey::new(1, 1), &recs(&[1]))
            .unwrap();
        let reader = store.open_reader().unwrap();
        assert_eq!(reader.totals().unwrap().records, 1);

        // Another connection holds the write lock with uncommitted rows.
        let mut other = Connection::open(dir.db()).unwrap();
        let tx = other
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        tx.execute(
            "UPDATE edges SET received = received + 100 WHERE edge_id = 1",
            [],
        )
        .unwrap();
        // The reader answers at once from the last commit.
        assert_eq!(reader.totals().unwrap().records, 1);
        reader.check().unwrap();
        tx.rollback().unwrap();

        store
            .insert_batch(&EdgeKey::new(1, 2), &recs(&[2]))
            .unwrap();
        assert_eq!(reader.totals().unwrap().records, 2);
        assert_eq!(reader.count_records(1).unwrap(), 2);
        assert_eq!(reader.edges().unwrap().len(), 1);
    }

    #[test]
    fn reader_refuses_a_missing_database() {
        let dir = TempDir::new("no-db");
        assert!(matches!(
            SqliteReader::open(&dir.db()),
            Err(StoreError::Open { .. })
        ));
    }
}
