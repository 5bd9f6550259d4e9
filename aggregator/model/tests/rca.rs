//! Incidents ranked by RCA combined with the phase/region prior: the three reference
//! scenarios.

mod common;

use common::*;
use qos_model::incident::{Level, RegionPattern};
use qos_model::monitor::Event;
use qos_model::{Incident, Monitor, Status, Subject};
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;

const AT: u64 = T0 + 2400;
const END: u64 = AT + 600;

/// Noise on every server-side component, plus what the scenario adds.
fn base_metrics(m: &mut Monitor) {
    metric(m, "app", "cpu_percent", T0, END, 40.0, None);
    metric(m, "web", "requests_per_s", T0, END, 200.0, None);
    metric(m, "lb", "connections", T0, END, 500.0, None);
}

fn run(m: &mut Monitor) -> (Incident, Vec<Event>) {
    let mut events = Vec::new();
    for now in (T0 + 90..END + 90).step_by(60) {
        events.extend(m.evaluate(now));
    }
    let inc = m
        .incidents()
        .iter()
        .find(|i| i.subject == Subject::Service("shop".into()) && i.resolved_at.is_none())
        .expect("an open shop incident")
        .clone();
    (inc, events)
}

fn top(inc: &Incident) -> &str {
    &inc.causes[0].component
}

#[test]
fn slow_database_puts_the_database_first() {
    let mut m = Monitor::new(model());
    base_metrics(&mut m);
    metric(&mut m, "db", "query_ms", T0, END, 5.0, Some((AT, 45.0)));
    metric(&mut m, "db", "cpu_percent", T0, END, 30.0, None);
    feed(&mut m, T0, END, &|s, r, t| {
        (s == "shop" && t >= AT).then(|| {
            let mut p = normal(t);
            p[3].1 += 300_000; // first byte +300 ms, every region
            Some(ok(s, r, t, &with_total(&p[..5])))
        })
    });
    let (inc, _) = run(&mut m);
    assert_eq!(inc.status, Status::Degraded, "latency objective burns");
    let b = inc.breakdown.as_ref().unwrap();
    assert_eq!(b.pattern, RegionPattern::All);
    assert_eq!(b.dominant(), Some(Phase::FirstByte));
    assert_eq!(top(&inc), "db", "{:#?}", inc.causes);
    // app shares the prior (first byte, server side) but has no anomaly: below db
    let app = inc
        .causes
        .iter()
        .position(|c| c.component == "app")
        .unwrap();
    assert!(app > 0);
    assert!(inc.causes[0].rca > 0.99 && inc.causes[0].prior > 0.99);
    // drill-down: service → first_byte → a region → db → query_ms, with series references
    let chain: Vec<(Level, &str)> = inc
        .drill
        .iter()
        .map(|s| (s.level, s.name.as_str()))
        .collect();
    assert_eq!(chain[0], (Level::Service, "shop"));
    assert_eq!(chain[1], (Level::Phase, "first_byte"));
    assert_eq!(chain[2].0, Level::Region);
    assert_eq!(chain[3], (Level::Component, "db"));
    assert_eq!(chain[4], (Level::Metric, "query_ms"));
    assert!(inc.drill[1]
        .series
        .iter()
        .any(|s| s.component == "shop" && s.metric == "eu/first_byte_mean_us"));
    assert!(inc.drill[3].series.iter().any(|s| s.metric == "query_ms"));
}

