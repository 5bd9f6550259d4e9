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
        Summariser { len_s: len_s.max(1), open: Vec::new() }
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
            Some(i) => Some(core::mem::replace(&mut self.open[i], Summary::new(result.probe, start, len))),
            None => {
                self.open.push(Summary::new(result.probe, start, len)).map_err(|_| TooManyProbes)?;
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
        self.open.iter().map(|s| s.start_s + u32::from(self.len_s)).min()
    }

    /// Forget the open window of `probe` (the probe was removed from the configuration).
    pub fn remove(&mut self, probe: ProbeId) -> Option<Summary<N>> {
        let i = self.open.iter().position(|s| s.probe == probe)?;
        Some(self.open.swap_remove(i))
    }
}
