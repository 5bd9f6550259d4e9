//! The demo's real local services, on 127.0.0.0/8 only, each with a fault knob:
//!
//! - [`Db`]: a database-like TCP line server: `GET k` → `VAL v`. A small engine serves at most
//!   [`DB_WORKERS`] queries at once; the rest queue. Knob: extra time per query.
//! - [`App`]: an HTTP/1.1 application: every request does some CPU work and one database query
//!   over a new connection; 200 with the value, 503 when the database fails.
//! - [`Dns`]: a DNS responder (UDP) answering A queries with 127.0.0.1 for every name. Knob:
//!   answer SERVFAIL instead.
//! - [`start_load`]: a few users calling the application, so it has a request rate of its own.
//!
//! Every server accepts at most [`MAX_CONNECTIONS`] connections at once (bounded load) and stops
//! accepting when the shutdown flag is set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::metrics::{Component, Derive, Kind, Raw};

/// Queries the database engine works on at once.
pub const DB_WORKERS: usize = 2;
/// Connections a server handles at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Base service time of one query.
const DB_BASE: Duration = Duration::from_micros(300);
/// Iterations of the application's CPU-bound work per request.
const APP_WORK: u32 = 20_000;
/// Timeouts of the application's own I/O.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs `serve(stream)` on its own thread for each accepted connection while fewer than
/// [`MAX_CONNECTIONS`] are open, until `shutdown`.
fn accept_loop<F>(listener: TcpListener, shutdown: Arc<AtomicBool>, name: &str, serve: F)
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let serve = Arc::new(serve);
    let open = Arc::new(AtomicUsize::new(0));
    let _ = listener.set_nonblocking(true);
    let name = name.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("demo-{name}"))
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    continue; // dropped: closed at once
                }
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
                let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
                open.fetch_add(1, Ordering::Relaxed);
                let (serve, open) = (serve.clone(), open.clone());
                let ok = std::thread::Builder::new()
                    .name(format!("demo-{name}-conn"))
                    .spawn(move || {
                        serve(stream);
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                if ok.is_err() {
                    // The closure (and its count) was dropped with the failed spawn.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a demo service thread");
    }
}

/// The database: metrics and fault knob.
#[derive(Debug, Default)]
pub struct Db {
    /// Extra milliseconds per query (the fault).
    pub slow_ms: AtomicU64,
    queries: Raw,
    query_us: Raw,
    wait_us: Raw,
    queued: Raw,
    busy: Mutex<usize>,
    free: Condvar,
}

impl Db {
    /// Binds `listen` and serves until `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        listen: SocketAddr,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(listen)?;
        let local = listener.local_addr()?;
        let db = self.clone();
        accept_loop(listener, shutdown, "db", move |s| db.connection(s));
        Ok(local)
    }

    fn connection(&self, stream: TcpStream) {
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            let answer = match line.trim().strip_prefix("GET ") {
                Some(key) => format!("VAL {}\n", self.query(key)),
                None => "ERR unknown command\n".to_string(),
            };
            if out.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// One query through the engine: waits for a free worker, then takes the service time.
    pub fn query(&self, key: &str) -> String {
        let start = Instant::now();
        self.queued.add(1);
        {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            while *busy >= DB_WORKERS {
                busy = self.free.wait(busy).unwrap_or_else(|e| e.into_inner());
            }
            *busy += 1;
        }
        self.queued.sub(1);
        self.wait_us.add(micros(start.elapsed()));
        let extra = Duration::from_millis(self.slow_ms.load(Ordering::Relaxed));
        std::thread::sleep(DB_BASE + extra);
        {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            *busy -= 1;
            self.free.notify_one();
        }
        self.queries.add(1);
        self.query_us.add(micros(start.elapsed()));
        format!("{}-{}", key, key.len())
    }
}

impl Component for Db {
    fn name(&self) -> &str {
        "db"
    }
    fn raw(&self) -> Vec<(&'static str, Kind, u64)> {
        vec![
            ("db_queries_total", Kind::Counter, self.queries.get()),
            ("db_query_time_us_total", Kind::Counter, self.query_us.get()),
            ("db_queue_wait_us_total", Kind::Counter, self.wait_us.get()),
            ("db_queue_depth", Kind::Gauge, self.queued.get()),
        ]
    }
    fn series(&self) -> &'static [(&'static str, Derive)] {
        &[
            ("query_latency_ms", Derive::Mean(1, 0, 1e-3)),
            // Little's law: waiting time per second is the mean number waiting.
            ("queue_depth", Derive::Rate(2, 1e-6)),
            ("queries_per_s", Derive::Rate(0, 1.0)),
        ]
    }
}

/// The application: metrics. It calls the database at `db`.
#[derive(Debug)]
pub struct App {
    db: Mutex<Option<SocketAddr>>,
    requests: Raw,
    errors: Raw,
    request_us: Raw,
    work_us: Raw,
}

impl Default for App {
    fn default() -> Self {
        App {
            db: Mutex::new(None),
            requests: Raw::default(),
            errors: Raw::default(),
            request_us: Raw::default(),
            work_us: Raw::default(),
        }
    }
}

