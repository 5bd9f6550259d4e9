//! Figures of the services' serve path, printed (no thresholds):
//!
//! - RCA time per incident: the evaluation (through `Services::evaluate`, persistence
//!   included) of the window that opens an incident, with 40 components × 4 metrics at 15 s;
//! - storage bytes per summary: SQLite file size over stored summaries (records + columns),
//!   beside the reference of the summaries' CBOR bodies alone (what a bare log would hold);
//! - query latency of a 30-day drill-down (`services/{name}/series`) on a store holding
//!   16 days of hourly rollups and 14 days of raw summaries, two probes at 60 s, beside the
//!   reference of a plain SQL aggregate reading the same rows (counts only: no sketches, no
//!   phases, no regions).
//!
//! Run: `cargo bench -p qos-aggregator --bench query`.

use std::time::Instant;

use qos_aggregator::config::{Config, Synchronous};
use qos_aggregator::services::config::RetentionConfig;
use qos_aggregator::services::db::{summary_record, Point};
use qos_aggregator::services::retention;
use qos_aggregator::services::series::{series, SeriesQuery};
use qos_aggregator::services::Services;
use qos_aggregator::store::{EdgeKey, SqliteStore, Store};

const COMPONENTS: usize = 40;

fn model(window_s: u64) -> String {
    let mut m = format!("[defaults]\nwindow_s = {window_s}\ngrace_s = 5\n");
    for i in 0..COMPONENTS {
        let dep = if i + 1 < COMPONENTS {
            format!("depends_on = [\"c{}\"]\n", i + 1)
        } else {
            String::new()
        };
        m.push_str(&format!(
            "[[component]]\nname = \"c{i}\"\nkind = \"app\"\n{dep}"
        ));
    }
    m.push_str(
        "[[service]]\nname = \"shop\"\nquorum = 2\ndepends_on = [\"c0\"]\n\
         [[service.transaction]]\nname = \"home\"\n\
         probes = [{ edge = 1, probe = 0, region = \"eu\" }, { edge = 2, probe = 0, region = \"us\" }]\n",
    );
    m
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qos-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rca_per_incident(run: usize) -> f64 {
    let dir = tempdir(&format!("rca-{run}"));
    let file = dir.join("services.toml");
    std::fs::write(&file, model(60)).unwrap();
    let mut c = Config::default();
    c.store.data_dir = dir.clone();
    c.model.file = Some(file);
    let dbp = c.store.database_path();
    let mut store = SqliteStore::open(&dbp, Synchronous::Normal).unwrap();
    let base: u64 = 1_764_000_000; // a whole hour
    let services = Services::open(&dbp, &c, base).unwrap();
    let fault = base + 45 * 60;
    let mut points = Vec::new();
    for t in (base - 1800..base + 3600).step_by(15) {
        for i in 0..COMPONENTS {
            for m in 0..4 {
                let jump = i == 17 && m == 2 && t >= fault;
                let v = if jump {
                    500.0
                } else {
                    10.0 + ((t / 15 + i as u64 * 7 + m) % 5) as f64
                };
                points.push(Point {
                    component: format!("c{i}"),
                    metric: format!("m{m}"),
                    at: t as f64,
                    value: v,
                });
            }
        }
    }
    services.add_points(&points).unwrap();
    let mut seq = 0;
    let mut elapsed = None;
    for slot in 0..60u64 {
        let start = base + slot * 60;
        for edge in [1u32, 2] {
            let (failed, total) = if start >= fault {
                (8, 400_000)
            } else {
                (0, 40_000)
            };
            seq += 1;
            let r = summary_record(seq, 0, start as u32, 60, 10 - failed, failed, total);
            store
                .insert_batch(&EdgeKey::new(edge, (base + slot) * 1000), &[r])
                .unwrap();
        }
        services.ingest_new().unwrap();
        let t0 = Instant::now();
        let notes = services.evaluate(start + 60 + 5).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        if elapsed.is_none() && notes.iter().any(|n| n["type"] == "incident_opened") {
            elapsed = Some(dt);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    elapsed.expect("an incident opened")
}

fn storage_bytes() -> (f64, f64) {
    let dir = tempdir("storage");
    let dbp = dir.join("qos.sqlite");
    let mut store = SqliteStore::open(&dbp, Synchronous::Normal).unwrap();
    let n = 100_000u64;
    let mut body = 0usize;
    for b in 0..n / 1000 {
        let recs: Vec<_> = (0..1000)
            .map(|i| {
                let k = b * 1000 + i;
                let r = summary_record(
                    k,
                    (k % 8) as u16,
                    1_764_000_000 + (k / 8) as u32 * 60,
                    60,
                    58,
                    2,
                    30_000 + (k % 97) as u32 * 100,
                );
                body += r.body.len();
                r
            })
            .collect();
        store.insert_batch(&EdgeKey::new(1, 1), &recs).unwrap();
    }
    drop(store);
    let conn = rusqlite::Connection::open(&dbp).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
        .unwrap();
    let size = std::fs::metadata(&dbp).unwrap().len();
    let _ = std::fs::remove_dir_all(&dir);
    (size as f64 / n as f64, body as f64 / n as f64)
}

fn drill_down_30_days() -> DrillDown {
    let dir = tempdir("drill");
    let dbp = dir.join("qos.sqlite");
    let mut store = SqliteStore::open(&dbp, Synchronous::Normal).unwrap();
    let now: u64 = 1_764_000_000; // a whole hour
    let from = now - 30 * 86_400;
    let mut seq = 0u64;
    for edge in [1u32, 2] {
        let mut recs = Vec::new();
        for w in 0..(30 * 1440u64) {
            seq += 1;
            let failed = u32::from(w % 97 == 0) * 5;
            recs.push(summary_record(
                seq,
                0,
                (from + w * 60) as u32,
                60,
                10 - failed,
                failed,
                40_000 + (w % 13) as u32 * 1000,
            ));
            if recs.len() == 5000 {
                store.insert_batch(&EdgeKey::new(edge, 1), &recs).unwrap();
                recs.clear();
            }
        }
        store.insert_batch(&EdgeKey::new(edge, 1), &recs).unwrap();
    }
    drop(store);
    let mut conn = rusqlite::Connection::open(&dbp).unwrap();
    let rc = RetentionConfig::default();
    let out = retention::run(&mut conn, now, &rc, 0.9).unwrap();
    let raw: i64 = conn
        .query_row("SELECT count(*) FROM summaries", [], |r| r.get(0))
        .unwrap();
    let m = qos_model::Model::from_toml(&model(60)).unwrap();
    let cutoff = retention::raw_cutoff(now, &rc);
    let t = |step: u64| {
        let q = SeriesQuery {
            from,
            to: now,
            step,
            phase: None,
            region: None,
        };
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            let v = series(&conn, &m, "shop", &q, cutoff).unwrap();
            best = best.min(t0.elapsed().as_secs_f64());
            assert_eq!(v["source"], "hourly+raw");
        }
        best
    };
    let (hourly, daily) = (t(3600), t(86_400));
    // The reference: the same rows read by the simplest aggregate SQLite can run on them.
    let mut reference = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let n: (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) + sum(ok) + sum(failed) FROM summaries
                         WHERE window_start >= ?1 AND window_start < ?2),
                        (SELECT count(*) + sum(ok) + sum(failed) + sum(length(body))
                         FROM rollup_hourly WHERE hour >= ?1 AND hour < ?2)",
                [from as i64, now as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        reference = reference.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(n);
    }
    let _ = std::fs::remove_dir_all(&dir);
    DrillDown {
        hourly,
        daily,
        reference,
        rolled: out.rolled_up,
        raw: raw as u64,
    }
}

/// Times of the 30-day drill-down, seconds (best of 5).
struct DrillDown {
    hourly: f64,
    daily: f64,
    reference: f64,
    rolled: u64,
    raw: u64,
}

fn main() {
    let mut rca: Vec<f64> = (0..5).map(rca_per_incident).collect();
    rca.sort_by(f64::total_cmp);
    println!(
        "RCA per incident through the serve path ({COMPONENTS} components x 4 metrics at 15 s, 2 regions): median {:.1} ms (min {:.1}, max {:.1})",
        rca[2] * 1e3,
        rca[0] * 1e3,
        rca[4] * 1e3
    );
    let (per, body) = storage_bytes();
    println!(
        "storage per summary (100 000 HTTP summaries): {per:.0} bytes in SQLite; reference: CBOR body {body:.0} bytes; ratio {:.2}",
        per / body
    );
    let d = drill_down_30_days();
    println!(
        "30-day drill-down (2 probes at 60 s; {} summaries rolled up hourly, {} raw kept): step 1 h {:.1} ms, step 1 day {:.1} ms (best of 5)",
        d.rolled,
        d.raw,
        d.hourly * 1e3,
        d.daily * 1e3
    );
    println!(
        "reference: plain SQL aggregate over the same rows {:.1} ms; ratio drill-down (1 h) / reference {:.1}",
        d.reference * 1e3,
        d.hourly / d.reference.max(1e-9)
    );
}
