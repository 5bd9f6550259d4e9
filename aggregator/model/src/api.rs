//! JSON views for the HTTP API (`/api/v1/services`, `services/{name}/series`, `incidents`):
//! states, reports, budgets, alerts and incidents as `serde_json::Value`s, so serve only
//! routes.

use serde_json::{json, Value};

use crate::slo::ErrorBudget;
use crate::state::{ComponentState, ServiceState};
use crate::window::{Availability, PhaseTime, ServiceReport};

pub use crate::notify::{alert_json, incident_json};

/// A service's state with its evidence.
pub fn state_json(s: &ServiceState) -> Value {
    json!({
        "service": s.service,
        "slot": s.slot,
        "status": s.status.name(),
        "regions": {"good": s.regions_good, "bad": s.regions_bad, "missing": s.regions_missing},
        "quorum": s.quorum,
        "latency_burn": s.latency_burn,
        "suppressed_by": s.suppressed_by,
        "flapping": s.flapping,
        "reasons": s.reasons,
    })
}

/// A component's state.
pub fn component_json(c: &ComponentState) -> Value {
    json!({"component": c.component, "down": c.down, "reason": c.reason,
           "suppressed_by": c.suppressed_by})
}

fn availability_json(a: &Availability) -> Value {
    json!({"good": a.good, "bad": a.bad, "missing": a.missing, "ratio": a.ratio(),
           "coverage": a.coverage()})
}

fn phases_json(p: &[PhaseTime]) -> Value {
    p.iter()
        .map(|p| {
            json!({"phase": p.phase.name(), "count": p.count, "mean_us": p.mean_us,
                   "max_us": p.max_us,
                   "p50_us": p.percentiles.map(|x| x[0]),
                   "p95_us": p.percentiles.map(|x| x[1]),
                   "p99_us": p.percentiles.map(|x| x[2])})
        })
        .collect()
}

/// Availability and response time of a service over a period, per region and phase.
pub fn report_json(r: &ServiceReport) -> Value {
    json!({
        "service": r.service,
        "from": r.from,
        "to": r.to,
        "window_s": r.window_s,
        "availability": availability_json(&r.availability),
        "phases": phases_json(&r.phases),
        "regions": r.regions.iter().map(|g| json!({
            "region": g.region,
            "availability": availability_json(&g.availability),
            "runs": g.runs,
            "failures": g.failures,
            "errors": g.errors.iter().map(|(c, n)| json!({"class": c.name(), "count": n})).collect::<Vec<_>>(),
            "phases": phases_json(&g.phases),
        })).collect::<Vec<_>>(),
    })
}

/// An error budget.
pub fn budget_json(b: &ErrorBudget) -> Value {
    json!({"target": b.target, "events": b.events, "bad": b.bad, "total": b.total,
           "consumed": b.consumed, "remaining": b.remaining,
           "remaining_ratio": b.remaining_ratio, "sli": b.sli})
}
