//! A silent broker is one event, not one per edge behind it; a silent region is one event, not
//! one per broker or edge in it.
//!
//! [`SilenceWatch::check`] (sans-IO: the state and the time come in) looks at every broker the
//! centre knows — an address that reported itself (`POST /b`) or forwarded batches
//! ([`CentreState::is_broker`]) — and at when it was last heard from (its last report or its
//! last forwarded batch, whichever is later). A broker not heard from for `silent_after_ms`
//! raises ONE [`Event`] `broker_silent` naming the edges behind it (those it forwarded for and
//! those its last report listed); it is marked in [`CentreState::silent`] so the API shows its
//! edges as consequences (`"behind_silent_broker"` in `GET /api/v1/edges`) instead of raising
//! anything per edge. When it is heard from again, one `broker_back` event closes the episode.
//!
//! # Regions
//! An edge's region is the one it registered with (`d=`), as its broker's last report or the
//! centre's own registry tells. The *sources* of a region are the brokers behind which its
//! edges are, and its edges that send to the centre directly (heard from by their last batch).
//! A region with at least two sources whose sources are ALL silent raises ONE `region_silent`
//! event naming the region, its brokers (`broker`: their addresses, comma-separated) and its
//! edges, instead of one `broker_silent` per broker: its brokers are marked silent (their
//! edges show `behind_silent_broker`) without events of their own. Sources rarely stop in the
//! same instant, so a broker that goes silent while every other source of one of its regions
//! has not been heard from for half of `silent_after_ms` is held for up to that half: either
//! the others go silent too (one `region_silent`) or one of them is heard from (the broker's
//! own `broker_silent`). When any source of a silent region is heard from again, one
//! `region_back` event closes the episode. A region reached through a single broker is
//! covered by that broker's `broker_silent` (its detail names the region).
//!
//! The driver ([`start`]) checks once a second, stores the events (table `broker_events`, see
//! [`crate::centre::ConfigStore::record_event`]) and logs them; `GET /api/v1/events` lists them
//! and `/metrics` counts them (`qos_silence_events_total{kind}`) and the regions and brokers
//! silent now (`qos_regions_silent`, `qos_brokers_silent`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::centre::{Centre, CentreState};

/// Default of `[watch] broker_silent_after_ms`: three of a broker's default report intervals.
pub const DEFAULT_SILENT_AFTER_MS: u64 = 90_000;

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it was raised, unix ms.
    pub at_ms: u64,
    /// `broker_silent`, `broker_back`, `region_silent` or `region_back`.
    pub kind: &'static str,
    /// The broker's address; for a region event, its brokers' addresses, comma-separated.
    pub broker: String,
    /// The region of a region event; empty for a broker event.
    pub region: String,
    /// The edges behind it (consequences).
    pub edges: Vec<u32>,
    /// One line for people.
    pub detail: String,
}

/// The edges behind broker `addr`: those it forwarded for, and those its last report listed.
fn edges_behind<A: Copy + Ord>(st: &CentreState<A>, addr: A) -> Vec<u32> {
    let mut set: BTreeSet<u32> = st
        .senders
        .get(&addr)
        .map(|s| s.edges.iter().copied().collect())
        .unwrap_or_default();
    if let Some((_, r)) = st.reports.get(&addr) {
        set.extend(r.edges.iter().map(|e| e.id));
    }
    set.into_iter().collect()
}

/// When broker `addr` was last heard from (unix ms).
fn last_heard<A: Copy + Ord>(st: &CentreState<A>, addr: A) -> u64 {
    let report = st.reports.get(&addr).map_or(0, |(at, _)| *at);
    let batch = st.senders.get(&addr).map_or(0, |s| s.last_batch_ms);
    report.max(batch)
}

/// The sources of a region.
#[derive(Debug)]
struct Region<A> {
    brokers: BTreeSet<A>,
    /// Edges sending straight to the centre, with when their last batch came (unix ms).
    direct: BTreeMap<u32, u64>,
    edges: BTreeSet<u32>,
}

