//! The ranking: series scores → component scores → onset, SLI and topology adjustments.

use std::collections::BTreeMap;

use crate::counter::counter_rate;
use crate::series::{score_series, SeriesParams, SeriesScore};
use crate::topology::{adjust, Graph};
use crate::{Cause, Config, Incident, Series};

/// A component's state while it is being ranked.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    pub name: String,
    /// Mean of the top series scores (before adjustments).
    pub anomaly: f64,
    /// The final score.
    pub score: f64,
    pub best: Option<(String, SeriesScore)>,
    pub onset: Option<f64>,
    pub evidence: Vec<String>,
}

impl Component {
    /// Whether one of its top series shows a sustained deviation (has an onset).
    pub fn anomalous(&self) -> bool {
        self.onset.is_some()
    }
}

fn params(config: &Config) -> SeriesParams {
    SeriesParams {
        lookback: config.lookback,
        horizon: config.horizon,
        min_baseline: config.min_baseline,
        relative_floor: config.relative_floor,
        z_threshold: config.z_threshold,
        sustain: config.sustain,
    }
}

/// Scores one series, sorting and cleaning its points first when needed, and by its rate when
/// it is a cumulative counter.
fn score(series: &Series, at: f64, p: &SeriesParams) -> Option<SeriesScore> {
    let clean = series
        .points
        .iter()
        .all(|(t, v)| t.is_finite() && v.is_finite());
    let sorted = series.points.windows(2).all(|w| w[0].0 <= w[1].0);
    let owned;
    let points: &[(f64, f64)] = if clean && sorted {
        &series.points
    } else {
        let mut pts: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        owned = pts;
        &owned
    };
    match counter_rate(points) {
        Some(rate) => score_series(&rate, at, p).map(|s| SeriesScore { rate: true, ..s }),
        None => score_series(points, at, p),
    }
}

/// Ranks the components of `incident`, most likely cause first. Every component that has a
/// series or appears in an edge is listed; those without a scorable series come last with
/// score 0.
pub fn rank(incident: &Incident, config: &Config) -> Vec<Cause> {
    let at = incident.at;
    let p = params(config);
    let mut per: BTreeMap<&str, Vec<(&str, SeriesScore)>> = BTreeMap::new();
    for s in &incident.metrics {
        let entry = per.entry(s.component.as_str()).or_default();
        if let Some(sc) = score(s, at, &p) {
            entry.push((s.metric.as_str(), sc));
        }
    }
    for e in &incident.edges {
        per.entry(e.source.as_str()).or_default();
        per.entry(e.target.as_str()).or_default();
    }
    let k = config.top_metrics.max(1);
    let mut comps: Vec<Component> = per
        .into_iter()
        .map(|(name, mut list)| {
            list.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(b.0)));
            let mut top: Vec<&(&str, SeriesScore)> = Vec::with_capacity(k);
            for cand in &list {
                if top.len() == k {
                    break;
                }
                if !top
                    .iter()
                    .any(|t| t.1.redundant_with(&cand.1, config.redundancy))
                {
                    top.push(cand);
                }
            }
            // The mean of up to k distinct series: components with few metrics are not
            // penalised for the metrics they do not have.
            let anomaly = top.iter().map(|(_, s)| s.score).sum::<f64>() / top.len().max(1) as f64;
            let onset = top
                .iter()
                .filter_map(|(_, s)| s.onset)
                .min_by(f64::total_cmp);
            let mut evidence = Vec::new();
            for (metric, s) in top.iter().filter(|(_, s)| s.onset.is_some()) {
                evidence.push(format!(
                    "{metric}{} {} {:.1} sigma typical, {:.1} peak{}",
                    if s.rate { " (rate of the counter)" } else { "" },
                    s.direction.as_str(),
                    s.sustained_z,
                    s.peak_z,
                    s.onset
                        .map(|t| format!(" from {:+.0} s", t - at))
                        .unwrap_or_default()
                ));
            }
            if list.is_empty() {
                evidence.push("no scorable series".to_string());
            }
            Component {
                name: name.to_string(),
                anomaly,
                score: anomaly,
                best: list.first().map(|(m, s)| (m.to_string(), s.clone())),
                onset,
                evidence,
            }
        })
        .collect();

    // A sustained deviation is more credible than the same mean surprise from scattered noise;
    // and earliest onset first: a linear bonus from the full weight at `at` to 0 at the horizon.
    if config.horizon > 0.0 {
        for c in comps.iter_mut() {
            if let Some(t) = c.onset {
                let early = (1.0 - (t - at) / config.horizon).clamp(0.0, 1.0);
                c.score += config.sustained_weight + config.onset_weight * early;
            }
        }
    }

    sli_adjust(&mut comps, incident, config, &p);
    let graph = Graph::new(&incident.edges);
    adjust(&mut comps, &graph, config);

    comps.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.name.cmp(&b.name)));
    comps
        .into_iter()
        .map(|c| Cause {
            metric_z: c.best.as_ref().map_or(0.0, |(_, s)| s.sustained_z),
            direction: c.best.as_ref().map(|(_, s)| s.direction),
            metric: c.best.map(|(m, _)| m),
            component: c.name,
            score: c.score,
            onset: c.onset,
            evidence: c.evidence,
        })
        .collect()
}

