//! Services end to end with real processes: `qos-aggregator serve` with a model of two
//! services, two `qos-edge` processes (regions `eu` and `us`) probing real local servers — an
//! HTTP server that calls a TCP "database", a DNS responder, and for `eu` a TCP relay in
//! front of the HTTP server — and component metrics pushed to `POST /api/v1/metrics`.
//!
//! Three faults, one after the other, each healed before the next:
//! (a) the database slows down → the HTTP server answers 503 in both regions → the top cause
//!     of the incident is `db`;
//! (b) the DNS responder fails the `eu` name → `eu`'s resolve transaction fails → `dns-eu`;
//! (c) the `eu` relay adds latency beyond the probe's timeout → `path-eu`.
//!
//! Windows are short (edges 1 s, model 2 s) and the model's timings scaled to them. Nothing
//! asserts on durations: conditions are polled with generous deadlines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qos_e2e::{fresh_dir, http_request, start_edge, EdgeSpec, Proc, Serve};
use serde_json::Value;

/// Milliseconds of delay a server applies, changed by the test.
type Knob = Arc<AtomicU64>;

/// The TCP "database": a line in, `OK` out after the knob's delay.
fn database(delay: Knob) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let delay = delay.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut s = s;
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
                    if s.write_all(b"OK\n").is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

/// The HTTP server: each request queries the database; an answer slower than 150 ms is a
/// 503 (the application's database timeout), else 200.
fn http_server(db: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut s = s;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let t = Instant::now();
                let ok = TcpStream::connect(db).is_ok_and(|mut c| {
                    let _ = c.set_read_timeout(Some(Duration::from_millis(150)));
                    let mut b = [0u8; 3];
                    c.write_all(b"Q\n").is_ok() && c.read_exact(&mut b).is_ok()
                }) && t.elapsed() < Duration::from_millis(150);
                let (status, body) = if ok {
                    ("200 OK", "ok")
                } else {
                    ("503 Service Unavailable", "db timeout")
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

/// A TCP relay to `upstream` that holds each connection's first bytes for the knob's delay.
fn relay(upstream: SocketAddr, delay: Knob) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let delay = delay.load(Ordering::SeqCst);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(delay));
                let Ok(server) = TcpStream::connect(upstream) else {
                    return;
                };
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut c, mut s) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut s, &mut c);
            });
        }
    });
    addr
}

/// The DNS responder: `eu.test` and `us.test` resolve, `eu.test` fails (SERVFAIL) while the
/// flag is set.
fn dns(fail_eu: Arc<AtomicBool>) -> SocketAddr {
    use qos_edge_core::probe::dns::build_response;
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut out = [0u8; 512];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            // the first label of the question (after the 12-byte header) is `eu`
            let eu = q.get(12..15) == Some(&b"\x02eu"[..]);
            let rcode = if eu && fail_eu.load(Ordering::SeqCst) {
                2
            } else {
                0
            };
            let addrs = if rcode == 0 {
                vec!["10.0.0.1".parse().unwrap()]
            } else {
                Vec::new()
            };
            if let Ok(m) = build_response(&mut out, q, rcode, &addrs) {
                let _ = s.send_to(&out[..m], from);
            }
        }
    });
    addr
}

const MODEL: &str = r#"
[defaults]
window_s = 2
grace_s = 2
lookback_s = 30
resolve_after = 2
# A shared, loaded test machine slows everything a little: only large phase changes count
# (the faults here multiply times or fail runs).
degradation_ratio = 3.0
flap_threshold = 100
flap_window_s = 60
stable_windows = 1

[[component]]
name = "dns-eu"
kind = "dns"
region = "eu"

[[component]]
name = "dns-us"
kind = "dns"
region = "us"

[[component]]
name = "path-eu"
kind = "network_path"
region = "eu"

[[component]]
name = "path-us"
kind = "network_path"
region = "us"

[[component]]
name = "web"
kind = "web"
depends_on = ["app"]

[[component]]
name = "app"
kind = "app"
depends_on = ["db"]

[[component]]
name = "db"
kind = "database"

