//! HTTP/1.1 for probes: URLs, the request head and an incremental response parser.
//!
//! - [`Url::parse`] accepts `http://host[:port][/path]` and `https://...` (IPv6 literals in
//!   brackets); [`resolve_location`] turns a `Location` into an absolute URL.
//! - [`write_request`] writes `METHOD path HTTP/1.1` with `Host`, `User-Agent`, `Accept`,
//!   `Content-Length` (when there is a body or the method is POST) and `Connection: close`.
//! - [`ResponseParser`] is fed the bytes as they arrive, in chunks of any size: status line,
//!   headers (`Content-Length`, `Transfer-Encoding: chunked`, `Location`), then the body,
//!   counted (not stored) and searched for the expected text with a bounded matcher
//!   ([`Contains`], Knuth–Morris–Pratt) that finds it across chunk boundaries. Bodies are
//!   delimited by `Content-Length`, chunked encoding or the end of the connection.
//!
//! Limits keep memory fixed: a header line over [`MAX_LINE`] bytes is skipped (a `Location`
//! over [`MAX_LOCATION`] bytes is an error), the whole head over [`MAX_HEAD`] bytes is an
//! error, and the expected body text is at most [`MAX_NEEDLE`] bytes.

use qos_wire::probe::HttpMethod;

/// Longest header line kept (longer ones are skipped unless they are a `Location`).
pub const MAX_LINE: usize = 1024;
/// Longest `Location` value followed.
pub const MAX_LOCATION: usize = 512;
/// Longest response head (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest text a body may be required to contain.
pub const MAX_NEEDLE: usize = qos_wire::probe::MAX_FIELD;
/// Default `User-Agent`.
pub const USER_AGENT: &str = "qos-edge/0.1";

/// What went wrong in URL handling, request writing or response parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HttpError {
    /// Not an `http://` or `https://` URL with a host and a valid port.
    BadUrl,
    /// The caller's buffer is too small.
    BufferTooSmall,
    /// The status line is not `HTTP/1.x NNN ...`.
    BadStatusLine,
    /// A header line without a colon or with a bad name.
    BadHeader,
    /// The response head exceeds [`MAX_HEAD`].
    HeadTooLong,
    /// `Content-Length` is not a number, or two disagree.
    BadContentLength,
    /// A chunk size line or chunk terminator is malformed.
    BadChunk,
    /// The connection ended before the response was complete.
    Truncated,
    /// A `Location` exceeds [`MAX_LOCATION`].
    LocationTooLong,
    /// The expected body text exceeds [`MAX_NEEDLE`].
    NeedleTooLong,
}

/// A parsed URL, borrowing the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Url<'a> {
    /// `https`.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: &'a str,
    /// Port (80 or 443 unless given).
    pub port: u16,
    /// Path and query as written (may be empty or start with `?`; sent with a leading `/`).
    pub path: &'a str,
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

impl<'a> Url<'a> {
    /// Parse `http://host[:port][/path][?query][#fragment]` (the fragment is dropped).
    pub fn parse(s: &'a str) -> Result<Url<'a>, HttpError> {
        let (tls, rest) = if let Some(r) = strip_prefix_ci(s, "http://") {
            (false, r)
        } else if let Some(r) = strip_prefix_ci(s, "https://") {
            (true, r)
        } else {
            return Err(HttpError::BadUrl);
        };
        let rest = rest.split('#').next().unwrap_or("");
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(auth_end);
        if authority.contains('@') {
            return Err(HttpError::BadUrl);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let close = v6.find(']').ok_or(HttpError::BadUrl)?;
            let host = &v6[..close];
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
            {
                return Err(HttpError::BadUrl);
            }
            (host, &v6[close + 1..])
        } else {
            let colon = authority.find(':').unwrap_or(authority.len());
            let host = &authority[..colon];
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(HttpError::BadUrl);
            }
            (host, &authority[colon..])
        };
        let port = if port.is_empty() {
            if tls {
                443
            } else {
                80
            }
        } else {
            let digits = port.strip_prefix(':').ok_or(HttpError::BadUrl)?;
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(HttpError::BadUrl);
            }
            match digits.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(HttpError::BadUrl),
            }
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(HttpError::BadUrl);
        }
        Ok(Url {
            tls,
            host,
            port,
            path,
        })
    }

    /// Whether the port is the scheme's default (then `Host` carries no port).
    pub fn default_port(&self) -> bool {
        self.port == if self.tls { 443 } else { 80 }
    }

    fn write_origin(&self, w: &mut Writer<'_>) -> Result<(), HttpError> {
        w.put(if self.tls { "https://" } else { "http://" }.as_bytes())?;
        self.write_authority(w)
    }

    fn write_authority(&self, w: &mut Writer<'_>) -> Result<(), HttpError> {
        let v6 = self.host.contains(':');
        if v6 {
            w.put(b"[")?;
        }
        w.put(self.host.as_bytes())?;
        if v6 {
            w.put(b"]")?;
        }
        if !self.default_port() {
            w.put(b":")?;
            w.number(u64::from(self.port))?;
        }
        Ok(())
    }

    fn write_path(&self, w: &mut Writer<'_>) -> Result<(), HttpError> {
        if !self.path.starts_with('/') {
            w.put(b"/")?;
        }
        w.put(self.path.as_bytes())
    }
}

