//! OSCORE (RFC 8613) end to end with the real binaries: credentials from `qos-aggregator
//! provision`, a real `qos-edge run` speaking through a real `qos-aggregator broker` to
//! `qos-aggregator serve`. A UDP tap between the broker and serve records what the broker
//! forwards: every request of the edge is protected (an OSCORE option, no Uri-Path, a payload
//! that is no batch), yet serve stores the edge's summaries. Then captured and crafted
//! datagrams are sent to serve: a replay, a forged tag, an unknown key id and a plaintext batch
//! in the edge's name are refused, counted by reason in `/api/v1/stats` and `/metrics`, and
//! nothing more is stored; after a SIGKILL and restart of serve the replay is still refused
//! (the replay window is persisted). Waits are bounded, nothing is timed.
//!
//! Orders of serve to the edge (`POST /p`, `GET /r`) go protected too: the broker routes them
//! on the outer Uri-Host `edge-<id>`, the edge opens them, answers protected, and refuses
//! forged, replayed and plaintext orders sent straight to its socket.
//!
//! The same over a broker whose upstream is CoAP over TCP (RFC 8323): a TCP tap between the
//! broker and serve's `[coap_tcp]` listener records the frames; serve unprotects them like
//! datagrams (same counters, same replay windows), and a captured frame sent again on a new
//! connection is refused as a replay.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qos_coap::{option, Code, Message, MessageType, MessageWriter};
use qos_e2e::{
    binary, free_udp_port, fresh_dir, http_get, start_broker, start_edge, wait_for, EdgeSpec, Proc,
    Serve, TcpTarget,
};
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::samples;
use qos_wire::uplink::Batch;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const EDGE: u32 = 41;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oscore")
}

/// Runs `qos-aggregator provision`; returns the fragment for serve and the one for the edge.
fn provision(dir: &Path) -> (String, String) {
    let out = Command::new(binary("qos-aggregator"))
        .args(["provision", "--edge", &EDGE.to_string(), "--out"])
        .arg(dir.join("keys"))
        .output()
        .expect("run provision");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let at = text
        .find(&format!("# edge {EDGE}"))
        .expect("the edge's fragment");
    let (serve, edge) = text.split_at(at);
    assert!(serve.contains("[[oscore.edge]]"), "{text}");
    assert!(edge.contains("[oscore]"), "{text}");
    (serve.to_string(), edge.to_string())
}

