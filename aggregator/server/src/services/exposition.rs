//! The services' part of `GET /metrics` (Prometheus text format 0.0.4, base units): the
//! indicators of every service of the model per region and phase over the last
//! [`PERIOD_S`] (the same report as `GET /api/v1/services`), and the SLOs' error budgets.
//!
//! | family | labels | value |
//! |---|---|---|
//! | `qos_service_up` | `service` | 1 when the engine's state is up, 0 when down or degraded; absent while unknown |
//! | `qos_service_availability_ratio` | `service`, `region` | good windows / judged windows (missing windows are not counted as up); absent when none was judged |
//! | `qos_service_runs` | `service`, `region` | probe runs in the period |
//! | `qos_service_failures` | `service`, `region` | failed runs in the period |
//! | `qos_service_phase_mean_seconds` | `service`, `region`, `phase` | mean time of the phase (`dns`, `connect`, `tls`, `first_byte`, `download`, `upload`, `total`) |
//! | `qos_service_phase_p95_seconds` | `service`, `region`, `phase` | 95th percentile of the phase, from the merged sketches (`total` only) |
//! | `qos_slo_error_budget_remaining_ratio` | `service`, `sli` (`availability`, `latency`) | share of the SLO period's error budget left (negative when overspent); absent without events |

use std::fmt::Write as _;

use qos_model::slo::Sli;
use qos_model::{ServiceReport, Status};

use super::{retention, series, Services};
use crate::store::StoreError;

/// The period of the indicators, seconds (as `GET /api/v1/services` by default).
pub const PERIOD_S: u64 = 3600;

impl Services {
    /// The model's report of `service` from `from` to `to` (Unix s) from the stored summaries;
    /// `None` without a model or such a service.
    pub fn report(
        &self,
        service: &str,
        from: u64,
        to: u64,
        now: u64,
    ) -> Result<Option<ServiceReport>, StoreError> {
        let e = self.engine();
        let Some(m) = e.monitor.as_ref() else {
            return Ok(None);
        };
        let model = m.model();
        let pairs: Vec<(u32, u16)> = series::probes_of(model, service)
            .into_iter()
            .map(|p| (p.0, p.1))
            .collect();
        let cutoff = retention::raw_cutoff(now, &self.config().retention);
        let rows = series::rows(&self.db(), &pairs, from, to, cutoff)?.0;
        let samples = series::samples(model, &rows);
        Ok(qos_model::report(model, service, &samples, from, to))
    }
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The services' families at `now` (Unix s); empty without a model.
pub fn render(s: &Services, now: u64) -> Result<String, StoreError> {
    // What the engine knows, taken under its lock; the reports read the store after.
    let (states, budgets) = {
        let e = s.engine();
        let Some(m) = e.monitor.as_ref() else {
            return Ok(String::new());
        };
        let mut states = Vec::new();
        let mut budgets = Vec::new();
        for sv in m.model().services() {
            let up = m.state(&sv.name).and_then(|st| match st.status {
                Status::Up => Some(1),
                Status::Down | Status::Degraded => Some(0),
                _ => None,
            });
            states.push((sv.name.clone(), up));
            for (sli, name) in [
                (Sli::Availability, "availability"),
                (Sli::Latency, "latency"),
            ] {
                if let Some(r) = m.budget(&sv.name, sli, now).and_then(|b| b.remaining_ratio) {
                    budgets.push((sv.name.clone(), name, r));
                }
            }
        }
        (states, budgets)
    };
    let mut reports = Vec::new();
    for (name, _) in &states {
        if let Some(r) = s.report(name, now.saturating_sub(PERIOD_S), now, now)? {
            reports.push(r);
        }
    }
    let mut out = String::with_capacity(1024);
    family(
        &mut out,
        "qos_service_up",
        "1 when the service is up, 0 when down or degraded (absent while unknown).",
    );
    for (name, up) in &states {
        if let Some(v) = up {
            let _ = writeln!(out, "qos_service_up{{service=\"{}\"}} {v}", label(name));
        }
    }
    let regions = || {
        reports
            .iter()
            .flat_map(|r| r.regions.iter().map(move |g| (label(&r.service), g)))
    };
    family(
        &mut out,
        "qos_service_availability_ratio",
        "Good windows over judged windows in the last hour, per region (missing windows are not up).",
    );
    for (sv, g) in regions() {
        if let Some(a) = g.availability.ratio() {
            let _ = writeln!(
                out,
                "qos_service_availability_ratio{{service=\"{sv}\",region=\"{}\"}} {a}",
                label(&g.region)
            );
        }
    }
    family(
        &mut out,
        "qos_service_runs",
        "Probe runs in the last hour, per region.",
    );
    for (sv, g) in regions() {
        let _ = writeln!(
            out,
            "qos_service_runs{{service=\"{sv}\",region=\"{}\"}} {}",
            label(&g.region),
            g.runs
        );
    }
    family(
        &mut out,
        "qos_service_failures",
        "Failed probe runs in the last hour, per region.",
    );
    for (sv, g) in regions() {
        let _ = writeln!(
            out,
            "qos_service_failures{{service=\"{sv}\",region=\"{}\"}} {}",
            label(&g.region),
            g.failures
        );
    }
    family(
        &mut out,
        "qos_service_phase_mean_seconds",
        "Mean time of a phase in the last hour, per region.",
    );
    for (sv, g) in regions() {
        for p in &g.phases {
            if let Some(us) = p.mean_us {
                let _ = writeln!(
                    out,
                    "qos_service_phase_mean_seconds{{service=\"{sv}\",region=\"{}\",phase=\"{}\"}} {}",
                    label(&g.region),
                    p.phase.name(),
                    f64::from(us) / 1e6
                );
            }
        }
    }
    family(
        &mut out,
        "qos_service_phase_p95_seconds",
        "95th percentile of a phase in the last hour, per region, from the merged sketches.",
    );
    for (sv, g) in regions() {
        for p in &g.phases {
            if let Some([_, p95, _]) = p.percentiles {
                let _ = writeln!(
                    out,
                    "qos_service_phase_p95_seconds{{service=\"{sv}\",region=\"{}\",phase=\"{}\"}} {}",
                    label(&g.region),
                    p.phase.name(),
                    f64::from(p95) / 1e6
                );
            }
        }
    }
    family(
        &mut out,
        "qos_slo_error_budget_remaining_ratio",
        "Share of the SLO period's error budget left (negative when overspent).",
    );
    for (sv, sli, r) in &budgets {
        let _ = writeln!(
            out,
            "qos_slo_error_budget_remaining_ratio{{service=\"{}\",sli=\"{sli}\"}} {r}",
            label(sv)
        );
    }
    Ok(out)
}
