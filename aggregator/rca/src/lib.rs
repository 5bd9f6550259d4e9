//! Root-cause analysis for the super-manager: which component most likely caused an incident
//! that began around a moment `at`.
//!
//! The engine is independent of where the data comes from. It takes an [`Incident`]: metric
//! series per component (any metrics, of any scale: CPU, memory, latency percentiles, error
//! counts, syscalls…), optional service-level indicators seen by users, optional dependency
//! edges (the service map) and the moment `at`. It returns the components ranked most likely
//! cause first ([`Cause`]), each with its best metric, the onset of its deviation and the
//! evidence behind its place. [`case`] reads the neutral CSV case layout into an [`Incident`];
//! the live super-manager will build one from its store instead.
//!
//! How it decides (details in `docs/rca.md` and in each module):
//! 1. [`series`]: each series is compared with its own robust baseline (median, MAD/IQR)
//!    before `at`; its anomaly is the mean log-surprise `ln(1 + |z|)` of the robust z-scores
//!    after `at` (size and duration both count, a lone spike is diluted, scales do not
//!    matter), with the onset of the first sustained deviation ([`onset`]).
//! 2. [`mod@rank`]: a component's anomaly is the mean of its few most anomalous *distinct*
//!    series (metric-neutral: every metric counts alike, several independent anomalous metrics
//!    beat one, near-duplicates such as percentiles of one latency count once); components
//!    whose deviation began earliest get a small bonus, and so do those that began no later
//!    than the users' indicators degraded.
//! 3. [`topology`]: a component whose anomalous dependency began earlier and is clearly more
//!    anomalous is discounted (its anomaly is explained by the dependency); a component whose
//!    callers became anomalous after it is reported as explaining them.
//!
//! Cumulative counters are recognised by their shape and scored by their rate ([`counter`]).
//! [`synthetic`] generates incidents with a known root cause for tests and benchmarks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod case;
pub mod counter;
pub mod onset;
pub mod rank;
pub mod series;
pub mod stats;
pub mod synthetic;
pub mod topology;

pub use rank::rank;

/// Which way a series moved after `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Above its baseline.
    Up,
    /// Below its baseline.
    Down,
}

impl Direction {
    /// `"up"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// One metric of one component over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The component (service, pod, host, link…) the metric belongs to.
    pub component: String,
    /// The metric's name; only used to report evidence.
    pub metric: String,
    /// Samples as (Unix seconds, value). Non-finite values are ignored; order does not matter.
    pub points: Vec<(f64, f64)>,
}

/// A dependency: `source` calls or depends on `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The caller.
    pub source: String,
    /// The callee.
    pub target: String,
}

/// Everything the engine knows about one incident.
#[derive(Debug, Clone, Default)]
pub struct Incident {
    /// Component metrics.
    pub metrics: Vec<Series>,
    /// Service-level indicators seen by users (success rate, latency percentiles); `component`
    /// holds the service name. May be empty.
    pub slis: Vec<Series>,
    /// The dependency graph. May be empty.
    pub edges: Vec<Edge>,
    /// The estimated start of the incident, Unix seconds.
    pub at: f64,
}

/// Tuning of the engine. The defaults are what `docs/rca.md` reports figures for; none of them
/// refers to a particular system.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Seconds before `at` that form the baseline.
    pub lookback: f64,
    /// Seconds after `at` that are scored.
    pub horizon: f64,
    /// Fewest baseline samples for a series to be scored.
    pub min_baseline: usize,
    /// The baseline's scale is at least this share of the magnitude of its median: a flat
    /// series must move by this share of its level to score 1 σ. Keeps constant and quantised
    /// series (idle latency floors, fixed memory) from producing astronomic z-scores.
    pub relative_floor: f64,
    /// |z| over which a sample deviates (onset detection; a component is "anomalous" when one
    /// of its top series has an onset).
    pub z_threshold: f64,
    /// The k-of-n rule for onsets.
    pub sustain: onset::Sustain,
    /// How many of a component's most anomalous distinct series (see `redundancy`) are
    /// averaged into its score (fewer if it has fewer).
    pub top_metrics: usize,
    /// Series of one component whose z-profiles after `at` correlate at least this much count
    /// once among its top series (a value above 1 turns this off).
    pub redundancy: f64,
    /// Bonus (in score units) for a component with a sustained deviation (an onset).
    pub sustained_weight: f64,
    /// Bonus (in score units) for the earliest onset, falling linearly to 0 at the horizon.
    pub onset_weight: f64,
    /// Bonus for components whose deviation began no later than the users' indicators'.
    pub sli_weight: f64,
    /// Share of a component's score removed when an earlier, clearly more anomalous
    /// dependency explains it.
    pub explained_discount: f64,
    /// "Clearly more anomalous": the dependency's score is at least this multiple.
    pub explained_ratio: f64,
    /// Bonus, times the share of its callers that became anomalous after it, for a component
    /// that explains its callers (0 by default: see [`topology`]).
    pub explains_weight: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lookback: 1800.0,
            horizon: 300.0,
            min_baseline: 3,
            relative_floor: 0.001,
            z_threshold: 3.0,
            sustain: onset::Sustain::default(),
            top_metrics: 3,
            redundancy: 0.98,
            sustained_weight: 0.2,
            onset_weight: 0.3,
            sli_weight: 0.2,
            explained_discount: 0.5,
            explained_ratio: 1.5,
            explains_weight: 0.0,
        }
    }
}

/// One ranked component.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// The component.
    pub component: String,
    /// Its final score (higher is more likely the cause; comparable within one ranking only).
    pub score: f64,
    /// Its most anomalous metric, if any series could be scored.
    pub metric: Option<String>,
    /// The typical robust |z| of that metric after `at` (upper median).
    pub metric_z: f64,
    /// When its first sustained deviation began, if any.
    pub onset: Option<f64>,
    /// Which way its best metric moved.
    pub direction: Option<Direction>,
    /// Why it is where it is, one sentence per fact.
    pub evidence: Vec<String>,
}
