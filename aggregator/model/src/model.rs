//! The service model: services, the transactions that measure them (probes, from regions),
//! the components that deliver them (with `depends_on` edges: the service map), SLOs and
//! tuning. Read from TOML (or the same structure as JSON) and validated into a [`Model`].
//!
//! See `aggregator/model/service-model.example.toml` for every option with its meaning.

use std::collections::{BTreeMap, BTreeSet};

use qos_wire::phase::Phase;
use serde::{Deserialize, Serialize};

use crate::slo::{BurnAlertRule, Severity};

/// Why a model is not valid. Every variant names the service or component at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The text is not valid TOML or JSON for the model's structure.
    #[error("cannot parse the service model: {0}")]
    Parse(String),
    /// Two services share a name.
    #[error("duplicate service `{0}`")]
    DuplicateService(String),
    /// Two components share a name.
    #[error("duplicate component `{0}`")]
    DuplicateComponent(String),
    /// Two transactions of one service share a name.
    #[error("service `{service}`: duplicate transaction `{transaction}`")]
    DuplicateTransaction {
        /// The service.
        service: String,
        /// The transaction.
        transaction: String,
    },
    /// A service or component depends on a component that is not declared.
    #[error("{referrer}: depends on unknown component `{component}`")]
    UnknownComponent {
        /// `service \`x\`` or `component \`y\``.
        referrer: String,
        /// The missing component.
        component: String,
    },
    /// The components' `depends_on` edges form a cycle (listed in order, first repeated last).
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A probe reference is malformed or used twice.
    #[error("{owner}: {reason}")]
    Probe {
        /// The service/transaction or component holding the reference.
        owner: String,
        /// What is wrong.
        reason: String,
    },
    /// A service has no transaction with a probe: nothing measures it.
    #[error("service `{0}` has no transaction with a probe")]
    Unmeasured(String),
    /// A quorum, SLO, threshold or alert rule is out of range.
    #[error("{owner}: {reason}")]
    Invalid {
        /// The service (or `defaults`, `burn_alert`) at fault.
        owner: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a component is. Decides which phase evidence points at it (see `docs/slo.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ComponentKind {
    /// A DNS server or zone.
    Dns,
    /// The network path from a region to the service (usually one per region).
    NetworkPath,
    /// A load balancer or reverse proxy (often terminates TLS).
    LoadBalancer,
    /// A web server.
    Web,
    /// An application server.
    App,
    /// A database.
    Database,
    /// A host (machine, VM) other components run on.
    Host,
    /// Anything else.
    Other,
}

impl ComponentKind {
    /// The snake_case name used in TOML and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::Dns => "dns",
            ComponentKind::NetworkPath => "network_path",
            ComponentKind::LoadBalancer => "load_balancer",
            ComponentKind::Web => "web",
            ComponentKind::App => "app",
            ComponentKind::Database => "database",
            ComponentKind::Host => "host",
            ComponentKind::Other => "other",
        }
    }
}

/// A probe that measures a transaction or a component: either by edge and probe id, or by the
/// probe's name; always with the region it probes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRef {
    /// The edge (sub-manager) id; with `probe`.
    #[serde(default)]
    pub edge: Option<u32>,
    /// The probe id on that edge; with `edge`.
    #[serde(default)]
    pub probe: Option<u16>,
    /// The probe's name, instead of `edge` + `probe`.
    #[serde(default)]
    pub name: Option<String>,
    /// The region the probe runs from.
    pub region: String,
}

/// A transaction: one user-visible action of a service and the probes that measure it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// Unique within its service.
    pub name: String,
    /// The probes measuring it.
    #[serde(default)]
    pub probes: Vec<ProbeRef>,
}

/// A latency objective: the `quantile` of `phase` stays at or below `threshold_ms` over the
/// SLO period — equivalently, at most `1 - quantile` of the runs are slower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyObjective {
    /// The phase, by name (`total`, `first_byte`, …). Only phases with a sketch (`total` from
    /// summaries) can be judged per run; others are judged on window means.
    #[serde(default = "default_phase")]
    pub phase: String,
    /// The quantile, in (0, 1), e.g. 0.95.
    #[serde(default = "default_quantile")]
    pub quantile: f64,
    /// The threshold, milliseconds.
    pub threshold_ms: f64,
}

fn default_phase() -> String {
    "total".into()
}
fn default_quantile() -> f64 {
    0.95
}

impl LatencyObjective {
    /// The phase named by [`LatencyObjective::phase`] (validated).
    pub fn phase(&self) -> Phase {
        Phase::from_name(&self.phase).unwrap_or(Phase::Total)
    }
    /// The threshold in microseconds.
    pub fn threshold_us(&self) -> u32 {
        (self.threshold_ms * 1000.0)
            .round()
            .clamp(0.0, u32::MAX as f64) as u32
    }
}

/// A service's objectives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// The availability target, in (0, 1), e.g. 0.999: the share of windows with data that
    /// must be good.
    pub availability: f64,
    /// The SLO (and error budget) period, seconds; default 30 days.
    #[serde(default = "default_period")]
    pub period_s: u64,
    /// An optional latency objective.
    #[serde(default)]
    pub latency: Option<LatencyObjective>,
}

fn default_period() -> u64 {
    30 * 86_400
}

/// A service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// k of the k-of-n quorum: how many regions must fail for the service to be DOWN.
    /// Default: a majority of its regions, `n / 2 + 1`.
    #[serde(default)]
    pub quorum: Option<usize>,
    /// The components the service calls directly (its entry points in the service map).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// A window is good when at least this share of its runs succeeded (overrides the default).
    #[serde(default)]
    pub good_ratio: Option<f64>,
    /// Objectives.
    #[serde(default)]
    pub slo: Option<SloSpec>,
    /// Burn-rate alert rules for this service (overrides the model's list).
    #[serde(default, rename = "burn_alert", alias = "burn_alerts")]
    pub burn_alerts: Option<Vec<BurnAlertRule>>,
    /// The transactions that measure it.
    #[serde(default, rename = "transaction", alias = "transactions")]
    pub transactions: Vec<Transaction>,
}

/// A component of the service map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Unique name (also the component name in RCA input and metric series).
    pub name: String,
    /// What it is.
    pub kind: ComponentKind,
    /// The region it belongs to (a network path from a region, a regional resolver); none for
    /// shared, server-side components.
    #[serde(default)]
    pub region: Option<String>,
    /// The components it calls or runs on.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Probes that measure this component directly (a ping of a router, a DNS query): when
    /// they fail, the component is down.
    #[serde(default)]
    pub probes: Vec<ProbeRef>,
}

/// Tuning shared by every service (each has a default; see the example file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Length of an evaluation window (slot), seconds. Summaries are placed in the slot their
    /// start falls in.
    pub window_s: u64,
    /// A window is good when at least this share of its runs succeeded.
    pub good_ratio: f64,
    /// Seconds after a slot ends before it is evaluated (late summaries).
    pub grace_s: u64,
    /// Flapping: the sliding window, seconds.
    pub flap_window_s: u64,
    /// Flapping: this many state changes within the window make a service flapping.
    pub flap_threshold: usize,
    /// Flapping ends after this many consecutive windows without a change.
    pub stable_windows: usize,
    /// An incident resolves after this many consecutive good windows.
    pub resolve_after: usize,
    /// Seconds of history before an incident's start used as RCA baseline.
    pub lookback_s: u64,
    /// A region's phase whose mean grew by this share over its baseline is degraded.
    pub degradation_ratio: f64,
    /// The latency burn rate over the shortest alert window that makes a service DEGRADED.
    pub degraded_burn: f64,
    /// Weight of the phase/region prior against the normalised RCA score (see `docs/slo.md`).
    pub prior_weight: f64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            window_s: 60,
            good_ratio: 0.9,
            grace_s: 30,
            flap_window_s: 1800,
            flap_threshold: 4,
            stable_windows: 5,
            resolve_after: 5,
            lookback_s: 1800,
            degradation_ratio: 0.25,
            degraded_burn: 1.0,
            prior_weight: 0.5,
        }
    }
}

/// The model as written in TOML or JSON, before validation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceModel {
    /// Tuning.
    #[serde(default)]
    pub defaults: Defaults,
    /// Burn-rate alert rules; default: the SRE workbook's page (1 h & 5 m over 14.4) and
    /// ticket (6 h & 30 m over 6).
    #[serde(
        default = "default_rules",
        rename = "burn_alert",
        alias = "burn_alerts"
    )]
    pub burn_alerts: Vec<BurnAlertRule>,
    /// Services.
    #[serde(default, rename = "service", alias = "services")]
    pub services: Vec<Service>,
    /// Components.
    #[serde(default, rename = "component", alias = "components")]
    pub components: Vec<Component>,
}

/// The SRE workbook's two rules: page on 1 h and 5 m over 14.4, ticket on 6 h and 30 m over 6.
pub fn default_rules() -> Vec<BurnAlertRule> {
    vec![
        BurnAlertRule {
            long_s: 3600,
            short_s: 300,
            factor: 14.4,
            severity: Severity::Page,
        },
        BurnAlertRule {
            long_s: 6 * 3600,
            short_s: 1800,
            factor: 6.0,
            severity: Severity::Ticket,
        },
    ]
}

/// Where a probe's summaries belong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeTarget {
    /// A transaction of a service.
    Transaction {
        /// The service.
        service: String,
        /// The transaction.
        transaction: String,
        /// The region probed from.
        region: String,
    },
    /// A component, measured directly.
    Component {
        /// The component.
        component: String,
        /// The region probed from.
        region: String,
    },
}

/// A validated model with its indexes.
#[derive(Debug, Clone)]
pub struct Model {
    spec: ServiceModel,
    by_id: BTreeMap<(u32, u16), ProbeTarget>,
    by_name: BTreeMap<String, ProbeTarget>,
    regions: BTreeMap<String, Vec<String>>,
    closure: BTreeMap<String, BTreeSet<String>>,
}

impl ServiceModel {
    /// Parse TOML (without validating).
    pub fn from_toml_str(s: &str) -> Result<ServiceModel, ModelError> {
        toml::from_str(s).map_err(|e| ModelError::Parse(e.to_string()))
    }

    /// Parse JSON (without validating).
    pub fn from_json_str(s: &str) -> Result<ServiceModel, ModelError> {
        serde_json::from_str(s).map_err(|e| ModelError::Parse(e.to_string()))
    }

    /// Check every rule and build the indexes.
    pub fn validate(self) -> Result<Model, ModelError> {
        Model::new(self)
    }
}

fn invalid(owner: impl Into<String>, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        owner: owner.into(),
        reason: reason.into(),
    }
}

fn check_rules(owner: &str, rules: &[BurnAlertRule]) -> Result<(), ModelError> {
    for r in rules {
        if r.short_s == 0 || r.short_s >= r.long_s {
            return Err(invalid(
                owner,
                format!(
                    "burn alert: short window {} s must be positive and shorter than the long {} s",
                    r.short_s, r.long_s
                ),
            ));
        }
        if !(r.factor > 0.0 && r.factor.is_finite()) {
            return Err(invalid(owner, "burn alert: factor must be positive"));
        }
    }
    Ok(())
}

fn ratio_ok(x: f64) -> bool {
    x > 0.0 && x < 1.0
}

impl Model {
    /// Parse and validate TOML.
    pub fn from_toml(s: &str) -> Result<Model, ModelError> {
        ServiceModel::from_toml_str(s)?.validate()
    }

    /// Parse and validate JSON.
    pub fn from_json(s: &str) -> Result<Model, ModelError> {
        ServiceModel::from_json_str(s)?.validate()
    }

    fn new(spec: ServiceModel) -> Result<Model, ModelError> {
        let d = &spec.defaults;
        if d.window_s == 0 {
            return Err(invalid("defaults", "window_s must be positive"));
        }
        if !(d.good_ratio > 0.0 && d.good_ratio <= 1.0) {
            return Err(invalid("defaults", "good_ratio must be in (0, 1]"));
        }
        if d.flap_threshold < 2 || d.stable_windows == 0 || d.resolve_after == 0 {
            return Err(invalid(
                "defaults",
                "flap_threshold must be ≥ 2, stable_windows and resolve_after ≥ 1",
            ));
        }
        check_rules("burn_alert", &spec.burn_alerts)?;

        let mut comps: BTreeMap<&str, &Component> = BTreeMap::new();
        for c in &spec.components {
            if comps.insert(&c.name, c).is_some() {
                return Err(ModelError::DuplicateComponent(c.name.clone()));
            }
        }
        for c in &spec.components {
            for dep in &c.depends_on {
                if !comps.contains_key(dep.as_str()) {
                    return Err(ModelError::UnknownComponent {
                        referrer: format!("component `{}`", c.name),
                        component: dep.clone(),
                    });
                }
            }
        }
        find_cycle(&comps)?;

        let mut by_id = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        let mut add = |owner: &str, p: &ProbeRef, target: ProbeTarget| -> Result<(), ModelError> {
            let err = |reason: String| ModelError::Probe {
                owner: owner.to_string(),
                reason,
            };
            match (p.edge, p.probe, &p.name) {
                (Some(e), Some(id), None) => {
                    if by_id.insert((e, id), target).is_some() {
                        return Err(err(format!("probe {id} of edge {e} is used twice")));
                    }
                }
                (None, None, Some(n)) => {
                    if by_name.insert(n.clone(), target).is_some() {
                        return Err(err(format!("probe `{n}` is used twice")));
                    }
                }
                _ => {
                    return Err(err(
                        "a probe is named by `edge` and `probe`, or by `name`".into()
                    ))
                }
            }
            if p.region.is_empty() {
                return Err(err("a probe needs a region".into()));
            }
            Ok(())
        };
        for c in &spec.components {
            for p in &c.probes {
                add(
                    &format!("component `{}`", c.name),
                    p,
                    ProbeTarget::Component {
                        component: c.name.clone(),
                        region: p.region.clone(),
                    },
                )?;
            }
        }

        let mut names = BTreeSet::new();
        let mut regions = BTreeMap::new();
        let mut closure = BTreeMap::new();
        for s in &spec.services {
            if !names.insert(s.name.as_str()) {
                return Err(ModelError::DuplicateService(s.name.clone()));
            }
            let mut tnames = BTreeSet::new();
            let mut rs = BTreeSet::new();
            for t in &s.transactions {
                if !tnames.insert(t.name.as_str()) {
                    return Err(ModelError::DuplicateTransaction {
                        service: s.name.clone(),
                        transaction: t.name.clone(),
                    });
                }
                for p in &t.probes {
                    add(
                        &format!("service `{}` transaction `{}`", s.name, t.name),
                        p,
                        ProbeTarget::Transaction {
                            service: s.name.clone(),
                            transaction: t.name.clone(),
                            region: p.region.clone(),
                        },
                    )?;
                    rs.insert(p.region.clone());
                }
            }
            if rs.is_empty() {
                return Err(ModelError::Unmeasured(s.name.clone()));
            }
            let owner = format!("service `{}`", s.name);
            if let Some(k) = s.quorum {
                if k == 0 || k > rs.len() {
                    return Err(invalid(
                        &owner,
                        format!("quorum {k} must be between 1 and its {} regions", rs.len()),
                    ));
                }
            }
            if let Some(g) = s.good_ratio {
                if !(g > 0.0 && g <= 1.0) {
                    return Err(invalid(&owner, "good_ratio must be in (0, 1]"));
                }
            }
            if let Some(slo) = &s.slo {
                if !ratio_ok(slo.availability) {
                    return Err(invalid(&owner, "slo.availability must be in (0, 1)"));
                }
                if slo.period_s < d.window_s {
                    return Err(invalid(&owner, "slo.period_s is shorter than a window"));
                }
                if let Some(l) = &slo.latency {
                    if Phase::from_name(&l.phase).is_none() {
                        return Err(invalid(
                            &owner,
                            format!("slo.latency.phase `{}` is not a phase", l.phase),
                        ));
                    }
                    if !ratio_ok(l.quantile) {
                        return Err(invalid(&owner, "slo.latency.quantile must be in (0, 1)"));
                    }
                    if !(l.threshold_ms > 0.0 && l.threshold_ms.is_finite()) {
                        return Err(invalid(&owner, "slo.latency.threshold_ms must be positive"));
                    }
                }
            }
            if let Some(rules) = &s.burn_alerts {
                check_rules(&owner, rules)?;
            }
            let mut reach = BTreeSet::new();
            let mut stack: Vec<&str> = Vec::new();
            for dep in &s.depends_on {
                if !comps.contains_key(dep.as_str()) {
                    return Err(ModelError::UnknownComponent {
                        referrer: owner.clone(),
                        component: dep.clone(),
                    });
                }
                stack.push(dep);
            }
            while let Some(c) = stack.pop() {
                if reach.insert(c.to_string()) {
                    stack.extend(comps[c].depends_on.iter().map(String::as_str));
                }
            }
            regions.insert(s.name.clone(), rs.into_iter().collect());
            closure.insert(s.name.clone(), reach);
        }
        Ok(Model {
            spec,
            by_id,
            by_name,
            regions,
            closure,
        })
    }

    /// The model as written.
    pub fn spec(&self) -> &ServiceModel {
        &self.spec
    }

    /// Tuning.
    pub fn defaults(&self) -> &Defaults {
        &self.spec.defaults
    }

    /// Services, in file order.
    pub fn services(&self) -> &[Service] {
        &self.spec.services
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.spec.services.iter().find(|s| s.name == name)
    }

    /// Components, in file order.
    pub fn components(&self) -> &[Component] {
        &self.spec.components
    }

    /// The component named `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.spec.components.iter().find(|c| c.name == name)
    }

    /// The regions a service is probed from, sorted.
    pub fn regions(&self, service: &str) -> &[String] {
        self.regions.get(service).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The k of the service's k-of-n quorum (default: majority of its regions).
    pub fn quorum(&self, service: &str) -> usize {
        let n = self.regions(service).len();
        self.service(service)
            .and_then(|s| s.quorum)
            .unwrap_or(n / 2 + 1)
    }

    /// The good-window ratio of a service.
    pub fn good_ratio(&self, service: &str) -> f64 {
        self.service(service)
            .and_then(|s| s.good_ratio)
            .unwrap_or(self.spec.defaults.good_ratio)
    }

    /// The burn-rate alert rules of a service.
    pub fn burn_rules(&self, service: &str) -> &[BurnAlertRule] {
        self.service(service)
            .and_then(|s| s.burn_alerts.as_deref())
            .unwrap_or(&self.spec.burn_alerts)
    }

    /// Every component a service depends on, directly or not.
    pub fn dependencies(&self, service: &str) -> impl Iterator<Item = &Component> + '_ {
        let set = self.closure.get(service);
        self.spec
            .components
            .iter()
            .filter(move |c| set.is_some_and(|s| s.contains(&c.name)))
    }

    /// The services that depend on `component`, directly or not.
    pub fn dependents(&self, component: &str) -> Vec<&str> {
        self.closure
            .iter()
            .filter(|(_, set)| set.contains(component))
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// Whether `component` lies on the way of `service` as seen from `region`: it is in the
    /// service's dependencies and is either shared (no region) or of that region.
    pub fn applies(&self, service: &str, component: &Component, region: &str) -> bool {
        self.closure
            .get(service)
            .is_some_and(|s| s.contains(&component.name))
            && component.region.as_deref().is_none_or(|r| r == region)
    }

    /// Where the summaries of probe `probe` of edge `edge` belong.
    pub fn locate(&self, edge: u32, probe: u16) -> Option<&ProbeTarget> {
        self.by_id.get(&(edge, probe))
    }

    /// Where the summaries of the probe named `name` belong.
    pub fn locate_name(&self, name: &str) -> Option<&ProbeTarget> {
        self.by_name.get(name)
    }

    /// The service map as RCA edges: service → its direct dependencies, component → its.
    pub fn edges(&self) -> Vec<qos_rca::Edge> {
        let mut out = Vec::new();
        for s in &self.spec.services {
            for d in &s.depends_on {
                out.push(qos_rca::Edge {
                    source: s.name.clone(),
                    target: d.clone(),
                });
            }
        }
        for c in &self.spec.components {
            for d in &c.depends_on {
                out.push(qos_rca::Edge {
                    source: c.name.clone(),
                    target: d.clone(),
                });
            }
        }
        out
    }
}

/// Depth-first search for a cycle among components.
fn find_cycle(comps: &BTreeMap<&str, &Component>) -> Result<(), ModelError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = comps.keys().map(|k| (*k, Mark::New)).collect();
    for &start in comps.keys() {
        if mark[start] != Mark::New {
            continue;
        }
        // (node, index of the next dependency to visit)
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        mark.insert(start, Mark::Active);
        while let Some(&mut (node, ref mut i)) = stack.last_mut() {
            let deps = &comps[node].depends_on;
            if *i < deps.len() {
                let next = deps[*i].as_str();
                *i += 1;
                match mark[next] {
                    Mark::New => {
                        mark.insert(next, Mark::Active);
                        stack.push((next, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut path: Vec<String> =
                            stack[from..].iter().map(|(n, _)| n.to_string()).collect();
                        path.push(next.to_string());
                        return Err(ModelError::Cycle(path));
                    }
                    Mark::Done => {}
                }
            } else {
                mark.insert(node, Mark::Done);
                stack.pop();
            }
        }
    }
    Ok(())
}
