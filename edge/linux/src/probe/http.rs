//! HTTP/1.1 and HTTPS probe: one request per hop over a new connection, redirects followed
//! and counted, phases accumulated over the hops (see the module documentation of
//! [`super`]). Protocol logic (URL, request head, response parsing, body matching) is in
//! `qos_edge_core::probe::http`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use qos_edge_core::probe::classify::{http_response, Transport};
use qos_edge_core::probe::http::{
    is_redirect, redirect_method, resolve_location, status_ok, write_request, ResponseParser, Url,
    USER_AGENT,
};
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;
use qos_wire::probe::HttpMethod;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use super::{tcp, tls, us, Ctx, Fail, Options};

/// What to ask (the fields of `ProbeKind::Http`).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method.
    pub method: HttpMethod,
    /// `http://...` or `https://...`.
    pub url: &'a str,
    /// Body (sent with POST, and with any method if not empty).
    pub body: &'a [u8],
    /// Expected status, 0 for any 2xx.
    pub expect_status: u16,
    /// Text the final body must contain.
    pub expect_body: Option<&'a str>,
    /// Redirects followed at most.
    pub max_redirects: u8,
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// An I/O error during or after a TLS handshake: rustls errors are TLS failures.
fn tls_or_io(doing: &str, e: &std::io::Error) -> Fail {
    if let Some(te) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return Fail::of(&Transport::Tls, format!("{doing}: {te}"));
    }
    Fail::io(doing, e)
}

fn set_timeouts(ctx: &Ctx, conn: &TcpStream, doing: &str) -> Result<(), Fail> {
    let left = ctx.remaining(doing)?;
    conn.set_read_timeout(Some(left))
        .and_then(|()| conn.set_write_timeout(Some(left)))
        .map_err(|e| Fail::io(doing, &e))
}

fn handshake(ctx: &mut Ctx, url: &Url<'_>, tcp: TcpStream, opts: &Options) -> Result<Conn, Fail> {
    let config =
        tls::client_config(opts.ca_file.as_deref()).map_err(|m| Fail::new(ErrorClass::Other, m))?;
    let name = ServerName::try_from(url.host.to_string()).map_err(|e| {
        Fail::new(
            ErrorClass::Other,
            format!("server name {:?}: {e}", url.host),
        )
    })?;
    let mut conn = ClientConnection::new(Arc::clone(&config), name)
        .map_err(|e| Fail::of(&Transport::Tls, e.to_string()))?;
    let mut tcp = tcp;
    let t = Instant::now();
    while conn.is_handshaking() {
        set_timeouts(ctx, &tcp, "tls handshake")?;
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.is_handshaking() => {
                return Err(Fail::of(&Transport::Tls, "tls handshake: peer closed"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Fail::of(&Transport::Tls, format!("tls handshake: {e}")))
            }
            Err(e) => return Err(tls_or_io("tls handshake", &e)),
        }
    }
    ctx.add(Phase::Tls, us(t, Instant::now()));
    if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        ctx.cert_days_left = tls::days_left(cert, now);
    }
    Ok(Conn::Tls(Box::new(StreamOwned::new(conn, tcp))))
}

/// Status and `Location` of one hop.
struct Hop {
    status: u16,
    location: Option<String>,
    body_matched: Option<bool>,
}

