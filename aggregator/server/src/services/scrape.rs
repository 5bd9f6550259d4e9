//! `[[scrape]]`: component metrics read from a Prometheus text exposition endpoint (a
//! node_exporter, a database exporter) over a plain `TcpStream` HTTP/1.0 GET.
//!
//! The parser ([`parse`]) reads the text format 0.0.4: `# TYPE` lines give each family's type,
//! samples are `name{labels} value [timestamp]`. Labels are folded into the metric name in
//! canonical form (`name{a="x",b="y"}`, labels sorted). [`Scraper`] turns counters into
//! per-second rates between two scrapes (a decrease is a reset: no rate that time; the first
//! scrape gives none) and passes gauges (and untyped samples, summary quantiles) as they are;
//! histogram and summary `_bucket`/`_sum`/`_count` samples are counters. Non-finite values and
//! malformed lines are skipped and counted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::services::db::Point;

/// Largest response read.
pub const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Not `http://host:port/path`.
    #[error("invalid scrape URL `{0}` (expected http://host:port/path)")]
    Url(String),
    /// Connecting, sending or reading failed.
    #[error("scrape: {0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP, not 200, too large or badly chunked.
    #[error("scrape: {0}")]
    Protocol(String),
}

/// Where to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Target, ScrapeError> {
        let w = qos_model::notify::http::Webhook::parse(url)
            .map_err(|_| ScrapeError::Url(url.to_string()))?;
        Ok(Target {
            host: w.host,
            port: w.port,
            path: w.path,
        })
    }

    /// GETs the exposition text.
    pub fn fetch(&self, timeout: Duration) -> Result<String, ScrapeError> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ScrapeError::Url(self.host.clone()))?;
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        write!(
            s,
            "GET {} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain;version=0.0.4\r\n\
             User-Agent: qos-aggregator\r\nConnection: close\r\n\r\n",
            self.path
        )?;
        s.flush()?;
        let mut buf = Vec::new();
        s.take(MAX_RESPONSE as u64 + 1).read_to_end(&mut buf)?;
        if buf.len() > MAX_RESPONSE {
            return Err(ScrapeError::Protocol("response too large".into()));
        }
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| ScrapeError::Protocol("no end of header".into()))?;
        let head = String::from_utf8_lossy(&buf[..split]).to_string();
        let body = &buf[split + 4..];
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or("");
        let code = status.split(' ').nth(1).unwrap_or("");
        if !status.starts_with("HTTP/1.") || code != "200" {
            return Err(ScrapeError::Protocol(format!("answer `{status}`")));
        }
        let chunked = lines.any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(body).ok_or_else(|| ScrapeError::Protocol("bad chunked body".into()))?
        } else {
            body.to_vec()
        };
        String::from_utf8(body).map_err(|_| ScrapeError::Protocol("body is not UTF-8".into()))
    }
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic: turned into a rate.
    Counter,
    /// As is.
    Gauge,
}

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Name with its labels folded in.
    pub name: String,
    /// Counter or gauge.
    pub kind: Kind,
    /// The value.
    pub value: f64,
}

/// The samples of an exposition and the count of lines skipped.
pub fn parse(text: &str) -> (Vec<Sample>, usize) {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut w = rest.split_whitespace();
            if w.next() == Some("TYPE") {
                if let (Some(n), Some(t)) = (w.next(), w.next()) {
                    types.insert(n, t);
                }
            }
            continue;
        }
        match sample(line, &types) {
            Some(s) if s.value.is_finite() => out.push(s),
            Some(_) => {}
            None => bad += 1,
        }
    }
    (out, bad)
}

fn kind_of(name: &str, types: &BTreeMap<&str, &str>) -> Kind {
    if let Some(t) = types.get(name) {
        return if *t == "counter" {
            Kind::Counter
        } else {
            Kind::Gauge
        };
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(types.get(base), Some(&"histogram") | Some(&"summary")) {
                return Kind::Counter;
            }
        }
    }
    Kind::Gauge
}

