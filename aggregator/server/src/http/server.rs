//! A small blocking HTTP/1.1 server on `std` alone: the protocol, not the API (routes live in
//! [`crate::http`]).
//!
//! One listener thread accepts connections and hands them to a fixed pool of worker threads
//! through a bounded queue; when the queue is full the connection is answered `503` at once and
//! closed, so a flood never grows memory. Limits per peer IP address keep one client from
//! starving the others (each refusal counted by reason in [`Refusals`]):
//!
//! - at most [`ServerOptions::max_connections`] connections are open at once (waiting or
//!   served), and at most [`ServerOptions::max_connections_per_peer`] from one address; a
//!   connection beyond either is answered `503` with `Retry-After` at once on the listener
//!   thread and closed (over HTTPS it is just closed): `connections`, `peer_connections`;
//! - a free worker takes the waiting connection whose address has the fewest connections being
//!   served (the oldest among equals), not simply the oldest, and one address is served on at
//!   most all workers but one (with two or more): a peer that opened many connections, even
//!   stalled ones, does not keep a newcomer from another address waiting behind all of them.
//!   (Several peers stalling together can still hold every worker, each connection until its
//!   read timeout);
//! - each address has a token bucket of [`ServerOptions::peer_burst`] requests refilled at
//!   [`ServerOptions::peer_rate_per_s`]; a request beyond is answered `429 Too Many Requests`
//!   with `Retry-After` (seconds until the next token) and the connection closed: `rate_limited`.
//!
//! Each worker serves one connection at a time:
//!
//! - the request line and headers ("head") are read into a buffer of at most [`MAX_HEAD_BYTES`]
//!   with at most [`MAX_HEADER_LINES`](super::parse::MAX_HEADER_LINES) header lines (`414` when the request line alone does not
//!   fit, `431` otherwise), and must arrive within [`ServerOptions::read_timeout`] (a deadline
//!   for the whole head, not per `read`, so trickling bytes does not extend it; `408` then);
//! - [`parse_head`] is pure (bytes in, [`Head`] or [`RequestError`] out) and never panics;
//! - a body is read only when its `Content-Length` (digits only; duplicates must agree) is at
//!   most [`ServerOptions::max_body_bytes`]; larger ones get `413` without being read. Nothing
//!   is ever allocated from a client-declared size beyond that limit. `Transfer-Encoding` is not
//!   supported: `411` for `chunked` (send `Content-Length`), `501` for other codings;
//! - HTTP/1.1 connections are kept alive (up to [`ServerOptions::max_requests_per_connection`]
//!   requests, pipelining included) unless `Connection: close`; HTTP/1.0 ones only with
//!   `Connection: keep-alive`. `HEAD` gets the headers of the `GET` answer without its body;
//! - every protocol error is answered with a JSON body `{"error": ..}` and the connection is
//!   closed gracefully (write side shut, then a bounded drain of what the client still sends,
//!   so the answer is not destroyed by a TCP reset);
//! - a handler that panics costs its request a `500`, not the worker;
//! - a connection with no request under way yields its worker to connections waiting in the
//!   queue: a kept-alive connection idle between requests is closed as soon as another
//!   connection waits (HTTP lets a server close an idle persistent connection at any time;
//!   clients retry on a new one), a fresh one that has sent nothing after
//!   [`FRESH_IDLE_YIELD`]. Without this, as many idle browser connections as workers would
//!   starve every other client until their read timeout.
//!
//! [`HttpServer::stop`] stops accepting (waking the blocked `accept` with a connection to
//! itself), lets requests in progress finish, closes idle keep-alive connections and joins every
//! thread.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::parse::{find_head_end, head_too_large, parse_head, percent_decode, Head, RequestError};
use super::parse::{Version, MAX_HEAD_BYTES};
use crate::tls::ServerSlot;

/// How often a waiting worker or read looks at the shutdown flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Longest graceful-close drain, in time (also bounded by the read timeout) and bytes.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long [`HttpServer::stop`] tries to connect to the listener to wake it.
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a new connection may stay silent while other connections wait for a worker
/// before it is closed (a kept-alive connection between requests yields at once).
pub const FRESH_IDLE_YIELD: Duration = Duration::from_secs(1);