/// A bounds-checked writer into a caller's buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    n: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        let end = self.n + bytes.len();
        self.buf
            .get_mut(self.n..end)
            .ok_or(HttpError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.n = end;
        Ok(())
    }

    fn number(&mut self, mut v: u64) -> Result<(), HttpError> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }
}

/// Write the request head for `method` on `url` into `buf`; `body_len` is the length of the
/// body the caller sends after it. Returns the length written.
pub fn write_request(
    buf: &mut [u8],
    method: HttpMethod,
    url: &Url<'_>,
    body_len: usize,
    user_agent: &str,
) -> Result<usize, HttpError> {
    let mut w = Writer { buf, n: 0 };
    w.put(method.as_str().as_bytes())?;
    w.put(b" ")?;
    url.write_path(&mut w)?;
    w.put(b" HTTP/1.1\r\nHost: ")?;
    url.write_authority(&mut w)?;
    w.put(b"\r\nUser-Agent: ")?;
    w.put(user_agent.as_bytes())?;
    w.put(b"\r\nAccept: */*\r\n")?;
    if body_len > 0 || method == HttpMethod::Post {
        w.put(b"Content-Length: ")?;
        w.number(body_len as u64)?;
        w.put(b"\r\n")?;
    }
    w.put(b"Connection: close\r\n\r\n")?;
    Ok(w.n)
}

/// Whether `status` asks the client to go to `Location`.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The method to use after a redirect with `status` (303, and 301/302 after POST, become GET,
/// as browsers and curl do; 307/308 keep the method and the body).
pub fn redirect_method(method: HttpMethod, status: u16) -> HttpMethod {
    match (method, status) {
        (HttpMethod::Head, _) => HttpMethod::Head,
        (_, 303) | (HttpMethod::Post, 301 | 302) => HttpMethod::Get,
        (m, _) => m,
    }
}

/// Whether `status` is acceptable: exactly `expect`, or any 2xx when `expect` is 0.
pub fn status_ok(status: u16, expect: u16) -> bool {
    if expect == 0 {
        (200..300).contains(&status)
    } else {
        status == expect
    }
}

/// Write into `out` the absolute URL that `location` (from a response to `base`) points to.
/// Absolute URLs are copied, `//host/...` takes `base`'s scheme, `/path` takes `base`'s
/// origin, and other relative references are resolved against `base`'s directory (without
/// removing `.`/`..` segments). Returns the length written.
pub fn resolve_location(
    base: &Url<'_>,
    location: &str,
    out: &mut [u8],
) -> Result<usize, HttpError> {
    let location = location.trim();
    let mut w = Writer { buf: out, n: 0 };
    if strip_prefix_ci(location, "http://").is_some()
        || strip_prefix_ci(location, "https://").is_some()
    {
        w.put(location.as_bytes())?;
    } else if let Some(rest) = location.strip_prefix("//") {
        w.put(if base.tls { "https://" } else { "http://" }.as_bytes())?;
        w.put(rest.as_bytes())?;
    } else if location.starts_with('/') {
        base.write_origin(&mut w)?;
        w.put(location.as_bytes())?;
    } else if location.is_empty() {
        return Err(HttpError::BadUrl);
    } else {
        base.write_origin(&mut w)?;
        let path = base.path.split('?').next().unwrap_or("");
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "/",
        };
        if !dir.starts_with('/') {
            w.put(b"/")?;
        }
        w.put(dir.as_bytes())?;
        w.put(location.as_bytes())?;
    }
    Ok(w.n)
}

