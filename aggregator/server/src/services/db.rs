//! The services' tables (schema migration 3) and their queries, on a connection of their own.
//!
//! - `incidents`: one row per incident (its JSON as the engine last reported it);
//! - `events`: what the engine reported, in order (state changes, alerts, incidents, …);
//! - `notifications`: the webhook delivery log, one row per attempt;
//! - `component_metrics`: component metrics pushed, imported, scraped or taken from edges' host
//!   metrics (time in Unix seconds);
//! - `rollup_hourly`: one merged summary per (edge, probe, hour) for summaries older than
//!   `retention.raw_days`, with the count of windows and of bad windows;
//! - `service_model`: the model last set with `PUT /api/v1/model`.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::ingest::CentralSummary;
use crate::store::StoreError;

/// Schema migration 3.
pub const MIGRATION: &str = "
    CREATE INDEX records_by_received ON records (received_at);
    CREATE INDEX summaries_by_window ON summaries (window_start);
    CREATE TABLE incidents (
        id          INTEGER PRIMARY KEY,
        subject     TEXT NOT NULL,
        opened_at   INTEGER NOT NULL,        -- unix seconds
        updated_at  INTEGER NOT NULL,
        resolved_at INTEGER,
        status      TEXT NOT NULL,
        top_cause   TEXT,
        body        TEXT NOT NULL            -- JSON
    );
    CREATE INDEX incidents_open ON incidents (resolved_at);
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,            -- unix seconds
        kind    TEXT NOT NULL,
        subject TEXT,
        body    TEXT NOT NULL
    );
    CREATE TABLE notifications (
        id           INTEGER PRIMARY KEY,
        webhook      TEXT NOT NULL,
        notification INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        at           INTEGER NOT NULL,
        delivered    INTEGER NOT NULL,
        status       INTEGER,
        reason       TEXT,
        next_attempt INTEGER,
        gave_up      INTEGER NOT NULL
    );
    CREATE TABLE component_metrics (
        component TEXT NOT NULL,
        metric    TEXT NOT NULL,
        at        REAL NOT NULL,             -- unix seconds
        value     REAL NOT NULL,
        PRIMARY KEY (component, metric, at)
    ) WITHOUT ROWID;
    CREATE INDEX component_metrics_by_time ON component_metrics (at);
    CREATE TABLE rollup_hourly (
        edge_id     INTEGER NOT NULL,
        probe       INTEGER NOT NULL,
        hour        INTEGER NOT NULL,        -- unix seconds, multiple of 3600
        windows     INTEGER NOT NULL,
        bad_windows INTEGER NOT NULL,
        ok          INTEGER NOT NULL,
        failed      INTEGER NOT NULL,
        body        BLOB NOT NULL,           -- the merged summary (CBOR)
        PRIMARY KEY (edge_id, probe, hour)
    ) WITHOUT ROWID;
    CREATE TABLE service_model (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        source     TEXT NOT NULL,
        format     TEXT NOT NULL,            -- 'toml' or 'json'
        updated_at INTEGER NOT NULL          -- unix seconds
    );
";

/// A stored summary read back for the engine or a series.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    /// The edge.
    pub edge: u32,
    /// Windows it covers (1 for a raw summary).
    pub windows: u64,
    /// Bad windows among them (`None` for a raw summary: judged by the reader).
    pub bad_windows: Option<u64>,
    /// The summary.
    pub summary: Box<CentralSummary>,
}

/// The body of a stored record: `records.body` holds the record as received, `[kind, body]`
/// (a two-element array); rollups hold a bare summary (an array of at least eight).
pub fn record_body(stored: &[u8]) -> &[u8] {
    match stored {
        [0x82, kind, rest @ ..] if *kind < 24 => rest,
        _ => stored,
    }
}

/// Decode a stored summary (a record as received, or a bare summary).
pub fn decode_summary(body: &[u8]) -> Option<Box<CentralSummary>> {
    let mut d = minicbor::Decoder::new(record_body(body));
    CentralSummary::decode(&mut d).ok().map(Box::new)
}

