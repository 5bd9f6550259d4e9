//! Time of one full ranking on a large incident, beside the BARO-style reference scorer.
//!
//! `cargo bench -p qos-rca --bench rca` generates 50 components × 20 metrics × 1 h at 1 s
//! resolution (3.6 million samples; 30 min before `at`, 30 min after, the engine looking at
//! its default window), times `qos_rca::rank` and the reference (per series: median and IQR
//! of the samples before `at`, the largest |x − median| / IQR after, the component's maximum;
//! the robust scorer of BARO given the fault time), and prints the medians of several runs,
//! their ratio and the budget (≤ 100 ms per incident, DESIGN §7). Nothing is asserted: wall
//! clock depends on the machine.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use qos_rca::stats::quantile;
use qos_rca::synthetic::{generate, Shape, Spec};
use qos_rca::{rank, Config, Incident};

const RUNS: usize = 9;
const BUDGET: Duration = Duration::from_millis(100);

/// The BARO-style reference: median/IQR baseline before `at`, max robust deviation after,
/// max over a component's series; returns the components best first.
fn baro(incident: &Incident, config: &Config) -> Vec<String> {
    let at = incident.at;
    let mut best: HashMap<&str, f64> = HashMap::new();
    for s in &incident.metrics {
        let mut before: Vec<f64> = s
            .points
            .iter()
            .filter(|(t, _)| *t >= at - config.lookback && *t < at)
            .map(|&(_, v)| v)
            .collect();
        if before.len() < 3 {
            continue;
        }
        let (Some(med), Some(q1), Some(q3)) = (
            quantile(&mut before, 0.5),
            quantile(&mut before, 0.25),
            quantile(&mut before, 0.75),
        ) else {
            continue;
        };
        let iqr = q3 - q1;
        if iqr <= 0.0 {
            continue;
        }
        let score = s
            .points
            .iter()
            .filter(|(t, _)| *t >= at && *t <= at + config.horizon)
            .map(|&(_, v)| (v - med).abs() / iqr)
            .fold(0.0, f64::max);
        let e = best.entry(&s.component).or_insert(0.0);
        *e = e.max(score);
    }
    let mut ranked: Vec<(&str, f64)> = best.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.into_iter().map(|(c, _)| c.to_string()).collect()
}

fn median_time(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn main() {
    let spec = Spec {
        seed: 42,
        components: 50,
        metrics: 20,
        step: 1.0,
        before: 1800.0,
        after: 1800.0,
        shape: Shape::LevelShift,
        ..Spec::default()
    };
    let t0 = Instant::now();
    let g = generate(&spec);
    let samples: usize = g.incident.metrics.iter().map(|s| s.points.len()).sum();
    println!(
        "incident: {} components x {} metrics, {samples} samples at {} s (generated in {:.0?})",
        spec.components,
        spec.metrics,
        spec.step,
        t0.elapsed()
    );
    let config = Config::default();
    let first = rank(&g.incident, &config);
    let reference = baro(&g.incident, &config);
    println!(
        "injected root {}; qos-rca ranks it #{}, the reference #{}",
        g.root,
        first
            .iter()
            .position(|c| c.component == g.root)
            .map_or(0, |p| p + 1),
        reference
            .iter()
            .position(|c| *c == g.root)
            .map_or(0, |p| p + 1),
    );
    let ours = median_time(|| {
        black_box(rank(black_box(&g.incident), &config));
    });
    let base = median_time(|| {
        black_box(baro(black_box(&g.incident), &config));
    });
    println!(
        "qos-rca rank           median of {RUNS}: {:>8.2} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "reference (BARO-style) median of {RUNS}: {:>8.2} ms",
        base.as_secs_f64() * 1e3
    );
    println!(
        "ratio qos-rca / reference: {:.2}; budget {} ms per incident: {}",
        ours.as_secs_f64() / base.as_secs_f64().max(1e-9),
        BUDGET.as_millis(),
        if ours <= BUDGET { "within" } else { "OVER" }
    );
}
