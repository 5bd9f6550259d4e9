//! Brokers reaching the super-manager over CoAP over TLS (RFC 8323) with client certificates,
//! between real processes on loopback: delivery, refusal of a foreign certificate, a SIGKILLed
//! `serve` and the reconnection, a chain site broker → region broker → serve, and an
//! on-demand probe from `serve` down the TLS link to the (in-test) edge.
//!
//! Certificates are made at test time with rcgen into the test's directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qos_coap::Code;
use qos_e2e::tls::{
    listen_tls, send, start_broker_with, upstream_tls, wait_log, wait_received, Pki,
};
use qos_e2e::{free_tcp_port, free_udp_port, fresh_dir, http_request, FakeEdge, Serve};

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls_upstream")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `serve` with `[coap_tls]` on a free port, trusting client certificates of `pki`.
fn serve_tls(dir: &std::path::Path, pki: &Pki) -> (Serve, SocketAddr, String) {
    let tls = local(free_tcp_port());
    let me = pki.issue("localhost");
    let extra = listen_tls("coap_tls", tls, &me, &pki.ca);
    let http = local(free_tcp_port());
    let coap = local(free_udp_port());
    let serve = Serve::start_at_with(dir, http, coap, &extra);
    (serve, tls, extra)
}

#[test]
fn summaries_over_mutual_tls_and_a_foreign_certificate_is_refused() {
    let dir = fresh_dir(&base(), "mutual");
    let pki = Pki::new(&dir.join("pki"), "qos");
    let (serve, tls, _) = serve_tls(&dir, &pki);

    // A broker with a certificate of our CA.
    let bdir = dir.join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let listen = local(free_udp_port());
    let site = pki.issue("site-broker");
    let _broker = start_broker_with(&bdir, 0, listen, &upstream_tls(tls, &pki.ca, &site));
    wait_log(&bdir.join("broker-0.log"), "upstream connection up", 1);
    let edge = FakeEdge::start(31, listen);
    assert_eq!(edge.register("fake-31", "eu").unwrap().code, Code::CREATED);
    send(&edge, 1..=5);
    wait_received(&serve, 31, 5);
    let row = serve.edge_row(31).unwrap();
    assert_eq!(row["gaps"], 0, "{row}");
    assert_eq!(row["duplicates"], 0, "{row}");

    // On demand: serve → TLS → broker → edge, and the answer back up.
    let (status, text) = http_request(
        serve.http,
        "POST",
        "/api/v1/edges/31/probe",
        "{\"id\": 42, \"kind\": \"tcp\", \"target\": \"127.0.0.1:9\", \"timeout_ms\": 1000}",
        Duration::from_secs(90),
    )
    .expect("the probe request");
    assert_eq!(status, 200, "{text}");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["result"]["probe"], 42, "{r}");
    assert_eq!(
        r["result"]["phases_us"]["connect"],
        qos_e2e::fake_edge::CONNECT_US
    );
    assert!(edge.seen().iter().any(|(p, _)| p == "p"));

    // A broker whose certificate comes from another CA: refused in the handshake, logged and
    // counted by serve; its edge's batches never arrive.
    let other = Pki::new(&dir.join("pki-other"), "other");
    let rogue = other.issue("rogue-broker");
    let rdir = dir.join("rogue");
    std::fs::create_dir_all(&rdir).unwrap();
    let rlisten = local(free_udp_port());
    let _rogue = start_broker_with(&rdir, 0, rlisten, &upstream_tls(tls, &pki.ca, &rogue));
    let edge2 = FakeEdge::start(32, rlisten);
    send(&edge2, 1..=2);
    // Two refusals: the rogue broker tried again after its back-off, and got nowhere.
    let log = wait_log(&dir.join("serve.log"), "TLS client refused", 2);
    assert!(log.contains("refused_total=2"), "counted");
    assert!(serve.received(32).is_err(), "nothing of the rogue's edge");
    assert_eq!(serve.received(31).unwrap(), 5);
}