/// Limits and timeouts of the server. [`ServerOptions::default`] is what `serve` uses; tests
/// lower the timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Deadline for a whole request head from its first byte being awaited, for a body, and for
    /// an idle keep-alive connection to send its next request. Default 10 s.
    pub read_timeout: Duration,
    /// Deadline for writing a whole response. Default 10 s.
    pub write_timeout: Duration,
    /// Largest accepted request body. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Requests served on one connection before it is closed. Default 100.
    pub max_requests_per_connection: usize,
    /// Accepted connections waiting for a free worker; beyond this they get `503`. Default 64.
    pub queue_capacity: usize,
    /// Connections open at once (waiting for a worker or served); beyond, `503`. Default 64.
    pub max_connections: usize,
    /// Connections open at once from one peer IP address; beyond, `503`. Default 16.
    pub max_connections_per_peer: usize,
    /// Requests per second one peer IP address may send on average; beyond, `429` with
    /// `Retry-After`. 0: no limit. Default 100.
    pub peer_rate_per_s: u32,
    /// Requests one peer IP address may send at once (its bucket's size). Default 500.
    pub peer_burst: u32,
    /// Peer addresses whose rate is tracked at once (idle ones forgotten first). Default 4096.
    pub max_peers: usize,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_body_bytes: super::MAX_BODY_BYTES,
            max_requests_per_connection: 100,
            queue_capacity: 64,
            max_connections: 64,
            max_connections_per_peer: 16,
            peer_rate_per_s: 100,
            peer_burst: 500,
            max_peers: 4096,
        }
    }
}

/// Why the server turned a connection or a request away, counted in [`Refusals`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`ServerOptions::max_connections`] (or the waiting queue) full: `503`.
    Connections,
    /// [`ServerOptions::max_connections_per_peer`] reached by the peer's address: `503`.
    PeerConnections,
    /// The peer's address over [`ServerOptions::peer_rate_per_s`]: `429`.
    RateLimited,
    /// A head over [`MAX_HEAD_BYTES`] or a body over [`ServerOptions::max_body_bytes`]: `413`,
    /// `414` or `431`.
    TooLarge,
    /// A head or body not received within [`ServerOptions::read_timeout`]: `408`.
    Timeout,
}

impl Refusal {
    /// Every reason, in rendering order.
    pub const ALL: [Refusal; 5] = [
        Refusal::Connections,
        Refusal::PeerConnections,
        Refusal::RateLimited,
        Refusal::TooLarge,
        Refusal::Timeout,
    ];

    /// The snake_case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::PeerConnections => "peer_connections",
            Refusal::RateLimited => "rate_limited",
            Refusal::TooLarge => "too_large",
            Refusal::Timeout => "timeout",
        }
    }

    fn index(self) -> usize {
        match self {
            Refusal::Connections => 0,
            Refusal::PeerConnections => 1,
            Refusal::RateLimited => 2,
            Refusal::TooLarge => 3,
            Refusal::Timeout => 4,
        }
    }
}

/// Connections and requests turned away, by [`Refusal`].
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; Refusal::ALL.len()]);

impl Refusals {
    /// One more refusal for `reason`.
    pub fn count(&self, reason: Refusal) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts by reason name, in [`Refusal::ALL`] order.
    pub fn snapshot(&self) -> [(&'static str, u64); Refusal::ALL.len()] {
        Refusal::ALL.map(|r| (r.as_str(), self.0[r.index()].load(Ordering::Relaxed)))
    }
}

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
    /// No handler was given: there would be no worker.
    #[error("HTTP server needs at least one worker")]
    NoWorkers,
}

/// A request handed to a [`Handler`]: the head and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The parsed head.
    pub head: Head,
    /// The body (at most [`ServerOptions::max_body_bytes`]).
    pub body: Vec<u8>,
}

impl Request {
    /// The method, such as `GET`.
    pub fn method(&self) -> &str {
        &self.head.method
    }

    /// The percent-decoded path.
    pub fn path(&self) -> &str {
        &self.head.path
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.head.query.as_deref()
    }

