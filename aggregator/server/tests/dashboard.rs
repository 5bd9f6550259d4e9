//! The dashboard in a real headless Chromium, driven through chromedriver's W3C WebDriver HTTP
//! API over a plain loopback `TcpStream`: a real `serve` with a service model and 40 minutes of
//! stored summaries (a fault in the last 8 windows, the database's latency jumping with it), so
//! there are services, an open incident whose top cause is `db`, edges and an SLO. The test
//! asserts on what the page shows and saves screenshots under its temp dir (paths printed).
//! Skipped, with the reason printed, when `/usr/bin/chromium` or `/usr/bin/chromedriver` is
//! absent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use qos_aggregator::config::{Config, Synchronous};
use qos_aggregator::http::auth::{self, Role, TokenEntry};
use qos_aggregator::serve::{run_serve, ServeHandle};
use qos_aggregator::services::db::summary_record;
use qos_aggregator::store::{EdgeKey, SqliteStore, Store};
use serde_json::{json, Value};

mod common;
use common::{eventually, exchange_with, free_port, get, Reply, TempDir, SHOP_MODEL};

fn exchange(addr: SocketAddr, method: &str, target: &str, headers: &str) -> Reply {
    exchange_with(addr, method, target, headers, "")
}

/// A serve with the model, two edges (eu, us) with 40 one-minute windows each (the last 8
/// failing) and the database's latency metric jumping at the fault.
fn start_serve(dir: &TempDir) -> ServeHandle {
    start_serve_with(dir, Vec::new())
}

