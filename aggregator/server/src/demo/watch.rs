//! What the demo tells about delivery, from serve's `GET /api/v1/edges`: when every edge's
//! summaries have arrived, and through which broker each edge's batches come (so a broker's
//! kill, the edges' failover and their return show as they happen).
//!
//! serve sees a broker by the address its batches come from (the broker's upstream socket,
//! an ephemeral port). The demo names them: at start each region's edges use their region's
//! broker; an address first seen after a broker was restarted is that broker.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{api, Console};

/// Watches the edges in serve.
#[derive(Debug)]
pub struct EdgeWatch {
    api: SocketAddr,
    expected: usize,
    /// Edge name → the broker its region prefers.
    home: BTreeMap<String, String>,
    /// Broker address (as serve sees it) → broker name.
    names: BTreeMap<String, String>,
    /// The broker restarted last, whose new address is not known yet.
    pending: Option<String>,
    current: BTreeMap<String, String>,
    all_arrived: bool,
    /// Summaries stored, by edge name.
    pub received: BTreeMap<String, u64>,
    /// Gaps seen by serve, by edge name.
    pub gaps: BTreeMap<String, u64>,
}

impl EdgeWatch {
    /// Watches `expected` edges; `home` maps each edge's name to its preferred broker's name.
    pub fn new(api: SocketAddr, home: BTreeMap<String, String>) -> EdgeWatch {
        EdgeWatch {
            api,
            expected: home.len(),
            home,
            names: BTreeMap::new(),
            pending: None,
            current: BTreeMap::new(),
            all_arrived: false,
            received: BTreeMap::new(),
            gaps: BTreeMap::new(),
        }
    }

    /// The broker `name` was restarted: the next unknown address is its.
    pub fn restarted(&mut self, name: &str) {
        self.pending = Some(name.to_string());
    }

    /// The name of the broker serve sees at `addr` (the address itself when unknown).
    pub fn broker_name(&self, addr: &str) -> String {
        self.names
            .get(addr)
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }

    /// Whether every edge's summaries have arrived.
    pub fn all_arrived(&self) -> bool {
        self.all_arrived
    }

    /// Reads the edges and prints what changed.
    pub fn tick(&mut self, console: &Console) {
        let Ok(doc) = api::get_json(self.api, "/api/v1/edges") else {
            return;
        };
        let Some(edges) = doc["edges"].as_array() else {
            return;
        };
        for e in edges {
            let Some(name) = e["name"].as_str() else {
                continue;
            };
            self.received
                .insert(name.to_string(), e["received"].as_u64().unwrap_or(0));
            self.gaps
                .insert(name.to_string(), e["gaps"].as_u64().unwrap_or(0));
            let Some(addr) = e["broker"].as_str().map(str::to_string) else {
                continue;
            };
            if !self.names.contains_key(&addr) {
                let guess = match self.pending.take() {
                    Some(restarted) => restarted,
                    None if !self.all_arrived => match self.home.get(name) {
                        Some(home) => home.clone(),
                        None => addr.clone(),
                    },
                    None => addr.clone(),
                };
                self.names.insert(addr.clone(), guess);
            }
            let broker = self.names[&addr].clone();
            let before = self.current.insert(name.to_string(), broker.clone());
            if let Some(before) = before.filter(|b| *b != broker) {
                let how = if self.home.get(name) == Some(&broker) {
                    "is back on its preferred broker"
                } else {
                    "failed over"
                };
                console.say(&format!(
                    "edge {name} {how}: batches now arrive through {broker} (was {before})"
                ));
            }
        }
        let arrived = self.received.values().filter(|&&n| n > 0).count();
        if !self.all_arrived && arrived >= self.expected {
            self.all_arrived = true;
            let list: Vec<String> = self
                .current
                .iter()
                .map(|(edge, broker)| format!("{edge} via {broker}"))
                .collect();
            console.say(&format!(
                "summaries arriving in serve from all {} edges ({})",
                self.expected,
                list.join(", ")
            ));
        }
    }
}
