//! Service level objectives: error budgets and multi-window, multi-burn-rate alerts (as in
//! the SRE workbook, chapter "Alerting on SLOs").
//!
//! Two SLIs per service, both counted in events:
//! - **availability**: the event is a service window with a decided status (quorum), bad when
//!   the service was DOWN; windows whose status is unknown are not events (never good);
//! - **latency**: the event is a successful run, bad when slower than the objective's
//!   threshold (p95 ≤ X over the period ⇔ at most 5 % of runs slower than X).
//!
//! The burn rate over a window is the bad share in it divided by the allowed bad share
//! (`1 − target`): burning at 1 spends exactly the budget over the period. A rule
//! `(long, short, factor, severity)` fires when the burn rate over the long *and* the short
//! window both exceed `factor`, and clears as soon as one of them no longer does (the short
//! window makes that quick once the problem is gone).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How loudly an alert is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Wake someone up.
    Page,
    /// Open a ticket.
    Ticket,
}

impl Severity {
    /// `"page"` or `"ticket"`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multi-window burn-rate rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnAlertRule {
    /// The long window, seconds (e.g. 3600).
    pub long_s: u64,
    /// The short window, seconds (e.g. 300; conventionally 1/12 of the long one).
    pub short_s: u64,
    /// The burn rate both windows must exceed (e.g. 14.4: 2 % of a 30-day budget in 1 h).
    pub factor: f64,
    /// What to raise.
    pub severity: Severity,
}

/// Which indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Sli {
    /// Windows not DOWN.
    Availability,
    /// Runs not slower than the latency threshold.
    Latency,
}

impl Sli {
    /// `"availability"` or `"latency"`.
    pub fn name(self) -> &'static str {
        match self {
            Sli::Availability => "availability",
            Sli::Latency => "latency",
        }
    }
}

/// An error budget over a period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorBudget {
    /// The target, e.g. 0.999.
    pub target: f64,
    /// Events counted (windows with a decided status, or judged runs).
    pub events: u64,
    /// Bad events.
    pub bad: u64,
    /// Bad events allowed: `(1 − target) · events`.
    pub total: f64,
    /// Bad events spent (= `bad`).
    pub consumed: f64,
    /// `total − consumed` (negative when overspent).
    pub remaining: f64,
    /// `remaining / total`, if any event.
    pub remaining_ratio: Option<f64>,
    /// The SLI over the period, `1 − bad / events`, if any event.
    pub sli: Option<f64>,
}

/// The error budget of `events` events of which `bad` were bad, under `target`.
pub fn error_budget(target: f64, events: u64, bad: u64) -> ErrorBudget {
    let total = (1.0 - target) * events as f64;
    let consumed = bad as f64;
    ErrorBudget {
        target,
        events,
        bad,
        total,
        consumed,
        remaining: total - consumed,
        remaining_ratio: (total > 0.0).then(|| (total - consumed) / total),
        sli: (events > 0).then(|| 1.0 - bad as f64 / events as f64),
    }
}

/// Burn rate of `bad` among `events` under `target`; `None` without events.
pub fn burn_rate(target: f64, events: u64, bad: u64) -> Option<f64> {
    (events > 0).then(|| (bad as f64 / events as f64) / (1.0 - target))
}

/// What one slot contributes to the SLIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SliSlot {
    /// The service window: `Some(true)` when bad (DOWN), `Some(false)` when decided and not
    /// down, `None` when unknown.
    pub down: Option<bool>,
    /// Runs judged for latency.
    pub latency_runs: u64,
    /// Of which slower than the threshold.
    pub latency_slow: u64,
}

/// SLI counts per slot of one service, to sum over any window.
#[derive(Debug, Clone, Default)]
pub struct SliLedger {
    slots: BTreeMap<u64, SliSlot>,
}

impl SliLedger {
    /// Record (or replace) a slot.
    pub fn record(&mut self, slot: u64, s: SliSlot) {
        self.slots.insert(slot, s);
    }

    /// Forget slots before `t`.
    pub fn prune(&mut self, t: u64) {
        self.slots = self.slots.split_off(&t);
    }

    /// (events, bad) of `sli` over slots starting in `[end − len, end)`.
    pub fn window(&self, sli: Sli, end: u64, len: u64) -> (u64, u64) {
        let mut ev = 0;
        let mut bad = 0;
        for s in self
            .slots
            .range(end.saturating_sub(len)..end)
            .map(|(_, s)| s)
        {
            match sli {
                Sli::Availability => {
                    if let Some(d) = s.down {
                        ev += 1;
                        bad += u64::from(d);
                    }
                }
                Sli::Latency => {
                    ev += s.latency_runs;
                    bad += s.latency_slow;
                }
            }
        }
        (ev, bad)
    }
}

/// Why an alert is raised: the two windows' figures at the last evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnEvidence {
    /// Burn rate over the long window.
    pub long_burn: f64,
    /// Burn rate over the short window.
    pub short_burn: f64,
    /// (events, bad) in the long window.
    pub long: (u64, u64),
    /// (events, bad) in the short window.
    pub short: (u64, u64),
    /// When evaluated (end of both windows), Unix seconds.
    pub at: u64,
}

