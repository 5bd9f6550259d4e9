//! The registry of edges: who registered (RFC 9176 registration interface), from where, until
//! when, and what the broker has seen from them. Time is the broker's monotonic `now` (ms).
//!
//! An edge is known by its numeric id (`id`, the one in its batches). A registration gives it a
//! location `rd/<n>` (n never reused while the broker runs); registering again with the same id
//! keeps the location and renews the lease (RFC 9176 §5.3: a registration with the same
//! endpoint name updates the existing one). Batches from an edge that never registered still
//! create an entry (name and region unknown), so the registry also knows who sends.
//!
//! Each entry also carries the quality of the link to the edge ([`LinkQuality`]): a smoothed
//! round-trip time and a loss rate, measured by the broker (see `crate::broker`, "Link
//! quality").

use std::collections::BTreeMap;

use qos_wire::ids::{EdgeId, Seq};
use qos_wire::registration::Registration;

/// What the broker knows about one edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeEntry<A> {
    /// Numeric edge id.
    pub id: EdgeId,
    /// Endpoint name (`ep`), empty until it registers.
    pub name: String,
    /// Sector (`d`): its region, empty until it registers.
    pub region: String,
    /// Firmware version (`fw`), if it said.
    pub firmware: String,
    /// ETag of the central configuration in force on it (`cfg`), if it said at its last
    /// registration.
    pub config_etag: Option<u32>,
    /// Its registration resource number (`rd/<n>`), while registered.
    pub location: Option<u32>,
    /// Lifetime of the registration, s.
    pub lifetime_s: u32,
    /// When the lease ends (broker ms), while registered.
    pub lease_expires_ms: Option<u64>,
    /// Address it last spoke from.
    pub address: A,
    /// When it was last heard from (broker ms).
    pub last_seen_ms: u64,
    /// Batches accepted from it.
    pub batches: u64,
    /// Highest sequence number accepted from it.
    pub last_seq: Option<Seq>,
    /// Round-trip time and loss measured on the link to it.
    pub link: LinkQuality,
}

/// How many transmission outcomes the loss rate looks back over.
pub const LOSS_WINDOW: u32 = 64;

/// Round-trip time and loss of the link to one edge.
///
/// - Round trip: samples of exchanges that were sent once and answered (Karn's rule: a
///   retransmitted exchange gives no sample), smoothed as in RFC 6298 (`srtt = 7/8 srtt +
///   1/8 sample`, the first sample taken as is).
/// - Loss: the share of failed transmissions among the last [`LOSS_WINDOW`] outcomes the
///   broker observed on the link: each of its CoAP pings (lost when unanswered in time) and
///   each confirmable request from the edge (a retransmission received is one lost
///   transmission, a first copy one delivered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkQuality {
    /// Smoothed round trip, µs.
    srtt_us: Option<u64>,
    /// Bit i set: outcome i (0 = newest) was a loss.
    lost_bits: u64,
    /// Outcomes in the window (up to [`LOSS_WINDOW`]).
    outcomes: u32,
    /// Round-trip samples taken.
    pub rtt_samples: u64,
    /// Losses observed in all.
    pub losses: u64,
}

impl LinkQuality {
    /// A round-trip sample, ms.
    pub fn rtt_sample(&mut self, ms: u64) {
        let us = ms.saturating_mul(1000);
        self.srtt_us = Some(match self.srtt_us {
            None => us,
            Some(s) => (7 * s + us) / 8,
        });
        self.rtt_samples += 1;
    }

    /// One transmission outcome: `lost` or delivered.
    pub fn outcome(&mut self, lost: bool) {
        self.lost_bits = (self.lost_bits << 1) | u64::from(lost);
        self.outcomes = (self.outcomes + 1).min(LOSS_WINDOW);
        self.losses += u64::from(lost);
    }

    /// The smoothed round trip, ms (rounded), once measured.
    pub fn rtt_ms(&self) -> Option<u32> {
        self.srtt_us
            .map(|us| u32::try_from(us.saturating_add(500) / 1000).unwrap_or(u32::MAX))
    }

    /// The loss rate over the window, 0 to 1, once there is an outcome.
    pub fn loss(&self) -> Option<f64> {
        (self.outcomes > 0).then(|| {
            let mask = if self.outcomes >= 64 {
                u64::MAX
            } else {
                (1u64 << self.outcomes) - 1
            };
            f64::from((self.lost_bits & mask).count_ones()) / f64::from(self.outcomes)
        })
    }

    /// The loss rate, per mille (rounded).
    pub fn loss_permille(&self) -> Option<u16> {
        self.loss().map(|l| (l * 1000.0).round() as u16)
    }
}

impl<A> EdgeEntry<A> {
    /// Whether its registration is current at `now`.
    pub fn registered(&self, now: u64) -> bool {
        self.lease_expires_ms.is_some_and(|t| now < t)
    }
}

/// The registry.
#[derive(Debug, Clone)]
pub struct Registry<A> {
    edges: BTreeMap<u32, EdgeEntry<A>>,
    next_location: u32,
    expired: u64,
}

impl<A> Default for Registry<A> {
    fn default() -> Self {
        Registry {
            edges: BTreeMap::new(),
            next_location: 1,
            expired: 0,
        }
    }
}

impl<A: Copy> Registry<A> {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    fn entry(&mut self, id: EdgeId, from: A, now: u64) -> &mut EdgeEntry<A> {
        let e = self.edges.entry(id.0).or_insert_with(|| EdgeEntry {
            id,
            name: String::new(),
            region: String::new(),
            firmware: String::new(),
            config_etag: None,
            location: None,
            lifetime_s: 0,
            lease_expires_ms: None,
            address: from,
            last_seen_ms: now,
            batches: 0,
            last_seq: None,
            link: LinkQuality::default(),
        });
        e.address = from;
        e.last_seen_ms = now;
        e
    }

