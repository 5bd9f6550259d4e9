//! Limits per edge over real processes (issue 7, issue 4): `qos-aggregator serve` and
//! `qos-aggregator broker` limit each edge's batches by edge id, behind the per-address gate.
//! A noisy edge floods valid batches from the same address as a good `qos-edge` (and hops
//! between addresses); it gets 4.29 Too Many Requests with Max-Age, counted as
//! `rate_limited_edge` at `GET /api/v1/stats`, `GET /metrics` and in the broker's report, while
//! the good edges lose nothing. Bounded waits, no timing assertions.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use qos_coap::{option, Code, Message, MessageType, MessageWriter};
use qos_e2e::{fresh_dir, http_get, two_limited_edges};
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::samples;
use qos_wire::summary::Summary;

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(90);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("limits")
}

/// A CON `POST /u` carrying the one-summary batch `seq` of `edge`.
fn batch_request(mid: u16, edge: u32, seq: u64) -> Vec<u8> {
    let s: Summary<16> = samples::http_summary(seq + 1, 60, 0);
    let payload = samples::batch(EdgeId(edge), Seq(seq), 0, &[s]).expect("batch");
    let mut buf = vec![0u8; 2048];
    let token = mid.to_be_bytes();
    let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, mid, &token)
        .expect("header");
    w.uri_path("u").expect("path");
    w.uint_option(option::CONTENT_FORMAT, 60).expect("cf");
    w.payload(&payload).expect("payload");
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// What the noisy edge saw.
#[derive(Debug, Default)]
struct Noise {
    stored: u64,
    refused: u64,
    /// Requests without an answer in time (not counted as either).
    unanswered: u64,
}

/// Edge `edge` sends `n` batches to `to` one after the other, each as soon as the previous
/// one was answered, hopping between the source addresses `from` (its sequence number moves
/// on only when a batch was acknowledged). Every 4.29 must carry a Max-Age of at least 1 s.
fn noisy_edge(to: SocketAddr, edge: u32, n: u16, from: &[&str]) -> Noise {
    let socks: Vec<UdpSocket> = from
        .iter()
        .map(|a| {
            let s = UdpSocket::bind(format!("{a}:0")).expect("bind a loopback address");
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .collect();
    let mut noise = Noise::default();
    let mut seq = 0;
    let mut buf = [0u8; 2048];
    for mid in 0..n {
        let sock = &socks[usize::from(mid) % socks.len()];
        sock.send_to(&batch_request(mid, edge, seq), to).unwrap();
        let answer = loop {
            match sock.recv_from(&mut buf) {
                Ok((len, _)) => {
                    let m = Message::parse(&buf[..len]).expect("a CoAP answer");
                    if m.message_id() == mid {
                        break Some((m.code(), m.uint_option(option::MAX_AGE)));
                    }
                }
                Err(_) => break None,
            }
        };
        match answer {
            Some((Code::CHANGED, _)) => {
                noise.stored += 1;
                seq += 1;
            }
            Some((Code::TOO_MANY_REQUESTS, max_age)) => {
                assert!(max_age >= Some(1), "Max-Age {max_age:?}");
                noise.refused += 1;
            }
            Some((code, _)) => panic!("batch {mid} of edge {edge} answered {code:?}"),
            None => noise.unanswered += 1,
        }
    }
    noise
}

#[test]
fn a_noisy_edge_behind_the_same_address_is_cut_per_edge_and_the_good_edges_lose_nothing() {
    let dir = fresh_dir(&base(), "per-edge");
    // A wide per-address gate (it is not under test here) and a narrow per-edge bucket: the
    // good edges send about one batch per second.
    let limit = "rate_per_s = 100000\nburst = 100000\nedge_rate_per_s = 10\nedge_burst = 30\n";
    let ids = [51, 52];
    let limited = two_limited_edges(&dir, limit, ids, WAIT);
    let serve = &limited.serve;

    // Noisy edges on 127.0.0.1 like the good ones, also hopping to 127.0.0.2 and 127.0.0.3.
    const N: u16 = 400;
    let hops = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let at_serve = noisy_edge(serve.coap, 61, N, &hops);
    let at_broker = noisy_edge(limited.listen, 62, N, &hops);
    for (name, noise) in [("serve", &at_serve), ("broker", &at_broker)] {
        assert!(noise.refused > 0, "{name}: {noise:?}");
        assert!(noise.stored >= 30, "{name}: at least the burst, {noise:?}");
    }

    let stats = limited.serve_counted("rate_limited_edge", at_serve.refused, WAIT);
    let counted = stats["rejected"]["rate_limited_edge"].as_u64().unwrap();
    assert!(
        counted <= at_serve.refused + at_serve.unanswered,
        "{counted} counted, {at_serve:?}"
    );
    assert_eq!(
        stats["rejected"]["rate_limited"].as_u64(),
        Some(0),
        "{stats}"
    );
    let (status, metrics) = http_get(serve.http, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "qos_ingest_rejected_total{{reason=\"rate_limited_edge\"}} {counted}\n"
        )),
        "{metrics}"
    );
    let report = limited.broker_counted("rate_limited_edge", at_broker.refused, WAIT);

    // The good edges keep being served, and lose nothing.
    let counts = limited.finish(WAIT);
    println!(
        "noisy edge, {N} batches each: at serve {} stored / {} refused 4.29 (counted {counted}); \
         via the broker {} stored / {} refused (reported {}); good edges stored {:?}",
        at_serve.stored,
        at_serve.refused,
        at_broker.stored,
        at_broker.refused,
        report["rejected"]["rate_limited_edge"],
        counts
    );
}
