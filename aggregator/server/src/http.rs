//! The JSON API under `/api/v1/`, served by `tiny_http` on a few worker threads.
//!
//! | path | answer |
//! |---|---|
//! | `GET /api/v1/health` | `{"status":"ok","version":..,"uptime_s":..,"store":"ok"}`; 503 with `"status":"degraded"`, `"store":"error"` and `"store_error"` when the store does not answer |
//! | `GET /api/v1/stats` | the ingest counters ([`crate::stats::StatsSnapshot::to_json`]) plus `"store":{"records":..,"edges":..}` (or `"store":{"error":..}`) and `uptime_s` |
//! | `GET /api/v1/edges` | `{"edges":[{"id","name","region","up","first_seen","last_seen","last_seq","received","duplicates","gaps","dropped_at_edge"}]}`; times in unix milliseconds, `up` when seen in the last [`UP_WINDOW_MS`] |
//!
//! `HEAD` is accepted wherever `GET` is. Query strings are ignored. Errors are JSON too:
//! `{"error": reason, ...}` with 404 (unknown path, echoing `path`), 405 (other methods, with an
//! `Allow` header), 413 (body over [`MAX_BODY_BYTES`]), 414 (URL over [`MAX_URL_BYTES`]), 400
//! (unreadable body) and 503 (store unavailable). Every response has
//! `Content-Type: application/json`.
//!
//! Each worker owns a read-only store connection ([`StoreRead`]); in WAL mode these never block
//! the ingest writer, and a slow API client never delays ingest.
//!
//! Limitation (tiny_http 0.12): request headers are read without a size limit and without a
//! timeout, and after a 413 the library drains the rest of a declared body (allocating its
//! declared size) before the worker is free again. Keep the API on loopback or behind a reverse
//! proxy that bounds requests until the HTTP layer is replaced.

use std::io::{Cursor, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::stats::IngestStats;
use crate::store::{EdgeRow, StoreRead};

/// Prefix of every API path.
pub const API_PREFIX: &str = "/api/v1/";
/// Largest request body accepted (the API has no body-carrying endpoint yet; bodies are ignored).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest request target accepted.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// An edge is `up` when its last batch arrived at most this long ago.
pub const UP_WINDOW_MS: u64 = 180_000;

const ALLOW: &str = "GET, HEAD";

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {message}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The system's explanation.
        message: String,
    },
    /// A worker thread could not be started.
    #[error("cannot start HTTP worker thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// No store reader was given: there would be no worker.
    #[error("HTTP server needs at least one worker")]
    NoWorkers,
}

/// What every worker shares.
struct Shared {
    stats: Arc<IngestStats>,
    started: Instant,
}

/// A running HTTP server. Stop it with [`HttpServer::stop`]; dropping it also stops it.
pub struct HttpServer {
    server: Arc<Server>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Binds `listen` and starts one worker thread per reader. `started` is the process start, for
/// `uptime_s`.
pub fn start(
    listen: SocketAddr,
    readers: Vec<Box<dyn StoreRead>>,
    stats: Arc<IngestStats>,
    started: Instant,
) -> Result<HttpServer, HttpError> {
    if readers.is_empty() {
        return Err(HttpError::NoWorkers);
    }
    let server = Server::http(listen).map_err(|e| HttpError::Bind {
        addr: listen,
        message: e.to_string(),
    })?;
    let addr = server.server_addr().to_ip().unwrap_or(listen);
    let mut http = HttpServer {
        server: Arc::new(server),
        addr,
        stopping: Arc::new(AtomicBool::new(false)),
        workers: Vec::new(),
    };
    let shared = Arc::new(Shared { stats, started });
    for (i, reader) in readers.into_iter().enumerate() {
        let server = http.server.clone();
        let stopping = http.stopping.clone();
        let shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || worker_loop(&server, &stopping, reader.as_ref(), &shared))
            .map_err(HttpError::Spawn)?; // `http` is dropped here, stopping the started workers
        http.workers.push(worker);
    }
    Ok(http)
}

impl HttpServer {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting work, lets every worker finish its current request, and joins them.
    pub fn stop(mut self) {
        self.stop_workers();
    }

    fn stop_workers(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("an HTTP worker panicked");
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

fn worker_loop(server: &Server, stopping: &AtomicBool, store: &dyn StoreRead, shared: &Shared) {
    loop {
        match server.recv() {
            Ok(request) => handle(request, store, shared),
            Err(e) => {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                tracing::warn!(error = %e, "HTTP accept failed");
            }
        }
    }
}

/// A JSON answer: status, body, extra headers.
struct Answer {
    status: u16,
    body: Value,
    allow: bool,
    close: bool,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer::status(200, body)
    }

    fn status(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body,
            allow: false,
            close: false,
        }
    }
}