/// When users' indicators degraded, components whose deviation began no later get a bonus.
fn sli_adjust(comps: &mut [Component], incident: &Incident, config: &Config, p: &SeriesParams) {
    let worst = incident
        .slis
        .iter()
        .filter_map(|s| score(s, incident.at, p).map(|sc| (s, sc)))
        .filter(|(_, sc)| sc.sustained_z >= config.z_threshold)
        .filter_map(|(s, sc)| sc.onset.map(|o| (s, sc, o)))
        .max_by(|a, b| a.1.score.total_cmp(&b.1.score));
    let Some((sli, _, sli_onset)) = worst else {
        return;
    };
    for c in comps.iter_mut() {
        if let Some(t) = c.onset.filter(|&t| t <= sli_onset) {
            c.score += config.sli_weight;
            c.evidence.push(format!(
                "began {:.0} s before or with {} {} degraded",
                sli_onset - t,
                sli.component,
                sli.metric
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Edge;

    fn flat_then(at: f64, jump_at: Option<f64>, size: f64, seed: usize) -> Vec<(f64, f64)> {
        (0..120)
            .map(|i| {
                let t = at - 900.0 + i as f64 * 10.0;
                let noise = (((i * 31 + seed * 17) % 23) as f64 / 23.0 - 0.5) * 2.0;
                let v = 10.0
                    + noise
                    + if jump_at.is_some_and(|j| t >= j) {
                        size
                    } else {
                        0.0
                    };
                (t, v)
            })
            .collect()
    }

    fn series(c: &str, m: &str, pts: Vec<(f64, f64)>) -> Series {
        Series {
            component: c.into(),
            metric: m.into(),
            points: pts,
        }
    }

    #[test]
    fn the_most_deviating_component_ranks_first_with_evidence() {
        let at = 10_000.0;
        let inc = Incident {
            metrics: vec![
                series("a", "cpu", flat_then(at, None, 0.0, 1)),
                series("b", "cpu", flat_then(at, Some(at + 20.0), 30.0, 2)),
                series("c", "cpu", flat_then(at, Some(at + 60.0), 5.0, 3)),
            ],
            at,
            ..Default::default()
        };
        let r = rank(&inc, &Config::default());
        assert_eq!(r[0].component, "b");
        assert_eq!(r[0].metric.as_deref(), Some("cpu"));
        assert_eq!(r[0].onset, Some(at + 20.0));
        assert!(r[0].evidence[0].contains("cpu up"), "{:?}", r[0].evidence);
        assert_eq!(r.last().map(|c| c.component.as_str()), Some("a"));
    }

    #[test]
    fn an_earlier_more_anomalous_dependency_explains_its_caller() {
        let at = 10_000.0;
        // The dependency deviates earlier and in three distinct metrics; the caller later, in one.
        let mut inc = Incident {
            metrics: vec![
                series("caller", "lat", flat_then(at, Some(at + 100.0), 40.0, 1)),
                series("caller", "cpu", flat_then(at, None, 0.0, 5)),
                series("caller", "mem", flat_then(at, None, 0.0, 6)),
                series("dep", "lat", flat_then(at, Some(at + 10.0), 35.0, 2)),
                series("dep", "cpu", flat_then(at, Some(at + 50.0), 50.0, 3)),
                series("dep", "mem", flat_then(at, Some(at + 150.0), 70.0, 4)),
            ],
            at,
            ..Default::default()
        };
        let alone = rank(&inc, &Config::default());
        inc.edges.push(Edge {
            source: "caller".into(),
            target: "dep".into(),
        });
        let r = rank(&inc, &Config::default());
        assert_eq!(r[0].component, "dep", "{r:?}");
        assert!(
            r[0].evidence.iter().any(|e| e.contains("explains")),
            "{r:?}"
        );
        assert!(
            r[1].evidence.iter().any(|e| e.contains("explained by dep")),
            "{r:?}"
        );
        let before = alone
            .iter()
            .find(|c| c.component == "caller")
            .map(|c| c.score);
        let discount = Config::default().explained_discount;
        assert_eq!(before.map(|s| s * (1.0 - discount)), Some(r[1].score));
    }

    #[test]
    fn cumulative_counters_are_judged_by_their_rate() {
        let at = 10_000.0;
        // Integrates a rate (10 per second, plus noise; `extra` more from `from` on).
        let counter = |seed: usize, extra: f64, from: f64| -> Vec<(f64, f64)> {
            let mut total = 0.0;
            flat_then(at, None, 0.0, seed)
                .into_iter()
                .map(|(t, noisy_rate)| {
                    let rate = noisy_rate + if t >= from { extra } else { 0.0 };
                    total += rate * 10.0;
                    (t, total)
                })
                .collect()
        };
        let inc = Incident {
            metrics: vec![
                series("steady", "bytes_total", counter(1, 0.0, 0.0)),
                series("busy", "bytes_total", counter(2, 20.0, at + 20.0)),
                series("quiet", "cpu", flat_then(at, None, 0.0, 3)),
            ],
            at,
            ..Default::default()
        };
        let r = rank(&inc, &Config::default());
        assert_eq!(r[0].component, "busy", "{r:?}");
        assert!(r[0].evidence[0].contains("(rate of the counter)"), "{r:?}");
        let steady = r.iter().find(|c| c.component == "steady").unwrap();
        assert!(
            steady.onset.is_none() && steady.metric_z < 3.0,
            "{steady:?}"
        );
    }

    #[test]
    fn components_only_in_the_topology_are_listed_last() {
        let at = 10_000.0;
        let inc = Incident {
            metrics: vec![series("a", "m", flat_then(at, Some(at), 9.0, 1))],
            edges: vec![Edge {
                source: "a".into(),
                target: "ghost".into(),
            }],
            at,
            ..Default::default()
        };
        let r = rank(&inc, &Config::default());
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].component, "ghost");
        assert_eq!(r[1].score, 0.0);
        assert_eq!(r[1].metric, None);
    }

    #[test]
    fn unsorted_points_with_nan_are_handled() {
        let at = 10_000.0;
        let mut pts = flat_then(at, Some(at + 10.0), 30.0, 1);
        pts.reverse();
        pts.push((at + 5.0, f64::NAN));
        let inc = Incident {
            metrics: vec![
                series("x", "m", pts),
                series("y", "m", flat_then(at, None, 0.0, 2)),
            ],
            at,
            ..Default::default()
        };
        let r = rank(&inc, &Config::default());
        assert_eq!(r[0].component, "x");
        assert!(r[0].score.is_finite());
    }
}
