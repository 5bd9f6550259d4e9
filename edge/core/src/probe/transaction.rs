//! Client/server transactions: a script of steps, each sending bytes and expecting the answer
//! to start with given bytes (e.g. Redis `PING\r\n` → `+PONG`, a PostgreSQL SSLRequest → `N`).
//!
//! [`ExpectPrefix`] is fed the answer in chunks of any size and decides as soon as it can:
//! the first differing byte is a mismatch at once, without waiting for more. An empty
//! expectation is met at once (the step only sends). Bytes after the prefix in the same
//! chunk belong to the same answer and are not carried over to the next step.

/// How far a step's answer has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StepProgress {
    /// The answer so far is a prefix of the expectation: read more.
    NeedMore,
    /// The expectation is met; `used` bytes of the last chunk completed it.
    Matched {
        /// Bytes of the last chunk that belong to the expectation.
        used: usize,
    },
    /// The answer differs from the expectation at byte `at` (counted over the whole answer).
    Mismatch {
        /// Offset of the first differing byte.
        at: usize,
    },
}

/// Matches the start of an answer against an expected prefix, across chunks.
#[derive(Debug, Clone, Copy)]
pub struct ExpectPrefix<'e> {
    expect: &'e [u8],
    matched: usize,
    failed: Option<usize>,
}

impl<'e> ExpectPrefix<'e> {
    /// A matcher for `expect`.
    pub fn new(expect: &'e [u8]) -> Self {
        ExpectPrefix {
            expect,
            matched: 0,
            failed: None,
        }
    }

    /// The state without feeding anything (an empty expectation is met at once).
    pub fn progress(&self) -> StepProgress {
        if let Some(at) = self.failed {
            StepProgress::Mismatch { at }
        } else if self.matched == self.expect.len() {
            StepProgress::Matched { used: 0 }
        } else {
            StepProgress::NeedMore
        }
    }

    /// Feed the next chunk of the answer.
    pub fn feed(&mut self, data: &[u8]) -> StepProgress {
        if self.failed.is_some() || self.matched == self.expect.len() {
            return self.progress();
        }
        let want = &self.expect[self.matched..];
        let n = want.len().min(data.len());
        match want[..n].iter().zip(&data[..n]).position(|(a, b)| a != b) {
            Some(i) => {
                self.failed = Some(self.matched + i);
                StepProgress::Mismatch {
                    at: self.matched + i,
                }
            }
            None => {
                self.matched += n;
                if self.matched == self.expect.len() {
                    StepProgress::Matched { used: n }
                } else {
                    StepProgress::NeedMore
                }
            }
        }
    }

    /// Bytes of the expectation seen so far.
    pub fn matched(&self) -> usize {
        self.matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_across_chunks() {
        let mut m = ExpectPrefix::new(b"+PONG");
        assert_eq!(m.feed(b"+P"), StepProgress::NeedMore);
        assert_eq!(m.feed(b"O"), StepProgress::NeedMore);
        assert_eq!(m.feed(b"NG\r\n"), StepProgress::Matched { used: 2 });
        assert_eq!(m.feed(b"more"), StepProgress::Matched { used: 0 });
    }

    #[test]
    fn mismatch_is_immediate_and_sticky() {
        let mut m = ExpectPrefix::new(b"+PONG");
        assert_eq!(m.feed(b"+P"), StepProgress::NeedMore);
        assert_eq!(m.feed(b"x"), StepProgress::Mismatch { at: 2 });
        assert_eq!(m.feed(b"ONG"), StepProgress::Mismatch { at: 2 });
        let mut m = ExpectPrefix::new(b"N");
        assert_eq!(m.feed(b"S"), StepProgress::Mismatch { at: 0 });
    }

    #[test]
    fn empty_expectation_is_met_at_once() {
        let m = ExpectPrefix::new(b"");
        assert_eq!(m.progress(), StepProgress::Matched { used: 0 });
    }

    #[test]
    fn every_split_gives_the_same_answer() {
        let expect = b"-ERR unknown";
        for answer in [
            &b"-ERR unknown command"[..],
            b"-ERR unk",
            b"+OK",
            b"-ERR unknowN",
        ] {
            let whole = ExpectPrefix::new(expect).feed(answer);
            for split in 0..=answer.len() {
                let mut m = ExpectPrefix::new(expect);
                let a = m.feed(&answer[..split]);
                let b = m.feed(&answer[split..]);
                let r = if matches!(a, StepProgress::NeedMore) {
                    b
                } else {
                    a
                };
                match (whole, r) {
                    (StepProgress::Matched { .. }, StepProgress::Matched { .. }) => {}
                    (x, y) => assert_eq!(x, y, "split {split} of {answer:?}"),
                }
            }
        }
    }
}