impl<A> Default for Region<A> {
    fn default() -> Self {
        Region {
            brokers: BTreeSet::new(),
            direct: BTreeMap::new(),
            edges: BTreeSet::new(),
        }
    }
}

impl<A> Region<A> {
    fn sources(&self) -> usize {
        self.brokers.len() + self.direct.len()
    }
}

/// Every region with its sources; `region_of` (each edge's region as last learnt) is updated
/// from the reports and the registry, and remembered across checks (a restarted broker reports
/// no edges until they register again).
fn regions<A: Copy + Ord>(
    st: &CentreState<A>,
    brokers: &BTreeSet<A>,
    region_of: &mut BTreeMap<u32, String>,
) -> BTreeMap<String, Region<A>> {
    for (_, r) in st.reports.values() {
        for e in &r.edges {
            if !e.region.is_empty() {
                region_of.insert(e.id, e.region.clone());
            }
        }
    }
    for e in st.registry.edges() {
        if !e.region.is_empty() {
            region_of.insert(e.id.0, e.region.clone());
        }
    }
    let mut out: BTreeMap<String, Region<A>> = BTreeMap::new();
    for &b in brokers {
        for e in edges_behind(st, b) {
            if let Some(r) = region_of.get(&e) {
                let reg = out.entry(r.clone()).or_default();
                reg.brokers.insert(b);
                reg.edges.insert(e);
            }
        }
    }
    for (&e, r) in region_of.iter() {
        match st.via.get(&e) {
            Some(v) if !brokers.contains(v) => {
                let heard = st.senders.get(v).map_or(0, |s| s.last_batch_ms);
                let reg = out.entry(r.clone()).or_default();
                reg.direct.insert(e, heard);
                reg.edges.insert(e);
            }
            _ => {}
        }
    }
    out
}

/// Decides the events.
#[derive(Debug, Clone)]
pub struct SilenceWatch {
    silent_after_ms: u64,
    /// Brokers marked silent as part of a region (no `broker_silent` of their own).
    covered: BTreeSet<String>,
    /// Each edge's region, as last learnt.
    region_of: BTreeMap<u32, String>,
}

impl SilenceWatch {
    /// A watch calling a broker silent after `silent_after_ms` without a word.
    pub fn new(silent_after_ms: u64) -> Self {
        SilenceWatch {
            silent_after_ms,
            covered: BTreeSet::new(),
            region_of: BTreeMap::new(),
        }
    }

    /// The events at `now_ms` (unix ms), updating `st.silent` and `st.silent_regions`.
    pub fn check<A: Copy + Ord + std::fmt::Display>(
        &mut self,
        st: &mut CentreState<A>,
        now_ms: u64,
    ) -> Vec<Event> {
        // A broker back from a new address ([`CentreState::record_broker_report`]) keeps its
        // standing in a silent region.
        for (old, new) in std::mem::take(&mut st.moved) {
            if self.covered.remove(&old.to_string()) {
                self.covered.insert(new.to_string());
            }
        }
        let mut brokers: BTreeSet<A> = st.reports.keys().copied().collect();
        brokers.extend(st.senders.keys().copied().filter(|a| st.is_broker(*a)));
        let quiet_for = |heard: u64| now_ms.saturating_sub(heard);
        let t = self.silent_after_ms;
        let broker_quiet: BTreeMap<A, u64> = brokers
            .iter()
            .map(|&b| (b, quiet_for(last_heard(st, b))))
            .collect();
        let regions = regions(st, &brokers, &mut self.region_of);
        let mut events = Vec::new();

        // Regions first: all sources silent (a region of two sources at least).
        let mut region_silent_now: BTreeSet<&str> = BTreeSet::new();
        for (name, reg) in &regions {
            let all_silent = reg.sources() >= 2
                && reg.brokers.iter().all(|b| broker_quiet[b] >= t)
                && reg.direct.values().all(|h| quiet_for(*h) >= t);
            let flagged = st.silent_regions.contains_key(name);
            let broker_list = reg
                .brokers
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",");
            if all_silent {
                region_silent_now.insert(name);
            }
            if all_silent && !flagged {
                st.silent_regions.insert(name.clone(), now_ms);
                for &b in &reg.brokers {
                    if let std::collections::btree_map::Entry::Vacant(v) = st.silent.entry(b) {
                        v.insert(now_ms);
                        self.covered.insert(b.to_string());
                    }
                }
                events.push(Event {
                    at_ms: now_ms,
                    kind: "region_silent",
                    broker: broker_list,
                    region: name.clone(),
                    edges: reg.edges.iter().copied().collect(),
                    detail: format!(
                        "region {name} silent: none of its {} broker(s) and {} direct edge(s) heard \
                         from for {} s; {} edge(s) affected",
                        reg.brokers.len(),
                        reg.direct.len(),
                        t / 1000,
                        reg.edges.len()
                    ),
                });
            } else if !all_silent && flagged {
                st.silent_regions.remove(name);
                events.push(Event {
                    at_ms: now_ms,
                    kind: "region_back",
                    broker: broker_list,
                    region: name.clone(),
                    edges: reg.edges.iter().copied().collect(),
                    detail: format!("region {name} heard from again"),
                });
            }
        }
        // A region whose sources are no longer known (e.g. state reset) is not silent.
        let known: BTreeSet<String> = regions.keys().cloned().collect();
        st.silent_regions.retain(|r, _| known.contains(r));

