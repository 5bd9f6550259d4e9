//! The deduplication cache of received message IDs (RFC 7252 §4.5).
//!
//! A ring of `N` entries in the order they were received, with a chain per message-ID bucket
//! through it: looking up a `(peer, mid)`, remembering a new one and evicting the oldest when
//! the ring is full each cost a walk of one short chain instead of a scan of all `N` entries
//! (a server's cache holds 1024; three scans per datagram were a fifth of its ingest time).
//!
//! An entry that is forgotten or expires is unlinked at once; its slot is reused when the ring
//! comes round to it, like any other. A full ring therefore evicts its oldest slot even if a
//! later one is already empty; both happen only off the normal path (a request that could not
//! be answered, entries older than their lifetime).

use heapless::Vec;

/// The end of a chain.
const NIL: u16 = u16::MAX;

/// What the endpoint did with a received message, which decides how a duplicate is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DedupState {
    /// A CON request delivered to the application, not answered yet: duplicates are dropped.
    Pending,
    /// An empty ACK was sent for it (deferred request, or a separate response we received):
    /// duplicates get another empty ACK.
    Acked,
    /// Answered; the response is cached: duplicates get it again.
    Responded,
    /// Answered with a response larger than the cache: duplicates are delivered again.
    RespondedUncached,
    /// A NON message: duplicates are dropped.
    Non,
}

/// One received message ID and what became of it.
pub(crate) struct DedupEntry<A, const RESP: usize> {
    pub(crate) peer: A,
    pub(crate) mid: u16,
    pub(crate) expires: u64,
    pub(crate) state: DedupState,
    /// The encoded piggybacked response, re-sent for a duplicate CON request.
    pub(crate) resp: [u8; RESP],
    pub(crate) resp_len: usize,
    /// False once forgotten or expired (and unlinked from its chain).
    live: bool,
    /// The next entry of the same bucket's chain, or [`NIL`].
    next: u16,
}

/// `N` entries at most; see the module documentation.
pub(crate) struct DedupCache<A, const N: usize, const RESP: usize> {
    ring: Vec<DedupEntry<A, RESP>, N>,
    /// The oldest slot, overwritten next once the ring is full.
    head: usize,
    /// The first entry of each bucket's chain (bucket: `mid % N`), or [`NIL`].
    buckets: [u16; N],
    live: usize,
}

impl<A, const N: usize, const RESP: usize> DedupCache<A, N, RESP> {
    /// Entries remembered and neither forgotten, expired nor evicted.
    pub(crate) fn len(&self) -> usize {
        self.live
    }
}

impl<A: Copy + Eq, const N: usize, const RESP: usize> DedupCache<A, N, RESP> {
    /// Chain links are `u16`, with [`NIL`] reserved.
    const FITS: () = assert!(N < NIL as usize, "DEDUP must be below 65535");

