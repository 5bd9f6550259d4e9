//! Request-head parsing for [`super::server`]: pure functions from bytes to a [`Head`] or a
//! [`RequestError`] (the status and JSON reason to answer with), no I/O, never panicking (a
//! property test feeds it random bytes).
//!
//! Rules: a head is at most [`MAX_HEAD_BYTES`] with at most [`MAX_HEADER_LINES`] header lines;
//! CRLF or bare LF line ends; empty lines before the request line are skipped; the request line
//! is `method SP target SP version` with a token method, a visible-ASCII target of at most
//! [`MAX_URL_BYTES`] (origin-form, absolute-form, or `*` for `OPTIONS`) and HTTP/1.0 or 1.1
//! (other versions: `505`); header names are tokens directly followed by `:`, values have no
//! control characters, folded lines are refused. Framing: `Content-Length` is digits only and
//! repeated values must agree (`400` otherwise; a number beyond `u64` reads as `u64::MAX`, i.e.
//! too large); `Transfer-Encoding` is refused (`411` for `chunked`, `501` for other codings);
//! HTTP/1.1 needs exactly one `Host`; `Expect` other than `100-continue` is `417`.

use serde_json::{json, Value};

use super::server::Response;

/// Largest request head (request line, headers and the blank line), in bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header lines in a request.
pub const MAX_HEADER_LINES: usize = 64;
/// Longest request target. A target is also bounded by [`MAX_HEAD_BYTES`]: a request line that
/// does not fit in the head is answered `414` too.
pub const MAX_URL_BYTES: usize = MAX_HEAD_BYTES;

/// The protocol version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method, a token such as `GET` (case-sensitive, as sent).
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// The percent-decoded path, without query or fragment (`*` for `OPTIONS *`).
    pub path: String,
    /// The raw query string after `?` (not decoded; see [`super::server::Request::query_pairs`]).
    pub query: Option<String>,
    /// The protocol version.
    pub version: Version,
    /// The header fields in order, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The declared body length; `u64::MAX` stands for a number too large for `u64`.
    pub content_length: Option<u64>,
    /// Whether the client allows the connection to stay open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

impl Head {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request that cannot be served, with the status and JSON reason to answer it with. The
/// connection is closed after answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The HTTP status.
    pub status: u16,
    /// The `"error"` text.
    pub error: &'static str,
    /// A limit that was exceeded, as a JSON field name and value (such as `limit_bytes`).
    pub limit: Option<(&'static str, u64)>,
    /// More detail (`"reason"`).
    pub detail: Option<String>,
}

impl RequestError {
    pub(crate) fn new(status: u16, error: &'static str) -> RequestError {
        RequestError {
            status,
            error,
            limit: None,
            detail: None,
        }
    }

    fn bad(error: &'static str) -> RequestError {
        RequestError::new(400, error)
    }

    pub(crate) fn limit(mut self, name: &'static str, value: usize) -> RequestError {
        self.limit = Some((name, value as u64));
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> RequestError {
        self.detail = Some(detail.into());
        self
    }

    /// The JSON answer (which closes the connection).
    pub fn to_response(&self) -> Response {
        let mut body = json!({ "error": self.error });
        if let Value::Object(map) = &mut body {
            if let Some((name, value)) = self.limit {
                map.insert(name.into(), value.into());
            }
            if let Some(detail) = &self.detail {
                map.insert("reason".into(), detail.as_str().into());
            }
        }
        let mut response = Response::json(self.status, &body);
        response.close = true;
        response
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.error)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RequestError {}

/// `tchar` of RFC 9110: the bytes allowed in methods and header names.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().copied().all(is_tchar)
}

/// Where the head ends (just after its blank line) in `buf`, looking for the final line end
/// from `from` on. Accepts CRLF and bare LF line ends; empty lines before the request line do
/// not end a head.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    (from.max(start)..buf.len())
        .find(|&i| buf[i] == b'\n' && (buf[..i].ends_with(b"\n") || buf[..i].ends_with(b"\n\r")))
        .map(|i| i + 1)
}

/// The error for a head that did not end within [`MAX_HEAD_BYTES`]: `414` while the request
/// line is unfinished, `431` otherwise.
pub(crate) fn head_too_large(buf: &[u8]) -> RequestError {
    let buf = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let Some(start) = buf.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return RequestError::bad("empty request");
    };
    if buf[start..].contains(&b'\n') {
        RequestError::new(431, "request header fields too large")
            .limit("limit_bytes", MAX_HEAD_BYTES)
    } else {
        RequestError::new(414, "request target too long").limit("limit_bytes", MAX_URL_BYTES)
    }
}

