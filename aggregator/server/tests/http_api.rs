//! The HTTP API and `serve` against a real server on 127.0.0.1 (port 0), with raw HTTP/1.1
//! over `TcpStream`.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use qos_aggregator::config::{Config, Synchronous};
use qos_aggregator::http::now_ms;
use qos_aggregator::serve::{run_serve, ServeError, ServeHandle};
use qos_aggregator::stats::RejectReason;
use qos_aggregator::store::{EdgeKey, NewRecord, SqliteStore, Store};

mod common;
use common::{read_reply, Reply, TempDir};

fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.coap.listen = "127.0.0.1:0".parse().unwrap();
    config.store.data_dir = dir.0.join("data");
    config.store.synchronous = Synchronous::Normal;
    config
}

struct Running {
    handle: Option<ServeHandle>,
    _dir: TempDir,
}

impl Running {
    fn start(name: &str) -> Running {
        let dir = TempDir::new("http", name);
        let handle = run_serve(&test_config(&dir), Arc::new(AtomicBool::new(false))).unwrap();
        Running {
            handle: Some(handle),
            _dir: dir,
        }
    }

    fn handle(&self) -> &ServeHandle {
        self.handle.as_ref().unwrap()
    }

    fn addr(&self) -> SocketAddr {
        self.handle().http_addr()
    }

    /// A second writer on the same database, standing in for the ingest.
    fn writer(&self) -> SqliteStore {
        SqliteStore::open(self.handle().database_path(), Synchronous::Normal).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop().unwrap();
        }
    }
}

/// Sends `head` (request line and headers, without the blank line) plus `body`, and reads one
/// response, using its Content-Length (the server may keep the connection open).
fn exchange(addr: SocketAddr, head: &str, body: &[u8], expect_body: bool) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!("{head}\r\nHost: test\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    // A large body may be refused before it is read: ignore a reset while sending.
    let _ = stream.write_all(&request);
    read_reply(&mut BufReader::new(stream), !expect_body)
}

fn get(addr: SocketAddr, target: &str) -> Reply {
    exchange(addr, &format!("GET {target} HTTP/1.1"), b"", true)
}

fn rec(seq: u64) -> NewRecord {
    NewRecord {
        seq,
        kind: 1,
        at: 1_700_000_000,
        body: vec![0xa0],
        summary: None,
    }
}

#[test]
fn health_reports_ok_version_and_store() {
    let server = Running::start("health");
    let reply = get(server.addr(), "/api/v1/health");
    assert_eq!(reply.status, 200);
    let json = reply.json();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["version"], qos_aggregator::VERSION);
    assert_eq!(json["store"], "ok");
    assert!(json["uptime_s"].is_u64(), "{json}");
}

#[test]
fn query_strings_are_ignored() {
    let server = Running::start("query");
    let reply = get(server.addr(), "/api/v1/health?verbose=1&x");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
}

#[test]
fn head_is_get_without_body() {
    let server = Running::start("head");
    let reply = exchange(server.addr(), "HEAD /api/v1/stats HTTP/1.1", b"", false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
}

#[test]
fn stats_show_counters_and_store_totals() {
    let server = Running::start("stats");
    let mut writer = server.writer();
    writer
        .insert_batch(&EdgeKey::new(1, now_ms()), &[rec(1), rec(2)])
        .unwrap();
    writer
        .insert_batch(&EdgeKey::new(2, now_ms()), &[rec(1)])
        .unwrap();
    let stats = server.handle().stats();
    stats.add_datagrams(5);
    stats.add_records(3);
    stats.add_duplicates(1);
    stats.reject(RejectReason::Malformed);

    let json = get(server.addr(), "/api/v1/stats").json();
    assert_eq!(json["received"]["datagrams"], 5);
    assert_eq!(json["received"]["batches"], 0);
    assert_eq!(json["received"]["records"], 3);
    assert_eq!(json["duplicates"], 1);
    assert_eq!(json["stored"], 0);
    assert_eq!(json["acked"], 0);
    assert_eq!(json["rejected"]["malformed"], 1);
    assert_eq!(json["rejected"]["store_error"], 0);
    assert_eq!(json["rejected_total"], 1);
    assert_eq!(json["store"]["records"], 3);
    assert_eq!(json["store"]["edges"], 2);
    assert!(json["uptime_s"].is_u64());
}

#[test]
fn edges_list_every_edge_with_its_counters() {
    let server = Running::start("edges");
    assert_eq!(
        get(server.addr(), "/api/v1/edges").json(),
        serde_json::json!({"edges": []})
    );

    let mut writer = server.writer();
    let mut key = EdgeKey::new(7, now_ms());
    key.name = Some("shop-1".into());
    key.region = Some("eu-west".into());
    key.dropped_at_edge = Some(4);
    writer
        .insert_batch(&key, &[rec(1), rec(2), rec(5)])
        .unwrap();
    writer.insert_batch(&key, &[rec(2)]).unwrap();
    // Last heard of long ago.
    writer
        .insert_batch(&EdgeKey::new(3, 1_000), &[rec(1)])
        .unwrap();

    let json = get(server.addr(), "/api/v1/edges").json();
    let edges = json["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2);
    let old = &edges[0];
    assert_eq!(old["id"], 3);
    assert_eq!(old["up"], false);
    assert_eq!(old["last_seen"], 1_000);
    assert!(old["name"].is_null());
    let e = &edges[1];
    assert_eq!(e["id"], 7);
    assert_eq!(e["name"], "shop-1");
    assert_eq!(e["region"], "eu-west");
    assert_eq!(e["up"], true);
    assert_eq!(e["last_seq"], 5);
    assert_eq!(e["received"], 3);
    assert_eq!(e["duplicates"], 1);
    assert_eq!(e["gaps"], 1);
    assert_eq!(e["dropped_at_edge"], 4);
    // Link quality is measured by a broker; an edge that talks to serve directly has none.
    assert!(e["rtt_ms"].is_null() && e["loss"].is_null(), "{e}");
    assert_eq!(e["first_seen"], key.received_at_ms);
    assert_eq!(e["last_seen"], key.received_at_ms);
    let mut fields: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "broker",
            "cfg",
            "dropped_at_edge",
            "duplicates",
            "first_seen",
            "gaps",
            "id",
            "last_seen",
            "last_seq",
            "loss",
            "name",
            "received",
            "region",
            "registered",
            "rtt_ms",
            "up"
        ]
    );
}

