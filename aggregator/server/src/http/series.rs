//! `GET /api/v1/summaries?since=UNIX_S[&limit=N]`: the stored window summaries, read-only.
//!
//! A minimal series endpoint for clients that draw or analyse the phases per region and time
//! (the demo's incident detector reads it) until the service model answers
//! `services/{name}/series`. Each stored summary whose window starts at or after `since`
//! (default 0), oldest window first, at most `limit` (default and maximum [`MAX_LIMIT`]):
//!
//! ```text
//! {"summaries":[{"edge","region","probe","start","len","ok","failed",
//!                "errors":{"<class>":n,..},
//!                "phases_us":{"<phase>":{"count","min","max","mean"},..},
//!                "total_p50_us","total_p95_us"}],
//!  "next_since": start of the last window returned (or `since`), "truncated": bool}
//! ```
//! `region` is the edge's region as `GET /api/v1/edges` shows it (or `null`). Phases without values and error
//! classes without failures are left out. 400 when `since` or `limit` is not a number.

use std::collections::HashMap;

use minicbor::decode::Decoder;
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;
use qos_wire::summary::TIME_TO_ERROR;
use serde_json::{json, Map, Value};

use super::{centre_api, edges_json, now_ms, store_unavailable, Request, Response};
use crate::centre::Centre;
use crate::ingest::CentralSummary;
use crate::store::StoreRead;

/// The most summaries one answer holds.
pub const MAX_LIMIT: usize = 10_000;

/// Answers `GET /api/v1/summaries`.
pub fn summaries(request: &Request, store: &dyn StoreRead, centre: Option<&Centre>) -> Response {
    let bad = |name: &str, value: &str| {
        Response::json(
            400,
            &json!({"error": "bad query parameter", "name": name, "value": value,
                    "reason": "expected a non-negative integer"}),
        )
    };
    let mut since = 0u32;
    let mut limit = MAX_LIMIT;
    for (name, value) in request.query_pairs().unwrap_or_default() {
        match name.as_str() {
            "since" => match value.parse() {
                Ok(v) => since = v,
                Err(_) => return bad("since", &value),
            },
            "limit" => match value.parse::<usize>() {
                Ok(v) => limit = v.min(MAX_LIMIT),
                Err(_) => return bad("limit", &value),
            },
            _ => {}
        }
    }
    // Regions as `GET /api/v1/edges` shows them: from the store, or the edge's registration.
    let rows = match store.edges() {
        Ok(rows) => rows,
        Err(e) => return store_unavailable(&e),
    };
    let mut edges = edges_json(&rows, now_ms());
    if let (Some(c), Some(Value::Array(list))) = (centre, edges.get_mut("edges")) {
        centre_api::augment_edges(&rows, c, list);
    }
    let regions: HashMap<u64, Option<String>> = edges["edges"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|e| Some((e["id"].as_u64()?, e["region"].as_str().map(String::from))))
                .collect()
        })
        .unwrap_or_default();
    let rows = match store.summaries_since(since, limit) {
        Ok(rows) => rows,
        Err(e) => return store_unavailable(&e),
    };
    let truncated = rows.len() >= limit && limit > 0;
    let mut next_since = since;
    let list: Vec<Value> = rows
        .iter()
        .filter_map(|(edge, body)| {
            // Stored bodies (`[kind, summary]`, as received) were validated at ingest; one that
            // no longer decodes is skipped.
            let mut d = Decoder::new(body);
            d.array().ok()?;
            d.u8().ok()?;
            let s = CentralSummary::decode(&mut d).ok()?;
            next_since = next_since.max(s.start_s);
            let region = regions.get(&u64::from(*edge)).cloned().flatten();
            Some(summary_json(*edge, region, &s))
        })
        .collect();
    Response::json(
        200,
        &json!({"summaries": list, "next_since": next_since, "truncated": truncated}),
    )
}

fn summary_json(edge: u32, region: Option<String>, s: &CentralSummary) -> Value {
    let mut errors = Map::new();
    for (class, &n) in ErrorClass::ALL.iter().zip(s.errors.iter()) {
        if n > 0 {
            errors.insert(class.name().into(), n.into());
        }
    }
    let mut phases = Map::new();
    let names = Phase::ALL
        .iter()
        .map(|p| (p.name(), *p as usize))
        .chain([("time_to_error", TIME_TO_ERROR)]);
    for (name, i) in names {
        let p = &s.phases[i];
        if p.count > 0 {
            phases.insert(
                name.into(),
                json!({"count": p.count, "min": p.min, "max": p.max, "mean": p.mean()}),
            );
        }
    }
    json!({
        "edge": edge,
        "region": region,
        "probe": s.probe.0,
        "start": s.start_s,
        "len": s.len_s,
        "ok": s.ok,
        "failed": s.failed,
        "errors": errors,
        "phases_us": phases,
        "total_p50_us": s.sketch.quantile(0.5),
        "total_p95_us": s.sketch.quantile(0.95),
    })
}