/// [`start_serve`] with these API tokens configured.
fn start_serve_with(dir: &TempDir, tokens: Vec<TokenEntry>) -> ServeHandle {
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
    // A browser keeps several idle keep-alive connections, each holding a worker.
    c.http.workers = 8;
    c.http.tokens = tokens;
    let now = qos_aggregator::services::now_s();
    let base = (now - now % 600) - 40 * 60;
    let fault = base + 32 * 60;
    std::fs::create_dir_all(&c.store.data_dir).unwrap();
    let mut store = SqliteStore::open(&c.store.database_path(), Synchronous::Normal).unwrap();
    for (edge, name, region) in [(1u32, "paris-1", "eu"), (2, "ohio-1", "us")] {
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
        let key = EdgeKey {
            name: Some(name.into()),
            region: Some(region.into()),
            dropped_at_edge: Some(u64::from(edge) * 3),
            ..EdgeKey::new(edge, now * 1000)
        };
        store.insert_batch(&key, &recs).unwrap();
    }
    drop(store);
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
    let file = dir.0.join("metrics.csv");
    std::fs::write(&file, &csv).unwrap();
    qos_aggregator::services::metrics::import_csv(&c.store.database_path(), &file).unwrap();
    run_serve(&c, Arc::new(AtomicBool::new(false))).unwrap()
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A free loopback port (bound, read, released).
/// Reads one HTTP/1.1 answer (chromedriver keeps connections open and writes
/// `Content-Length:N` without a space): its status and body.
fn read_answer(s: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((status, body))
}

/// chromedriver, ended (by its process id) when dropped.
struct Driver {
    child: Child,
    port: u16,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        // A bound against a hung browser, not a timing assertion.
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )?;
        let (status, body) = read_answer(&mut s)?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// A WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.try_call(method, path, body).unwrap();
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn start(profile: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut d = Driver {
            child,
            port,
            session: String::new(),
        };
        eventually("chromedriver answers", || {
            d.try_call("GET", "/status", None)
                .ok()
                .filter(|(_, v)| v["value"]["ready"] == true)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,1024",
                    format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let v = d.call("POST", "/session", Some(&caps));
        d.session = v["sessionId"].as_str().unwrap().to_string();
        d
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}/{rest}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("url"), Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; its return value.
    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("execute/sync"),
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Waits until `script` returns something other than null/false; that value.
    fn wait(&self, what: &str, script: &str) -> Value {
        eventually(what, || {
            let v = self.js(script);
            (!v.is_null() && v != false).then_some(v)
        })
    }

    fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.s("screenshot"), None);
        std::fs::write(path, base64_decode(b64.as_str().unwrap())).unwrap();
        println!("screenshot: {}", path.display());
    }

    /// The browser's console entries since the last call.
    fn console(&self) -> Vec<Value> {
        match self.try_call("POST", &self.s("se/log"), Some(&json!({"type": "browser"}))) {
            Ok((200, v)) => v["value"].as_array().cloned().unwrap_or_default(),
            other => panic!("the browser's log is not readable: {other:?}"),
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn assets_have_types_etags_and_revalidate() {
    let dir = TempDir::new("dashboard", "assets");
    let h = start_serve(&dir);
    let addr = h.http_addr();
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/charts.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let r = exchange(addr, "GET", path, "");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Content-Type"), Some(ty), "{path}");
        assert_eq!(r.header("Cache-Control"), Some("no-cache"), "{path}");
        let tag = r.header("ETag").unwrap().to_string();
        let again = exchange(addr, "GET", path, &format!("If-None-Match: {tag}\r\n"));
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        let stale = exchange(addr, "GET", path, "If-None-Match: \"0\"\r\n");
        assert_eq!(stale.status, 200);
    }
    assert_eq!(exchange(addr, "POST", "/", "").status, 405);
    assert_eq!(exchange(addr, "GET", "/nope.js", "").status, 404);
    h.stop().unwrap();
}

/// Whether chromium and chromedriver are installed (else the reason is printed).
fn browser_present() -> bool {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(bin).exists() {
            println!("skipped: {bin} is absent (apt-get install chromium chromium-driver)");
            return false;
        }
    }
    true
}

/// With tokens configured the dashboard asks for one: a wrong token is refused with the
/// server's reason, a viewer token (kept in sessionStorage, sent as a bearer token) shows the
/// service map, signing out asks again.
#[test]
fn dashboard_signs_in_with_a_viewer_token() {
    if !browser_present() {
        return;
    }
    let dir = TempDir::new("dashboard", "sign-in");
    let token = auth::new_token().unwrap();
    let entry = TokenEntry {
        name: "wall".into(),
        role: Role::Viewer,
        sha256: auth::hex(&auth::sha256(token.as_bytes())),
    };
    let h = start_serve_with(&dir, vec![entry]);
    let addr = h.http_addr();
    assert_eq!(exchange(addr, "GET", "/api/v1/services", "").status, 401);
    let d = Driver::start(&dir.0.join("chromium-profile"));
    d.go(&format!("http://{addr}/#/map"));
    let asked = d.wait(
        "the sign-in form",
        "return !document.getElementById('login').hidden && document.querySelector('main h2')?.textContent === 'Sign in' && document.activeElement.id === 'token' || null;",
    );
    assert_eq!(asked, true);
    let input = d.call(
        "POST",
        &d.s("element"),
        Some(&json!({"using": "css selector", "value": "#token"})),
    );
    let input = input
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let type_and_submit = |text: &str| {
        d.call(
            "POST",
            &d.s(&format!("element/{input}/value")),
            Some(&json!({ "text": format!("{text}\u{E007}") })),
        );
    };
    type_and_submit("qos_not-a-token");
    let refused = d.wait(
        "the wrong token refused",
        "const p = document.querySelector('main p[role=alert]'); return p && p.textContent.includes('not valid') ? p.textContent : null;",
    );
    assert!(refused.as_str().unwrap().contains("token"), "{refused}");
    type_and_submit(&token);
    let nodes = d.wait(
        "the service map after signing in",
        "return document.querySelectorAll('svg g.node').length || null;",
    );
    assert!(nodes.as_u64().unwrap() >= 2);
    let state = d.js(
        "return [sessionStorage.getItem('qos-token'), document.getElementById('login').hidden, document.getElementById('logout').hidden];",
    );
    assert_eq!(state, json!([token, true, false]));
    d.screenshot(&dir.0.join("signed-in.png"));
    d.js("document.getElementById('logout').click(); return 1;");
    d.wait(
        "the sign-in form again after signing out",
        "return !document.getElementById('login').hidden && sessionStorage.getItem('qos-token') === null || null;",
    );
    drop(d);
    h.stop().unwrap();
}

#[test]
fn dashboard_in_headless_chromium() {
    if !browser_present() {
        return;
    }
    let dir = TempDir::new("dashboard", "browser");
    // Screenshots outlive the test's temp dir so they can be looked at.
    let shots =
        std::env::temp_dir().join(format!("qos-dashboard-screenshots-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    let h = start_serve(&dir);
    let addr = h.http_addr();
    let incident = eventually("an open incident", || {
        let v = get(addr, "/api/v1/incidents?open=true");
        v["incidents"].as_array().and_then(|l| l.first().cloned())
    });
    let top = incident["causes"][0]["component"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(top, "db");
    let id = incident["id"].as_i64().unwrap();
    let base = format!("http://{addr}/");
    let profile = dir.0.join("chromium-profile");
    let d = Driver::start(&profile);

    // The service map: the service and its components; the top cause is the red, outlined node.
    d.go(&format!("{base}#/map"));
    let nodes = d.wait(
        "the service map",
        "const n = [...document.querySelectorAll('svg g.node')];
         return n.length ? n.map(g => ({id: g.dataset.id, status: g.dataset.status,
           cause: g.classList.contains('cause'), fill: g.querySelector('rect').getAttribute('fill'),
           label: g.getAttribute('aria-label')})) : null;",
    );
    let nodes = nodes.as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    for want in [
        "service:shop",
        "component:db",
        "component:app",
        "component:web",
        "component:dns-eu",
    ] {
        assert!(ids.contains(&want), "{want} not on the map: {ids:?}");
    }
    let causes: Vec<&Value> = nodes.iter().filter(|n| n["cause"] == true).collect();
    assert_eq!(causes.len(), 1, "{nodes:?}");
    assert_eq!(causes[0]["id"], format!("component:{top}"));
    assert_eq!(causes[0]["fill"], "#c62828", "the cause is drawn red");
    assert!(causes[0]["label"]
        .as_str()
        .unwrap()
        .contains("suspected root cause"));
    let banner = d.wait(
        "the incident banner",
        "return document.getElementById('alerts').textContent || null;",
    );
    assert!(
        banner
            .as_str()
            .unwrap()
            .contains(&format!("top cause {top}")),
        "{banner}"
    );
    let text = d.js("return document.querySelector('main').innerText;");
    assert!(text.as_str().unwrap().contains("shop"));
    d.screenshot(&shots.join("1-service-map.png"));
    // Keyboard: Enter on the focused service node opens its drill-down.
    let node = d.call(
        "POST",
        &d.s("element"),
        Some(&json!({"using": "css selector", "value": "g.node[data-id='service:shop']"})),
    );
    let node = node
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    d.call(
        "POST",
        &d.s(&format!("element/{node}/value")),
        Some(&json!({"text": "\u{E007}"})),
    );
    d.wait(
        "the drill-down opened by keyboard",
        "return location.hash === '#/service/shop' && document.querySelector('main h2')?.textContent.startsWith('Service shop') || null;",
    );

    // The incident: ranked causes, evidence and the drill-down with its charts.
    d.go(&format!("{base}#/incident/{id}"));
    let first = d.wait(
        "the incident's causes",
        "const c = document.querySelector('ol.causes .cause-name'); return c ? c.textContent : null;",
    );
    assert_eq!(first, top.as_str());
    let detail = d.js("return document.querySelector('main').innerText;");
    let detail = detail.as_str().unwrap();
    assert!(detail.contains("query_ms up"), "evidence shown: {detail}");
    for level in ["service", "phase", "component", "metric"] {
        assert!(
            detail.contains(&format!(": {level}")) || detail.contains(&format!(". {level}")),
            "{level} step: {detail}"
        );
    }
    let charts = d.js("return document.querySelectorAll('.chain svg[role=img]').length;");
    assert!(charts.as_u64().unwrap() >= 1, "drill-down charts");
    d.screenshot(&shots.join("2-incident.png"));

    // Edges.
    d.go(&format!("{base}#/infra"));
    let rows = d.wait(
        "the edges table",
        "const r = [...document.querySelectorAll('#edges-table tbody tr')];
         return r.length ? r.map(tr => [...tr.cells].map(td => td.textContent)) : null;",
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "1");
    assert_eq!(rows[0][1], "paris-1");
    assert_eq!(rows[0][2], "eu");
    assert_eq!(rows[0][8], "3");
    assert_eq!(rows[1][1], "ohio-1");
    assert_eq!(rows[1][2], "us");
    let links = d.js(
        "return ['e:1', 'e:2', 'sm'].map(id => !!document.querySelector(`g.node[data-id='${id}']`));",
    );
    assert_eq!(
        links,
        json!([true, true, true]),
        "edges and the super-manager drawn"
    );
    d.screenshot(&shots.join("3-edges.png"));

    // SLOs: the budget shown is the API's.
    let slo = get(addr, "/api/v1/slos");
    let want = slo["slos"][0]["budget"]["availability"]["remaining_ratio"]
        .as_f64()
        .unwrap()
        * 100.0;
    d.go(&format!("{base}#/slos"));
    let shown = d.wait(
        "the SLO budget",
        "const b = document.querySelector('.slo-table .budget'); return b ? b.textContent : null;",
    );
    let shown = shown.as_str().unwrap();
    let figure: f64 = shown.trim_end_matches(" %").parse().unwrap();
    assert!((figure - want).abs() < 0.051, "page {shown}, API {want}");
    d.screenshot(&shots.join("4-slos.png"));

    // The service drill-down; the period picker by keyboard-reachable buttons.
    d.go(&format!("{base}#/service/shop?period=1h"));
    d.wait(
        "the service charts",
        "return document.querySelectorAll('main figure svg').length >= 3 || null;",
    );
    d.js("[...document.querySelectorAll('.picker button')].find(b => b.textContent === '6h').click(); return 1;");
    d.wait(
        "the 6 h period",
        "return (location.hash.endsWith('period=6h') && document.querySelector('.picker button[aria-pressed=true]')?.textContent === '6h') || null;",
    );
    let figs =
        d.js("return [...document.querySelectorAll('main figcaption')].map(f => f.textContent);");
    let figs = figs.to_string();
    for want in [
        "Response time by phase",
        "Total time percentiles",
        "Availability",
    ] {
        assert!(figs.contains(want), "{want}: {figs}");
    }
    // A chart's data table.
    d.js("document.querySelector('main figure button').click(); return 1;");
    let rows =
        d.js("return document.querySelector('main figure .sr-table.shown tbody').rows.length;");
    assert!(rows.as_u64().unwrap() > 0);
    d.screenshot(&shots.join("5-service.png"));

    // No errors in the browser's console.
    let errors: Vec<Value> = d
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    drop(d);
    h.stop().unwrap();
}
