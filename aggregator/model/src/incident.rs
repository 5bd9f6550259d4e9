//! Incidents: the phase/region breakdown of a degradation, the prior it gives each component,
//! its combination with the RCA ranking, and the drill-down chain
//! service → phase → region → component → metric.
//!
//! # Phase and region evidence (the prior)
//!
//! The breakdown compares, per region, the windows since the incident began with the
//! baseline before it. A region is *degraded* when its failure share exceeds `1 − good_ratio`
//! or its total time grew by `degradation_ratio`. Phase weights (summing to 1) come from the
//! degraded regions: latency weight is each phase's mean growth in µs (only growth of at least
//! `degradation_ratio` of its baseline counts), failure weight each error class mapped to the
//! phase it happens in (dns_failure → dns; refused, unreachable, timeout → connect;
//! tls_failure → tls; http_status, content_mismatch, protocol → first byte; reset →
//! download); when both exist each counts half.
//!
//! Phases point at component kinds: dns → dns; connect → network path, load balancer; tls →
//! load balancer, web; first byte → app, database; download and upload → network path, web.
//! The region pattern points at places: some regions only → components of those regions
//! (shared components half as much, other regions' 0.1); all regions → shared, server-side
//! components (regional ones half).
//!
//! `prior(c) = 0.7 · phase(c) · place(c) + 0.3 · pattern(c)`, where `pattern(c)` is 1 for
//! the network path of a degraded region when only some regions degrade, and for shared
//! server-side components (load balancer, web, app, database, host) when all do.
//!
//! # Combination with RCA
//!
//! `score(c) = rca(c) + prior_weight · prior(c)` where `rca(c)` is the RCA score divided by the
//! best RCA score among components with a *sustained* deviation (an onset), and 0 for
//! components without one — so noise never earns RCA credit, and when no component metric
//! deviates, the phase/region evidence alone orders the components.

use std::collections::{BTreeMap, BTreeSet};

use qos_rca::{Cause, Series};
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;

use crate::model::{ComponentKind, Model};
use crate::state::Status;
use crate::window::{Grid, SlotAgg};

/// The phase an error class shows up in, if any.
pub fn error_phase(c: ErrorClass) -> Option<Phase> {
    match c {
        ErrorClass::DnsFailure => Some(Phase::Dns),
        ErrorClass::Refused | ErrorClass::Unreachable | ErrorClass::Timeout => Some(Phase::Connect),
        ErrorClass::TlsFailure => Some(Phase::Tls),
        ErrorClass::HttpStatus | ErrorClass::ContentMismatch | ErrorClass::Protocol => {
            Some(Phase::FirstByte)
        }
        ErrorClass::Reset => Some(Phase::Download),
        _ => None,
    }
}

/// The component kinds a degraded phase points at.
pub fn phase_kinds(p: Phase) -> &'static [ComponentKind] {
    match p {
        Phase::Dns => &[ComponentKind::Dns],
        Phase::Connect => &[ComponentKind::NetworkPath, ComponentKind::LoadBalancer],
        Phase::Tls => &[ComponentKind::LoadBalancer, ComponentKind::Web],
        Phase::FirstByte => &[ComponentKind::App, ComponentKind::Database],
        Phase::Download | Phase::Upload => &[ComponentKind::NetworkPath, ComponentKind::Web],
        Phase::Total => &[],
    }
}

/// Which regions degrade.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionPattern {
    /// None (or no data).
    None,
    /// Some regions, not all: these.
    Some(Vec<String>),
    /// Every region of the service.
    All,
}

/// One region's comparison of the incident's windows with its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionEvidence {
    /// The region.
    pub region: String,
    /// Whether it counts as degraded.
    pub degraded: bool,
    /// Failure share before and since the start.
    pub failure_share: (Option<f64>, Option<f64>),
    /// Per phase: mean µs before and since the start (phases measured since).
    pub phases: Vec<(Phase, Option<u32>, u32)>,
    /// Failed runs per class since the start.
    pub errors: Vec<(ErrorClass, u64)>,
}

