//! Window summaries: accumulate probe results per probe into windows aligned to multiples of
//! the window length (so windows of different edges line up), and hand out each window when it
//! ends.

use heapless::Vec;
use qos_wire::ids::ProbeId;
use qos_wire::outcome::ProbeResult;
use qos_wire::summary::Summary;

/// Open windows for up to `P` probes, each with a sketch of `N` buckets.
#[derive(Debug, Clone)]
pub struct Summariser<const P: usize, const N: usize> {
    len_s: u16,
    open: Vec<Summary<N>, P>,
}

/// Too many probes for the summariser's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TooManyProbes;

impl<const P: usize, const N: usize> Summariser<P, N> {
    /// Windows of `len_s` seconds (at least 1).
    pub fn new(len_s: u16) -> Self {
        Summariser {
            len_s: len_s.max(1),
            open: Vec::new(),
        }
    }

    /// Window length in seconds.
    pub fn window_len(&self) -> u16 {
        self.len_s
    }

    fn window_start(&self, unix_s: u32) -> u32 {
        unix_s - unix_s % u32::from(self.len_s)
    }

    /// Account `result`, which started at `unix_s`. If that closes the probe's previous
    /// window (a result of a later window arrived), the closed summary is returned.
    pub fn record(
        &mut self,
        unix_s: u32,
        result: &ProbeResult,
    ) -> Result<Option<Summary<N>>, TooManyProbes> {
        let start = self.window_start(unix_s);
        let len = self.len_s;
        let closed = match self.open.iter_mut().position(|s| s.probe == result.probe) {
            Some(i) if self.open[i].start_s == start => None,
            Some(i) if self.open[i].start_s > start => return Ok(None), // late result of a closed window
            Some(i) => Some(core::mem::replace(
                &mut self.open[i],
                Summary::new(result.probe, start, len),
            )),
            None => {
                self.open
                    .push(Summary::new(result.probe, start, len))
                    .map_err(|_| TooManyProbes)?;
                None
            }
        };
        if let Some(s) = self.open.iter_mut().find(|s| s.probe == result.probe) {
            s.record(result);
        }
        Ok(closed)
    }

    /// Hand out the first window that has ended by `unix_s` (call until `None`).
    pub fn poll(&mut self, unix_s: u32) -> Option<Summary<N>> {
        let len = u32::from(self.len_s);
        let i = self.open.iter().position(|s| s.start_s + len <= unix_s)?;
        Some(self.open.swap_remove(i))
    }

    /// When the next open window ends (Unix seconds).
    pub fn next_deadline(&self) -> Option<u32> {
        self.open
            .iter()
            .map(|s| s.start_s + u32::from(self.len_s))
            .min()
    }

    /// Forget the open window of `probe` (the probe was removed from the configuration).
    pub fn remove(&mut self, probe: ProbeId) -> Option<Summary<N>> {
        let i = self.open.iter().position(|s| s.probe == probe)?;
        Some(self.open.swap_remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_wire::outcome::{ErrorClass, PhaseTimings};
    use qos_wire::phase::Phase;

    fn result(probe: u16, total: u32, ok: bool) -> ProbeResult {
        let mut phases = PhaseTimings::new();
        phases.set(Phase::Connect, total / 2);
        if ok {
            phases.set(Phase::Total, total);
        }
        ProbeResult {
            probe: ProbeId(probe),
            at_ms: 0,
            phases,
            error: (!ok).then_some(ErrorClass::Timeout),
            error_after_us: (!ok).then_some(total),
            detail: 0,
            redirects: 0,
        }
    }

    #[test]
    fn windows_are_aligned_and_close_on_time_or_on_a_later_result() {
        let mut s: Summariser<4, 64> = Summariser::new(60);
        assert_eq!(s.record(125, &result(1, 1000, true)).unwrap(), None);
        assert_eq!(s.record(130, &result(1, 2000, false)).unwrap(), None);
        assert_eq!(s.record(170, &result(2, 500, true)).unwrap(), None);
        assert_eq!(s.next_deadline(), Some(180));
        assert!(s.poll(179).is_none());
        // a result of the next window closes probe 1's window at once
        let closed = s.record(181, &result(1, 3000, true)).unwrap().unwrap();
        assert_eq!(
            (closed.start_s, closed.len_s, closed.ok, closed.failed),
            (120, 60, 1, 1)
        );
        assert_eq!(closed.phase(Phase::Total).sum, 1000);
        assert_eq!(closed.errors[ErrorClass::Timeout as usize], 1);
        // probe 2's window closes when its time is up
        let closed = s.poll(180).unwrap();
        assert_eq!((closed.probe, closed.start_s), (ProbeId(2), 120));
        assert!(s.poll(200).is_none());
        // a late result for a closed window is ignored
        assert_eq!(s.record(100, &result(1, 9, true)).unwrap(), None);
        assert_eq!(s.poll(240).unwrap().runs(), 1);
    }

    #[test]
    fn capacity_is_reported() {
        let mut s: Summariser<1, 16> = Summariser::new(10);
        s.record(0, &result(1, 1, true)).unwrap();
        assert_eq!(s.record(0, &result(2, 1, true)), Err(TooManyProbes));
        assert_eq!(s.remove(ProbeId(1)).unwrap().runs(), 1);
        assert!(s.record(0, &result(2, 1, true)).is_ok());
    }
}
