//! When each probe runs: a fixed grid per probe (no drift), a stable per-probe offset that
//! spreads probes of equal interval, bounded concurrency, and a sooner re-probe after a failure
//! to confirm it (so one lost packet is not an outage).
//!
//! Times are Unix milliseconds from the driver's clock.

use heapless::Vec;
use qos_wire::ids::ProbeId;

/// How one probe is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cadence {
    /// The probe.
    pub id: ProbeId,
    /// Interval between runs, ms (≥ 1).
    pub interval_ms: u32,
    /// After a failure, run again this much sooner to confirm (0: no confirmation run).
    pub confirm_ms: u32,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    cadence: Cadence,
    offset_ms: u64,
    next_ms: u64,
    running: bool,
    /// The next run is a confirmation run.
    confirming: bool,
}

/// Scheduling state for up to `P` probes.
#[derive(Debug, Clone)]
pub struct Scheduler<const P: usize> {
    slots: Vec<Slot, P>,
    max_running: u8,
    seed: u64,
}

/// More probes than the scheduler's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Full;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<const P: usize> Scheduler<P> {
    /// At most `max_running` probes at once (≥ 1). `seed` (e.g. the edge id) decides the
    /// per-probe offsets, so edges with the same configuration do not probe in lockstep.
    pub fn new(max_running: u8, seed: u64) -> Self {
        Scheduler {
            slots: Vec::new(),
            max_running: max_running.max(1),
            seed,
        }
    }

    /// Offset of a probe on its grid: stable, below a tenth of the interval and below 5 s.
    fn offset(&self, c: &Cadence) -> u64 {
        let span = (u64::from(c.interval_ms) / 10).min(5_000);
        if span == 0 {
            0
        } else {
            mix(self.seed ^ (u64::from(c.id.0) << 32)) % span
        }
    }

    fn next_on_grid(interval: u64, offset: u64, after_ms: u64) -> u64 {
        // smallest k·interval + offset strictly after `after_ms`
        let base = after_ms.saturating_sub(offset);
        (base / interval + 1) * interval + offset
    }

    /// Replace the probe set. Probes that stay (same id and interval) keep their place on the
    /// grid; new ones start at their next grid point after `now_ms`.
    pub fn set<I: IntoIterator<Item = Cadence>>(
        &mut self,
        probes: I,
        now_ms: u64,
    ) -> Result<(), Full> {
        let mut next: Vec<Slot, P> = Vec::new();
        for c in probes {
            let c = Cadence {
                interval_ms: c.interval_ms.max(1),
                ..c
            };
            let kept = self
                .slots
                .iter()
                .find(|s| s.cadence.id == c.id && s.cadence.interval_ms == c.interval_ms);
            let slot = match kept {
                Some(s) => Slot { cadence: c, ..*s },
                None => {
                    let offset_ms = self.offset(&c);
                    let next_ms = Self::next_on_grid(u64::from(c.interval_ms), offset_ms, now_ms);
                    Slot {
                        cadence: c,
                        offset_ms,
                        next_ms,
                        running: false,
                        confirming: false,
                    }
                }
            };
            next.push(slot).map_err(|_| Full)?;
        }
        self.slots = next;
        Ok(())
    }

    /// Number of probes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no probe is scheduled.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A probe due at `now_ms`, if concurrency allows; it is marked running. Returns the probe
    /// and the time it was due (the start of its slot, for the result's timestamp).
    pub fn next_due(&mut self, now_ms: u64) -> Option<(ProbeId, u64)> {
        let running = self.slots.iter().filter(|s| s.running).count();
        if running >= usize::from(self.max_running) {
            return None;
        }
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| !s.running && s.next_ms <= now_ms)
            .min_by_key(|s| s.next_ms)?;
        slot.running = true;
        Some((slot.cadence.id, slot.next_ms))
    }

    /// Probe `id` finished at `now_ms`, successfully or not. The next run goes on the grid
    /// (missed slots are skipped, not run in a burst), or sooner to confirm a failure.
    pub fn finished(&mut self, id: ProbeId, ok: bool, now_ms: u64) {
        let Some(s) = self.slots.iter_mut().find(|s| s.cadence.id == id) else {
            return;
        };
        s.running = false;
        let interval = u64::from(s.cadence.interval_ms);
        let on_grid = Self::next_on_grid(interval, s.offset_ms, now_ms);
        let confirm = u64::from(s.cadence.confirm_ms);
        if !ok && !s.confirming && confirm > 0 && now_ms + confirm < on_grid {
            s.confirming = true;
            s.next_ms = now_ms + confirm;
        } else {
            s.confirming = false;
            s.next_ms = on_grid;
        }
    }

    /// Earliest time a probe that is not running becomes due.
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| !s.running)
            .map(|s| s.next_ms)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u16, interval_ms: u32, confirm_ms: u32) -> Cadence {
        Cadence {
            id: ProbeId(id),
            interval_ms,
            confirm_ms,
        }
    }

    #[test]
    fn runs_stay_on_the_grid_without_drift() {
        let mut s: Scheduler<4> = Scheduler::new(4, 1);
        s.set([c(1, 10_000, 0)], 1_000_000).unwrap();
        let first = s.next_deadline().unwrap();
        let offset = first % 10_000;
        assert!(offset < 1_000, "offset below a tenth of the interval");
        assert!(first > 1_000_000);
        let mut due = first;
        for _ in 0..100 {
            assert_eq!(s.next_due(due - 1), None);
            let (id, at) = s.next_due(due).unwrap();
            assert_eq!((id, at), (ProbeId(1), due));
            // each run takes a varying time; the next start stays on the grid
            s.finished(ProbeId(1), true, due + 1 + (due % 7) * 100);
            due += 10_000;
            assert_eq!(s.next_deadline(), Some(due));
        }
    }

    #[test]
    fn a_slow_run_skips_missed_slots() {
        let mut s: Scheduler<4> = Scheduler::new(4, 1);
        s.set([c(1, 1_000, 0)], 0).unwrap();
        let (_, at) = s.next_due(10_000).unwrap();
        s.finished(ProbeId(1), true, at + 3_500);
        let next = s.next_deadline().unwrap();
        assert!(
            next > at + 3_500 && next <= at + 4_000 + 100,
            "{next} after {at}"
        );
        assert_eq!(next % 1_000, at % 1_000);
    }

    #[test]
    fn failures_are_confirmed_sooner_once() {
        let mut s: Scheduler<4> = Scheduler::new(4, 1);
        s.set([c(1, 60_000, 5_000)], 0).unwrap();
        let (_, at) = s.next_due(u64::MAX / 2).unwrap();
        s.finished(ProbeId(1), false, at + 100);
        assert_eq!(s.next_deadline(), Some(at + 5_100), "confirmation run");
        s.next_due(at + 5_100).unwrap();
        s.finished(ProbeId(1), false, at + 5_200);
        assert_eq!(
            s.next_deadline().unwrap() % 60_000,
            at % 60_000,
            "back on the grid after confirming"
        );
    }

    #[test]
    fn concurrency_is_bounded() {
        let mut s: Scheduler<4> = Scheduler::new(2, 9);
        s.set([c(1, 1_000, 0), c(2, 1_000, 0), c(3, 1_000, 0)], 0)
            .unwrap();
        let now = 100_000;
        let a = s.next_due(now).unwrap();
        let b = s.next_due(now).unwrap();
        assert_ne!(a.0, b.0);
        assert_eq!(s.next_due(now), None, "two running");
        s.finished(a.0, true, now);
        assert!(s.next_due(now).is_some());
    }

    #[test]
    fn reconfiguration_keeps_unchanged_probes_in_place() {
        let mut s: Scheduler<4> = Scheduler::new(4, 3);
        s.set([c(1, 10_000, 0), c(2, 10_000, 0)], 0).unwrap();
        let before: std::vec::Vec<u64> = s.slots.iter().map(|x| x.next_ms).collect();
        s.set([c(2, 10_000, 0), c(3, 5_000, 0)], 3_000).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.slots[0].next_ms, before[1], "probe 2 kept its slot");
        assert!(s.slots[1].next_ms > 3_000);
        let offsets: std::vec::Vec<u64> = (1..=8).map(|i| s.offset(&c(i, 10_000, 0))).collect();
        assert!(
            offsets.windows(2).any(|w| w[0] != w[1]),
            "probes are spread"
        );
        assert_eq!(s.set((1..=5).map(|i| c(i, 1000, 0)), 0), Err(Full));
    }
}
