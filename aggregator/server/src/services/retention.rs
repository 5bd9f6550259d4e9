//! Retention and downsampling. Summaries whose window started before the raw cutoff
//! (`now − raw_days`, aligned down to an hour) are merged into `rollup_hourly` — one merged
//! summary per (edge, probe, hour) with its window count and bad-window count (judged with
//! `good_ratio`) — and deleted with their records, in bounded transactions. Other records
//! (events, results, host metrics) and component metrics older than the cutoff are deleted;
//! rollups older than `now − hourly_days` are deleted. Time is passed in.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::ingest::CentralSummary;
use crate::services::config::RetentionConfig;
use crate::services::db::{decode_summary, encode_summary};
use crate::store::StoreError;

/// Summaries moved per transaction.
const CHUNK: usize = 5_000;

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// Summaries merged into rollups (and deleted).
    pub rolled_up: u64,
    /// Other records deleted.
    pub records_deleted: u64,
    /// Component metric points deleted.
    pub points_deleted: u64,
    /// Hourly rows deleted.
    pub hourly_deleted: u64,
}

/// Where raw data starts at `now`.
pub fn raw_cutoff(now: u64, c: &RetentionConfig) -> u64 {
    let t = now.saturating_sub(c.raw_days * 86_400);
    t - t % 3600
}

/// Applies retention at `now`.
pub fn run(
    conn: &mut Connection,
    now: u64,
    c: &RetentionConfig,
    good_ratio: f64,
) -> Result<RetentionOutcome, StoreError> {
    let cutoff = raw_cutoff(now, c) as i64;
    let mut out = RetentionOutcome::default();
    loop {
        let n = roll_chunk(conn, cutoff, good_ratio)?;
        out.rolled_up += n as u64;
        if n < CHUNK {
            break;
        }
    }
    out.records_deleted =
        conn.execute("DELETE FROM records WHERE kind <> 0 AND at < ?1", [cutoff])? as u64;
    out.points_deleted = conn.execute(
        "DELETE FROM component_metrics WHERE at < ?1",
        [cutoff as f64],
    )? as u64;
    let hourly_cut = now.saturating_sub(c.hourly_days * 86_400) as i64;
    out.hourly_deleted =
        conn.execute("DELETE FROM rollup_hourly WHERE hour < ?1", [hourly_cut])? as u64;
    Ok(out)
}

type Key = (u32, u16, u64);

