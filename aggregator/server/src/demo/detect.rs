//! Incidents, until the service-model crate gives serve its own: the demo reads the stored
//! window summaries from serve's API (`GET /api/v1/summaries`), keeps per-region indicators
//! (availability and mean total time of each probe kind), decides when one degrades, opens an
//! incident, ranks its causes with `qos_rca` over the component metrics of the demo's series
//! store plus the per-phase/per-region indicator series, and prints it all.
//!
//! The rest of the demo sees only [`IncidentSource`]: swapping this detector for one that
//! reads serve's `GET /api/v1/incidents` is a new implementation of that trait.
//!
//! Rules (no metric name is special to the ranking; these only decide *when* to rank):
//! - a window is bad when its availability is under [`MIN_AVAILABILITY`], or its mean total
//!   time is over `max(4 × baseline, baseline + 25 ms)` (the baseline is the median of earlier
//!   good windows; without one, over 100 ms);
//! - an indicator degrades when its two newest windows are bad, and recovers when they are
//!   good; the incident's start is the first window of the bad run;
//! - indicators that degrade while an incident is still unranked, or within [`JOIN_S`] of its
//!   start, join it; otherwise a new incident opens; it is ranked once [`RANK_AFTER_S`] of data after its start are in, and
//!   resolved when all its indicators recovered.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

use super::metrics::SeriesStore;
use super::{api, Console};

/// Availability under which a window is bad.
pub const MIN_AVAILABILITY: f64 = 0.8;
/// Seconds of data after an incident's start before it is ranked.
pub const RANK_AFTER_S: f64 = 2.5;
/// The longest baseline given to RCA, seconds (the engine's default look-back).
const MAX_LOOKBACK_S: f64 = 1800.0;
/// Indicators whose degradation began within this many seconds of an open incident's start
/// join it, even when it is already ranked (one fault seen from several regions or probes).
pub const JOIN_S: f64 = 4.0;
/// Good windows kept per indicator for its baseline.
const HISTORY: usize = 600;
/// Windows re-read on every poll, for summaries that arrive late (through a failover).
const LATE_S: u32 = 30;

/// Something that reports incidents and their ranked causes as they happen.
pub trait IncidentSource {
    /// Looks for news (called about once a second) and prints it on `console`.
    fn tick(&mut self, now: f64, console: &Console);
    /// Incidents opened so far.
    fn opened(&self) -> usize;
}

/// One window of one indicator, merged over the region's edges.
#[derive(Debug, Default, Clone)]
struct Window {
    ok: u64,
    failed: u64,
    total_sum_us: f64,
    total_count: u64,
    phases: BTreeMap<String, (f64, u64)>,
}

impl Window {
    fn availability(&self) -> Option<f64> {
        let n = self.ok + self.failed;
        (n > 0).then(|| self.ok as f64 / n as f64)
    }
    fn mean_ms(&self) -> Option<f64> {
        (self.total_count > 0).then(|| self.total_sum_us / self.total_count as f64 / 1000.0)
    }
}

#[derive(Debug, Default)]
struct Indicator {
    windows: BTreeMap<u32, Window>,
    history: Vec<f64>,
    finalized_until: u32,
    degraded: bool,
}

