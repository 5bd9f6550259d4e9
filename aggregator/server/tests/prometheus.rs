//! A real Prometheus server scrapes `GET /metrics` of `serve`: Debian's `prometheus` (installed
//! by `.ci/run` with promtool) runs with a temporary configuration and storage, scraping serve on
//! loopback every second; its query API must return our series — a service indicator per
//! region and phase, an SLO's remaining error budget, ingest self-metrics — with the values serve
//! reports, `up == 1` and a target without scrape errors.
//!
//! Skipped (with a message) when `prometheus` is not installed, except under CI (`CI=true`),
//! where that fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use qos_aggregator::config::{Config, Synchronous};
use qos_aggregator::serve::run_serve;
use qos_aggregator::services::db::summary_record;
use qos_aggregator::store::{EdgeKey, SqliteStore, Store};
use qos_coap::{option, Code, MessageType, MessageWriter};
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::samples;
use qos_wire::summary::Summary;
use serde_json::Value;

mod common;
use common::{eventually_within, exchange_with, free_port, TempDir, SHOP_MODEL};

/// A bound against hangs, not a timing assertion.
const WAIT: Duration = Duration::from_secs(120);

/// The Prometheus process, killed (SIGKILL, by its PID) and reaped on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_installed() -> bool {
    Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `GET target` over HTTP/1.0 (the answer ends with the connection: no chunking); the status
/// and the body.
fn http10(addr: SocketAddr, target: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the one series `query` selects, as Prometheus' instant query returns it.
fn query(prom: SocketAddr, q: &str) -> Option<f64> {
    let (status, body) = http10(prom, &format!("/api/v1/query?query={}", percent_encode(q)))?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

/// The value of the series written exactly as `series` (name and labels) in serve's /metrics.
fn serve_value(serve: SocketAddr, series: &str) -> Option<f64> {
    let r = exchange_with(serve, "GET", "/metrics", "", "");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Sends one confirmable `POST /u` with `payload` and waits for its acknowledgement (2.04).
fn post_batch(to: SocketAddr, payload: &[u8]) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let mut w =
        MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, 7, &[7]).unwrap();
    w.uri_path("u").unwrap();
    w.uint_option(option::CONTENT_FORMAT, 60).unwrap();
    w.payload(payload).unwrap();
    let n = w.finish();
    let mut rx = [0u8; 1500];
    eventually_within("the batch acknowledged", WAIT, || {
        sock.send_to(&buf[..n], to).unwrap();
        let (got, _) = sock.recv_from(&mut rx).ok()?;
        let m = qos_coap::Message::parse(&rx[..got]).ok()?;
        (m.code() == Code::CHANGED).then_some(())
    });
}

fn start_prometheus(dir: &Path, scrape: SocketAddr) -> (Prometheus, SocketAddr) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: qos\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['{scrape}']\n"
        ),
    )
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    (Prometheus(child), addr)
}

#[test]
fn a_real_prometheus_scrapes_our_series_with_our_values() {
    if !prometheus_installed() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prometheus is not installed under CI (Debian package prometheus, see .ci/run)"
        );
        println!("SKIPPED: prometheus is not installed (Debian package prometheus)");
        return;
    }
    let dir = TempDir::new("prometheus", "scrape");
    let model = dir.0.join("services.toml");
    std::fs::write(&model, SHOP_MODEL).unwrap();
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.coap.listen = "127.0.0.1:0".parse().unwrap();
    c.store.data_dir = dir.0.join("data");
    c.store.synchronous = Synchronous::Normal;
    c.model.file = Some(model);
    c.model.evaluate_s = 1;
    c.model.poll_ms = 100;
    // 30 one-minute windows of both regions, the last ending 10 minutes ago (inside the
    // indicators' hour, judged at once by the replay at start): both regions fail in 3 of
    // them (the service is down: SLO budget spent), region us in one more.
    let now = qos_aggregator::services::now_s();
    let base = (now - now % 60) - 40 * 60;
    std::fs::create_dir_all(&c.store.data_dir).unwrap();
    let mut store = SqliteStore::open(&c.store.database_path(), Synchronous::Normal).unwrap();
    for edge in [1u32, 2] {
        let recs: Vec<_> = (0..30u64)
            .map(|i| {
                let failed = if i % 10 == 3 || (edge == 2 && i == 5) {
                    8
                } else {
                    0
                };
                summary_record(
                    i,
                    0,
                    (base + i * 60) as u32,
                    60,
                    10 - failed,
                    failed,
                    40_000,
                )
            })
            .collect();
        store
            .insert_batch(&EdgeKey::new(edge, now * 1000), &recs)
            .unwrap();
    }
    drop(store);
    let h = run_serve(&c, Arc::new(AtomicBool::new(false))).unwrap();
    let serve = h.http_addr();
    // An edge outside the model sends a real batch through the CoAP ingest.
    let sums: Vec<Summary<128>> = (0..3).map(|i| samples::http_summary(i, 10, 0)).collect();
    post_batch(
        h.coap_addr(),
        &samples::batch(EdgeId(3), Seq::first_of_epoch(1), 0, &sums).unwrap(),
    );

    // The engine has judged the failing windows once their budget is spent.
    let budget = r#"qos_slo_error_budget_remaining_ratio{service="shop",sli="availability"}"#;
    eventually_within("the budget spent", WAIT, || {
        serve_value(serve, budget).filter(|&b| b < 1.0)
    });
    // The series serve reports (each must be there before Prometheus is asked).
    let series = [
        r#"qos_service_availability_ratio{service="shop",region="eu"}"#,
        r#"qos_service_availability_ratio{service="shop",region="us"}"#,
        r#"qos_service_phase_mean_seconds{service="shop",region="us",phase="connect"}"#,
        r#"qos_service_phase_p95_seconds{service="shop",region="eu",phase="total"}"#,
        budget,
        r#"qos_ingest_stored_total"#,
        r#"qos_edge_received_total{edge="3"}"#,
    ];
    let expected: Vec<f64> = series
        .iter()
        .map(|s| {
            eventually_within(&format!("{s} in serve's /metrics"), WAIT, || {
                serve_value(serve, s)
            })
        })
        .collect();
    assert!(expected[0] < 1.0, "region eu failed in some windows");
    assert!(expected[1] < expected[0], "region us failed in one more");
    assert_eq!(expected[5], 3.0, "the three records of the batch");

    // The exposition with the services' families passes the format check (promtool comes in the
    // same package).
    let text = exchange_with(serve, "GET", "/metrics", "", "").body;
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check.stdin.take().unwrap().write_all(&text).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (_prometheus, prom) = start_prometheus(&dir.0, serve);
    for (s, want) in series.iter().zip(&expected) {
        let got = eventually_within(&format!("{s} in Prometheus"), WAIT, || query(prom, s));
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{s}: Prometheus has {got}, serve reported {want}"
        );
    }
    assert_eq!(query(prom, r#"up{job="qos"}"#), Some(1.0));
    let (status, body) = http10(prom, "/api/v1/targets").expect("targets");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let targets = v["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{v}");
    assert_eq!(targets[0]["health"], "up", "{v}");
    assert_eq!(targets[0]["lastError"], "", "{v}");
    assert_eq!(targets[0]["scrapeUrl"], format!("http://{serve}/metrics"));
    // Prometheus read every sample of the exposition (nothing dropped as unparsable).
    let scraped = eventually_within("scrape_samples_scraped", WAIT, || {
        query(prom, r#"scrape_samples_scraped{job="qos"}"#)
    });
    assert!(scraped >= series.len() as f64, "{scraped}");
    h.stop().unwrap();
}
