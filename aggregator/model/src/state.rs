//! Service state: the k-of-n quorum over regions, dependency suppression and flapping.
//!
//! - **Quorum**: a service is DOWN only when at least k of its n regions have a bad window;
//!   when the regions without data could still make k, its state is UNKNOWN (never UP);
//!   otherwise it is DEGRADED when some region is bad or the latency objective burns, else UP.
//! - **Suppression**: when every bad region of a service is explained by a down component on
//!   its way from that region (a network path, a shared database), the service's state names
//!   those components in `suppressed_by` and it raises no alarm of its own: the component's
//!   does.
//! - **Flapping** (with hysteresis): a subject whose state changed `flap_threshold` times
//!   within `flap_window_s` is flapping; its notifications are held back until it has been
//!   stable for `stable_windows` consecutive windows, then its current state is announced
//!   once.

use std::collections::VecDeque;

/// The state of a service (or component) in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Every decided region is fine and latency is within objective.
    Up,
    /// Some regions fail (fewer than the quorum), or the latency objective burns.
    Degraded,
    /// At least k of n regions fail.
    Down,
    /// Not enough data to decide.
    Unknown,
}

impl Status {
    /// `"up"`, `"degraded"`, `"down"` or `"unknown"`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Degraded => "degraded",
            Status::Down => "down",
            Status::Unknown => "unknown",
        }
    }

    /// Degraded or down.
    pub fn is_bad(self) -> bool {
        matches!(self, Status::Degraded | Status::Down)
    }
}

/// The k-of-n decision from counts of good, bad and missing regions.
pub fn quorum_status(good: usize, bad: usize, missing: usize, k: usize) -> Status {
    let _ = good;
    if bad >= k {
        Status::Down
    } else if bad + missing >= k {
        Status::Unknown
    } else if bad > 0 {
        Status::Degraded
    } else {
        Status::Up
    }
}

/// A service's state in one window, with its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    /// The service.
    pub service: String,
    /// The window (slot start, Unix seconds).
    pub slot: u64,
    /// The state.
    pub status: Status,
    /// Regions with a good window.
    pub regions_good: Vec<String>,
    /// Regions with a bad window.
    pub regions_bad: Vec<String>,
    /// Regions without data.
    pub regions_missing: Vec<String>,
    /// The k of the quorum.
    pub quorum: usize,
    /// Latency burn rate over the shortest alert window, if a latency objective exists.
    pub latency_burn: Option<f64>,
    /// Down components that explain every bad region: the service is their consequence.
    pub suppressed_by: Vec<String>,
    /// Whether the service is flapping (notifications held).
    pub flapping: bool,
    /// One sentence per fact behind the state.
    pub reasons: Vec<String>,
}

/// A component's state in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentState {
    /// The component.
    pub component: String,
    /// Down (measured by its own probes, or inferred from the services that share it).
    pub down: bool,
    /// Why it is considered down.
    pub reason: Option<String>,
    /// Down components it depends on (it is their consequence).
    pub suppressed_by: Vec<String>,
}

/// A change of flapping state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlapChange {
    /// Nothing changed.
    None,
    /// Started flapping (with the number of changes in the window).
    Started(usize),
    /// Stable again.
    Stopped,
}

/// Flapping detector of one subject.
#[derive(Debug, Clone, Default)]
pub struct Flap {
    changes: VecDeque<u64>,
    flapping: bool,
    quiet: usize,
}

impl Flap {
    /// Whether flapping now.
    pub fn flapping(&self) -> bool {
        self.flapping
    }

    /// State changes seen within the sliding window (at the last observation).
    pub fn recent_changes(&self) -> usize {
        self.changes.len()
    }

    /// Observe one window ending at `at` (`changed`: the state differs from the previous
    /// window's). Enters flapping at `threshold` changes within `window_s`; leaves after
    /// `stable_windows` consecutive windows without a change.
    pub fn observe(
        &mut self,
        at: u64,
        changed: bool,
        window_s: u64,
        threshold: usize,
        stable_windows: usize,
    ) -> FlapChange {
        if changed {
            self.changes.push_back(at);
            self.quiet = 0;
        } else {
            self.quiet += 1;
        }
        while self.changes.front().is_some_and(|&t| t + window_s <= at) {
            self.changes.pop_front();
        }
        if !self.flapping && self.changes.len() >= threshold {
            self.flapping = true;
            return FlapChange::Started(self.changes.len());
        }
        if self.flapping && self.quiet >= stable_windows {
            self.flapping = false;
            return FlapChange::Stopped;
        }
        FlapChange::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum() {
        // 3 regions, k = 2
        assert_eq!(quorum_status(3, 0, 0, 2), Status::Up);
        assert_eq!(quorum_status(2, 1, 0, 2), Status::Degraded);
        assert_eq!(quorum_status(1, 2, 0, 2), Status::Down);
        assert_eq!(quorum_status(1, 1, 1, 2), Status::Unknown);
        assert_eq!(quorum_status(1, 0, 2, 2), Status::Unknown);
        assert_eq!(quorum_status(2, 0, 1, 2), Status::Up);
        assert_eq!(quorum_status(0, 0, 3, 2), Status::Unknown);
    }

    #[test]
    fn flapping_has_hysteresis() {
        let mut f = Flap::default();
        let mut t = 0;
        let mut started = None;
        // alternate every window: the 4th change within 30 min starts flapping
        for i in 0..6 {
            t += 60;
            if let FlapChange::Started(n) = f.observe(t, true, 1800, 4, 5) {
                started.get_or_insert((i, n));
            }
        }
        assert_eq!(started, Some((3, 4)));
        // 4 quiet windows: still flapping; the 5th ends it
        for _ in 0..4 {
            t += 60;
            assert_eq!(f.observe(t, false, 1800, 4, 5), FlapChange::None);
            assert!(f.flapping());
        }
        t += 60;
        assert_eq!(f.observe(t, false, 1800, 4, 5), FlapChange::Stopped);
        // three changes spread over more than the window never flap
        let mut g = Flap::default();
        for i in 0..10u64 {
            assert_eq!(g.observe(i * 700, true, 1800, 4, 5), FlapChange::None);
        }
    }
}