#[test]
fn unknown_paths_are_404_with_the_path() {
    let server = Running::start("404");
    for (target, path) in [
        ("/api/v1/nope?x=1", "/api/v1/nope"),
        // `/` is the dashboard (tests/dashboard.rs)
        ("/nope.html", "/nope.html"),
        ("/api/v1/health/", "/api/v1/health/"),
        ("/api/v2/health", "/api/v2/health"),
    ] {
        let reply = get(server.addr(), target);
        assert_eq!(reply.status, 404, "{target}");
        let json = reply.json();
        assert_eq!(json["path"], path);
        assert!(json["error"].is_string());
    }
}

#[test]
fn other_methods_are_405_with_allow() {
    let server = Running::start("405");
    for head in [
        "POST /api/v1/health HTTP/1.1\r\nContent-Length: 2",
        "DELETE /api/v1/edges HTTP/1.1",
        "PUT /api/v1/stats?x HTTP/1.1\r\nContent-Length: 2",
    ] {
        let body: &[u8] = if head.contains("Content-Length") {
            b"{}"
        } else {
            b""
        };
        let reply = exchange(server.addr(), head, body, true);
        assert_eq!(reply.status, 405, "{head}");
        assert_eq!(reply.header("Allow"), Some("GET, HEAD"));
        let json = reply.json();
        assert_eq!(json["error"], "method not allowed");
    }
}

#[test]
fn oversized_requests_are_refused() {
    let server = Running::start("413");
    // Declared too large: refused without reading it.
    let reply = exchange(
        server.addr(),
        "POST /api/v1/health HTTP/1.1\r\nContent-Length: 1000000",
        b"",
        true,
    );
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["limit_bytes"], 65536);

    // Chunked bodies are not supported (whatever their size): 411, asking for Content-Length.
    let chunk = vec![b'x'; 70_000];
    let mut body = format!("{:x}\r\n", chunk.len()).into_bytes();
    body.extend_from_slice(&chunk);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = exchange(
        server.addr(),
        "GET /api/v1/health HTTP/1.1\r\nTransfer-Encoding: chunked",
        &body,
        true,
    );
    assert_eq!(reply.status, 411);
    assert!(reply.json()["error"].is_string());

    // A request target that is too long.
    let long = format!("/api/v1/health?{}", "a".repeat(9000));
    let reply = get(server.addr(), &long);
    assert_eq!(reply.status, 414);
    assert!(reply.json()["error"].is_string());

    // The server still answers.
    assert_eq!(get(server.addr(), "/api/v1/health").status, 200);
}

#[test]
fn wait_returns_once_shutdown_is_set() {
    let dir = TempDir::new("http", "shutdown");
    let shutdown = Arc::new(AtomicBool::new(false));
    let handle = run_serve(&test_config(&dir), shutdown.clone()).unwrap();
    let addr = handle.http_addr();
    assert_eq!(get(addr, "/api/v1/health").status, 200);
    let flag = shutdown.clone();
    let setter = std::thread::spawn(move || flag.store(true, Ordering::SeqCst));
    handle.wait().unwrap();
    setter.join().unwrap();
    assert!(shutdown.load(Ordering::SeqCst));
}

#[test]
fn store_survives_a_restart_of_serve() {
    let dir = TempDir::new("http", "restart");
    let config = test_config(&dir);
    let first = run_serve(&config, Arc::new(AtomicBool::new(false))).unwrap();
    SqliteStore::open(first.database_path(), Synchronous::Normal)
        .unwrap()
        .insert_batch(&EdgeKey::new(1, now_ms()), &[rec(1)])
        .unwrap();
    first.stop().unwrap();
    let second = run_serve(&config, Arc::new(AtomicBool::new(false))).unwrap();
    let json = get(second.http_addr(), "/api/v1/stats").json();
    assert_eq!(json["store"]["records"], 1);
    second.stop().unwrap();
}

#[test]
fn an_address_in_use_is_reported_with_the_address() {
    let dir = TempDir::new("http", "in-use");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = test_config(&dir);
    config.http.listen = taken.local_addr().unwrap();
    let err = run_serve(&config, Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(matches!(err, ServeError::Http(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains(&taken.local_addr().unwrap().to_string()),
        "{err}"
    );
}

#[test]
fn a_data_dir_that_is_a_file_is_reported() {
    let dir = TempDir::new("http", "data-file");
    let mut config = test_config(&dir);
    std::fs::write(&config.store.data_dir, b"not a directory").unwrap();
    let err = run_serve(&config, Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(matches!(err, ServeError::DataDir { .. }), "{err:?}");
    assert!(err.to_string().contains("data"), "{err}");
    config.store.data_dir = dir.0.join("elsewhere");
    run_serve(&config, Arc::new(AtomicBool::new(false)))
        .unwrap()
        .stop()
        .unwrap();
}
