//! Ingest counters: lock-free, shared between the ingest thread (which counts) and the HTTP
//! workers (which report them at `GET /api/v1/stats`).
//!
//! Counters only grow, from process start; they are not persisted (the store's own totals are).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why an incoming datagram or record was refused. Each reason is counted separately and
/// rendered under its [`name`](RejectReason::name) in the `rejected` object of the stats.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Not a valid CoAP message or not valid CBOR.
    Malformed,
    /// The message or payload ended early.
    Truncated,
    /// A payload version this binary does not know.
    UnsupportedVersion,
    /// A request for a resource the endpoint does not have.
    UnknownResource,
    /// Larger than the endpoint accepts.
    Oversized,
    /// A Content-Format other than application/cbor.
    BadContentFormat,
    /// The store failed; the batch was not acknowledged and nothing of it was written.
    StoreError,
    /// The source address sent over its rate (`[coap.rate_limit]`); dropped unread.
    RateLimited,
    /// A request naming an edge this process does not know (never registered here, never sent
    /// a batch, not reported by a broker), or a refresh of a registration it does not hold.
    UnknownEdge,
    /// A request that is not what its resource accepts: wrong method, missing or bad `id=`,
    /// a `config-report` or `broker-report` that does not decode, bad registration parameters.
    BadRequest,
    /// OSCORE: a key id no `[[oscore.edge]]` has.
    OscoreUnknownKid,
    /// OSCORE: the authentication tag does not verify (forged or altered).
    OscoreForged,
    /// OSCORE: a sequence number already received (a replayed request).
    OscoreReplay,
    /// OSCORE: a sequence number older than the replay window.
    OscoreStale,
    /// OSCORE: a malformed OSCORE option or protected payload.
    OscoreMalformed,
    /// OSCORE: a plaintext request naming an edge that uses OSCORE, or a protected one naming
    /// another edge than its key's.
    OscoreRequired,
    /// The edge sent batches or registrations over its own rate (`[coap.rate_limit]
    /// edge_rate_per_s`, counted per edge id whatever its address); answered 4.29 with
    /// Max-Age, not stored.
    RateLimitedEdge,
    /// A new edge's registration while the directory knows `[coap] max_edges` edges; answered
    /// 5.03 `full`.
    DirectoryFull,
}

impl RejectReason {
    /// Every reason, in rendering order. Adding a variant means adding it here.
    pub const ALL: [RejectReason; 18] = [
        RejectReason::Malformed,
        RejectReason::Truncated,
        RejectReason::UnsupportedVersion,
        RejectReason::UnknownResource,
        RejectReason::Oversized,
        RejectReason::BadContentFormat,
        RejectReason::StoreError,
        RejectReason::RateLimited,
        RejectReason::UnknownEdge,
        RejectReason::BadRequest,
        RejectReason::OscoreUnknownKid,
        RejectReason::OscoreForged,
        RejectReason::OscoreReplay,
        RejectReason::OscoreStale,
        RejectReason::OscoreMalformed,
        RejectReason::OscoreRequired,
        RejectReason::RateLimitedEdge,
        RejectReason::DirectoryFull,
    ];

