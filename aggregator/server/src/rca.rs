//! `qos-aggregator rca --case DIR --at UNIX_TS [--top N]`: reads a case directory (see
//! [`qos_rca::case`]), ranks its components with the default [`qos_rca::Config`] and renders
//! `{"ranking":[{"component","score","metric","onset","evidence"},…],"rows":…,"skipped":…}`.

use std::path::Path;

use qos_rca::case::{self, CaseError};
use qos_rca::{rank, Cause, Config};
use serde_json::{json, Value};

/// Ranks the case in `dir` for an incident at `at` and returns the JSON document, keeping the
/// first `top` components (all when `None`).
pub fn run_rca(dir: &Path, at: f64, top: Option<usize>) -> Result<Value, CaseError> {
    let config = Config::default();
    let loaded = case::load(dir, at, &config)?;
    let mut ranking = rank(&loaded.incident, &config);
    if let Some(n) = top {
        ranking.truncate(n);
    }
    Ok(json!({
        "ranking": ranking.iter().map(cause_json).collect::<Vec<_>>(),
        "rows": loaded.rows,
        "skipped": {
            "malformed": loaded.skipped.malformed,
            "bad_value": loaded.skipped.bad_value,
            "out_of_window": loaded.skipped.out_of_window,
        },
    }))
}

/// Rounds for a readable document; JSON has no NaN, so a non-finite number becomes null.
fn num(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1e4).round() / 1e4)
    } else {
        Value::Null
    }
}

fn cause_json(c: &Cause) -> Value {
    json!({
        "component": c.component,
        "score": num(c.score),
        "metric": c.metric,
        "metric_z": num(c.metric_z),
        "direction": c.direction.map(|d| d.as_str()),
        "onset": c.onset.map(num),
        "evidence": c.evidence,
    })
}