#[test]
fn a_killed_serve_comes_back_and_everything_acknowledged_arrives_once() {
    let dir = fresh_dir(&base(), "kill9");
    let pki = Pki::new(&dir.join("pki"), "qos");
    let (serve, tls, extra) = serve_tls(&dir, &pki);
    let (http, coap) = (serve.http, serve.coap);
    let bdir = dir.join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let listen = local(free_udp_port());
    let site = pki.issue("site-broker");
    let _broker = start_broker_with(&bdir, 0, listen, &upstream_tls(tls, &pki.ca, &site));
    let edge = FakeEdge::start(41, listen);
    send(&edge, 1..=3);
    wait_received(&serve, 41, 3);

    serve.proc.kill9();
    // Acknowledged by the broker (queued durably) while serve is gone.
    send(&edge, 4..=8);
    wait_log(&bdir.join("broker-0.log"), "upstream connection lost", 1);

    let serve = Serve::start_at_with(&dir, http, coap, &extra);
    wait_received(&serve, 41, 8);
    wait_log(&bdir.join("broker-0.log"), "upstream connection up", 2);
    let row = serve.edge_row(41).unwrap();
    assert_eq!(row["gaps"], 0, "{row}");
    assert_eq!(row["last_seq"], 8, "{row}");
    // Exactly once in the store (`received` counts stored records), whatever was sent twice.
    assert_eq!(serve.received(41).unwrap(), 8);
}

#[test]
fn a_site_broker_reaches_serve_through_a_region_broker_over_tls() {
    let dir = fresh_dir(&base(), "chain");
    let pki = Pki::new(&dir.join("pki"), "qos");
    let (serve, tls, _) = serve_tls(&dir, &pki);

    // Region broker: accepts site brokers over TLS, forwards to serve over TLS.
    let rdir = dir.join("region");
    std::fs::create_dir_all(&rdir).unwrap();
    let region_udp = local(free_udp_port());
    let region_tls = local(free_tcp_port());
    let region_cert = pki.issue("localhost");
    let region_client = pki.issue("region-broker");
    let region_extra = format!(
        "{}\n{}",
        upstream_tls(tls, &pki.ca, &region_client),
        listen_tls("downstream_tls", region_tls, &region_cert, &pki.ca)
    );
    let _region = start_broker_with(&rdir, 0, region_udp, &region_extra);

    // Site broker: edges over UDP, upstream the region broker over TLS.
    let sdir = dir.join("site");
    std::fs::create_dir_all(&sdir).unwrap();
    let site_udp = local(free_udp_port());
    let site = pki.issue("site-broker");
    let _site = start_broker_with(
        &sdir,
        0,
        site_udp,
        &upstream_tls(region_tls, &pki.ca, &site),
    );
    wait_log(&rdir.join("broker-0.log"), "child broker connected", 1);

    let edge = FakeEdge::start(51, site_udp);
    assert_eq!(edge.register("fake-51", "eu").unwrap().code, Code::CREATED);
    send(&edge, 1..=4);
    wait_received(&serve, 51, 4);
    let row = serve.edge_row(51).unwrap();
    assert_eq!(row["gaps"], 0, "{row}");
}

/// An implementation not written here, aiocoap, speaks CoAP over TCP (RFC 8323) with `serve`:
/// CSM exchange, a request matched by token, Release.
#[test]
fn aiocoap_speaks_coap_over_tcp_with_serve() {
    use std::process::Command;
    let found = Command::new("aiocoap-client").arg("--help").output();
    if found.is_err() {
        if std::env::var_os("QOS_SKIP_EXTERNAL").is_some_and(|v| v == "1") {
            eprintln!("aiocoap-client missing; skipped because QOS_SKIP_EXTERNAL=1");
            return;
        }
        panic!(
            "aiocoap-client (Python package aiocoap) is not installed: pip install aiocoap, \
             or set QOS_SKIP_EXTERNAL=1 to skip this check"
        );
    }
    let dir = fresh_dir(&base(), "aiocoap");
    let tcp = local(free_tcp_port());
    let serve = Serve::start_at_with(
        &dir,
        local(free_tcp_port()),
        local(free_udp_port()),
        &format!("[coap_tcp]\nlisten = \"{tcp}\"\n"),
    );
    let run = |uri: String| {
        let out = Command::new("aiocoap-client")
            .arg(&uri)
            .output()
            .expect("run aiocoap-client");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(format!("coap+tcp://{tcp}/.well-known/core"));
    assert!(ok && text.contains("</u>;rt=\"qos.uplink\""), "{text}");
    let (_, text) = run(format!("coap+tcp://{tcp}/c?id=5"));
    assert!(text.contains("4.04"), "{text}");
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    assert!(
        log.contains("plain CoAP over TCP: no authentication"),
        "warned"
    );
    drop(serve);
}