fn roll_chunk(conn: &mut Connection, cutoff: i64, good_ratio: f64) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let rows: Vec<(u32, i64, Vec<u8>)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT s.edge_id, s.seq, r.body FROM summaries s JOIN records r
               ON r.edge_id = s.edge_id AND r.seq = s.seq
             WHERE s.window_start < ?1 LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![cutoff, CHUNK as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let n = rows.len();
    let mut groups: BTreeMap<Key, (Box<CentralSummary>, u64, u64)> = BTreeMap::new();
    {
        let mut del_s =
            tx.prepare_cached("DELETE FROM summaries WHERE edge_id = ?1 AND seq = ?2")?;
        let mut del_r = tx.prepare_cached("DELETE FROM records WHERE edge_id = ?1 AND seq = ?2")?;
        for (edge, seq, body) in rows {
            del_s.execute(params![edge, seq])?;
            del_r.execute(params![edge, seq])?;
            let Some(s) = decode_summary(&body) else {
                continue;
            };
            let hour = u64::from(s.start_s) - u64::from(s.start_s) % 3600;
            let g = groups.entry((edge, s.probe.0, hour)).or_insert_with(|| {
                (
                    Box::new(CentralSummary::new(s.probe, hour as u32, 3600)),
                    0,
                    0,
                )
            });
            g.0.merge(&*s);
            if let Some(a) = s.availability() {
                g.1 += 1;
                g.2 += u64::from(a < good_ratio);
            }
        }
    }
    {
        let mut get = tx.prepare_cached(
            "SELECT windows, bad_windows, body FROM rollup_hourly
             WHERE edge_id = ?1 AND probe = ?2 AND hour = ?3",
        )?;
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO rollup_hourly
             (edge_id, probe, hour, windows, bad_windows, ok, failed, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for ((edge, probe, hour), (mut s, mut w, mut bad)) in groups {
            let prev: Option<(i64, i64, Vec<u8>)> = get
                .query_row(params![edge, probe, hour as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            if let Some((pw, pb, body)) = prev {
                if let Some(p) = decode_summary(&body) {
                    s.merge(&*p);
                }
                w += pw as u64;
                bad += pb as u64;
            }
            put.execute(params![
                edge,
                probe,
                hour as i64,
                w as i64,
                bad as i64,
                s.ok,
                s.failed,
                encode_summary(&s)
            ])?;
        }
    }
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::db::summary_record;
    use crate::services::series::{series, SeriesQuery};
    use crate::store::{EdgeKey, SqliteStore, Store, Synchronous};

    const MODEL: &str = r#"
        [[component]]
        name = "web"
        kind = "web"
        [[service]]
        name = "shop"
        depends_on = ["web"]
        [[service.transaction]]
        name = "home"
        probes = [{ edge = 1, probe = 0, region = "eu" }]
    "#;

    #[test]
    fn old_summaries_roll_up_hourly_and_series_read_them_alike() {
        let dir = std::env::temp_dir().join(format!("qos-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("qos.sqlite");
        let mut store = SqliteStore::open(&db, Synchronous::Normal).unwrap();
        let now: u64 = 1_764_000_000; // a whole hour
        let day = 86_400;
        // 20 days ago: 2 hours of 60 s windows, one bad window per hour; 1 day ago: 1 hour.
        let mut recs = Vec::new();
        let old = now - 20 * day;
        for i in 0..120u32 {
            let failed = if i % 60 == 7 { 10 } else { 0 };
            recs.push(summary_record(
                u64::from(i),
                0,
                old as u32 + i * 60,
                60,
                10,
                failed,
                20_000 + i * 10,
            ));
        }
        for i in 0..60u32 {
            recs.push(summary_record(
                1000 + u64::from(i),
                0,
                (now - day) as u32 + i * 60,
                60,
                10,
                0,
                30_000,
            ));
        }
        store
            .insert_batch(&EdgeKey::new(1, now * 1000), &recs)
            .unwrap();
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        let model = qos_model::Model::from_toml(MODEL).unwrap();
        let c = RetentionConfig::default();
        let q = SeriesQuery {
            from: old,
            to: old + 7200,
            step: 3600,
            phase: None,
            region: None,
        };
        let before = series(&conn, &model, "shop", &q, 0).unwrap();
        assert_eq!(before["source"], "raw");

        let out = run(&mut conn, now, &c, 0.9).unwrap();
        assert_eq!(out.rolled_up, 120);
        let raw_left: i64 = conn
            .query_row("SELECT count(*) FROM summaries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(raw_left, 60);
        let hours: i64 = conn
            .query_row("SELECT count(*) FROM rollup_hourly", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hours, 2);
        let after = series(&conn, &model, "shop", &q, raw_cutoff(now, &c)).unwrap();
        assert_eq!(after["source"], "hourly");
        for (a, b) in before["points"]
            .as_array()
            .unwrap()
            .iter()
            .zip(after["points"].as_array().unwrap())
        {
            for k in [
                "runs",
                "failures",
                "windows",
                "bad_windows",
                "p50_us",
                "p95_us",
                "p99_us",
            ] {
                assert_eq!(a[k], b[k], "{k}");
            }
            assert_eq!(
                a["phases"]["total"]["mean_us"],
                b["phases"]["total"]["mean_us"]
            );
        }
        assert_eq!(after["points"][0]["bad_windows"], 1);
        // a range over both reads both
        let q2 = SeriesQuery {
            from: old,
            to: now,
            step: 86_400,
            phase: None,
            region: None,
        };
        let both = series(&conn, &model, "shop", &q2, raw_cutoff(now, &c)).unwrap();
        assert_eq!(both["source"], "hourly+raw");
        let runs: u64 = both["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["runs"].as_u64().unwrap())
            .sum();
        assert_eq!(runs, 180 * 10 + 2 * 10);

        // Running again changes nothing; far later the rollups go too.
        assert_eq!(run(&mut conn, now, &c, 0.9).unwrap().rolled_up, 0);
        let out = run(&mut conn, now + 400 * day, &c, 0.9).unwrap();
        // the hour rolled up now is older than hourly_days as well
        assert_eq!((out.rolled_up, out.hourly_deleted), (60, 3));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
