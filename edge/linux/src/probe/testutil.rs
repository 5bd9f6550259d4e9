//! Real local servers for the probe tests and the curl benchmark, all on 127.0.0.1 and in
//! threads of the test process: HTTP (plain and TLS with a CA made here), a DNS responder, a
//! Redis-like and a PostgreSQL-like peer, a UDP echo server, a CoAP endpoint, and a listener
//! that never accepts. Self-contained (std, rustls, rcgen, socket2, qos-coap, qos-edge-core)
//! so that `benches/curl_compare.rs` includes it with `#[path]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
pub struct TestPki {
    /// The CA certificate (PEM) in a temporary file.
    pub ca_file: PathBuf,
    /// The server's TLS configuration.
    pub server: Arc<rustls::ServerConfig>,
}

/// Make a CA and a server certificate; the CA's PEM goes to a fresh file named after `tag`.
pub fn pki(tag: &str) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("qos test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let dir = std::env::temp_dir().join(format!("qos-edge-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let chain = vec![cert.der().clone(), ca.der().clone()];
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .unwrap();
    TestPki {
        ca_file,
        server: Arc::new(server),
    }
}

/// Start the test HTTP server (TLS when `tls` is given); returns its address.
///
/// Routes: `/ok` (200, "hello world"), `/missing` (404), `/redirect/N` (302 to
/// `/redirect/N-1`, `/redirect/0` is 200 "arrived"), `/loop` (302 to itself), `/slow` (200
/// after 150 ms), `/chunked` (200, chunked "hello chunked world" in three flushed chunks),
/// `/echo` (200 with the request body), `/reset` (RST instead of an answer), `/close`
/// (closes without an answer), `/big` (200 with 256 KiB).
pub fn http_server(tls: Option<Arc<rustls::ServerConfig>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let tls = tls.clone();
            thread::spawn(move || {
                let _ = s.set_nodelay(true);
                match tls {
                    None => serve_http(s.try_clone().unwrap(), s),
                    Some(cfg) => {
                        let conn = rustls::ServerConnection::new(cfg).unwrap();
                        let raw = s.try_clone().unwrap();
                        let mut stream = rustls::StreamOwned::new(conn, s);
                        // Finish the handshake; a client that rejects the certificate
                        // aborts here.
                        while stream.conn.is_handshaking() {
                            if stream.conn.complete_io(&mut stream.sock).is_err() {
                                return;
                            }
                        }
                        serve_http(raw, stream)
                    }
                }
            });
        }
    });
    addr
}

fn serve_http(raw: TcpStream, stream: impl Read + Write) {
    let mut r = BufReader::new(stream);
    let mut request_line = String::new();
    if r.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; content_length];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let head_only = request_line.starts_with("HEAD ");
    let w = r.get_mut();
    let reply = |w: &mut dyn Write, status: &str, extra: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        );
        let _ = w.write_all(head.as_bytes());
        if !head_only {
            let _ = w.write_all(body);
        }
        let _ = w.flush();
    };
    match path.as_str() {
        "/ok" | "/" => reply(w, "200 OK", "", b"hello world"),
        "/missing" => reply(w, "404 Not Found", "", b"no such thing"),
        "/loop" => reply(w, "302 Found", "Location: /loop\r\n", b""),
        "/slow" => {
            thread::sleep(Duration::from_millis(150));
            reply(w, "200 OK", "", b"slow but fine")
        }
        "/chunked" => {
            let _ = w.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            );
            for part in ["hello", " chunked", " world"] {
                let _ = write!(w, "{:x}\r\n{part}\r\n", part.len());
                let _ = w.flush();
                thread::sleep(Duration::from_millis(5));
            }
            let _ = w.write_all(b"0\r\n\r\n");
            let _ = w.flush();
        }
        "/echo" => reply(w, "200 OK", "", &body),
        "/big" => reply(w, "200 OK", "", &vec![b'x'; 256 * 1024]),
        "/reset" => {
            let _ = socket2::SockRef::from(&raw).set_linger(Some(Duration::ZERO));
            drop(raw);
            return;
        }
        "/close" => return,
        p if p.starts_with("/redirect/") => {
            let n: u32 = p["/redirect/".len()..].parse().unwrap_or(0);
            if n == 0 {
                reply(w, "200 OK", "", b"arrived")
            } else {
                reply(
                    w,
                    "302 Found",
                    &format!("Location: /redirect/{}\r\n", n - 1),
                    b"",
                )
            }
        }
        _ => reply(w, "404 Not Found", "", b""),
    }
    drop(raw);
}

