//! A mergeable latency sketch in fixed memory (DDSketch-like), for integer microseconds.
//!
//! # Buckets
//!
//! Values are `u32` microseconds. `0` is counted apart (the *zero count*); every other value falls
//! into exactly one of [`BUCKETS`] (= 976) buckets, numbered from 0, that partition
//! `1..=u32::MAX` (1 µs to about 71 min 35 s; 1 µs to 60 s takes buckets 0..=761). Bucket `i` holds
//! the integers `L[i] ..= U[i]` and is represented by the integer `R[i]`, with
//!
//! ```text
//! L[0]   = 1
//! R[i]   = floor(101 * L[i] / 100)          (the representative, the value a quantile returns)
//! U[i]   = floor(100 * R[i] / 99)           (the last bucket's U is cut to u32::MAX, its R to U)
//! L[i+1] = U[i] + 1
//! ```
//!
//! This is the greedy partition of the integers into the fewest buckets such that one integer
//! represents every member of its bucket within the relative accuracy α = 0.01:
//! `R ≤ 1.01·L ≤ 1.01·x` and `R ≥ 0.99·U ≥ 0.99·x` for every `x` in `L..=U`, hence
//! **`|R[i] − x| ≤ 0.01·x` for every value `x` of bucket `i`** — in exact integer arithmetic, with
//! no rounding step (the test `table_is_exact` checks both inequalities for every bucket, and a
//! compile-time assertion checks the table's length and ends).
//!
//! Why not the textbook DDSketch mapping `i = ceil(log_γ x)`, γ = (1+α)/(1−α), with the estimate
//! `2γ^i/(γ+1)`? Its estimate is real-valued; rounded to integer microseconds it breaks the 1 %
//! bound (e.g. that mapping's bucket 208 holds 63 and 64 µs, and no integer is within 1 % of both;
//! 52 of its buckets below 3 ms have that defect), and its low buckets are mostly empty (34
//! indices between 1 and 2 µs), so it needs 1 110 buckets to reach `u32::MAX` against 976 here. For large values both are the same: bucket widths here converge to
//! the ratio γ = 101/99 ≈ 1.0202 from below. The mapping needs no float `ln`: every 16th lower
//! bound is computed at compile time by the integer recurrence (61 `u32`, 244 bytes of flash
//! instead of 3.9 KiB for all 976), an index is found by binary search among them (6 steps) and
//! then at most 15 steps of the same recurrence, so every bound is the recurrence's own value.
//!
//! # Storage
//!
//! A [`Sketch<N>`] keeps a dense window of `N` bucket counters (`u32`) that starts at a movable
//! bucket index, plus the zero count and the total count. An insert outside the window moves the
//! window (centred on the data) when all non-empty buckets and the new one fit in `N`; otherwise the
//! window is anchored at the highest non-empty bucket and everything below it is *collapsed* into
//! the window's lowest bucket (DDSketch's "collapsing lowest dense store"): high quantiles keep their
//! bound, low ones are over-estimated. [`Sketch::collapsed`] tells whether this ever happened and up
//! to which bucket; [`Sketch::quantile_is_guaranteed`] tells whether a quantile is still within 1 %.
//!
//! With `N ≥` [`BUCKETS`] (see [`FullSketch`]) the window covers every bucket and nothing ever
//! collapses; the super-manager uses that size. Edges use a small window, e.g. `N = 128`, which
//! spans a factor of ≈ 12.7 between its lowest and highest bucket at the millisecond scale
//! (e.g. 3 ms to 38 ms), more at lower values.
//!
//! Memory: `size_of::<Sketch<N>>() = 4·N + 16` bytes (rounded up to a multiple of 8): 528 bytes for `Sketch<128>`, 3 920 for
//! [`FullSketch`] (checked by a test).
//!
//! A bucket counter saturates at `u32::MAX` (never in practice: 4·10⁹ samples in one bucket);
//! [`Sketch::count`] is always the zero count plus the sum of the bucket counters.
//!
//! # Quantiles
//!
//! [`Sketch::quantile`]`(q)` estimates the sample of rank `floor(q · (count − 1))` (0-based) in the
//! ascending order of all samples: `q = 0` is the minimum, `q = 1` the maximum, `q = 0.5` the lower
//! median. Its result is `0` if that sample is `0`, else the representative `R[i]` of the bucket
//! holding it, hence within 1 % of the true sample unless the sketch collapsed and the rank falls
//! in the collapsed part (see above).
//!
//! # Merging
//!
//! [`Sketch::merge`] adds counts bucket by bucket. When the union of both sketches' non-empty
//! buckets fits in the receiving window the result is *exactly* the sketch of the concatenated
//! samples. Because collapsing is anchored at the highest bucket, two sketches of the same `N` also
//! merge into exactly the sketch of the concatenation when they collapse.
//!
//! # Wire format
//!
//! A CBOR array: the zero count, the index of the first non-empty bucket, then one entry per
//! bucket from there on: an unsigned integer is the count of the current bucket (then move to the
//! next bucket), a negative integer `−k` skips `k` empty buckets (one byte for up to 24). The
//! encoder emits no zero counts and no trailing skips; the decoder accepts both. The empty sketch
//! is `[0, 0]`, a sketch with only zeros `[zero, 0]`.
//!
//! ```cddl
//! sketch = [
//!   zero: uint .size 4,       ; number of samples equal to 0 µs
//!   first: 0..975,            ; index of the first bucket the entries describe
//!   * ( uint .size 4          ; count of the current bucket, then advance one bucket
//!     / nint )                ; -k: skip k buckets (the index must stay ≤ 976)
//! ]
//! ```
//!
//! Decoding checks every number: a count above `u32::MAX`, an index past the last bucket, or an
//! indefinite-length array is an error. A sketch whose buckets do not fit in the receiving `N`
//! collapses exactly as inserts do. The collapse marker is local bookkeeping and is not encoded.
//! 60 samples of a typical HTTP total time (log-normal around 12 ms, σ = 0.15) take 37 bytes
//! (median over seeds; 95th percentile 42 bytes), see the test `encoded_size_http_total`.

