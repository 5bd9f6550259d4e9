//! `qos-aggregator rca --case DIR --at UNIX_TS [--top N]`: reads a case directory (see
//! [`qos_rca::case`]), ranks its components with a [`qos_rca::Config`] and renders
//! `{"ranking":[{"component","score","metric","onset","evidence"},…],"rows":…,"skipped":…}`.

use std::path::Path;

use qos_rca::case::{self, CaseError};
use qos_rca::{rank, Cause, Config};
use serde_json::{json, Value};

/// Ranks the case in `dir` for an incident at `at` and returns the JSON document, keeping the
/// first `top` components (all when `None`).
pub fn run_rca(
    dir: &Path,
    at: f64,
    top: Option<usize>,
    config: &Config,
) -> Result<Value, RcaError> {
    if !(config.lookback > 0.0 && config.horizon > 0.0) {
        return Err(RcaError::Window(config.lookback, config.horizon));
    }
    let loaded = case::load(dir, at, config)?;
    let mut ranking = rank(&loaded.incident, config);
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

/// Why `qos-aggregator rca` failed.
#[derive(Debug, thiserror::Error)]
pub enum RcaError {
    /// The case could not be read.
    #[error(transparent)]
    Case(#[from] CaseError),
    /// The look-back or horizon is not a positive number of seconds.
    #[error("--lookback and --horizon must be positive seconds, got {0} and {1}")]
    Window(f64, f64),
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
