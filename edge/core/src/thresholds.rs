//! Local threshold evaluation on the edge: every result is checked against the rules of its
//! probe at once, with or without a broker, and a crossing becomes an [`Event`] (which the
//! uplink sends before summaries) and a local action (a log line on Linux, an LED on boards).

use heapless::Vec;
use qos_wire::event::Event;
use qos_wire::ids::ProbeId;
use qos_wire::outcome::ProbeResult;
use qos_wire::threshold::{Sample, ThresholdRule, ThresholdState};

/// The rules of an edge (at most `R`), each with its state.
#[derive(Debug, Clone, Default)]
pub struct Thresholds<const R: usize> {
    rules: Vec<(ProbeId, ThresholdRule, ThresholdState), R>,
}

/// More rules than capacity, or an invalid rule (its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RulesError {
    /// More than `R` rules.
    TooMany,
    /// Rule number `.0` is invalid.
    Invalid(usize),
}

impl<const R: usize> Thresholds<R> {
    /// No rules.
    pub const fn new() -> Self {
        Thresholds { rules: Vec::new() }
    }

    /// Replace the rules (index in the iteration = the rule number carried by events). All
    /// states start clear. On error the old rules stay.
    pub fn set<I: IntoIterator<Item = (ProbeId, ThresholdRule)>>(
        &mut self,
        rules: I,
    ) -> Result<(), RulesError> {
        let mut next = Vec::new();
        for (i, (probe, rule)) in rules.into_iter().enumerate() {
            rule.validate().map_err(|_| RulesError::Invalid(i))?;
            next.push((probe, rule, ThresholdState::new()))
                .map_err(|_| RulesError::TooMany)?;
        }
        self.rules = next;
        Ok(())
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule is raised now.
    pub fn any_active(&self) -> bool {
        self.rules.iter().any(|(_, _, s)| s.is_active())
    }

    /// Evaluate `result` (which finished at `at_ms`) against the rules of its probe; returns the
    /// crossings as events (at most `E`; a rule set that can cross more per result than that
    /// is a configuration error the caller sizes against).
    pub fn observe<const E: usize>(&mut self, result: &ProbeResult, at_ms: u64) -> Vec<Event, E> {
        let sample = Sample::from(result);
        let mut events = Vec::new();
        for (i, (probe, rule, state)) in self.rules.iter_mut().enumerate() {
            if *probe != result.probe {
                continue;
            }
            if let Some(c) = state.observe(rule, &sample) {
                let _ = events.push(Event::from_crossing(*probe, i as u8, rule.metric, c, at_ms));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_wire::outcome::{ErrorClass, PhaseTimings};
    use qos_wire::phase::Phase;
    use qos_wire::threshold::Metric;

    fn result(probe: u16, first_byte: Option<u32>) -> ProbeResult {
        let mut phases = PhaseTimings::new();
        if let Some(t) = first_byte {
            phases.set(Phase::FirstByte, t);
        }
        ProbeResult {
            probe: ProbeId(probe),
            at_ms: 0,
            phases,
            error: first_byte.is_none().then_some(ErrorClass::Timeout),
            error_after_us: first_byte.is_none().then_some(1),
            detail: 0,
            redirects: 0,
        }
    }

    #[test]
    fn crossings_become_events_with_their_rule_number() {
        let mut t: Thresholds<4> = Thresholds::new();
        let latency = ThresholdRule {
            metric: Metric::Phase(Phase::FirstByte),
            raise: 100,
            clear: 50,
            k: 2,
            n: 3,
        };
        let avail = ThresholdRule {
            metric: Metric::Availability,
            raise: 0,
            clear: 0,
            k: 2,
            n: 2,
        };
        t.set([
            (ProbeId(1), latency),
            (ProbeId(1), avail),
            (ProbeId(2), avail),
        ])
        .unwrap();
        assert!(t.observe::<4>(&result(1, Some(150)), 1).is_empty());
        let ev = t.observe::<4>(&result(1, Some(200)), 2);
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].rule, ev[0].raised, ev[0].value, ev[0].at_ms),
            (0, true, 200, 2)
        );
        assert!(t.any_active());
        // failures of probe 1 raise rule 1, never rule 2 (probe 2)
        assert!(t.observe::<4>(&result(1, None), 3).is_empty());
        let ev = t.observe::<4>(&result(1, None), 4);
        assert_eq!(
            (ev.len(), ev[0].rule, ev[0].metric),
            (1, 1, Metric::Availability)
        );
        // recovery clears both
        t.observe::<4>(&result(1, Some(10)), 5);
        let ev = t.observe::<4>(&result(1, Some(10)), 6);
        assert_eq!(ev.iter().filter(|e| !e.raised).count(), 2);
        assert!(!t.any_active());
    }

    #[test]
    fn bad_rules_keep_the_old_set() {
        let mut t: Thresholds<1> = Thresholds::new();
        let ok = ThresholdRule {
            metric: Metric::Availability,
            raise: 0,
            clear: 0,
            k: 1,
            n: 1,
        };
        t.set([(ProbeId(1), ok)]).unwrap();
        let bad = ThresholdRule { k: 3, n: 2, ..ok };
        assert_eq!(t.set([(ProbeId(1), bad)]), Err(RulesError::Invalid(0)));
        assert_eq!(
            t.set([(ProbeId(1), ok), (ProbeId(2), ok)]),
            Err(RulesError::TooMany)
        );
        assert_eq!(t.len(), 1);
    }
}