    // Inlined into the endpoint's `new` on a host: no frame (and copy) of its own for a value
    // that is ~100 KB in a server's endpoint (firmware's is small: the compiler decides).
    #[cfg_attr(not(target_os = "none"), inline(always))]
    pub(crate) fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        DedupCache {
            ring: Vec::new(),
            head: 0,
            buckets: [NIL; N],
            live: 0,
        }
    }

    fn bucket(mid: u16) -> usize {
        // Only called with N > 0: an empty cache holds nothing to look up.
        usize::from(mid) % N
    }

    fn find(&self, peer: A, mid: u16) -> Option<usize> {
        if N == 0 {
            return None;
        }
        let mut i = *self.buckets.get(Self::bucket(mid))?;
        while let Some(e) = self.ring.get(usize::from(i)) {
            if e.mid == mid && e.peer == peer {
                return Some(usize::from(i));
            }
            i = e.next;
        }
        None
    }

    pub(crate) fn get(&self, peer: A, mid: u16) -> Option<&DedupEntry<A, RESP>> {
        self.find(peer, mid).and_then(|i| self.ring.get(i))
    }

    pub(crate) fn get_mut(&mut self, peer: A, mid: u16) -> Option<&mut DedupEntry<A, RESP>> {
        self.find(peer, mid).and_then(|i| self.ring.get_mut(i))
    }

    /// Takes slot `i` out of its bucket's chain and marks it empty.
    fn unlink(&mut self, i: usize) {
        let Some(e) = self.ring.get_mut(i) else {
            return;
        };
        if !e.live {
            return;
        }
        e.live = false;
        self.live -= 1;
        let (b, next) = (Self::bucket(e.mid), e.next);
        let mut link = match self.buckets.get_mut(b) {
            Some(head) if usize::from(*head) == i => {
                *head = next;
                return;
            }
            Some(head) => *head,
            None => return,
        };
        while let Some(e) = self.ring.get_mut(usize::from(link)) {
            if usize::from(e.next) == i {
                e.next = next;
                return;
            }
            link = e.next;
        }
    }

    /// Remembers `(peer, mid)`, which must not be in the cache. Returns whether a live entry
    /// (the oldest) had to make room.
    pub(crate) fn insert(&mut self, peer: A, mid: u16, expires: u64, state: DedupState) -> bool {
        if N == 0 {
            return false;
        }
        let (i, evicted) = if self.ring.is_full() {
            let i = self.head;
            self.head = (i + 1) % N;
            let evicted = self.ring.get(i).is_some_and(|e| e.live);
            self.unlink(i);
            (i, evicted)
        } else {
            let entry = DedupEntry {
                peer,
                mid,
                expires,
                state,
                resp: [0; RESP],
                resp_len: 0,
                live: false,
                next: NIL,
            };
            let _ = self.ring.push(entry);
            (self.ring.len() - 1, false)
        };
        let b = Self::bucket(mid);
        let first = self.buckets.get(b).copied().unwrap_or(NIL);
        if let Some(e) = self.ring.get_mut(i) {
            *e = DedupEntry {
                peer,
                mid,
                expires,
                state,
                resp: e.resp,
                resp_len: 0,
                live: true,
                next: first,
            };
            if let Some(head) = self.buckets.get_mut(b) {
                *head = i as u16;
            }
            self.live += 1;
        }
        evicted
    }

    /// Forgets `(peer, mid)` if remembered.
    pub(crate) fn remove(&mut self, peer: A, mid: u16) {
        if let Some(i) = self.find(peer, mid) {
            self.unlink(i);
        }
    }

    /// Forgets every entry that expires at or before `now`; returns the earliest expiry left
    /// (`u64::MAX` when none).
    pub(crate) fn expire(&mut self, now: u64) -> u64 {
        let mut earliest = u64::MAX;
        for i in 0..self.ring.len() {
            match self.ring.get(i) {
                Some(e) if e.live && e.expires <= now => self.unlink(i),
                Some(e) if e.live => earliest = earliest.min(e.expires),
                _ => {}
            }
        }
        earliest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    type Cache = DedupCache<u8, 4, 8>;

    fn live(c: &Cache) -> std::vec::Vec<(u8, u16)> {
        let mut v: std::vec::Vec<_> = (0..=255u8)
            .flat_map(|p| (0..64u16).map(move |m| (p, m)))
            .filter(|&(p, m)| c.get(p, m).is_some())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn finds_what_it_holds_and_evicts_the_oldest() {
        let mut c = Cache::new();
        for (k, mid) in [1u16, 5, 9, 2].into_iter().enumerate() {
            // 1, 5 and 9 share a bucket (mod 4).
            assert!(!c.insert(k as u8, mid, 100, DedupState::Pending));
        }
        assert_eq!(c.len(), 4);
        assert_eq!(live(&c), vec![(0, 1), (1, 5), (2, 9), (3, 2)]);
        assert!(c.get(0, 5).is_none(), "peer and mid both match");
        // Full: the oldest, (0, 1), goes from the end of its chain.
        assert!(c.insert(4, 13, 100, DedupState::Non));
        assert_eq!(live(&c), vec![(1, 5), (2, 9), (3, 2), (4, 13)]);
        assert_eq!(c.get(4, 13).map(|e| e.state), Some(DedupState::Non));
    }

    #[test]
    fn removal_and_expiry_unlink_and_free_slots_in_ring_order() {
        let mut c = Cache::new();
        for (k, (mid, exp)) in [(1u16, 10u64), (5, 30), (9, 20), (13, 40)]
            .into_iter()
            .enumerate()
        {
            c.insert(k as u8, mid, exp, DedupState::Pending);
        }
        c.remove(1, 5);
        assert_eq!(c.len(), 3);
        assert_eq!(live(&c), vec![(0, 1), (2, 9), (3, 13)]);
        assert_eq!(c.expire(20), 40, "(0,1) and (2,9) expire; 40 is left");
        assert_eq!(live(&c), vec![(3, 13)]);
        // The slots come round in ring order; empty ones are no eviction.
        assert!(!c.insert(5, 17, 50, DedupState::Pending));
        assert!(!c.insert(6, 21, 50, DedupState::Pending));
        assert!(!c.insert(7, 25, 50, DedupState::Pending));
        assert_eq!(c.len(), 4);
        assert!(
            c.insert(8, 29, 50, DedupState::Pending),
            "(3, 13) was the oldest"
        );
        assert_eq!(live(&c), vec![(5, 17), (6, 21), (7, 25), (8, 29)]);
        assert_eq!(c.expire(49), 50);
    }

    #[test]
    fn a_long_run_matches_a_plain_list() {
        // Against the obvious model: a list in arrival order, oldest evicted when full.
        let mut c: DedupCache<u8, 16, 4> = DedupCache::new();
        let mut model: std::vec::Vec<(u8, u16)> = std::vec::Vec::new();
        let mut x = 7u32;
        for _ in 0..5000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let (peer, mid) = ((x >> 8) as u8 % 3, (x >> 16) as u16 % 40);
            if c.get(peer, mid).is_some() {
                assert!(model.contains(&(peer, mid)));
                if x % 5 == 0 {
                    c.remove(peer, mid);
                    model.retain(|&e| e != (peer, mid));
                }
                continue;
            }
            assert!(!model.contains(&(peer, mid)));
            let evicted = c.insert(peer, mid, 0, DedupState::Non);
            // The ring may evict while a removed entry's slot is still ahead in it.
            if evicted {
                model.remove(0);
            }
            model.push((peer, mid));
            assert_eq!(c.len(), model.len());
            assert!(model.len() <= 16);
        }
    }
}
