//! The registry of edges: who registered (RFC 9176 registration interface), from where, until
//! when, and what the broker has seen from them. Time is the broker's monotonic `now` (ms).
//!
//! An edge is known by its numeric id (`id`, the one in its batches). A registration gives it a
//! location `rd/<n>` (n never reused while the broker runs); registering again with the same id
//! keeps the location and renews the lease (RFC 9176 §5.3: a registration with the same
//! endpoint name updates the existing one). Batches from an edge that never registered still
//! create an entry (name and region unknown), so the registry also knows who sends.

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

    /// One edge.
    pub fn get(&self, id: EdgeId) -> Option<&EdgeEntry<A>> {
        self.edges.get(&id.0)
    }

    /// Every known edge, by id.
    pub fn edges(&self) -> impl Iterator<Item = &EdgeEntry<A>> {
        self.edges.values()
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