use core::fmt;

use minicbor::data::Type;
use minicbor::decode::{Decoder, Error as DecodeError};
use minicbor::encode::{Encoder, Error as EncodeError, Write};
use minicbor::{Decode, Encode};

/// Relative accuracy of a quantile estimate: `|estimate − true| ≤ ALPHA · true`.
pub const ALPHA: f64 = 0.01;

/// Number of buckets of the mapping (covering `1..=u32::MAX` microseconds).
pub const BUCKETS: usize = count_buckets();

/// A sketch whose window covers every bucket, so it never collapses (super-manager size).
pub type FullSketch = Sketch<BUCKETS>;

/// Next lower bound of the greedy partition (see the module documentation).
const fn next_lower(l: u64) -> u64 {
    let r = 101 * l / 100;
    100 * r / 99 + 1
}

const fn count_buckets() -> usize {
    let mut l: u64 = 1;
    let mut n = 0;
    while l <= u32::MAX as u64 {
        n += 1;
        l = next_lower(l);
    }
    n
}

const fn build_lower() -> [u32; BUCKETS] {
    let mut t = [0u32; BUCKETS];
    let mut l: u64 = 1;
    let mut i = 0;
    while i < BUCKETS {
        t[i] = l as u32;
        l = next_lower(l);
        i += 1;
    }
    t
}

/// Lower bounds kept in flash: every `STRIDE`-th, the others follow by [`next_lower`].
const STRIDE: usize = 16;

const fn build_marks() -> [u32; BUCKETS / STRIDE] {
    let all = build_lower();
    let mut t = [0u32; BUCKETS / STRIDE];
    let mut k = 0;
    while k < t.len() {
        t[k] = all[k * STRIDE];
        k += 1;
    }
    t
}

/// `MARKS[k]` is the smallest value of bucket `k * STRIDE`.
static MARKS: [u32; BUCKETS / STRIDE] = build_marks();

// The table has the documented size and ends, and fits the u16 bucket index.
const _: () = {
    assert!(BUCKETS == 976);
    assert!(BUCKETS < u16::MAX as usize);
    assert!(BUCKETS % STRIDE == 0);
    let t = build_lower();
    assert!(t[0] == 1);
    assert!(next_lower(t[BUCKETS - 1] as u64) > u32::MAX as u64);
};

/// The index of the bucket holding `us` (which must be ≥ 1).
fn index_of(us: u32) -> usize {
    // MARKS is strictly increasing and MARKS[0] = 1 ≤ us, so the result is ≥ 1 before the `- 1`.
    let k = MARKS.partition_point(|&l| l <= us).saturating_sub(1);
    let mut i = k * STRIDE;
    let mut next = next_lower(u64::from(MARKS[k]));
    // Ends within STRIDE - 1 steps (at the next mark), and at the last bucket, whose next lower
    // bound is above u32::MAX.
    while next <= u64::from(us) {
        next = next_lower(next);
        i += 1;
    }
    i
}

/// The smallest value of bucket `i`, if it exists.
fn lower(i: usize) -> Option<u64> {
    let mut l = u64::from(*MARKS.get(i / STRIDE)?);
    for _ in 0..i % STRIDE {
        l = next_lower(l);
    }
    Some(l)
}

/// Inclusive bounds `(L, U)` of bucket `i`, if it exists.
fn bounds(i: usize) -> Option<(u32, u32)> {
    let lo = lower(i)?;
    // The last bucket's next lower bound is above u32::MAX: U is cut to u32::MAX.
    let hi = (next_lower(lo) - 1).min(u64::from(u32::MAX));
    Some((lo as u32, hi as u32))
}

