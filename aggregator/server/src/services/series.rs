//! Drill-down series of a service from stored summaries: per time step (and optionally one
//! phase, one region) runs, failures, windows and bad windows, phase means and percentiles of
//! the total time from the merged sketches. Raw summaries answer for the last
//! `retention.raw_days`; hourly rollups for what is older (see [`crate::services::retention`]).

use qos_model::model::ProbeTarget;
use qos_model::{Model, WindowSample};
use qos_wire::ids::ProbeId;
use qos_wire::phase::Phase;
use rusqlite::Connection;
use serde_json::{json, Value};

use crate::ingest::CentralSummary;
use crate::services::db::{self, SummaryRow};
use crate::store::StoreError;

/// Most points a series answers.
pub const MAX_POINTS: u64 = 10_000;

/// A series request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    /// Start, Unix seconds (aligned down to `step`).
    pub from: u64,
    /// End, exclusive.
    pub to: u64,
    /// Step, seconds.
    pub step: u64,
    /// Only this phase's statistics.
    pub phase: Option<Phase>,
    /// Only this region's probes.
    pub region: Option<String>,
}

/// The probes measuring `service` (by edge and probe id) with their region.
pub fn probes_of(model: &Model, service: &str) -> Vec<(u32, u16, String)> {
    let Some(s) = model.service(service) else {
        return Vec::new();
    };
    let mut v: Vec<(u32, u16, String)> = s
        .transactions
        .iter()
        .flat_map(|t| t.probes.iter())
        .filter_map(|p| Some((p.edge?, p.probe?, p.region.clone())))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The stored rows of `pairs` over `[from, to)`: hourly rollups before `cutoff`, raw after.
pub fn rows(
    conn: &Connection,
    pairs: &[(u32, u16)],
    from: u64,
    to: u64,
    cutoff: u64,
) -> Result<(Vec<SummaryRow>, &'static str), StoreError> {
    let mut out = Vec::new();
    let (mut hourly, mut raw) = (false, false);
    if pairs.is_empty() {
        return Ok((out, "raw"));
    }
    if from < cutoff {
        out.extend(db::hourly_summaries(
            conn,
            pairs,
            from - from % 3600,
            to.min(cutoff),
        )?);
        hourly = true;
    }
    if to > cutoff {
        out.extend(db::raw_summaries(conn, pairs, from.max(cutoff), to)?);
        raw = true;
    }
    let source = match (hourly, raw) {
        (true, true) => "hourly+raw",
        (true, false) => "hourly",
        _ => "raw",
    };
    Ok((out, source))
}

/// Window samples of `service` from stored rows (for [`qos_model::report`]).
pub fn samples(model: &Model, rows: &[SummaryRow]) -> Vec<WindowSample> {
    rows.iter()
        .filter_map(|r| {
            let t: &ProbeTarget = model.locate(r.edge, r.summary.probe.0)?;
            Some(WindowSample::from_summary(t, &*r.summary))
        })
        .collect()
}

struct Bucket {
    summary: Box<CentralSummary>,
    windows: u64,
    bad: u64,
    used: bool,
}

/// The series of `service`; `cutoff` is where raw summaries start (Unix s).
pub fn series(
    conn: &Connection,
    model: &Model,
    service: &str,
    q: &SeriesQuery,
    cutoff: u64,
) -> Result<Value, StoreError> {
    let from = q.from - q.from % q.step;
    let n = (q.to.saturating_sub(from)).div_ceil(q.step);
    let probes: Vec<(u32, u16, String)> = probes_of(model, service)
        .into_iter()
        .filter(|p| q.region.as_ref().is_none_or(|r| *r == p.2))
        .collect();
    let pairs: Vec<(u32, u16)> = probes.iter().map(|p| (p.0, p.1)).collect();
    let (rows, source) = rows(conn, &pairs, from, q.to, cutoff)?;
    let ratio = model.good_ratio(service);
    let mut buckets: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            summary: Box::new(CentralSummary::new(
                ProbeId(0),
                (from + i * q.step) as u32,
                1,
            )),
            windows: 0,
            bad: 0,
            used: false,
        })
        .collect();
    for r in &rows {
        let start = u64::from(r.summary.start_s);
        if start < from || start >= q.to {
            continue;
        }
        let b = &mut buckets[((start - from) / q.step) as usize];
        b.summary.merge(&*r.summary);
        b.used = true;
        match r.bad_windows {
            Some(bad) => {
                b.windows += r.windows;
                b.bad += bad;
            }
            None => {
                if let Some(a) = r.summary.availability() {
                    b.windows += 1;
                    b.bad += u64::from(a < ratio);
                }
            }
        }
    }
    let phase_json = |s: &CentralSummary, p: Phase| {
        let st = s.phase(p);
        json!({"count": st.count, "mean_us": st.mean(),
               "max_us": (st.count > 0).then_some(st.max)})
    };
    let points: Vec<Value> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let s = &b.summary;
            let q_us = |x: f64| s.sketch.quantile(x);
            let mut v = json!({
                "t": from + i as u64 * q.step,
                "runs": s.runs(),
                "failures": s.failed,
                "windows": b.windows,
                "bad_windows": b.bad,
                "availability": (b.windows > 0)
                    .then(|| (b.windows - b.bad) as f64 / b.windows as f64),
                "p50_us": q_us(0.5),
                "p95_us": q_us(0.95),
                "p99_us": q_us(0.99),
            });
            match q.phase {
                Some(p) => v["phase"] = phase_json(s, p),
                None => {
                    let mut m = serde_json::Map::new();
                    for p in Phase::ALL {
                        if s.phase(p).count > 0 {
                            m.insert(p.name().into(), phase_json(s, p));
                        }
                    }
                    v["phases"] = Value::Object(m);
                }
            }
            if !b.used {
                v["missing"] = json!(true);
            }
            v
        })
        .collect();
    Ok(json!({
        "service": service,
        "from": from,
        "to": q.to,
        "step": q.step,
        "phase": q.phase.map(|p| p.name()),
        "region": q.region,
        "source": source,
        "probes": probes.iter().map(|p| json!({"edge": p.0, "probe": p.1, "region": p.2})).collect::<Vec<_>>(),
        "points": points,
    }))
}
