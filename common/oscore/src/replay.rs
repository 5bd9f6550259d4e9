//! The receiver's replay window (RFC 8613 §7.4): a sliding window of 32 sequence numbers below
//! the highest received, as a bitmap; and the restart rule of RFC 8613 Appendix B.1.2 without
//! a write per message ([`HighWater`]).

use crate::Error;

/// Width of the replay window in sequence numbers.
pub const WINDOW: u64 = 32;

/// Which sequence numbers a recipient has accepted. Checking and accepting are separate so a
/// message marks its number only after it has been verified.
///
/// Across restarts, either persist [`ReplayWindow::state`] after each accepted message and
/// restore it with [`ReplayWindow::from_state`], or (no write per message) persist a
/// [`HighWater`] mark every N numbers and restore with [`ReplayWindow::after_restart`]: every
/// number at or below the mark + N is then refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplayWindow {
    /// One more than the highest accepted number (0: nothing accepted yet).
    next: u64,
    /// Bit `i` set: number `next - 1 - i` was accepted.
    seen: u32,
    /// Every number below it is refused as a replay (set after a restart).
    floor: u64,
}

impl ReplayWindow {
    /// An empty window: every number is fresh.
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            next: 0,
            seen: 0,
            floor: 0,
        }
    }

    /// The window from a persisted state (`(next, seen)` as returned by [`state`](Self::state)).
    pub const fn from_state(next: u64, seen: u32) -> ReplayWindow {
        ReplayWindow {
            next,
            seen,
            floor: 0,
        }
    }

    /// The window after a restart whose last persisted high-water mark was `mark`, persisted
    /// every `every` numbers ([`HighWater`]): every number at or below `mark + every` is
    /// refused as a replay ([`Error::Replay`]), whether or not it was accepted before.
    pub const fn after_restart(mark: u64, every: u64) -> ReplayWindow {
        let floor = mark.saturating_add(every).saturating_add(1);
        ReplayWindow {
            next: floor,
            seen: 0,
            floor,
        }
    }

    /// Numbers below this are refused whatever the bitmap says (0 unless restored by
    /// [`after_restart`](Self::after_restart)).
    pub const fn floor(&self) -> u64 {
        self.floor
    }

    /// The state to persist: one more than the highest accepted number, and the bitmap.
    pub const fn state(&self) -> (u64, u32) {
        (self.next, self.seen)
    }

    /// Whether `seq` would be accepted: [`Error::Replay`] if it was, [`Error::Stale`] if it is
    /// below the window.
    pub fn check(&self, seq: u64) -> Result<(), Error> {
        if seq < self.floor {
            return Err(Error::Replay);
        }
        if seq >= self.next {
            return Ok(());
        }
        let d = self.next - 1 - seq;
        if d >= WINDOW {
            Err(Error::Stale)
        } else if self.seen & (1 << d) != 0 {
            Err(Error::Replay)
        } else {
            Ok(())
        }
    }

    /// Marks `seq` accepted (call after [`check`](Self::check) and verification succeeded).
    pub fn accept(&mut self, seq: u64) {
        if seq >= self.next {
            let shift = seq + 1 - self.next;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.next = seq + 1;
        } else {
            let d = self.next - 1 - seq;
            if d < WINDOW {
                self.seen |= 1 << d;
            }
        }
    }
}

/// When to persist a high-water mark so that restarts need no write per message (RFC 8613
/// Appendix B.1.1 and B.1.2): a mark is written when a number reaches the last mark + N, so
/// every number ever used or accepted is below the last mark written + N. After a restart,
/// a sender starts at the mark + N + 1 ([`HighWater::resume`]) and a recipient refuses every
/// number at or below the mark + N ([`ReplayWindow::after_restart`]). Writes: about one per
/// N numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HighWater {
    every: u64,
    /// The mark last persisted (`None`: nothing yet).
    mark: Option<u64>,
}