/// Representative of bucket `i`, if it exists.
fn representative(i: usize) -> Option<u32> {
    let (lo, hi) = bounds(i)?;
    let r = (lo as u64 * 101 / 100).min(hi as u64);
    Some(r as u32)
}

/// A mergeable, fixed-size latency sketch with a window of `N` buckets; see the
/// [module documentation](self).
///
/// Equality compares the content (zero count and every bucket's count), not the window position
/// nor the collapse marker.
#[derive(Clone)]
pub struct Sketch<const N: usize> {
    /// Counters of buckets `offset .. offset + N`.
    counts: [u32; N],
    /// Bucket index of `counts[0]`; always 0 when `N ≥ BUCKETS`.
    offset: u16,
    /// 0 if nothing ever collapsed, else 1 + the highest bucket that holds collapsed samples.
    collapsed: u16,
    /// Number of zero values.
    zero: u32,
    /// Total number of samples: `zero + Σ counts`.
    count: u64,
}

impl<const N: usize> Sketch<N> {
    const WINDOW_OK: () = assert!(N >= 1, "a sketch needs at least one bucket");

    /// An empty sketch.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::WINDOW_OK;
        Sketch {
            counts: [0; N],
            offset: 0,
            collapsed: 0,
            zero: 0,
            count: 0,
        }
    }

    /// Adds one sample of `us` microseconds.
    pub fn insert(&mut self, us: u32) {
        self.insert_n(us, 1);
    }

    /// Adds `n` samples of `us` microseconds.
    pub fn insert_n(&mut self, us: u32, n: u32) {
        if n == 0 {
            return;
        }
        if us == 0 {
            let z = self.zero.saturating_add(n);
            self.count += u64::from(z - self.zero);
            self.zero = z;
            return;
        }
        self.add_index(index_of(us), n);
    }

    /// Total number of samples (including zeros).
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// Number of samples equal to 0 µs.
    pub const fn zero_count(&self) -> u32 {
        self.zero
    }

    /// Whether the sketch holds no sample.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Removes every sample (and the collapse marker).
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// `None` if every sample sits in its own bucket; `Some(i)` if some samples were moved up into
    /// buckets `≤ i` because the window was too small (see the module documentation). Buckets above
    /// `i` hold exactly their own samples.
    pub const fn collapsed(&self) -> Option<u16> {
        match self.collapsed {
            0 => None,
            c => Some(c - 1),
        }
    }

    /// Estimate of the sample of rank `floor(q · (count − 1))` in ascending order, in µs.
    ///
    /// `None` if the sketch is empty or `q` is not in `[0, 1]` (or NaN). The estimate is within
    /// 1 % of that sample whenever [`Sketch::quantile_is_guaranteed`] says so, which is always the
    /// case unless the sketch collapsed.
    pub fn quantile(&self, q: f64) -> Option<u32> {
        match self.rank_bucket(q)? {
            None => Some(0),
            Some(i) => representative(i),
        }
    }

    /// Whether [`Sketch::quantile`]`(q)` is guaranteed within 1 % of the true sample: true if the
    /// rank falls among the zeros or in a bucket above the collapsed ones. False if `q` is invalid
    /// or the sketch empty.
    pub fn quantile_is_guaranteed(&self, q: f64) -> bool {
        match self.rank_bucket(q) {
            None => false,
            Some(None) => true,
            Some(Some(i)) => match self.collapsed() {
                None => true,
                Some(c) => i > c as usize,
            },
        }
    }

    /// `None` for an invalid `q` or an empty sketch, `Some(None)` if the rank is a zero, else the
    /// bucket holding the rank.
    fn rank_bucket(&self, q: f64) -> Option<Option<usize>> {
        if !(0.0..=1.0).contains(&q) || self.count == 0 {
            return None;
        }
        let last = self.count - 1;
        // `as` saturates; q ≤ 1 keeps the product ≤ last, `min` is belt and braces.
        let rank = ((q * last as f64) as u64).min(last);
        if rank < u64::from(self.zero) {
            return Some(None);
        }
        let mut seen = u64::from(self.zero);
        for (i, c) in self.iter() {
            seen += u64::from(c);
            if rank < seen {
                return Some(Some(i as usize));
            }
        }
        // Unreachable while count == zero + Σ counts; answer the top bucket rather than panic.
        Some(self.max_index().map(usize::from))
    }

    /// Adds every sample of `other` to `self`, bucket by bucket (see the module documentation for
    /// when the result is exact).
    pub fn merge<const M: usize>(&mut self, other: &Sketch<M>) {
        if other.zero > 0 {
            self.insert_n(0, other.zero);
        }
        if let (Some(lo), Some(hi)) = (other.min_index(), other.max_index()) {
            self.make_room(lo as usize, hi as usize);
            for (i, c) in other.iter() {
                self.add_in_window(i as usize, c);
            }
        }
        self.collapsed = self.collapsed.max(other.collapsed);
    }

    /// The non-empty buckets as `(index, count)`, in ascending index order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        let offset = self.offset;
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c != 0)
            .map(move |(k, &c)| (offset + k as u16, c))
    }

    /// Index of the lowest non-empty bucket.
    pub fn min_index(&self) -> Option<u16> {
        self.iter().next().map(|(i, _)| i)
    }

    /// Index of the highest non-empty bucket.
    pub fn max_index(&self) -> Option<u16> {
        let k = self.counts.iter().rposition(|&c| c != 0)?;
        Some(self.offset + k as u16)
    }

    /// Number of samples in bucket `index` (0 for a bucket outside the window or the table).
    pub fn bucket_count(&self, index: u16) -> u32 {
        (index as usize)
            .checked_sub(self.offset as usize)
            .and_then(|k| self.counts.get(k))
            .copied()
            .unwrap_or(0)
    }

    /// Representative value (µs) of bucket `index`: what a quantile falling in it returns; within
    /// 1 % of every value of the bucket. `None` if `index ≥ BUCKETS`.
    pub fn bucket_value(index: u16) -> Option<u32> {
        representative(index as usize)
    }

    /// Inclusive range `(lowest, highest)` of values (µs) of bucket `index`; `None` if
    /// `index ≥ BUCKETS`.
    pub fn bucket_bounds(index: u16) -> Option<(u32, u32)> {
        bounds(index as usize)
    }

    /// The index of the bucket value `us` falls into; `None` for 0 (counted apart).
    pub fn bucket_index(us: u32) -> Option<u16> {
        if us == 0 {
            None
        } else {
            Some(index_of(us) as u16)
        }
    }

    /// Adds `n` samples to bucket `i` (< BUCKETS), moving or collapsing the window as needed.
    fn add_index(&mut self, i: usize, n: u32) {
        self.make_room(i, i);
        self.add_in_window(i, n);
    }

    /// Adds `n` samples to bucket `i`, which `make_room` has made room for: if `i` is below the
    /// window (the window could not reach it), they go to the lowest window bucket (collapse).
    fn add_in_window(&mut self, i: usize, n: u32) {
        let offset = self.offset as usize;
        let slot = if i < offset {
            self.collapsed = self.collapsed.max(offset as u16 + 1);
            0
        } else {
            i - offset
        };
        if let Some(c) = self.counts.get_mut(slot) {
            let new = c.saturating_add(n);
            self.count += u64::from(new - *c);
            *c = new;
        }
    }

    /// Moves the window so that it covers `lo..=hi` together with the non-empty buckets if that
    /// fits in `N`, else anchors it at the highest of them and collapses what falls below.
    fn make_room(&mut self, lo: usize, hi: usize) {
        if N >= BUCKETS {
            return; // offset stays 0 and the window covers every bucket
        }
        let offset = self.offset as usize;
        let (dlo, dhi) = match (self.min_index(), self.max_index()) {
            (Some(a), Some(b)) => (lo.min(a as usize), hi.max(b as usize)),
            _ => (lo, hi),
        };
        if dlo >= offset && dhi < offset + N {
            return;
        }
        let span = dhi - dlo + 1;
        let new_offset = if span <= N {
            let slack = N - span;
            dlo.saturating_sub(slack / 2).min(BUCKETS - N)
        } else {
            dhi + 1 - N
        };
        self.rebase(new_offset);
    }

    /// Moves the window start to `new_offset`, collapsing the buckets that fall below it into the
    /// new lowest bucket. Moving down is only done when the top buckets that leave are empty.
    fn rebase(&mut self, new_offset: usize) {
        let old = self.offset as usize;
        if new_offset > old {
            let d = new_offset - old;
            let cut = d.min(N);
            let moved: u64 = self.counts[..cut].iter().map(|&c| u64::from(c)).sum();
            self.counts.copy_within(cut.., 0);
            self.counts[N - cut..].fill(0);
            if moved > 0 {
                let total = moved + u64::from(self.counts[0]);
                let kept = total.min(u64::from(u32::MAX));
                self.count -= total - kept;
                self.counts[0] = kept as u32;
                self.collapsed = self.collapsed.max(new_offset as u16 + 1);
            }
        } else if new_offset < old {
            let d = (old - new_offset).min(N);
            debug_assert!(self.counts[N - d..].iter().all(|&c| c == 0));
            self.counts.copy_within(..N - d, d);
            self.counts[..d].fill(0);
        }
        self.offset = new_offset as u16;
    }

    /// Calls `f` with every wire entry after `first`; returns the index of the first non-empty
    /// bucket (0 if none).
    fn entries(&self, mut f: impl FnMut(Entry)) -> u16 {
        let mut it = self.iter();
        let Some((first, c)) = it.next() else {
            return 0;
        };
        f(Entry::Count(c));
        let mut prev = first;
        for (i, c) in it {
            let gap = i - prev - 1;
            if gap > 0 {
                f(Entry::Skip(gap));
            }
            f(Entry::Count(c));
            prev = i;
        }
        first
    }
}

