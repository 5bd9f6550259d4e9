//! A silent broker is ONE event (real processes): two edges send through a broker that reports
//! every 500 ms; the broker is killed with SIGKILL; `serve` (watch: silent after 3 s) raises one
//! `broker_silent` event naming both edges, stored and listed at `GET /api/v1/events` and
//! logged, and shows the edges as its consequences (`behind_silent_broker`), with no event of
//! their own. Bounded waits, no timing assertions.
//!
//! A silent region is ONE event too: two brokers serve region north and one region south; both
//! north brokers are killed with SIGKILL; `serve` raises one `region_silent` event for north
//! (no `broker_silent` per broker), counted in `/metrics`; when one of them is restarted the
//! region is back (`region_back`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qos_coap::Code;
use qos_e2e::{
    free_udp_port, fresh_dir, http_get, start_broker, start_edge, wait_for, EdgeSpec, FakeEdge,
    Serve, TcpTarget,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("silence")
}

#[test]
fn a_killed_broker_is_one_event_with_its_edges_as_consequences() {
    let dir = fresh_dir(&base(), "kill");
    let serve = Serve::start_with(&dir, "[watch]\nbroker_silent_after_ms = 3000\n");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(&dir, 0, listen, serve.coap, "report_interval_ms = 500");
    let target = TcpTarget::start();
    let ids = [81u32, 82];
    let edges: Vec<_> = ids
        .iter()
        .map(|&id| {
            start_edge(
                &dir,
                &EdgeSpec {
                    id,
                    brokers: vec![listen],
                    target: target.addr,
                    storage: dir.join(format!("edge-{id}")),
                    extra_toml: String::new(),
                    bind: None,
                },
            )
        })
        .collect();
    serve.wait_received(&ids, 2, "both edges stored through the broker", WAIT);
    assert!(
        serve.events().unwrap().is_empty(),
        "no event while it talks"
    );

    broker.kill9();
    let ev = wait_for("one broker_silent event", WAIT, || {
        let ev = serve.events()?;
        if ev.iter().any(|e| e["kind"] == "broker_silent") {
            Ok(ev)
        } else {
            Err(format!("{ev:?}"))
        }
    });
    let silent: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "broker_silent").collect();
    assert_eq!(silent.len(), 1, "{ev:?}");
    let edges_of = silent[0]["edges"].as_array().cloned().unwrap_or_default();
    for id in ids {
        assert!(edges_of.iter().any(|e| *e == id), "edge {id} named: {ev:?}");
    }
    let broker_addr = silent[0]["broker"].as_str().unwrap().to_string();
    println!("event: {}", silent[0]);
    // The edges are consequences, shown on their rows.
    for id in ids {
        let row = serve.edge_row(id).unwrap();
        assert_eq!(row["behind_silent_broker"], broker_addr.as_str(), "{row}");
    }
    // Logged once; after that (more rounds of the watch) still one event.
    let log = dir.join("serve.log");
    wait_for("the event logged", WAIT, || {
        let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        if text.contains(&format!("broker {broker_addr} silent")) {
            Ok(())
        } else {
            Err("not logged yet".into())
        }
    });
    let again = serve.events().unwrap();
    assert_eq!(
        again
            .iter()
            .filter(|e| e["kind"] == "broker_silent")
            .count(),
        1,
        "{again:?}"
    );
    for e in edges {
        e.kill9();
    }
    serve.proc.stop(WAIT);
}

/// The value of the `/metrics` sample `name` (with its labels, e.g. `x{kind="y"}`).
fn metric(serve: &Serve, name: &str) -> Result<u64, String> {
    let (status, text) = http_get(serve.http, "/metrics")?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| format!("{name} not in /metrics"))
}

