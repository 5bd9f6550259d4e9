//! The HTTP API's limits per peer (issue 7, issue 4): connections per client address, the
//! fair hand-over of workers, and the request rate per address, over real sockets on loopback.
//! The well-behaved client connects from 127.0.0.2 (bound before connecting), the hostile one
//! from 127.0.0.1. Nothing here asserts a duration; client reads have a generous safety timeout
//! only so that a bug fails the test instead of hanging it.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use qos_aggregator::http::{self, ServerOptions};

/// Only so that a broken server fails a test rather than hanging it.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);

mod common;
use common::{read_reply, ApiServer, Reply};

/// An API server on its own store, with the body limit `serve` uses.
struct Server;

impl Server {
    fn start(name: &str, workers: usize, options: ServerOptions) -> ApiServer {
        let options = ServerOptions {
            max_body_bytes: http::MAX_BODY_BYTES,
            ..options
        };
        ApiServer::start("limits", name, workers, options)
    }
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind a loopback address");
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    stream
}

/// `GET target` on a new connection from `from`.
fn get_from(from: [u8; 4], to: SocketAddr, target: &str) -> Reply {
    let mut stream = connect_from(from, to);
    let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut BufReader::new(stream), false)
}

const HOSTILE: [u8; 4] = [127, 0, 0, 1];
const GOOD: [u8; 4] = [127, 0, 0, 2];

#[test]
fn many_stalled_connections_of_one_peer_do_not_keep_another_peer_waiting() {
    // Two workers and a read timeout far beyond the safety timeout: a stalled head holds its
    // worker for the whole test. The hostile peer opens 20 connections, each stalled in the
    // middle of its head (so none yields as an idle one would).
    let options = ServerOptions {
        read_timeout: Duration::from_secs(3600),
        max_connections_per_peer: 4,
        ..ServerOptions::default()
    };
    let server = Server::start("stalled", 2, options);
    let mut stalled = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let mut s = connect_from(HOSTILE, server.addr());
        s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHo").unwrap();
        stalled.push(s);
    }
    // Beyond 4 per address, each is answered 503 at once and closed.
    for s in stalled.drain(4..) {
        let reply = read_reply(&mut BufReader::new(s), false);
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("Retry-After"), Some("1"));
        assert_eq!(
            reply.json()["reason"],
            "too many connections from this address"
        );
        refused += 1;
    }
    assert_eq!(refused, 16);
    // The other peer is served, again and again, while the four stay stalled: the hostile
    // peer never holds every worker, and the free one goes to the other address first.
    for _ in 0..5 {
        let reply = get_from(GOOD, server.addr(), "/api/v1/health");
        assert_eq!(reply.status, 200);
    }
    let stats = get_from(GOOD, server.addr(), "/api/v1/stats").json();
    assert_eq!(stats["http_refused"]["peer_connections"], 16, "{stats}");
    assert_eq!(stats["http_refused"]["connections"], 0, "{stats}");
    let metrics = get_from(GOOD, server.addr(), "/metrics");
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains("qos_http_refused_total{reason=\"peer_connections\"} 16\n"),
        "{text}"
    );
    println!(
        "20 stalled connections from one address: {refused} refused 503, 4 held; \
         the other address: 5 of 5 requests answered 200"
    );
    drop(stalled);
}

#[test]
fn a_request_flood_of_one_peer_is_answered_429_and_another_peer_is_served() {
    let options = ServerOptions {
        peer_rate_per_s: 1,
        peer_burst: 5,
        ..ServerOptions::default()
    };
    let server = Server::start("flood", 2, options);
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let reply = get_from(HOSTILE, server.addr(), "/api/v1/health");
        if reply.status == 429 {
            let after: u64 = reply
                .header("Retry-After")
                .expect("Retry-After")
                .parse()
                .unwrap();
            assert!(after >= 1, "{after}");
            assert_eq!(reply.json()["error"], "too many requests");
        }
        statuses.push(reply.status);
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(ok + limited, 40, "{statuses:?}");
    // The burst, and perhaps a token or two refilled meanwhile.
    assert!((5..40).contains(&ok), "{statuses:?}");
    // Another address has its own bucket.
    for _ in 0..3 {
        assert_eq!(get_from(GOOD, server.addr(), "/api/v1/health").status, 200);
    }
    let stats = get_from(GOOD, server.addr(), "/api/v1/stats").json();
    assert_eq!(
        stats["http_refused"]["rate_limited"], limited as u64,
        "{stats}"
    );
    println!(
        "40 requests from one address (1/s, burst 5): {ok} answered 200, {limited} 429; \
         the other address: 3 of 3 answered 200"
    );
}

#[test]
fn the_total_connection_cap_is_answered_503() {
    let options = ServerOptions {
        read_timeout: Duration::from_secs(3600),
        max_connections: 3,
        ..ServerOptions::default()
    };
    let server = Server::start("total", 1, options);
    // Three stalled connections from two addresses fill the server.
    let mut held = Vec::new();
    for from in [HOSTILE, HOSTILE, GOOD] {
        let mut s = connect_from(from, server.addr());
        s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHo").unwrap();
        held.push(s);
    }
    let reply = get_from([127, 0, 0, 3], server.addr(), "/api/v1/health");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["reason"], "too many connections");
    // A place freed is a place for the next client.
    drop(held);
    let reply = common::eventually("a connection admitted again", || {
        let r = get_from([127, 0, 0, 3], server.addr(), "/api/v1/stats");
        (r.status == 200).then_some(r)
    });
    assert!(
        reply.json()["http_refused"]["connections"].as_u64() >= Some(1),
        "{}",
        reply.json()
    );
}