/// Parses a request head: the bytes up to and including the blank line that ends it (leading
/// empty lines are skipped). Checks the size limits, the syntax, and the framing headers.
pub fn parse_head(bytes: &[u8]) -> Result<Head, RequestError> {
    if bytes.len() > MAX_HEAD_BYTES {
        return Err(head_too_large(bytes));
    }
    // Drop the final line end so that the last line seen is the terminating blank line.
    let Some(bytes) = bytes
        .strip_suffix(b"\n")
        .filter(|b| b.ends_with(b"\n") || b.ends_with(b"\n\r"))
    else {
        return Err(RequestError::bad(
            "request head not terminated by an empty line",
        ));
    };
    let mut lines = bytes.split(|&b| b == b'\n').map(|line| match line {
        [rest @ .., b'\r'] => rest,
        _ => line,
    });
    let request_line = loop {
        match lines.next() {
            Some([]) => continue,
            Some(line) => break line,
            None => return Err(RequestError::bad("empty request")),
        }
    };
    let (method, target, version) = parse_request_line(request_line)?;

    let mut headers = Vec::new();
    let mut ended = false;
    for line in lines.by_ref() {
        if line.is_empty() {
            ended = true;
            break;
        }
        if headers.len() == MAX_HEADER_LINES {
            return Err(RequestError::new(431, "too many header fields")
                .limit("limit_lines", MAX_HEADER_LINES));
        }
        headers.push(parse_header_line(line)?);
    }
    if !ended {
        return Err(RequestError::bad(
            "request head not terminated by an empty line",
        ));
    }
    if lines.any(|rest| !rest.is_empty()) {
        return Err(RequestError::bad("data after the request head"));
    }

    let (path, query) = split_target(&method, &target)?;
    let mut head = Head {
        method,
        target,
        path,
        query,
        version,
        headers,
        content_length: None,
        keep_alive: version == Version::Http11,
        expect_continue: false,
    };
    check_framing(&mut head)?;
    Ok(head)
}

fn parse_request_line(line: &[u8]) -> Result<(String, String, Version), RequestError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::bad("malformed request line"));
    };
    if !is_token(method) {
        return Err(RequestError::bad("malformed method"));
    }
    if target.len() > MAX_URL_BYTES {
        return Err(
            RequestError::new(414, "request target too long").limit("limit_bytes", MAX_URL_BYTES)
        );
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(RequestError::bad("malformed request target"));
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(RequestError::new(505, "HTTP version not supported")
                .detail(String::from_utf8_lossy(version)));
        }
        _ => return Err(RequestError::bad("malformed HTTP version")),
    };
    // Both are ASCII (checked above).
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    Ok((method, target, version))
}

fn parse_header_line(line: &[u8]) -> Result<(String, String), RequestError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(RequestError::bad("obsolete header line folding"));
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(RequestError::bad("malformed header line"));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return Err(RequestError::bad("malformed header name"));
    }
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    let value = &value[start..end];
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(RequestError::bad("control character in header value"));
    }
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// Splits a target into decoded path and raw query. Accepts origin-form (`/p?q`),
/// absolute-form (`http://host/p?q`) and `*` for `OPTIONS`.
fn split_target(method: &str, target: &str) -> Result<(String, Option<String>), RequestError> {
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(("*".into(), None))
        } else {
            Err(RequestError::bad("malformed request target"))
        };
    }
    let origin = if target.starts_with('/') {
        target
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return Err(RequestError::bad("malformed request target"));
        };
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            Some(i) => return Ok(("/".into(), Some(rest[i + 1..].to_string()))),
            None => "/",
        }
    };
    let origin = origin.split('#').next().unwrap_or("");
    let (raw_path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (origin, None),
    };
    let path = percent_decode(raw_path)
        .filter(|p| !p.chars().any(char::is_control))
        .ok_or_else(|| RequestError::bad("malformed percent-encoding in path"))?;
    Ok((path, query))
}

/// Decodes `%XX` escapes; `None` for a bad escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if !bytes.contains(&b'%') {
        return Some(s.to_string());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Content-Length, Transfer-Encoding, Host, Connection and Expect.
