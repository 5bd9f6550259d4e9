//! The live engine: quorum, unknown, SLO alerts and budget, suppression, flapping, incident
//! lifecycle, notifications.

mod common;

use common::*;
use qos_model::incident::Level;
use qos_model::monitor::Event;
use qos_model::slo::{AlertChange, Severity, Sli};
use qos_model::{notification, Monitor, Status, Subject};
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;

fn dns_fail(r: &str, slot: u64) -> qos_model::WindowSample {
    failed(
        "shop",
        r,
        slot,
        ErrorClass::DnsFailure,
        &[(Phase::Dns, 2_000_000)],
    )
}

#[test]
fn quorum_unknown_and_missing_data() {
    let mut m = Monitor::new(model());
    feed(&mut m, T0, T0 + 600, &|_, _, _| None);
    m.evaluate(T0 + 630);
    assert_eq!(m.state("shop").unwrap().status, Status::Up);
    // slot 10: eu fails → degraded (1 < quorum 2)
    let s10 = T0 + 600;
    feed(&mut m, s10, s10 + 60, &|s, r, t| {
        (s == "shop" && r == "eu").then(|| Some(dns_fail(r, t)))
    });
    m.evaluate(s10 + 90);
    let st = m.state("shop").unwrap();
    assert_eq!(st.status, Status::Degraded);
    assert_eq!(st.regions_bad, ["eu"]);
    assert_eq!(st.quorum, 2);
    // slot 11: eu and us fail → down
    let s11 = s10 + 60;
    feed(&mut m, s11, s11 + 60, &|s, r, t| {
        (s == "shop" && r != "ap").then(|| Some(dns_fail(r, t)))
    });
    m.evaluate(s11 + 90);
    assert_eq!(m.state("shop").unwrap().status, Status::Down);
    // slot 12: eu fails, us silent → could be down: unknown, never up
    let s12 = s11 + 60;
    feed(&mut m, s12, s12 + 60, &|s, r, t| match (s, r) {
        ("shop", "eu") => Some(Some(dns_fail(r, t))),
        ("shop", "us") => Some(None),
        _ => None,
    });
    m.evaluate(s12 + 90);
    let st = m.state("shop").unwrap();
    assert_eq!(st.status, Status::Unknown);
    assert_eq!(st.regions_missing, ["us"]);
    // slot 13: nothing at all from anyone: unknown
    m.evaluate(s12 + 150);
    assert_eq!(m.state("shop").unwrap().status, Status::Unknown);
    assert_eq!(m.state("api").unwrap().status, Status::Unknown);
    // the availability budget counted 13 decided windows (12 with data, 1 down), not the unknowns
    let b = m.budget("shop", Sli::Availability, s12 + 120).unwrap();
    assert_eq!((b.events, b.bad), (12, 1));
}

#[test]
fn page_alert_raised_with_evidence_and_cleared() {
    let mut m = Monitor::new(model());
    let down_at = T0 + 3600;
    feed(&mut m, T0, down_at + 1200, &|s, r, t| {
        (s == "shop" && r != "ap" && (down_at..down_at + 120).contains(&t))
            .then(|| Some(dns_fail(r, t)))
    });
    let mut raised = None;
    let mut cleared = None;
    for now in (T0 + 90..down_at + 1200).step_by(60) {
        for e in m.evaluate(now) {
            match e {
                Event::Alert(AlertChange::Raised(a)) if a.rule.severity == Severity::Page => {
                    raised = Some((now, a))
                }
                Event::Alert(AlertChange::Cleared(a)) if a.rule.severity == Severity::Page => {
                    cleared = Some((now, a))
                }
                _ => {}
            }
        }
    }
    let (_, a) = raised.expect("page raised");
    assert_eq!(
        (a.sli, a.rule.severity),
        (Sli::Availability, Severity::Page)
    );
    assert_eq!(a.raised_at, down_at + 60);
    assert_eq!(a.raised_with.short, (5, 1));
    assert!(a.raised_with.long_burn > 14.4 && a.raised_with.short_burn > 14.4);
    let (_, c) = cleared.expect("cleared");
    // clears once the short window (5 min) holds no down window any more
    assert_eq!(c.last.short.1, 0);
    assert_eq!(c.last.at, down_at + 120 + 300);
    // the ticket rule (6 h and 30 min over 6) fired too and is still raised
    assert!(m
        .alerts()
        .all(|a| a.rule.severity == Severity::Ticket && a.sli == Sli::Availability));
    let json = notification(&Event::Alert(AlertChange::Raised(a))).unwrap();
    assert_eq!(json["type"], "slo_alert_raised");
    assert_eq!(json["alert"]["severity"], "page");
    assert_eq!(json["alert"]["raised_with"]["short_bad"], 1);
}