    /// Registers (or re-registers) an edge; returns its location number.
    pub fn register(&mut self, now: u64, from: A, reg: &Registration<'_>) -> u32 {
        // An endpoint name is unique in its sector: another id using it loses its registration.
        for other in self.edges.values_mut() {
            if other.id != reg.id && other.name == reg.ep && other.region == reg.d {
                other.location = None;
                other.lease_expires_ms = None;
            }
        }
        let next = self.next_location;
        let e = self.entry(reg.id, from, now);
        e.name = reg.ep.to_string();
        e.region = reg.d.to_string();
        e.firmware = reg.fw.to_string();
        e.config_etag = None;
        e.lifetime_s = reg.lt;
        e.lease_expires_ms = Some(now + u64::from(reg.lt) * 1000);
        let location = match e.location {
            Some(n) => n,
            None => {
                e.location = Some(next);
                next
            }
        };
        if location == next {
            self.next_location += 1;
        }
        location
    }

    /// Records the `cfg` attribute of edge `id`'s registration (an extra RFC 9176 endpoint
    /// attribute, which [`Registration`] does not carry).
    pub fn set_config_etag(&mut self, id: EdgeId, etag: Option<u32>) {
        if let Some(e) = self.edges.get_mut(&id.0) {
            e.config_etag = etag;
        }
    }

    fn by_location(&mut self, location: u32, now: u64) -> Option<&mut EdgeEntry<A>> {
        self.edges
            .values_mut()
            .find(|e| e.location == Some(location) && e.registered(now))
    }

    /// Refreshes registration `location` (an empty `POST rd/<n>`), optionally with a new
    /// lifetime. `false` if there is no such current registration (the edge must register
    /// again).
    pub fn refresh(&mut self, now: u64, from: A, location: u32, lifetime_s: Option<u32>) -> bool {
        match self.by_location(location, now) {
            Some(e) => {
                if let Some(lt) = lifetime_s {
                    e.lifetime_s = lt;
                }
                e.lease_expires_ms = Some(now + u64::from(e.lifetime_s) * 1000);
                e.address = from;
                e.last_seen_ms = now;
                true
            }
            None => false,
        }
    }

    /// Removes registration `location` (`DELETE rd/<n>`); the edge's counters stay.
    pub fn remove(&mut self, now: u64, location: u32) -> bool {
        match self.by_location(location, now) {
            Some(e) => {
                e.location = None;
                e.lease_expires_ms = None;
                true
            }
            None => false,
        }
    }

    /// Ends the registrations whose lease passed at `now`; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut n = 0;
        for e in self.edges.values_mut() {
            if e.lease_expires_ms.is_some_and(|t| now >= t) {
                e.location = None;
                e.lease_expires_ms = None;
                n += 1;
            }
        }
        self.expired += n as u64;
        n
    }

    /// The earliest lease end, for the driver's timer.
    pub fn next_expiry(&self) -> Option<u64> {
        self.edges.values().filter_map(|e| e.lease_expires_ms).min()
    }

    /// Records an accepted batch.
    pub fn saw_batch(&mut self, now: u64, from: A, edge: EdgeId, last_seq: Seq) {
        let e = self.entry(edge, from, now);
        e.batches += 1;
        e.last_seq = Some(e.last_seq.map_or(last_seq, |s| s.max(last_seq)));
    }

    /// Records that edge `edge` spoke from `from` at `now` (any request naming its id, such as
    /// `GET /c?id=`); creates the entry if needed.
    pub fn heard(&mut self, now: u64, from: A, edge: EdgeId) {
        self.entry(edge, from, now);
    }

    /// The ids of the edges whose last address is `from`.
    pub fn ids_at(&self, from: A) -> impl Iterator<Item = EdgeId> + '_
    where
        A: PartialEq,
    {
        self.edges
            .values()
            .filter(move |e| e.address == from)
            .map(|e| e.id)
    }

    /// The link quality of edge `id`, to update; `None` for an unknown edge.
    pub fn link_mut(&mut self, id: EdgeId) -> Option<&mut LinkQuality> {
        self.edges.get_mut(&id.0).map(|e| &mut e.link)
    }

    /// One edge.
    pub fn get(&self, id: EdgeId) -> Option<&EdgeEntry<A>> {
        self.edges.get(&id.0)
    }

    /// Every known edge, by id.
    pub fn edges(&self) -> impl Iterator<Item = &EdgeEntry<A>> {
        self.edges.values()
    }

    /// How many edges are known.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether no edge is known.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Edges registered at `now`.
    pub fn registered(&self, now: u64) -> usize {
        self.edges.values().filter(|e| e.registered(now)).count()
    }

    /// Registrations ended by lease expiry so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_is_smoothed_and_loss_counts_the_window() {
        let mut q = LinkQuality::default();
        assert_eq!((q.rtt_ms(), q.loss()), (None, None));
        q.rtt_sample(80);
        assert_eq!(q.rtt_ms(), Some(80));
        q.rtt_sample(160);
        assert_eq!(q.rtt_ms(), Some(90), "7/8 * 80 + 1/8 * 160");
        for i in 0..10 {
            q.outcome(i % 5 == 0);
        }
        assert_eq!(q.loss_permille(), Some(200));
        for _ in 0..LOSS_WINDOW {
            q.outcome(false);
        }
        assert_eq!(q.loss(), Some(0.0), "old losses leave the window");
        assert_eq!(q.losses, 2);
        for _ in 0..LOSS_WINDOW {
            q.outcome(true);
        }
        assert_eq!(q.loss_permille(), Some(1000));
    }
}