/// One entry of the wire encoding.
#[derive(Clone, Copy)]
enum Entry {
    Count(u32),
    Skip(u16),
}

impl<const N: usize> Default for Sketch<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const M: usize> PartialEq<Sketch<M>> for Sketch<N> {
    fn eq(&self, other: &Sketch<M>) -> bool {
        self.zero == other.zero && self.count == other.count && self.iter().eq(other.iter())
    }
}

impl<const N: usize> Eq for Sketch<N> {}

impl<const N: usize> fmt::Debug for Sketch<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Buckets<'a, const N: usize>(&'a Sketch<N>);
        impl<const N: usize> fmt::Debug for Buckets<'_, N> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.iter()).finish()
            }
        }
        f.debug_struct("Sketch")
            .field("count", &self.count)
            .field("zero", &self.zero)
            .field("collapsed", &self.collapsed())
            .field("buckets", &Buckets(self))
            .finish()
    }
}

impl<C, const N: usize> Encode<C> for Sketch<N> {
    fn encode<W: Write>(
        &self,
        e: &mut Encoder<W>,
        _ctx: &mut C,
    ) -> Result<(), EncodeError<W::Error>> {
        let mut n: u64 = 0;
        let first = self.entries(|_| n += 1);
        e.array(2 + n)?.u32(self.zero)?.u16(first)?;
        let mut res = Ok(());
        self.entries(|entry| {
            if res.is_ok() {
                res = match entry {
                    Entry::Count(c) => e.u32(c).map(|_| ()),
                    Entry::Skip(k) => e.i32(-i32::from(k)).map(|_| ()),
                };
            }
        });
        res
    }
}