/// The service's phase/region breakdown of an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakdown {
    /// Per region.
    pub regions: Vec<RegionEvidence>,
    /// The region pattern.
    pub pattern: RegionPattern,
    /// Phase weights (sum 1 when any), heaviest first.
    pub phase_weights: Vec<(Phase, f64)>,
}

impl Breakdown {
    /// The dominant degraded phase.
    pub fn dominant(&self) -> Option<Phase> {
        self.phase_weights.first().map(|p| p.0)
    }
    /// Degraded regions.
    pub fn degraded_regions(&self) -> Vec<&str> {
        self.regions
            .iter()
            .filter(|r| r.degraded)
            .map(|r| r.region.as_str())
            .collect()
    }
}

fn merged(grid: &Grid, region: &str, from: u64, to: u64) -> SlotAgg {
    let mut a = SlotAgg::default();
    for (_, regions) in grid.range(from..to) {
        if let Some(g) = regions.get(region) {
            a.merge(g);
        }
    }
    a
}

fn share(a: &SlotAgg) -> Option<f64> {
    (a.runs > 0).then(|| a.failures as f64 / a.runs as f64)
}

/// Compare, per region of `service`, the windows in `[at, now)` with `[at − lookback, at)`.
pub fn breakdown(model: &Model, service: &str, grid: &Grid, at: u64, now: u64) -> Breakdown {
    let d = model.defaults();
    let ratio = d.degradation_ratio;
    let allowed = 1.0 - model.good_ratio(service);
    let mut regions = Vec::new();
    let mut lat: BTreeMap<Phase, f64> = BTreeMap::new();
    let mut fail: BTreeMap<Phase, f64> = BTreeMap::new();
    for r in model.regions(service) {
        let base = merged(grid, r, at.saturating_sub(d.lookback_s), at);
        let cur = merged(grid, r, at, now.max(at + 1));
        let fs = (share(&base), share(&cur));
        let mean = |a: &SlotAgg, p: Phase| a.phases[p as usize].mean();
        let total_grew = match (mean(&base, Phase::Total), mean(&cur, Phase::Total)) {
            (Some(b), Some(c)) => f64::from(c) >= f64::from(b) * (1.0 + ratio),
            _ => false,
        };
        let degraded = fs.1.is_some_and(|s| s > allowed) || total_grew;
        let phases: Vec<_> = Phase::ALL
            .iter()
            .filter_map(|&p| mean(&cur, p).map(|c| (p, mean(&base, p), c)))
            .collect();
        let errors: Vec<_> = ErrorClass::ALL
            .iter()
            .map(|c| (*c, cur.errors[*c as usize]))
            .filter(|(_, n)| *n > 0)
            .collect();
        if degraded {
            for &(p, b, c) in &phases {
                if p == Phase::Total {
                    continue;
                }
                if let Some(b) = b {
                    let grow = f64::from(c) - f64::from(b);
                    if grow > 0.0 && grow >= ratio * f64::from(b) {
                        *lat.entry(p).or_default() += grow;
                    }
                }
            }
            for &(c, n) in &errors {
                if let Some(p) = error_phase(c) {
                    *fail.entry(p).or_default() += n as f64;
                }
            }
        }
        regions.push(RegionEvidence {
            region: r.clone(),
            degraded,
            failure_share: fs,
            phases,
            errors,
        });
    }
    let norm = |m: &BTreeMap<Phase, f64>| {
        let s: f64 = m.values().sum();
        m.iter()
            .map(|(p, v)| (*p, if s > 0.0 { v / s } else { 0.0 }))
            .collect::<BTreeMap<_, _>>()
    };
    let (l, f) = (norm(&lat), norm(&fail));
    let half = if !l.is_empty() && !f.is_empty() {
        0.5
    } else {
        1.0
    };
    let mut w: BTreeMap<Phase, f64> = BTreeMap::new();
    for (p, v) in l.iter().chain(f.iter()) {
        *w.entry(*p).or_default() += half * v;
    }
    let mut phase_weights: Vec<_> = w.into_iter().filter(|(_, v)| *v > 0.0).collect();
    phase_weights.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let bad: Vec<String> = regions
        .iter()
        .filter(|r| r.degraded)
        .map(|r| r.region.clone())
        .collect();
    let pattern = if bad.is_empty() {
        RegionPattern::None
    } else if bad.len() == regions.len() {
        RegionPattern::All
    } else {
        RegionPattern::Some(bad)
    };
    Breakdown {
        regions,
        pattern,
        phase_weights,
    }
}

