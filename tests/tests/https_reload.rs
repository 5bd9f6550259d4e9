//! serve's API over HTTPS (`[http] tls_cert`/`tls_key`) with a real rustls client on loopback,
//! and certificate rotation on SIGHUP with real processes: a connection made before the
//! rotation keeps working, a bad new file is refused with one line naming it (the old
//! certificate still served), and after a good rotation a client trusting only the new CA
//! connects while one trusting only the old CA is refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use qos_e2e::tls::{wait_log, Pki};
use qos_e2e::{binary, free_tcp_port, fresh_dir, Proc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr` trusting only `ca`, checking the name `localhost`.
fn connect(addr: SocketAddr, ca: &Path) -> std::io::Result<Tls> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr)?;
    // A bound against a hung server, not a timing assertion.
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// `GET path` on a kept-alive connection: the status and body.
fn get(tls: &mut Tls, path: &str) -> std::io::Result<(u16, String)> {
    write!(tls, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    tls.flush()?;
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn hup(proc: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &proc.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn https_api_and_certificate_rotation_on_sighup() {
    let dir = fresh_dir(&std::env::temp_dir(), "https-reload");
    let old = Pki::new(&dir.join("old"), "old");
    let new = Pki::new(&dir.join("new"), "new");
    let (old_leaf, new_leaf) = (old.issue("localhost"), new.issue("localhost"));
    let (cert, key) = (dir.join("http.pem"), dir.join("http.key"));
    std::fs::copy(&old_leaf.cert, &cert).unwrap();
    std::fs::copy(&old_leaf.key, &key).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"{addr}\"\nworkers = 4\ntls_cert = {:?}\ntls_key = {:?}\n[coap]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = {:?}\n",
            cert.display().to_string(),
            key.display().to_string(),
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    let log = dir.join("serve.log");
    let serve = Proc::spawn(
        "qos-aggregator serve",
        &binary("qos-aggregator"),
        &["serve", "--config", config.to_str().unwrap()],
        &log,
    );
    wait_log(&log, &format!("HTTP API on https://{addr}"), 1);

    // HTTPS with the old CA; plain HTTP gets no answer.
    let mut kept = connect(addr, &old.ca).unwrap();
    let (status, body) = get(&mut kept, "/api/v1/health").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert!(!matches!(
        qos_e2e::http_get(addr, "/api/v1/health"),
        Ok((200, _))
    ));
    assert!(
        connect(addr, &new.ca).is_err(),
        "the new CA is not trusted yet"
    );

    // The new certificate: new connections get it, the kept one continues.
    std::fs::copy(&new_leaf.cert, &cert).unwrap();
    std::fs::copy(&new_leaf.key, &key).unwrap();
    hup(&serve);
    wait_log(&log, "TLS certificates reloaded", 1);
    assert_eq!(
        get(&mut kept, "/api/v1/stats").unwrap().0,
        200,
        "the connection made before the rotation continues"
    );
    drop(kept);
    let mut rotated = connect(addr, &new.ca).expect("a client trusting only the new CA connects");
    assert_eq!(get(&mut rotated, "/api/v1/health").unwrap().0, 200);
    drop(rotated);
    assert!(
        connect(addr, &old.ca).is_err(),
        "the old CA no longer matches"
    );

    // A bad file is refused with one line naming it; the current certificate stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hup(&serve);
    let text = wait_log(&log, "TLS reload refused", 1);
    let line = text
        .lines()
        .find(|l| l.contains("TLS reload refused"))
        .unwrap();
    assert!(line.contains("http.pem"), "{line}");
    let mut after = connect(addr, &new.ca).expect("the previous certificate is still served");
    assert_eq!(get(&mut after, "/api/v1/health").unwrap().0, 200);
    drop(after);

    serve.kill9();
    let _ = std::fs::remove_dir_all(&dir);
}