        for &addr in &brokers {
            let silent = broker_quiet[&addr] >= t;
            let flagged = st.silent.contains_key(&addr);
            let mine: Vec<(&String, &Region<A>)> = regions
                .iter()
                .filter(|(_, r)| r.brokers.contains(&addr))
                .collect();
            if silent && !flagged {
                if mine
                    .iter()
                    .any(|(n, _)| region_silent_now.contains(n.as_str()))
                {
                    continue; // covered by its region's event
                }
                // Hold while every other source of one of its regions is fading.
                let hold = mine.iter().any(|(_, r)| {
                    r.sources() >= 2
                        && r.brokers
                            .iter()
                            .filter(|b| **b != addr)
                            .all(|b| broker_quiet[b] >= t / 2)
                        && r.direct.values().all(|h| quiet_for(*h) >= t / 2)
                });
                if hold && broker_quiet[&addr] < t + t / 2 {
                    continue;
                }
                let edges = edges_behind(st, addr);
                st.silent.insert(addr, now_ms);
                let names: Vec<&str> = mine.iter().map(|(n, _)| n.as_str()).collect();
                events.push(Event {
                    at_ms: now_ms,
                    kind: "broker_silent",
                    broker: addr.to_string(),
                    region: String::new(),
                    detail: format!(
                        "broker {addr} silent for {} s; {} edge(s) behind it affected{}",
                        broker_quiet[&addr] / 1000,
                        edges.len(),
                        if names.is_empty() {
                            String::new()
                        } else {
                            format!(" (region {})", names.join(", "))
                        }
                    ),
                    edges,
                });
            } else if silent
                && flagged
                && self.covered.contains(&addr.to_string())
                && !mine
                    .iter()
                    .any(|(n, _)| region_silent_now.contains(n.as_str()))
            {
                // Its region came back without it: now it is a silent broker of its own.
                self.covered.remove(&addr.to_string());
                let edges = edges_behind(st, addr);
                events.push(Event {
                    at_ms: now_ms,
                    kind: "broker_silent",
                    broker: addr.to_string(),
                    region: String::new(),
                    detail: format!(
                        "broker {addr} silent for {} s after its region came back; {} edge(s) \
                         behind it affected",
                        broker_quiet[&addr] / 1000,
                        edges.len()
                    ),
                    edges,
                });
            } else if !silent && flagged {
                st.silent.remove(&addr);
                if self.covered.remove(&addr.to_string()) {
                    continue; // its region's `region_back` tells
                }
                let edges = edges_behind(st, addr);
                events.push(Event {
                    at_ms: now_ms,
                    kind: "broker_back",
                    broker: addr.to_string(),
                    region: String::new(),
                    detail: format!("broker {addr} heard from again"),
                    edges,
                });
            }
        }
        for e in &events {
            *st.silence_events.entry(e.kind).or_insert(0) += 1;
        }
        events
    }
}

