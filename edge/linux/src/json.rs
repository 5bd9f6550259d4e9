//! JSON rendering of probe results (for `qos-edge probe`).

use qos_wire::outcome::ProbeResult;
use serde_json::{json, Map, Value};

use crate::config::ProbeKindName;

/// `{"kind", "target", "ok", "phases_us": {phase: µs}, "error", "error_after_us", "detail"}`.
pub fn result(kind: ProbeKindName, target: &str, r: &ProbeResult) -> Value {
    let phases: Map<String, Value> = r
        .phases
        .iter()
        .map(|(p, us)| (p.name().to_string(), json!(us)))
        .collect();
    json!({
        "kind": format!("{kind:?}").to_lowercase(),
        "target": target,
        "at_ms": r.at_ms,
        "ok": r.ok(),
        "phases_us": phases,
        "error": r.error.map(|c| c.name()),
        "error_after_us": r.error_after_us,
        "detail": r.detail,
    })
}