/// A bounded "contains" matcher (Knuth–Morris–Pratt): feed the body in chunks of any size;
/// it reports whether the needle occurred anywhere, across chunk boundaries. Memory is fixed:
/// the needle is borrowed and the failure table has [`MAX_NEEDLE`] entries.
#[derive(Clone)]
pub struct Contains<'n> {
    needle: &'n [u8],
    fail: [u16; MAX_NEEDLE],
    matched: usize,
    found: bool,
}

impl<'n> Contains<'n> {
    /// A matcher for `needle` (an empty needle matches at once).
    pub fn new(needle: &'n [u8]) -> Result<Self, HttpError> {
        if needle.len() > MAX_NEEDLE {
            return Err(HttpError::NeedleTooLong);
        }
        let mut fail = [0u16; MAX_NEEDLE];
        let mut k = 0usize;
        for i in 1..needle.len() {
            while k > 0 && needle[i] != needle[k] {
                k = usize::from(fail[k - 1]);
            }
            if needle[i] == needle[k] {
                k += 1;
            }
            fail[i] = k as u16;
        }
        Ok(Contains {
            needle,
            fail,
            matched: 0,
            found: needle.is_empty(),
        })
    }

    /// Feed the next bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.found {
            return;
        }
        let n = self.needle;
        for &b in data {
            while self.matched > 0 && n[self.matched] != b {
                self.matched = usize::from(self.fail[self.matched - 1]);
            }
            if n[self.matched] == b {
                self.matched += 1;
                if self.matched == n.len() {
                    self.found = true;
                    return;
                }
            }
        }
    }

    /// Whether the needle has been seen.
    pub fn found(&self) -> bool {
        self.found
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StatusLine,
    Headers,
    Body(u64),
    UntilClose,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    Done,
}

/// An incremental HTTP/1.1 response parser. See the module documentation.
#[derive(Clone)]
pub struct ResponseParser<'n> {
    state: State,
    head_request: bool,
    line: [u8; MAX_LINE],
    line_len: usize,
    line_overflow: bool,
    head_bytes: usize,
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    location: [u8; MAX_LOCATION],
    location_len: usize,
    has_location: bool,
    body_bytes: u64,
    matcher: Option<Contains<'n>>,
}

impl core::fmt::Debug for ResponseParser<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ResponseParser")
            .field("state", &self.state)
            .field("status", &self.status)
            .field("body_bytes", &self.body_bytes)
            .finish()
    }
}

