//! The receiver's replay window (RFC 8613 §7.4): a sliding window of 32 sequence numbers below
//! the highest received, as a bitmap.

use crate::Error;

/// Width of the replay window in sequence numbers.
pub const WINDOW: u64 = 32;

/// Which sequence numbers a recipient has accepted. Checking and accepting are separate so a
/// message marks its number only after it has been verified.
///
/// Persist [`ReplayWindow::state`] after each accepted message and restore it with
/// [`ReplayWindow::from_state`] after a restart: numbers up to the highest accepted stay
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplayWindow {
    /// One more than the highest accepted number (0: nothing accepted yet).
    next: u64,
    /// Bit `i` set: number `next - 1 - i` was accepted.
    seen: u32,
}

impl ReplayWindow {
    /// An empty window: every number is fresh.
    pub const fn new() -> ReplayWindow {
        ReplayWindow { next: 0, seen: 0 }
    }

    /// The window from a persisted state (`(next, seen)` as returned by [`state`](Self::state)).
    pub const fn from_state(next: u64, seen: u32) -> ReplayWindow {
        ReplayWindow { next, seen }
    }

    /// The state to persist: one more than the highest accepted number, and the bitmap.
    pub const fn state(&self) -> (u64, u32) {
        (self.next, self.seen)
    }

    /// Whether `seq` would be accepted: [`Error::Replay`] if it was, [`Error::Stale`] if it is
    /// below the window.
    pub fn check(&self, seq: u64) -> Result<(), Error> {
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
}
