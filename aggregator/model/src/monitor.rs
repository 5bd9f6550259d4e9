//! The live engine: feed it window samples (and component metrics), call
//! [`Monitor::evaluate`] with the current time, get [`Event`]s (state changes, flapping, SLO
//! alerts, incidents) and, from them, notifications.
//!
//! Each slot is evaluated once, `grace_s` after it ends; samples arriving later still count in
//! [`crate::window::report`] (which serve runs over its store) but no longer change states or
//! alerts. Memory is bounded: detailed aggregates are kept for `lookback_s` + 6 h, SLI
//! counts for the longest of the SLO period and the alert windows, metric points for
//! `lookback_s` + 6 h.

use std::collections::{BTreeMap, BTreeSet};

use qos_rca::Series;
use qos_wire::summary::Summary;

use crate::incident::{analyse, Breakdown, DrillStep, RankedCause};
use crate::model::Model;
use crate::slo::{
    error_budget, Alert, AlertChange, BurnAlerts, ErrorBudget, Sli, SliLedger, SliSlot,
};
use crate::state::{quorum_status, ComponentState, Flap, FlapChange, ServiceState, Status};
use crate::window::{slot_of, Grid, SlotAgg, WindowSample};

/// Regions of a service in a slot: good, bad, missing.
type Split = (Vec<String>, Vec<String>, Vec<String>);

/// How long detailed aggregates and metric points are kept beyond the RCA lookback.
const DETAIL_S: u64 = 6 * 3600;

/// Why a sample was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The probe is not in the model.
    #[error("probe {probe} of edge {edge} is not in the service model")]
    UnknownProbe {
        /// The edge.
        edge: u32,
        /// The probe.
        probe: u16,
    },
    /// The sample names a service or component the model does not have.
    #[error("`{0}` is neither a service nor a component of the model")]
    UnknownSubject(String),
    /// The sample's region is not one the service is probed from.
    #[error("service `{service}` is not probed from region `{region}`")]
    UnknownRegion {
        /// The service.
        service: String,
        /// The region.
        region: String,
    },
}

/// What an incident is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// A service that degraded or went down on its own.
    Service(String),
    /// A down component (network path, shared component) that other services depend on.
    Component(String),
}

impl Subject {
    /// The service or component name.
    pub fn name(&self) -> &str {
        match self {
            Subject::Service(s) | Subject::Component(s) => s,
        }
    }
}

/// An incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Unique, increasing.
    pub id: u64,
    /// What it is about.
    pub subject: Subject,
    /// When opened (start of the first bad slot), Unix seconds.
    pub opened_at: u64,
    /// When last updated (end of the slot).
    pub updated_at: u64,
    /// When resolved.
    pub resolved_at: Option<u64>,
    /// The current state of its subject.
    pub status: Status,
    /// The worst state seen.
    pub worst: Status,
    /// Services affected: the subject and services whose own incident would have had the
    /// same top cause (correlated); for a component incident, those it suppresses.
    pub affected: Vec<String>,
    /// Ranked causes, best first.
    pub causes: Vec<RankedCause>,
    /// The service's phase/region breakdown (service incidents).
    pub breakdown: Option<Breakdown>,
    /// Drill-down service → phase → region → component → metric.
    pub drill: Vec<DrillStep>,
    good_streak: usize,
    /// Services in it: their last status and consecutive good windows.
    members: BTreeMap<String, (Status, usize)>,
}

/// Something that happened in an evaluated slot.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A service's state changed.
    StatusChanged {
        /// The new state with its evidence.
        state: ServiceState,
        /// The previous status.
        previous: Status,
        /// Held back because the service is flapping.
        held: bool,
    },
    /// A component went down or came back.
    ComponentChanged(ComponentState),
    /// A service started flapping; notifications held until stable.
    FlappingStarted {
        /// The service.
        service: String,
        /// Changes in the flapping window.
        changes: usize,
        /// When.
        at: u64,
    },
    /// A service is stable again; its current state.
    FlappingStopped(ServiceState),
    /// An SLO burn-rate alert was raised or cleared.
    Alert(AlertChange),
    /// An incident opened.
    IncidentOpened(Incident),
    /// An incident's status or top cause changed.
    IncidentUpdated(Incident),
    /// An incident resolved.
    IncidentResolved(Incident),
}

#[derive(Debug, Default)]
struct Track {
    grid: Grid,
    ledger: SliLedger,
    alerts: BurnAlerts,
    flap: Flap,
    state: Option<ServiceState>,
    incident: Option<u64>,
}