impl App {
    /// Binds `listen` and serves until `shutdown`, calling the database at `db`.
    pub fn start(
        self: &Arc<Self>,
        listen: SocketAddr,
        db: SocketAddr,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<SocketAddr> {
        *self.db.lock().unwrap_or_else(|e| e.into_inner()) = Some(db);
        let listener = TcpListener::bind(listen)?;
        let local = listener.local_addr()?;
        let app = self.clone();
        accept_loop(listener, shutdown, "app", move |s| app.connection(s));
        Ok(local)
    }

    fn connection(&self, mut stream: TcpStream) {
        let Some(path) = read_request_path(&mut stream) else {
            return;
        };
        let start = Instant::now();
        let work = Instant::now();
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ path.len() as u64;
        for _ in 0..APP_WORK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
        self.work_us.add(micros(work.elapsed()));
        let db = *self.db.lock().unwrap_or_else(|e| e.into_inner());
        let key = path.trim_start_matches('/');
        let key = if key.is_empty() { "home" } else { key };
        let (status, body) = match db.map(|db| db_get(db, key)) {
            Some(Ok(v)) => ("200 OK", format!("ok {v}\n")),
            _ => {
                self.errors.add(1);
                (
                    "503 Service Unavailable",
                    "database unavailable\n".to_string(),
                )
            }
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.requests.add(1);
        self.request_us.add(micros(start.elapsed()));
    }
}

/// Reads an HTTP request head and returns its path.
fn read_request_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace().nth(1).map(str::to_string)
}

/// One `GET key` to the database at `db`.
pub fn db_get(db: SocketAddr, key: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&db, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(format!("GET {key}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    line.trim()
        .strip_prefix("VAL ")
        .map(str::to_string)
        .ok_or_else(|| std::io::Error::other(format!("unexpected answer {line:?}")))
}

impl Component for App {
    fn name(&self) -> &str {
        "app"
    }
    fn raw(&self) -> Vec<(&'static str, Kind, u64)> {
        vec![
            ("app_requests_total", Kind::Counter, self.requests.get()),
            ("app_errors_total", Kind::Counter, self.errors.get()),
            (
                "app_request_time_us_total",
                Kind::Counter,
                self.request_us.get(),
            ),
            ("app_work_time_us_total", Kind::Counter, self.work_us.get()),
        ]
    }
    fn series(&self) -> &'static [(&'static str, Derive)] {
        &[
            ("request_latency_ms", Derive::Mean(2, 0, 1e-3)),
            ("work_ms", Derive::Mean(3, 0, 1e-3)),
            ("requests_per_s", Derive::Rate(0, 1.0)),
            ("error_ratio", Derive::Mean(1, 0, 1.0)),
        ]
    }
}

/// A DNS responder: metrics and fault knob. `name` is its component name (`dns-east`).
#[derive(Debug)]
pub struct Dns {
    name: String,
    /// Answer SERVFAIL to every query (the fault).
    pub fail: AtomicBool,
    queries: Raw,
    failures: Raw,
    answer_us: Raw,
}

impl Dns {
    /// A responder named `name`.
    pub fn new(name: &str) -> Dns {
        Dns {
            name: name.to_string(),
            fail: AtomicBool::new(false),
            queries: Raw::default(),
            failures: Raw::default(),
            answer_us: Raw::default(),
        }
    }

    /// Binds `listen` (UDP) and answers until `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        listen: SocketAddr,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<SocketAddr> {
        let socket = UdpSocket::bind(listen)?;
        let local = socket.local_addr()?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let dns = self.clone();
        std::thread::Builder::new()
            .name(format!("demo-{}", self.name))
            .spawn(move || {
                let mut buf = [0u8; 512];
                while !shutdown.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let start = Instant::now();
                    let fail = dns.fail.load(Ordering::Relaxed);
                    if let Some(answer) = dns_answer(&buf[..n], fail) {
                        // Counted before the answer leaves, so an asker sees its query counted.
                        dns.queries.add(1);
                        if fail {
                            dns.failures.add(1);
                        }
                        dns.answer_us.add(micros(start.elapsed()));
                        let _ = socket.send_to(&answer, from);
                    }
                }
            })?;
        Ok(local)
    }
}

impl Component for Dns {
    fn name(&self) -> &str {
        &self.name
    }
    fn raw(&self) -> Vec<(&'static str, Kind, u64)> {
        vec![
            ("dns_queries_total", Kind::Counter, self.queries.get()),
            ("dns_failures_total", Kind::Counter, self.failures.get()),
            (
                "dns_answer_time_us_total",
                Kind::Counter,
                self.answer_us.get(),
            ),
        ]
    }
    fn series(&self) -> &'static [(&'static str, Derive)] {
        &[
            ("failure_ratio", Derive::Mean(1, 0, 1.0)),
            ("queries_per_s", Derive::Rate(0, 1.0)),
            ("answer_ms", Derive::Mean(2, 0, 1e-3)),
        ]
    }
}

