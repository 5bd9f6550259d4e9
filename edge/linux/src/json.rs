//! JSON rendering of probe results (for `qos-edge probe`).

use serde_json::{json, Map, Value};

use crate::config::ProbeKindName;
use qos_edge::probe::Report;

/// `{"kind", "target", "at_ms", "ok", "phases_us": {phase: µs}, "error", "error_after_us",
/// "detail", "redirects", "message"}`, plus `"cert_days_left"` for HTTPS and `"steps_us"` for
/// transactions.
pub fn result(kind: ProbeKindName, target: &str, report: &Report) -> Value {
    let r = &report.result;
    let phases: Map<String, Value> = r
        .phases
        .iter()
        .map(|(p, us)| (p.name().to_string(), json!(us)))
        .collect();
    let mut v = json!({
        "kind": kind.name(),
        "target": target,
        "at_ms": r.at_ms,
        "ok": r.ok(),
        "phases_us": phases,
        "error": r.error.map(|c| c.name()),
        "error_after_us": r.error_after_us,
        "detail": r.detail,
        "redirects": r.redirects,
        "message": report.message,
    });
    if let Some(days) = report.cert_days_left {
        v["cert_days_left"] = json!(days);
    }
    if kind == ProbeKindName::Transaction {
        v["steps_us"] = json!(report.steps_us);
    }
    v
}
