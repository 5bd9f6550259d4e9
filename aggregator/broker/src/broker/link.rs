//! Link quality of the edges (round trip and loss, kept in
//! [`crate::registry::LinkQuality`]).
//!
//! Every [`BrokerConfig::ping_interval_ms`] (the first time one interval after it started) the
//! broker sends each edge registered at the time
//! (over datagrams; stream peers have their own keep-alive) one CoAP ping: an empty
//! confirmable message (RFC 7252 §4.3), which any CoAP endpoint answers with a Reset carrying
//! the same message ID. A ping is sent once and never retransmitted, so the time from
//! sending it to its Reset is a clean round-trip sample (Karn's rule holds by construction);
//! a ping unanswered within [`BrokerConfig::ping_timeout_ms`] counts as one lost
//! transmission, an answered one as one delivered. The edge's own confirmable requests add
//! outcomes too: a retransmission the broker receives (its endpoint's deduplication saw the
//! message ID already) means an earlier transmission or its acknowledgement was lost.
//!
//! Pings use message IDs from their own sequence; a Reset is taken as a pong only when it
//! comes from the address pinged with that message ID while the ping is outstanding, and
//! edges with a relayed request in flight are not pinged, so the endpoint's own exchanges
//! never lose their Resets.
//!
//! [`BrokerConfig::ping_interval_ms`]: super::BrokerConfig::ping_interval_ms
//! [`BrokerConfig::ping_timeout_ms`]: super::BrokerConfig::ping_timeout_ms

use qos_coap::msg::{peek_header, MessageType, MessageWriter};
use qos_coap::Code;
use qos_wire::ids::EdgeId;

use super::Broker;

/// One ping.
#[derive(Debug, Clone, Copy)]
struct Ping<A> {
    to: A,
    edge: EdgeId,
    mid: u16,
    /// When it went out; `None` until [`Broker::poll_transmit_downstream`] sent it.
    sent: Option<u64>,
}

/// The pings in progress.
#[derive(Debug)]
pub(super) struct Pinger<A> {
    pings: Vec<Ping<A>>,
    next_round: u64,
    next_mid: u16,
}

impl<A> Pinger<A> {
    pub(super) fn new(seed: u64) -> Self {
        Pinger {
            pings: Vec::new(),
            next_round: 0,
            next_mid: (seed >> 23) as u16 ^ 0x5a5a,
        }
    }
}

impl<A: Copy + Eq> Broker<A> {
    /// A Reset answering one of the pings: records the round trip; `true` when consumed.
    pub(super) fn pong(&mut self, now: u64, from: A, bytes: &[u8]) -> bool {
        if bytes.len() != 4 {
            return false;
        }
        let Some((MessageType::Reset, mid)) = peek_header(bytes) else {
            return false;
        };
        let Some(i) = self
            .pinger
            .pings
            .iter()
            .position(|p| p.to == from && p.mid == mid && p.sent.is_some())
        else {
            return false;
        };
        let p = self.pinger.pings.swap_remove(i);
        if let Some(q) = self.registry.link_mut(p.edge) {
            q.rtt_sample(now.saturating_sub(p.sent.unwrap_or(now)));
            q.outcome(false);
        }
        true
    }

    /// Starts a round of pings when one is due, and counts the unanswered ones as lost.
    pub(super) fn poll_pings(&mut self, now: u64) {
        let timeout = self.config.ping_timeout_ms;
        let registry = &mut self.registry;
        self.pinger.pings.retain(|p| match p.sent {
            Some(at) if now >= at.saturating_add(timeout) => {
                if let Some(q) = registry.link_mut(p.edge) {
                    q.outcome(true);
                }
                false
            }
            _ => true,
        });
        let interval = self.config.ping_interval_ms;
        if interval == 0 || now < self.pinger.next_round {
            return;
        }
        let first = self.pinger.next_round == 0;
        self.pinger.next_round = now + interval;
        if first {
            // The first round one interval after start.
            return;
        }
        let targets: Vec<(A, EdgeId)> = self
            .registry
            .edges()
            .filter(|e| e.registered(now))
            .map(|e| (e.address, e.id))
            .collect();
        for (to, edge) in targets {
            let busy = self.pinger.pings.iter().any(|p| p.edge == edge)
                || self
                    .down_relays
                    .iter()
                    .any(|r| r.edge == edge && r.sent.is_some())
                || self.downstream_is_stream(to);
            if busy {
                continue;
            }
            let mid = self.pinger.next_mid;
            self.pinger.next_mid = mid.wrapping_add(1);
            self.pinger.pings.push(Ping {
                to,
                edge,
                mid,
                sent: None,
            });
        }
    }

    /// The next ping to send, written into `buf`.
    pub(super) fn transmit_ping(&mut self, now: u64, buf: &mut [u8]) -> Option<(A, usize)> {
        let p = self.pinger.pings.iter_mut().find(|p| p.sent.is_none())?;
        let w = MessageWriter::new(buf, MessageType::Confirmable, Code::EMPTY, p.mid, &[]).ok()?;
        p.sent = Some(now);
        Some((p.to, w.finish()))
    }

    /// When the next ping round starts or an outstanding ping runs out.
    pub(super) fn ping_deadline(&self) -> Option<u64> {
        let round = (self.config.ping_interval_ms > 0).then_some(self.pinger.next_round);
        let unsent = self
            .pinger
            .pings
            .iter()
            .any(|p| p.sent.is_none())
            .then_some(0);
        let out = self
            .pinger
            .pings
            .iter()
            .filter_map(|p| p.sent)
            .map(|at| at.saturating_add(self.config.ping_timeout_ms));
        round.into_iter().chain(unsent).chain(out).min()
    }

    /// Records the outcome of a confirmable request from `from`: a retransmission (`lost`)
    /// or a first copy.
    pub(super) fn con_outcome(&mut self, from: A, lost: bool) {
        let ids: Vec<EdgeId> = self.registry.ids_at(from).collect();
        for id in ids {
            if let Some(q) = self.registry.link_mut(id) {
                q.outcome(lost);
            }
        }
    }
}
