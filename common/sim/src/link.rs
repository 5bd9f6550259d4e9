//! Link behaviour ([`LinkConfig`]) and scheduled network faults ([`Fault`]).

use core::fmt;

/// How one directed link treats the datagrams sent over it.
///
/// The fate of each datagram is decided once, at [`Net::send`](crate::Net::send):
///
/// 1. with probability [`loss`](Self::loss) it is dropped;
/// 2. otherwise, with probability [`duplicate`](Self::duplicate) it is
///    delivered twice, else once;
/// 3. each copy independently gets a delay drawn uniformly from
///    `[delay_min_ms, delay_max_ms]`, and with probability
///    [`reorder`](Self::reorder) an extra `reorder_extra_ms` on top, so it is
///    overtaken by datagrams sent after it.
///
/// A delay range wider than the gap between sends also reorders datagrams;
/// with `delay_min_ms == delay_max_ms` and `reorder == 0.0` a link is FIFO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Probability in `[0, 1]` that a datagram is lost.
    pub loss: f64,
    /// Probability in `[0, 1]` that a datagram that was not lost is delivered twice.
    pub duplicate: f64,
    /// Smallest one-way delay in milliseconds.
    pub delay_min_ms: u64,
    /// Largest one-way delay in milliseconds (inclusive); must be `>= delay_min_ms`.
    pub delay_max_ms: u64,
    /// Probability in `[0, 1]` that a copy gets `reorder_extra_ms` of extra delay.
    pub reorder: f64,
    /// Extra delay in milliseconds given to a copy picked for reordering.
    pub reorder_extra_ms: u64,
}

impl Default for LinkConfig {
    /// A perfect link with a constant 1 ms delay.
    fn default() -> Self {
        Self::perfect(1)
    }
}

impl LinkConfig {
    /// A link that never loses, duplicates or reorders, with a constant delay.
    pub const fn perfect(delay_ms: u64) -> Self {
        LinkConfig {
            loss: 0.0,
            duplicate: 0.0,
            delay_min_ms: delay_ms,
            delay_max_ms: delay_ms,
            reorder: 0.0,
            reorder_extra_ms: 0,
        }
    }

    /// Returns a copy with the given loss probability.
    pub const fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Returns a copy with the given duplication probability.
    pub const fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// Returns a copy with delays drawn uniformly from `[min_ms, max_ms]`.
    pub const fn with_delay(mut self, min_ms: u64, max_ms: u64) -> Self {
        self.delay_min_ms = min_ms;
        self.delay_max_ms = max_ms;
        self
    }

    /// Returns a copy where each copy of a datagram gets `extra_ms` more delay
    /// with probability `probability`.
    pub const fn with_reorder(mut self, probability: f64, extra_ms: u64) -> Self {
        self.reorder = probability;
        self.reorder_extra_ms = extra_ms;
        self
    }

    /// Checks that probabilities are in `[0, 1]` and the delay range is not empty.
    pub fn validate(&self) -> Result<(), InvalidLinkConfig> {
        let prob_ok = |p: f64| (0.0..=1.0).contains(&p);
        if !prob_ok(self.loss) {
            return Err(InvalidLinkConfig("loss must be in [0, 1]"));
        }
        if !prob_ok(self.duplicate) {
            return Err(InvalidLinkConfig("duplicate must be in [0, 1]"));
        }
        if !prob_ok(self.reorder) {
            return Err(InvalidLinkConfig("reorder must be in [0, 1]"));
        }
        if self.delay_min_ms > self.delay_max_ms {
            return Err(InvalidLinkConfig("delay_min_ms must be <= delay_max_ms"));
        }
        Ok(())
    }
}

/// Why a [`LinkConfig`] was rejected by [`LinkConfig::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidLinkConfig(pub &'static str);

impl fmt::Display for InvalidLinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid link config: {}", self.0)
    }
}

impl std::error::Error for InvalidLinkConfig {}

/// A change to the network, applied immediately through the matching
/// [`Net`](crate::Net) method or later through [`Net::schedule`](crate::Net::schedule).
///
/// Blocking a link (by [`Partition`](Self::Partition) or [`Block`](Self::Block))
/// also drops the datagrams in flight on it that would have arrived at or
/// after the moment the fault took effect.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault<A> {
    /// Blocks both directions between every node of the first set and every
    /// node of the second (pairs of a node with itself are ignored).
    Partition(Vec<A>, Vec<A>),
    /// Removes every partition and one-way block.
    HealAll,
    /// Blocks the directed link `from → to`.
    Block(A, A),
    /// Unblocks the directed link `from → to`.
    Unblock(A, A),
    /// Overrides the configuration of the directed link `from → to`.
    SetLink(A, A, LinkConfig),
    /// Removes the override of the directed link `from → to` (it falls back to the default).
    ClearLink(A, A),
    /// Replaces the default configuration used by links without an override.
    SetDefault(LinkConfig),
}