/// The answer to the DNS query `q`: for one question of type A (1), an A record 127.0.0.1
/// (TTL 5 s); for other types no record; with `fail`, SERVFAIL. `None` for a datagram that is
/// not a query.
pub fn dns_answer(q: &[u8], fail: bool) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut p = 12;
    loop {
        let len = usize::from(*q.get(p)?);
        if len == 0 {
            p += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        p += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(p)?, *q.get(p + 1)?]);
    let question = q.get(12..p + 4)?;
    let answer_a = !fail && qtype == 1;
    let mut out = Vec::with_capacity(question.len() + 28);
    out.extend_from_slice(&q[..2]);
    // QR, opcode 0, RD copied; RA; rcode 0 or 2 (SERVFAIL).
    out.push(0x80 | (q[2] & 0x01));
    out.push(0x80 | if fail { 2 } else { 0 });
    out.extend_from_slice(&[0, 1, 0, u8::from(answer_a), 0, 0, 0, 0]);
    out.extend_from_slice(question);
    if answer_a {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}

/// `users` threads that each call the application at `app` and pause `pause`, until
/// `shutdown` (a bounded, closed-loop load).
pub fn start_load(app: SocketAddr, users: usize, pause: Duration, shutdown: Arc<AtomicBool>) {
    for i in 0..users {
        let shutdown = shutdown.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("demo-user-{i}"))
            .spawn(move || {
                while !shutdown.load(Ordering::Relaxed) {
                    let _ = http_get(app, &format!("/item{i}"));
                    std::thread::sleep(pause);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a load thread");
        }
    }
}

/// A plain `GET path` over a new connection; the status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn dns_responder_answers_a_and_fails_on_demand() {
        let shutdown = Arc::new(AtomicBool::new(false));
        let dns = Arc::new(Dns::new("dns-test"));
        let addr = dns.start(local(), shutdown.clone()).unwrap();
        let client = UdpSocket::bind(local()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let ask = |q: &[u8]| {
            client.send_to(q, addr).unwrap();
            let mut buf = [0u8; 512];
            let (n, _) = client.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        };
        let a = ask(&query("app.demo", 1));
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
        assert_eq!(&a[a.len() - 4..], &[127, 0, 0, 1]);
        let aaaa = ask(&query("app.demo", 28));
        assert_eq!(u16::from_be_bytes([aaaa[6], aaaa[7]]), 0);
        dns.fail.store(true, Ordering::Relaxed);
        let f = ask(&query("app.demo", 1));
        assert_eq!(f[3] & 0x0f, 2, "SERVFAIL");
        assert_eq!(u16::from_be_bytes([f[6], f[7]]), 0);
        assert_eq!(dns.failures.get(), 1);
        assert_eq!(dns.queries.get(), 3);
        shutdown.store(true, Ordering::Relaxed);
    }

    #[test]
    fn dns_ignores_what_is_not_a_query() {
        assert_eq!(dns_answer(&[0; 5], false), None);
        let mut answer = query("x.demo", 1);
        answer[2] |= 0x80;
        assert_eq!(dns_answer(&answer, false), None);
    }

    #[test]
    fn app_calls_the_database_and_fails_without_it() {
        let shutdown = Arc::new(AtomicBool::new(false));
        let db = Arc::new(Db::default());
        let db_addr = db.start(local(), shutdown.clone()).unwrap();
        assert_eq!(db_get(db_addr, "k").unwrap(), "k-1");
        let app = Arc::new(App::default());
        let app_addr = app.start(local(), db_addr, shutdown.clone()).unwrap();
        let (status, body) = http_get(app_addr, "/abc").unwrap();
        assert_eq!((status, body.as_str()), (200, "ok abc-3\n"));
        assert_eq!(db.queries.get(), 2, "one query of the test, one of the app");
        assert_eq!(app.requests.get(), 1);
        assert!(app.work_us.get() > 0 || APP_WORK > 0);

        // An application whose database is gone answers 503 and counts an error.
        let gone = TcpListener::bind(local()).unwrap().local_addr().unwrap();
        let broken = Arc::new(App::default());
        let broken_addr = broken.start(local(), gone, shutdown.clone()).unwrap();
        let (status, _) = http_get(broken_addr, "/x").unwrap();
        assert_eq!(status, 503);
        assert_eq!(broken.errors.get(), 1);
        shutdown.store(true, Ordering::Relaxed);
    }

    #[test]
    fn the_database_knob_slows_every_query() {
        let shutdown = Arc::new(AtomicBool::new(false));
        let db = Arc::new(Db::default());
        db.query("warm");
        let fast = db.query_us.get();
        db.slow_ms.store(50, Ordering::Relaxed);
        db.query("slow");
        let slow = db.query_us.get() - fast;
        // The knob adds at least its own time (a lower bound, not a timing threshold).
        assert!(slow >= 50_000, "slow query took {slow} µs");
        let _ = db.start(local(), shutdown.clone()).unwrap();
        shutdown.store(true, Ordering::Relaxed);
    }
}