/// The prior of one component.
#[derive(Debug, Clone, PartialEq)]
pub struct Prior {
    /// The component.
    pub component: String,
    /// In [0, 1].
    pub value: f64,
    /// Why.
    pub evidence: Vec<String>,
}

/// The phase/region prior of every component `service` depends on (see the module docs).
pub fn priors(model: &Model, service: &str, b: &Breakdown) -> Vec<Prior> {
    let regions = model.regions(service);
    let server_side = [
        ComponentKind::LoadBalancer,
        ComponentKind::Web,
        ComponentKind::App,
        ComponentKind::Database,
        ComponentKind::Host,
    ];
    model
        .dependencies(service)
        .filter(|c| c.region.as_ref().is_none_or(|r| regions.contains(r)))
        .map(|c| {
            let mut evidence = Vec::new();
            let mut phase = 0.0;
            for (p, w) in &b.phase_weights {
                if phase_kinds(*p).contains(&c.kind) {
                    phase += w;
                    evidence.push(format!(
                        "{} phase degraded (weight {:.2}) points at {} components",
                        p.name(),
                        w,
                        c.kind.name()
                    ));
                }
            }
            let (place, pattern) = match (&b.pattern, &c.region) {
                (RegionPattern::Some(bad), Some(r)) if bad.contains(r) => {
                    let net = c.kind == ComponentKind::NetworkPath;
                    if net {
                        evidence.push(format!(
                            "only some regions degrade, {r} among them: its network path"
                        ));
                    }
                    (1.0, if net { 1.0 } else { 0.0 })
                }
                (RegionPattern::Some(_), Some(_)) => (0.1, 0.0),
                (RegionPattern::Some(_), None) => (0.5, 0.0),
                (RegionPattern::All, None) => {
                    let s = server_side.contains(&c.kind);
                    if s {
                        evidence.push("every region degrades: server side".into());
                    }
                    (1.0, if s { 1.0 } else { 0.0 })
                }
                (RegionPattern::All, Some(_)) => (0.5, 0.0),
                (RegionPattern::None, _) => (1.0, 0.0),
            };
            Prior {
                component: c.name.clone(),
                value: 0.7 * phase * place + 0.3 * pattern,
                evidence,
            }
        })
        .collect()
}

/// A ranked cause: RCA and prior combined.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedCause {
    /// The component.
    pub component: String,
    /// Its kind, if in the model.
    pub kind: Option<ComponentKind>,
    /// Its region, if regional.
    pub region: Option<String>,
    /// The combined score (higher first).
    pub score: f64,
    /// The normalised RCA part, in [0, 1].
    pub rca: f64,
    /// The prior, in [0, 1].
    pub prior: f64,
    /// The RCA engine's best metric.
    pub metric: Option<String>,
    /// Its onset, Unix seconds.
    pub onset: Option<f64>,
    /// RCA and prior evidence.
    pub evidence: Vec<String>,
}

