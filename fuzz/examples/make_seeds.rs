//! Writes the seed corpus, `corpus-seed/<target>/<name>`, from the realistic samples of
//! `qos-wire` (feature `samples`): `cargo run --example make_seeds [-- DIR]` in this directory.
//! The files are committed; run this again when a wire format changes.

use std::path::Path;

use qos_coap::{option, Code, MessageType, MessageWriter};
use qos_edge_core::Outbox;
use qos_wire::codec::{encode_into, List};
use qos_wire::config::{EdgeConfig, RuleBinding};
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::phase::Phase;
use qos_wire::samples;
use qos_wire::summary::Summary;
use qos_wire::threshold::{Metric, ThresholdRule};
use qos_wire::uplink::{encode_batch_head, encode_record, Ack, RecordKind};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create the seed directory");
    std::fs::write(d.join(name), bytes).expect("write a seed");
}

fn coap(
    ty: MessageType,
    code: Code,
    mid: u16,
    path: &str,
    cf: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; 1152];
    let mut w = MessageWriter::new(&mut buf, ty, code, mid, &[0xa1, 0xb2]).expect("header");
    w.uri_path(path).expect("path");
    if let Some(cf) = cf {
        w.uint_option(option::CONTENT_FORMAT, cf).expect("cf");
    }
    w.payload(payload).expect("payload");
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus-seed".into());
    let dir = Path::new(&out);

    let one: Summary<128> = samples::http_summary(1, 10, 0);
    let failing: Summary<128> = samples::http_summary(2, 5, 3);
    let batch1 = samples::batch(
        EdgeId(7),
        Seq::first_of_epoch(1),
        0,
        std::slice::from_ref(&one),
    )
    .expect("batch");
    let batch2 = samples::batch(
        EdgeId(7),
        Seq(Seq::first_of_epoch(2).0 + 5),
        3,
        &[one.clone(), failing.clone()],
    )
    .expect("batch");
    let host = samples::metrics_sample();
    let mut buf = vec![0u8; 1024];
    let n = encode_into(&mut buf, |e| {
        encode_batch_head(e, EdgeId(7), Seq::first_of_epoch(3), 0, 2)?;
        encode_record(e, RecordKind::Summary, |e| one.encode(e))?;
        encode_record(e, RecordKind::Metrics, |e| host.encode(e))
    })
    .expect("batch");
    let metrics = buf[..n].to_vec();
    for (t, name, b) in [
        ("wire_batch", "one", &batch1),
        ("wire_batch", "two", &batch2),
        ("wire_batch", "metrics", &metrics),
        ("ingest", "one", &batch1),
        ("ingest", "two", &batch2),
        ("ingest", "metrics", &metrics),
    ] {
        write(dir, t, name, b);
    }

    let specs = samples::probe_specs();
    let rules = [
        RuleBinding {
            probe: specs[0].id,
            rule: ThresholdRule {
                metric: Metric::Phase(Phase::Total),
                raise: 500_000,
                clear: 200_000,
                k: 3,
                n: 5,
            },
        },
        RuleBinding {
            probe: specs[1].id,
            rule: ThresholdRule {
                metric: Metric::Availability,
                raise: 0,
                clear: 0,
                k: 2,
                n: 3,
            },
        },
    ];
    let cfg = EdgeConfig {
        etag: 42,
        window_s: 60,
        probes: List::from_slice(&specs),
        rules: List::from_slice(&rules),
    };
    let mut buf = vec![0u8; 4096];
    let n = cfg.encode(&mut buf).expect("config");
    write(dir, "wire_config", "every-kind", &buf[..n]);
    write(
        dir,
        "wire_config_report",
        "refused",
        &qos_wire::samples::config_report(),
    );

    for (name, seq) in [
        ("small", Seq(3)),
        ("epoch", Seq(Seq::first_of_epoch(9).0 + 77)),
    ] {
        let mut b = [0u8; 16];
        let n = Ack { acked: seq }.encode(&mut b).expect("ack");
        write(dir, "wire_ack", name, &b[..n]);
    }

    for (name, s) in [("ok", &one), ("failing", &failing)] {
        let n = encode_into(&mut buf, |e| {
            e.encode(&s.sketch)?;
            Ok(())
        })
        .expect("sketch");
        write(dir, "sketch", name, &buf[..n]);
    }

    let post = coap(
        MessageType::Confirmable,
        Code::POST,
        0x1234,
        "u",
        Some(60),
        &batch1,
    );
    let get = coap(
        MessageType::Confirmable,
        Code::GET,
        0x1235,
        ".well-known/core",
        None,
        &[],
    );
    let non = coap(
        MessageType::NonConfirmable,
        Code::POST,
        0x1236,
        "u",
        Some(50),
        b"{}",
    );
    let ack = coap(
        MessageType::Acknowledgement,
        Code::CHANGED,
        0x0001,
        "",
        Some(60),
        &[0x82, 0x01, 0x03],
    );
    for (name, m) in [("post", &post), ("get", &get), ("non", &non), ("ack", &ack)] {
        write(dir, "coap_message", name, m);
    }
    // coap_endpoint: [peer, advance, len, datagram]...
    let mut script = Vec::new();
    for m in [&get, &post, &post, &non, &ack, &get] {
        if m.len() <= 255 {
            script.extend_from_slice(&[1, 3, m.len() as u8]);
            script.extend_from_slice(m);
        }
    }
    write(dir, "coap_endpoint", "session", &script);

    let mut o: Outbox<8, 256> = Outbox::new(Seq::first_of_epoch(1));
    for _ in 0..3 {
        o.push(RecordKind::Summary, |e| one.encode(e))
            .expect("push");
    }
    let _ = o.start_batch(600, 2);
    let mut obuf = vec![0u8; 8 * 300 + 64];
    let saved = o.save(&mut obuf).expect("save").to_vec();
    write(dir, "outbox_load", "in-flight", &saved);
    let empty: Outbox<8, 256> = Outbox::new(Seq::first_of_epoch(4));
    let saved = empty.save(&mut obuf).expect("save").to_vec();
    write(dir, "outbox_load", "empty", &saved);
    oscore_seeds(dir, &post);
    text_seeds(dir);
    println!("seeds written to {}", dir.display());
}

