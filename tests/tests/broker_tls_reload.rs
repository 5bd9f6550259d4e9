//! A broker's TLS material is read again on SIGHUP (real processes, certificates made at test
//! time with rcgen):
//!
//! - its `[upstream]` client certificate: serve trusts only a new CA after a restart; the
//!   broker, given a certificate of that CA and SIGHUP, reconnects with it and delivers. A bad
//!   file is refused (one logged line naming it) and the previous certificate stays in use:
//!   it still gets through to a serve that trusts the old CA.
//! - its `[downstream_tls]` listener certificate: a child broker that trusts only a new CA
//!   cannot connect until the region broker is given a certificate of that CA and SIGHUP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use qos_e2e::tls::BACKOFF_PATIENCE;
use qos_e2e::tls::{
    listen_tls, send, start_broker_with, upstream_tls, wait_log, wait_received, Leaf, Pki,
};
use qos_e2e::{free_tcp_port, free_udp_port, fresh_dir, FakeEdge, Proc, Serve};

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broker_tls_reload")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn hup(proc: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &proc.pid().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -HUP {}", proc.pid());
}

/// Copies `from`'s certificate and key over `to`'s files (as an operator rotating them).
fn install(from: &Leaf, to: &Leaf) {
    std::fs::copy(&from.cert, &to.cert).expect("copy the certificate");
    std::fs::copy(&from.key, &to.key).expect("copy the key");
}

fn count(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn the_upstream_client_certificate_is_reloaded_on_sighup() {
    let dir = fresh_dir(&base(), "upstream");
    let old = Pki::new(&dir.join("pki-old"), "old");
    let new = Pki::new(&dir.join("pki-new"), "new");
    // serve's own certificate stays one of the old CA, which the broker's ca_file trusts.
    let server = old.issue("localhost");
    let (http, coap, tls) = (
        local(free_tcp_port()),
        local(free_udp_port()),
        local(free_tcp_port()),
    );
    let trusting = |ca: &Path| listen_tls("coap_tls", tls, &server, ca);
    let serve = Serve::start_at_with(&dir, http, coap, &trusting(&old.ca));

    // The broker's certificate files: first a certificate of the old CA.
    let bdir = dir.join("broker");
    std::fs::create_dir_all(&bdir).unwrap();
    let mine = Leaf {
        cert: bdir.join("broker.pem"),
        key: bdir.join("broker.key"),
    };
    install(&old.issue("site-broker"), &mine);
    let listen = local(free_udp_port());
    let broker = start_broker_with(&bdir, 0, listen, &upstream_tls(tls, &old.ca, &mine));
    let blog = bdir.join("broker-0.log");
    wait_log(&blog, "upstream connection up", 1);
    let edge = FakeEdge::start(51, listen);
    send(&edge, 1..=2);
    wait_received(&serve, 51, 2);

    // A bad certificate file: refused, named, the previous certificate kept.
    std::fs::write(&mine.cert, "not a certificate\n").unwrap();
    hup(&broker);
    let text = wait_log(&blog, "TLS reload refused", 1);
    let line = text
        .lines()
        .find(|l| l.contains("TLS reload refused"))
        .unwrap();
    assert!(line.contains(&mine.cert.display().to_string()), "{line}");
    assert!(
        line.contains("the previous certificate stays in use"),
        "{line}"
    );
    // Proof that the old one is still in use: serve (old CA) restarted, the broker reconnects
    // with it and delivers.
    serve.proc.kill9();
    send(&edge, 3..=4);
    wait_log(&blog, "upstream connection lost", 1);
    let serve = Serve::start_at_with(&dir, http, coap, &trusting(&old.ca));
    wait_received(&serve, 51, 4);

    // Rotation: serve now trusts the new CA only; the broker gets a certificate of it.
    install(&new.issue("site-broker"), &mine);
    hup(&broker);
    wait_log(&blog, "SIGHUP: TLS certificates reloaded", 1);
    serve.proc.kill9();
    send(&edge, 5..=6);
    wait_log(&blog, "upstream connection lost", 2);
    let serve = Serve::start_at_with(&dir, http, coap, &trusting(&new.ca));
    wait_received(&serve, 51, 6);
    let row = serve.edge_row(51).unwrap();
    assert_eq!(row["gaps"], 0, "{row}");
    assert!(
        !std::fs::read_to_string(dir.join("serve.log"))
            .unwrap()
            .contains("TLS client refused"),
        "serve trusting only the new CA refused nobody: the broker presented the new certificate"
    );
    drop(edge);
    broker.stop(BACKOFF_PATIENCE);
    serve.proc.stop(BACKOFF_PATIENCE);
}

#[test]
fn the_downstream_tls_listener_certificate_is_reloaded_on_sighup() {
    let dir = fresh_dir(&base(), "downstream");
    let old = Pki::new(&dir.join("pki-old"), "old");
    let new = Pki::new(&dir.join("pki-new"), "new");
    let serve = Serve::start(&dir);

    // The region broker: UDP to serve (loopback), a TLS listener with an old-CA certificate,
    // client certificates of the old CA.
    let rdir = dir.join("region");
    std::fs::create_dir_all(&rdir).unwrap();
    let served = Leaf {
        cert: rdir.join("region.pem"),
        key: rdir.join("region.key"),
    };
    install(&old.issue("localhost"), &served);
    let rtls = local(free_tcp_port());
    let region = start_broker_with(
        &rdir,
        0,
        local(free_udp_port()),
        &format!(
            "{}\n[upstream]\naddress = \"{}\"\n",
            listen_tls("downstream_tls", rtls, &served, &old.ca),
            serve.coap
        ),
    );

    // The site broker trusts the NEW CA only for its upstream: the region's current
    // certificate is refused by it, again and again.
    let sdir = dir.join("site");
    std::fs::create_dir_all(&sdir).unwrap();
    let site_listen = local(free_udp_port());
    let site = start_broker_with(
        &sdir,
        0,
        site_listen,
        &upstream_tls(rtls, &new.ca, &old.issue("site-broker")),
    );
    let slog = sdir.join("broker-0.log");
    wait_log(&slog, "cannot connect upstream", 2);
    assert_eq!(count(&slog, "upstream connection up"), 0);

    // The region broker is given a certificate of the new CA and SIGHUP: the site broker's
    // next attempt succeeds, and an edge's batches go site → region → serve.
    install(&new.issue("localhost"), &served);
    hup(&region);
    wait_log(
        &rdir.join("broker-0.log"),
        "SIGHUP: TLS certificates reloaded",
        1,
    );
    wait_log(&slog, "upstream connection up", 1);
    let edge = FakeEdge::start(61, site_listen);
    send(&edge, 1..=3);
    wait_received(&serve, 61, 3);
    drop(edge);
    site.stop(BACKOFF_PATIENCE);
    region.stop(BACKOFF_PATIENCE);
    serve.proc.stop(BACKOFF_PATIENCE);
}