/// Combine the RCA ranking with the priors (see the module docs), best first.
pub fn combine(
    model: &Model,
    causes: &[Cause],
    priors: &[Prior],
    prior_weight: f64,
) -> Vec<RankedCause> {
    let best = causes
        .iter()
        .filter(|c| c.onset.is_some() && c.score > 0.0)
        .map(|c| c.score)
        .fold(0.0, f64::max);
    let mut out: BTreeMap<String, RankedCause> = BTreeMap::new();
    for c in causes {
        if model.component(&c.component).is_none() {
            continue; // the service itself, or a name outside the model
        }
        let rca = if best > 0.0 && c.onset.is_some() {
            (c.score / best).clamp(0.0, 1.0)
        } else {
            0.0
        };
        out.insert(
            c.component.clone(),
            RankedCause {
                component: c.component.clone(),
                kind: None,
                region: None,
                score: rca,
                rca,
                prior: 0.0,
                metric: c.metric.clone(),
                onset: c.onset,
                evidence: c.evidence.clone(),
            },
        );
    }
    for p in priors {
        let e = out
            .entry(p.component.clone())
            .or_insert_with(|| RankedCause {
                component: p.component.clone(),
                kind: None,
                region: None,
                score: 0.0,
                rca: 0.0,
                prior: 0.0,
                metric: None,
                onset: None,
                evidence: Vec::new(),
            });
        e.prior = p.value;
        e.score = e.rca + prior_weight * p.value;
        e.evidence.extend(p.evidence.iter().cloned());
    }
    let mut v: Vec<RankedCause> = out
        .into_values()
        .map(|mut c| {
            if let Some(m) = model.component(&c.component) {
                c.kind = Some(m.kind);
                c.region = m.region.clone();
            }
            c
        })
        .collect();
    v.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.component.cmp(&b.component))
    });
    v
}

/// A series behind a drill-down step, named as in the RCA input: the service's SLI series
/// (`component` = the service) or a component's metric.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesRef {
    /// The component (or service) of the series.
    pub component: String,
    /// The metric.
    pub metric: String,
}

/// A drill-down level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Level {
    /// The service.
    Service,
    /// Its dominant degraded phase.
    Phase,
    /// The (most) degraded region.
    Region,
    /// The top cause.
    Component,
    /// Its most anomalous metric.
    Metric,
}

/// One step of the drill-down chain.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillStep {
    /// The level.
    pub level: Level,
    /// What was chosen at this level.
    pub name: String,
    /// Why, in one sentence.
    pub detail: String,
    /// The series behind it.
    pub series: Vec<SeriesRef>,
}

/// The SLI series name of `phase`'s mean in `region`.
pub fn phase_metric(region: &str, phase: Phase) -> String {
    format!("{region}/{}_mean_us", phase.name())
}

/// The SLI series name of the failure share in `region`.
pub fn failure_metric(region: &str) -> String {
    format!("{region}/failure_share")
}

/// The service's phase/region breakdown as SLI series (one point per slot): per region the
/// failure share and every phase's mean.
pub fn sli_series(service: &str, grid: &Grid, from: u64, to: u64) -> Vec<Series> {
    let mut m: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (slot, regions) in grid.range(from..to) {
        for (r, a) in regions {
            if let Some(s) = share(a) {
                m.entry(failure_metric(r))
                    .or_default()
                    .push((*slot as f64, s));
            }
            for p in Phase::ALL {
                if let Some(v) = a.phases[p as usize].mean() {
                    m.entry(phase_metric(r, p))
                        .or_default()
                        .push((*slot as f64, f64::from(v)));
                }
            }
        }
    }
    m.into_iter()
        .map(|(metric, points)| Series {
            component: service.into(),
            metric,
            points,
        })
        .collect()
}