impl HighWater {
    /// Marks every `every` numbers (at least 1), the last one persisted being `mark`.
    pub const fn new(every: u64, mark: Option<u64>) -> HighWater {
        HighWater {
            every: if every == 0 { 1 } else { every },
            mark,
        }
    }

    /// N.
    pub const fn every(&self) -> u64 {
        self.every
    }

    /// The mark last persisted.
    pub const fn mark(&self) -> Option<u64> {
        self.mark
    }

    /// A sender's first number after a restart: above everything it may have used.
    pub const fn resume(&self) -> u64 {
        match self.mark {
            Some(m) => m.saturating_add(self.every).saturating_add(1),
            None => 0,
        }
    }

    /// Number `seq` is about to be used (a sender) or was just accepted (a recipient): the new
    /// mark to persist BEFORE going on, or `None` when the last one still covers `seq`. Call
    /// [`HighWater::persisted`] once it is written.
    pub fn needs(&self, seq: u64) -> Option<u64> {
        match self.mark {
            Some(m) if seq < m.saturating_add(self.every) => None,
            _ => Some(seq),
        }
    }

    /// `mark` is on stable storage.
    pub fn persisted(&mut self, mark: u64) {
        self.mark = Some(self.mark.map_or(mark, |m| m.max(mark)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_replay_then_out_of_order_then_stale() {
        let mut w = ReplayWindow::new();
        for s in [0u64, 1, 5] {
            w.check(s).unwrap();
            w.accept(s);
        }
        assert_eq!(w.check(5), Err(Error::Replay));
        assert_eq!(w.check(0), Err(Error::Replay));
        assert_eq!(w.check(3), Ok(()), "a late but unseen number is fine");
        w.accept(3);
        assert_eq!(w.check(3), Err(Error::Replay));
        w.accept(100);
        assert_eq!(
            w.check(68),
            Err(Error::Stale),
            "100 - 68 = 32 is outside the window"
        );
        assert_eq!(w.check(69), Ok(()));
        assert_eq!(w.check(100), Err(Error::Replay));
        let (n, s) = w.state();
        let back = ReplayWindow::from_state(n, s);
        assert_eq!(
            back.check(100),
            Err(Error::Replay),
            "a restored window keeps refusing"
        );
        assert_eq!(back.check(101), Ok(()));
    }

    #[test]
    fn a_mark_every_n_covers_every_number_accepted_before_a_restart() {
        // Accept 0..1000 in order with a mark every 64: about 1000 / 64 writes.
        let mut hw = HighWater::new(64, None);
        let mut w = ReplayWindow::new();
        let mut writes = 0;
        for s in 0..1000u64 {
            w.check(s).unwrap();
            w.accept(s);
            if let Some(m) = hw.needs(s) {
                hw.persisted(m);
                writes += 1;
            }
        }
        assert_eq!(writes, 16, "one write per 64 numbers (0, 64, ..., 960)");
        // Restarted with only the last mark: every number accepted is refused as a replay,
        // and so is every number up to the mark + N (it may have been accepted).
        let mark = hw.mark().unwrap();
        assert_eq!(mark, 960);
        let back = ReplayWindow::after_restart(mark, hw.every());
        for s in 0..=mark + 64 {
            assert_eq!(back.check(s), Err(Error::Replay), "{s}");
        }
        assert_eq!(back.check(mark + 65), Ok(()));
        assert_eq!(back.floor(), mark + 65);
        // Out of order after the restart: still a window above the floor.
        let mut back = back;
        back.accept(mark + 70);
        assert_eq!(back.check(mark + 66), Ok(()));
        assert_eq!(back.check(mark + 70), Err(Error::Replay));
        // A sender resumes above everything it may have used.
        assert_eq!(hw.resume(), mark + 65);
        assert_eq!(HighWater::new(64, None).resume(), 0);
        // A jump (an edge's new boot epoch) writes at once.
        assert_eq!(hw.needs(1 << 24), Some(1 << 24));
        assert_eq!(hw.needs(mark + 63), None);
    }
}
