//! The last raw results of an edge, kept for drill-down: the centre asks for them with
//! `GET /r` (see [`crate::downlink`]) when a summary shows something worth a closer look.
//!
//! A fixed ring of at most `K` [`ProbeResult`]s (no allocation); a new result replaces the
//! oldest once the ring is full. A runtime limit below `K` ([`Recent::with_limit`]) lets a
//! driver size the ring from its configuration within a compile-time capacity.

use qos_wire::codec::WireError;
use qos_wire::ids::ProbeId;
use qos_wire::outcome::{encode_results, ProbeResult};

/// The last (at most) `K` probe results.
#[derive(Debug, Clone)]
pub struct Recent<const K: usize> {
    ring: [Option<ProbeResult>; K],
    /// Where the next result goes.
    next: usize,
    len: usize,
    limit: usize,
}

impl<const K: usize> Default for Recent<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const K: usize> Recent<K> {
    /// An empty ring keeping `K` results.
    pub const fn new() -> Self {
        Self::with_limit(K)
    }

    /// An empty ring keeping `limit` results (clamped to `1..=K`; `K` = 0 keeps none).
    pub const fn with_limit(limit: usize) -> Self {
        let limit = if limit > K {
            K
        } else if limit == 0 && K > 0 {
            1
        } else {
            limit
        };
        Recent {
            ring: [None; K],
            next: 0,
            len: 0,
            limit,
        }
    }

    /// How many results it keeps at most.
    pub fn capacity(&self) -> usize {
        self.limit
    }

    /// How many results it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep `r`, forgetting the oldest result if the ring is full.
    pub fn push(&mut self, r: ProbeResult) {
        if self.limit == 0 {
            return;
        }
        self.ring[self.next] = Some(r);
        self.next = (self.next + 1) % self.limit;
        self.len = (self.len + 1).min(self.limit);
    }

    /// The results, newest first; only those of `probe` if given.
    pub fn iter(&self, probe: Option<ProbeId>) -> impl Iterator<Item = &ProbeResult> + Clone {
        let (next, limit) = (self.next, self.limit);
        (1..=self.len)
            .filter_map(move |back| self.ring[(next + limit - back) % limit].as_ref())
            .filter(move |r| probe.is_none_or(|p| r.probe == p))
    }

    /// Encode the newest results (of `probe` if given) as CDDL `recent-results` into `buf`:
    /// as many as fit, newest first. Older results that do not fit are left out; the returned
    /// count (with the number of bytes) says how many were written, so a caller can tell a
    /// partial answer from the whole ring by comparing it with `iter(probe).count()`.
    pub fn encode_newest(
        &self,
        buf: &mut [u8],
        probe: Option<ProbeId>,
    ) -> Result<(usize, u16), WireError> {
        encode_results(buf, self.iter(probe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_wire::outcome::{ErrorClass, PhaseTimings, RecentResults};
    use qos_wire::phase::Phase;

    fn result(probe: u16, at_ms: u64) -> ProbeResult {
        let mut phases = PhaseTimings::new();
        phases.set(Phase::Connect, 1_500);
        ProbeResult {
            probe: ProbeId(probe),
            at_ms,
            phases,
            error: (at_ms % 5 == 0).then_some(ErrorClass::Timeout),
            error_after_us: (at_ms % 5 == 0).then_some(9_000),
            detail: 0,
            redirects: 0,
        }
    }

    fn ats<'a>(it: impl Iterator<Item = &'a ProbeResult>) -> std::vec::Vec<u64> {
        it.map(|r| r.at_ms).collect()
    }

    #[test]
    fn keeps_the_last_k_newest_first() {
        let mut r: Recent<4> = Recent::new();
        assert!(r.is_empty());
        assert_eq!(r.iter(None).count(), 0);
        for at in 1..=3 {
            r.push(result(1, at));
        }
        assert_eq!(ats(r.iter(None)), [3, 2, 1]);
        for at in 4..=10 {
            r.push(result(1, at));
        }
        assert_eq!(r.len(), 4);
        assert_eq!(ats(r.iter(None)), [10, 9, 8, 7]);
    }

    #[test]
    fn filters_by_probe() {
        let mut r: Recent<8> = Recent::new();
        for at in 1..=8 {
            r.push(result((at % 2) as u16, at));
        }
        assert_eq!(ats(r.iter(Some(ProbeId(1)))), [7, 5, 3, 1]);
        assert_eq!(ats(r.iter(Some(ProbeId(0)))), [8, 6, 4, 2]);
        assert_eq!(r.iter(Some(ProbeId(9))).count(), 0);
    }

    #[test]
    fn a_runtime_limit_below_the_capacity() {
        let mut r: Recent<16> = Recent::with_limit(3);
        assert_eq!(r.capacity(), 3);
        for at in 1..=7 {
            r.push(result(1, at));
        }
        assert_eq!(ats(r.iter(None)), [7, 6, 5]);
        assert_eq!(Recent::<16>::with_limit(100).capacity(), 16);
        assert_eq!(Recent::<16>::with_limit(0).capacity(), 1);
        let mut none: Recent<0> = Recent::new();
        none.push(result(1, 1));
        assert!(none.is_empty());
    }

    #[test]
    fn encodes_the_newest_that_fit() {
        let mut r: Recent<64> = Recent::new();
        for at in 1..=64 {
            r.push(result((at % 2) as u16, at));
        }
        let mut buf = [0u8; 1024];
        let (n, count) = r.encode_newest(&mut buf[..512], None).unwrap();
        assert!(count > 10 && usize::from(count) < 64, "{count}");
        let back = RecentResults::decode(&buf[..n]).unwrap();
        let expected: std::vec::Vec<u64> = (1..=64).rev().take(count.into()).collect();
        assert_eq!(
            ats(back.results.iter().collect::<std::vec::Vec<_>>().iter()),
            expected
        );

        let (n, count) = r.encode_newest(&mut buf[..200], Some(ProbeId(0))).unwrap();
        let back = RecentResults::decode(&buf[..n]).unwrap();
        assert!(count >= 1);
        assert!(back.results.iter().all(|x| x.probe == ProbeId(0)));
        assert_eq!(back.results.iter().next().unwrap().at_ms, 64);
    }
}
