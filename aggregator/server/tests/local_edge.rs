//! The super-manager's local edge (`[local_edge]`, `[[probe]]`, `[[rule]]` in serve's
//! configuration): `serve` probes a real HTTP server and a real TCP listener on 127.0.0.1 itself;
//! its summaries are stored and shown like any edge's (`/api/v1/edges`, `/api/v1/summaries`,
//! service availability); stopping the servers makes the probes fail, the availability drop and
//! the threshold rule raise an event, stored in the SQLite file.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use minicbor::Decoder;
use qos_aggregator::config::Config;
use qos_aggregator::serve::run_serve;
use qos_aggregator::store::{SqliteReader, StoreRead};
use qos_wire::event::Event;
use qos_wire::uplink::RecordKind;

mod common;
use common::{eventually, get, TempDir};

const EDGE: u32 = 900;

/// A loopback HTTP server answering `200 OK` until `stop` is set; then its socket is closed
/// (connections are refused).
fn http_server(stop: Arc<AtomicBool>) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let thread = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let mut s = s;
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, thread)
}

fn config(dir: &Path, web: SocketAddr, tcp: SocketAddr) -> Config {
    let model = dir.join("model.toml");
    std::fs::write(
        &model,
        format!(
            r#"
[defaults]
window_s = 1
grace_s = 1

[[component]]
name = "web"
kind = "web"

[[service]]
name = "site"
quorum = 1
depends_on = ["web"]

[service.slo]
availability = 0.99

[[service.transaction]]
name = "home"
probes = [{{ edge = {EDGE}, probe = 1, region = "here" }}]
"#
        ),
    )
    .unwrap();
    let text = format!(
        r#"
[http]
listen = "127.0.0.1:0"

[coap]
listen = "127.0.0.1:0"

[store]
data_dir = "{data}"
synchronous = "normal"

[model]
file = "{model}"
evaluate_s = 1
poll_ms = 100

[local_edge]
id = {EDGE}
name = "centre"
region = "here"
window_s = 1
confirm_ms = 0

[[probe]]
id = 1
kind = "http"
url = "http://{web}/"
interval_ms = 200
timeout_ms = 200

[[probe]]
id = 2
kind = "tcp"
target = "{tcp}"
interval_ms = 200
timeout_ms = 200

[[rule]]
probe = 1
metric = "availability"
k = 2
n = 3
"#,
        data = dir.join("data").display(),
        model = model.display(),
    );
    Config::parse(&text, Path::new("serve.toml")).unwrap()
}

/// The local edge's summaries of `probe` stored so far: (ok, failed) each.
fn summaries(addr: SocketAddr, probe: u64) -> Vec<(u64, u64)> {
    get(addr, "/api/v1/summaries?since=0")["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["edge"] == EDGE && s["probe"] == probe)
        .map(|s| (s["ok"].as_u64().unwrap(), s["failed"].as_u64().unwrap()))
        .collect()
}

/// The threshold events of the local edge in the store: (raised, probe) each.
fn events(database: &Path) -> Vec<(bool, u16)> {
    let reader = SqliteReader::open(database).unwrap();
    reader
        .records(EDGE)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == RecordKind::Event as u8)
        .map(|r| {
            let mut d = Decoder::new(&r.body);
            assert_eq!(d.array().unwrap(), Some(2));
            assert_eq!(d.u8().unwrap(), RecordKind::Event as u8);
            let ev = Event::decode(&mut d).unwrap();
            (ev.raised, ev.probe.0)
        })
        .collect()
}

fn availability(addr: SocketAddr) -> Option<f64> {
    get(addr, "/api/v1/services?window_s=3600")["services"][0]["availability"].as_f64()
}

#[test]
fn serve_probes_local_servers_stores_summaries_and_sees_them_fail() {
    let dir = TempDir::new("local-edge", "probe");
    let stop_web = Arc::new(AtomicBool::new(false));
    let (web, web_thread) = http_server(stop_web.clone());
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = config(&dir.0, web, tcp.local_addr().unwrap());
    let h = run_serve(&c, Arc::new(AtomicBool::new(false))).unwrap();
    let addr = h.http_addr();
    let database = h.database_path().to_path_buf();

    // Both probes succeed; their windows are stored with the local edge's id and region.
    eventually("successful windows of both probes", || {
        let ok = |p| {
            summaries(addr, p)
                .iter()
                .any(|&(ok, failed)| ok > 0 && failed == 0)
        };
        (ok(1) && ok(2)).then_some(())
    });
    let edges = get(addr, "/api/v1/edges");
    let me = edges["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == EDGE)
        .unwrap_or_else(|| panic!("the local edge is listed: {edges}"));
    assert_eq!(me["name"], "centre");
    assert_eq!(me["region"], "here");
    assert_eq!(me["gaps"], 0, "{me}");
    assert_eq!(me["duplicates"], 0, "{me}");
    let first_seq = me["last_seq"].as_u64().unwrap();
    assert_eq!(first_seq >> 32, 1, "the first start is epoch 1: {me}");
    let region = get(addr, "/api/v1/summaries?since=0")["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["edge"] == EDGE)
        .unwrap()["region"]
        .clone();
    assert_eq!(region, "here");
    // The service's availability comes from the local edge's probe.
    eventually("the service judged up", || {
        availability(addr).filter(|&a| a == 1.0)
    });
    assert!(events(&database).is_empty(), "no threshold crossed yet");
    let stats = get(addr, "/api/v1/stats");
    assert!(stats["stored"].as_u64().unwrap() > 0, "{stats}");

    // The web server stops: its probe fails, the rule raises an event, availability drops.
    stop_web.store(true, Ordering::SeqCst);
    web_thread.join().unwrap();
    eventually("a raised availability event for probe 1", || {
        events(&database).contains(&(true, 1)).then_some(())
    });
    eventually("failed windows of probe 1", || {
        summaries(addr, 1)
            .iter()
            .any(|&(ok, failed)| ok == 0 && failed > 0)
            .then_some(())
    });
    eventually("the service's availability below 1", || {
        availability(addr).filter(|&a| a < 1.0)
    });
    // The TCP listener closes: its probe fails too.
    drop(tcp);
    eventually(
        "failed windows of probe 2 once its listener is gone",
        || {
            summaries(addr, 2)
                .iter()
                .any(|&(ok, failed)| ok == 0 && failed > 0)
                .then_some(())
        },
    );
    h.stop().unwrap();

    // A restart is a new epoch: nothing stored again, nothing taken for a duplicate.
    let h = run_serve(&c, Arc::new(AtomicBool::new(false))).unwrap();
    let addr = h.http_addr();
    let me = eventually("a batch of the second epoch", || {
        let edges = get(addr, "/api/v1/edges");
        edges["edges"]
            .as_array()?
            .iter()
            .find(|e| e["id"] == EDGE && e["last_seq"].as_u64().is_some_and(|s| s >> 32 == 2))
            .cloned()
    });
    assert_eq!(me["duplicates"], 0, "{me}");
    h.stop().unwrap();
}