#[test]
fn a_silent_region_is_one_event_and_comes_back_with_one_of_its_brokers() {
    let dir = fresh_dir(&base(), "region");
    let serve = Serve::start_with(&dir, "[watch]\nbroker_silent_after_ms = 3000\n");
    let listens: Vec<SocketAddr> = (0..3)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_udp_port())))
        .collect();
    let dirs: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("b{i}"))).collect();
    let mut brokers: Vec<Option<qos_e2e::Proc>> = (0..3)
        .map(|i| {
            std::fs::create_dir_all(&dirs[i]).unwrap();
            Some(start_broker(
                &dirs[i],
                0,
                listens[i],
                serve.coap,
                "report_interval_ms = 500",
            ))
        })
        .collect();
    // Edges 91, 92 (north) behind brokers 0 and 1; edge 93 (south) behind broker 2.
    let plan = [(91u32, 0usize, "north"), (92, 1, "north"), (93, 2, "south")];
    let edges: Vec<FakeEdge> = plan
        .iter()
        .map(|&(id, b, region)| {
            let e = FakeEdge::start(id, listens[b]);
            let a = e
                .register(&format!("edge-{id}"), region)
                .expect("registers");
            assert_eq!(a.code, Code::CREATED, "{a:?}");
            let a = e.send_batch(0).expect("the broker answers");
            assert_eq!(a.code, Code::CHANGED, "{a:?}");
            e
        })
        .collect();
    wait_for("every edge stored with its region", WAIT, || {
        for &(id, _, region) in &plan {
            let row = serve.edge_row(id)?;
            if row["received"] != 1 || row["region"] != region {
                return Err(format!("{row}"));
            }
        }
        Ok(())
    });
    assert!(
        serve.events().unwrap().is_empty(),
        "no event while all talk"
    );

    // Both north brokers die; south keeps reporting.
    for b in &mut brokers[..2] {
        b.take().unwrap().kill9();
    }
    let ev = wait_for("a region_silent event", WAIT, || {
        let ev = serve.events()?;
        if ev.iter().any(|e| e["kind"] == "region_silent") {
            Ok(ev)
        } else {
            Err(format!("{ev:?}"))
        }
    });
    println!("events: {ev:?}");
    let region: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "region_silent").collect();
    assert_eq!(region.len(), 1, "{ev:?}");
    assert_eq!(region[0]["region"], "north");
    let named = region[0]["edges"].as_array().cloned().unwrap_or_default();
    assert!(
        named.contains(&91.into()) && named.contains(&92.into()),
        "{ev:?}"
    );
    assert!(!named.contains(&93.into()), "{ev:?}");
    assert!(
        !ev.iter().any(|e| e["kind"] == "broker_silent"),
        "one event for the region, none per broker: {ev:?}"
    );
    for id in [91, 92] {
        let row = serve.edge_row(id).unwrap();
        assert!(row["behind_silent_broker"].is_string(), "{row}");
    }
    assert!(serve.edge_row(93).unwrap()["behind_silent_broker"].is_null());
    assert_eq!(
        metric(&serve, "qos_silence_events_total{kind=\"region_silent\"}"),
        Ok(1)
    );
    assert_eq!(
        metric(&serve, "qos_silence_events_total{kind=\"broker_silent\"}"),
        Ok(0)
    );
    assert_eq!(metric(&serve, "qos_regions_silent"), Ok(1));
    assert_eq!(metric(&serve, "qos_brokers_silent"), Ok(2));

    // One north broker comes back (same port and queue; it talks upstream from a new port) and
    // forwards a batch of edge 91: the region is back.
    brokers[0] = Some(start_broker(
        &dirs[0],
        1,
        listens[0],
        serve.coap,
        "report_interval_ms = 500",
    ));
    let a = edges[0]
        .send_batch(1)
        .expect("the restarted broker answers");
    assert_eq!(a.code, Code::CHANGED, "{a:?}");
    let ev = wait_for("a region_back event", WAIT, || {
        let ev = serve.events()?;
        if ev.iter().any(|e| e["kind"] == "region_back") {
            Ok(ev)
        } else {
            Err(format!("{ev:?}"))
        }
    });
    println!("events: {ev:?}");
    let count = |kind: &str| ev.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(
        (count("region_silent"), count("region_back")),
        (1, 1),
        "{ev:?}"
    );
    assert_eq!(metric(&serve, "qos_regions_silent"), Ok(0));
    assert_eq!(
        metric(&serve, "qos_silence_events_total{kind=\"region_back\"}"),
        Ok(1)
    );
    drop(edges);
    for b in brokers.into_iter().flatten() {
        b.stop(WAIT);
    }
    serve.proc.stop(WAIT);
}