/// The live engine over one model.
#[derive(Debug)]
pub struct Monitor {
    model: Model,
    services: BTreeMap<String, Track>,
    components: BTreeMap<String, Grid>,
    component_states: BTreeMap<String, ComponentState>,
    metrics: BTreeMap<(String, String), Vec<(f64, f64)>>,
    incidents: Vec<Incident>,
    next_id: u64,
    cursor: Option<u64>,
}

impl Monitor {
    /// An engine with no data.
    pub fn new(model: Model) -> Monitor {
        let services = model
            .services()
            .iter()
            .map(|s| (s.name.clone(), Track::default()))
            .collect();
        Monitor {
            model,
            services,
            components: BTreeMap::new(),
            component_states: BTreeMap::new(),
            metrics: BTreeMap::new(),
            incidents: Vec::new(),
            next_id: 1,
            cursor: None,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Take a summary of probe `summary.probe` of edge `edge`.
    pub fn ingest_summary<const N: usize>(
        &mut self,
        edge: u32,
        summary: &Summary<N>,
    ) -> Result<(), IngestError> {
        let target = self
            .model
            .locate(edge, summary.probe.0)
            .ok_or(IngestError::UnknownProbe {
                edge,
                probe: summary.probe.0,
            })?
            .clone();
        self.ingest(WindowSample::from_summary(&target, summary))
    }

    /// Take a window sample.
    pub fn ingest(&mut self, s: WindowSample) -> Result<(), IngestError> {
        let slot = slot_of(s.start, self.model.defaults().window_s);
        if let Some(t) = self.services.get_mut(&s.subject) {
            if !self.model.regions(&s.subject).contains(&s.region) {
                return Err(IngestError::UnknownRegion {
                    service: s.subject.clone(),
                    region: s.region.clone(),
                });
            }
            add(&mut t.grid, slot, &s);
        } else if self.model.component(&s.subject).is_some() {
            add(
                self.components.entry(s.subject.clone()).or_default(),
                slot,
                &s,
            );
        } else {
            return Err(IngestError::UnknownSubject(s.subject));
        }
        Ok(())
    }

    /// Take one point of a component metric (CPU, a database's latency, …) for RCA.
    pub fn record_metric(&mut self, component: &str, metric: &str, t: f64, v: f64) {
        self.metrics
            .entry((component.to_string(), metric.to_string()))
            .or_default()
            .push((t, v));
    }

    /// The last evaluated state of a service.
    pub fn state(&self, service: &str) -> Option<&ServiceState> {
        self.services.get(service)?.state.as_ref()
    }

    /// The last evaluated state of every component measured or inferred.
    pub fn component_states(&self) -> impl Iterator<Item = &ComponentState> {
        self.component_states.values()
    }

    /// Open and recently resolved incidents, oldest first.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// Raised SLO alerts.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.services.values().flat_map(|t| t.alerts.active())
    }

    /// The error budget of `sli` of `service` over its SLO period ending at `now`.
    pub fn budget(&self, service: &str, sli: Sli, now: u64) -> Option<ErrorBudget> {
        let slo = self.model.service(service)?.slo.as_ref()?;
        let target = match sli {
            Sli::Availability => slo.availability,
            Sli::Latency => slo.latency.as_ref()?.quantile,
        };
        let (ev, bad) = self.services[service].ledger.window(sli, now, slo.period_s);
        Some(error_budget(target, ev, bad))
    }

    /// Evaluate every slot that ended at least `grace_s` before `now` and was not evaluated
    /// yet; return what happened, in order.
    pub fn evaluate(&mut self, now: u64) -> Vec<Event> {
        let d = self.model.defaults().clone();
        let w = d.window_s;
        let Some(last) = now.checked_sub(w + d.grace_s).map(|t| slot_of(t, w)) else {
            return Vec::new();
        };
        let first_data = self
            .services
            .values()
            .filter_map(|t| t.grid.keys().next().copied())
            .min();
        let start = match (self.cursor, first_data) {
            (Some(c), _) => c,
            (None, Some(f)) => f.min(last),
            (None, None) => last,
        };
        // Never replay more than the detail retention after a long pause.
        let start = start.max(last.saturating_sub(d.lookback_s + DETAIL_S));
        let mut events = Vec::new();
        let mut slot = start;
        while slot <= last {
            self.evaluate_slot(slot, &mut events);
            slot += w;
        }
        self.cursor = Some(slot);
        self.prune(now);
        events
    }

    fn prune(&mut self, now: u64) {
        let d = self.model.defaults();
        let detail = now.saturating_sub(d.lookback_s + DETAIL_S);
        for (name, t) in self.services.iter_mut() {
            t.grid = t.grid.split_off(&detail);
            let mut keep = self
                .model
                .burn_rules(name)
                .iter()
                .map(|r| r.long_s)
                .max()
                .unwrap_or(0);
            if let Some(slo) = self.model.service(name).and_then(|s| s.slo.as_ref()) {
                keep = keep.max(slo.period_s);
            }
            t.ledger.prune(now.saturating_sub(keep + d.window_s));
        }
        for g in self.components.values_mut() {
            *g = g.split_off(&detail);
        }
        for v in self.metrics.values_mut() {
            v.retain(|(t, _)| *t >= detail as f64);
        }
        self.metrics.retain(|_, v| !v.is_empty());
        // keep resolved incidents for a day
        self.incidents
            .retain(|i| i.resolved_at.is_none_or(|r| r + 86_400 > now));
    }

    /// Per region of `service` in `slot`: good, bad, missing.
    fn regions(&self, service: &str, slot: u64) -> Split {
        let ratio = self.model.good_ratio(service);
        let row = self.services[service].grid.get(&slot);
        let (mut g, mut b, mut m) = (Vec::new(), Vec::new(), Vec::new());
        for r in self.model.regions(service) {
            match row.and_then(|x| x.get(r)).and_then(|a| a.good(ratio)) {
                Some(true) => g.push(r.clone()),
                Some(false) => b.push(r.clone()),
                None => m.push(r.clone()),
            }
        }
        (g, b, m)
    }

    fn component_down(
        &self,
        slot: u64,
        regions: &BTreeMap<String, Split>,
    ) -> BTreeMap<String, String> {
        let ratio = self.model.defaults().good_ratio;
        let mut down = BTreeMap::new();
        for c in self.model.components() {
            // measured by its own probes: a majority of the regions with data fail
            if let Some(row) = self.components.get(&c.name).and_then(|g| g.get(&slot)) {
                let judged: Vec<(&String, bool)> = row
                    .iter()
                    .filter_map(|(r, a)| a.good(ratio).map(|g| (r, g)))
                    .collect();
                let bad: Vec<&str> = judged
                    .iter()
                    .filter(|(_, g)| !g)
                    .map(|(r, _)| r.as_str())
                    .collect();
                if !judged.is_empty() && bad.len() * 2 > judged.len() {
                    down.insert(
                        c.name.clone(),
                        format!("its own probes fail from {}", bad.join(", ")),
                    );
                    continue;
                }
            }
            // inferred, for regional components only (a path from a region, a regional
            // resolver): shared by ≥ 2 services, each failing everywhere it uses it, one of
            // them at least good in another region. A shared
            // server-side component is not inferred: several may be common to the failing
            // services (load balancer, app, database), and picking one by the graph alone
            // would contradict the evidence; the services' incidents rank them with RCA.
            let deps = self.model.dependents(&c.name);
            if deps.len() < 2 || c.region.is_none() {
                continue;
            }
            let all = deps.iter().all(|s| {
                let (g, b, _) = &regions[*s];
                let on = |r: &String| self.model.applies(s, c, r);
                b.iter().any(on) && !g.iter().any(on)
            });
            // ... and the failure is regional: some of them are good elsewhere (when every
            // region fails, the server side is the better explanation).
            let regional = deps.iter().any(|s| !regions[*s].0.is_empty());
            if all && regional {
                down.insert(
                    c.name.clone(),
                    format!(
                        "all {} services behind it fail where they use it: {}",
                        deps.len(),
                        deps.join(", ")
                    ),
                );
            }
        }
        down
    }

    fn evaluate_slot(&mut self, slot: u64, events: &mut Vec<Event>) {
        let d = self.model.defaults().clone();
        let end = slot + d.window_s;
        let names: Vec<String> = self.services.keys().cloned().collect();
        let regions: BTreeMap<String, _> = names
            .iter()
            .map(|s| (s.clone(), self.regions(s, slot)))
            .collect();

        // Components: down, and which down components are consequences of others.
        let down = self.component_down(slot, &regions);
        let mut roots = BTreeSet::new();
        for c in self.model.components() {
            let mut below = BTreeSet::new();
            let mut stack: Vec<&str> = c.depends_on.iter().map(String::as_str).collect();
            while let Some(x) = stack.pop() {
                if below.insert(x) {
                    if let Some(cc) = self.model.component(x) {
                        stack.extend(cc.depends_on.iter().map(String::as_str));
                    }
                }
            }
            let by: Vec<String> = below
                .into_iter()
                .filter(|x| down.contains_key(*x))
                .map(String::from)
                .collect();
            let is_down = down.contains_key(&c.name);
            if is_down && by.is_empty() {
                roots.insert(c.name.clone());
            }
            let st = ComponentState {
                component: c.name.clone(),
                down: is_down,
                reason: down.get(&c.name).cloned(),
                suppressed_by: by,
            };
            let prev = self.component_states.get(&c.name);
            if prev.map(|p| p.down) != Some(st.down) && (st.down || prev.is_some()) {
                events.push(Event::ComponentChanged(st.clone()));
            }
            if st.down || prev.is_some() {
                self.component_states.insert(c.name.clone(), st);
            }
        }

        for name in &names {
            let (good, bad, missing) = regions[name].clone();
            let k = self.model.quorum(name);
            let mut status = quorum_status(good.len(), bad.len(), missing.len(), k);
            let mut reasons = Vec::new();
            if !bad.is_empty() {
                reasons.push(format!(
                    "{} of {} regions fail ({}); quorum {k}",
                    bad.len(),
                    self.model.regions(name).len(),
                    bad.join(", ")
                ));
            }
            if !missing.is_empty() {
                reasons.push(format!("no data from {}", missing.join(", ")));
            }
            // SLI ledger: availability and latency counts of this slot.
            let slo = self.model.service(name).and_then(|s| s.slo.clone());
            let mut merged = SlotAgg::default();
            if let Some(row) = self.services[name].grid.get(&slot) {
                for a in row.values() {
                    merged.merge(a);
                }
            }
            let (lr, ls) = slo
                .as_ref()
                .and_then(|s| s.latency.as_ref())
                .map(|l| merged.slow(l.phase(), l.threshold_us()))
                .unwrap_or((0, 0));
            let rules = self.model.burn_rules(name).to_vec();
            let track = self.services.get_mut(name).expect("service track");
            track.ledger.record(
                slot,
                SliSlot {
                    down: match status {
                        Status::Down => Some(true),
                        Status::Unknown => None,
                        _ => Some(false),
                    },
                    latency_runs: lr,
                    latency_slow: ls,
                },
            );
            let mut latency_burn = None;
            if let Some(l) = slo.as_ref().and_then(|s| s.latency.as_ref()) {
                let short = rules.iter().map(|r| r.short_s).min().unwrap_or(300);
                let (ev, b) = track.ledger.window(Sli::Latency, end, short);
                latency_burn = crate::slo::burn_rate(l.quantile, ev, b);
                if status == Status::Up && latency_burn.is_some_and(|x| x > d.degraded_burn) {
                    status = Status::Degraded;
                    reasons.push(format!(
                        "latency objective burns at {:.1}× over {short} s",
                        latency_burn.unwrap_or(0.0)
                    ));
                }
            }
            // Alerts.
            if let Some(slo) = &slo {
                for ch in track.alerts.evaluate(
                    name,
                    Sli::Availability,
                    slo.availability,
                    &rules,
                    &track.ledger,
                    end,
                ) {
                    events.push(Event::Alert(ch));
                }
                if let Some(l) = &slo.latency {
                    for ch in track.alerts.evaluate(
                        name,
                        Sli::Latency,
                        l.quantile,
                        &rules,
                        &track.ledger,
                        end,
                    ) {
                        events.push(Event::Alert(ch));
                    }
                }
            }
            // Suppression: every bad region explained by a root down component.
            let mut by = BTreeSet::new();
            let explained = !bad.is_empty()
                && bad.iter().all(|r| {
                    let cs: Vec<&String> = roots
                        .iter()
                        .filter(|c| {
                            self.model
                                .component(c)
                                .is_some_and(|cc| self.model.applies(name, cc, r))
                        })
                        .collect();
                    by.extend(cs.iter().map(|c| (*c).clone()));
                    !cs.is_empty()
                });
            let suppressed_by: Vec<String> = if explained {
                reasons.push(format!(
                    "consequence of {}",
                    by.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
                by.into_iter().collect()
            } else {
                Vec::new()
            };
            let first = track.state.is_none();
            let previous = track
                .state
                .as_ref()
                .map(|s| s.status)
                .unwrap_or(Status::Unknown);
            let changed = !first && previous != status;
            let flap = track.flap.observe(
                end,
                changed,
                d.flap_window_s,
                d.flap_threshold,
                d.stable_windows,
            );
            let state = ServiceState {
                service: name.clone(),
                slot,
                status,
                regions_good: good,
                regions_bad: bad,
                regions_missing: missing,
                quorum: k,
                latency_burn,
                suppressed_by,
                flapping: track.flap.flapping(),
                reasons,
            };
            track.state = Some(state.clone());
            if let FlapChange::Started(n) = flap {
                events.push(Event::FlappingStarted {
                    service: name.clone(),
                    changes: n,
                    at: end,
                });
            }
            if changed || (first && status != Status::Unknown) {
                events.push(Event::StatusChanged {
                    state: state.clone(),
                    previous,
                    held: state.flapping,
                });
            }
            if flap == FlapChange::Stopped {
                events.push(Event::FlappingStopped(state.clone()));
            }
            if !state.flapping {
                self.service_incident(&state, end, events);
            }
        }
        self.component_incidents(&roots, &down, slot, end, events);
    }

    fn service_incident(&mut self, st: &ServiceState, end: u64, events: &mut Vec<Event>) {
        let d = self.model.defaults().clone();
        let name = &st.service;
        let open = self.services[name].incident;
        let bad = st.status.is_bad() && st.suppressed_by.is_empty();
        match (open, bad) {
            (None, true) => {
                let mut inc = Incident {
                    id: 0,
                    subject: Subject::Service(name.clone()),
                    opened_at: st.slot,
                    updated_at: end,
                    resolved_at: None,
                    status: st.status,
                    worst: st.status,
                    affected: vec![name.clone()],
                    causes: Vec::new(),
                    breakdown: None,
                    drill: Vec::new(),
                    good_streak: 0,
                    members: BTreeMap::from([(name.clone(), (st.status, 0))]),
                };
                self.analyse_into(&mut inc, st.status, end);
                // Correlation: an open service incident whose top cause is the same component,
                // both backed by a deviation of that component's own metrics, takes this
                // service in as affected instead of a second incident.
                let top = inc.causes.first().filter(|c| c.rca > 0.0);
                let host = top.and_then(|t| {
                    self.incidents.iter().position(|i| {
                        i.resolved_at.is_none()
                            && matches!(i.subject, Subject::Service(_))
                            && i.causes
                                .first()
                                .is_some_and(|c| c.rca > 0.0 && c.component == t.component)
                    })
                });
                if let Some(pos) = host {
                    let h = &mut self.incidents[pos];
                    h.affected.push(name.clone());
                    h.members.insert(name.clone(), (st.status, 0));
                    h.worst = h.worst.max(st.status);
                    h.status = members_status(&h.members);
                    h.updated_at = end;
                    let (id, h) = (h.id, h.clone());
                    self.services.get_mut(name).expect("track").incident = Some(id);
                    events.push(Event::IncidentUpdated(h));
                    return;
                }
                inc.id = self.next_id;
                self.next_id += 1;
                self.services.get_mut(name).expect("track").incident = Some(inc.id);
                self.incidents.push(inc.clone());
                events.push(Event::IncidentOpened(inc));
            }
            (Some(id), _) => {
                let Some(pos) = self.incidents.iter().position(|i| i.id == id) else {
                    return;
                };
                let mut inc = self.incidents[pos].clone();
                let owner = inc.subject.name() == name.as_str();
                inc.updated_at = end;
                if st.status.is_bad() {
                    inc.members.insert(name.clone(), (st.status, 0));
                    inc.worst = inc.worst.max(st.status);
                    let before = inc.status;
                    inc.status = members_status(&inc.members);
                    if owner {
                        let top = inc.causes.first().map(|c| c.component.clone());
                        self.analyse_into(&mut inc, st.status, end);
                        let changed = before != inc.status
                            || top != inc.causes.first().map(|c| c.component.clone());
                        self.incidents[pos] = inc.clone();
                        if changed {
                            events.push(Event::IncidentUpdated(inc));
                        }
                    } else {
                        let changed = before != inc.status;
                        self.incidents[pos] = inc.clone();
                        if changed {
                            events.push(Event::IncidentUpdated(inc));
                        }
                    }
                } else if st.status == Status::Up {
                    let m = inc.members.entry(name.clone()).or_insert((Status::Up, 0));
                    *m = (Status::Up, m.1 + 1);
                    inc.status = members_status(&inc.members);
                    if inc.members.values().all(|&(_, n)| n >= d.resolve_after) {
                        inc.resolved_at = Some(end);
                        for m in inc.members.keys() {
                            if let Some(t) = self.services.get_mut(m) {
                                t.incident = None;
                            }
                        }
                        events.push(Event::IncidentResolved(inc.clone()));
                    }
                    self.incidents[pos] = inc;
                } else {
                    // unknown: neither good nor bad; the streak waits.
                    self.incidents[pos] = inc;
                }
            }
            (None, false) => {}
        }
    }

    fn analyse_into(&self, inc: &mut Incident, status: Status, end: u64) {
        let name = inc.subject.name().to_string();
        let deps: BTreeSet<&str> = self
            .model
            .dependencies(&name)
            .map(|c| c.name.as_str())
            .collect();
        let metrics: Vec<Series> = self
            .metrics
            .iter()
            .filter(|((c, _), _)| deps.contains(c.as_str()))
            .map(|((c, m), pts)| Series {
                component: c.clone(),
                metric: m.clone(),
                points: pts.clone(),
            })
            .collect();
        let a = analyse(
            &self.model,
            &name,
            status,
            &self.services[&name].grid,
            &metrics,
            inc.opened_at,
            end,
        );
        inc.causes = a.causes;
        inc.drill = a.drill;
        inc.breakdown = Some(a.breakdown);
    }

    fn component_incidents(
        &mut self,
        roots: &BTreeSet<String>,
        down: &BTreeMap<String, String>,
        slot: u64,
        end: u64,
        events: &mut Vec<Event>,
    ) {
        let d = self.model.defaults().clone();
        for c in roots {
            let affected: Vec<String> = self
                .services
                .iter()
                .filter(|(_, t)| {
                    t.state
                        .as_ref()
                        .is_some_and(|s| s.suppressed_by.contains(c))
                })
                .map(|(n, _)| n.clone())
                .collect();
            let open = self
                .incidents
                .iter_mut()
                .find(|i| i.resolved_at.is_none() && i.subject == Subject::Component(c.clone()));
            match open {
                Some(inc) => {
                    inc.good_streak = 0;
                    inc.updated_at = end;
                    inc.status = Status::Down;
                    if inc.affected != affected {
                        inc.affected = affected;
                        events.push(Event::IncidentUpdated(inc.clone()));
                    }
                }
                None => {
                    let comp = self.model.component(c);
                    let inc = Incident {
                        id: self.next_id,
                        subject: Subject::Component(c.clone()),
                        opened_at: slot,
                        updated_at: end,
                        resolved_at: None,
                        status: Status::Down,
                        worst: Status::Down,
                        affected,
                        causes: vec![RankedCause {
                            component: c.clone(),
                            kind: comp.map(|x| x.kind),
                            region: comp.and_then(|x| x.region.clone()),
                            score: 1.0,
                            rca: 0.0,
                            prior: 1.0,
                            metric: None,
                            onset: Some(slot as f64),
                            evidence: down.get(c).cloned().into_iter().collect(),
                        }],
                        breakdown: None,
                        drill: Vec::new(),
                        good_streak: 0,
                        members: BTreeMap::new(),
                    };
                    self.next_id += 1;
                    self.incidents.push(inc.clone());
                    events.push(Event::IncidentOpened(inc));
                }
            }
        }
        for inc in self.incidents.iter_mut() {
            if let (Subject::Component(c), None) = (&inc.subject, inc.resolved_at) {
                if !down.contains_key(c) {
                    inc.good_streak += 1;
                    inc.status = Status::Up;
                    inc.updated_at = end;
                    if inc.good_streak >= d.resolve_after {
                        inc.resolved_at = Some(end);
                        events.push(Event::IncidentResolved(inc.clone()));
                    }
                }
            }
        }
    }
}

/// An incident's status from its services': the worst of down, degraded, up.
fn members_status(m: &BTreeMap<String, (Status, usize)>) -> Status {
    let v = |s: Status| match s {
        Status::Down => 2,
        Status::Degraded => 1,
        _ => 0,
    };
    m.values()
        .map(|(s, _)| *s)
        .max_by_key(|s| v(*s))
        .unwrap_or(Status::Up)
}

fn add(grid: &mut Grid, slot: u64, s: &WindowSample) {
    grid.entry(slot)
        .or_default()
        .entry(s.region.clone())
        .or_default()
        .add(s);
}