/// A raised (or just cleared) burn-rate alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The service.
    pub service: String,
    /// The indicator.
    pub sli: Sli,
    /// The rule.
    pub rule: BurnAlertRule,
    /// When raised.
    pub raised_at: u64,
    /// The evidence at raising.
    pub raised_with: BurnEvidence,
    /// The evidence at the last evaluation (at clearing, for a cleared alert).
    pub last: BurnEvidence,
}

/// A change of alert state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AlertChange {
    /// Both windows now burn above the factor.
    Raised(Alert),
    /// One of them no longer does.
    Cleared(Alert),
}

/// The alert state machine of one service: which (SLI, rule) alerts are active.
#[derive(Debug, Clone, Default)]
pub struct BurnAlerts {
    active: BTreeMap<(Sli, usize), Alert>,
}

impl BurnAlerts {
    /// Alerts currently raised.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    /// Evaluate `rules` for `sli` of `service` (target `target`) on `ledger` at `now`.
    pub fn evaluate(
        &mut self,
        service: &str,
        sli: Sli,
        target: f64,
        rules: &[BurnAlertRule],
        ledger: &SliLedger,
        now: u64,
    ) -> Vec<AlertChange> {
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let long = ledger.window(sli, now, rule.long_s);
            let short = ledger.window(sli, now, rule.short_s);
            let ev = BurnEvidence {
                long_burn: burn_rate(target, long.0, long.1).unwrap_or(0.0),
                short_burn: burn_rate(target, short.0, short.1).unwrap_or(0.0),
                long,
                short,
                at: now,
            };
            let firing = ev.long_burn > rule.factor && ev.short_burn > rule.factor;
            match (self.active.get_mut(&(sli, i)), firing) {
                (None, true) => {
                    let a = Alert {
                        service: service.into(),
                        sli,
                        rule: *rule,
                        raised_at: now,
                        raised_with: ev,
                        last: ev,
                    };
                    self.active.insert((sli, i), a.clone());
                    out.push(AlertChange::Raised(a));
                }
                (Some(a), true) => a.last = ev,
                (Some(_), false) => {
                    if let Some(mut a) = self.active.remove(&(sli, i)) {
                        a.last = ev;
                        out.push(AlertChange::Cleared(a));
                    }
                }
                (None, false) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::default_rules;

    #[test]
    fn budget_math() {
        // 30 days of 1-minute windows at 99.9 %: 43.2 bad windows allowed.
        let b = error_budget(0.999, 43_200, 10);
        assert!((b.total - 43.2).abs() < 1e-9);
        assert!((b.remaining - 33.2).abs() < 1e-9);
        assert!((b.remaining_ratio.unwrap() - 33.2 / 43.2).abs() < 1e-12);
        assert_eq!(burn_rate(0.999, 0, 0), None);
        assert!((burn_rate(0.999, 1000, 1).unwrap() - 1.0).abs() < 1e-9);
    }

    fn ledger(bad_from: u64, bad_to: u64, until: u64) -> SliLedger {
        let mut l = SliLedger::default();
        for slot in (0..until).step_by(60) {
            l.record(
                slot,
                SliSlot {
                    down: Some(slot >= bad_from && slot < bad_to),
                    ..SliSlot::default()
                },
            );
        }
        l
    }

    #[test]
    fn page_needs_both_windows_and_clears_on_the_short_one() {
        let rules = default_rules();
        let mut a = BurnAlerts::default();
        // Six hours fine, then 2 bad minutes: 2/60 in 1 h = 33 × budget, 2/5 in 5 m = 400 ×.
        let l = ledger(6 * 3600, 6 * 3600 + 120, 6 * 3600 + 120);
        let ch = a.evaluate("s", Sli::Availability, 0.999, &rules, &l, 6 * 3600 + 120);
        assert_eq!(ch.len(), 1, "{ch:?}");
        let AlertChange::Raised(al) = &ch[0] else {
            panic!()
        };
        assert_eq!(al.rule.severity, Severity::Page);
        assert_eq!(al.raised_with.short, (5, 2));
        assert_eq!(al.raised_with.long, (60, 2));
        // The ticket rule: 2/360 in 6 h = 5.6 < 6: not raised.
        assert_eq!(a.active().count(), 1);
        // Ten good minutes later the short window is clean: cleared.
        let l = ledger(6 * 3600, 6 * 3600 + 120, 6 * 3600 + 720);
        let ch = a.evaluate("s", Sli::Availability, 0.999, &rules, &l, 6 * 3600 + 720);
        assert!(matches!(&ch[..], [AlertChange::Cleared(c)] if c.last.short == (5, 0)));
        assert_eq!(a.active().count(), 0);
    }

    #[test]
    fn a_short_burst_alone_does_not_page() {
        // A long window with plenty of good data and a burst far below 14.4 overall.
        let rules = [BurnAlertRule {
            long_s: 3600,
            short_s: 300,
            factor: 14.4,
            severity: Severity::Page,
        }];
        let mut a = BurnAlerts::default();
        let mut l = SliLedger::default();
        for slot in (0..3600).step_by(60) {
            l.record(
                slot,
                SliSlot {
                    down: Some(false),
                    latency_runs: 100,
                    latency_slow: u64::from(slot >= 3300) * 60,
                },
            );
        }
        // latency target 0.95: short 60 % slow = 12×... long 300/6000 = 5 % = 1×.
        let ch = a.evaluate("s", Sli::Latency, 0.95, &rules, &l, 3600);
        assert!(ch.is_empty());
    }
}