[[service]]
name = "shop"
depends_on = ["dns-eu", "dns-us", "path-eu", "path-us", "web"]

[service.slo]
availability = 0.99

[[service.transaction]]
name = "home"
probes = [{ edge = 1, probe = 2, region = "eu" }, { edge = 2, probe = 2, region = "us" }]

[[service.transaction]]
name = "resolve"
probes = [{ edge = 1, probe = 3, region = "eu" }, { edge = 2, probe = 3, region = "us" }]

[[service]]
name = "status"
depends_on = ["path-eu", "path-us", "web"]

[[service.transaction]]
name = "connect"
probes = [{ edge = 1, probe = 1, region = "eu" }, { edge = 2, probe = 1, region = "us" }]
"#;

struct Faults {
    db: Knob,
    path_eu: Knob,
    dns_eu: Arc<AtomicBool>,
}

fn open_shop_incidents(serve: &Serve) -> Vec<Value> {
    serve
        .get_json("/api/v1/incidents?open=true")
        .ok()
        .and_then(|v| v["incidents"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|i| {
            i["subject"]["name"] == "shop"
                || i["affected"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s == "shop"))
        })
        .collect()
}

/// Polls until an open incident of `shop` has `expected` as its top cause.
fn expect_top_cause(serve: &Serve, expected: &str, edges: &mut [Proc]) -> Value {
    let start = Instant::now();
    let mut last = Vec::new();
    loop {
        let open = open_shop_incidents(serve);
        if let Some(i) = open
            .iter()
            .find(|i| i["causes"][0]["component"] == expected)
        {
            return i.clone();
        }
        if !open.is_empty() {
            last = open;
        }
        for e in edges.iter_mut() {
            assert!(e.exited().is_none(), "an edge exited\n{}", e.log_tail());
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no open incident of shop with top cause {expected}; open: {last:#?}\n{}",
            serve.proc.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Seconds of good history the engine needs before a fault: the model's `lookback_s`.
const LOOKBACK_S: u64 = 30;
/// The model's `window_s`.
const WINDOW_S: u64 = 2;

/// Polls until the store holds a lookback's worth of good windows of `shop` after `since`
/// (Unix s), from both regions: the baseline the ranking compares the fault with. A condition on
/// the data rather than a fixed sleep, so a slow machine waits longer instead of starting the
/// fault on a short or disturbed baseline.
fn wait_good_history(serve: &Serve, since: u64) {
    let start = Instant::now();
    let need = LOOKBACK_S / WINDOW_S;
    loop {
        let good = |region: &str| {
            serve
                .get_json(&format!(
                    "/api/v1/services/shop/series?from={since}&to={}&step={WINDOW_S}&region={region}",
                    unix_s() + WINDOW_S
                ))
                .ok()
                .and_then(|v| {
                    v["points"].as_array().map(|p| {
                        p.iter()
                            .filter(|p| {
                                p["runs"].as_u64().unwrap_or(0) > 0 && p["failures"] == 0
                            })
                            .count() as u64
                    })
                })
                .unwrap_or(0)
        };
        let (eu, us) = (good("eu"), good("us"));
        if eu >= need && us >= need {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no baseline after {since}: {eu} and {us} good windows of {need}\n{}",
            serve.proc.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_all_resolved(serve: &Serve) {
    let start = Instant::now();
    while !open_shop_incidents(serve).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "incidents stay open: {:#?}",
            open_shop_incidents(serve)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn incidents_name_the_database_a_regional_dns_and_a_regional_path() {
    let dir = fresh_dir(
        &std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("services"),
        "faults",
    );
    let faults = Faults {
        db: Arc::new(AtomicU64::new(0)),
        path_eu: Arc::new(AtomicU64::new(0)),
        dns_eu: Arc::new(AtomicBool::new(false)),
    };
    let db = database(faults.db.clone());
    let web = http_server(db);
    let eu_web = relay(web, faults.path_eu.clone());
    let resolver = dns(faults.dns_eu.clone());
    let model = dir.join("services.toml");
    std::fs::write(&model, MODEL).unwrap();
    let serve = Serve::start_with(
        &dir,
        &format!(
            "[model]\nfile = {:?}\nevaluate_s = 1\npoll_ms = 200\n",
            model.display().to_string()
        ),
    );

    let mut edges = Vec::new();
    for (id, region, url) in [(1u32, "eu", eu_web), (2, "us", web)] {
        let storage = dir.join(format!("edge-{id}-data"));
        let spec = EdgeSpec {
            id,
            brokers: vec![serve.coap],
            target: web,
            storage,
            extra_toml: format!(
                "[[probe]]\nid = 2\nkind = \"http\"\nurl = \"http://{url}/\"\n\
                 interval_ms = 500\ntimeout_ms = 400\n\n\
                 [[probe]]\nid = 3\nkind = \"dns\"\nresolver = \"{resolver}\"\n\
                 name = \"{region}.test\"\ninterval_ms = 500\ntimeout_ms = 400\n"
            ),
            bind: None,
        };
        edges.push(start_edge(&dir, &spec));
    }

    // Component metrics, pushed every second: what the database and the paths report.
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (stop, http) = (stop.clone(), serve.http);
        let (db, path) = (faults.db.clone(), faults.path_eu.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64();
                let body = format!(
                    "time,component,metric,value\n{t},db,query_ms,{}\n{t},path-eu,rtt_ms,{}\n\
                     {t},path-us,rtt_ms,1\n{t},web,cpu_percent,10\n",
                    db.load(Ordering::SeqCst) + 1,
                    path.load(Ordering::SeqCst) + 1
                );
                let _ = http_request(
                    http,
                    "POST",
                    "/api/v1/metrics",
                    &body,
                    Duration::from_secs(5),
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // Baseline: both services up, with a lookback's worth of history.
    let start = Instant::now();
    loop {
        let v = serve.get_json("/api/v1/services").unwrap_or(Value::Null);
        let up = v["services"]
            .as_array()
            .is_some_and(|l| l.len() == 2 && l.iter().all(|s| s["status"] == "up"));
        if up {
            break;
        }
        for e in edges.iter_mut() {
            assert!(e.exited().is_none(), "an edge exited\n{}", e.log_tail());
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "services never up: {v}\n{}",
            serve.proc.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_good_history(&serve, unix_s());

    // (a) a slow database
    faults.db.store(300, Ordering::SeqCst);
    let a = expect_top_cause(&serve, "db", &mut edges);
    assert_eq!(a["subject"]["name"], "shop");
    faults.db.store(0, Ordering::SeqCst);
    wait_all_resolved(&serve);
    wait_good_history(&serve, unix_s());

    // (b) DNS fails in eu
    faults.dns_eu.store(true, Ordering::SeqCst);
    let b = expect_top_cause(&serve, "dns-eu", &mut edges);
    assert_eq!(b["degraded_regions"], serde_json::json!(["eu"]), "{b:#}");
    faults.dns_eu.store(false, Ordering::SeqCst);
    wait_all_resolved(&serve);
    wait_good_history(&serve, unix_s());

    // (c) latency on eu's path, beyond the probe's timeout
    faults.path_eu.store(600, Ordering::SeqCst);
    let c = expect_top_cause(&serve, "path-eu", &mut edges);
    let id = c["id"].as_i64().unwrap();
    let detail = serve.get_json(&format!("/api/v1/incidents/{id}")).unwrap();
    assert!(
        !detail["drill_down"].as_array().unwrap().is_empty(),
        "{detail:#}"
    );
    faults.path_eu.store(0, Ordering::SeqCst);

    // The series of the incident's region shows the failures.
    let series = serve
        .get_json("/api/v1/services/shop/series?region=eu&step=10")
        .unwrap();
    let failures: u64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["failures"].as_u64().unwrap_or(0))
        .sum();
    assert!(failures > 0, "{series}");

    stop.store(true, Ordering::SeqCst);
    pusher.join().unwrap();
    for e in edges {
        e.stop(Duration::from_secs(10));
    }
    serve.proc.stop(Duration::from_secs(10));
}
