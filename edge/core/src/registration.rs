//! The lease of an edge's registration with its broker (RFC 9176 registration interface): when
//! to register, when to refresh, and what to do with the answers. Sans-IO: the
//! [`Centre`](crate::centre::Centre) sends the requests this decides on.
//!
//! Policy:
//! - Register after start, and whenever the uplink's current broker is not the one the edge is
//!   registered with (failover, return to the first broker): `POST /rd?ep=&d=&lt=&id=[&fw=][&cfg=]`
//!   with the edge's link-format resources. The answer 2.01 carries the registration's
//!   Location-Path (`rd/<n>`).
//! - Refresh with an empty `POST /rd/<n>` at half the lifetime after the last success, so one
//!   lost refresh (retried after `retry_ms`) still lands before the lease ends.
//! - A 4.04 on refresh means the directory forgot the edge (restart, lease ended): register
//!   again at once. Other failures (timeout, 5.xx, other 4.xx) retry after `retry_ms`, doubled
//!   at each further failure up to half the lifetime (a peer that is no directory, such as a
//!   bare super-manager answering 4.04, is asked rarely).
//! - A 2.01 without Location-Path is a registration that cannot be refreshed: the edge
//!   registers again at refresh time instead.

use heapless::Vec;

/// Longest Location-Path of a registration, bytes (segments joined with `/`).
pub const MAX_LOCATION: usize = 48;

/// What the lease wants sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LeaseOp {
    /// `POST /rd?...` (a new registration).
    Register,
    /// `POST /<location>` (refresh).
    Refresh,
}

/// The registration lease with one broker.
#[derive(Debug, Clone)]
pub struct Lease<A> {
    lifetime_s: u32,
    retry_ms: u64,
    /// The broker registered with, and the registration's location.
    at: Option<(A, Vec<u8, MAX_LOCATION>)>,
    /// When the next registration or refresh is due.
    due_at: u64,
    /// Failures in a row.
    failures: u32,
}

impl<A: Copy + Eq> Lease<A> {
    /// A lease of `lifetime_s` seconds, retrying failures after `retry_ms`; registration is due
    /// at once.
    pub fn new(lifetime_s: u32, retry_ms: u64) -> Self {
        Lease {
            lifetime_s,
            retry_ms,
            at: None,
            due_at: 0,
            failures: 0,
        }
    }

    /// The lifetime asked for, seconds.
    pub fn lifetime_s(&self) -> u32 {
        self.lifetime_s
    }

    /// Time between a successful registration or refresh and the next refresh, ms
    /// (half the lifetime).
    pub fn refresh_interval_ms(&self) -> u64 {
        u64::from(self.lifetime_s) * 500
    }

    /// Whether the edge is registered with `broker`.
    pub fn registered_with(&self, broker: A) -> bool {
        matches!(&self.at, Some((b, _)) if *b == broker)
    }

    /// The registration's location (`rd/<n>`), if registered.
    pub fn location(&self) -> Option<&str> {
        self.at
            .as_ref()
            .and_then(|(_, l)| core::str::from_utf8(l).ok())
            .filter(|l| !l.is_empty())
    }

    /// What is due at `now` while `broker` is the uplink's current broker.
    pub fn due(&self, now: u64, broker: A) -> Option<LeaseOp> {
        if !self.registered_with(broker) {
            // A new broker: register at once, unless a failed attempt waits for its retry.
            return (self.at.is_some() || now >= self.due_at).then_some(LeaseOp::Register);
        }
        if now < self.due_at {
            return None;
        }
        Some(if self.location().is_some() {
            LeaseOp::Refresh
        } else {
            LeaseOp::Register
        })
    }

    /// When the next operation is due (registration or refresh), ms.
    pub fn deadline(&self) -> u64 {
        self.due_at
    }

