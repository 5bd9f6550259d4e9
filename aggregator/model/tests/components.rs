//! A component measured by its own probes; JSON views.

use qos_model::api::{budget_json, report_json, state_json};
use qos_model::monitor::Event;
use qos_model::slo::Sli;
use qos_model::{report, Model, Monitor, Status, Subject, WindowSample};
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;

const EXAMPLE: &str = include_str!("../service-model.example.toml");
const T0: u64 = 1_764_000_000;

fn ok(subject: &str, region: &str, t: u64) -> WindowSample {
    let mut s = WindowSample::new(subject, region, t, 60);
    s.add_ok(6, &[(Phase::Connect, 20_000), (Phase::Total, 150_000)]);
    s
}

fn bad(subject: &str, region: &str, t: u64) -> WindowSample {
    let mut s = WindowSample::new(subject, region, t, 60);
    s.add_failed(6, ErrorClass::Unreachable, &[]);
    s
}

#[test]
fn a_path_measured_down_by_its_own_probe_suppresses_the_shop_in_that_region() {
    let mut m = Monitor::new(Model::from_toml(EXAMPLE).unwrap());
    let at = T0 + 600;
    for t in (T0..at + 300).step_by(60) {
        let broken = t >= at;
        for r in ["eu", "us", "ap"] {
            let s = if broken && r == "eu" {
                bad("shop", r, t)
            } else {
                ok("shop", r, t)
            };
            m.ingest(s).unwrap();
        }
        for r in ["eu", "us"] {
            m.ingest(ok("payments-api", r, t)).unwrap();
        }
        // the router ping of path-eu
        let ping = if broken {
            bad("path-eu", "eu", t)
        } else {
            ok("path-eu", "eu", t)
        };
        m.ingest(ping).unwrap();
    }
    let events = m.evaluate(at + 330);
    let st = m.state("shop").unwrap();
    assert_eq!(st.status, Status::Degraded);
    assert_eq!(st.suppressed_by, ["path-eu"]);
    let path = m
        .component_states()
        .find(|c| c.component == "path-eu")
        .unwrap();
    assert!(path.down);
    assert!(path.reason.as_deref().unwrap().contains("own probes"));
    let opened: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::IncidentOpened(i) => Some(i.subject.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(opened, [Subject::Component("path-eu".into())]);

    // JSON views
    let j = state_json(st);
    assert_eq!(j["status"], "degraded");
    assert_eq!(j["regions"]["bad"][0], "eu");
    assert_eq!(j["suppressed_by"][0], "path-eu");
    let b = m.budget("shop", Sli::Availability, at + 300).unwrap();
    assert_eq!(budget_json(&b)["bad"], 0);
    assert_eq!(b.events, 15);
}

#[test]
fn report_json_has_regions_phases_and_missing() {
    let model = Model::from_toml(EXAMPLE).unwrap();
    let samples = vec![ok("shop", "eu", T0), bad("shop", "us", T0)];
    let r = report(&model, "shop", &samples, T0, T0 + 120).unwrap();
    let j = report_json(&r);
    assert_eq!(j["regions"][0]["region"], "ap");
    assert_eq!(
        j["regions"][0]["availability"]["ratio"],
        serde_json::Value::Null
    );
    assert_eq!(j["regions"][0]["availability"]["missing"], 2);
    assert_eq!(j["regions"][1]["availability"]["good"], 1);
    assert_eq!(j["regions"][2]["errors"][0]["class"], "unreachable");
    let total = j["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "total")
        .unwrap();
    let p95 = total["p95_us"].as_u64().unwrap();
    assert!(p95.abs_diff(150_000) <= 1_500, "{p95}");
    // quorum 2 of 3: at T0 us is bad and ap silent (could be down), at T0 + 60 nothing came:
    // both undecidable, counted as missing, none as up
    assert_eq!(j["availability"]["missing"], 2);
    assert_eq!(j["availability"]["ratio"], serde_json::Value::Null);
}

#[test]
fn a_component_behind_a_down_component_is_its_consequence() {
    let json = r#"{
        "component": [
            {"name": "db", "kind": "database", "probes": [{"name": "db-ping", "region": "eu"}]},
            {"name": "app", "kind": "app", "depends_on": ["db"],
             "probes": [{"name": "app-health", "region": "eu"}]}],
        "service": [{"name": "s", "depends_on": ["app"],
                     "transaction": [{"name": "t", "probes": [
                        {"edge": 1, "probe": 1, "region": "eu"},
                        {"edge": 2, "probe": 1, "region": "us"}]}]}]
    }"#;
    let mut m = Monitor::new(Model::from_json(json).unwrap());
    for t in (T0..T0 + 300).step_by(60) {
        let broken = t >= T0 + 120;
        for (subject, region) in [("s", "eu"), ("s", "us"), ("db", "eu"), ("app", "eu")] {
            let s = if broken {
                bad(subject, region, t)
            } else {
                ok(subject, region, t)
            };
            m.ingest(s).unwrap();
        }
    }
    let events = m.evaluate(T0 + 330);
    let app = m.component_states().find(|c| c.component == "app").unwrap();
    assert!(app.down);
    assert_eq!(app.suppressed_by, ["db"]);
    let db = m.component_states().find(|c| c.component == "db").unwrap();
    assert!(db.down && db.suppressed_by.is_empty());
    let st = m.state("s").unwrap();
    assert_eq!(st.status, Status::Down);
    assert_eq!(st.suppressed_by, ["db"], "only the root is named");
    let opened: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::IncidentOpened(i) => Some(i.subject.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(opened, [Subject::Component("db".into())]);
}

#[test]
fn the_latency_objective_pages_when_slow_runs_burn_it() {
    let mut m = Monitor::new(Model::from_toml(EXAMPLE).unwrap());
    let slow_from = T0 + 3600;
    let mut raised = Vec::new();
    for t in (T0..slow_from + 3600).step_by(60) {
        for r in ["eu", "us", "ap"] {
            let mut s = WindowSample::new("shop", r, t, 60);
            let total = if t >= slow_from { 1_200_000 } else { 150_000 };
            s.add_ok(6, &[(Phase::Total, total)]);
            m.ingest(s).unwrap();
        }
        for e in m.evaluate(t + 90) {
            if let Event::Alert(qos_model::slo::AlertChange::Raised(a)) = e {
                raised.push(a);
            }
        }
    }
    let page = raised
        .iter()
        .find(|a| a.sli == Sli::Latency && a.rule.severity == qos_model::slo::Severity::Page)
        .expect("latency page");
    // p95 ≤ 800 ms allows 5 % slow runs, so the burn rate is at most 20: paging (14.4 over
    // 1 h) needs more than 72 % of the hour slow — the 44th slow minute (44/60 = 73 %).
    assert_eq!(page.raised_at, slow_from + 44 * 60);
    assert!(page.raised_with.long_burn > 14.4 && page.raised_with.short_burn > 14.4);
    assert!(!raised.iter().any(|a| a.sli == Sli::Availability));
    let st = m.state("shop").unwrap();
    assert_eq!(st.status, Status::Degraded);
    assert!(st.latency_burn.unwrap() > 1.0);
    let b = m.budget("shop", Sli::Latency, slow_from + 3600).unwrap();
    assert!(b.remaining < 0.0, "{b:?}");
}