impl Indicator {
    fn baseline(&self) -> Option<f64> {
        if self.history.len() < 3 {
            return None;
        }
        let mut v = self.history.clone();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    fn bad(&self, w: &Window) -> bool {
        if w.availability().is_some_and(|a| a < MIN_AVAILABILITY) {
            return true;
        }
        match (w.mean_ms(), self.baseline()) {
            (Some(m), Some(b)) => m > (4.0 * b).max(b + 25.0),
            (Some(m), None) => m > 100.0,
            (None, _) => false,
        }
    }

    /// Moves windows older than the newest few into the baseline history (good ones only).
    fn finalize(&mut self) {
        let Some(&newest) = self.windows.keys().next_back() else {
            return;
        };
        let until = newest.saturating_sub(4);
        let ready: Vec<u32> = self
            .windows
            .range(self.finalized_until..until)
            .map(|(&s, _)| s)
            .collect();
        for s in ready {
            let w = self.windows[&s].clone();
            if !self.bad(&w) {
                if let Some(m) = w.mean_ms() {
                    self.history.push(m);
                    if self.history.len() > HISTORY {
                        self.history.remove(0);
                    }
                }
            }
        }
        self.finalized_until = self.finalized_until.max(until);
        // Keep a bounded number of windows.
        while self.windows.len() > 4 * HISTORY {
            self.windows.pop_first();
        }
    }

    /// (two newest bad, two newest good, start of the newest bad run).
    fn state(&self) -> (bool, bool, Option<u32>) {
        let newest: Vec<(u32, bool)> = self
            .windows
            .iter()
            .rev()
            .take(2)
            .map(|(&s, w)| (s, self.bad(w)))
            .collect();
        if newest.len() < 2 {
            return (false, false, None);
        }
        let all_bad = newest.iter().all(|&(_, b)| b);
        let all_good = newest.iter().all(|&(_, b)| !b);
        let mut start = None;
        for (&s, w) in self.windows.iter().rev() {
            if !self.bad(w) {
                break;
            }
            start = Some(s);
        }
        (all_bad, all_good, start)
    }
}

#[derive(Debug)]
struct Incident {
    id: usize,
    at: f64,
    indicators: BTreeSet<(String, String)>,
    ranked: bool,
    resolved: bool,
}

/// The demo's own detector (see the module documentation).
pub struct LocalDetector {
    api: SocketAddr,
    edges: BTreeSet<u64>,
    kinds: BTreeMap<u16, String>,
    series: Arc<SeriesStore>,
    topology: Vec<qos_rca::Edge>,
    started: f64,
    since: u32,
    seen: HashSet<(u64, u16, u32)>,
    indicators: BTreeMap<(String, String), Indicator>,
    incidents: Vec<Incident>,
    last_error: Option<String>,
}

impl LocalDetector {
    /// A detector reading serve's API at `api` about the `edges` (ids); `kinds` names the probe
    /// ids (`http`, `dns`);
    /// `topology` is the service map (caller → callee) given to RCA.
    pub fn new(
        api: SocketAddr,
        edges: BTreeSet<u64>,
        kinds: BTreeMap<u16, String>,
        series: Arc<SeriesStore>,
        topology: Vec<qos_rca::Edge>,
        started: f64,
    ) -> LocalDetector {
        LocalDetector {
            api,
            edges,
            kinds,
            series,
            topology,
            started,
            since: 0,
            seen: HashSet::new(),
            indicators: BTreeMap::new(),
            incidents: Vec::new(),
            last_error: None,
        }
    }

    fn ingest(&mut self, doc: &Value) {
        let Some(list) = doc["summaries"].as_array() else {
            return;
        };
        for s in list {
            let (Some(edge), Some(probe), Some(start)) = (
                s["edge"].as_u64(),
                s["probe"].as_u64().and_then(|p| u16::try_from(p).ok()),
                s["start"].as_u64().and_then(|p| u32::try_from(p).ok()),
            ) else {
                continue;
            };
            if !self.edges.contains(&edge) || !self.seen.insert((edge, probe, start)) {
                continue;
            }
            let Some(kind) = self.kinds.get(&probe).cloned() else {
                continue;
            };
            let region = s["region"].as_str().unwrap_or("?").to_string();
            let ind = self.indicators.entry((region, kind)).or_default();
            let w = ind.windows.entry(start).or_default();
            w.ok += s["ok"].as_u64().unwrap_or(0);
            w.failed += s["failed"].as_u64().unwrap_or(0);
            if let Some(phases) = s["phases_us"].as_object() {
                for (name, p) in phases {
                    let count = p["count"].as_u64().unwrap_or(0);
                    let sum = p["mean"].as_f64().unwrap_or(0.0) * count as f64;
                    if name == "total" {
                        // Total time of successful runs only: failed ones are in availability.
                        let failed = s["failed"].as_u64().unwrap_or(0);
                        if failed == 0 {
                            w.total_sum_us += sum;
                            w.total_count += count;
                        }
                    }
                    let e = w.phases.entry(name.clone()).or_default();
                    e.0 += sum;
                    e.1 += count;
                }
            }
            self.since = self.since.max(start.saturating_sub(LATE_S));
        }
        if self.seen.len() > 200_000 {
            let keep = self.since;
            self.seen.retain(|&(_, _, s)| s >= keep);
        }
    }

