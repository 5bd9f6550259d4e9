//! Central edge configurations over HTTP (`PUT`/`GET`/`DELETE /api/v1/edges/{id}/config`) and
//! the CoAP `GET /c` / `POST /c` of `serve`, against a real server on 127.0.0.1 (port 0).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use qos_aggregator::config::{Config, EdgeConfigEntry, Synchronous};
use qos_aggregator::serve::{run_serve, ServeError, ServeHandle};
use qos_coap::{content_format, option, Code, Message, MessageType, MessageWriter};
use qos_wire::config::EdgeConfig;

mod common;
use common::{read_reply, Reply, TempDir};

const GOOD: &str = r#"
window_s = 30
[[probe]]
id = 1
kind = "http"
url = "http://shop.test/health"
interval_ms = 5000
[[rule]]
probe = 1
metric = "availability"
k = 2
n = 3
"#;

fn config(dir: &TempDir) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.coap.listen = "127.0.0.1:0".parse().unwrap();
    c.store.data_dir = dir.0.join("data");
    c.store.synchronous = Synchronous::Normal;
    c
}

/// A running `serve` and its directory (removed when dropped).
struct Running(Option<ServeHandle>, #[allow(dead_code)] TempDir);

impl Running {
    fn start(name: &str) -> Running {
        let dir = TempDir::new("config", name);
        let h = run_serve(&config(&dir), Arc::new(AtomicBool::new(false))).unwrap();
        Running(Some(h), dir)
    }
    fn http(&self) -> SocketAddr {
        self.0.as_ref().unwrap().http_addr()
    }
    fn coap(&self) -> SocketAddr {
        self.0.as_ref().unwrap().coap_addr()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.stop().unwrap();
        }
    }
}

fn http(addr: SocketAddr, method: &str, target: &str, body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_reply(&mut BufReader::new(stream), method == "HEAD")
}

/// One CoAP CON request to `to` and its piggybacked answer: (code, etag, cf, payload).
fn coap(
    to: SocketAddr,
    code: Code,
    etag: Option<u32>,
    query: &str,
    cf: Option<u16>,
    payload: &[u8],
) -> (Code, Option<Vec<u8>>, Option<u16>, Vec<u8>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1152];
    let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, code, 0x1234, &[7]).unwrap();
    if let Some(e) = etag {
        w.option(option::ETAG, &e.to_be_bytes()).unwrap();
    }
    w.uri_path("c").unwrap();
    if let Some(cf) = cf {
        w.uint_option(option::CONTENT_FORMAT, u32::from(cf))
            .unwrap();
    }
    w.option(option::URI_QUERY, query.as_bytes()).unwrap();
    w.payload(payload).unwrap();
    let n = w.finish();
    socket.send_to(&buf[..n], to).unwrap();
    let mut rx = [0u8; 1152];
    let (n, _) = socket.recv_from(&mut rx).expect("an answer");
    let m = Message::parse(&rx[..n]).unwrap();
    (
        m.code(),
        m.option(option::ETAG).map(<[u8]>::to_vec),
        m.content_format(),
        m.payload().to_vec(),
    )
}

