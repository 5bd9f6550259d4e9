//! Window samples (what a summary says, placed in the model) and availability and response
//! time per service, region, phase and period.
//!
//! A *slot* is an evaluation window of [`crate::model::Defaults::window_s`] seconds aligned
//! on multiples of its length; a sample belongs to the slot its start falls in, and every
//! sample of one (service, region, slot) — several probes, several transactions — is merged
//! exactly (counts add, phase statistics merge, sketches merge bucket by bucket).
//!
//! A (region, slot) is **good** when at least `good_ratio` of its runs succeeded, **bad**
//! otherwise, and **missing** when no sample with a run arrived: missing windows are counted
//! apart and never as up. Availability = good / (good + bad).

use std::collections::BTreeMap;

use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;
use qos_wire::sketch::{FullSketch, Sketch};
use qos_wire::summary::{PhaseStat, Summary, STATS};

use crate::model::{Model, ProbeTarget};
use crate::state::{quorum_status, Status};

/// One probe's window, placed in the model: the input of everything here.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSample {
    /// The service (or, for a probe measuring a component directly, the component).
    pub subject: String,
    /// The transaction, for a service.
    pub transaction: Option<String>,
    /// The region probed from.
    pub region: String,
    /// Window start, Unix seconds.
    pub start: u64,
    /// Window length, seconds.
    pub len_s: u32,
    /// Runs (successful + failed).
    pub runs: u32,
    /// Failed runs.
    pub failures: u32,
    /// Failed runs per error class (index = class wire value).
    pub errors: [u32; ErrorClass::COUNT],
    /// Per-phase statistics (index = phase wire value; then time-to-error).
    pub phases: [PhaseStat; STATS],
    /// The total time of successful runs (the only per-run distribution a summary carries).
    pub total: Box<FullSketch>,
}

impl WindowSample {
    /// An empty sample (no run) of `subject` in `region` for the window at `start`.
    pub fn new(subject: &str, region: &str, start: u64, len_s: u32) -> WindowSample {
        WindowSample {
            subject: subject.into(),
            transaction: None,
            region: region.into(),
            start,
            len_s,
            runs: 0,
            failures: 0,
            errors: [0; ErrorClass::COUNT],
            phases: [PhaseStat::default(); STATS],
            total: Box::new(Sketch::new()),
        }
    }

    /// The sample of a summary whose probe the model placed at `target` (see
    /// [`Model::locate`]).
    pub fn from_summary<const N: usize>(target: &ProbeTarget, s: &Summary<N>) -> WindowSample {
        let (subject, transaction, region) = match target {
            ProbeTarget::Transaction {
                service,
                transaction,
                region,
            } => (service, Some(transaction.clone()), region),
            ProbeTarget::Component { component, region } => (component, None, region),
        };
        let mut total: Box<FullSketch> = Box::new(Sketch::new());
        total.merge(&s.sketch);
        WindowSample {
            subject: subject.clone(),
            transaction,
            region: region.clone(),
            start: u64::from(s.start_s),
            len_s: u32::from(s.len_s),
            runs: s.runs(),
            failures: s.failed,
            errors: s.errors,
            phases: s.phases,
            total,
        }
    }

    /// Add `n` successful runs whose phases took `phases` (µs) — for tests and simulations.
    pub fn add_ok(&mut self, n: u32, phases: &[(Phase, u32)]) {
        self.runs += n;
        for &(p, us) in phases {
            for _ in 0..n {
                self.phases[p as usize].add(us);
            }
            if p == Phase::Total {
                self.total.insert_n(us, n);
            }
        }
    }

    /// Add `n` failed runs of class `class`, that got through `phases` first.
    pub fn add_failed(&mut self, n: u32, class: ErrorClass, phases: &[(Phase, u32)]) {
        self.runs += n;
        self.failures += n;
        self.errors[class as usize] += n;
        for &(p, us) in phases {
            for _ in 0..n {
                self.phases[p as usize].add(us);
            }
        }
    }
}

/// Everything known about one (subject, region, slot): the exact merge of its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotAgg {
    /// Samples merged.
    pub samples: u32,
    /// Runs.
    pub runs: u64,
    /// Failed runs.
    pub failures: u64,
    /// Failed runs per error class.
    pub errors: [u64; ErrorClass::COUNT],
    /// Merged phase statistics.
    pub phases: [PhaseStat; STATS],
    /// Merged total-time sketch.
    pub total: Box<FullSketch>,
}