    /// The indicator series (per region, kind and phase) in `[from, to]`, as RCA SLIs.
    fn sli_series(&self, from: f64, to: f64) -> Vec<qos_rca::Series> {
        let mut out = Vec::new();
        for ((region, kind), ind) in &self.indicators {
            let mut avail = Vec::new();
            let mut total = Vec::new();
            let mut phases: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
            for (&s, w) in &ind.windows {
                let t = f64::from(s) + 0.5;
                if t < from || t > to {
                    continue;
                }
                if let Some(a) = w.availability() {
                    avail.push((t, a));
                }
                if let Some(m) = w.mean_ms() {
                    total.push((t, m));
                }
                for (name, &(sum, count)) in &w.phases {
                    if count > 0 && name != "total" {
                        phases
                            .entry(name.as_str())
                            .or_default()
                            .push((t, sum / count as f64 / 1000.0));
                    }
                }
            }
            let mut push = |metric: String, points: Vec<(f64, f64)>| {
                if !points.is_empty() {
                    out.push(qos_rca::Series {
                        component: "service".into(),
                        metric,
                        points,
                    });
                }
            };
            push(format!("{region}/{kind} availability"), avail);
            push(format!("{region}/{kind} total_ms"), total);
            for (phase, points) in phases {
                push(format!("{region}/{kind} {phase}_ms"), points);
            }
        }
        out
    }

