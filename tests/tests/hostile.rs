//! Hostile input over real sockets (DESIGN.md §5: every malformed request refused with a
//! reason; §6 tier 3): `qos-aggregator serve` and `qos-aggregator broker` get garbage,
//! truncated, oversized and wrong-version datagrams, requests for unknown edges and a flood
//! from one address. Each refusal is counted by reason at `GET /api/v1/stats`, `GET /metrics`
//! (checked by the real `promtool check metrics` when it is installed) and, for the broker, in
//! its report; the flood is cut by the per-source token bucket while a well-behaved edge on
//! another address loses nothing. Bounded waits, no timing assertions.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use qos_coap::{option, Code, MessageType, MessageWriter};
use qos_e2e::{
    free_udp_port, fresh_dir, http_get, start_broker, two_limited_edges, wait_for, Serve,
};

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(90);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hostile")
}

/// A CON request.
fn request(
    code: Code,
    mid: u16,
    path: &str,
    queries: &[&str],
    cf: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let token = mid.to_be_bytes();
    let mut w =
        MessageWriter::new(&mut buf, MessageType::Confirmable, code, mid, &token).expect("header");
    for seg in path.split('/') {
        w.uri_path(seg).expect("path");
    }
    if let Some(cf) = cf {
        w.uint_option(option::CONTENT_FORMAT, cf).expect("cf");
    }
    for q in queries {
        w.option(option::URI_QUERY, q.as_bytes()).expect("query");
    }
    w.payload(payload).expect("payload");
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Sends every kind of bad input to `to`: garbage, a short header, an oversized datagram, a
/// batch of wire version 2, a truncated batch, `/c` of an unknown edge, a refresh of an
/// unknown registration. Waits for the answers of the requests that get one.
fn send_hostile(sock: &UdpSocket, to: SocketAddr) {
    sock.send_to(&[0xff, 0x13, 0x37, 0x00, 0x42], to)
        .expect("send");
    sock.send_to(&[0x40], to).expect("send");
    let mut big = request(Code::POST, 1, "u", &[], Some(60), &[0u8; 1400]);
    big.resize(1500, 0);
    sock.send_to(&big, to).expect("send");
    // [2, edge, first_seq, dropped, [[0, 0]]] and a version-1 batch cut short.
    let v2 = [0x85, 0x02, 0x01, 0x00, 0x00, 0x81, 0x82, 0x00, 0x00];
    let cut = [0x85, 0x01, 0x01, 0x00];
    let mut mid = 10;
    for (code, path, queries, cf, payload) in [
        (Code::POST, "u", &[][..], Some(60), &v2[..]),
        (Code::POST, "u", &[], Some(60), &cut[..]),
        (Code::GET, "c", &["id=4242"][..], None, &[][..]),
        (Code::POST, "rd/999", &[], None, &[]),
    ] {
        mid += 1;
        sock.send_to(&request(code, mid, path, queries, cf, payload), to)
            .expect("send");
        let mut buf = [0u8; 2048];
        // An answer (4.xx) for each; the broker relays nothing for an unknown edge.
        let (n, _) = sock.recv_from(&mut buf).expect("an answer");
        let m = qos_coap::Message::parse(&buf[..n]).expect("CoAP");
        assert_eq!(m.code().class(), 4, "{path}: {:?}", m.code());
    }
}

/// `promtool check metrics` on `text`, when promtool is installed.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        println!("SKIPPED promtool check: promtool is not installed (Debian package prometheus)");
        return;
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "promtool check metrics: ok ({} lines)",
        text.lines().count()
    );
}

fn metric(text: &str, line_start: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn hostile_input_is_refused_and_counted_by_reason() {
    let dir = fresh_dir(&base(), "reasons");
    let serve = Serve::start(&dir);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(&dir, 0, listen, serve.coap, "report_interval_ms = 500");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    send_hostile(&sock, serve.coap);
    send_hostile(&sock, listen);

    let stats = serve.get_json("/api/v1/stats").expect("stats");
    for reason in [
        "malformed",
        "oversized",
        "unsupported_version",
        "truncated",
        "unknown_edge",
    ] {
        assert!(
            stats["rejected"][reason].as_u64() >= Some(1),
            "{reason} not counted: {stats}"
        );
    }
    assert_eq!(stats["rejected"]["unknown_edge"], 2, "{stats}");
    assert_eq!(stats["stored"], 0, "{stats}");

    // The broker's refusals reach serve with its report.
    let report = wait_for("the broker's report with its refusals", WAIT, || {
        let b = serve.get_json("/api/v1/brokers")?;
        let r = b["brokers"]
            .as_array()
            .and_then(|a| a.iter().find(|b| !b["report"].is_null()))
            .map(|b| b["report"].clone())
            .ok_or_else(|| format!("no report: {b}"))?;
        let n = |k: &str| r["rejected"][k].as_u64().unwrap_or(0);
        if n("malformed") >= 3
            && n("bad_batch") >= 2
            && n("unknown_edge") >= 1
            && n("not_found") >= 1
        {
            Ok(r)
        } else {
            Err(format!("{r}\n{}", broker.log_tail()))
        }
    });
    println!("broker refusals: {}", report["rejected"]);

    let (status, text) = http_get(serve.http, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    for reason in ["malformed", "oversized", "unsupported_version", "truncated"] {
        let line = format!("qos_ingest_rejected_total{{reason=\"{reason}\"}} ");
        assert!(metric(&text, &line) >= Some(1), "{line}\n{text}");
    }
    assert!(
        metric(&text, "qos_ingest_rejected_total{reason=\"unknown_edge\"} ") == Some(2),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("qos_broker_rejected_total{broker=")
                && l.contains("reason=\"bad_batch\"")
                && !l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        metric(&text, "qos_http_requests_total{code=\"2xx\"} ") >= Some(1),
        "{text}"
    );
    promtool_check(&text);
    serve.proc.stop(WAIT);
}

fn flood(to: SocketAddr, n: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        // Another source address on loopback, so the flood has a bucket of its own.
        let sock = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        let junk = request(Code::POST, 1, "u", &[], Some(60), &[0x85, 0x01, 0x01]);
        for i in 0..n {
            let bytes: &[u8] = if i % 2 == 0 {
                &junk
            } else {
                &[0xff, 0x00, 0x01, 0x02]
            };
            let _ = sock.send_to(bytes, to);
        }
    })
}

#[test]
fn a_flood_from_one_address_does_not_starve_a_good_edge() {
    let dir = fresh_dir(&base(), "flood");
    let limit = "rate_per_s = 100\nburst = 200\n";
    let ids = [41, 42];
    let limited = two_limited_edges(&dir, limit, ids, WAIT);

    const FLOOD: usize = 20_000;
    let floods = [
        flood(limited.serve.coap, FLOOD),
        flood(limited.listen, FLOOD),
    ];
    for f in floods {
        f.join().expect("flood thread");
    }
    let stats = limited.serve_counted("rate_limited", 1, WAIT);
    let report = limited.broker_counted("rate_limited", 1, WAIT);
    // The edges keep being served after the flood, and acknowledged == stored for both.
    let counts = limited.finish(WAIT);
    println!(
        "flood of {FLOOD} datagrams each: serve rate_limited {}, malformed {}; broker rate_limited {}; \
         edge 41 stored {}, edge 42 stored {}",
        stats["rejected"]["rate_limited"],
        stats["rejected"]["malformed"],
        report["rejected"]["rate_limited"],
        counts[0],
        counts[1]
    );
}