/// Encode a summary.
pub fn encode_summary(s: &CentralSummary) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let n = qos_wire::codec::encode_into(&mut buf, |e| s.encode(e)).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// Raw summaries of `probes` ((edge, probe) pairs; all when empty) with a window start in
/// `[from, to)`.
pub fn raw_summaries(
    conn: &Connection,
    probes: &[(u32, u16)],
    from: u64,
    to: u64,
) -> Result<Vec<SummaryRow>, StoreError> {
    let mut out = Vec::new();
    let mut each = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(p)?;
        while let Some(r) = rows.next()? {
            let edge: u32 = r.get(0)?;
            let body: Vec<u8> = r.get(1)?;
            if let Some(summary) = decode_summary(&body) {
                out.push(SummaryRow {
                    edge,
                    windows: 1,
                    bad_windows: None,
                    summary,
                });
            }
        }
        Ok(())
    };
    let (from, to) = (sql_time(from), sql_time(to));
    if probes.is_empty() {
        each(
            "SELECT s.edge_id, r.body FROM summaries s JOIN records r
               ON r.edge_id = s.edge_id AND r.seq = s.seq
             WHERE s.window_start >= ?1 AND s.window_start < ?2
             ORDER BY s.window_start",
            &[&from, &to],
        )?;
    } else {
        for &(edge, probe) in probes {
            each(
                "SELECT s.edge_id, r.body FROM summaries s JOIN records r
                   ON r.edge_id = s.edge_id AND r.seq = s.seq
                 WHERE s.probe = ?3 AND s.edge_id = ?4
                   AND s.window_start >= ?1 AND s.window_start < ?2",
                &[&from, &to, &probe, &edge],
            )?;
        }
    }
    Ok(out)
}

/// Hourly rollups of `probes` with an hour in `[from, to)`.
pub fn hourly_summaries(
    conn: &Connection,
    probes: &[(u32, u16)],
    from: u64,
    to: u64,
) -> Result<Vec<SummaryRow>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT edge_id, windows, bad_windows, body FROM rollup_hourly
         WHERE edge_id = ?1 AND probe = ?2 AND hour >= ?3 AND hour < ?4",
    )?;
    for &(edge, probe) in probes {
        let mut rows = stmt.query(params![edge, probe, sql_time(from), sql_time(to)])?;
        while let Some(r) = rows.next()? {
            let body: Vec<u8> = r.get(3)?;
            if let Some(summary) = decode_summary(&body) {
                out.push(SummaryRow {
                    edge: r.get(0)?,
                    windows: r.get::<_, i64>(1)? as u64,
                    bad_windows: Some(r.get::<_, i64>(2)? as u64),
                    summary,
                });
            }
        }
    }
    Ok(out)
}

fn sql_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Records stored after `(received_at, edge, seq)` (exclusive), oldest first, at most
/// `limit`: `(received_at_ms, edge, seq, kind, body)`.
pub type NewRow = (u64, u32, i64, u8, Vec<u8>);

/// New records since a cursor (see [`NewRow`]).
pub fn records_after(
    conn: &Connection,
    cursor: (u64, u32, i64),
    limit: usize,
) -> Result<Vec<NewRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT received_at, edge_id, seq, kind, body FROM records
         WHERE received_at > ?1 OR (received_at = ?1 AND (edge_id > ?2
               OR (edge_id = ?2 AND seq > ?3)))
         ORDER BY received_at, edge_id, seq LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![sql_time(cursor.0), cursor.1, cursor.2, limit as i64],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest `received_at` stored (0 when empty).
pub fn last_received(conn: &Connection) -> Result<u64, StoreError> {
    let v: Option<i64> =
        conn.query_row("SELECT max(received_at) FROM records", [], |r| r.get(0))?;
    Ok(v.unwrap_or(0) as u64)
}

/// Raw summaries with a window start at or after `from` received at or before
/// `received_max` (Unix ms), for the engine's replay.
pub fn summaries_received_by(
    conn: &Connection,
    from: u64,
    received_max: u64,
) -> Result<Vec<SummaryRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.edge_id, r.body FROM summaries s JOIN records r
           ON r.edge_id = s.edge_id AND r.seq = s.seq
         WHERE s.window_start >= ?1 AND r.received_at <= ?2",
    )?;
    let mut rows = stmt.query(params![sql_time(from), sql_time(received_max)])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let body: Vec<u8> = r.get(1)?;
        if let Some(summary) = decode_summary(&body) {
            out.push(SummaryRow {
                edge: r.get(0)?,
                windows: 1,
                bad_windows: None,
                summary,
            });
        }
    }
    Ok(out)
}

/// One component metric point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The component.
    pub component: String,
    /// The metric.
    pub metric: String,
    /// Unix seconds.
    pub at: f64,
    /// The value.
    pub value: f64,
}