    fn rank(&mut self, idx: usize, now: f64, console: &Console) {
        let at = self.incidents[idx].at;
        let from = self.started.max(at - MAX_LOOKBACK_S);
        let incident = qos_rca::Incident {
            metrics: self.series.window(from, now),
            slis: self.sli_series(from, now),
            edges: self.topology.clone(),
            at,
        };
        let config = qos_rca::Config {
            lookback: (at - from).max(1.0),
            horizon: (now - at).max(1.0),
            ..qos_rca::Config::default()
        };
        let ranking = qos_rca::rank(&incident, &config);
        let id = self.incidents[idx].id;
        self.incidents[idx].ranked = true;
        let Some(top) = ranking.first() else {
            console.say(&format!("incident {id}: no component data to rank"));
            return;
        };
        let list: Vec<String> = ranking
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{}. {} ({:.2}{})",
                    i + 1,
                    c.component,
                    c.score,
                    c.metric
                        .as_deref()
                        .map(|m| format!(", {m}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        console.say(&format!("incident {id} ranking: {}", list.join("  ")));
        let evidence = top.evidence.first().cloned().unwrap_or_default();
        console.say(&format!(
            "incident {id} top cause: {} — {evidence}",
            top.component
        ));
    }
}

impl IncidentSource for LocalDetector {
    fn tick(&mut self, now: f64, console: &Console) {
        let path = format!("/api/v1/summaries?since={}", self.since);
        match api::get_json(self.api, &path) {
            Ok(doc) => {
                self.last_error = None;
                self.ingest(&doc);
            }
            Err(e) => {
                if self.last_error.as_ref() != Some(&e) {
                    console.say(&format!("cannot read summaries from serve: {e}"));
                }
                self.last_error = Some(e);
                return;
            }
        }
        let mut news = Vec::new();
        for (key, ind) in self.indicators.iter_mut() {
            ind.finalize();
            let (bad, good, start) = ind.state();
            if bad && !ind.degraded {
                ind.degraded = true;
                let newest = ind
                    .windows
                    .values()
                    .next_back()
                    .cloned()
                    .unwrap_or_default();
                let what = match (newest.availability(), newest.mean_ms(), ind.baseline()) {
                    (Some(a), _, _) if a < MIN_AVAILABILITY => {
                        format!("availability {:.0}%", a * 100.0)
                    }
                    (_, Some(m), Some(b)) => format!("total {m:.1} ms (baseline {b:.1} ms)"),
                    (_, Some(m), None) => format!("total {m:.1} ms"),
                    _ => "no data".into(),
                };
                news.push((key.clone(), true, start, what));
            } else if good && ind.degraded {
                ind.degraded = false;
                news.push((key.clone(), false, None, String::new()));
            }
        }
        for (key, degraded, start, what) in news {
            let (region, kind) = &key;
            if degraded {
                let at = f64::from(start.unwrap_or(now as u32));
                let open = self
                    .incidents
                    .iter_mut()
                    .find(|i| !i.resolved && (!i.ranked || (at - i.at).abs() <= JOIN_S));
                let id = match open {
                    Some(i) => {
                        i.indicators.insert(key.clone());
                        i.at = i.at.min(at);
                        i.id
                    }
                    None => {
                        let id = self.incidents.len() + 1;
                        self.incidents.push(Incident {
                            id,
                            at,
                            indicators: BTreeSet::from([key.clone()]),
                            ranked: false,
                            resolved: false,
                        });
                        console.say(&format!(
                            "incident {id} opened: degradation seen from {:.1} s ago",
                            now - at
                        ));
                        id
                    }
                };
                console.say(&format!("incident {id}: {region}/{kind} degraded: {what}"));
            } else {
                console.say(&format!("{region}/{kind} recovered"));
            }
        }
        for idx in 0..self.incidents.len() {
            let i = &self.incidents[idx];
            if !i.ranked && !i.resolved && now - i.at >= RANK_AFTER_S {
                self.rank(idx, now, console);
            }
            let i = &self.incidents[idx];
            let recovered = i
                .indicators
                .iter()
                .all(|k| self.indicators.get(k).is_none_or(|ind| !ind.degraded));
            if i.ranked && !i.resolved && recovered {
                console.say(&format!(
                    "incident {} resolved after {:.0} s",
                    i.id,
                    now - i.at
                ));
                self.incidents[idx].resolved = true;
            }
        }
    }

    fn opened(&self) -> usize {
        self.incidents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(ok: u64, failed: u64, mean_ms: f64) -> Window {
        Window {
            ok,
            failed,
            total_sum_us: mean_ms * 1000.0 * ok as f64,
            total_count: ok,
            phases: BTreeMap::new(),
        }
    }

    #[test]
    fn an_indicator_degrades_on_two_bad_windows_and_recovers_on_two_good() {
        let mut ind = Indicator::default();
        for s in 0..10 {
            ind.windows
                .insert(s, window(4, 0, 1.0 + f64::from(s % 2) * 0.2));
        }
        ind.finalize();
        assert!(ind.baseline().is_some_and(|b| (1.0..=1.2).contains(&b)));
        assert_eq!(ind.state(), (false, true, None));
        // One slow window is not yet a degradation.
        ind.windows.insert(10, window(4, 0, 50.0));
        assert_eq!(ind.state(), (false, false, Some(10)));
        // A second bad one (failures this time) is; the run began at the first.
        ind.windows.insert(11, window(1, 3, 1.0));
        assert_eq!(ind.state(), (true, false, Some(10)));
        ind.windows.insert(12, window(4, 0, 1.1));
        ind.windows.insert(13, window(4, 0, 0.9));
        assert_eq!(ind.state(), (false, true, None));
        // Bad windows never enter the baseline.
        ind.windows.insert(20, window(4, 0, 1.0));
        ind.finalize();
        assert!(ind.history.iter().all(|&m| m < 2.0), "{:?}", ind.history);
    }

    #[test]
    fn without_a_baseline_only_clear_degradations_count() {
        let ind = Indicator::default();
        assert!(!ind.bad(&window(4, 0, 20.0)));
        assert!(ind.bad(&window(4, 0, 150.0)));
        assert!(ind.bad(&window(3, 1, 1.0)), "75 % availability");
    }
}