fn hop(
    ctx: &mut Ctx,
    url: &Url<'_>,
    method: HttpMethod,
    body: &[u8],
    expect_body: Option<&str>,
    opts: &Options,
) -> Result<Hop, Fail> {
    let addr = ctx.resolve(url.host, url.port)?;
    let tcp = tcp::connect(ctx, addr)?;
    let _ = tcp.set_nodelay(true);
    let mut conn = if url.tls {
        handshake(ctx, url, tcp, opts)?
    } else {
        Conn::Plain(tcp)
    };

    let mut head = [0u8; 2048];
    let n = write_request(&mut head, method, url, body.len(), USER_AGENT)
        .map_err(|e| Fail::new(ErrorClass::Other, format!("request head: {e:?}")))?;
    set_timeouts(ctx, conn.tcp(), "send request")?;
    conn.write_all(&head[..n])
        .and_then(|()| conn.flush())
        .map_err(|e| tls_or_io("send request", &e))?;
    if !body.is_empty() {
        let t = Instant::now();
        // Written in pieces so that the write timeout applies to a stalled peer.
        for piece in body.chunks(16 * 1024) {
            set_timeouts(ctx, conn.tcp(), "send body")?;
            conn.write_all(piece)
                .map_err(|e| tls_or_io("send body", &e))?;
        }
        conn.flush().map_err(|e| tls_or_io("send body", &e))?;
        ctx.add(Phase::Upload, us(t, Instant::now()));
    }
    let sent = Instant::now();

    let mut parser =
        ResponseParser::new(method == HttpMethod::Head, expect_body.map(str::as_bytes))
            .map_err(|e| Fail::new(ErrorClass::Other, format!("expect_body: {e:?}")))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut first: Option<Instant> = None;
    loop {
        set_timeouts(ctx, conn.tcp(), "read response")?;
        let got = match conn.read(&mut buf) {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: treat as the end of the stream.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => {
                if first.is_none() {
                    ctx.add(Phase::FirstByte, us(sent, Instant::now()));
                }
                return Err(tls_or_io("read response", &e));
            }
        };
        let now = Instant::now();
        if got == 0 {
            if first.is_none() {
                return Err(Fail::of(
                    &Transport::Closed,
                    "connection closed before any answer",
                ));
            }
            parser
                .eof()
                .map_err(|e| Fail::of(&e, format!("response: {e:?}")))?;
            ctx.add(Phase::Download, us(first.unwrap_or(now), now));
            break;
        }
        if first.is_none() {
            first = Some(now);
            ctx.add(Phase::FirstByte, us(sent, now));
        }
        parser
            .feed(&buf[..got])
            .map_err(|e| Fail::of(&e, format!("response: {e:?}")))?;
        if parser.is_complete() {
            ctx.add(Phase::Download, us(first.unwrap_or(now), now));
            break;
        }
    }
    Ok(Hop {
        status: parser.status(),
        location: parser.location().map(str::to_owned),
        body_matched: parser.body_matched(),
    })
}

/// The HTTP probe. `detail` is the final status, `redirects` the redirects followed.
pub fn run(ctx: &mut Ctx, req: &Request<'_>, opts: &Options) -> Result<(), Fail> {
    let mut current = req.url.to_owned();
    let mut method = req.method;
    let mut body = req.body;
    loop {
        let url = Url::parse(&current)
            .map_err(|_| Fail::new(ErrorClass::Other, format!("bad url {current:?}")))?;
        let h = hop(ctx, &url, method, body, req.expect_body, opts)?;
        ctx.detail = u32::from(h.status);
        if is_redirect(h.status) && !status_ok(h.status, req.expect_status) {
            if let Some(loc) = &h.location {
                if ctx.redirects >= req.max_redirects {
                    return Err(Fail::new(
                        ErrorClass::HttpStatus,
                        format!(
                            "{} to {loc} after {} redirects (max {})",
                            h.status, ctx.redirects, req.max_redirects
                        ),
                    ));
                }
                let mut out = [0u8; 2048];
                let n = resolve_location(&url, loc, &mut out)
                    .map_err(|e| Fail::of(&e, format!("location {loc:?}: {e:?}")))?;
                let next = String::from_utf8_lossy(&out[..n]).into_owned();
                ctx.redirects += 1;
                let m = redirect_method(method, h.status);
                if m != method {
                    body = &[];
                }
                method = m;
                current = next;
                continue;
            }
        }
        return match http_response(h.status, req.expect_status, h.body_matched) {
            None => Ok(()),
            Some(ErrorClass::HttpStatus) => Err(Fail::new(
                ErrorClass::HttpStatus,
                format!(
                    "status {} (expected {})",
                    h.status,
                    if req.expect_status == 0 {
                        "2xx".to_string()
                    } else {
                        req.expect_status.to_string()
                    }
                ),
            )),
            Some(c) => Err(Fail::new(
                c,
                format!("body does not contain {:?}", req.expect_body.unwrap_or("")),
            )),
        };
    }
}
