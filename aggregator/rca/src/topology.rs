//! The dependency graph's part in the ranking.
//!
//! Faults propagate from a callee to its callers (a slow database makes its web servers slow),
//! so among anomalous neighbours the one that deviated *first* and *most* is the better
//! explanation. Two adjustments, both local and both requiring an earlier onset so that a
//! graph alone never reorders components whose timing says nothing:
//! - **explained**: a component with a dependency that is anomalous, began strictly earlier
//!   and is clearly more anomalous (by [`Config::explained_ratio`]) loses
//!   [`Config::explained_discount`] of its score;
//! - **explains**: an anomalous component whose callers are anomalous and began no earlier is
//!   reported as explaining them, and gains [`Config::explains_weight`] times the share of
//!   such callers. The default weight is 0 (evidence only): entry points have no callers, so
//!   any bonus for callers is a bias against them, and they are root causes too.

use std::collections::{BTreeMap, BTreeSet};

use crate::rank::Component;
use crate::{Config, Edge};

/// Callers and dependencies of each component.
#[derive(Debug, Default)]
pub struct Graph<'a> {
    deps: BTreeMap<&'a str, BTreeSet<&'a str>>,
    callers: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> Graph<'a> {
    /// The graph of `edges` (self-loops ignored).
    pub fn new(edges: &'a [Edge]) -> Graph<'a> {
        let mut g = Graph::default();
        for e in edges.iter().filter(|e| e.source != e.target) {
            g.deps.entry(&e.source).or_default().insert(&e.target);
            g.callers.entry(&e.target).or_default().insert(&e.source);
        }
        g
    }

    /// What `c` calls or depends on.
    pub fn dependencies(&self, c: &str) -> impl Iterator<Item = &'a str> + '_ {
        self.deps.get(c).into_iter().flatten().copied()
    }

    /// What calls or depends on `c`.
    pub fn callers(&self, c: &str) -> impl Iterator<Item = &'a str> + '_ {
        self.callers.get(c).into_iter().flatten().copied()
    }
}

/// Applies both adjustments to `comps` (scores computed from the anomalies and onsets as they
/// were before any adjustment, so the order of components does not matter).
pub(crate) fn adjust(comps: &mut [Component], graph: &Graph<'_>, config: &Config) {
    let snapshot: BTreeMap<String, (f64, Option<f64>, bool)> = comps
        .iter()
        .map(|c| (c.name.clone(), (c.anomaly, c.onset, c.anomalous())))
        .collect();
    for c in comps.iter_mut() {
        let Some(onset) = c.onset else { continue };
        let explainer = graph
            .dependencies(&c.name)
            .filter_map(|d| snapshot.get(d).map(|s| (d, s)))
            .filter(|(_, &(a, o, anomalous))| {
                anomalous && o.is_some_and(|o| o < onset) && a >= config.explained_ratio * c.anomaly
            })
            .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0));
        if let Some((d, &(_, o, _))) = explainer {
            c.score *= 1.0 - config.explained_discount;
            c.evidence.push(format!(
                "explained by {d}: a more anomalous dependency that began {:.0} s earlier",
                onset - o.unwrap_or(onset)
            ));
        }
        let callers: Vec<&str> = graph.callers(&c.name).collect();
        if callers.is_empty() {
            continue;
        }
        let after: Vec<&str> = callers
            .iter()
            .copied()
            .filter(|x| {
                snapshot
                    .get(*x)
                    .is_some_and(|&(_, o, anomalous)| anomalous && o.is_some_and(|o| o >= onset))
            })
            .collect();
        if !after.is_empty() {
            c.score += config.explains_weight * after.len() as f64 / callers.len() as f64;
            c.evidence.push(format!(
                "explains anomalies of its callers {} (upstream of them, began no later)",
                after.join(", ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_knows_both_directions() {
        let edges = vec![
            Edge {
                source: "web".into(),
                target: "db".into(),
            },
            Edge {
                source: "db".into(),
                target: "db".into(),
            },
        ];
        let g = Graph::new(&edges);
        assert_eq!(g.dependencies("web").collect::<Vec<_>>(), ["db"]);
        assert_eq!(g.callers("db").collect::<Vec<_>>(), ["web"]);
        assert_eq!(g.dependencies("db").count(), 0);
    }
}
