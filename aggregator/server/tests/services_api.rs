//! The services of `serve` (model, engine, incidents, SLOs, metrics push, scraping, webhooks,
//! restart) against a real server on 127.0.0.1 with summaries written straight to its store
//! (standing in for the ingest), placed in the past so the engine judges them at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use qos_aggregator::config::{Config, Synchronous};
use qos_aggregator::serve::{run_serve, ServeHandle};
use qos_aggregator::services::config::{ScrapeEntry, WebhookEntry};
use qos_aggregator::services::db::summary_record;
use qos_aggregator::store::{EdgeKey, SqliteStore, Store};

mod common;
use common::{eventually, exchange_with, get, Reply, TempDir, SHOP_MODEL};

fn exchange(addr: SocketAddr, method: &str, target: &str, body: &str) -> Reply {
    exchange_with(addr, method, target, "", body)
}

/// A loopback HTTP server answering every request with `body` (status 200), counting them.
fn serve_text(body: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut b = vec![0u8; len];
            let _ = r.read_exact(&mut b);
            h.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, hits)
}

const NODE_EXPORTER: &str = "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1.23456e+06
node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 12345.67
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.42
# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.
# TYPE node_memory_MemAvailable_bytes gauge
node_memory_MemAvailable_bytes 8.123456512e+09
# TYPE node_scrape_collector_duration_seconds gauge
node_scrape_collector_duration_seconds{collector=\"cpu\"} 0.000123
";

const MALFORMED: &str = "# TYPE up gauge
up 1
this is { not a sample
node_broken{mode=\"idle} 3
node_nan NaN
";

fn config(dir: &TempDir, model: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.coap.listen = "127.0.0.1:0".parse().unwrap();
    c.store.data_dir = dir.0.join("data");
    c.store.synchronous = Synchronous::Normal;
    c.model.file = Some(model.to_path_buf());
    c.model.evaluate_s = 1;
    c.model.poll_ms = 100;
    c
}

#[test]
fn model_engine_incidents_metrics_webhooks_and_restart() {
    let dir = TempDir::new("services", "all");
    let model = dir.0.join("services.toml");
    std::fs::write(&model, SHOP_MODEL).unwrap();
    let (hook, hook_hits) = serve_text("ok");
    let (node, node_hits) = serve_text(NODE_EXPORTER);
    let (bad, bad_hits) = serve_text(MALFORMED);
    let mut c = config(&dir, &model);
    c.webhooks.push(WebhookEntry {
        url: format!("http://{hook}/hook"),
    });
    for (addr, component) in [(node, "host-db"), (bad, "host-bad")] {
        c.scrapes.push(ScrapeEntry {
            url: format!("http://{addr}/metrics"),
            component: component.into(),
            interval_s: 1,
        });
    }
    // 40 minutes of history: good until 8 windows ago, then both regions fail; the database's
    // latency jumps at the same moment.
    let now = qos_aggregator::services::now_s();
    let base = (now - now % 600) - 40 * 60;
    let fault = base + 32 * 60;
    // Written before the start: the engine judges each window once, when it is due, so the
    // past reaches it through the replay at start.
    std::fs::create_dir_all(&c.store.data_dir).unwrap();
    let mut store = SqliteStore::open(&c.store.database_path(), Synchronous::Normal).unwrap();
    for edge in [1u32, 2] {
        let recs: Vec<_> = (0..40u64)
            .map(|i| {
                let start = base + i * 60;
                let (failed, total) = if start >= fault {
                    (8, 400_000)
                } else {
                    (0, 40_000)
                };
                summary_record(i, 0, start as u32, 60, 10 - failed, failed, total)
            })
            .collect();
        store
            .insert_batch(&EdgeKey::new(edge, now * 1000), &recs)
            .unwrap();
    }
    // Component metrics, imported as `qos-aggregator import --csv` does.
    let mut csv = String::from("time,component,metric,value\n");
    for t in (base..now).step_by(15) {
        let lat = if t >= fault {
            900.0
        } else {
            5.0 + (t % 7) as f64
        };
        csv.push_str(&format!("{t},db,query_ms,{lat}\n"));
        csv.push_str(&format!("{t},web,cpu,{}\n", 20.0 + (t % 5) as f64));
    }
    csv.push_str("x,db,query_ms,1\n1,db,query_ms,NaN\n");
    let file = dir.0.join("metrics.csv");
    std::fs::write(&file, &csv).unwrap();
    let (n, rejected) =
        qos_aggregator::services::metrics::import_csv(&c.store.database_path(), &file).unwrap();
    assert_eq!((n as usize, rejected), (csv.lines().count() - 3, 2));
    let h: ServeHandle = run_serve(&c, Arc::new(AtomicBool::new(false))).unwrap();
    let addr = h.http_addr();
    let r = exchange(addr, "POST", "/api/v1/metrics", &csv);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["rejected"], 2);
    assert_eq!(v["errors"][0]["line"], csv.lines().count() - 1);
    // strict: nothing written
    let r = exchange(
        addr,
        "POST",
        "/api/v1/metrics?strict=true",
        "time,component,metric,value\n1,db,x,1\n2,db,x,\n",
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("nothing written"));

    // The engine opens an incident whose top cause is the database.
    let incident = eventually("an open incident", || {
        let v = get(addr, "/api/v1/incidents?open=true");
        v["incidents"].as_array().and_then(|l| l.first().cloned())
    });
    assert_eq!(incident["subject"]["name"], "shop");
    assert_eq!(incident["causes"][0]["component"], "db", "{incident:#}");
    let id = incident["id"].as_i64().unwrap();
    let detail = get(addr, &format!("/api/v1/incidents/{id}"));
    let steps = detail["drill_down"].as_array().unwrap();
    assert!(!steps.is_empty());
    let with_points = steps
        .iter()
        .flat_map(|s| s["series"].as_array().unwrap().iter())
        .any(|s| s["points"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(with_points, "{detail:#}");

    let services = get(addr, "/api/v1/services");
    let shop = &services["services"][0];
    assert_eq!(shop["name"], "shop");
    // down while the failing windows are the last; unknown once a window passed without data
    assert!(
        matches!(shop["status"].as_str(), Some("down" | "unknown")),
        "{shop}"
    );
    assert!(shop["availability"].as_f64().unwrap() < 1.0);
    assert!(shop["p95_us"].as_u64().unwrap() >= 40_000);
    let one = get(addr, "/api/v1/services/shop");
    assert_eq!(one["regions"], serde_json::json!(["eu", "us"]));
    // the 1 h window holds the failing windows (the last 5 min may hold none)
    assert!(
        one["burn_rates"][0]["long_burn"].as_f64().unwrap() > 1.0,
        "{one}"
    );
    assert!(one["budget"]["availability"]["consumed"].is_number());
    let series = get(
        addr,
        &format!(
            "/api/v1/services/shop/series?from={base}&to={}&step=600&region=eu&phase=connect",
            base + 2400
        ),
    );
    let pts = series["points"].as_array().unwrap();
    assert_eq!(pts.len(), 4);
    assert_eq!(pts[0]["runs"], 100);
    assert_eq!(pts[3]["failures"], 64);
    assert!(pts[0]["phase"]["mean_us"].as_u64().unwrap() > 0);
    for bad_query in [
        "/api/v1/services/shop/series?phase=nope",
        "/api/v1/services/shop/series?region=mars",
        "/api/v1/services/shop/series?from=10&to=5",
        "/api/v1/services/shop/series?step=x",
        "/api/v1/incidents?open=maybe",
        "/api/v1/incidents/abc",
    ] {
        let r = exchange(addr, "GET", bad_query, "");
        assert_eq!(r.status, 400, "{bad_query}");
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(
        exchange(addr, "GET", "/api/v1/services/nope", "").status,
        404
    );
    let slos = get(addr, "/api/v1/slos");
    assert_eq!(slos["slos"][0]["service"], "shop");
    let topo = get(addr, "/api/v1/topology");
    assert!(topo["service_map"]["links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["from"] == "component:app" && l["to"] == "component:db"));

    // Webhook deliveries are logged.
    eventually("a delivered notification", || {
        let v = get(addr, "/api/v1/notifications");
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["delivered"] == true && d["type"] == "incident_opened")
            .then_some(())
    });
    assert!(hook_hits.load(Ordering::SeqCst) >= 1);

    // Scrapes: counters become rates after two scrapes; the malformed endpoint's good lines
    // are kept.
    let db = rusqlite::Connection::open(h.database_path()).unwrap();
    eventually("scraped rates", || {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM component_metrics WHERE component = 'host-db'
                 AND metric = 'node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (n >= 1 && node_hits.load(Ordering::SeqCst) >= 2).then_some(())
    });
    let gauge: f64 = db
        .query_row(
            "SELECT value FROM component_metrics WHERE component = 'host-db' AND metric = 'node_load1' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gauge, 0.42);
    eventually("the malformed endpoint scraped", || {
        (bad_hits.load(Ordering::SeqCst) >= 1).then_some(())
    });
    let kept: Vec<String> = db
        .prepare("SELECT DISTINCT metric FROM component_metrics WHERE component = 'host-bad'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, ["up"]);

    // The model: invalid ones are refused with the reason and change nothing.
    let r = exchange(addr, "PUT", "/api/v1/model", "[[service]]\nname = 1\n");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("invalid service model"));
    let r = exchange(
        addr,
        "PUT",
        "/api/v1/model",
        "{\"service\":[{\"name\":\"x\",\"depends_on\":[\"missing\"]}]}",
    );
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let m = get(addr, "/api/v1/model");
    assert_eq!(m["origin"], "file");
    assert_eq!(m["model"]["service"][0]["name"], "shop");

    // A restart rebuilds the engine from the store: the same incident is open, same id.
    h.stop().unwrap();
    let h = run_serve(&c, Arc::new(AtomicBool::new(false))).unwrap();
    let addr = h.http_addr();
    let v = get(addr, "/api/v1/incidents?open=true");
    let ids: Vec<i64> = v["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [id]);
    let status = get(addr, "/api/v1/services")["services"][0]["status"].clone();
    assert!(
        matches!(status.as_str(), Some("down" | "unknown")),
        "{status}"
    );

    // A valid model through the API replaces it atomically.
    let r = exchange(
        addr,
        "PUT",
        "/api/v1/model",
        &SHOP_MODEL.replace("shop", "store"),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["origin"], "api");
    assert_eq!(
        get(addr, "/api/v1/services")["services"][0]["name"],
        "store"
    );
    h.stop().unwrap();
}