fn sample(line: &str, types: &BTreeMap<&str, &str>) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            // skip separators
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let &(i, c) = chars.peek()?;
            if c == '}' {
                end = i + 1;
                break;
            }
            let mut key = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            chars.next()?; // '='
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        o => value.push(o),
                    },
                    o => value.push(o),
                }
            }
            let key = key.trim().to_string();
            if key.is_empty() {
                return None;
            }
            labels.push((key, value));
        }
        rest = &r[end..];
    }
    let mut w = rest.split_whitespace();
    let value = match w.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    if let Some(ts) = w.next() {
        ts.parse::<i64>().ok()?;
    }
    if w.next().is_some() {
        return None;
    }
    labels.sort();
    let full = if labels.is_empty() {
        name.to_string()
    } else {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        format!("{name}{{{}}}", l.join(","))
    };
    Some(Sample {
        name: full,
        kind: kind_of(name, types),
        value,
    })
}

/// One `[[scrape]]` target with the counters' last values.
#[derive(Debug)]
pub struct Scraper {
    /// Where.
    pub target: Target,
    /// The component the metrics belong to.
    pub component: String,
    /// Seconds between scrapes.
    pub interval_s: u64,
    /// When the next scrape is due, Unix s.
    pub due: u64,
    last: BTreeMap<String, (f64, f64)>,
    /// Scrapes that failed.
    pub failures: u64,
    /// Lines skipped as malformed.
    pub bad_lines: u64,
}

impl Scraper {
    /// A scraper of `url` for `component`.
    pub fn new(url: &str, component: &str, interval_s: u64) -> Result<Scraper, ScrapeError> {
        Ok(Scraper {
            target: Target::parse(url)?,
            component: component.into(),
            interval_s,
            due: 0,
            last: BTreeMap::new(),
            failures: 0,
            bad_lines: 0,
        })
    }

    /// Points from an exposition read at `now` (Unix s, fractional).
    pub fn points(&mut self, text: &str, now: f64) -> Vec<Point> {
        let (samples, bad) = parse(text);
        self.bad_lines += bad as u64;
        let mut out = Vec::new();
        for s in samples {
            let value = match s.kind {
                Kind::Gauge => Some(s.value),
                Kind::Counter => {
                    let prev = self.last.insert(s.name.clone(), (now, s.value));
                    match prev {
                        Some((t, v)) if now > t && s.value >= v => Some((s.value - v) / (now - t)),
                        _ => None,
                    }
                }
            };
            if let Some(value) = value {
                out.push(Point {
                    component: self.component.clone(),
                    metric: s.name,
                    at: now,
                    value,
                });
            }
        }
        out
    }

    /// Scrapes now if due; the points, or the error.
    pub fn poll(&mut self, now: f64) -> Option<Result<Vec<Point>, ScrapeError>> {
        if (now as u64) < self.due {
            return None;
        }
        self.due = now as u64 + self.interval_s;
        let timeout = Duration::from_secs(self.interval_s.clamp(1, 10));
        Some(match self.target.fetch(timeout) {
            Ok(text) => Ok(self.points(&text, now)),
            Err(e) => {
                self.failures += 1;
                Err(e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fold_and_types_apply() {
        let text = "# HELP x y\n# TYPE node_cpu_seconds_total counter\n\
            node_cpu_seconds_total{mode=\"idle\",cpu=\"0\"} 10.5\n\
            # TYPE node_load1 gauge\nnode_load1 0.25 1700000000000\n\
            # TYPE rpc histogram\nrpc_bucket{le=\"+Inf\"} 3\nrpc_sum 1.5\nbad line here\n\
            weird{a=\"x} 1\nnode_nan NaN\n";
        let (s, bad) = parse(text);
        assert_eq!(bad, 2, "{s:?}");
        assert_eq!(s[0].name, "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}");
        assert_eq!(s[0].kind, Kind::Counter);
        assert_eq!((s[1].name.as_str(), s[1].kind), ("node_load1", Kind::Gauge));
        assert_eq!(s[2].name, "rpc_bucket{le=\"+Inf\"}");
        assert_eq!(s[2].kind, Kind::Counter);
        assert_eq!(s[3].kind, Kind::Counter);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn counters_become_rates_and_resets_give_none() {
        let mut sc = Scraper::new("http://127.0.0.1:1/metrics", "db", 15).unwrap();
        let t = |v: f64| format!("# TYPE c counter\nc {v}\ng 7\n");
        assert_eq!(sc.points(&t(100.0), 10.0).len(), 1); // gauge only
        let p = sc.points(&t(130.0), 20.0);
        assert_eq!(p.len(), 2);
        assert!((p.iter().find(|p| p.metric == "c").unwrap().value - 3.0).abs() < 1e-9);
        assert_eq!(sc.points(&t(5.0), 30.0).len(), 1); // reset
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_none());
    }
}