/// Starts the watch thread: every second until `shutdown`, [`SilenceWatch::check`], store and
/// log the events.
pub fn start(
    centre: Arc<Centre>,
    silent_after_ms: u64,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("silence-watch".into())
        .spawn(move || {
            let mut watch = SilenceWatch::new(silent_after_ms);
            while !shutdown.load(Ordering::Relaxed) {
                let events = watch.check::<SocketAddr>(&mut centre.state(), crate::http::now_ms());
                for e in events {
                    if e.kind.ends_with("_silent") {
                        tracing::warn!(broker = %e.broker, region = %e.region, edges = ?e.edges, "{}", e.detail);
                    } else {
                        tracing::info!(broker = %e.broker, region = %e.region, edges = ?e.edges, "{}", e.detail);
                    }
                    if let Err(err) = centre.configs.record_event(&e) {
                        tracing::error!(error = %err, "cannot store an event");
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_broker::BrokerReport;

    #[test]
    fn one_event_per_silence_and_one_when_back() {
        let mut st: CentreState<u8> = CentreState::default();
        st.reports.insert(9, (1_000, BrokerReport::default()));
        let seen = st.senders.entry(9).or_default();
        seen.edges.extend([1, 2, 3]);
        seen.last_batch_ms = 2_000;
        let mut w = SilenceWatch::new(5_000);
        assert!(w.check(&mut st, 6_000).is_empty());
        let ev = w.check(&mut st, 7_000);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind, ev[0].edges.clone()),
            ("broker_silent", vec![1, 2, 3])
        );
        assert!(w.check(&mut st, 60_000).is_empty(), "once per episode");
        assert!(st.silent.contains_key(&9));
        st.reports.insert(9, (61_000, BrokerReport::default()));
        let ev = w.check(&mut st, 61_500);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, "broker_back");
        assert!(st.silent.is_empty());
    }

    #[test]
    fn a_broker_restarted_on_a_new_address_is_back_not_silent_twice() {
        let mut st: CentreState<u8> = CentreState::default();
        let report = || BrokerReport {
            id: "site-a".into(),
            ..BrokerReport::default()
        };
        st.record_broker_report(9, 1_000, report());
        st.senders.entry(9).or_default().edges.extend([1, 2]);
        let mut w = SilenceWatch::new(5_000);
        let ev = w.check(&mut st, 7_000);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].kind, ev[0].broker.as_str()), ("broker_silent", "9"));
        // Restarted: it reports from address 10.
        st.record_broker_report(10, 8_000, report());
        let ev = w.check(&mut st, 8_000);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!((ev[0].kind, ev[0].broker.as_str()), ("broker_back", "10"));
        assert_eq!(ev[0].edges, [1, 2]);
        assert!(st.silent.is_empty());
        // Nothing left of the old address: no second silence later.
        assert!(w.check(&mut st, 12_000).is_empty());
        assert_eq!(st.reports.keys().copied().collect::<Vec<_>>(), [10]);
    }
}

#[cfg(test)]
mod region_tests {
    use super::*;
    use qos_broker::{BrokerReport, ReportEdge};

    /// A report of a broker with `edges` (id, region), heard at `at`.
    fn report(st: &mut CentreState<u8>, broker: u8, at: u64, edges: &[(u32, &str)]) {
        let r = BrokerReport {
            edges: edges
                .iter()
                .map(|&(id, region)| ReportEdge {
                    id,
                    name: format!("e{id}"),
                    region: region.into(),
                    registered: true,
                    seen_ago_ms: 0,
                    cfg: None,
                    rtt_ms: None,
                    loss_permille: None,
                })
                .collect(),
            ..BrokerReport::default()
        };
        st.reports.insert(broker, (at, r));
    }

    fn kinds(ev: &[Event]) -> Vec<(&'static str, String, String)> {
        ev.iter()
            .map(|e| (e.kind, e.broker.clone(), e.region.clone()))
            .collect()
    }