fn handle(mut request: Request, store: &dyn StoreRead, shared: &Shared) {
    let method = request.method().clone();
    let url = request.url().to_string();
    let answer = match check_body(&mut request) {
        Err(answer) => answer,
        Ok(()) => route(&method, &url, store, shared),
    };
    tracing::debug!(%method, %url, status = answer.status, "HTTP request");
    let mut bytes = serde_json::to_vec(&answer.body).unwrap_or_default();
    bytes.push(b'\n');
    let len = bytes.len();
    let mut response = Response::new(
        StatusCode(answer.status),
        vec![header("Content-Type", "application/json")],
        Cursor::new(bytes),
        Some(len),
        None,
    )
    .with_header(header("Cache-Control", "no-store"));
    if answer.allow {
        response.add_header(header("Allow", ALLOW));
    }
    if answer.close {
        response.add_header(header("Connection", "close"));
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "HTTP response not delivered");
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

/// Refuses oversized targets and bodies; reads (and discards) an acceptable chunked body.
fn check_body(request: &mut Request) -> Result<(), Answer> {
    if request.url().len() > MAX_URL_BYTES {
        let mut answer = Answer::status(
            414,
            json!({"error": "request target too long", "limit_bytes": MAX_URL_BYTES}),
        );
        answer.close = true;
        return Err(answer);
    }
    let too_large = || {
        let mut answer = Answer::status(
            413,
            json!({"error": "request body too large", "limit_bytes": MAX_BODY_BYTES}),
        );
        answer.close = true;
        answer
    };
    match request.body_length() {
        Some(n) if n > MAX_BODY_BYTES => Err(too_large()),
        Some(_) => Ok(()), // small: tiny_http drains or buffers it
        None => {
            let chunked = request
                .headers()
                .iter()
                .any(|h| h.field.equiv("Transfer-Encoding"));
            if !chunked {
                return Ok(());
            }
            let mut sink = Vec::new();
            let limit = MAX_BODY_BYTES as u64 + 1;
            match request.as_reader().take(limit).read_to_end(&mut sink) {
                Ok(n) if n > MAX_BODY_BYTES => Err(too_large()),
                Ok(_) => Ok(()),
                Err(e) => {
                    let mut answer = Answer::status(
                        400,
                        json!({"error": "unreadable request body", "reason": e.to_string()}),
                    );
                    answer.close = true;
                    Err(answer)
                }
            }
        }
    }
}

/// The endpoints, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Health,
    Stats,
    Edges,
}

fn route(method: &Method, url: &str, store: &dyn StoreRead, shared: &Shared) -> Answer {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let endpoint = match path.strip_prefix(API_PREFIX) {
        Some("health") => Endpoint::Health,
        Some("stats") => Endpoint::Stats,
        Some("edges") => Endpoint::Edges,
        _ => {
            return Answer::status(404, json!({"error": "no such resource", "path": path}));
        }
    };
    if !matches!(method, Method::Get | Method::Head) {
        let mut answer = Answer::status(
            405,
            json!({
                "error": "method not allowed",
                "method": method.as_str(),
                "path": path,
                "allow": ["GET", "HEAD"],
            }),
        );
        answer.allow = true;
        return answer;
    }
    let uptime_s = shared.started.elapsed().as_secs();
    match endpoint {
        Endpoint::Health => health(store, uptime_s),
        Endpoint::Stats => stats(store, shared, uptime_s),
        Endpoint::Edges => match store.edges() {
            Ok(rows) => Answer::ok(edges_json(&rows, now_ms())),
            Err(e) => store_unavailable(&e),
        },
    }
}

fn health(store: &dyn StoreRead, uptime_s: u64) -> Answer {
    match store.check() {
        Ok(()) => Answer::ok(json!({
            "status": "ok",
            "version": crate::VERSION,
            "uptime_s": uptime_s,
            "store": "ok",
        })),
        Err(e) => Answer::status(
            503,
            json!({
                "status": "degraded",
                "version": crate::VERSION,
                "uptime_s": uptime_s,
                "store": "error",
                "store_error": e.to_string(),
            }),
        ),
    }
}

fn stats(store: &dyn StoreRead, shared: &Shared, uptime_s: u64) -> Answer {
    let mut body = shared.stats.snapshot().to_json();
    let store_json = match store.totals() {
        Ok(t) => json!({"records": t.records, "edges": t.edges}),
        Err(e) => json!({"error": e.to_string()}),
    };
    if let Value::Object(map) = &mut body {
        map.insert("store".into(), store_json);
        map.insert("uptime_s".into(), uptime_s.into());
    }
    Answer::ok(body)
}

fn store_unavailable(e: &crate::store::StoreError) -> Answer {
    Answer::status(
        503,
        json!({"error": "store unavailable", "reason": e.to_string()}),
    )
}

/// Renders the edges; `now_ms` decides `up`.
fn edges_json(rows: &[EdgeRow], now_ms: u64) -> Value {
    let edges: Vec<Value> = rows
        .iter()
        .map(|e| {
            json!({
                "id": e.edge_id,
                "name": e.name,
                "region": e.region,
                "up": now_ms.saturating_sub(e.last_seen_ms) <= UP_WINDOW_MS,
                "first_seen": e.first_seen_ms,
                "last_seen": e.last_seen_ms,
                "last_seq": e.last_seq,
                "received": e.received,
                "duplicates": e.duplicates,
                "gaps": e.gaps,
                "dropped_at_edge": e.dropped_at_edge,
            })
        })
        .collect();
    json!({ "edges": edges })
}

/// Wall-clock time in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(edge_id: u32, last_seen_ms: u64) -> EdgeRow {
        EdgeRow {
            edge_id,
            name: None,
            region: Some("eu".into()),
            first_seen_ms: 1,
            last_seen_ms,
            last_seq: Some(4),
            received: 4,
            duplicates: 0,
            gaps: 0,
            dropped_at_edge: 0,
        }
    }

    #[test]
    fn up_means_seen_within_the_window() {
        let now = 1_000_000_000;
        let rows = [
            row(1, now),
            row(2, now - UP_WINDOW_MS),
            row(3, now - UP_WINDOW_MS - 1),
            // A clock step backwards puts last_seen in the future: still up.
            row(4, now + 5_000),
        ];
        let json = edges_json(&rows, now);
        let up: Vec<bool> = json["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["up"].as_bool().unwrap())
            .collect();
        assert_eq!(up, [true, true, false, true]);
        assert_eq!(json["edges"][0]["region"], "eu");
        assert!(json["edges"][0]["name"].is_null());
    }
}
