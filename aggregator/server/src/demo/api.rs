//! A minimal client of serve's JSON API (one connection per request, `Connection: close`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// `method path` with `body` on serve's API at `addr`; the JSON body of a 200 answer.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> Result<Value, String> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").into_bytes();
    if let Some((ctype, text)) = body {
        req.extend_from_slice(
            format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )
            .as_bytes(),
        );
    } else {
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("{method} {path}: status {status}"));
    }
    serde_json::from_str(body).map_err(|e| format!("{method} {path}: {e}"))
}

/// `GET path` on serve's API at `addr`; the JSON body of a 200 answer.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<Value, String> {
    request(addr, "GET", path, None)
}

/// `POST path` with `body` of type `ctype`; the JSON body of a 200 answer.
pub fn post(addr: SocketAddr, path: &str, ctype: &str, body: &str) -> Result<Value, String> {
    request(addr, "POST", path, Some((ctype, body)))
}