impl<'b, C, const N: usize> Decode<'b, C> for Sketch<N> {
    fn decode(d: &mut Decoder<'b>, _ctx: &mut C) -> Result<Self, DecodeError> {
        let pos = d.position();
        let Some(len) = d.array()? else {
            return Err(DecodeError::message("sketch: indefinite-length array").at(pos));
        };
        if len < 2 {
            return Err(DecodeError::message("sketch: array shorter than [zero, first]").at(pos));
        }
        let mut s = Sketch::<N>::new();
        s.zero = d.u32()?;
        s.count = u64::from(s.zero);
        let pos = d.position();
        let first = d.u64()?;
        if first >= BUCKETS as u64 {
            return Err(DecodeError::message("sketch: first bucket index out of range").at(pos));
        }
        // Index of the bucket the next count entry describes; ≤ BUCKETS.
        let mut next = first as usize;
        for _ in 2..len {
            let pos = d.position();
            match d.datatype()? {
                Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                    let c = d.u32().map_err(|_| {
                        DecodeError::message("sketch: bucket count above u32").at(pos)
                    })?;
                    if next >= BUCKETS {
                        return Err(DecodeError::message(
                            "sketch: bucket index past the last bucket",
                        )
                        .at(pos));
                    }
                    if c > 0 {
                        s.add_index(next, c);
                    }
                    next += 1;
                }
                Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
                    let v = i128::from(d.int()?);
                    let skip = -v; // ≥ 1 for a CBOR negative integer; a positive Int is an error
                    if skip < 1 || skip > (BUCKETS - next) as i128 {
                        return Err(
                            DecodeError::message("sketch: skip past the last bucket").at(pos)
                        );
                    }
                    next += skip as usize;
                }
                t => {
                    return Err(DecodeError::type_mismatch(t)
                        .at(pos)
                        .with_message("sketch: entry must be an integer"))
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn encode<const N: usize>(s: &Sketch<N>) -> Vec<u8> {
        minicbor::to_vec(s).expect("encode to a Vec")
    }

    /// SplitMix64, enough for reproducible test data.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in (0, 1).
        fn unit(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.unit(), self.unit());
            (-2.0 * u.ln()).sqrt() * (2.0 * core::f64::consts::PI * v).cos()
        }
    }

    fn to_us(x: f64) -> u32 {
        x.round().clamp(0.0, u32::MAX as f64) as u32
    }

    /// Sample shapes of test (a).
    fn shape(kind: u8, rng: &mut Rng) -> u32 {
        match kind {
            // uniform in log-space from 1 µs to 60 s
            0 => to_us((rng.unit() * (6.0e7f64).ln()).exp()),
            // narrow normal around 10 ms
            1 => to_us(10_000.0 + 500.0 * rng.normal()),
            // bimodal 1 ms / 100 ms
            _ => {
                if rng.unit() < 0.5 {
                    to_us(1_000.0 * (0.1 * rng.normal()).exp())
                } else {
                    to_us(100_000.0 * (0.1 * rng.normal()).exp())
                }
            }
        }
    }

    fn exact_quantile(sorted: &[u32], q: f64) -> u32 {
        let last = sorted.len() as u64 - 1;
        sorted[((q * last as f64) as u64).min(last) as usize]
    }