/// The chain service → phase → region → component → metric for an incident.
pub fn drill_down(
    service: &str,
    status: Status,
    b: &Breakdown,
    causes: &[RankedCause],
    metrics: &[Series],
) -> Vec<DrillStep> {
    let mut steps = vec![DrillStep {
        level: Level::Service,
        name: service.into(),
        detail: format!("{service} is {}", status.name()),
        series: b
            .regions
            .iter()
            .map(|r| SeriesRef {
                component: service.into(),
                metric: failure_metric(&r.region),
            })
            .collect(),
    }];
    let bad = b.degraded_regions();
    if let Some(p) = b.dominant() {
        let w = b.phase_weights[0].1;
        steps.push(DrillStep {
            level: Level::Phase,
            name: p.name().into(),
            detail: format!("{} carries {:.0} % of the degradation", p.name(), w * 100.0),
            series: bad
                .iter()
                .map(|r| SeriesRef {
                    component: service.into(),
                    metric: phase_metric(r, p),
                })
                .collect(),
        });
    }
    // The region: the degraded one with the highest failure share, then largest growth.
    let region = b.regions.iter().filter(|r| r.degraded).max_by(|x, y| {
        x.failure_share
            .1
            .unwrap_or(0.0)
            .total_cmp(&y.failure_share.1.unwrap_or(0.0))
    });
    if let Some(r) = region {
        let mut series = vec![SeriesRef {
            component: service.into(),
            metric: failure_metric(&r.region),
        }];
        if let Some(p) = b.dominant() {
            series.push(SeriesRef {
                component: service.into(),
                metric: phase_metric(&r.region, p),
            });
        }
        steps.push(DrillStep {
            level: Level::Region,
            name: r.region.clone(),
            detail: match &b.pattern {
                RegionPattern::All => format!("every region degrades ({} shown)", r.region),
                _ => format!("degraded regions: {}", bad.join(", ")),
            },
            series,
        });
    }
    if let Some(top) = causes.first() {
        steps.push(DrillStep {
            level: Level::Component,
            name: top.component.clone(),
            detail: format!(
                "score {:.2} (RCA {:.2}, prior {:.2})",
                top.score, top.rca, top.prior
            ),
            series: metrics
                .iter()
                .filter(|s| s.component == top.component)
                .map(|s| SeriesRef {
                    component: s.component.clone(),
                    metric: s.metric.clone(),
                })
                .collect(),
        });
        if let Some(m) = &top.metric {
            steps.push(DrillStep {
                level: Level::Metric,
                name: m.clone(),
                detail: top
                    .evidence
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "most anomalous metric".into()),
                series: vec![SeriesRef {
                    component: top.component.clone(),
                    metric: m.clone(),
                }],
            });
        }
    }
    steps
}

/// Build the RCA input for `service` and rank its causes: component metrics of the service's
/// dependencies, the breakdown as SLI series, the service map, `at`. Returns the combined
/// ranking, the breakdown and the drill-down.
pub fn analyse(
    model: &Model,
    service: &str,
    status: Status,
    grid: &Grid,
    metrics: &[Series],
    at: u64,
    now: u64,
) -> Analysis {
    let d = model.defaults();
    let b = breakdown(model, service, grid, at, now);
    let deps: BTreeSet<&str> = model
        .dependencies(service)
        .map(|c| c.name.as_str())
        .collect();
    let metrics: Vec<Series> = metrics
        .iter()
        .filter(|s| deps.contains(s.component.as_str()))
        .cloned()
        .collect();
    let edges = model
        .edges()
        .into_iter()
        .filter(|e| {
            (e.source == service || deps.contains(e.source.as_str()))
                && deps.contains(e.target.as_str())
        })
        .collect();
    let from = at.saturating_sub(d.lookback_s);
    let input = qos_rca::Incident {
        metrics,
        slis: sli_series(service, grid, from, now.max(at + 1)),
        edges,
        at: at as f64,
    };
    let config = qos_rca::Config {
        lookback: d.lookback_s as f64,
        horizon: (now.saturating_sub(at)).max(d.window_s) as f64,
        ..qos_rca::Config::default()
    };
    let rca = qos_rca::rank(&input, &config);
    let p = priors(model, service, &b);
    let causes = combine(model, &rca, &p, d.prior_weight);
    let drill = drill_down(service, status, &b, &causes, &input.metrics);
    Analysis {
        breakdown: b,
        causes,
        drill,
        input,
    }
}

/// The result of [`analyse`].
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The phase/region breakdown.
    pub breakdown: Breakdown,
    /// Ranked causes, best first.
    pub causes: Vec<RankedCause>,
    /// The drill-down chain.
    pub drill: Vec<DrillStep>,
    /// The RCA input it was built from (the series the drill-down refers to).
    pub input: qos_rca::Incident,
}