#[test]
fn a_shared_path_down_suppresses_the_services_behind_it() {
    let mut m = Monitor::new(model());
    let at = T0 + 1800;
    // both services fail in eu only: the shared path-eu is inferred down
    feed(&mut m, T0, at + 300, &|s, r, t| {
        (r == "eu" && t >= at)
            .then(|| Some(failed(s, r, t, ErrorClass::Timeout, &[(Phase::Dns, 5_000)])))
    });
    let events = m.evaluate(at + 330);
    let st = m.state("shop").unwrap();
    assert_eq!(st.status, Status::Degraded);
    assert_eq!(st.suppressed_by, ["path-eu"]);
    assert_eq!(m.state("api").unwrap().suppressed_by, ["path-eu"]);
    let path = m
        .component_states()
        .find(|c| c.component == "path-eu")
        .unwrap();
    assert!(path.down, "{path:?}");
    // one incident, about the path, listing both services; none per service
    let opened: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::IncidentOpened(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert_eq!(opened[0].subject, Subject::Component("path-eu".into()));
    let inc = m
        .incidents()
        .iter()
        .find(|i| i.resolved_at.is_none())
        .unwrap();
    assert_eq!(inc.affected, ["api", "shop"]);
    // the path recovers: the incident resolves after resolve_after (3) good windows
    feed(&mut m, at + 300, at + 600, &|_, _, _| None);
    let ev = m.evaluate(at + 630);
    assert!(ev.iter().any(|e| matches!(e, Event::IncidentResolved(i) if i.subject == Subject::Component("path-eu".into()))));
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::ComponentChanged(c) if c.component == "path-eu" && !c.down)));
}

#[test]
fn a_failure_in_one_service_only_is_not_suppressed() {
    let mut m = Monitor::new(model());
    let at = T0 + 1800;
    feed(&mut m, T0, at + 180, &|s, r, t| {
        (s == "shop" && r == "eu" && t >= at).then(|| Some(dns_fail(r, t)))
    });
    let ev = m.evaluate(at + 210);
    assert!(m.state("shop").unwrap().suppressed_by.is_empty());
    assert!(ev.iter().any(
        |e| matches!(e, Event::IncidentOpened(i) if i.subject == Subject::Service("shop".into()))
    ));
}

#[test]
fn flapping_holds_notifications_until_stable() {
    let mut m = Monitor::new(model());
    let at = T0 + 1800;
    // eu alternates bad/good every window for 10 windows, then stays good
    feed(&mut m, T0, at + 1200, &|s, r, t| {
        (s == "shop" && r == "eu" && (at..at + 600).contains(&t) && (t / 60) % 2 == 0)
            .then(|| Some(dns_fail(r, t)))
    });
    let mut all = Vec::new();
    for now in (T0 + 90..at + 1200).step_by(60) {
        all.extend(m.evaluate(now));
    }
    let started = all
        .iter()
        .position(|e| matches!(e, Event::FlappingStarted { .. }))
        .expect("flapping detected");
    let stopped = all
        .iter()
        .position(|e| matches!(e, Event::FlappingStopped(_)))
        .expect("stable again");
    assert!(started < stopped);
    // while flapping: state changes are held, and no incident opens or resolves
    for e in &all[started + 1..stopped] {
        match e {
            Event::StatusChanged { held, .. } => assert!(*held),
            Event::IncidentOpened(_) | Event::IncidentResolved(_) => panic!("{e:?} while flapping"),
            _ => {}
        }
    }
    // before flapping: one incident opened (the first bad window); it resolves after stability
    let opened = all
        .iter()
        .filter(|e| matches!(e, Event::IncidentOpened(_)))
        .count();
    assert_eq!(opened, 1);
    assert!(all[stopped..]
        .iter()
        .any(|e| matches!(e, Event::IncidentResolved(_))));
    let Event::FlappingStopped(st) = &all[stopped] else {
        unreachable!()
    };
    assert_eq!(st.status, Status::Up);
    assert!(notification(&all[started]).is_some());
}