impl Default for SlotAgg {
    fn default() -> Self {
        SlotAgg {
            samples: 0,
            runs: 0,
            failures: 0,
            errors: [0; ErrorClass::COUNT],
            phases: [PhaseStat::default(); STATS],
            total: Box::new(Sketch::new()),
        }
    }
}

impl SlotAgg {
    /// Merge a sample in.
    pub fn add(&mut self, s: &WindowSample) {
        self.samples += 1;
        self.runs += u64::from(s.runs);
        self.failures += u64::from(s.failures);
        for (a, b) in self.errors.iter_mut().zip(s.errors.iter()) {
            *a += u64::from(*b);
        }
        for (a, b) in self.phases.iter_mut().zip(s.phases.iter()) {
            a.merge(b);
        }
        self.total.merge(&s.total);
    }

    /// Merge another aggregate in (exact).
    pub fn merge(&mut self, o: &SlotAgg) {
        self.samples += o.samples;
        self.runs += o.runs;
        self.failures += o.failures;
        for (a, b) in self.errors.iter_mut().zip(o.errors.iter()) {
            *a += *b;
        }
        for (a, b) in self.phases.iter_mut().zip(o.phases.iter()) {
            a.merge(b);
        }
        self.total.merge(&o.total);
    }

    /// Good (`Some(true)`), bad (`Some(false)`) or without data (`None`).
    pub fn good(&self, good_ratio: f64) -> Option<bool> {
        (self.runs > 0).then(|| (self.runs - self.failures) as f64 >= good_ratio * self.runs as f64)
    }

    /// Runs judged for latency and, among them, runs slower than `threshold_us` in `phase`.
    /// For `total` this counts sketch samples whose bucket lies above the threshold (within
    /// the sketch's 1 %); for other phases, which have no per-run distribution, every run of
    /// the window counts as slow when the window's mean exceeds the threshold.
    pub fn slow(&self, phase: Phase, threshold_us: u32) -> (u64, u64) {
        if phase == Phase::Total {
            let n = self.total.count();
            let slow: u64 = self
                .total
                .iter()
                .filter(|(i, _)| FullSketch::bucket_value(*i).is_some_and(|v| v > threshold_us))
                .map(|(_, c)| u64::from(c))
                .sum();
            (n, slow)
        } else {
            let st = &self.phases[phase as usize];
            let n = u64::from(st.count);
            match st.mean() {
                Some(m) if m > threshold_us => (n, n),
                _ => (n, 0),
            }
        }
    }
}

/// Windows counted for availability.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Availability {
    /// Good windows.
    pub good: u64,
    /// Bad windows.
    pub bad: u64,
    /// Windows without data (or, for a service, whose quorum could not be decided).
    pub missing: u64,
}

impl Availability {
    /// good / (good + bad); `None` when no window has data (status unknown).
    pub fn ratio(&self) -> Option<f64> {
        let n = self.good + self.bad;
        (n > 0).then(|| self.good as f64 / n as f64)
    }
    /// Share of the expected windows that had data.
    pub fn coverage(&self) -> f64 {
        let n = self.good + self.bad + self.missing;
        if n == 0 {
            0.0
        } else {
            (self.good + self.bad) as f64 / n as f64
        }
    }
}

/// Response time of one phase over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseTime {
    /// The phase.
    pub phase: Phase,
    /// Measurements.
    pub count: u64,
    /// Exact mean, µs.
    pub mean_us: Option<u32>,
    /// Exact maximum, µs.
    pub max_us: Option<u32>,
    /// p50, p95, p99 from the merged sketch (µs, within 1 %); only for `total`.
    pub percentiles: Option<[u32; 3]>,
}

/// The percentiles [`PhaseTime::percentiles`] holds.
pub const PERCENTILES: [f64; 3] = [0.50, 0.95, 0.99];