/// Stores points in one transaction (a point at the same component, metric and time replaces
/// the previous one).
pub fn insert_points(conn: &mut Connection, points: &[Point]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO component_metrics (component, metric, at, value)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for p in points {
            stmt.execute(params![p.component, p.metric, p.at, p.value])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Points with `at` in `[from, to)`, of one component when given, by time.
pub fn points(
    conn: &Connection,
    component: Option<&str>,
    metric: Option<&str>,
    from: f64,
    to: f64,
) -> Result<Vec<Point>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT component, metric, at, value FROM component_metrics
         WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR component = ?3)
           AND (?4 IS NULL OR metric = ?4)
         ORDER BY at",
    )?;
    let rows = stmt.query_map(params![from, to, component, metric], |r| {
        Ok(Point {
            component: r.get(0)?,
            metric: r.get(1)?,
            at: r.get(2)?,
            value: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A stored incident.
#[derive(Debug, Clone)]
pub struct IncidentRow {
    /// Its id (stable across restarts).
    pub id: i64,
    /// Its JSON.
    pub body: Value,
}

/// The open incident of `subject` opened at `opened_at`, if stored.
pub fn find_open_incident(
    conn: &Connection,
    subject: &str,
    opened_at: u64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id FROM incidents WHERE subject = ?1 AND opened_at = ?2
             AND resolved_at IS NULL",
            params![subject, sql_time(opened_at)],
            |r| r.get(0),
        )
        .optional()?)
}

/// Inserts (id `None`) or replaces an incident; returns its id.
#[allow(clippy::too_many_arguments)]
pub fn upsert_incident(
    conn: &Connection,
    id: Option<i64>,
    subject: &str,
    opened_at: u64,
    updated_at: u64,
    resolved_at: Option<u64>,
    status: &str,
    top_cause: Option<&str>,
    body: &Value,
) -> Result<i64, StoreError> {
    let text = body.to_string();
    match id {
        Some(id) => {
            conn.execute(
                "UPDATE incidents SET updated_at = ?2, resolved_at = ?3, status = ?4,
                 top_cause = ?5, body = ?6 WHERE id = ?1",
                params![
                    id,
                    sql_time(updated_at),
                    resolved_at.map(sql_time),
                    status,
                    top_cause,
                    text
                ],
            )?;
            Ok(id)
        }
        None => {
            conn.execute(
                "INSERT INTO incidents (subject, opened_at, updated_at, resolved_at, status,
                 top_cause, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    subject,
                    sql_time(opened_at),
                    sql_time(updated_at),
                    resolved_at.map(sql_time),
                    status,
                    top_cause,
                    text
                ],
            )?;
            Ok(conn.last_insert_rowid())
        }
    }
}

/// Open incidents whose id is not in `keep`: closed as `unknown` at `now` (after a restart
/// whose replay no longer sees them).
pub fn close_stale_incidents(conn: &Connection, keep: &[i64], now: u64) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("SELECT id, body FROM incidents WHERE resolved_at IS NULL")?;
    let rows: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, body) in rows {
        if keep.contains(&id) {
            continue;
        }
        let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("resolved_at".into(), now.into());
            m.insert("status".into(), "unknown".into());
            m.insert(
                "note".into(),
                "closed at restart: no longer seen in the replayed window".into(),
            );
        }
        conn.execute(
            "UPDATE incidents SET resolved_at = ?2, status = 'unknown', body = ?3 WHERE id = ?1",
            params![id, sql_time(now), v.to_string()],
        )?;
    }
    Ok(())
}

/// Incidents, newest first, open ones only when `open`, at most `limit`.
pub fn incidents(
    conn: &Connection,
    open: bool,
    limit: usize,
) -> Result<Vec<IncidentRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, body FROM incidents WHERE (?1 = 0 OR resolved_at IS NULL)
         ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![open as i64, limit as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, body) = r?;
        out.push(IncidentRow {
            id,
            body: serde_json::from_str(&body).unwrap_or(Value::Null),
        });
    }
    Ok(out)
}

/// One incident.
pub fn incident(conn: &Connection, id: i64) -> Result<Option<IncidentRow>, StoreError> {
    let row: Option<String> = conn
        .query_row("SELECT body FROM incidents WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(row.map(|b| IncidentRow {
        id,
        body: serde_json::from_str(&b).unwrap_or(Value::Null),
    }))
}