#[test]
fn incident_lifecycle_open_update_resolve() {
    let mut m = Monitor::new(model());
    let at = T0 + 1800;
    // eu fails for 3 windows, then eu and us for 2 (down), then all good
    feed(&mut m, T0, at + 900, &|s, r, t| {
        let bad = s == "shop"
            && ((r == "eu" && (at..at + 300).contains(&t))
                || (r == "us" && (at + 180..at + 300).contains(&t)));
        bad.then(|| Some(dns_fail(r, t)))
    });
    let mut all = Vec::new();
    for now in (T0 + 90..at + 900).step_by(60) {
        all.extend(m.evaluate(now));
    }
    let kinds: Vec<&str> = all
        .iter()
        .filter_map(|e| match e {
            Event::IncidentOpened(_) => Some("opened"),
            Event::IncidentUpdated(_) => Some("updated"),
            Event::IncidentResolved(_) => Some("resolved"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"opened"));
    assert!(kinds.contains(&"updated"));
    assert_eq!(kinds.last(), Some(&"resolved"));
    let resolved = all
        .iter()
        .find_map(|e| match e {
            Event::IncidentResolved(i) => Some(i),
            _ => None,
        })
        .unwrap();
    assert_eq!(resolved.opened_at, at);
    assert_eq!(resolved.worst, Status::Down);
    // resolve_after = 3 good windows after the last bad one (at + 240)
    assert_eq!(resolved.resolved_at, Some(at + 300 + 3 * 60));
    let json = notification(&Event::IncidentResolved(resolved.clone())).unwrap();
    assert_eq!(json["type"], "incident_resolved");
    assert_eq!(json["incident"]["worst"], "down");
    assert_eq!(json["incident"]["causes"][0]["component"], "dns-eu");
    let levels: Vec<Level> = resolved.drill.iter().map(|s| s.level).collect();
    assert_eq!(
        &levels[..4],
        [
            Level::Service,
            Level::Phase,
            Level::Region,
            Level::Component
        ]
    );
    // the notifier queues exactly the notifying events
    let mut n = qos_model::Notifier::new(Default::default());
    let queued = n.push_events(0, &all);
    assert_eq!(
        queued,
        all.iter().filter(|e| notification(e).is_some()).count()
    );
    assert!(queued >= 3);
}

#[test]
fn shared_server_side_components_are_not_inferred_down() {
    let mut m = Monitor::new(model());
    let at = T0 + 1800;
    // both services fail everywhere: app and db are common to both, but nothing measures
    // them; each service gets its own incident ranked by RCA, none is suppressed
    feed(&mut m, T0, at + 180, &|s, r, t| {
        (t >= at).then(|| {
            Some(failed(
                s,
                r,
                t,
                ErrorClass::HttpStatus,
                &[(Phase::FirstByte, 90_000)],
            ))
        })
    });
    let ev = m.evaluate(at + 210);
    assert!(m.component_states().all(|c| !c.down));
    for s in ["shop", "api"] {
        let st = m.state(s).unwrap();
        assert_eq!(st.status, Status::Down);
        assert!(st.suppressed_by.is_empty());
        assert!(ev.iter().any(
            |e| matches!(e, Event::IncidentOpened(i) if i.subject == Subject::Service(s.into()))
        ));
    }
    // first byte (http_status) everywhere: server side, app/database first
    let inc = m
        .incidents()
        .iter()
        .find(|i| i.subject == Subject::Service("api".into()))
        .unwrap();
    assert!(
        matches!(inc.causes[0].component.as_str(), "app" | "db"),
        "{:#?}",
        inc.causes
    );
    assert!(inc.causes[0].prior > 0.99);
}