    /// The query string as decoded `name=value` pairs (`+` is a space); `None` when it is not
    /// valid percent-encoded UTF-8.
    pub fn query_pairs(&self) -> Option<Vec<(String, String)>> {
        let Some(query) = self.query() else {
            return Some(Vec::new());
        };
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decode = |s: &str| percent_decode(&s.replace('+', " "));
                Some((decode(name)?, decode(value)?))
            })
            .collect()
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// An answer. The server adds `Content-Length` and `Connection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// Further headers (values containing CR or LF are dropped).
    pub headers: Vec<(&'static str, String)>,
    /// The body (not sent for `HEAD`).
    pub body: Vec<u8>,
    /// Close the connection after this answer.
    pub close: bool,
}

impl Response {
    /// A JSON answer (one line, newline-terminated) with `Cache-Control: no-store`.
    pub fn json(status: u16, body: &Value) -> Response {
        let mut bytes = serde_json::to_vec(body).unwrap_or_default();
        bytes.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            headers: vec![("Cache-Control", "no-store".into())],
            body: bytes,
            close: false,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The status line, headers and (unless `head_only`) body, as sent.
    fn encode(&self, head_only: bool, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + if head_only { 0 } else { self.body.len() });
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        for (name, value) in &self.headers {
            if !value.contains(['\r', '\n']) {
                let _ = write!(out, "{name}: {value}\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Serves requests on one worker thread; each worker owns one handler.
pub trait Handler: Send + 'static {
    /// Answers `request`.
    fn handle(&mut self, request: &Request) -> Response;
}

impl<F> Handler for F
where
    F: FnMut(&Request) -> Response + Send + 'static,
{
    fn handle(&mut self, request: &Request) -> Response {
        self(request)
    }
}

// ---------------------------------------------------------------------------------------------
// I/O.

/// A connection's byte stream: plain TCP, or TLS over it (`[http] tls_cert`).
trait Transport: Read + Write + Send {
    /// The socket underneath (for timeouts).
    fn tcp(&self) -> &TcpStream;
    /// Ends our sending side (TLS: `close_notify` first).
    fn shutdown_write(&mut self) -> std::io::Result<()>;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Transport for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
    fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.conn.send_close_notify();
        self.flush()?;
        self.sock.shutdown(Shutdown::Write)
    }
}

/// Why a read ended without data.
enum ReadEnd {
    /// The deadline passed.
    Timeout,
    /// The server is stopping.
    Stopping,
    /// Idle while other connections wait: the worker is handed over.
    Yield,
    /// The peer closed or the socket failed.
    Closed,
}

/// When an idle connection gives its worker up: once `.1` has passed while the counter `.0`
/// of connections waiting for a worker is not zero.
type YieldWhen<'a> = Option<(&'a AtomicUsize, Instant)>;

/// One `read` into `out` before `deadline`, giving up early when `stopping` is set or when
/// `yield_when` says so.
fn read_some(
    stream: &mut dyn Transport,
    out: &mut [u8],
    deadline: Instant,
    stopping: &AtomicBool,
    yield_when: YieldWhen<'_>,
) -> Result<usize, ReadEnd> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadEnd::Timeout);
        }
        let wait = (deadline - now).min(STOP_POLL);
        if stream.tcp().set_read_timeout(Some(wait)).is_err() {
            return Err(ReadEnd::Closed);
        }
        match stream.read(out) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => return Ok(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stopping.load(Ordering::SeqCst) {
                    return Err(ReadEnd::Stopping);
                }
                if let Some((waiting, after)) = yield_when {
                    if Instant::now() >= after && waiting.load(Ordering::SeqCst) > 0 {
                        return Err(ReadEnd::Yield);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(ReadEnd::Closed),
        }
    }
}

/// Writes all of `bytes` before `deadline`.
fn write_all_before(stream: &mut dyn Transport, bytes: &[u8], deadline: Instant) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let now = Instant::now();
        if now >= deadline
            || stream
                .tcp()
                .set_write_timeout(Some(deadline - now))
                .is_err()
        {
            return false;
        }
        match stream.write(rest) {
            Ok(0) => return false,
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// One connection on a worker.
struct Connection<'a> {
    stream: Box<dyn Transport>,
    /// Received bytes not yet consumed (at most [`MAX_HEAD_BYTES`] plus a body).
    buf: Vec<u8>,
    options: &'a ServerOptions,
    stopping: &'a AtomicBool,
    /// The connections of every peer, the waiting queue and the rate limits.
    peers: &'a Peers,
    /// The peer's address.
    ip: IpAddr,
}