fn check_framing(head: &mut Head) -> Result<(), RequestError> {
    let mut content_length = None;
    let mut hosts = 0;
    let mut close = false;
    let mut keep_alive = false;
    for (name, value) in &head.headers {
        if name.eq_ignore_ascii_case("Content-Length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RequestError::bad("malformed Content-Length").detail(value.as_str()));
            }
            // Digits only: the only parse failure left is overflow, i.e. "too large".
            let n = value.parse::<u64>().unwrap_or(u64::MAX);
            if content_length.is_some_and(|m| m != n) {
                return Err(RequestError::bad("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("Transfer-Encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            return Err(if last.eq_ignore_ascii_case("chunked") {
                RequestError::new(411, "chunked request bodies are not supported")
                    .detail("send the body with a Content-Length")
            } else {
                RequestError::new(501, "transfer coding not implemented").detail(value.as_str())
            });
        } else if name.eq_ignore_ascii_case("Host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("Connection") {
            for option in value.split(',').map(str::trim) {
                close |= option.eq_ignore_ascii_case("close");
                keep_alive |= option.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("Expect") {
            if value.eq_ignore_ascii_case("100-continue") {
                head.expect_continue = true;
            } else {
                return Err(
                    RequestError::new(417, "expectation not supported").detail(value.as_str())
                );
            }
        }
    }
    if hosts > 1 || (hosts == 0 && head.version == Version::Http11) {
        return Err(RequestError::bad(
            "HTTP/1.1 requests need exactly one Host header",
        ));
    }
    head.content_length = content_length;
    head.keep_alive = !close && (head.version == Version::Http11 || keep_alive);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(head: &str) -> Head {
        parse_head(head.as_bytes()).unwrap_or_else(|e| panic!("{head:?}: {e}"))
    }

    fn status(head: &[u8]) -> u16 {
        match parse_head(head) {
            Ok(h) => panic!("{:?} parsed: {h:?}", String::from_utf8_lossy(head)),
            Err(e) => e.status,
        }
    }

    #[test]
    fn a_plain_get_parses() {
        let h = ok("GET /api/v1/health?x=1&y HTTP/1.1\r\nHost: a\r\nX-A:  b c \r\n\r\n");
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/api/v1/health?x=1&y");
        assert_eq!(h.path, "/api/v1/health");
        assert_eq!(h.query.as_deref(), Some("x=1&y"));
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.header("x-a"), Some("b c"));
        assert!(h.keep_alive);
        assert_eq!(h.content_length, None);
    }

    #[test]
    fn bare_lf_leading_blank_lines_and_http10_are_accepted() {
        let h = ok("\r\n\nGET / HTTP/1.0\n\n");
        assert_eq!(h.version, Version::Http10);
        assert!(!h.keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: x, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn targets_are_decoded_and_split() {
        let h = ok("GET /a%20b/%C3%A9?q=%20#frag HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.path, "/a b/é");
        assert_eq!(h.query.as_deref(), Some("q=%20"));
        let h = ok("GET http://example.com:80/api/v1/edges?x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (h.path.as_str(), h.query.as_deref()),
            ("/api/v1/edges", Some("x"))
        );
        assert_eq!(ok("GET HTTP://h HTTP/1.1\r\nHost: a\r\n\r\n").path, "/");
        assert_eq!(ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").path, "*");
        for bad in [
            "GET * HTTP/1.1",
            "GET a HTTP/1.1",
            "GET /%zz HTTP/1.1",
            "GET /%00 HTTP/1.1",
        ] {
            let head = format!("{bad}\r\nHost: a\r\n\r\n");
            assert_eq!(status(head.as_bytes()), 400, "{bad}");
        }
        assert_eq!(status(b"GET /%ff HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn malformed_request_lines_are_400_and_versions_505() {
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.x\r\nHost: a\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nextra",
        ] {
            assert_eq!(status(bad), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
    }

    #[test]
    fn malformed_headers_are_400() {
        for bad in [
            "Host a",
            "Host : a",
            " Host: a",
            "Host: a\r\n folded",
            "Ho st: a",
            "Host: a\rb",
            "Host: a\u{7f}",
        ] {
            let head = format!("GET / HTTP/1.1\r\n{bad}\r\n\r\n");
            assert_eq!(status(head.as_bytes()), 400, "{bad:?}");
        }
        // Missing or repeated Host in HTTP/1.1.
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    }

    #[test]
    fn content_length_is_strict() {
        let cl = |v: &str| {
            parse_head(format!("POST / HTTP/1.1\r\nHost: a\r\n{v}\r\n\r\n").as_bytes())
                .map(|h| h.content_length)
                .map_err(|e| e.status)
        };
        assert_eq!(cl("Content-Length: 12"), Ok(Some(12)));
        assert_eq!(cl("Content-Length: 007"), Ok(Some(7)));
        assert_eq!(
            cl("Content-Length: 1000000000000"),
            Ok(Some(1_000_000_000_000))
        );
        assert_eq!(
            cl("Content-Length: 99999999999999999999"),
            Ok(Some(u64::MAX))
        );
        assert_eq!(cl("Content-Length: 5\r\ncontent-length: 5"), Ok(Some(5)));
        for bad in ["+5", "-1", "5 5", "5,5", "0x10", "", "1e3", "５"] {
            assert_eq!(cl(&format!("Content-Length: {bad}")), Err(400), "{bad:?}");
        }
        assert_eq!(cl("Content-Length: 5\r\nContent-Length: 6"), Err(400));
    }

    #[test]
    fn transfer_encoding_and_expect_are_refused() {
        let te = |v: &str| status(format!("POST / HTTP/1.1\r\nHost: a\r\n{v}\r\n\r\n").as_bytes());
        assert_eq!(te("Transfer-Encoding: chunked"), 411);
        assert_eq!(te("Transfer-Encoding: gzip, Chunked"), 411);
        assert_eq!(te("Transfer-Encoding: gzip"), 501);
        assert_eq!(te("Content-Length: 3\r\nTransfer-Encoding: chunked"), 411);
        assert_eq!(te("Expect: something"), 417);
        assert!(ok("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_target = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(status(long_target.as_bytes()), 414);
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "b".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(status(big_header.as_bytes()), 431);
        let many: String = (0..=MAX_HEADER_LINES)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let head = format!("GET / HTTP/1.0\r\n{many}\r\n");
        let e = parse_head(head.as_bytes()).unwrap_err();
        assert_eq!((e.status, e.limit), (431, Some(("limit_lines", 64))));
        let fits: String = (0..MAX_HEADER_LINES - 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        ok(&format!("GET / HTTP/1.1\r\nHost: a\r\n{fits}\r\n"));
        // The unfinished-head classification used by the reader.
        assert_eq!(head_too_large(b"\r\nGET /aaaa").status, 414);
        assert_eq!(head_too_large(b"GET / HTTP/1.1\r\nX: aaaa").status, 431);
        assert_eq!(head_too_large(b"\r\n\r\n").status, 400);
    }

    #[test]
    fn head_ends_are_found() {
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n\r\nrest", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\nrest", 0), Some(16));
        assert_eq!(find_head_end(b"\r\n\r\n\n", 0), None);
        assert_eq!(find_head_end(b"\r\nGET / HTTP/1.0\r\n", 0), None);
        assert_eq!(find_head_end(b"\r\nGET / HTTP/1.0\r\n\r\n", 0), Some(20));
        // Resuming the search where the previous one stopped.
        assert_eq!(find_head_end(b"GET / HTTP/1.0\r\n\r\n", 17), Some(18));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%41").as_deref(), Some("a/bA"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%4", "%g0", "%C3", "%é0"] {
            assert_eq!(percent_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn errors_render_as_json() {
        let e = RequestError::new(413, "too big")
            .limit("limit_bytes", 10)
            .detail("why");
        let r = e.to_response();
        assert_eq!(r.status, 413);
        assert!(r.close);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v,
            json!({"error": "too big", "limit_bytes": 10, "reason": "why"})
        );
    }

    /// A valid head to mutate.
    const VALID: &[u8] = b"POST /api/v1/x%20y?a=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..10_000)) {
            let _ = parse_head(&bytes);
            let _ = find_head_end(&bytes, 0);
            let _ = head_too_large(&bytes);
        }

        #[test]
        fn mutated_heads_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
        ) {
            let mut bytes = VALID.to_vec();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => { bytes.remove(i); }
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.push(byte),
                }
            }
            if let Ok(head) = parse_head(&bytes) {
                // Whatever parses respects the invariants the server relies on.
                prop_assert!(head.headers.len() <= MAX_HEADER_LINES);
                prop_assert!(head.target.len() <= MAX_URL_BYTES);
                prop_assert!(head.method.bytes().all(is_tchar));
            }
        }

        #[test]
        fn text_heads_never_panic(s in "[ -~\r\n%:]{0,300}") {
            let _ = parse_head(s.as_bytes());
            let _ = percent_decode(&s);
        }
    }
}