    /// The snake_case name used in JSON and logs.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Truncated => "truncated",
            RejectReason::UnsupportedVersion => "unsupported_version",
            RejectReason::UnknownResource => "unknown_resource",
            RejectReason::Oversized => "oversized",
            RejectReason::BadContentFormat => "bad_content_format",
            RejectReason::StoreError => "store_error",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::UnknownEdge => "unknown_edge",
            RejectReason::BadRequest => "bad_request",
            RejectReason::OscoreUnknownKid => "oscore_unknown_kid",
            RejectReason::OscoreForged => "oscore_forged",
            RejectReason::OscoreReplay => "oscore_replay",
            RejectReason::OscoreStale => "oscore_stale",
            RejectReason::OscoreMalformed => "oscore_malformed",
            RejectReason::OscoreRequired => "oscore_required",
            RejectReason::RateLimitedEdge => "rate_limited_edge",
            RejectReason::DirectoryFull => "directory_full",
        }
    }

    /// Position in [`RejectReason::ALL`] (and in the counter array).
    fn index(self) -> usize {
        match self {
            RejectReason::Malformed => 0,
            RejectReason::Truncated => 1,
            RejectReason::UnsupportedVersion => 2,
            RejectReason::UnknownResource => 3,
            RejectReason::Oversized => 4,
            RejectReason::BadContentFormat => 5,
            RejectReason::StoreError => 6,
            RejectReason::RateLimited => 7,
            RejectReason::UnknownEdge => 8,
            RejectReason::BadRequest => 9,
            RejectReason::OscoreUnknownKid => 10,
            RejectReason::OscoreForged => 11,
            RejectReason::OscoreReplay => 12,
            RejectReason::OscoreStale => 13,
            RejectReason::OscoreMalformed => 14,
            RejectReason::OscoreRequired => 15,
            RejectReason::RateLimitedEdge => 16,
            RejectReason::DirectoryFull => 17,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The live counters. Share it as `Arc<IngestStats>`; all methods take `&self`.
#[derive(Debug, Default)]
pub struct IngestStats {
    datagrams: AtomicU64,
    batches: AtomicU64,
    records: AtomicU64,
    duplicates: AtomicU64,
    stored: AtomicU64,
    acked: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    oscore_accepted: AtomicU64,
    oscore_state_writes: AtomicU64,
}

impl IngestStats {
    /// Fresh counters, all zero.
    pub fn new() -> IngestStats {
        IngestStats::default()
    }

    /// `n` datagrams arrived (valid or not).
    pub fn add_datagrams(&self, n: u64) {
        self.datagrams.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` batches were decoded.
    pub fn add_batches(&self, n: u64) {
        self.batches.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` records were decoded (new or duplicate).
    pub fn add_records(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` records were already stored and ignored.
    pub fn add_duplicates(&self, n: u64) {
        self.duplicates.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` records were stored for the first time.
    pub fn add_stored(&self, n: u64) {
        self.stored.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` acknowledgements were sent.
    pub fn add_acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` OSCORE-protected requests were verified and accepted.
    pub fn add_oscore_accepted(&self, n: u64) {
        self.oscore_accepted.fetch_add(n, Ordering::Relaxed);
    }

    /// The OSCORE state file was written `n` times (a high-water mark per N numbers).
    pub fn add_oscore_state_writes(&self, n: u64) {
        self.oscore_state_writes.fetch_add(n, Ordering::Relaxed);
    }

    /// One datagram or record was refused for `reason`.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy of the counters (each read atomically, not all at one instant).
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: Received {
                datagrams: get(&self.datagrams),
                batches: get(&self.batches),
                records: get(&self.records),
            },
            duplicates: get(&self.duplicates),
            stored: get(&self.stored),
            acked: get(&self.acked),
            rejected: RejectReason::ALL.map(|r| (r, get(&self.rejected[r.index()]))),
            oscore: OscoreCounts {
                accepted: get(&self.oscore_accepted),
                state_writes: get(&self.oscore_state_writes),
            },
        }
    }
}

/// A copy of [`IngestStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// What arrived.
    pub received: Received,
    /// Records already stored, ignored.
    pub duplicates: u64,
    /// Records stored for the first time.
    pub stored: u64,
    /// Acknowledgements sent.
    pub acked: u64,
    /// Refusals per reason, in [`RejectReason::ALL`] order.
    pub rejected: [(RejectReason, u64); RejectReason::ALL.len()],
    /// OSCORE requests accepted and state file writes.
    pub oscore: OscoreCounts,
}

/// The `oscore` group of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct OscoreCounts {
    /// Protected requests verified and accepted (UDP and streams).
    pub accepted: u64,
    /// Writes of the replay state file (about `accepted / persist_every`).
    pub state_writes: u64,
}

/// The `received` group of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Received {
    /// Datagrams.
    pub datagrams: u64,
    /// Decoded batches.
    pub batches: u64,
    /// Decoded records.
    pub records: u64,
}

impl StatsSnapshot {
    /// The count for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].1
    }

    /// All refusals together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// The JSON rendering:
    /// `{"received":{"datagrams":..,"batches":..,"records":..},"duplicates":..,"stored":..,
    /// "acked":..,"rejected":{"malformed":..,...},"rejected_total":..,
    /// "oscore":{"accepted":..,"state_writes":..}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let rejected: serde_json::Map<String, serde_json::Value> = self
            .rejected
            .iter()
            .map(|(r, n)| (r.name().to_string(), (*n).into()))
            .collect();
        serde_json::json!({
            "received": self.received,
            "duplicates": self.duplicates,
            "stored": self.stored,
            "acked": self.acked,
            "rejected": rejected,
            "rejected_total": self.rejected_total(),
            "oscore": self.oscore,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_indices_match_all() {
        let mut names = Vec::new();
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            let name = r.name();
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            assert_eq!(r.to_string(), name);
            names.push(name);
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
    }

    #[test]
    fn counters_accumulate_and_render_as_json() {
        let stats = IngestStats::new();
        stats.add_datagrams(3);
        stats.add_batches(2);
        stats.add_records(10);
        stats.add_stored(8);
        stats.add_duplicates(2);
        stats.add_acked(2);
        stats.reject(RejectReason::Truncated);
        stats.reject(RejectReason::BadContentFormat);
        stats.reject(RejectReason::BadContentFormat);

        let snap = stats.snapshot();
        assert_eq!(snap.rejected(RejectReason::BadContentFormat), 2);
        assert_eq!(snap.rejected(RejectReason::Malformed), 0);
        assert_eq!(snap.rejected_total(), 3);

        let json = snap.to_json();
        assert_eq!(json["received"]["datagrams"], 3);
        assert_eq!(json["received"]["batches"], 2);
        assert_eq!(json["received"]["records"], 10);
        assert_eq!(json["stored"], 8);
        assert_eq!(json["duplicates"], 2);
        assert_eq!(json["acked"], 2);
        assert_eq!(json["rejected"]["truncated"], 1);
        assert_eq!(json["rejected"]["bad_content_format"], 2);
        assert_eq!(json["rejected"]["store_error"], 0);
        assert_eq!(
            json["rejected"].as_object().unwrap().len(),
            RejectReason::ALL.len()
        );
        assert_eq!(json["rejected_total"], 3);
    }

    #[test]
    fn counting_from_many_threads_loses_nothing() {
        let stats = std::sync::Arc::new(IngestStats::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        stats.add_datagrams(1);
                        stats.reject(RejectReason::Oversized);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap = stats.snapshot();
        assert_eq!(snap.received.datagrams, 4000);
        assert_eq!(snap.rejected(RejectReason::Oversized), 4000);
    }
}