    fn within_alpha(est: u32, exact: u32) -> bool {
        // |est − exact| ≤ 0.01 · exact, in integers
        (est as u64).abs_diff(exact as u64) * 100 <= exact as u64
    }

    #[test]
    fn sparse_table_gives_the_recurrence() {
        let all = build_lower();
        for (i, &l) in all.iter().enumerate() {
            assert_eq!(lower(i), Some(u64::from(l)), "lower bound of {i}");
            assert_eq!(index_of(l), i, "index of {l}");
            if l > 1 {
                assert_eq!(index_of(l - 1), i - 1, "index of {}", l - 1);
            }
        }
        assert_eq!(lower(BUCKETS), None);
        assert_eq!(bounds(BUCKETS), None);
        assert_eq!(bounds(BUCKETS - 1).map(|(_, hi)| hi), Some(u32::MAX));
    }

    #[test]
    fn table_is_exact() {
        let mut prev_hi = 0u32;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds(i).unwrap();
            let r = representative(i).unwrap() as u64;
            let (lo64, hi64) = (lo as u64, hi as u64);
            assert_eq!(lo, prev_hi + 1, "contiguous at {i}");
            assert!(lo <= hi);
            assert!(lo64 <= r && r <= hi64);
            assert!(100 * r <= 101 * lo64, "R too high at {i}");
            assert!(100 * r >= 99 * hi64, "R too low at {i}");
            if i + 1 < BUCKETS {
                // greedy: one more value would break the bound for any representative
                let rmax = 101 * lo64 / 100;
                assert!(99 * (hi64 + 1) > 100 * rmax, "not maximal at {i}");
            }
            prev_hi = hi;
        }
        assert_eq!(prev_hi, u32::MAX);
        assert_eq!(index_of(60_000_000), 761);
        assert_eq!(index_of(1), 0);
        assert_eq!(index_of(u32::MAX), BUCKETS - 1);
    }

    #[test]
    fn sizes() {
        assert_eq!(core::mem::size_of::<Sketch<128>>(), 528);
        assert_eq!(core::mem::size_of::<FullSketch>(), 4 * 976 + 16);
    }

    #[test]
    fn basics() {
        let mut s = Sketch::<128>::new();
        assert!(s.is_empty());
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(encode(&s), [0x82, 0, 0]);
        s.insert(0);
        s.insert_n(12_000, 3);
        s.insert(12_100);
        assert_eq!(s.count(), 5);
        assert_eq!(s.quantile(0.0), Some(0));
        assert!(within_alpha(s.quantile(0.5).unwrap(), 12_000));
        assert!(within_alpha(s.quantile(1.0).unwrap(), 12_100));
        assert_eq!(s.quantile(1.5), None);
        assert_eq!(s.quantile(f64::NAN), None);
        assert_eq!(s.iter().map(|(_, c)| c).sum::<u32>(), 4);
        assert_eq!(s.collapsed(), None);
        s.clear();
        assert_eq!(s, Sketch::<1>::new());
    }

    #[test]
    fn every_value_within_alpha_of_its_representative() {
        // all values of the small buckets, then a stride through the rest
        let mut x: u64 = 1;
        while x <= u32::MAX as u64 {
            let i = Sketch::<1>::bucket_index(x as u32).unwrap();
            let (lo, hi) = Sketch::<1>::bucket_bounds(i).unwrap();
            assert!(lo as u64 <= x && x <= hi as u64);
            assert!(
                within_alpha(Sketch::<1>::bucket_value(i).unwrap(), x as u32),
                "{x}"
            );
            x += 1 + x / 1000;
        }
    }

    #[test]
    fn collapse_keeps_top_exact() {
        let mut s = Sketch::<8>::new();
        for us in [1_000u32, 100_000, 10, 100_000_000] {
            s.insert(us);
        }
        let top = Sketch::<8>::bucket_index(100_000_000).unwrap();
        assert_eq!(s.max_index(), Some(top));
        assert_eq!(s.min_index(), Some(top - 7));
        assert_eq!(s.collapsed(), Some(top - 7));
        assert_eq!(s.count(), 4);
        assert!(within_alpha(s.quantile(1.0).unwrap(), 100_000_000));
        assert!(s.quantile_is_guaranteed(1.0));
        assert!(!s.quantile_is_guaranteed(0.0));
    }

    #[test]
    fn decode_rejects_bad_input() {
        let bad: &[&[u8]] = &[
            &[0x9f, 0, 0, 0xff],                         // indefinite
            &[0x81, 0],                                  // too short
            &[0x82, 0, 0x19, 0x03, 0xd0],                // first = 976
            &[0x83, 0, 0, 0x1b, 0, 0, 0, 1, 0, 0, 0, 0], // count 2^32
            &[0x83, 0, 0x19, 0x03, 0xcf, 0x21],          // skip 2 from 975
            &[0x84, 0, 0x19, 0x03, 0xcf, 1, 1],          // count at 976
            &[
                0x83, 0, 0, 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ], // skip 2^64
            &[0x83, 0, 0, 0x60],                         // text entry
            &[0x83, 0, 0],                               // truncated
        ];
        for b in bad {
            assert!(minicbor::decode::<Sketch<128>>(b).is_err(), "{b:02x?}");
        }
        // zero counts and trailing skips are accepted
        let s: Sketch<4> = minicbor::decode(&[0x85, 1, 3, 0, 2, 0x20]).unwrap();
        assert_eq!(s.count(), 3);
        assert_eq!(s.iter().collect::<Vec<_>>(), [(4, 2)]);
    }

    #[test]
    fn encoded_size_http_total() {
        // 60 samples per 60 s summary, log-normal around 12 ms with σ = 0.15, over 1000 seeds.
        let mut sizes: Vec<usize> = (0..1000u64)
            .map(|seed| {
                let mut rng = Rng(seed);
                let mut s = Sketch::<128>::new();
                for _ in 0..60 {
                    s.insert(to_us(12_000.0 * (0.15 * rng.normal()).exp()));
                }
                assert_eq!(s.collapsed(), None);
                encode(&s).len()
            })
            .collect();
        sizes.sort_unstable();
        let (min, med, p95, max) = (sizes[0], sizes[500], sizes[950], sizes[999]);
        std::println!(
            "sketch of 60 HTTP total times (log-normal 12 ms, sigma 0.15): CBOR bytes min {min} median {med} p95 {p95} max {max}"
        );
        assert!(med < 40, "median encoded size {med} ≥ 40 bytes");
    }

    fn samples() -> impl Strategy<Value = Vec<u32>> {
        prop_oneof![
            prop::collection::vec(any::<u32>(), 0..200),
            prop::collection::vec(0u32..200, 0..200),
            prop::collection::vec(5_000u32..50_000, 0..200),
            (any::<u64>(), 0u8..3, 0usize..300).prop_map(|(seed, kind, n)| {
                let mut rng = Rng(seed);
                (0..n).map(|_| shape(kind, &mut rng)).collect()
            }),
        ]
    }

    fn sketch_of<const N: usize>(xs: &[u32]) -> Sketch<N> {
        let mut s = Sketch::new();
        for &x in xs {
            s.insert(x);
        }
        s
    }

    fn check_invariants<const N: usize>(s: &Sketch<N>) {
        let sum: u64 = s.iter().map(|(_, c)| u64::from(c)).sum();
        assert_eq!(s.count(), sum + u64::from(s.zero_count()));
        if let Some(hi) = s.max_index() {
            assert!((hi as usize) < BUCKETS);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        // (a) error bound for every q on a large sketch
        #[test]
        fn quantile_error_bound(seed in any::<u64>(), kind in 0u8..3, n in 1usize..2000,
                                qs in prop::collection::vec(0.0f64..=1.0, 1..20)) {
            let mut rng = Rng(seed);
            let mut xs: Vec<u32> = (0..n).map(|_| shape(kind, &mut rng)).collect();
            let s = sketch_of::<1100>(&xs);
            xs.sort_unstable();
            prop_assert_eq!(s.collapsed(), None);
            for q in qs.into_iter().chain([0.0, 0.5, 0.9, 0.99, 1.0]) {
                let est = s.quantile(q).unwrap();
                let exact = exact_quantile(&xs, q);
                prop_assert!(within_alpha(est, exact), "q={} est={} exact={}", q, est, exact);
                prop_assert!(s.quantile_is_guaranteed(q));
            }
        }

        #[test]
        fn any_value_within_alpha(x in 1u32..) {
            let i = Sketch::<1>::bucket_index(x).unwrap();
            prop_assert!(within_alpha(Sketch::<1>::bucket_value(i).unwrap(), x));
        }

        // (b) merge exactness, same and different N, and for the same N even when collapsing
        #[test]
        fn merge_is_exact(a in samples(), b in samples()) {
            let ab: Vec<u32> = a.iter().chain(&b).copied().collect();
            let whole = sketch_of::<1100>(&ab);
            let mut m = sketch_of::<1100>(&a);
            m.merge(&sketch_of::<1100>(&b));
            prop_assert_eq!(&m, &whole);
            check_invariants(&m);

            // a smaller receiver: exact whenever the union fits
            let mut small = sketch_of::<300>(&a);
            small.merge(&sketch_of::<1100>(&b));
            check_invariants(&small);
            prop_assert_eq!(small.count(), whole.count());
            if let (Some(lo), Some(hi)) = (whole.min_index(), whole.max_index()) {
                if ((hi - lo) as usize) < 300 {
                    prop_assert_eq!(&small, &whole);
                    prop_assert_eq!(small.collapsed(), None);
                }
            }

            // same small N: merge equals the sketch of the concatenation, collapsed or not
            let mut m8 = sketch_of::<16>(&a);
            m8.merge(&sketch_of::<16>(&b));
            let w8 = sketch_of::<16>(&ab);
            prop_assert_eq!(&m8, &w8);
            prop_assert_eq!(m8.collapsed(), w8.collapsed());
            check_invariants(&m8);
        }

        // (c) encode/decode round trip, into the same and other sizes
        #[test]
        fn round_trip(xs in samples()) {
            let s = sketch_of::<128>(&xs);
            let bytes = encode(&s);
            let back: Sketch<128> = minicbor::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(encode(&back), bytes.clone());
            let full: FullSketch = minicbor::decode(&bytes).unwrap();
            prop_assert_eq!(&full, &s);
            // into a smaller window: collapses exactly as inserts would
            let small: Sketch<16> = minicbor::decode(&bytes).unwrap();
            check_invariants(&small);
            if s.collapsed().is_none() {
                prop_assert_eq!(&small, &sketch_of::<16>(&xs));
            }
        }

        // (d) decoding arbitrary bytes never panics, and what decodes is consistent
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(s) = minicbor::decode::<Sketch<8>>(&bytes) {
                check_invariants(&s);
            }
            if let Ok(s) = minicbor::decode::<FullSketch>(&bytes) {
                check_invariants(&s);
            }
        }

        #[test]
        fn decode_structured_never_panics(zero in any::<u32>(), first in 0u64..1100,
                                          entries in prop::collection::vec(any::<i64>(), 0..40)) {
            let mut buf = Vec::new();
            let mut e = minicbor::Encoder::new(&mut buf);
            e.array(2 + entries.len() as u64).unwrap().u32(zero).unwrap().u64(first).unwrap();
            for v in &entries {
                // mostly small numbers
                e.i64(v % 300).unwrap();
            }
            if let Ok(s) = minicbor::decode::<Sketch<8>>(&buf) {
                check_invariants(&s);
            }
        }

        // (e) collapse: a small window keeps the bound on every quantile whose rank lies above the
        // collapsed buckets, i.e. whenever `quantile_is_guaranteed(q)`; in particular for every
        // q ≥ 0.5 when fewer than half the samples lie below the window.
        #[test]
        fn collapse_keeps_upper_quantiles(seed in any::<u64>(), n in 1usize..1000,
                                          qs in prop::collection::vec(0.0f64..=1.0, 1..20)) {
            let mut rng = Rng(seed);
            let mut xs: Vec<u32> = (0..n).map(|_| shape(0, &mut rng)).collect();
            let s = sketch_of::<64>(&xs);
            check_invariants(&s);
            xs.sort_unstable();
            let below = match s.collapsed() {
                Some(c) => {
                    let (_, hi) = bounds(c as usize).unwrap();
                    xs.iter().filter(|&&x| x <= hi).count()
                }
                None => 0,
            };
            for q in qs.into_iter().chain([0.0, 0.5, 0.9, 0.99, 1.0]) {
                let est = s.quantile(q).unwrap();
                let exact = exact_quantile(&xs, q);
                let rank = (q * (n - 1) as f64) as usize;
                if s.quantile_is_guaranteed(q) {
                    prop_assert!(within_alpha(est, exact), "q={} est={} exact={}", q, est, exact);
                }
                // guaranteed exactly when the rank is above the samples of collapsed buckets
                prop_assert_eq!(s.quantile_is_guaranteed(q), rank >= below);
                // never below the truth
                prop_assert!(est as u64 * 100 >= exact as u64 * 99);
            }
            if below * 2 < n - 1 {
                prop_assert!(s.quantile_is_guaranteed(0.5));
            }
        }

        // (e, continued) the case the small window is made for: latencies around 10 ms with up to
        // 40 % low outliers (1..=100 µs) that force a collapse; every q ≥ 0.5 stays within 1 %.
        #[test]
        fn collapse_low_outliers_keep_median_and_up(seed in any::<u64>(), n in 1usize..1000,
                                                    low_pct in 0u64..40,
                                                    qs in prop::collection::vec(0.5f64..=1.0, 1..20)) {
            let mut rng = Rng(seed);
            let mut xs: Vec<u32> = (0..n)
                .map(|_| {
                    if rng.next_u64() % 100 < low_pct {
                        1 + (rng.next_u64() % 100) as u32
                    } else {
                        to_us(10_000.0 * (0.1 * rng.normal()).exp())
                    }
                })
                .collect();
            let s = sketch_of::<64>(&xs);
            xs.sort_unstable();
            let low = xs.iter().filter(|&&x| x <= 100).count();
            for q in qs.into_iter().chain([0.5, 0.9, 0.99, 1.0]) {
                let est = s.quantile(q).unwrap();
                let exact = exact_quantile(&xs, q);
                if ((q * (n - 1) as f64) as usize) >= low {
                    prop_assert!(s.quantile_is_guaranteed(q));
                    prop_assert!(within_alpha(est, exact), "q={} est={} exact={}", q, est, exact);
                }
            }
        }
    }
}
