//! A silent broker is ONE event (real processes): two edges send through a broker that reports
//! every 500 ms; the broker is killed with SIGKILL; `serve` (watch: silent after 3 s) raises one
//! `broker_silent` event naming both edges, stored and listed at `GET /api/v1/events` and
//! logged, and shows the edges as its consequences (`behind_silent_broker`), with no event of
//! their own. Bounded waits, no timing assertions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qos_e2e::{
    free_udp_port, fresh_dir, start_broker, start_edge, wait_for, EdgeSpec, Serve, TcpTarget,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("silence")
}

fn events(serve: &Serve) -> Result<Vec<Value>, String> {
    Ok(serve.get_json("/api/v1/events")?["events"]
        .as_array()
        .cloned()
        .unwrap_or_default())
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
    wait_for("both edges stored through the broker", WAIT, || {
        let n: Vec<u64> = ids
            .iter()
            .map(|&i| serve.received(i).unwrap_or(0))
            .collect();
        if n.iter().all(|&n| n >= 2) {
            Ok(())
        } else {
            Err(format!("{n:?}"))
        }
    });
    assert!(
        events(&serve).unwrap().is_empty(),
        "no event while it talks"
    );

    broker.kill9();
    let ev = wait_for("one broker_silent event", WAIT, || {
        let ev = events(&serve)?;
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
    let again = events(&serve).unwrap();
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
