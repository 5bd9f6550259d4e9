//! Per-source token buckets, sans-IO: one sender (a flooding or broken peer) cannot take the
//! receive loop from the others. Each key (the drivers use the source IP address) has a bucket
//! of `burst` tokens refilled at `rate_per_s`; a datagram takes one token or is refused. The
//! table holds at most `max_sources` buckets: when it is full, buckets that are full again
//! (idle senders) are forgotten first, then the oldest, so spoofed sources cannot grow it.
//!
//! Time is the caller's monotonic `now` in ms. `rate_per_s == 0` disables the limit.
//!
//! The same buckets keyed by edge id ([`EdgeLimiter`]) limit each edge's batches once they are
//! decoded, whatever address they come from: edges behind one NAT share an address, and one
//! edge may change addresses. Its refusals say how long to wait ([`RateLimiter::check`]), which
//! the CoAP answer carries as 4.29 Too Many Requests with Max-Age (RFC 8516).

use std::collections::BTreeMap;

/// Settings of a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Datagrams per second a source may send on average; 0: no limit.
    pub rate_per_s: u32,
    /// Datagrams a source may send at once (the bucket's size, at least 1).
    pub burst: u32,
    /// Sources tracked at once.
    pub max_sources: usize,
}

impl RateLimit {
    /// No limit.
    pub const OFF: RateLimit = RateLimit {
        rate_per_s: 0,
        burst: 1,
        max_sources: 1,
    };
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in thousandths.
    milli: u64,
    /// When it was last refilled.
    at: u64,
}

/// A [`RateLimiter`] with the function that maps an address to its key (e.g. the IP address
/// without the port), as the sans-IO cores hold it.
pub type SourceLimiter<A> = (RateLimiter<A>, fn(A) -> A);

/// Token buckets per edge id (the number of [`qos_wire::ids::EdgeId`]).
pub type EdgeLimiter = RateLimiter<u32>;

/// The Max-Age (whole seconds, at least 1) of a 4.29 answer telling a sender to wait `wait_ms`.
pub fn max_age_s(wait_ms: u64) -> u32 {
    u32::try_from(wait_ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX)
}

/// Token buckets per key.
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    buckets: BTreeMap<K, Bucket>,
    refused: u64,
}

impl<K: Ord + Copy> RateLimiter<K> {
    /// Buckets with `limit`.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit: RateLimit {
                burst: limit.burst.max(1),
                max_sources: limit.max_sources.max(1),
                ..limit
            },
            buckets: BTreeMap::new(),
            refused: 0,
        }
    }

    /// Datagrams refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limit.burst) * 1000
    }

    /// Whether a datagram from `key` at `now` may be processed (it takes a token).
    pub fn allow(&mut self, now: u64, key: K) -> bool {
        self.check(now, key).is_ok()
    }

    /// [`RateLimiter::allow`], telling on refusal how many ms until `key` has a token again.
    pub fn check(&mut self, now: u64, key: K) -> Result<(), u64> {
        if self.limit.rate_per_s == 0 {
            return Ok(());
        }
        let cap = self.capacity();
        let rate = u64::from(self.limit.rate_per_s);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.limit.max_sources {
            self.evict(now);
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            milli: cap,
            at: now,
        });
        // rate tokens per 1000 ms = rate milli-tokens per ms.
        let elapsed = now.saturating_sub(b.at);
        b.milli = cap.min(b.milli.saturating_add(elapsed.saturating_mul(rate)));
        b.at = now;
        if b.milli >= 1000 {
            b.milli -= 1000;
            Ok(())
        } else {
            self.refused += 1;
            // `rate` milli-tokens per ms: the missing ones, rounded up.
            Err((1000 - b.milli).div_ceil(rate))
        }
    }

    /// Makes room for one more source: drops the buckets that are full again at `now`, or the
    /// one refilled longest ago.
    fn evict(&mut self, now: u64) {
        let cap = self.capacity();
        let rate = u64::from(self.limit.rate_per_s);
        self.buckets.retain(|_, b| {
            b.milli
                .saturating_add(now.saturating_sub(b.at).saturating_mul(rate))
                < cap
        });
        if self.buckets.len() >= self.limit.max_sources {
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, max: usize) -> RateLimiter<u8> {
        RateLimiter::new(RateLimit {
            rate_per_s: rate,
            burst,
            max_sources: max,
        })
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut l = limiter(10, 5, 8);
        assert_eq!((0..10).filter(|_| l.allow(0, 1)).count(), 5);
        // 100 ms later: one more token.
        assert!(l.allow(100, 1));
        assert!(!l.allow(100, 1));
        // Another source is not affected.
        assert!(l.allow(100, 2));
        assert_eq!(l.refused(), 6);
        // Long idle: back to the burst, not more.
        assert_eq!((0..10).filter(|_| l.allow(60_000, 1)).count(), 5);
    }

    #[test]
    fn a_refusal_says_how_long_to_wait() {
        let mut l = limiter(2, 1, 8);
        assert_eq!(l.check(0, 1), Ok(()));
        // Two tokens per second: the next one in 500 ms.
        assert_eq!(l.check(0, 1), Err(500));
        assert_eq!(l.check(300, 1), Err(200));
        assert_eq!(l.check(500, 1), Ok(()));
        assert_eq!((max_age_s(1), max_age_s(1000), max_age_s(1001)), (1, 1, 2));
        assert_eq!(max_age_s(0), 1);
    }

    #[test]
    fn off_lets_everything_through() {
        let mut l: RateLimiter<u8> = RateLimiter::new(RateLimit::OFF);
        assert!((0..10_000).all(|_| l.allow(0, 1)));
        assert_eq!(l.sources(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_the_busy() {
        let mut l = limiter(1, 2, 4);
        // Source 1 floods: its bucket is empty.
        while l.allow(0, 1) {}
        for k in 2..=200u8 {
            l.allow(0, k);
            assert!(l.sources() <= 4);
        }
        // The flooder was not forgotten while fresh sources came and went... or if it was,
        // it gets at most one burst: bounded either way.
        let through = (0..100).filter(|_| l.allow(1, 1)).count();
        assert!(through <= 2, "{through}");
    }
}