/// A DNS responder on UDP. Names: `ok.test` (A 10.0.0.1, AAAA 2001:db8::1), `nx.test`
/// (NXDOMAIN), `fail.test` (SERVFAIL), `trunc.test` (an answer cut inside its record),
/// `garbage.test` (random bytes after the right id), `silent.test` (no answer).
pub fn dns_server() -> SocketAddr {
    use qos_edge_core::probe::dns::build_response;
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut out = [0u8; 512];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            let name = query_name(q);
            let reply: Vec<u8> = match name.as_str() {
                "ok.test" => {
                    let addrs = ["10.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
                    let m = build_response(&mut out, q, 0, &addrs).unwrap();
                    out[..m].to_vec()
                }
                "nx.test" | "fail.test" => {
                    let rcode = if name == "nx.test" { 3 } else { 2 };
                    let m = build_response(&mut out, q, rcode, &[]).unwrap();
                    out[..m].to_vec()
                }
                "trunc.test" => {
                    let m = build_response(&mut out, q, 0, &["10.0.0.9".parse().unwrap()]).unwrap();
                    out[..m - 3].to_vec()
                }
                "garbage.test" => {
                    let mut g = vec![q[0], q[1]];
                    g.extend((0..40u8).map(|i| i.wrapping_mul(97).wrapping_add(13)));
                    g
                }
                _ => continue,
            };
            let _ = s.send_to(&reply, from);
        }
    });
    addr
}

fn query_name(q: &[u8]) -> String {
    let mut labels = Vec::new();
    let mut p = 12;
    while let Some(&len) = q.get(p) {
        if len == 0 || len > 63 {
            break;
        }
        let Some(l) = q.get(p + 1..p + 1 + usize::from(len)) else {
            break;
        };
        labels.push(String::from_utf8_lossy(l).to_ascii_lowercase());
        p += 1 + usize::from(len);
    }
    labels.join(".")
}

/// A Redis-like peer: `PING\r\n` → `+PONG\r\n`, anything else → `-ERR unknown command`.
pub fn redis_like() -> SocketAddr {
    line_server(|line| {
        if line == "PING" {
            b"+PONG\r\n".to_vec()
        } else {
            b"-ERR unknown command\r\n".to_vec()
        }
    })
}

fn line_server(answer: fn(&str) -> Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in BufReader::new(s).lines() {
                    let Ok(line) = line else { return };
                    if w.write_all(&answer(line.trim_end())).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The PostgreSQL SSLRequest message.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A PostgreSQL-like peer: answers `N` (no TLS) to an SSLRequest, closes otherwise.
pub fn postgres_like() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut m = [0u8; 8];
                if s.read_exact(&mut m).is_ok() && m == SSL_REQUEST {
                    let _ = s.write_all(b"N");
                    thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    addr
}

/// A UDP echo server.
pub fn udp_echo_server() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A qos-coap endpoint on UDP (answers CoAP pings with RST).
pub fn coap_server() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut ep: qos_coap::Endpoint<SocketAddr, 8, 16, 1024> =
            qos_coap::Endpoint::new(qos_coap::Config::default(), 9).unwrap();
        let start = std::time::Instant::now();
        let mut buf = [0u8; 1500];
        let mut tx = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let now = start.elapsed().as_millis() as u64;
            let _ = ep.handle_datagram(now, from, &buf[..n]);
            while let Some((to, m)) = ep.poll_transmit(now, &mut tx) {
                let _ = s.send_to(&tx[..m], to);
            }
            while ep.poll_event().is_some() {}
        }
    });
    addr
}

/// A TCP listener that never accepts, with its backlog filled, so that further connects get
/// no answer (they time out). Keep the returned guard alive while it is used.
pub fn unaccepting_listener() -> (String, Vec<TcpStream>, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => fillers.push(c),
            Err(_) => break,
        }
    }
    (addr.to_string(), fillers, s)
}

/// A UDP socket that never answers (bound, so no port unreachable comes back).
pub fn silent_udp() -> (String, UdpSocket) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    (s.local_addr().unwrap().to_string(), s)
}