    /// Brokers 1 and 2 serve region north, broker 3 region south, all heard at `at`.
    fn three(st: &mut CentreState<u8>, at: u64) {
        report(st, 1, at, &[(11, "north"), (12, "north")]);
        report(st, 2, at, &[(21, "north")]);
        report(st, 3, at, &[(31, "south")]);
    }

    #[test]
    fn a_region_whose_brokers_all_stop_is_one_event_even_when_they_stop_apart() {
        let mut st: CentreState<u8> = CentreState::default();
        let mut w = SilenceWatch::new(5_000);
        three(&mut st, 1_000);
        // Broker 2 and 3 are heard later than broker 1: broker 1 crosses the threshold first,
        // while broker 2 is fading (not heard for half the threshold): held, no event.
        report(&mut st, 2, 1_800, &[(21, "north")]);
        report(&mut st, 3, 5_000, &[(31, "south")]);
        assert!(w.check(&mut st, 6_100).is_empty());
        assert!(st.silent.is_empty());
        let ev = w.check(&mut st, 6_900);
        assert_eq!(
            kinds(&ev),
            [("region_silent", "1,2".to_string(), "north".to_string())]
        );
        assert_eq!(ev[0].edges, [11, 12, 21]);
        assert_eq!(st.silent.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert!(st.silent_regions.contains_key("north"));
        assert!(w.check(&mut st, 8_000).is_empty(), "once per episode");
        // Broker 3 alone in its region: its own broker_silent.
        let ev = w.check(&mut st, 10_100);
        assert_eq!(
            kinds(&ev),
            [("broker_silent", "3".to_string(), String::new())]
        );
        assert!(ev[0].detail.contains("region south"), "{}", ev[0].detail);
        // Broker 2 is back: the region is back (no broker_back for a covered broker), and
        // broker 1, still silent, now is a silent broker of its own.
        report(&mut st, 2, 11_000, &[(21, "north")]);
        let ev = w.check(&mut st, 11_000);
        assert_eq!(
            kinds(&ev),
            [
                ("region_back", "1,2".to_string(), "north".to_string()),
                ("broker_silent", "1".to_string(), String::new()),
            ]
        );
        assert!(st.silent_regions.is_empty());
        assert_eq!(st.silent.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(st.silence_events["region_silent"], 1);
        assert_eq!(st.silence_events["broker_silent"], 2);
    }

    #[test]
    fn a_broker_stopping_while_its_region_lives_is_a_broker_event_at_once() {
        let mut st: CentreState<u8> = CentreState::default();
        let mut w = SilenceWatch::new(5_000);
        three(&mut st, 1_000);
        report(&mut st, 2, 5_000, &[(21, "north")]);
        report(&mut st, 3, 5_000, &[(31, "south")]);
        let ev = w.check(&mut st, 6_000);
        assert_eq!(
            kinds(&ev),
            [("broker_silent", "1".to_string(), String::new())]
        );
        report(&mut st, 1, 6_500, &[(11, "north"), (12, "north")]);
        let ev = w.check(&mut st, 6_500);
        assert_eq!(
            kinds(&ev),
            [("broker_back", "1".to_string(), String::new())]
        );
    }

    #[test]
    fn edges_sending_directly_are_sources_of_their_region() {
        let mut st: CentreState<u8> = CentreState::default();
        let mut w = SilenceWatch::new(5_000);
        // Broker 1 serves edge 11 of west; edge 12 of west (its region known from broker 1's
        // report, where it registered once) now talks to the centre itself, from address 40,
        // and is heard later.
        report(&mut st, 1, 1_000, &[(11, "west"), (12, "west")]);
        let seen = st.senders.entry(40).or_default();
        seen.edges.insert(12);
        seen.last_batch_ms = 3_000;
        st.via.insert(12, 40);
        let ev = w.check(&mut st, 6_000);
        assert!(ev.is_empty(), "broker 1 held while edge 12 fades: {ev:?}");
        let ev = w.check(&mut st, 8_000);
        assert_eq!(
            kinds(&ev),
            [("region_silent", "1".to_string(), "west".to_string())]
        );
        assert_eq!(ev[0].edges, [11, 12]);
    }
}