#[test]
fn dns_failing_in_one_region_puts_that_regions_dns_first() {
    let mut m = Monitor::new(model());
    base_metrics(&mut m);
    metric(&mut m, "db", "query_ms", T0, END, 5.0, None);
    feed(&mut m, T0, END, &|s, r, t| {
        (s == "shop" && r == "us" && t >= AT).then(|| {
            Some(failed(
                s,
                r,
                t,
                ErrorClass::DnsFailure,
                &[(Phase::Dns, 1_500_000)],
            ))
        })
    });
    let (inc, _) = run(&mut m);
    assert_eq!(inc.status, Status::Degraded);
    let b = inc.breakdown.as_ref().unwrap();
    assert_eq!(b.pattern, RegionPattern::Some(vec!["us".into()]));
    assert_eq!(b.dominant(), Some(Phase::Dns));
    assert_eq!(top(&inc), "dns-us", "{:#?}", inc.causes);
    // the region's path is next (region pattern), other regions' DNS far below
    assert_eq!(inc.causes[1].component, "path-us");
    let eu = inc.causes.iter().find(|c| c.component == "dns-eu").unwrap();
    assert!(eu.score < inc.causes[1].score);
    let region = inc.drill.iter().find(|s| s.level == Level::Region).unwrap();
    assert_eq!(region.name, "us");
}

#[test]
fn one_regions_path_latency_puts_that_path_first() {
    let mut m = Monitor::new(model());
    base_metrics(&mut m);
    metric(&mut m, "db", "query_ms", T0, END, 5.0, None);
    feed(&mut m, T0, END, &|s, r, t| {
        (s == "shop" && r == "ap" && t >= AT).then(|| {
            let mut p = normal(t);
            p[1].1 += 90_000; // connect: one more round trip of 90 ms
            p[3].1 += 90_000; // first byte: the request's round trip
            p[4].1 += 90_000; // download
            Some(ok(s, r, t, &with_total(&p[..5])))
        })
    });
    let (inc, _) = run(&mut m);
    let b = inc.breakdown.as_ref().unwrap();
    assert_eq!(b.pattern, RegionPattern::Some(vec!["ap".into()]));
    assert_eq!(top(&inc), "path-ap", "{:#?}", inc.causes);
    assert!(inc.causes[0].prior > inc.causes[1].prior);
}

#[test]
fn services_failing_for_the_same_cause_share_one_incident() {
    let mut m = Monitor::new(model());
    base_metrics(&mut m);
    metric(&mut m, "db", "errors_per_s", T0, END, 2.0, Some((AT, 40.0)));
    let fail = |s: &str, r: &str, t: u64| {
        failed(
            s,
            r,
            t,
            ErrorClass::HttpStatus,
            &[(Phase::FirstByte, 80_000)],
        )
    };
    // both services fail everywhere from AT for 5 minutes, then recover
    feed(&mut m, T0, END, &|s, r, t| {
        (AT..AT + 300).contains(&t).then(|| Some(fail(s, r, t)))
    });
    let mut events = Vec::new();
    for now in (T0 + 90..END + 90).step_by(60) {
        events.extend(m.evaluate(now));
    }
    let opened: Vec<&Incident> = events
        .iter()
        .filter_map(|e| match e {
            Event::IncidentOpened(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert_eq!(top(opened[0]), "db");
    let resolved: Vec<&Incident> = events
        .iter()
        .filter_map(|e| match e {
            Event::IncidentResolved(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].affected, ["api", "shop"]);
    assert_eq!(resolved[0].worst, Status::Down);
    // resolved once both services had 3 good windows
    assert_eq!(resolved[0].resolved_at, Some(AT + 300 + 3 * 60));
}

#[test]
fn without_a_shared_metric_anomaly_services_keep_their_own_incidents() {
    let mut m = Monitor::new(model());
    base_metrics(&mut m);
    metric(&mut m, "db", "errors_per_s", T0, END, 2.0, None);
    feed(&mut m, T0, END, &|s, r, t| {
        (t >= AT).then(|| Some(failed(s, r, t, ErrorClass::HttpStatus, &[])))
    });
    let mut events = Vec::new();
    for now in (T0 + 90..END + 90).step_by(60) {
        events.extend(m.evaluate(now));
    }
    let opened = events
        .iter()
        .filter(|e| matches!(e, Event::IncidentOpened(_)))
        .count();
    assert_eq!(opened, 2, "a shared prior alone does not correlate");
}