/// The text inputs: configuration files (the example files, one with an API token), metrics
/// CSV and JSON lines, HTTP requests and the example service model.
fn text_seeds(dir: &Path) {
    let serve = include_str!("../../aggregator/server/qos-aggregator.example.toml");
    write(dir, "serve_config", "example", serve.as_bytes());
    let token = "[http]\nlisten = \"0.0.0.0:8443\"\n[[http.token]]\nname = \"ops\"\nrole = \"admin\"\n\
        sha256 = \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"\n";
    write(dir, "serve_config", "token", token.as_bytes());
    let broker = include_str!("../../aggregator/server/qos-broker.example.toml");
    write(dir, "broker_config", "example", broker.as_bytes());
    write(
        dir,
        "metrics_csv",
        "csv",
        b"time,component,metric,value\n1764000000,db,query_ms,5.5\n1764000015,web,cpu,20\n1764000030,db,query_ms,\n",
    );
    write(
        dir,
        "metrics_csv",
        "json-lines",
        b"{\"time\":1764000000,\"component\":\"db\",\"metric\":\"query_ms\",\"value\":5}\n{\"at\":1,\"value\":2}\n",
    );
    write(
        dir,
        "http_request",
        "get",
        b"GET /api/v1/summaries?since=1764000000&limit=10 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer qos_viewer\r\n\r\n",
    );
    write(
        dir,
        "http_request",
        "put",
        b"PUT /api/v1/edges/7/config HTTP/1.1\r\nHost: a\r\nAuthorization: bearer qos_admin\r\nContent-Length: 13\r\nExpect: 100-continue\r\n\r\nwindow_s = 60",
    );
    write(
        dir,
        "http_request",
        "encoded",
        b"GET /api/v1/services/s%20h%C3%A9p?period=1h&x=a+b%2F HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let model = include_str!("../../aggregator/model/service-model.example.toml");
    write(dir, "service_model", "example", model.as_bytes());
}

/// `oscore_unprotect`: the first byte picks the mode (see the target); the keys are the
/// target's.
fn oscore_seeds(dir: &Path, plain_request: &[u8]) {
    use qos_oscore::Context;
    let pair = || {
        (
            Context::derive(b"fuzzing-secret-k", b"saltsalt", None, &[0x0e], &[0x5e]).unwrap(),
            Context::derive(b"fuzzing-secret-k", b"saltsalt", None, &[0x5e], &[0x0e]).unwrap(),
        )
    };
    let with_mode = |mode: u8, bytes: &[u8]| [&[mode][..], bytes].concat();
    let (mut client, mut server) = pair();
    let mut protected = vec![0u8; 2048];
    let (n, _) = client.protect_request(plain_request, &mut protected).unwrap();
    write(dir, "oscore_unprotect", "request", &with_mode(0, &protected[..n]));
    write(dir, "oscore_unprotect", "plain", &with_mode(2, plain_request));
    // The target's mode 1 answers the first request of a fresh client: a GET of /u.
    let (mut client, _) = pair();
    let get = [0x40, 0x01, 0x12, 0x34, 0xb1, b'u'];
    let (n, _) = client.protect_request(&get, &mut protected).unwrap();
    let mut plain = vec![0u8; 2048];
    let (_, info) = server.unprotect_request(&protected[..n], &mut plain).unwrap();
    let answer = [0x60, 0x45, 0x12, 0x34, 0xff, b'o', b'k'];
    let n = server.protect_response(&answer, &info, &mut protected).unwrap();
    write(dir, "oscore_unprotect", "response", &with_mode(1, &protected[..n]));
}