/// Appends an event.
pub fn insert_event(
    conn: &Connection,
    at: u64,
    kind: &str,
    subject: Option<&str>,
    body: &Value,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO events (at, kind, subject, body) VALUES (?1, ?2, ?3, ?4)",
        params![sql_time(at), kind, subject, body.to_string()],
    )?;
    Ok(())
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The webhook URL.
    pub webhook: String,
    /// The notification's id (per webhook, since start).
    pub notification: u64,
    /// Its type (`incident_opened`, …).
    pub kind: String,
    /// Attempt number.
    pub attempt: u32,
    /// When, Unix seconds.
    pub at: u64,
    /// Delivered (2xx).
    pub delivered: bool,
    /// HTTP status, if any answer.
    pub status: Option<u16>,
    /// Why it failed.
    pub reason: Option<String>,
    /// When it is tried again.
    pub next_attempt: Option<u64>,
    /// Dropped after this attempt.
    pub gave_up: bool,
}

/// Appends a delivery attempt.
pub fn insert_delivery(conn: &Connection, d: &Delivery) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO notifications (webhook, notification, kind, attempt, at, delivered, status,
         reason, next_attempt, gave_up) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            d.webhook,
            d.notification as i64,
            d.kind,
            d.attempt,
            sql_time(d.at),
            d.delivered,
            d.status,
            d.reason,
            d.next_attempt.map(sql_time),
            d.gave_up
        ],
    )?;
    Ok(())
}

/// The delivery log, newest first, at most `limit`.
pub fn deliveries(conn: &Connection, limit: usize) -> Result<Vec<Delivery>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT webhook, notification, kind, attempt, at, delivered, status, reason,
                next_attempt, gave_up FROM notifications ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(Delivery {
            webhook: r.get(0)?,
            notification: r.get::<_, i64>(1)? as u64,
            kind: r.get(2)?,
            attempt: r.get(3)?,
            at: r.get::<_, i64>(4)? as u64,
            delivered: r.get(5)?,
            status: r.get(6)?,
            reason: r.get(7)?,
            next_attempt: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
            gave_up: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The model set through the API: `(source, format)`.
pub fn stored_model(conn: &Connection) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT source, format FROM service_model WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Stores the model set through the API.
pub fn store_model(
    conn: &Connection,
    source: &str,
    format: &str,
    now: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO service_model (id, source, format, updated_at)
         VALUES (1, ?1, ?2, ?3)",
        params![source, format, sql_time(now)],
    )?;
    Ok(())
}

/// A stored-summary record of probe `probe` for the window at `start` of `len` seconds with
/// `ok` successful runs of total time `total_us` (and `failed` HTTP-status failures): for tests,
/// benchmarks and simulations that write straight to a store.
pub fn summary_record(
    seq: u64,
    probe: u16,
    start: u32,
    len: u16,
    ok: u32,
    failed: u32,
    total_us: u32,
) -> crate::store::NewRecord {
    use qos_wire::outcome::ErrorClass;
    use qos_wire::phase::Phase;
    let mut s = CentralSummary::new(qos_wire::ids::ProbeId(probe), start, len);
    s.ok = ok;
    s.failed = failed;
    // Connect takes 2 ms, the server's answer (first byte) half of the total; failures are
    // HTTP 5xx answers after the connection.
    for i in 0..ok {
        let us = total_us + i % 7 * (total_us / 100).max(1);
        s.sketch.insert(us);
        s.phases[Phase::Total as usize].add(us);
        s.phases[Phase::Connect as usize].add(2_000);
        s.phases[Phase::FirstByte as usize].add(us / 2);
    }
    for _ in 0..failed {
        s.phases[Phase::Connect as usize].add(2_000);
    }
    if failed > 0 {
        s.errors[ErrorClass::HttpStatus as usize] = failed;
    }
    let q = |q: f64| s.sketch.quantile(q).map(u64::from);
    crate::store::NewRecord {
        seq,
        kind: 0,
        at: start,
        // as received: `[kind, summary]`
        body: [&[0x82, 0x00][..], &encode_summary(&s)].concat(),
        summary: Some(crate::store::SummaryColumns {
            probe: u32::from(probe),
            window_start: start,
            window_len: u32::from(len),
            ok,
            failed,
            total_p50_us: q(0.5),
            total_p95_us: q(0.95),
            total_p99_us: q(0.99),
        }),
    }
}
