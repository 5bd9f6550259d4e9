//! A silent broker is one event, not one per edge behind it.
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
//! The driver ([`start`]) checks once a second, stores the events (table `events`, see
//! [`crate::centre::ConfigStore::record_event`]) and logs them; `GET /api/v1/events` lists them.

use std::collections::BTreeSet;
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
    /// `broker_silent` or `broker_back`.
    pub kind: &'static str,
    /// The broker's address.
    pub broker: String,
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

/// Decides the events.
#[derive(Debug, Clone)]
pub struct SilenceWatch {
    silent_after_ms: u64,
}

impl SilenceWatch {
    /// A watch calling a broker silent after `silent_after_ms` without a word.
    pub fn new(silent_after_ms: u64) -> Self {
        SilenceWatch { silent_after_ms }
    }

    /// The events at `now_ms` (unix ms), updating `st.silent`.
    pub fn check<A: Copy + Ord + std::fmt::Display>(
        &self,
        st: &mut CentreState<A>,
        now_ms: u64,
    ) -> Vec<Event> {
        let mut brokers: BTreeSet<A> = st.reports.keys().copied().collect();
        brokers.extend(st.senders.keys().copied().filter(|a| st.is_broker(*a)));
        let mut events = Vec::new();
        for addr in brokers {
            let heard = last_heard(st, addr);
            let silent = now_ms.saturating_sub(heard) >= self.silent_after_ms;
            let flagged = st.silent.contains_key(&addr);
            if silent && !flagged {
                let edges = edges_behind(st, addr);
                st.silent.insert(addr, now_ms);
                events.push(Event {
                    at_ms: now_ms,
                    kind: "broker_silent",
                    broker: addr.to_string(),
                    detail: format!(
                        "broker {addr} silent for {} s; {} edge(s) behind it affected",
                        now_ms.saturating_sub(heard) / 1000,
                        edges.len()
                    ),
                    edges,
                });
            } else if !silent && flagged {
                st.silent.remove(&addr);
                let edges = edges_behind(st, addr);
                events.push(Event {
                    at_ms: now_ms,
                    kind: "broker_back",
                    broker: addr.to_string(),
                    detail: format!("broker {addr} heard from again"),
                    edges,
                });
            }
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
            let watch = SilenceWatch::new(silent_after_ms);
            while !shutdown.load(Ordering::Relaxed) {
                let events = watch.check::<SocketAddr>(&mut centre.state(), crate::http::now_ms());
                for e in events {
                    if e.kind == "broker_silent" {
                        tracing::warn!(broker = %e.broker, edges = ?e.edges, "{}", e.detail);
                    } else {
                        tracing::info!(broker = %e.broker, edges = ?e.edges, "{}", e.detail);
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
        let w = SilenceWatch::new(5_000);
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
}