fn phase_times(agg: &SlotAgg) -> Vec<PhaseTime> {
    Phase::ALL
        .iter()
        .filter(|p| agg.phases[**p as usize].count > 0)
        .map(|&p| {
            let st = &agg.phases[p as usize];
            let percentiles = (p == Phase::Total && !agg.total.is_empty())
                .then(|| PERCENTILES.map(|q| agg.total.quantile(q).unwrap_or(0)));
            PhaseTime {
                phase: p,
                count: u64::from(st.count),
                mean_us: st.mean(),
                max_us: Some(st.max),
                percentiles,
            }
        })
        .collect()
}

/// One region of a service over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionReport {
    /// The region.
    pub region: String,
    /// Its windows.
    pub availability: Availability,
    /// Runs and failed runs.
    pub runs: u64,
    /// Failed runs.
    pub failures: u64,
    /// Failed runs per error class (classes with none left out).
    pub errors: Vec<(ErrorClass, u64)>,
    /// Response time per phase.
    pub phases: Vec<PhaseTime>,
}

/// A service over a period `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceReport {
    /// The service.
    pub service: String,
    /// Period start, Unix seconds (aligned down to a slot).
    pub from: u64,
    /// Period end, exclusive (aligned up).
    pub to: u64,
    /// Slot length, seconds.
    pub window_s: u64,
    /// Service windows under the k-of-n quorum: good = up or degraded, bad = down, missing =
    /// not decidable.
    pub availability: Availability,
    /// Per region.
    pub regions: Vec<RegionReport>,
    /// Response time per phase over every region (merged).
    pub phases: Vec<PhaseTime>,
}

/// The slot a time falls in.
pub fn slot_of(t: u64, window_s: u64) -> u64 {
    t - t % window_s
}

/// Availability and response time of `service` over `[from, to)` from `samples` (others'
/// samples, and samples outside the period, are ignored). `None` for an unknown service.
pub fn report(
    model: &Model,
    service: &str,
    samples: &[WindowSample],
    from: u64,
    to: u64,
) -> Option<ServiceReport> {
    model.service(service)?;
    let w = model.defaults().window_s;
    let from = slot_of(from, w);
    let to = slot_of(to.saturating_add(w - 1), w).max(from);
    let ratio = model.good_ratio(service);
    let regions = model.regions(service);
    let mut grid: BTreeMap<(&str, u64), SlotAgg> = BTreeMap::new();
    for s in samples {
        if s.subject != service || s.start < from || s.start >= to {
            continue;
        }
        if let Some(r) = regions.iter().find(|r| **r == s.region) {
            grid.entry((r.as_str(), slot_of(s.start, w)))
                .or_default()
                .add(s);
        }
    }
    let slots = (to - from) / w;
    let mut out_regions = Vec::new();
    let mut all = SlotAgg::default();
    for r in regions {
        let mut a = Availability::default();
        let mut agg = SlotAgg::default();
        for (_, g) in grid.range((r.as_str(), from)..(r.as_str(), to)) {
            match g.good(ratio) {
                Some(true) => a.good += 1,
                Some(false) => a.bad += 1,
                None => {}
            }
            agg.merge(g);
        }
        a.missing = slots - a.good - a.bad;
        all.merge(&agg);
        out_regions.push(RegionReport {
            region: r.clone(),
            availability: a,
            runs: agg.runs,
            failures: agg.failures,
            errors: ErrorClass::ALL
                .iter()
                .map(|c| (*c, agg.errors[*c as usize]))
                .filter(|(_, n)| *n > 0)
                .collect(),
            phases: phase_times(&agg),
        });
    }
    let k = model.quorum(service);
    let mut a = Availability::default();
    for slot in (from..to).step_by(w as usize) {
        let (mut good, mut bad) = (0, 0);
        for r in regions {
            match grid.get(&(r.as_str(), slot)).and_then(|g| g.good(ratio)) {
                Some(true) => good += 1,
                Some(false) => bad += 1,
                None => {}
            }
        }
        match quorum_status(good, bad, regions.len() - good - bad, k) {
            Status::Down => a.bad += 1,
            Status::Unknown => a.missing += 1,
            _ => a.good += 1,
        }
    }
    Some(ServiceReport {
        service: service.into(),
        from,
        to,
        window_s: w,
        availability: a,
        regions: out_regions,
        phases: phase_times(&all),
    })
}

/// Detailed aggregates of one service (or component): slot → region → aggregate.
pub type Grid = BTreeMap<u64, BTreeMap<String, SlotAgg>>;