/// A UDP relay between the broker (which sends to `listen`) and serve; keeps every datagram
/// the broker sent.
struct Tap {
    listen: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    /// What serve sent to the broker.
    down: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl Tap {
    fn start(serve: SocketAddr) -> Tap {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        back.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let tap = Tap {
            listen: front.local_addr().unwrap(),
            seen: Arc::new(Mutex::new(Vec::new())),
            down: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (seen, down, stop) = (tap.seen.clone(), tap.down.clone(), tap.stop.clone());
        std::thread::spawn(move || {
            let mut broker = None;
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    broker = Some(from);
                    seen.lock().unwrap().push(buf[..n].to_vec());
                    let _ = back.send_to(&buf[..n], serve);
                }
                if let (Ok((n, _)), Some(b)) = (back.recv_from(&mut buf), broker) {
                    down.lock().unwrap().push(buf[..n].to_vec());
                    let _ = front.send_to(&buf[..n], b);
                }
            }
        });
        tap
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The edge `EDGE` with OSCORE (`edge_part` of [`provision`]), sending to `to` (bound to
/// `bind` when given) and probing a TCP server of its own, which lives as long as it is kept.
fn start_oscore_edge(
    dir: &Path,
    edge_part: &str,
    to: SocketAddr,
    bind: Option<SocketAddr>,
) -> (Proc, TcpTarget) {
    let target = TcpTarget::start();
    let spec = EdgeSpec {
        id: EDGE,
        brokers: vec![to],
        target: target.addr,
        storage: dir.join("edge-data"),
        extra_toml: format!("\n{edge_part}"),
        bind,
    };
    (start_edge(dir, &spec), target)
}

/// Waits until serve holds at least `n` of `EDGE`'s records (the edge's log in the failure).
fn wait_edge_stored(serve: &Serve, edge: &Proc, n: u64, what: &str) -> u64 {
    wait_for(what, WAIT, || match serve.received(EDGE) {
        Ok(got) if got >= n => Ok(got),
        other => Err(format!("{other:?}\n{}", edge.log_tail())),
    })
}

/// The edge's key id and serve's id, from the edge's `[oscore]` part of [`provision`].
fn ids_of(edge_part: &str) -> (Vec<u8>, Vec<u8>) {
    let hex_of = |key: &str| -> Vec<u8> {
        let v = edge_part
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .expect(key);
        (0..v.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
            .collect()
    };
    (hex_of("kid"), hex_of("serve_id"))
}

fn stats(serve: &Serve) -> Value {
    serve.get_json("/api/v1/stats").expect("stats")
}

fn rejected(serve: &Serve, reason: &str) -> u64 {
    stats(serve)["rejected"][reason].as_u64().unwrap_or(0)
}

/// Sends `datagram` to serve from a fresh socket and waits until `reason` counts one more.
fn refused(serve: &Serve, datagram: &[u8], reason: &str) {
    let before = rejected(serve, reason);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(datagram, serve.coap).unwrap();
    wait_for(&format!("serve to count {reason}"), WAIT, || {
        let now = rejected(serve, reason);
        if now > before {
            Ok(())
        } else {
            Err(format!("{}", stats(serve)))
        }
    });
}

fn post_u(payload: &[u8], mid: u16) -> Vec<u8> {
    let mut buf = [0u8; 1152];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Confirmable,
        Code::POST,
        mid,
        &[9, mid as u8],
    )
    .unwrap();
    w.uri_path("u").unwrap();
    w.uint_option(option::CONTENT_FORMAT, 60).unwrap();
    w.payload(payload).unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

#[test]
fn an_oscore_edge_speaks_through_a_broker_that_cannot_read_it() {
    let dir = fresh_dir(&base(), "relay");
    let (serve_part, edge_part) = provision(&dir);
    let serve = Serve::start_with(&dir, &serve_part);
    let tap = Tap::start(serve.coap);
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(&dir, 0, broker_addr, tap.listen, "report_interval_ms = 500");
    let (edge, _target) = start_oscore_edge(&dir, &edge_part, broker_addr, None);
    let stored = wait_edge_stored(&serve, &edge, 3, "serve to store the OSCORE edge's records");
    assert!(stored >= 3);
    // The route serve sees is the broker (the tap's address), not "direct".
    let row = serve.edge_row(EDGE).unwrap();
    assert!(
        row["broker"].is_string() && row["broker"] != "direct",
        "{row}"
    );
    // The broker counts what it relayed unread, in its report (GET /api/v1/brokers).
    wait_for(
        "the broker's report to count protected relays",
        WAIT,
        || {
            let list = serve.get_json("/api/v1/brokers")?;
            match list["brokers"][0]["report"]["protected_relayed"].as_u64() {
                Some(n) if n >= 1 => Ok(()),
                _ => Err(format!("{list}")),
            }
        },
    );
    edge.kill9();
    broker.kill9();

    // What the broker forwarded: the edge's requests only as OSCORE, never readable.
    let seen = tap.seen.lock().unwrap().clone();
    let protected: Vec<&Vec<u8>> = seen
        .iter()
        .filter(|d| Message::parse(d).is_ok_and(|m| m.option(option::OSCORE).is_some()))
        .collect();
    assert!(!protected.is_empty(), "no protected datagram forwarded");
    for d in &seen {
        let m = Message::parse(d).unwrap();
        assert!(!m.path_is("u"), "a plaintext batch was forwarded: {d:02x?}");
        if m.option(option::OSCORE).is_some() {
            assert_eq!(m.uri_path().count(), 0, "Uri-Path is encrypted");
            assert_eq!(m.code(), Code::POST, "the outer code");
            assert!(
                Batch::decode(m.payload()).is_err(),
                "the payload is no batch"
            );
        }
    }
    let capture = protected
        .iter()
        .rev()
        .find(|d| Message::parse(d).is_ok_and(|m| m.payload().len() > 40))
        .expect("a protected batch")
        .to_vec();

    // Refusals: nothing more is stored.
    let stored_before = stats(&serve)["stored"].as_u64().unwrap();
    refused(&serve, &capture, "oscore_replay");
    // The captured datagram with a flipped tag byte is refused before its tag is even checked
    // (its number was used); a fresh number under the edge's key id but a wrong key is forged.
    let mut flipped = capture.clone();
    *flipped.last_mut().unwrap() ^= 0x01;
    refused(&serve, &flipped, "oscore_replay");
    let (kid, serve_id) = ids_of(&edge_part);
    let mut forger = qos_oscore::Context::derive(&[9; 32], b"", None, &kid, &serve_id).unwrap();
    forger.set_sender_sequence(1 << 39);
    let batch0 = samples::batch(
        EdgeId(EDGE),
        Seq(1 << 40),
        0,
        &[samples::http_summary::<16>(1, 60, 0)],
    )
    .unwrap();
    let mut fo = [0u8; 1300];
    let (fn_, _) = forger
        .protect_request(&post_u(&batch0, 6), &mut fo)
        .unwrap();
    refused(&serve, &fo[..fn_], "oscore_forged");
    let mut stranger = qos_oscore::Context::derive(&[7; 32], b"", None, b"\xde\xad", b"").unwrap();
    let batch = samples::batch(
        EdgeId(EDGE),
        Seq(1 << 40),
        0,
        &[samples::http_summary::<16>(1, 60, 0)],
    )
    .unwrap();
    let mut out = [0u8; 1300];
    let (n, _) = stranger
        .protect_request(&post_u(&batch, 7), &mut out)
        .unwrap();
    refused(&serve, &out[..n], "oscore_unknown_kid");
    refused(&serve, &post_u(&batch, 8), "oscore_required");
    assert_eq!(
        stats(&serve)["stored"].as_u64().unwrap(),
        stored_before,
        "nothing stored"
    );
    let (status, metrics) = http_get(serve.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    for (reason, n) in [
        ("oscore_replay", 2),
        ("oscore_forged", 1),
        ("oscore_unknown_kid", 1),
        ("oscore_required", 1),
    ] {
        let line = format!("qos_ingest_rejected_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing in\n{metrics}");
    }

    // A restart (SIGKILL) does not forget which numbers were used.
    let (http, coap) = (serve.http, serve.coap);
    serve.proc.kill9();
    let serve = Serve::start_at_with(&dir, http, coap, &serve_part);
    assert_eq!(rejected(&serve, "oscore_replay"), 0, "fresh counters");
    refused(&serve, &capture, "oscore_replay");
    assert_eq!(
        stats(&serve)["stored"].as_u64().unwrap(),
        0,
        "nothing stored after restart"
    );
}

/// A TCP relay between the broker (which connects to `listen`) and serve's CoAP-over-TCP
/// listener; keeps every byte the broker sent.
struct TcpTap {
    listen: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl TcpTap {
    fn start(serve: SocketAddr) -> TcpTap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tap = TcpTap {
            listen: listener.local_addr().unwrap(),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let seen = tap.seen.clone();
        std::thread::spawn(move || {
            // One connection at a time is enough: the broker keeps one.
            for front in listener.incoming() {
                let Ok(front) = front else { return };
                let Ok(back) = TcpStream::connect(serve) else {
                    continue;
                };
                let (mut f2, mut b2) = (front.try_clone().unwrap(), back.try_clone().unwrap());
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = b2.read(&mut buf) {
                        if n == 0 || f2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
                let (mut front, mut back) = (front, back);
                let mut buf = [0u8; 4096];
                while let Ok(n) = front.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    if back.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        tap
    }

    /// The frames the broker sent so far.
    fn frames(&self) -> Vec<Vec<u8>> {
        let bytes = self.seen.lock().unwrap().clone();
        let mut out = Vec::new();
        let mut at = 0;
        while let Ok(Some(n)) = qos_coap::msg::frame_len(&bytes[at..]) {
            if at + n > bytes.len() {
                break;
            }
            out.push(bytes[at..at + n].to_vec());
            at += n;
        }
        out
    }
}

/// Sends `frame` to serve's CoAP-over-TCP listener on a new connection (after a CSM) and
/// waits until `reason` counts one more.
fn refused_on_stream(serve: &Serve, tcp: SocketAddr, frame: &[u8], reason: &str) {
    let before = rejected(serve, reason);
    let mut conn = TcpStream::connect(tcp).unwrap();
    // 7.01 CSM, no options, no token.
    conn.write_all(&[0x00, 0xe1]).unwrap();
    conn.write_all(frame).unwrap();
    wait_for(&format!("serve to count {reason} (stream)"), WAIT, || {
        let now = rejected(serve, reason);
        if now > before {
            Ok(())
        } else {
            Err(format!("{}", stats(serve)))
        }
    });
}

#[test]
fn oscore_batches_relayed_over_a_tcp_upstream_are_opened_like_datagrams() {
    let dir = fresh_dir(&base(), "stream");
    let (serve_part, edge_part) = provision(&dir);
    let tcp = SocketAddr::from(([127, 0, 0, 1], qos_e2e::free_tcp_port()));
    let serve = Serve::start_with(
        &dir,
        &format!("{serve_part}\n[coap_tcp]\nlisten = \"{tcp}\"\n"),
    );
    let tap = TcpTap::start(tcp);
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = qos_e2e::tls::start_broker_with(
        &dir,
        0,
        broker_addr,
        &format!(
            "[upstream]\ntransport = \"tcp\"\naddress = \"{}\"\n",
            tap.listen
        ),
    );
    let (edge, _target) = start_oscore_edge(&dir, &edge_part, broker_addr, None);
    let stored = wait_edge_stored(
        &serve,
        &edge,
        3,
        "serve to store the OSCORE edge's records (TCP upstream)",
    );
    assert!(stored >= 3);
    edge.kill9();
    broker.kill9();
    let s = stats(&serve);
    let (accepted, writes) = (
        s["oscore"]["accepted"].as_u64().unwrap(),
        s["oscore"]["state_writes"].as_u64().unwrap(),
    );
    println!(
        "OSCORE requests accepted: {accepted}, state file writes: {writes} (persist_every 64)"
    );
    assert!(accepted >= 1, "{s}");
    assert!(
        (1..=accepted / 64 + 1).contains(&writes),
        "a mark per 64 numbers, not a write per request: {s}"
    );
    for reason in [
        "oscore_forged",
        "oscore_replay",
        "oscore_malformed",
        "oscore_required",
    ] {
        assert_eq!(s["rejected"][reason], 0, "{reason}: {s}");
    }

    // What went over the stream: the edge's requests only as OSCORE.
    let frames = tap.frames();
    let protected: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|f| Message::parse_frame(f).is_ok_and(|m| m.option(option::OSCORE).is_some()))
        .collect();
    assert!(!protected.is_empty(), "no protected frame: {frames:02x?}");
    for f in &frames {
        let m = Message::parse_frame(f).unwrap();
        assert!(!m.path_is("u"), "a plaintext batch was forwarded: {f:02x?}");
        if m.option(option::OSCORE).is_some() {
            assert_eq!(m.uri_path().count(), 0, "Uri-Path is encrypted");
            assert_eq!(m.code(), Code::POST, "the outer code");
        }
    }
    let capture = protected
        .iter()
        .rev()
        .find(|f| Message::parse_frame(f).is_ok_and(|m| m.payload().len() > 40))
        .expect("a protected batch")
        .to_vec();
    let stored_before = stats(&serve)["stored"].as_u64().unwrap();
    refused_on_stream(&serve, tcp, &capture, "oscore_replay");
    // The same replay as a datagram: one replay window for both.
    let m = Message::parse_frame(&capture).unwrap();
    let mut buf = [0u8; 1300];
    let mut w =
        MessageWriter::new(&mut buf, MessageType::Confirmable, m.code(), 77, m.token()).unwrap();
    for (n, v) in m.options() {
        w.option(n, v).unwrap();
    }
    w.payload(m.payload()).unwrap();
    let n = w.finish();
    refused(&serve, &buf[..n], "oscore_replay");
    assert_eq!(
        stats(&serve)["stored"].as_u64().unwrap(),
        stored_before,
        "nothing stored"
    );
}

#[test]
fn orders_to_an_oscore_edge_are_protected_end_to_end_and_forgeries_refused() {
    let dir = fresh_dir(&base(), "orders");
    let (serve_part, edge_part) = provision(&dir);
    let serve = Serve::start_with(&dir, &serve_part);
    let tap = Tap::start(serve.coap);
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let _broker = start_broker(&dir, 0, broker_addr, tap.listen, "");
    let edge_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let (edge, target) = start_oscore_edge(&dir, &edge_part, broker_addr, Some(edge_addr));
    wait_edge_stored(&serve, &edge, 1, "serve to store the OSCORE edge's records");

    // A probe now, and the recent results: through the broker, protected both ways.
    let (status, text) = qos_e2e::http_request(
        serve.http,
        "POST",
        &format!("/api/v1/edges/{EDGE}/probe"),
        &format!(
            "{{\"id\": 42, \"kind\": \"tcp\", \"target\": \"{}\", \"timeout_ms\": 1000}}",
            target.addr
        ),
        WAIT,
    )
    .expect("the probe request");
    assert_eq!(status, 200, "{text}\n{}", edge.log_tail());
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["result"]["probe"], 42, "{r}");
    assert_eq!(r["result"]["status"], "ok", "{r}");
    let (status, text) = qos_e2e::http_request(
        serve.http,
        "GET",
        &format!("/api/v1/edges/{EDGE}/results?probe=1"),
        "",
        WAIT,
    )
    .expect("the results request");
    assert_eq!(status, 200, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    assert!(
        r["results"].as_array().is_some_and(|a| !a.is_empty()),
        "{r}"
    );

    // What serve sent the broker: orders only as OSCORE, routed on the outer Uri-Host.
    let down = tap.down.lock().unwrap().clone();
    let orders: Vec<&Vec<u8>> = down
        .iter()
        .filter(|d| {
            Message::parse(d).is_ok_and(|m| m.code().is_request() && m.code() != Code::EMPTY)
        })
        .collect();
    assert!(orders.len() >= 2, "{down:02x?}");
    let host = format!("edge-{EDGE}");
    for d in &orders {
        let m = Message::parse(d).unwrap();
        assert!(
            m.option(option::OSCORE).is_some(),
            "a plaintext order: {d:02x?}"
        );
        assert_eq!(m.code(), Code::POST, "the outer code");
        assert_eq!(m.uri_path().count(), 0, "Uri-Path is encrypted");
        assert_eq!(m.uri_queries().count(), 0, "queries are encrypted");
        assert_eq!(m.option(option::URI_HOST), Some(host.as_bytes()));
    }
    // The edge's answers came back protected.
    let seen = tap.seen.lock().unwrap().clone();
    let answers = seen
        .iter()
        .filter(|d| {
            Message::parse(d).is_ok_and(|m| {
                m.code().is_response()
                    && orders
                        .iter()
                        .any(|o| Message::parse(o).is_ok_and(|q| q.token() == m.token()))
            })
        })
        .collect::<Vec<_>>();
    assert!(answers.len() >= 2, "{seen:02x?}");
    for a in &answers {
        let m = Message::parse(a).unwrap();
        assert!(
            m.option(option::OSCORE).is_some(),
            "a plaintext answer: {a:02x?}"
        );
        assert_eq!(m.code(), Code::CHANGED, "the outer code");
    }

    // Straight to the edge's socket: a captured order again, a forged one, a plaintext one.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let log = dir.join(format!("edge-{EDGE}.log"));
    sock.send_to(orders[0], edge_addr).unwrap();
    qos_e2e::tls::wait_log(&log, "replayed=1", 1);
    let (kid, serve_id) = ids_of(&edge_part);
    let mut forger = qos_oscore::Context::derive(&[9; 32], b"", None, &serve_id, &kid).unwrap();
    forger.set_sender_sequence(1 << 30);
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 5, &[5]).unwrap();
    w.uri_path("r").unwrap();
    let n = w.finish();
    let mut out = [0u8; 256];
    let (k, _) = forger.protect_request(&buf[..n], &mut out).unwrap();
    sock.send_to(&out[..k], edge_addr).unwrap();
    qos_e2e::tls::wait_log(&log, "forged=1", 1);
    sock.send_to(&buf[..n], edge_addr).unwrap();
    qos_e2e::tls::wait_log(&log, "unprotected=1", 1);
    // None of them was answered: the only datagrams the test socket may get are none.
    sock.set_nonblocking(true).unwrap();
    let mut b = [0u8; 256];
    assert!(
        sock.recv_from(&mut b).is_err(),
        "a refused order was answered"
    );
    edge.kill9();
}

/// After serve is SIGKILLed and restarted, it refuses every number up to its last persisted
/// mark + `persist_every` (here the largest, 4096), including numbers the edge has not used
/// yet. It answers such a request 4.01 "Replay detected" (RFC 8613 §7.4), the edge moves its
/// numbers on by `RESYNC_STEP` and its records flow again. Without that answer each refused
/// number would cost the edge an exchange timeout: thousands here, far beyond the wait.
#[test]
fn an_edge_resynchronises_after_serve_restarts_with_a_large_persist_interval() {
    let dir = fresh_dir(&base(), "resync");
    let (serve_part, edge_part) = provision(&dir);
    let serve_cfg = format!("[oscore]\npersist_every = 4096\n\n{serve_part}");
    let serve = Serve::start_with(&dir, &serve_cfg);
    let (edge, _target) = start_oscore_edge(&dir, &edge_part, serve.coap, None);
    let before = wait_edge_stored(&serve, &edge, 2, "serve to store the OSCORE edge's records");
    let (http, coap) = (serve.http, serve.coap);
    serve.proc.kill9();
    let serve = Serve::start_at_with(&dir, http, coap, &serve_cfg);
    // The store keeps what was stored; new records arrive once the edge has moved on.
    wait_for(
        "the edge's records to flow again after the restart",
        WAIT,
        || match serve.received(EDGE) {
            Ok(n) if n >= before + 2 => Ok(n),
            other => Err(format!(
                "{other:?} (before the restart: {before})\n{}\n{}",
                stats(&serve),
                edge.log_tail()
            )),
        },
    );
    assert!(
        rejected(&serve, "oscore_replay") >= 1,
        "the first number after the restart was in the refused range: {}",
        stats(&serve)
    );
    assert!(
        edge.log_text().contains("replay detected by the receiver"),
        "the edge resynchronised:\n{}",
        edge.log_tail()
    );
    let row = serve.edge_row(EDGE).unwrap();
    assert_eq!(row["duplicates"], 0, "{row}");
    assert_eq!(row["gaps"], 0, "{row}");
    edge.kill9();
}
