//! Availability and response time over a period: missing data apart, exact merges,
//! percentiles from merged sketches within 1 %.

mod common;

use common::*;
use qos_model::model::ProbeTarget;
use qos_model::window::{report, SlotAgg};
use qos_model::{Monitor, WindowSample};
use qos_wire::ids::ProbeId;
use qos_wire::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use qos_wire::phase::Phase;
use qos_wire::summary::Summary;

fn lcg(seed: &mut u64) -> u32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as u32
}

#[test]
fn availability_counts_missing_apart_and_percentiles_come_from_merged_sketches() {
    let m = model();
    let mut samples = Vec::new();
    let mut all_totals = Vec::new();
    let mut seed = 7;
    // 10 slots; eu: 8 good, 1 bad, 1 missing; us: 10 good; ap: nothing at all
    for i in 0..10u64 {
        let t = T0 + i * 60;
        for r in ["eu", "us"] {
            if r == "eu" && i == 9 {
                continue; // missing
            }
            let mut s = WindowSample::new("shop", r, t, 60);
            for _ in 0..20 {
                let total = 50_000 + lcg(&mut seed) % 400_000; // 50 to 450 ms
                all_totals.push(total);
                s.add_ok(1, &[(Phase::Connect, 1_000), (Phase::Total, total)]);
            }
            if r == "eu" && i == 4 {
                s.add_failed(20, ErrorClass::Timeout, &[]);
            }
            samples.push(s);
        }
    }
    // a sample of another service and one outside the period are ignored
    samples.push(ok("api", "eu", T0, &normal(T0)));
    samples.push(ok("shop", "eu", T0 + 600, &normal(T0)));
    let rep = report(&m, "shop", &samples, T0, T0 + 600).unwrap();
    assert_eq!((rep.from, rep.to, rep.window_s), (T0, T0 + 600, 60));
    let eu = &rep.regions.iter().find(|r| r.region == "eu").unwrap();
    assert_eq!(
        (
            eu.availability.good,
            eu.availability.bad,
            eu.availability.missing
        ),
        (8, 1, 1)
    );
    assert_eq!(eu.availability.ratio(), Some(8.0 / 9.0));
    assert_eq!(eu.errors, [(ErrorClass::Timeout, 20)]);
    let ap = &rep.regions.iter().find(|r| r.region == "ap").unwrap();
    assert_eq!(ap.availability.ratio(), None, "no data is unknown, not up");
    assert_eq!(ap.availability.missing, 10);
    assert_eq!(ap.availability.coverage(), 0.0);
    // service level, quorum 2 of 3: slot 4 has eu bad + ap missing → unknown; slot 9 has
    // eu and ap missing → unknown; the others: us good, eu good, ap missing → up
    assert_eq!(
        (
            rep.availability.good,
            rep.availability.bad,
            rep.availability.missing
        ),
        (8, 0, 2)
    );
    // percentiles of the merged sketch vs the exact ones
    all_totals.sort_unstable();
    let total = rep.phases.iter().find(|p| p.phase == Phase::Total).unwrap();
    assert_eq!(total.count, all_totals.len() as u64);
    let ps = total.percentiles.unwrap();
    for (q, est) in [0.5, 0.95, 0.99].iter().zip(ps) {
        let exact = all_totals[(q * (all_totals.len() - 1) as f64).floor() as usize];
        let err = (f64::from(est) - f64::from(exact)).abs() / f64::from(exact);
        assert!(err <= 0.01, "q{q}: {est} vs {exact}");
    }
    let mean = all_totals.iter().map(|&x| u64::from(x)).sum::<u64>() / all_totals.len() as u64;
    assert_eq!(
        u64::from(total.mean_us.unwrap()),
        mean,
        "means merge exactly"
    );
    let connect = rep
        .phases
        .iter()
        .find(|p| p.phase == Phase::Connect)
        .unwrap();
    assert_eq!((connect.mean_us, connect.percentiles), (Some(1_000), None));
    assert!(report(&m, "nope", &samples, T0, T0 + 60).is_none());
}

#[test]
fn samples_come_from_wire_summaries() {
    let m = model();
    let mut s: Summary<128> = Summary::new(ProbeId(1), T0 as u32, 60);
    for (i, err) in [None, None, Some(ErrorClass::Refused)]
        .into_iter()
        .enumerate()
    {
        let mut phases = PhaseTimings::new();
        phases.set(Phase::Connect, 2_000);
        if err.is_none() {
            phases.set(Phase::Total, 10_000 + i as u32);
        }
        s.record(&ProbeResult {
            probe: ProbeId(1),
            at_ms: T0 * 1000,
            phases,
            error: err,
            error_after_us: err.map(|_| 3_000),
            detail: 0,
            redirects: 0,
        });
    }
    let target = m.locate(2, 1).unwrap();
    assert!(
        matches!(target, ProbeTarget::Transaction { service, region, .. } if service == "api" && region == "us")
    );
    let w = WindowSample::from_summary(target, &s);
    assert_eq!(
        (w.subject.as_str(), w.region.as_str(), w.runs, w.failures),
        ("api", "us", 3, 1)
    );
    assert_eq!(w.total.count(), 2);
    let mut agg = SlotAgg::default();
    agg.add(&w);
    assert_eq!(agg.good(0.9), Some(false));
    assert_eq!(agg.good(0.6), Some(true));
    // and through the engine, by edge and probe id
    let mut mon = Monitor::new(m);
    mon.ingest_summary(2, &s).unwrap();
    assert!(mon.ingest_summary(9, &s).is_err());
    let mut wrong = w.clone();
    wrong.region = "mars".into();
    assert!(mon.ingest(wrong).is_err());
}

#[test]
fn slow_runs_are_counted_from_the_sketch() {
    let mut s = WindowSample::new("shop", "eu", T0, 60);
    s.add_ok(90, &[(Phase::Total, 100_000)]);
    s.add_ok(10, &[(Phase::Total, 400_000)]);
    let mut a = SlotAgg::default();
    a.add(&s);
    assert_eq!(a.slow(Phase::Total, 300_000), (100, 10));
    assert_eq!(a.slow(Phase::Total, 500_000), (100, 0));
    // phases without a distribution: judged on the window mean
    assert_eq!(a.slow(Phase::Connect, 1), (0, 0));
}
