//! The centre's side of the edge contract over real sockets (DESIGN.md §3, §6 tier 3): a
//! `qos-aggregator serve` process, a `qos-aggregator broker` process, and an edge played by
//! the test ([`FakeEdge`], a CoAP client and server on a real UDP socket) until the edge side
//! implements `/c`.
//!
//! Through the broker and directly against `serve`: a configuration PUT over HTTP reaches the
//! edge with its ETag (2.05, then 2.03 for the same ETag) and its report comes back; a bad
//! configuration is 400 with the reason and nothing is stored; an on-demand probe over HTTP
//! comes back as JSON from the edge; recent results too; a request for an edge that is away
//! a few seconds is held and delivered when it is back; an unknown edge is 404. No assertion
//! depends on how fast anything runs: waits are bounded and generous.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qos_coap::{content_format, Code};
use qos_e2e::fake_edge::{CONNECT_US, TOTAL_US};
use qos_e2e::{free_udp_port, fresh_dir, http_request, start_broker, wait_for, FakeEdge, Serve};
use qos_wire::config::EdgeConfig;
use serde_json::Value;

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(90);

const CONFIG: &str = r#"
window_s = 30
[[probe]]
id = 1
kind = "tcp"
target = "127.0.0.1:9"
interval_ms = 5000
[[rule]]
probe = 1
metric = "availability"
k = 2
n = 3
"#;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("centre")
}

fn call(serve: &Serve, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_request(serve.http, method, path, body, WAIT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e} in {text:?}"));
    (status, json)
}