/// What to do after a request.
enum Next {
    KeepAlive,
    Close,
}

impl Connection<'_> {
    fn serve(mut self, handler: &mut dyn Handler) {
        let _ = self.stream.tcp().set_nodelay(true);
        // A TLS handshake writes while the first request is read.
        let _ = self
            .stream
            .tcp()
            .set_write_timeout(Some(self.options.write_timeout));
        for served in 1..=self.options.max_requests_per_connection.max(1) {
            let last = served >= self.options.max_requests_per_connection;
            match self.one_request(handler, last, served > 1) {
                Some(Next::KeepAlive) => {}
                Some(Next::Close) => break,
                None => return, // peer gone, nothing more to say
            }
        }
        self.close_gracefully();
    }

    /// Reads, answers and logs one request. `None` when the connection is to be dropped without
    /// a word (peer closed, idle timeout, shutdown).
    fn one_request(&mut self, handler: &mut dyn Handler, last: bool, kept: bool) -> Option<Next> {
        let head = match self.read_head(kept) {
            Ok(Some(head)) => head,
            Ok(None) => return None,
            Err(e) => return self.refuse(&e, false),
        };
        let head_only = head.method == "HEAD";
        if let Err(wait_ms) = self.peers.check_rate(self.ip) {
            self.peers.refused.count(Refusal::RateLimited);
            let secs = wait_ms.div_ceil(1000).max(1);
            tracing::debug!(peer = %self.ip, "HTTP request over the peer's rate: 429");
            let response = Response::json(
                429,
                &json!({"error": "too many requests", "reason": "over this address's request rate", "retry_after_s": secs}),
            )
            .with_header("Retry-After", secs.to_string());
            let bytes = response.encode(head_only, false);
            return self.write(&bytes).then_some(Next::Close);
        }
        let declared = head.content_length.unwrap_or(0);
        if declared > self.options.max_body_bytes as u64 {
            let e = RequestError::new(413, "request body too large")
                .limit("limit_bytes", self.options.max_body_bytes);
            return self.refuse(&e, head_only);
        }
        // At most `max_body_bytes`, checked just above.
        let len = usize::try_from(declared).unwrap_or(usize::MAX);
        let body =
            match self.read_body(len, head.expect_continue && head.version == Version::Http11) {
                Ok(Some(body)) => body,
                Ok(None) => return None,
                Err(e) => return self.refuse(&e, head_only),
            };
        let request = Request { head, body };
        let response =
            catch_unwind(AssertUnwindSafe(|| handler.handle(&request))).unwrap_or_else(|_| {
                tracing::error!(method = %request.head.method, path = %request.head.path,
                    "HTTP handler panicked");
                let mut r = Response::json(500, &json!({"error": "internal error"}));
                r.close = true;
                r
            });
        tracing::debug!(method = %request.head.method, path = %request.head.path,
            status = response.status, "HTTP request");
        let keep_alive = request.head.keep_alive
            && !response.close
            && !last
            && !self.stopping.load(Ordering::SeqCst);
        let bytes = response.encode(head_only, keep_alive);
        if !self.write(&bytes) {
            return None;
        }
        Some(if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        })
    }

    /// Answers a request that cannot be served; the connection closes afterwards.
    fn refuse(&mut self, e: &RequestError, head_only: bool) -> Option<Next> {
        tracing::debug!(error = %e, "HTTP request refused");
        match e.status {
            413 | 414 | 431 => self.peers.refused.count(Refusal::TooLarge),
            408 => self.peers.refused.count(Refusal::Timeout),
            _ => {}
        }
        let bytes = e.to_response().encode(head_only, false);
        self.write(&bytes).then_some(Next::Close)
    }

    fn write(&mut self, bytes: &[u8]) -> bool {
        let deadline = Instant::now() + self.options.write_timeout;
        write_all_before(self.stream.as_mut(), bytes, deadline)
    }

    /// Reads the next head (its bytes are consumed from `buf`). `Ok(None)`: closed, idle
    /// timeout, shutdown, or yielded to a waiting connection while no byte of the head had
    /// arrived (`kept`: the connection already served a request, so it yields at once).
    /// Errors are to be answered.
    fn read_head(&mut self, kept: bool) -> Result<Option<Head>, RequestError> {
        let start = Instant::now();
        let deadline = start + self.options.read_timeout;
        let yield_after = if kept {
            start
        } else {
            start + FRESH_IDLE_YIELD
        };
        let mut chunk = [0u8; 2048];
        let mut scanned = 0;
        loop {
            if let Some(end) = find_head_end(&self.buf, scanned) {
                let head = parse_head(&self.buf[..end]);
                self.buf.drain(..end);
                return head.map(Some);
            }
            if self.buf.len() >= MAX_HEAD_BYTES {
                return Err(head_too_large(&self.buf));
            }
            scanned = self.buf.len();
            let room = (MAX_HEAD_BYTES - self.buf.len()).min(chunk.len());
            let idle = self.buf.iter().all(|&b| b == b'\r' || b == b'\n');
            let yield_when = idle.then_some((&self.peers.waiting, yield_after));
            match read_some(
                self.stream.as_mut(),
                &mut chunk[..room],
                deadline,
                self.stopping,
                yield_when,
            ) {
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(ReadEnd::Timeout) if self.buf.iter().any(|&b| b != b'\r' && b != b'\n') => {
                    return Err(
                        RequestError::new(408, "request not received in time").detail(format!(
                            "timeout {} ms",
                            self.options.read_timeout.as_millis()
                        )),
                    );
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Reads a body of `len` bytes (already checked against the limit).
    fn read_body(
        &mut self,
        len: usize,
        expect_continue: bool,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let buffered = self.buf.len().min(len);
        let mut body = Vec::with_capacity(len);
        body.extend(self.buf.drain(..buffered));
        if body.len() < len && expect_continue && !self.write(b"HTTP/1.1 100 Continue\r\n\r\n") {
            return Ok(None);
        }
        let deadline = Instant::now() + self.options.read_timeout;
        let mut chunk = [0u8; 8192];
        while body.len() < len {
            let room = (len - body.len()).min(chunk.len());
            match read_some(
                self.stream.as_mut(),
                &mut chunk[..room],
                deadline,
                self.stopping,
                None,
            ) {
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                Err(ReadEnd::Timeout) => {
                    return Err(RequestError::new(408, "request body not received in time"));
                }
                Err(_) => return Ok(None),
            }
        }
        Ok(Some(body))
    }

    /// Shuts the write side, then drains (and drops) what the client still sends for a bounded
    /// time and amount, so that closing with unread data does not reset the connection before
    /// the client has read the answer.
    fn close_gracefully(mut self) {
        if self.stream.shutdown_write().is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME.min(self.options.read_timeout);
        let mut chunk = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match read_some(
                self.stream.as_mut(),
                &mut chunk,
                deadline,
                self.stopping,
                None,
            ) {
                Ok(n) => drained += n,
                Err(_) => break,
            }
        }
    }
}

/// Answers `503` on the listener thread without blocking it, and closes.
fn refuse_busy(mut stream: TcpStream, why: Refusal) {
    let reason = match why {
        Refusal::PeerConnections => "too many connections from this address",
        _ => "too many connections",
    };
    tracing::warn!(reason, "HTTP connection refused with 503");
    let response = Response::json(503, &json!({"error": "server busy", "reason": reason}))
        .with_header("Retry-After", "1");
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let _ = stream.write(&response.encode(false, false));
    let _ = stream.shutdown(Shutdown::Write);
    // Consume what already arrived (without waiting) so the close is not a reset.
    let mut chunk = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
}

/// The open connections per peer address, the queue of those waiting for a worker, and the
/// request rate per address; shared by the listener and the workers.
struct Peers {
    table: Mutex<PeerTable>,
    /// Signalled when a connection is queued.
    ready: Condvar,
    /// Connections waiting for a worker (read without the lock by idle connections).
    waiting: AtomicUsize,
    options: Arc<ServerOptions>,
    refused: Arc<Refusals>,
    /// The origin of the rate limiter's clock.
    started: Instant,
    /// Workers one address may hold at once: all but one (with two or more).
    per_peer_workers: usize,
}

struct PeerTable {
    /// Connections open per address (waiting or served).
    open: HashMap<IpAddr, usize>,
    /// Connections on a worker per address.
    serving: HashMap<IpAddr, usize>,
    total: usize,
    queue: VecDeque<(TcpStream, IpAddr)>,
    rate: qos_broker::RateLimiter<IpAddr>,
}

impl Peers {
    fn new(options: Arc<ServerOptions>, refused: Arc<Refusals>, workers: usize) -> Peers {
        let rate = qos_broker::RateLimiter::new(qos_broker::RateLimit {
            rate_per_s: options.peer_rate_per_s,
            burst: options.peer_burst,
            max_sources: options.max_peers,
        });
        Peers {
            table: Mutex::new(PeerTable {
                open: HashMap::new(),
                serving: HashMap::new(),
                total: 0,
                queue: VecDeque::new(),
                rate,
            }),
            ready: Condvar::new(),
            waiting: AtomicUsize::new(0),
            options,
            refused,
            started: Instant::now(),
            per_peer_workers: workers.saturating_sub(1).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PeerTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a new connection from `ip`, or says why it is refused.
    fn admit(&self, stream: TcpStream, ip: IpAddr) -> Result<(), (TcpStream, Refusal)> {
        let mut t = self.lock();
        if t.total >= self.options.max_connections.max(1)
            || t.queue.len() >= self.options.queue_capacity.max(1)
        {
            return Err((stream, Refusal::Connections));
        }
        let open = t.open.get(&ip).copied().unwrap_or(0);
        if open >= self.options.max_connections_per_peer.max(1) {
            return Err((stream, Refusal::PeerConnections));
        }
        t.open.insert(ip, open + 1);
        t.total += 1;
        t.queue.push_back((stream, ip));
        // Counted before it is visible to a worker, which counts it out.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        drop(t);
        self.ready.notify_one();
        Ok(())
    }

    /// The next connection for a worker: of the address with the fewest connections being
    /// served (and fewer than [`Peers::per_peer_workers`]), the oldest; `None` once `stopping`.
    fn take(&self, stopping: &AtomicBool) -> Option<(TcpStream, IpAddr)> {
        let mut t = self.lock();
        loop {
            if stopping.load(Ordering::SeqCst) {
                return None;
            }
            let pick = t
                .queue
                .iter()
                .enumerate()
                .map(|(i, (_, ip))| (t.serving.get(ip).copied().unwrap_or(0), i))
                .filter(|(serving, _)| *serving < self.per_peer_workers)
                .min()
                .map(|(_, i)| i);
            if let Some((stream, ip)) = pick.and_then(|i| t.queue.remove(i)) {
                *t.serving.entry(ip).or_default() += 1;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Some((stream, ip));
            }
            t = match self.ready.wait_timeout(t, STOP_POLL) {
                Ok((t, _)) => t,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// A connection of `ip` taken by [`Peers::take`] is closed.
    fn done(&self, ip: IpAddr) {
        let mut guard = self.lock();
        let t = &mut *guard;
        t.total = t.total.saturating_sub(1);
        for map in [&mut t.open, &mut t.serving] {
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }

    /// Takes a request token of `ip`, or says how many ms until it has one.
    fn check_rate(&self, ip: IpAddr) -> Result<(), u64> {
        if self.options.peer_rate_per_s == 0 {
            return Ok(());
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.lock().rate.check(now, ip)
    }
}

fn accept_loop(listener: &TcpListener, peers: &Peers, stopping: &AtomicBool, tls: bool) {
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                let Ok(peer) = stream.peer_addr() else {
                    continue; // already gone
                };
                if let Err((stream, why)) = peers.admit(stream, peer.ip()) {
                    peers.refused.count(why);
                    if tls {
                        // A TLS client could not read a plain answer: it is just closed.
                        drop(stream);
                    } else {
                        refuse_busy(stream, why);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Gives a connection's place back when it is closed (also if its handler panics).
struct Served<'a>(&'a Peers, IpAddr);

impl Drop for Served<'_> {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

fn worker_loop(
    peers: &Peers,
    handler: &mut dyn Handler,
    options: &ServerOptions,
    stopping: &AtomicBool,
    tls: Option<&ServerSlot>,
) {
    while let Some((stream, ip)) = peers.take(stopping) {
        let _served = Served(peers, ip);
        let stream: Box<dyn Transport> = match tls {
            None => Box::new(stream),
            // The current certificate: a reload applies to new connections.
            Some(slot) => match rustls::ServerConnection::new(slot.current()) {
                Ok(conn) => Box::new(rustls::StreamOwned::new(conn, stream)),
                Err(e) => {
                    tracing::warn!(error = %e, "HTTPS connection not set up");
                    continue;
                }
            },
        };
        Connection {
            stream,
            buf: Vec::with_capacity(MAX_HEAD_BYTES),
            options,
            stopping,
            peers,
            ip,
        }
        .serve(handler);
    }
}

/// A running server. Stop it with [`HttpServer::stop`]; dropping it also stops it.
pub struct HttpServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    peers: Arc<Peers>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl HttpServer {
    /// Binds `listen` and starts the listener plus one worker thread per handler.
    pub fn start<H: Handler>(
        listen: SocketAddr,
        handlers: Vec<H>,
        options: ServerOptions,
    ) -> Result<HttpServer, HttpError> {
        HttpServer::start_tls(listen, handlers, options, None)
    }

    /// [`HttpServer::start`], serving HTTPS with the settings of `tls` when given (each new
    /// connection takes its current certificate).
    pub fn start_tls<H: Handler>(
        listen: SocketAddr,
        handlers: Vec<H>,
        options: ServerOptions,
        tls: Option<ServerSlot>,
    ) -> Result<HttpServer, HttpError> {
        HttpServer::start_counted(listen, handlers, options, tls, Arc::default())
    }

    /// [`HttpServer::start_tls`], counting the connections and requests turned away in
    /// `refused`.
    pub fn start_counted<H: Handler>(
        listen: SocketAddr,
        handlers: Vec<H>,
        options: ServerOptions,
        tls: Option<ServerSlot>,
        refused: Arc<Refusals>,
    ) -> Result<HttpServer, HttpError> {
        if handlers.is_empty() {
            return Err(HttpError::NoWorkers);
        }
        let listener = TcpListener::bind(listen).map_err(|e| HttpError::Bind {
            addr: listen,
            message: e.to_string(),
        })?;
        let addr = listener.local_addr().unwrap_or(listen);
        let options = Arc::new(options);
        let peers = Arc::new(Peers::new(options.clone(), refused, handlers.len()));
        let mut server = HttpServer {
            addr,
            stopping: Arc::new(AtomicBool::new(false)),
            listener: None,
            workers: Vec::new(),
            peers: peers.clone(),
        };
        for (i, mut handler) in handlers.into_iter().enumerate() {
            let (peers, options, stopping, tls) = (
                peers.clone(),
                options.clone(),
                server.stopping.clone(),
                tls.clone(),
            );
            let worker = std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || worker_loop(&peers, &mut handler, &options, &stopping, tls.as_ref()))
                .map_err(HttpError::Spawn)?; // `server` is dropped here, stopping the others
            server.workers.push(worker);
        }
        let stopping = server.stopping.clone();
        let is_tls = tls.is_some();
        let accept = std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(&listener, &peers, &stopping, is_tls))
            .map_err(HttpError::Spawn)?;
        server.listener = Some(accept);
        Ok(server)
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets every worker finish its current request, closes idle connections
    /// and joins the threads.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.peers.ready.notify_all();
        if let Some(listener) = self.listener.take() {
            // Wake the blocked `accept`; it sees the flag and returns.
            let wake = SocketAddr::new(loopback_for(self.addr.ip()), self.addr.port());
            match TcpStream::connect_timeout(&wake, WAKE_TIMEOUT) {
                Ok(_) => {
                    if listener.join().is_err() {
                        tracing::error!("the HTTP listener panicked");
                    }
                }
                // Left running; it ends at its next connection. Workers end anyway.
                Err(e) => tracing::warn!(error = %e, "cannot wake the HTTP listener"),
            }
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("an HTTP worker panicked");
            }
        }
    }
}

/// The address to reach a listener bound to `ip` from this host.
fn loopback_for(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}