/// Case-insensitive equality of a header name.
fn name_is(name: &[u8], want: &str) -> bool {
    name.eq_ignore_ascii_case(want.as_bytes())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

impl<'n> ResponseParser<'n> {
    /// A parser for the response to a request; `head_request` for HEAD (no body follows);
    /// `expect_body` is text the body must contain (checked by [`Self::body_matched`]).
    pub fn new(head_request: bool, expect_body: Option<&'n [u8]>) -> Result<Self, HttpError> {
        Ok(ResponseParser {
            state: State::StatusLine,
            head_request,
            line: [0; MAX_LINE],
            line_len: 0,
            line_overflow: false,
            head_bytes: 0,
            status: 0,
            content_length: None,
            chunked: false,
            location: [0; MAX_LOCATION],
            location_len: 0,
            has_location: false,
            body_bytes: 0,
            matcher: match expect_body {
                Some(n) => Some(Contains::new(n)?),
                None => None,
            },
        })
    }

    /// The status code (0 until the status line is complete).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status line and headers are complete.
    pub fn head_complete(&self) -> bool {
        !matches!(self.state, State::StatusLine | State::Headers)
    }

    /// Whether the whole response (head and body) has been seen.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes seen (after chunked decoding).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// The `Location` header, if any (valid once the head is complete).
    pub fn location(&self) -> Option<&str> {
        if !self.has_location {
            return None;
        }
        core::str::from_utf8(&self.location[..self.location_len]).ok()
    }

    /// Whether the body contained the expected text (`None` when nothing was expected).
    pub fn body_matched(&self) -> Option<bool> {
        self.matcher.as_ref().map(Contains::found)
    }

    /// The body is chunked.
    pub fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// The connection was closed by the peer: fine if the response is complete or its body
    /// is delimited by the close.
    pub fn eof(&mut self) -> Result<(), HttpError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(HttpError::Truncated),
        }
    }

    /// Feed the next bytes from the connection. Returns how many were used: all of them,
    /// unless the response completed before their end (the rest is not part of it).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => break,
                State::Body(left) => {
                    let take = (data.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.body(&data[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Body(left)
                    };
                }
                State::UntilClose => {
                    self.body(&data[i..]);
                    i = data.len();
                }
                State::ChunkData(left) => {
                    let take = (data.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.body(&data[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::StatusLine
                | State::Headers
                | State::ChunkSize
                | State::ChunkEnd
                | State::Trailers => {
                    let b = data[i];
                    i += 1;
                    if matches!(self.state, State::StatusLine | State::Headers) {
                        self.head_bytes += 1;
                        if self.head_bytes > MAX_HEAD {
                            return Err(HttpError::HeadTooLong);
                        }
                    }
                    if b == b'\n' {
                        let mut len = self.line_len;
                        if !self.line_overflow && len > 0 && self.line[len - 1] == b'\r' {
                            len -= 1;
                        }
                        let overflow = self.line_overflow;
                        self.line_len = 0;
                        self.line_overflow = false;
                        self.line_done(len, overflow)?;
                    } else if self.line_len < MAX_LINE {
                        self.line[self.line_len] = b;
                        self.line_len += 1;
                    } else {
                        self.line_overflow = true;
                    }
                }
            }
        }
        Ok(i)
    }

    fn body(&mut self, data: &[u8]) {
        self.body_bytes += data.len() as u64;
        if let Some(m) = &mut self.matcher {
            m.feed(data);
        }
    }

    fn line_done(&mut self, len: usize, overflow: bool) -> Result<(), HttpError> {
        let line = &self.line[..len];
        match self.state {
            State::StatusLine => {
                if overflow {
                    return Err(HttpError::BadStatusLine);
                }
                // Tolerate empty lines before the status line (RFC 9112 §2.2).
                if line.is_empty() {
                    return Ok(());
                }
                self.status = parse_status_line(line)?;
                self.state = State::Headers;
            }
            State::Headers => {
                if line.is_empty() && !overflow {
                    return self.head_done();
                }
                let colon = line
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or(HttpError::BadHeader)?;
                let name = &line[..colon];
                if name.is_empty() || name.iter().any(|&b| b <= b' ' || b == 0x7f) {
                    return Err(HttpError::BadHeader);
                }
                if overflow {
                    if name_is(name, "location") {
                        return Err(HttpError::LocationTooLong);
                    }
                    if name_is(name, "content-length") || name_is(name, "transfer-encoding") {
                        return Err(HttpError::BadHeader);
                    }
                    return Ok(());
                }
                let value = trim(&line[colon + 1..]);
                if name_is(name, "content-length") {
                    let v = parse_decimal(value).ok_or(HttpError::BadContentLength)?;
                    if self.content_length.is_some_and(|old| old != v) {
                        return Err(HttpError::BadContentLength);
                    }
                    self.content_length = Some(v);
                } else if name_is(name, "transfer-encoding") {
                    let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
                    self.chunked = last.eq_ignore_ascii_case(b"chunked");
                } else if name_is(name, "location") {
                    if value.len() > MAX_LOCATION {
                        return Err(HttpError::LocationTooLong);
                    }
                    self.location[..value.len()].copy_from_slice(value);
                    self.location_len = value.len();
                    self.has_location = true;
                }
            }
            State::ChunkSize => {
                // Size in hex, then optional `;extensions` (ignored, may have overflowed).
                let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
                let hex = trim(&line[..end]);
                if hex.is_empty() || hex.len() > 15 {
                    return Err(HttpError::BadChunk);
                }
                let size = hex.iter().try_fold(0u64, |acc, &b| {
                    (b as char).to_digit(16).map(|d| acc << 4 | u64::from(d))
                });
                match size {
                    Some(0) => self.state = State::Trailers,
                    Some(n) => self.state = State::ChunkData(n),
                    None => return Err(HttpError::BadChunk),
                }
            }
            State::ChunkEnd => {
                if !line.is_empty() || overflow {
                    return Err(HttpError::BadChunk);
                }
                self.state = State::ChunkSize;
            }
            State::Trailers if line.is_empty() && !overflow => self.state = State::Done,
            // Trailer fields are skipped.
            _ => {}
        }
        Ok(())
    }

    fn head_done(&mut self) -> Result<(), HttpError> {
        if (100..200).contains(&self.status) && self.status != 101 {
            // Interim response (100 Continue, 103 Early Hints): the real one follows.
            self.state = State::StatusLine;
            self.content_length = None;
            self.chunked = false;
            self.has_location = false;
            self.location_len = 0;
            return Ok(());
        }
        self.state = if self.head_request || matches!(self.status, 204 | 304 | 101) {
            State::Done
        } else if self.chunked {
            State::ChunkSize
        } else {
            match self.content_length {
                Some(0) => State::Done,
                Some(n) => State::Body(n),
                None => State::UntilClose,
            }
        };
        Ok(())
    }
}

fn parse_status_line(line: &[u8]) -> Result<u16, HttpError> {
    // HTTP/1.x SP 3DIGIT [SP reason]
    let rest = line
        .strip_prefix(b"HTTP/1.")
        .ok_or(HttpError::BadStatusLine)?;
    match rest {
        [v, b' ', a, b, c, tail @ ..]
            if v.is_ascii_digit()
                && a.is_ascii_digit()
                && b.is_ascii_digit()
                && c.is_ascii_digit()
                && (tail.is_empty() || tail[0] == b' ') =>
        {
            let s = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            if s < 100 {
                return Err(HttpError::BadStatusLine);
            }
            Ok(s)
        }
        _ => Err(HttpError::BadStatusLine),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn urls() {
        let u = Url::parse("http://example.com").unwrap();
        assert_eq!(
            (u.tls, u.host, u.port, u.path),
            (false, "example.com", 80, "")
        );
        let u = Url::parse("HTTPS://h.test:8443/a/b?x=1#frag").unwrap();
        assert_eq!(
            (u.tls, u.host, u.port, u.path),
            (true, "h.test", 8443, "/a/b?x=1")
        );
        let u = Url::parse("http://[::1]:8080/x").unwrap();
        assert_eq!((u.host, u.port, u.path), ("::1", 8080, "/x"));
        let u = Url::parse("http://h?q").unwrap();
        assert_eq!(u.path, "?q");
        for bad in [
            "ftp://h/",
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://h:x/",
            "http://u@h/",
            "http://h/a b",
            "http://[::1/",
            "http://h h/",
            "http://h:/",
        ] {
            assert_eq!(Url::parse(bad), Err(HttpError::BadUrl), "{bad}");
        }
    }

    fn request(m: HttpMethod, url: &str, body: usize) -> String {
        let mut buf = [0u8; 512];
        let n = write_request(&mut buf, m, &Url::parse(url).unwrap(), body, USER_AGENT).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn request_heads() {
        assert_eq!(
            request(HttpMethod::Get, "http://h.test", 0),
            "GET / HTTP/1.1\r\nHost: h.test\r\nUser-Agent: qos-edge/0.1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let r = request(HttpMethod::Post, "https://[::1]:8443/up?x", 5);
        assert!(
            r.starts_with("POST /up?x HTTP/1.1\r\nHost: [::1]:8443\r\n"),
            "{r}"
        );
        assert!(r.contains("\r\nContent-Length: 5\r\n"), "{r}");
        assert!(request(HttpMethod::Post, "http://h/", 0).contains("Content-Length: 0\r\n"));
        assert!(request(HttpMethod::Head, "http://h:80/", 0)
            .starts_with("HEAD / HTTP/1.1\r\nHost: h\r\n"));
        let mut small = [0u8; 20];
        assert_eq!(
            write_request(
                &mut small,
                HttpMethod::Get,
                &Url::parse("http://h/").unwrap(),
                0,
                "x"
            ),
            Err(HttpError::BufferTooSmall)
        );
    }

    fn resolve(base: &str, loc: &str) -> String {
        let mut out = [0u8; 256];
        let n = resolve_location(&Url::parse(base).unwrap(), loc, &mut out).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn locations() {
        assert_eq!(resolve("http://a:81/x/y", "https://b/z"), "https://b/z");
        assert_eq!(resolve("https://a/x/y", "//b:1/z"), "https://b:1/z");
        assert_eq!(resolve("http://a:81/x/y?q", "/z"), "http://a:81/z");
        assert_eq!(resolve("http://a/x/y?q=/w", "z"), "http://a/x/z");
        assert_eq!(resolve("http://a", "z"), "http://a/z");
        assert_eq!(resolve("http://[::1]:8/a", "/b"), "http://[::1]:8/b");
        assert!(resolve_location(&Url::parse("http://a/").unwrap(), "", &mut [0u8; 8]).is_err());
        assert_eq!(
            resolve_location(
                &Url::parse("http://a/").unwrap(),
                "http://long.example/",
                &mut [0u8; 8]
            ),
            Err(HttpError::BufferTooSmall)
        );
    }

    #[test]
    fn redirect_rules() {
        assert!(is_redirect(301) && is_redirect(308) && !is_redirect(304) && !is_redirect(200));
        assert_eq!(redirect_method(HttpMethod::Post, 302), HttpMethod::Get);
        assert_eq!(redirect_method(HttpMethod::Post, 307), HttpMethod::Post);
        assert_eq!(redirect_method(HttpMethod::Get, 303), HttpMethod::Get);
        assert_eq!(redirect_method(HttpMethod::Head, 303), HttpMethod::Head);
        assert!(
            status_ok(204, 0) && !status_ok(301, 0) && status_ok(404, 404) && !status_ok(200, 404)
        );
    }

    #[test]
    fn contains_across_chunks() {
        for needle in [&b"abcabd"[..], b"aaab", b"x", b""] {
            for hay in [&b"xxabcabcabdyy"[..], b"aaaab", b"abcab", b"", b"ax"] {
                let expected = needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle);
                for split in 0..=hay.len() {
                    let mut c = Contains::new(needle).unwrap();
                    c.feed(&hay[..split]);
                    c.feed(&hay[split..]);
                    assert_eq!(c.found(), expected, "{needle:?} in {hay:?} split {split}");
                }
            }
        }
        assert_eq!(
            Contains::new(&[b'a'; MAX_NEEDLE + 1]).err(),
            Some(HttpError::NeedleTooLong)
        );
    }

    fn parse_all(
        resp: &[u8],
        head: bool,
        expect: Option<&[u8]>,
        chunk: usize,
    ) -> Result<ResponseParser<'static>, HttpError> {
        let expect: Option<&'static [u8]> =
            expect.map(|e| &*std::boxed::Box::leak(e.to_vec().into_boxed_slice()));
        let mut p = ResponseParser::new(head, expect)?;
        for c in resp.chunks(chunk.max(1)) {
            p.feed(c)?;
        }
        if !p.is_complete() {
            p.eof()?;
        }
        Ok(p)
    }

    #[test]
    fn content_length_bodies() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: b\r\n\r\nhello world";
        for chunk in 1..r.len() {
            let p = parse_all(r, false, Some(b"lo wo"), chunk).unwrap();
            assert_eq!(
                (p.status(), p.body_bytes(), p.body_matched()),
                (200, 11, Some(true))
            );
        }
        let p = parse_all(r, false, Some(b"absent"), 7).unwrap();
        assert_eq!(p.body_matched(), Some(false));
        // Bytes past the body are not consumed.
        let mut p = ResponseParser::new(false, None).unwrap();
        let mut more = r.to_vec();
        more.extend_from_slice(b"EXTRA");
        assert_eq!(p.feed(&more).unwrap(), r.len());
        assert!(p.is_complete());
        // Short body: truncated.
        assert_eq!(
            parse_all(&r[..r.len() - 1], false, None, 4).err(),
            Some(HttpError::Truncated)
        );
    }

    #[test]
    fn chunked_bodies() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        for chunk in 1..r.len() {
            let p = parse_all(r, false, Some(b"o w"), chunk).unwrap();
            assert!(p.is_chunked());
            assert_eq!((p.body_bytes(), p.body_matched()), (11, Some(true)));
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(
            parse_all(bad, false, None, 3).err(),
            Some(HttpError::BadChunk)
        );
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n";
        assert_eq!(
            parse_all(bad, false, None, 3).err(),
            Some(HttpError::BadChunk)
        );
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert_eq!(
            parse_all(cut, false, None, 3).err(),
            Some(HttpError::Truncated)
        );
    }

    #[test]
    fn close_delimited_head_and_no_body_statuses() {
        let p = parse_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close", false, None, 3).unwrap();
        assert_eq!(p.body_bytes(), 11);
        let p = parse_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            true,
            None,
            3,
        )
        .unwrap();
        assert_eq!(p.body_bytes(), 0);
        let p = parse_all(b"HTTP/1.1 204 No Content\r\n\r\n", false, None, 3).unwrap();
        assert!(p.is_complete());
        let p = parse_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            false,
            None,
            5,
        )
        .unwrap();
        assert_eq!((p.status(), p.body_bytes()), (201, 2));
    }

    #[test]
    fn locations_and_long_headers() {
        let p = parse_all(
            b"HTTP/1.1 302 Found\r\nlocation:  /next \r\nContent-Length: 0\r\n\r\n",
            false,
            None,
            2,
        )
        .unwrap();
        assert_eq!(p.location(), Some("/next"));
        let mut long = Vec::new();
        long.extend_from_slice(b"HTTP/1.1 200 OK\r\nX-Big: ");
        long.extend(core::iter::repeat_n(b'a', 3000));
        long.extend_from_slice(b"\r\nContent-Length: 1\r\n\r\nz");
        let p = parse_all(&long, false, None, 100).unwrap();
        assert_eq!(p.body_bytes(), 1);
        let mut loc = Vec::new();
        loc.extend_from_slice(b"HTTP/1.1 302 Found\r\nLocation: /");
        loc.extend(core::iter::repeat_n(b'a', 600));
        loc.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_all(&loc, false, None, 100).err(),
            Some(HttpError::LocationTooLong)
        );
    }

    #[test]
    fn malformed_heads() {
        for (r, e) in [
            (&b"HTTP/2 200 OK\r\n\r\n"[..], HttpError::BadStatusLine),
            (b"HTTP/1.1 20 OK\r\n\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 200OK\r\n\r\n", HttpError::BadStatusLine),
            (b"SSH-2.0-OpenSSH\r\n", HttpError::BadStatusLine),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", HttpError::BadHeader),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (b"HTTP/1.1 200 OK\r\n", HttpError::Truncated),
        ] {
            assert_eq!(
                parse_all(r, false, None, 3).err(),
                Some(e),
                "{:?}",
                core::str::from_utf8(r)
            );
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20)) {
            let mut p = ResponseParser::new(false, Some(b"needle")).unwrap();
            for c in &chunks {
                if p.feed(c).is_err() { break; }
            }
            let _ = p.eof();
        }

        #[test]
        fn head_like_garbage_never_panics(lines in proptest::collection::vec("[A-Za-z0-9:; /.-]{0,30}", 0..12), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Vec::new();
            r.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            for l in &lines { r.extend_from_slice(l.as_bytes()); r.extend_from_slice(b"\r\n"); }
            r.extend_from_slice(b"\r\n");
            r.extend_from_slice(&body);
            let _ = parse_all(&r, false, Some(b"x"), 7);
        }

        #[test]
        fn chunked_equals_plain(body in proptest::collection::vec(any::<u8>(), 0..300), sizes in proptest::collection::vec(1usize..40, 1..10), feed in 1usize..50) {
            let mut r = Vec::new();
            r.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                r.extend_from_slice(std::format!("{n:x}\r\n").as_bytes());
                r.extend_from_slice(&rest[..n]);
                r.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            r.extend_from_slice(b"0\r\n\r\n");
            let needle: Vec<u8> = body.iter().skip(body.len() / 3).take(5).copied().collect();
            let p = parse_all(&r, false, Some(&needle), feed).unwrap();
            prop_assert_eq!(p.body_bytes(), body.len() as u64);
            prop_assert_eq!(p.body_matched(), Some(true));
        }
    }
}
