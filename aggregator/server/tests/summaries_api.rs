//! `GET /api/v1/summaries`: the stored window summaries, read-only, against a real `serve`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use qos_aggregator::config::{Config, Synchronous};
use qos_aggregator::ingest::Ingest;
use qos_aggregator::serve::run_serve;
use qos_aggregator::stats::IngestStats;
use qos_aggregator::store::SqliteStore;
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::samples;
use qos_wire::summary::Summary;

mod common;
use common::TempDir;

fn get(addr: SocketAddr, target: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn stored_summaries_are_listed_with_phases_and_errors() {
    let dir = TempDir::new("summaries", "list");
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.coap.listen = "127.0.0.1:0".parse().unwrap();
    config.store.data_dir = dir.0.join("data");
    config.store.synchronous = Synchronous::Normal;
    let serve = run_serve(&config, Arc::new(AtomicBool::new(false))).unwrap();
    let addr = serve.http_addr();

    // Three summaries of edge 3 (one with two failed runs), as the ingest stores them.
    let writer = SqliteStore::open(serve.database_path(), Synchronous::Normal).unwrap();
    let mut ingest = Ingest::new(Box::new(writer), Arc::new(IngestStats::new()));
    let sums: Vec<Summary<128>> = (0..3)
        .map(|i| samples::http_summary(i, 10, if i == 2 { 2 } else { 0 }))
        .collect();
    let batch = samples::batch(EdgeId(3), Seq::first_of_epoch(1), 0, &sums).unwrap();
    ingest.handle_batch(&batch, 1).unwrap();

    let (status, doc) = get(addr, "/api/v1/summaries?since=0");
    assert_eq!(status, 200, "{doc}");
    let list = doc["summaries"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{doc}");
    let start = sums[0].start_s;
    for s in list {
        assert_eq!(s["edge"], 3);
        assert_eq!(s["probe"], 1);
        assert_eq!(s["start"], start);
        assert_eq!(s["len"], 60);
        assert_eq!(s["ok"].as_u64().unwrap() + s["failed"].as_u64().unwrap(), 6);
        assert!(s["phases_us"]["total"]["mean"].as_u64().is_some(), "{s}");
    }
    assert!(list
        .iter()
        .any(|s| s["failed"] == 2 && !s["errors"].as_object().unwrap().is_empty()));
    assert_eq!(doc["next_since"], start);
    assert_eq!(doc["truncated"], false);

    let (_, later) = get(addr, &format!("/api/v1/summaries?since={}", start + 1));
    assert!(later["summaries"].as_array().unwrap().is_empty());
    let (_, one) = get(addr, "/api/v1/summaries?since=0&limit=1");
    assert_eq!(one["summaries"].as_array().unwrap().len(), 1);
    assert_eq!(one["truncated"], true);
    let (status, bad) = get(addr, "/api/v1/summaries?since=yesterday");
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["name"], "since");
    serve.stop().unwrap();
}