#[test]
fn put_get_delete_and_the_coap_resource() {
    let s = Running::start("crud");
    let r = http(s.http(), "GET", "/api/v1/edges/7/config", "");
    assert_eq!(r.status, 404);
    assert_eq!(
        coap(s.coap(), Code::GET, None, "id=7", None, b"").0,
        Code::NOT_FOUND
    );

    let r = http(s.http(), "PUT", "/api/v1/edges/7/config", GOOD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let put = r.json();
    let etag = put["etag"].as_u64().unwrap() as u32;
    assert_eq!(put["window_s"], 30);
    assert_eq!(put["probes"][0]["kind"], "http");
    assert_eq!(put["probes"][0]["target"], "http://shop.test/health");
    assert_eq!(put["source"], "api");
    assert!(put["last_report"].is_null());

    // The edge's GET /c: the configuration with its ETag; again with that ETag: 2.03.
    let (code, e, cf, body) = coap(s.coap(), Code::GET, None, "id=7", None, b"");
    assert_eq!(code, Code::CONTENT);
    assert_eq!(e.as_deref(), Some(&etag.to_be_bytes()[..]));
    assert_eq!(cf, Some(content_format::CBOR));
    let cfg = EdgeConfig::decode(&body).unwrap();
    assert_eq!((cfg.etag, cfg.window_s, cfg.probes.len()), (etag, 30, 1));
    let (code, e, _, body) = coap(s.coap(), Code::GET, Some(etag), "id=7", None, b"");
    assert_eq!((code, body.len()), (Code::VALID, 0));
    assert_eq!(e.as_deref(), Some(&etag.to_be_bytes()[..]));

    // The report: [1, etag, true, ""], then a rejection.
    let mut report = vec![0x84, 0x01, 0x1a];
    report.extend_from_slice(&etag.to_be_bytes());
    report.extend_from_slice(&[0xf5, 0x60]);
    let (code, ..) = coap(s.coap(), Code::POST, None, "id=7", Some(60), &report);
    assert_eq!(code, Code::CHANGED);
    let got = http(s.http(), "GET", "/api/v1/edges/7/config", "").json();
    assert_eq!(got["last_report"]["accepted"], true);
    assert_eq!(got["last_report"]["applied_etag"], etag);
    assert_eq!(got["applied"], true);
    let (code, ..) = coap(s.coap(), Code::POST, None, "id=7", Some(60), b"\x01");
    assert_eq!(code, Code::BAD_REQUEST);
    let (code, ..) = coap(s.coap(), Code::POST, None, "id=7", None, &report);
    assert_eq!(code, Code::UNSUPPORTED_CONTENT_FORMAT);

    // Same content again: same ETag.
    let again = http(s.http(), "PUT", "/api/v1/edges/7/config", GOOD).json();
    assert_eq!(again["etag"], etag);

    let r = http(s.http(), "DELETE", "/api/v1/edges/7/config", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        http(s.http(), "DELETE", "/api/v1/edges/7/config", "").status,
        404
    );
    assert_eq!(
        coap(s.coap(), Code::GET, None, "id=7", None, b"").0,
        Code::NOT_FOUND
    );
}

#[test]
fn bad_configurations_are_400_with_the_reason_and_nothing_is_stored() {
    let s = Running::start("bad");
    for (body, needle) in [
        ("window_s = 0\n", "window_s"),
        ("colour = 1\n", "colour"),
        ("[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"nohost\"\n", "nohost"),
        (
            "[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"h:1\"\n[[rule]]\nprobe = 2\nmetric = \"total\"\nraise_ms = 1\nk = 1\nn = 1\n",
            "probe 2",
        ),
        ("[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = [\n", "TOML"),
    ] {
        let r = http(s.http(), "PUT", "/api/v1/edges/9/config", body);
        assert_eq!(r.status, 400, "{body}");
        let j = r.json();
        assert_eq!(j["error"], "invalid configuration");
        let reason = j["reason"].as_str().unwrap();
        assert!(
            reason.contains(needle) || needle == "TOML",
            "{body}: {reason}"
        );
        assert!(!reason.contains('\n'));
        assert_eq!(http(s.http(), "GET", "/api/v1/edges/9/config", "").status, 404);
    }
    let r = http(s.http(), "PUT", "/api/v1/edges/x/config", GOOD);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["value"], "x");
    let r = http(s.http(), "POST", "/api/v1/edges/9/config", GOOD);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD, PUT, DELETE"));
    // Unknown edges for on-demand requests: 404.
    let r = http(s.http(), "GET", "/api/v1/edges/9/results", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown edge");
    let r = http(
        s.http(),
        "POST",
        "/api/v1/edges/9/probe",
        "{\"id\": 1, \"kind\": \"tcp\", \"target\": \"h:1\"}",
    );
    assert_eq!(r.status, 404);
    let r = http(
        s.http(),
        "POST",
        "/api/v1/edges/9/probe",
        "{\"id\": 1, \"kind\": \"tcp\", \"target\": \"h\"}",
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["reason"].as_str().unwrap().contains("host:port"));
}

#[test]
fn edge_configs_of_the_config_file_are_stored_at_start_and_bad_ones_stop_it() {
    let dir = TempDir::new("config", "file");
    let file = dir.0.join("edge-5.toml");
    std::fs::write(&file, GOOD).unwrap();
    let mut c = config(&dir);
    c.edge_configs = vec![EdgeConfigEntry {
        edge: 5,
        file: file.clone(),
    }];
    let h = run_serve(&c, Arc::new(AtomicBool::new(false))).unwrap();
    let got = http(h.http_addr(), "GET", "/api/v1/edges/5/config", "").json();
    assert_eq!(got["source"], "config-file");
    h.stop().unwrap();

    std::fs::write(&file, "window_s = 0\n").unwrap();
    let err = run_serve(&c, Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(matches!(err, ServeError::EdgeConfig { edge: 5, .. }));
    let text = err.to_string();
    assert!(
        text.contains("edge-5.toml") && text.contains("window_s"),
        "{text}"
    );
}
