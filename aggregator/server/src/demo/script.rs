//! The fault script: a warm-up, then four faults, each held and followed by a recovery.
//!
//! | fault | what | expected top cause |
//! |---|---|---|
//! | 1 | the database takes [`DB_SLOW_MS`] longer per query | `db` |
//! | 2 | region west's DNS answers SERVFAIL | `dns-west` |
//! | 3 | region east's path adds [`PATH_DELAY_MS`] to every answer | `path-east` |
//! | 4 | broker-1 is killed with SIGKILL, started again after the hold | (delivery: east's edges fail over to broker-2 and come back; nothing is lost) |
//!
//! Without `--duration`: warm-up 30 s, each fault held 60 s, recovery 30 s, repeated until
//! SIGINT/SIGTERM. With `--duration D`: warm-up `clamp(D/5, 8, 30)` s, the rest shared by the
//! four faults, 60 % held and 40 % recovery each (serve's engine needs a few windows to open an
//! incident, and a few good ones to resolve it).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{DemoError, Running};

/// Shortest `--duration` accepted.
pub const MIN_DURATION_S: u64 = 30;
/// Extra time per database query during fault 1.
pub const DB_SLOW_MS: u64 = 120;
/// Added latency on region east's path during fault 3.
pub const PATH_DELAY_MS: u64 = 150;

/// The phases' lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Before the first fault.
    pub warmup: Duration,
    /// How long each fault is held.
    pub hold: Duration,
    /// Recovery after each fault.
    pub recovery: Duration,
    /// Repeat the faults until stopped.
    pub repeat: bool,
}

impl Plan {
    /// The plan for `--duration` (`None`: run until stopped).
    pub fn new(duration: Option<u64>) -> Result<Plan, DemoError> {
        match duration {
            None => Ok(Plan {
                warmup: Duration::from_secs(30),
                hold: Duration::from_secs(60),
                recovery: Duration::from_secs(30),
                repeat: true,
            }),
            Some(d) if d < MIN_DURATION_S => Err(DemoError::TooShort(d)),
            Some(d) => {
                let total = d as f64;
                let warmup = (total / 5.0).clamp(8.0, 30.0);
                let per_fault = (total - warmup) / 4.0;
                Ok(Plan {
                    warmup: Duration::from_secs_f64(warmup),
                    hold: Duration::from_secs_f64(per_fault * 0.6),
                    recovery: Duration::from_secs_f64(per_fault * 0.4),
                    repeat: false,
                })
            }
        }
    }
}

/// Waits `d` unless the demo is stopped first; `false` when stopped.
fn hold(run: &mut Running, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if run.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        for p in run.edges.iter_mut() {
            if !p.running() && !run.exited.iter().any(|n| n == p.name()) {
                run.exited.push(p.name().to_string());
                run.console.say(&format!(
                    "warning: edge {} has exited; see its log",
                    p.name()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !run.shutdown.load(Ordering::SeqCst)
}

/// Runs the script on `run` until it ends or the demo is stopped.
pub fn run(plan: &Plan, run: &mut Running) -> Result<(), DemoError> {
    let say = |run: &Running, s: &str| run.console.say(s);
    say(
        run,
        &format!(
            "warm-up {:.0} s, then 4 faults held {:.1} s each with {:.1} s recovery{}",
            plan.warmup.as_secs_f64(),
            plan.hold.as_secs_f64(),
            plan.recovery.as_secs_f64(),
            if plan.repeat {
                ", repeated until Ctrl-C"
            } else {
                ""
            }
        ),
    );
    if !hold(run, plan.warmup) {
        return Ok(());
    }
    let secs = plan.hold.as_secs_f64();
    loop {
        // 1: the database.
        say(run, &format!("fault 1/4: the database slows down (+{DB_SLOW_MS} ms per query) for {secs:.1} s; expected cause: db"));
        run.db.slow_ms.store(DB_SLOW_MS, Ordering::SeqCst);
        let go_on = hold(run, plan.hold);
        run.db.slow_ms.store(0, Ordering::SeqCst);
        say(run, "fault 1/4 over: the database is back to normal");
        if !go_on || !hold(run, plan.recovery) {
            return Ok(());
        }
        // 2: DNS in region west.
        say(run, &format!("fault 2/4: DNS fails in region west (SERVFAIL) for {secs:.1} s; expected cause: dns-west"));
        run.dns[1].fail.store(true, Ordering::SeqCst);
        let go_on = hold(run, plan.hold);
        run.dns[1].fail.store(false, Ordering::SeqCst);
        say(run, "fault 2/4 over: DNS in region west answers again");
        if !go_on || !hold(run, plan.recovery) {
            return Ok(());
        }
        // 3: region east's path.
        say(run, &format!("fault 3/4: region east's path gets +{PATH_DELAY_MS} ms latency for {secs:.1} s; expected cause: path-east"));
        run.paths[0].delay_ms.store(PATH_DELAY_MS, Ordering::SeqCst);
        let go_on = hold(run, plan.hold);
        run.paths[0].delay_ms.store(0, Ordering::SeqCst);
        say(run, "fault 3/4 over: region east's path is clean again");
        if !go_on || !hold(run, plan.recovery) {
            return Ok(());
        }
        // 4: a broker.
        let pid = run.brokers[0].0.pid();
        run.brokers[0].0.kill9();
        say(run, &format!("fault 4/4: broker-1 killed with SIGKILL (pid {pid}) for {secs:.1} s; east's edges should fail over to broker-2"));
        let go_on = hold(run, plan.hold);
        if go_on {
            run.watch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restarted("broker-1");
            let pid = run.restart_broker(0)?;
            say(
                run,
                &format!(
                    "fault 4/4 over: broker-1 is back (pid {pid}); it forwards what it had queued"
                ),
            );
        }
        if !go_on || !hold(run, plan.recovery) {
            return Ok(());
        }
        if !plan.repeat {
            say(run, "script done");
            return Ok(());
        }
        say(run, "script done; starting over");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fit_the_duration() {
        let p = Plan::new(Some(40)).unwrap();
        let total = p.warmup + 4 * (p.hold + p.recovery);
        assert_eq!(total.as_secs_f64().round(), 40.0);
        assert_eq!(p.warmup, Duration::from_secs(8));
        assert!(!p.repeat);
        assert!(Plan::new(None).unwrap().repeat);
        assert!(matches!(Plan::new(Some(5)), Err(DemoError::TooShort(5))));
    }
}
