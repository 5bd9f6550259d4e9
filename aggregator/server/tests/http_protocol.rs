//! The HTTP/1.1 layer under hostile and unusual clients: real sockets on 127.0.0.1 (port 0),
//! raw bytes over `TcpStream`, a server started with [`qos_aggregator::http::start_with`] so
//! that limits and timeouts can be lowered. Nothing here asserts a duration; client reads have
//! a generous safety timeout only so that a bug fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use qos_aggregator::http::{self, ServerOptions};

/// Only so that a broken server fails a test rather than hanging it.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(30);

mod common;
use common::{read_reply, ApiServer, Reply};

/// An API server on its own store.
struct Server;

impl Server {
    fn start(name: &str, workers: usize, options: ServerOptions) -> ApiServer {
        ApiServer::start("proto", name, workers, options)
    }

    fn default(name: &str) -> ApiServer {
        Server::start(name, 2, api_defaults())
    }
}

/// The options `serve` uses.
fn api_defaults() -> ServerOptions {
    ServerOptions {
        max_body_bytes: http::MAX_BODY_BYTES,
        ..ServerOptions::default()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    stream
}

/// Sends `request` on a new connection and reads one response.
fn send(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = connect(addr);
    // A refused request may not be read: ignore a reset while sending.
    let _ = stream.write_all(request);
    read_reply(&mut BufReader::new(stream), false)
}

/// True once the server has closed `reader`'s connection (EOF or reset, no more bytes).
fn closed(reader: &mut impl Read) -> bool {
    let mut byte = [0u8; 1];
    !matches!(reader.read(&mut byte), Ok(n) if n > 0)
}

const HEALTH: &[u8] = b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

fn healthy(addr: SocketAddr) -> bool {
    send(addr, HEALTH).status == 200
}

#[test]
fn absurd_content_lengths_are_413_without_reading_and_the_server_stays_up() {
    let server = Server::default("huge-cl");
    for length in ["99999999999999999999", "1000000000000", "65537"] {
        let request =
            format!("POST /api/v1/health HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n");
        let mut stream = connect(server.addr());
        stream.write_all(request.as_bytes()).unwrap();
        // Some body follows, far less than declared: the answer does not wait for the rest.
        stream.write_all(&[b'x'; 1000]).unwrap();
        let mut reader = BufReader::new(stream);
        let reply = read_reply(&mut reader, false);
        assert_eq!(reply.status, 413, "{length}");
        assert_eq!(reply.header("Connection"), Some("close"));
        let json = reply.json();
        assert_eq!(json["error"], "request body too large");
        assert_eq!(json["limit_bytes"], 65536);
        assert!(closed(&mut reader));
        assert!(healthy(server.addr()));
    }
    // At the limit is fine (the method is then refused by the API, after reading the body).
    let mut request =
        b"POST /api/v1/health HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 65536]);
    assert_eq!(send(server.addr(), &request).status, 405);
}

#[test]
fn malformed_content_lengths_are_400() {
    let server = Server::default("bad-cl");
    for headers in [
        "Content-Length: -1",
        "Content-Length: 1e3",
        "Content-Length: 2\r\nContent-Length: 3",
    ] {
        let request = format!("POST /api/v1/health HTTP/1.1\r\nHost: t\r\n{headers}\r\n\r\n{{}}");
        let reply = send(server.addr(), request.as_bytes());
        assert_eq!(reply.status, 400, "{headers}");
        assert!(reply.json()["error"].is_string());
    }
    // Repeated but equal: accepted.
    let request = "POST /api/v1/health HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\
                   Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    assert_eq!(send(server.addr(), request.as_bytes()).status, 405);
    assert!(healthy(server.addr()));
}

#[test]
fn oversized_heads_are_431_or_414_and_the_server_stays_up() {
    let server = Server::default("big-head");
    // One header line over 8 KiB.
    let request = format!(
        "GET /api/v1/health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let reply = send(server.addr(), request.as_bytes());
    assert_eq!(reply.status, 431);
    assert_eq!(reply.json()["limit_bytes"], 8192);
    assert!(healthy(server.addr()));

    // Many small header lines, under 8 KiB in all.
    let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
    let request = format!("GET /api/v1/health HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    let reply = send(server.addr(), request.as_bytes());
    assert_eq!(reply.status, 431);
    assert_eq!(reply.json()["limit_lines"], 64);

    // A head that never ends (no line breaks at all) is cut at 8 KiB: 414.
    let mut stream = connect(server.addr());
    let _ = stream.write_all(format!("GET /{}", "a".repeat(20_000)).as_bytes());
    let reply = read_reply(&mut BufReader::new(stream), false);
    assert_eq!(reply.status, 414);
    assert!(healthy(server.addr()));
}

#[test]
fn a_stalled_client_does_not_block_others() {
    // One worker, and more stalled connections than workers: each staller holds the worker
    // until the (lowered) read timeout, then gets 408; the real client is served after them.
    let options = ServerOptions {
        read_timeout: Duration::from_millis(200),
        ..api_defaults()
    };
    let server = Server::start("slowloris", 1, options);
    let stallers: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(server.addr());
            s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    assert!(healthy(server.addr()));
    for staller in stallers {
        let mut reader = BufReader::new(staller);
        let reply = read_reply(&mut reader, false);
        assert_eq!(reply.status, 408);
        assert!(reply.json()["error"].is_string());
        assert!(closed(&mut reader));
    }
    // A client trickling its head byte by byte is also cut off by the deadline for the whole
    // head: the deadline is not renewed by each byte.
    let mut trickler = connect(server.addr());
    let mut sent = 0;
    let answered = loop {
        if trickler.write_all(b"X").is_err() {
            break true;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
        // With a 200 ms deadline this ends long before the 8 KiB limit would.
        if sent > 4000 {
            break false;
        }
    };
    assert!(answered, "the server never cut off a trickling client");
    assert!(healthy(server.addr()));
}

#[test]
fn chunked_bodies_are_411_and_other_codings_501() {
    let server = Server::default("chunked");
    let reply = send(
        server.addr(),
        b"POST /api/v1/health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          2\r\n{}\r\n0\r\n\r\n",
    );
    assert_eq!(reply.status, 411);
    assert_eq!(reply.header("Connection"), Some("close"));
    let json = reply.json();
    assert_eq!(json["error"], "chunked request bodies are not supported");
    assert!(json["reason"].as_str().unwrap().contains("Content-Length"));

    let reply = send(
        server.addr(),
        b"POST /api/v1/health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(reply.status, 501);
    assert!(reply.json()["error"].is_string());
    assert!(healthy(server.addr()));
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::default("keep-alive");
    let mut stream = connect(server.addr());
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for path in ["/api/v1/health", "/api/v1/edges"] {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let reply = read_reply(&mut reader, false);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("Connection"), Some("keep-alive"));
        reply.json();
    }
    // HEAD sends no body: the next answer on the connection starts right after its headers.
    stream
        .write_all(b"HEAD /api/v1/stats HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let head = read_reply(&mut reader, true);
    assert_eq!(head.status, 200);
    assert!(
        head.header("Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
    // Two pipelined requests in one write, the second closing.
    stream
        .write_all(
            b"GET /api/v1/nope HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /api/v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let first = read_reply(&mut reader, false);
    assert_eq!(first.status, 404);
    assert_eq!(first.json()["path"], "/api/v1/nope");
    let second = read_reply(&mut reader, false);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("Connection"), Some("close"));
    assert!(closed(&mut reader));
}

#[test]
fn connections_close_after_the_request_limit() {
    let options = ServerOptions {
        max_requests_per_connection: 2,
        ..api_defaults()
    };
    let server = Server::start("max-requests", 1, options);
    let mut stream = connect(server.addr());
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for expected in ["keep-alive", "close"] {
        stream
            .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let reply = read_reply(&mut reader, false);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("Connection"), Some(expected));
    }
    assert!(closed(&mut reader));
}

#[test]
fn http_1_0_works_without_host_and_closes() {
    let server = Server::default("http10");
    let mut stream = connect(server.addr());
    stream
        .write_all(b"GET /api/v1/health HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let reply = read_reply(&mut reader, false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
    assert_eq!(reply.header("Connection"), Some("close"));
    assert!(closed(&mut reader));
    // HTTP/1.1 without Host is a client error.
    let reply = send(server.addr(), b"GET /api/v1/health HTTP/1.1\r\n\r\n");
    assert_eq!(reply.status, 400);
}

#[test]
fn garbage_is_400_and_unknown_versions_505() {
    let server = Server::default("garbage");
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"hello\r\n\r\n",
        b"GET /api/v1/health\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        b"GET /api/v1/%zz HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nBad Header: x\r\nHost: t\r\n\r\n",
    ] {
        let reply = send(server.addr(), garbage);
        assert_eq!(reply.status, 400, "{:?}", String::from_utf8_lossy(garbage));
        assert!(reply.json()["error"].is_string());
    }
    let reply = send(
        server.addr(),
        b"GET /api/v1/health HTTP/2.0\r\nHost: t\r\n\r\n",
    );
    assert_eq!(reply.status, 505);
    assert!(healthy(server.addr()));
}

#[test]
fn paths_are_percent_decoded() {
    let server = Server::default("decode");
    let reply = send(
        server.addr(),
        b"GET /api/v1/%68ealth?x=%20 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(reply.status, 200);
    let reply = send(
        server.addr(),
        b"GET /api/v1/no%20such HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["path"], "/api/v1/no such");
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = Server::default("expect");
    let mut stream = connect(server.addr());
    stream
        .write_all(
            b"POST /api/v1/health HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100 "), "{line:?}");
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "\r\n");
    stream.write_all(b"{}").unwrap();
    assert_eq!(read_reply(&mut reader, false).status, 405);
}

#[test]
fn a_full_queue_is_answered_503() {
    // One worker, one queue slot. The worker is held by a connection in the middle of its
    // request head (an idle one would yield to the queue); a second connection waits in the
    // queue; a third finds it full.
    let options = ServerOptions {
        queue_capacity: 1,
        ..api_defaults()
    };
    let server = Server::start("busy", 1, options);
    let mut held = connect(server.addr());
    held.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut held_reader = BufReader::new(held.try_clone().unwrap());
    // Answered: the worker has it; then the next head starts and stalls.
    assert_eq!(read_reply(&mut held_reader, false).status, 200);
    held.write_all(b"GET /api/v1/health HTTP/1.1\r\nHo")
        .unwrap();
    let queued = connect(server.addr());
    let refused = connect(server.addr());
    let mut reader = BufReader::new(refused);
    let reply = read_reply(&mut reader, false);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("Retry-After"), Some("1"));
    assert!(reply.json()["error"].is_string());
    // Once the held connection goes, the queued one is served.
    drop((held, held_reader));
    let mut queued_writer = queued.try_clone().unwrap();
    queued_writer.write_all(HEALTH).unwrap();
    assert_eq!(read_reply(&mut BufReader::new(queued), false).status, 200);
}

#[test]
fn stop_closes_idle_keep_alive_connections() {
    let server = Server::default("stop");
    let mut stream = connect(server.addr());
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_reply(&mut reader, false).status, 200);
    // The connection is idle and kept alive; stopping must not wait for its read timeout.
    server.stop();
    assert!(closed(&mut reader));
}

#[test]
fn idle_keep_alive_connections_yield_their_workers_to_waiting_clients() {
    // Two workers, two browser-like keep-alive connections idle after a request, and a read
    // timeout far beyond the safety timeout: without yielding, the third client would wait for
    // an idle connection to time out and its read would fail.
    let options = ServerOptions {
        read_timeout: Duration::from_secs(3600),
        ..api_defaults()
    };
    let server = Server::start("yield", 2, options);
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = connect(server.addr());
        s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let reply = read_reply(&mut reader, false);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("Connection"), Some("keep-alive"));
        idle.push(reader);
    }
    // Both workers are now held by idle connections; another client is still served.
    for _ in 0..3 {
        assert!(healthy(server.addr()));
    }
    // It was served because an idle connection was closed for it: a further request on each
    // idle connection is either answered (still open) or meets the server's close.
    let mut gone = 0;
    for mut reader in idle {
        let _ = reader
            .get_mut()
            .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        if answer.is_empty() {
            gone += 1;
        } else {
            assert!(answer.starts_with(b"HTTP/1.1 200 "), "{answer:?}");
        }
    }
    assert!(gone >= 1, "no idle connection gave its worker up");
    server.stop();
}
