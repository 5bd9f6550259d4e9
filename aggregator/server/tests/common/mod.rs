//! What the integration tests of this crate share (not every test file uses every item).
#![allow(dead_code)]

use std::io::BufRead;
use std::path::PathBuf;

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `qos-aggregator-<kind>-<pid>-<name>-<n>`, empty.
    pub fn new(kind: &str, name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "qos-aggregator-{kind}-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One HTTP response read from a raw socket.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (checks the Content-Type).
    pub fn json(&self) -> Value {
        assert_eq!(self.header("Content-Type"), Some("application/json"));
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response; its body (per Content-Length) unless `head_only`.
pub fn read_reply(reader: &mut impl BufRead, head_only: bool) -> Reply {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_only {
        let len: usize = reply.header("Content-Length").unwrap().parse().unwrap();
        reply.body = vec![0; len];
        reader.read_exact(&mut reply.body).unwrap();
    }
    reply
}

/// A service model shared by the services and dashboard tests: one service (`shop`) measured
/// from two regions (edge 1 in `eu`, edge 2 in `us`, probe 0), behind per-region DNS and
/// network paths and a web → app → db chain.
pub const SHOP_MODEL: &str = r#"
[defaults]
window_s = 60
grace_s = 5
resolve_after = 3

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
quorum = 2
depends_on = ["dns-eu", "dns-us", "path-eu", "path-us", "web"]

[service.slo]
availability = 0.99

[[service.transaction]]
name = "home"
probes = [{ edge = 1, probe = 0, region = "eu" }, { edge = 2, probe = 0, region = "us" }]
"#;

/// One HTTP/1.1 request on a fresh connection: `headers` are extra header lines (each ending
/// in `\r\n`), `body` is sent with its Content-Length.
pub fn exchange_with(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
    body: &str,
) -> Reply {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut std::io::BufReader::new(stream), method == "HEAD")
}

/// `GET target` of the API at `addr`, which must answer 200 with JSON.
pub fn get(addr: std::net::SocketAddr, target: &str) -> Value {
    let r = exchange_with(addr, "GET", target, "", "");
    assert_eq!(
        r.status,
        200,
        "{target}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Polls `f` until it returns `Some` (a generous bound against hangs, not a timing assertion).
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_within(what, std::time::Duration::from_secs(90), f)
}

/// [`eventually`] with its own bound against hangs.
pub fn eventually_within<T>(
    what: &str,
    bound: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < bound, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An API server (`http::start_with`) on a store of its own, in a [`TempDir`] of `kind`.
pub struct ApiServer {
    pub http: Option<qos_aggregator::http::HttpServer>,
    _store: qos_aggregator::store::SqliteStore,
    _dir: TempDir,
}

impl ApiServer {
    /// `workers` readers of a fresh store; the limits and timeouts of `options`.
    pub fn start(
        kind: &str,
        name: &str,
        workers: usize,
        options: qos_aggregator::http::ServerOptions,
    ) -> ApiServer {
        use qos_aggregator::store::{SqliteStore, Store, StoreRead};
        let dir = TempDir::new(kind, name);
        let store = SqliteStore::open(
            &dir.0.join("db.sqlite"),
            qos_aggregator::config::Synchronous::Normal,
        )
        .unwrap();
        let readers = (0..workers)
            .map(|_| store.open_reader())
            .collect::<Result<Vec<Box<dyn StoreRead>>, _>>()
            .unwrap();
        let http = qos_aggregator::http::start_with(
            "127.0.0.1:0".parse().unwrap(),
            readers,
            std::sync::Arc::new(qos_aggregator::stats::IngestStats::new()),
            std::time::Instant::now(),
            options,
        )
        .unwrap();
        ApiServer {
            http: Some(http),
            _store: store,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.http.as_ref().unwrap().local_addr()
    }

    pub fn stop(mut self) {
        self.http.take().unwrap().stop();
    }
}