/// Configuration, report, probe, results and unknown edges, for an edge behind `route`.
fn exercise(serve: &Serve, edge: &FakeEdge, via: &str) {
    let id = edge.id;
    // The edge is known to serve: as registered here, or by the batch its broker forwarded.
    let a = edge.send_batch(1).expect("a batch");
    assert_eq!(a.code, Code::CHANGED);
    // Its name comes from its registration here, or from its broker's report.
    let row = wait_for("the edge's row to show its route and name", WAIT, || {
        let row = serve.edge_row(id)?;
        if row["broker"] == via && row["name"] == format!("fake-{id}") {
            Ok(row)
        } else {
            Err(format!("{row}"))
        }
    });
    assert_eq!(row["region"], "eu");
    assert_eq!(row["registered"], true);

    // Nothing yet: 4.04 from the centre.
    assert_eq!(edge.get_config(None).unwrap().code, Code::NOT_FOUND);

    // PUT → the edge gets it with that ETag.
    let (status, put) = call(serve, "PUT", &format!("/api/v1/edges/{id}/config"), CONFIG);
    assert_eq!(status, 200, "{put}");
    let etag = put["etag"].as_u64().expect("an etag") as u32;
    let a = edge.get_config(None).unwrap();
    assert_eq!(a.code, Code::CONTENT);
    assert_eq!(a.etag.as_deref(), Some(&etag.to_be_bytes()[..]));
    assert_eq!(a.cf, Some(content_format::CBOR));
    let cfg = EdgeConfig::decode(&a.payload).expect("an edge-config");
    assert_eq!((cfg.etag, cfg.window_s, cfg.probes.len()), (etag, 30, 1));
    let a = edge.get_config(Some(etag)).unwrap();
    assert_eq!((a.code, a.payload.len()), (Code::VALID, 0));

    // The report is stored.
    assert_eq!(edge.report(etag, true, "").unwrap().code, Code::CHANGED);
    let (_, got) = call(serve, "GET", &format!("/api/v1/edges/{id}/config"), "");
    assert_eq!(got["last_report"]["applied_etag"], etag);
    assert_eq!(got["applied"], true);

    // A bad configuration: 400 with the reason, the old one stays.
    let (status, bad) = call(
        serve,
        "PUT",
        &format!("/api/v1/edges/{id}/config"),
        "[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"nohost\"\n",
    );
    assert_eq!(status, 400);
    assert!(bad["reason"].as_str().unwrap().contains("nohost"), "{bad}");
    let (_, got) = call(serve, "GET", &format!("/api/v1/edges/{id}/config"), "");
    assert_eq!(got["etag"], etag);
    assert_eq!(
        edge.get_config(Some(etag)).unwrap().code,
        Code::VALID,
        "unchanged"
    );

    // An on-demand probe: the edge's result as JSON.
    let (status, r) = call(
        serve,
        "POST",
        &format!("/api/v1/edges/{id}/probe"),
        "{\"id\": 42, \"kind\": \"tcp\", \"target\": \"127.0.0.1:9\", \"timeout_ms\": 1000}",
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["via"], via);
    assert_eq!(r["result"]["probe"], 42);
    assert_eq!(r["result"]["status"], "ok");
    assert_eq!(r["result"]["phases_us"]["connect"], CONNECT_US);
    assert_eq!(r["result"]["phases_us"]["total"], TOTAL_US);
    // The edge saw /p without the id.
    assert!(edge
        .seen()
        .iter()
        .any(|(p, q)| p == "p" && q.iter().all(|q| !q.starts_with("id="))));

    // TOML works too; then the recent results, filtered by probe.
    let (status, r) = call(
        serve,
        "POST",
        &format!("/api/v1/edges/{id}/probe"),
        "id = 43\nkind = \"tcp\"\ntarget = \"127.0.0.1:9\"\ntimeout_ms = 1000\n",
    );
    assert_eq!(status, 200, "{r}");
    let (status, list) = call(
        serve,
        "GET",
        &format!("/api/v1/edges/{id}/results?probe=42"),
        "",
    );
    assert_eq!(status, 200, "{list}");
    let results = list["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{list}");
    assert_eq!(results[0]["probe"], 42);

    // Away for a while: the request waits and is delivered once the edge speaks again.
    edge.set_away(true);
    let path = format!("/api/v1/edges/{id}/results?wait_ms=60000");
    let http = serve.http;
    let pending =
        std::thread::spawn(move || http_request(http, "GET", &path, "", Duration::from_secs(90)));
    std::thread::sleep(Duration::from_secs(5));
    assert!(!pending.is_finished(), "no answer while the edge is away");
    edge.set_away(false);
    // It speaks: a registration refresh (a request the broker or serve hears it by).
    edge.register(&format!("fake-{id}"), "eu")
        .expect("registered again");
    let (status, text) = pending.join().unwrap().expect("the held request's answer");
    assert_eq!(status, 200, "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["results"].as_array().unwrap().len(), 2, "{list}");

    // Unknown edge: 404.
    let (status, r) = call(serve, "GET", "/api/v1/edges/4040/results", "");
    assert_eq!(status, 404, "{r}");
    assert_eq!(r["error"], "unknown edge");
}

#[test]
fn through_a_broker() {
    let dir = fresh_dir(&base(), "broker");
    let serve = Serve::start(&dir);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let _broker = start_broker(&dir, 0, listen, serve.coap, "hold_ms = 60000");
    let edge = FakeEdge::start(21, listen);
    assert_eq!(edge.register("fake-21", "eu").unwrap().code, Code::CREATED);
    let brokers = wait_for("serve to see the broker", WAIT, || {
        let b = serve.get_json("/api/v1/brokers")?;
        if b["brokers"].as_array().is_some_and(|a| !a.is_empty()) {
            Ok(b)
        } else {
            Err(format!("{b}"))
        }
    });
    let via = brokers["brokers"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    // Known by its report (`POST /b`), which lists the edge soon after it registered.
    let report = wait_for("the broker's report to list the edge", WAIT, || {
        let b = serve.get_json("/api/v1/brokers")?;
        let r = b["brokers"][0]["report"].clone();
        if r["edges"][0]["name"] == "fake-21" {
            Ok(r)
        } else {
            Err(format!("{b}"))
        }
    });
    assert_eq!(report["total_edges"], 1);
    assert_eq!(report["edges"][0]["region"], "eu");
    exercise(&serve, &edge, &via);
    let b = serve.get_json("/api/v1/brokers").unwrap();
    assert_eq!(b["brokers"][0]["edges"][0], 21, "{b}");
    assert!(b["brokers"][0]["batches"].as_u64().unwrap() >= 1);
    let topo = serve.get_json("/api/v1/topology").unwrap();
    let links = topo["links"].as_array().unwrap();
    assert!(links
        .iter()
        .any(|l| l["from"] == "edge:21" && l["to"] == format!("broker:{via}")));
    assert!(links
        .iter()
        .any(|l| l["from"] == format!("broker:{via}") && l["to"] == "super-manager"));
}

#[test]
fn straight_to_serve() {
    let dir = fresh_dir(&base(), "direct");
    let serve = Serve::start(&dir);
    let edge = FakeEdge::start(22, serve.coap);
    assert_eq!(edge.register("fake-22", "eu").unwrap().code, Code::CREATED);
    exercise(&serve, &edge, "direct");
    let brokers = serve.get_json("/api/v1/brokers").unwrap();
    assert_eq!(brokers["brokers"], serde_json::json!([]));
}
