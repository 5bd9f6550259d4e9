//! Synthetic incidents with a known root cause, for tests, benchmarks and demonstrations.
//!
//! A seeded generator builds a random service map (each component calls one to three
//! components further down a list, so the graph has no cycles), gives every component metrics
//! of very different scales and noise levels, injects a fault of a chosen [`Shape`] into one
//! component's metrics shortly after `at`, and lets it propagate to the callers (and their
//! callers) with a delay and a smaller amplitude per hop. Unrelated single-sample spikes are
//! sprinkled over other components. [`write_case`] writes it in the CSV case layout, with dirty
//! rows (NaN, empty values, garbage, timestamps years off) to exercise the reader.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::{Edge, Incident, Series};

/// The shape of the injected fault over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A large burst lasting about a third of the horizon.
    Spike,
    /// A step that stays.
    LevelShift,
    /// A linear ramp that keeps growing until the end.
    Drift,
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Seed of the generator: the same spec gives the same incident.
    pub seed: u64,
    /// Number of components (at least 2).
    pub components: usize,
    /// Metrics per component (at least 2).
    pub metrics: usize,
    /// Seconds between samples.
    pub step: f64,
    /// Seconds of data before `at`.
    pub before: f64,
    /// Seconds of data after `at`.
    pub after: f64,
    /// The moment of the incident.
    pub at: f64,
    /// The fault's shape.
    pub shape: Shape,
    /// The fault's size in noise standard deviations of the metrics it hits.
    pub amplitude: f64,
}

impl Default for Spec {
    /// Ten components with six metrics each, 10 s samples, 30 min before and 5 min after.
    fn default() -> Self {
        Spec {
            seed: 1,
            components: 10,
            metrics: 6,
            step: 10.0,
            before: 1800.0,
            after: 300.0,
            at: 1_700_000_000.0,
            shape: Shape::LevelShift,
            amplitude: 8.0,
        }
    }
}

/// A generated incident and its truth.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The incident (metrics and edges; no SLIs).
    pub incident: Incident,
    /// The component the fault was injected into.
    pub root: String,
}

/// A small, fast, seeded generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Approximately standard normal (sum of twelve uniforms).
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// The component names `c00`, `c01`, …
fn name(i: usize) -> String {
    format!("c{i:02}")
}

/// Generates the incident described by `spec`.
pub fn generate(spec: &Spec) -> Generated {
    let n = spec.components.max(2);
    let m = spec.metrics.max(2);
    let mut rng = Rng::new(spec.seed);
    // Component i calls 1–3 components among i+1..n: a DAG with c00 as an entry point.
    let mut edges = Vec::new();
    let mut callers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n - 1 {
        let k = 1 + rng.below(3);
        let mut picked: Vec<usize> = Vec::new();
        for _ in 0..k {
            let j = i + 1 + rng.below(n - i - 1);
            if !picked.contains(&j) {
                picked.push(j);
                callers[j].push(i);
                edges.push(Edge {
                    source: name(i),
                    target: name(j),
                });
            }
        }
    }
    let root = rng.below(n);
    // Hop distance of each caller from the root, up to two hops.
    let mut hops = vec![usize::MAX; n];
    hops[root] = 0;
    for hop in 1..=2 {
        for c in 0..n {
            if hops[c] == hop - 1 {
                for &caller in &callers[c] {
                    if hops[caller] == usize::MAX {
                        hops[caller] = hop;
                    }
                }
            }
        }
    }
    let onset = spec.at + spec.step * (1 + rng.below(3)) as f64;
    let hit: Vec<usize> = {
        let a = rng.below(m);
        let b = (a + 1 + rng.below(m - 1)) % m;
        vec![a, b]
    };
    let samples = ((spec.before + spec.after) / spec.step).floor() as usize;
    let t0 = spec.at - spec.before;
    let mut metrics = Vec::with_capacity(n * m);
    for (c, &hop) in hops.iter().enumerate() {
        for k in 0..m {
            // Scales from 1e-3 to 1e4 and a noise level of 1–10 % of the level.
            let level = 10f64.powi((k % 8) as i32 - 3) * (1.0 + rng.uniform() * 9.0);
            let sd = level * (0.01 + rng.uniform() * 0.09);
            let effect_hop = match hop {
                0 if hit.contains(&k) => Some(0),
                // Callers see it in their "first" metric (think: latency of calls).
                h @ 1..=2 if k == 0 => Some(h),
                _ => None,
            };
            let mut points = Vec::with_capacity(samples);
            for s in 0..samples {
                let t = t0 + s as f64 * spec.step;
                let mut v = level + sd * rng.normal();
                if let Some(h) = effect_hop {
                    let start = onset + h as f64 * 3.0 * spec.step;
                    let size = spec.amplitude * sd * 0.5f64.powi(h as i32);
                    v += size * shape_at(spec.shape, t - start, spec.after);
                }
                if hop == usize::MAX && rng.uniform() < 0.002 {
                    v += 50.0 * sd; // unrelated glitches
                }
                points.push((t, v));
            }
            metrics.push(Series {
                component: name(c),
                metric: format!("m{k}"),
                points,
            });
        }
    }
    Generated {
        incident: Incident {
            metrics,
            slis: Vec::new(),
            edges,
            at: spec.at,
        },
        root: name(root),
    }
}

/// The fault's effect (in units of its amplitude) `dt` seconds after its start.
fn shape_at(shape: Shape, dt: f64, horizon: f64) -> f64 {
    if dt < 0.0 {
        return 0.0;
    }
    match shape {
        Shape::Spike if dt < horizon / 3.0 => 3.0,
        Shape::Spike => 0.0,
        Shape::LevelShift => 1.0,
        Shape::Drift => 2.0 * dt / horizon.max(1.0),
    }
}

/// Writes `g` as a case directory: `metrics.csv` (with dirty rows: NaN, empty and garbage
/// values, timestamps 200 000 000 s off, short rows), `topology.csv` and `faults.csv`.
pub fn write_case(dir: &Path, g: &Generated) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut csv = String::from("time,component,metric,value\n");
    for (i, s) in g.incident.metrics.iter().enumerate() {
        for (j, &(t, v)) in s.points.iter().enumerate() {
            let _ = writeln!(csv, "{t},{},{},{v}", s.component, s.metric);
            match (i * 31 + j) % 97 {
                0 => {
                    let _ = writeln!(csv, "{t},{},{},NaN", s.component, s.metric);
                }
                1 => {
                    let _ = writeln!(csv, "{t},{},{},", s.component, s.metric);
                }
                2 => {
                    let _ = writeln!(csv, "{},{},{},{}", t + 2e8, s.component, s.metric, v * 1e6);
                }
                3 => {
                    let _ = writeln!(csv, "not-a-time,{},{},1", s.component, s.metric);
                }
                4 => {
                    let _ = writeln!(csv, "{t},{}", s.component);
                }
                _ => {}
            }
        }
    }
    std::fs::write(dir.join("metrics.csv"), csv)?;
    let mut topo = String::from("source,target\n");
    for e in &g.incident.edges {
        let _ = writeln!(topo, "{},{}", e.source, e.target);
    }
    std::fs::write(dir.join("topology.csv"), topo)?;
    std::fs::write(
        dir.join("faults.csv"),
        format!(
            "at,root_cause,fault_type\n{},{},synthetic\n",
            g.incident.at, g.root
        ),
    )
}