    /// A 2.01 from `broker` with the Location-Path segments `location`.
    pub fn registered<'l>(
        &mut self,
        now: u64,
        broker: A,
        location: impl Iterator<Item = &'l [u8]>,
    ) {
        let mut loc: Vec<u8, MAX_LOCATION> = Vec::new();
        for seg in location {
            let ok =
                (loc.is_empty() || loc.push(b'/').is_ok()) && loc.extend_from_slice(seg).is_ok();
            if !ok {
                // Too long to keep: treat as a registration without location.
                loc.clear();
                break;
            }
        }
        self.at = Some((broker, loc));
        self.due_at = now + self.refresh_interval_ms();
        self.failures = 0;
    }

    /// A 2.04 to a refresh.
    pub fn refreshed(&mut self, now: u64) {
        self.due_at = now + self.refresh_interval_ms();
        self.failures = 0;
    }

    /// A 4.04 to a refresh: the directory forgot the registration; register again now.
    pub fn forgotten(&mut self, now: u64) {
        self.at = None;
        self.due_at = now;
    }

    /// Registration or refresh failed (timeout, 5.xx, another 4.xx): retry later (back-off
    /// from `retry_ms`, doubling, at most half the lifetime). A failed registration leaves the
    /// edge unregistered.
    pub fn failed(&mut self, now: u64, op: LeaseOp) {
        if op == LeaseOp::Register {
            self.at = None;
        }
        let cap = self.refresh_interval_ms().max(self.retry_ms);
        let delay = self
            .retry_ms
            .saturating_mul(1 << self.failures.min(16))
            .min(cap);
        self.failures = self.failures.saturating_add(1);
        self.due_at = now + delay;
    }

    /// Forget the registration (after `DELETE`).
    pub fn clear(&mut self) {
        self.at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_half_the_lifetime_and_register_again_when_forgotten() {
        let mut l: Lease<u8> = Lease::new(300, 10_000);
        assert_eq!(l.due(0, 1), Some(LeaseOp::Register));
        l.registered(1_000, 1, [&b"rd"[..], b"7"].into_iter());
        assert_eq!(l.location(), Some("rd/7"));
        assert_eq!(l.due(1_000, 1), None);
        assert_eq!(l.due(150_999, 1), None);
        assert_eq!(l.due(151_000, 1), Some(LeaseOp::Refresh));
        l.refreshed(151_000);
        assert_eq!(l.deadline(), 301_000);
        l.failed(301_000, LeaseOp::Refresh);
        assert_eq!(l.due(305_000, 1), None, "retry waits");
        assert_eq!(l.due(311_000, 1), Some(LeaseOp::Refresh));
        l.forgotten(311_000);
        assert_eq!(l.due(311_000, 1), Some(LeaseOp::Register));
    }

    #[test]
    fn a_new_broker_means_a_new_registration() {
        let mut l: Lease<u8> = Lease::new(120, 5_000);
        l.registered(0, 1, [&b"rd"[..], b"1"].into_iter());
        assert_eq!(l.due(10, 2), Some(LeaseOp::Register));
        l.failed(10, LeaseOp::Register);
        assert_eq!(l.due(11, 2), None);
        assert_eq!(l.due(5_010, 2), Some(LeaseOp::Register));
    }

    #[test]
    fn failures_back_off_up_to_half_the_lifetime() {
        let mut l: Lease<u8> = Lease::new(120, 5_000);
        let mut now = 0;
        let mut delays = std::vec::Vec::new();
        for _ in 0..6 {
            l.failed(now, LeaseOp::Register);
            delays.push(l.deadline() - now);
            now = l.deadline();
        }
        assert_eq!(delays, [5_000, 10_000, 20_000, 40_000, 60_000, 60_000]);
        l.registered(now, 1, core::iter::empty());
        l.failed(now, LeaseOp::Refresh);
        assert_eq!(l.deadline() - now, 5_000, "success resets the back-off");
    }

    #[test]
    fn no_location_registers_again_at_refresh_time() {
        let mut l: Lease<u8> = Lease::new(60, 5_000);
        l.registered(0, 1, core::iter::empty());
        assert_eq!(l.location(), None);
        assert_eq!(l.due(30_000, 1), Some(LeaseOp::Register));
    }
}
