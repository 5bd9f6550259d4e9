//! The probe and threshold-rule model of the edge's TOML format (`[[probe]]` and `[[rule]]`
//! tables), shared by the Linux edge (`qos-edge`, its configuration file) and the
//! super-manager (central edge configurations, on-demand probes).
//!
//! Parsing checks the table's shape (unknown fields are errors naming the field); the
//! `validate` methods check the values (lengths, addresses, URLs, DNS names) with messages that
//! name the probe; [`ProbeSet`] checks a whole set (unique ids, rules naming existing probes)
//! and encodes it as the wire's `edge-config`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use qos_wire::codec::List;
use qos_wire::config::{EdgeConfig, RuleBinding};
use qos_wire::ids::ProbeId;
use qos_wire::phase::Phase;
use qos_wire::probe::{DnsType, HttpMethod, ProbeKind, ProbeSpec, Step, MAX_FIELD, MAX_STEPS};
use qos_wire::threshold::{Metric, ThresholdRule};
use serde::Deserialize;

/// `[[rule]]`: a local threshold rule, evaluated on the edge for every result of its probe.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// The probe's id.
    pub probe: u16,
    /// `"availability"` (failed runs are bad) or a phase: `"dns"`, `"connect"`, `"tls"`,
    /// `"first_byte"`, `"download"`, `"upload"`, `"total"` (its time is bad at ≥ `raise_ms`).
    pub metric: String,
    /// Phase rules: a time at or above this is bad (ms, fractions allowed).
    #[serde(default)]
    pub raise_ms: f64,
    /// Phase rules: once raised, a time at or below this is good (ms; default `raise_ms`).
    pub clear_ms: Option<f64>,
    /// Bad (or, once raised, good) samples needed among the last `n` (1..=n).
    pub k: u8,
    /// Window in samples (k..=32).
    pub n: u8,
}

impl RuleSection {
    /// The rule in the wire's terms.
    pub fn rule(&self) -> Result<ThresholdRule, String> {
        let metric = match self.metric.as_str() {
            "availability" => Metric::Availability,
            name => Metric::Phase(Phase::from_name(name).ok_or_else(|| {
                format!(
                    "rule for probe {}: unknown metric {name:?} (availability or a phase name)",
                    self.probe
                )
            })?),
        };
        let us = |ms: f64| (ms * 1000.0).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        let raise = us(self.raise_ms);
        let rule = ThresholdRule {
            metric,
            raise,
            clear: self.clear_ms.map_or(raise, us),
            k: self.k,
            n: self.n,
        };
        rule.validate()
            .map_err(|e| format!("rule for probe {}: {e}", self.probe))?;
        if metric != Metric::Availability && (self.raise_ms.is_nan() || self.raise_ms <= 0.0) {
            return Err(format!(
                "rule for probe {}: raise_ms must be above 0",
                self.probe
            ));
        }
        Ok(rule)
    }
}

/// DNS record type, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum QType {
    /// IPv4 address.
    #[default]
    #[serde(alias = "a")]
    #[cfg_attr(feature = "clap", value(name = "A", alias = "a"))]
    A,
    /// IPv6 address.
    #[serde(rename = "AAAA", alias = "aaaa")]
    #[cfg_attr(feature = "clap", value(name = "AAAA", alias = "aaaa"))]
    Aaaa,
}

impl From<QType> for DnsType {
    fn from(q: QType) -> DnsType {
        match q {
            QType::A => DnsType::A,
            QType::Aaaa => DnsType::Aaaa,
        }
    }
}

/// HTTP method, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET.
    #[default]
    #[cfg_attr(feature = "clap", value(name = "GET", alias = "get"))]
    Get,
    /// HEAD.
    #[cfg_attr(feature = "clap", value(name = "HEAD", alias = "head"))]
    Head,
    /// POST with `body`.
    #[cfg_attr(feature = "clap", value(name = "POST", alias = "post"))]
    Post,
}

impl From<Method> for HttpMethod {
    fn from(m: Method) -> HttpMethod {
        match m {
            Method::Get => HttpMethod::Get,
            Method::Head => HttpMethod::Head,
            Method::Post => HttpMethod::Post,
        }
    }
}

/// One step of a transaction, with escapes decoded (see [`unescape`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepConfig {
    /// Bytes to send.
    pub send: Vec<u8>,
    /// Expected prefix of the answer.
    pub expect: Vec<u8>,
}

/// What a probe does, per kind; fields mirror `qos_wire::probe::ProbeKind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKindConfig {
    /// DNS query.
    Dns {
        /// Resolver, `ip[:port]` (port 53 by default).
        resolver: String,
        /// Name to look up.
        name: String,
        /// Record type.
        qtype: QType,
        /// Address the answer must contain.
        expect: Option<String>,
    },
    /// TCP connect to `host:port`.
    Tcp {
        /// `host:port`.
        target: String,
    },
    /// HTTP(S) request.
    Http {
        /// `http://host[:port]/path` or `https://...`.
        url: String,
        /// Method.
        method: Method,
        /// Request body (escapes decoded).
        body: Vec<u8>,
        /// Expected status; 0 = any 2xx.
        expect_status: u16,
        /// Text the body must contain.
        expect_body: Option<String>,
        /// Redirects followed at most.
        max_redirects: u8,
        /// Extra trusted CA certificates (PEM) for HTTPS.
        ca_file: Option<PathBuf>,
    },
    /// UDP echo.
    UdpEcho {
        /// `host:port`.
        target: String,
        /// Bytes sent and expected back (escapes decoded).
        payload: Vec<u8>,
    },
    /// CoAP ping.
    CoapPing {
        /// `host:port`.
        target: String,
    },
    /// ICMP echo.
    Icmp {
        /// Host name or address.
        host: String,
    },
    /// Send/expect script over TCP.
    Transaction {
        /// `host:port`.
        target: String,
        /// The steps.
        steps: Vec<StepConfig>,
    },
}

impl ProbeKindConfig {
    /// The target as shown in output: the resolver, URL, `host:port` or host.
    pub fn target(&self) -> &str {
        match self {
            ProbeKindConfig::Dns { resolver, .. } => resolver,
            ProbeKindConfig::Http { url, .. } => url,
            ProbeKindConfig::Tcp { target }
            | ProbeKindConfig::UdpEcho { target, .. }
            | ProbeKindConfig::CoapPing { target }
            | ProbeKindConfig::Transaction { target, .. } => target,
            ProbeKindConfig::Icmp { host } => host,
        }
    }
}

/// `[[probe]]`: common fields and the kind's fields (`kind = "..."` selects them).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawProbe")]
pub struct ProbeSection {
    /// Id, unique within this edge (1..=65535).
    pub id: u16,
    /// Interval between runs, ms (≥ 100).
    pub interval_ms: u32,
    /// Timeout of one run, ms (1..=interval_ms).
    pub timeout_ms: u32,
    /// What to run.
    pub kind: ProbeKindConfig,
}

impl ProbeSection {
    /// The transaction steps as the wire's `Step`s (empty for other kinds); hold them while
    /// the spec from [`ProbeSection::spec`] is used.
    pub fn steps(&self) -> Vec<Step<'_>> {
        match &self.kind {
            ProbeKindConfig::Transaction { steps, .. } => steps
                .iter()
                .map(|s| Step {
                    send: &s.send,
                    expect: &s.expect,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The probe specification, borrowing this section (and `steps` from
    /// [`ProbeSection::steps`]).
    pub fn spec<'a>(&'a self, steps: &'a [Step<'a>]) -> ProbeSpec<'a> {
        let kind = match &self.kind {
            ProbeKindConfig::Dns {
                resolver,
                name,
                qtype,
                expect,
            } => ProbeKind::Dns {
                resolver,
                name,
                qtype: (*qtype).into(),
                expect: expect.as_deref(),
            },
            ProbeKindConfig::Tcp { target } => ProbeKind::Tcp { target },
            ProbeKindConfig::Http {
                url,
                method,
                body,
                expect_status,
                expect_body,
                max_redirects,
                ..
            } => ProbeKind::Http {
                method: (*method).into(),
                url,
                body,
                expect_status: *expect_status,
                expect_body: expect_body.as_deref(),
                max_redirects: *max_redirects,
            },
            ProbeKindConfig::UdpEcho { target, payload } => ProbeKind::UdpEcho { target, payload },
            ProbeKindConfig::CoapPing { target } => ProbeKind::CoapPing { target },
            ProbeKindConfig::Icmp { host } => ProbeKind::Icmp { host },
            ProbeKindConfig::Transaction { target, .. } => ProbeKind::Transaction {
                target,
                steps: List::from_slice(steps),
            },
        };
        ProbeSpec {
            id: ProbeId(self.id),
            interval_ms: self.interval_ms,
            timeout_ms: self.timeout_ms,
            kind,
        }
    }

    /// Check what the types cannot (lengths, addresses, URLs); the message names the probe.
    pub fn validate(&self) -> Result<(), String> {
        let id = self.id;
        let field = |what: &str, len: usize| {
            if len > MAX_FIELD {
                Err(format!(
                    "probe {id}: {what} is longer than {MAX_FIELD} bytes"
                ))
            } else {
                Ok(())
            }
        };
        let host_port = |t: &str| {
            if split_host_port(t).is_none() {
                Err(format!("probe {id}: target {t:?} must be host:port"))
            } else {
                field("target", t.len())
            }
        };
        match &self.kind {
            ProbeKindConfig::Dns {
                resolver,
                name,
                expect,
                ..
            } => {
                if resolver_addr(resolver).is_none() {
                    return Err(format!(
                        "probe {id}: resolver {resolver:?} must be ip[:port]"
                    ));
                }
                let mut q = [0u8; qos_edge_core::probe::dns::MAX_QUERY];
                if qos_edge_core::probe::dns::build_query(&mut q, 0, name, DnsType::A).is_err() {
                    return Err(format!("probe {id}: {name:?} is not a valid DNS name"));
                }
                if let Some(e) = expect {
                    if e.parse::<std::net::IpAddr>().is_err() {
                        return Err(format!("probe {id}: expect {e:?} must be an IP address"));
                    }
                }
            }
            ProbeKindConfig::Tcp { target } | ProbeKindConfig::CoapPing { target } => {
                host_port(target)?
            }
            ProbeKindConfig::UdpEcho { target, payload } => {
                host_port(target)?;
                field("payload", payload.len())?;
                if payload.is_empty() {
                    return Err(format!("probe {id}: payload must not be empty"));
                }
            }
            ProbeKindConfig::Icmp { host } => {
                if host.is_empty() {
                    return Err(format!("probe {id}: host must not be empty"));
                }
                field("host", host.len())?;
            }
            ProbeKindConfig::Http {
                url,
                body,
                expect_body,
                ..
            } => {
                if qos_edge_core::probe::http::Url::parse(url).is_err() {
                    return Err(format!(
                        "probe {id}: url {url:?} must be http://host[:port]/path or https://..."
                    ));
                }
                field("url", url.len())?;
                field("body", body.len())?;
                field("expect_body", expect_body.as_ref().map_or(0, String::len))?;
            }
            ProbeKindConfig::Transaction { target, steps } => {
                host_port(target)?;
                if steps.is_empty() || steps.len() > usize::from(MAX_STEPS) {
                    return Err(format!("probe {id}: steps must number 1..={MAX_STEPS}"));
                }
                for s in steps {
                    field("step send", s.send.len())?;
                    field("step expect", s.expect.len())?;
                }
            }
        }
        let steps = self.steps();
        self.spec(&steps)
            .validate()
            .map_err(|e| format!("probe {id}: {}", e.reason()))
    }
}

/// Decode the escapes of byte strings in the configuration and on the command line:
/// `\r`, `\n`, `\t`, `\0`, `\\` and `\xNN` (any byte). Other text is taken as UTF-8.
/// (In TOML, write them in literal strings, `'PING\r\n'`, or let TOML's own escapes do it
/// in basic strings, `"PING\r\n"`; `\xNN` needs a literal string.)
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hi = it.next().and_then(|c| (c as char).to_digit(16));
                let lo = it.next().and_then(|c| (c as char).to_digit(16));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return Err(format!("{s:?}: \\x needs two hex digits")),
                }
            }
            Some(c) => return Err(format!("{s:?}: unknown escape \\{}", c as char)),
            None => return Err(format!("{s:?}: ends with a lone backslash")),
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    send: String,
    #[serde(default)]
    expect: String,
}

/// The `[[probe]]` table as written: `kind` selects the variant, unknown fields are errors.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawProbe {
    Dns {
        id: u16,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        resolver: String,
        name: String,
        #[serde(default)]
        qtype: QType,
        expect: Option<String>,
    },
    Tcp {
        id: u16,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        target: String,
    },
    Http {
        id: u16,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        url: String,
        #[serde(default)]
        method: Method,
        #[serde(default)]
        body: String,
        #[serde(default)]
        expect_status: u16,
        expect_body: Option<String>,
        #[serde(default = "default_redirects")]
        max_redirects: u8,
        ca_file: Option<PathBuf>,
    },
    UdpEcho {
        id: u16,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        target: String,
        #[serde(default = "default_payload")]
        payload: String,
    },
    CoapPing {
        id: u16,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        target: String,
    },
    Icmp {
        id: u16,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        host: String,
    },
    Transaction {
        id: u16,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        target: String,
        steps: Vec<RawStep>,
    },
}

impl TryFrom<RawProbe> for ProbeSection {
    type Error = String;
    fn try_from(r: RawProbe) -> Result<Self, String> {
        let section = |id, interval_ms, timeout_ms, kind| ProbeSection {
            id,
            interval_ms,
            timeout_ms,
            kind,
        };
        Ok(match r {
            RawProbe::Dns {
                id,
                interval_ms,
                timeout_ms,
                resolver,
                name,
                qtype,
                expect,
            } => section(
                id,
                interval_ms,
                timeout_ms,
                ProbeKindConfig::Dns {
                    resolver,
                    name,
                    qtype,
                    expect,
                },
            ),
            RawProbe::Tcp {
                id,
                interval_ms,
                timeout_ms,
                target,
            } => section(id, interval_ms, timeout_ms, ProbeKindConfig::Tcp { target }),
            RawProbe::Http {
                id,
                interval_ms,
                timeout_ms,
                url,
                method,
                body,
                expect_status,
                expect_body,
                max_redirects,
                ca_file,
            } => section(
                id,
                interval_ms,
                timeout_ms,
                ProbeKindConfig::Http {
                    url,
                    method,
                    body: unescape(&body)?,
                    expect_status,
                    expect_body,
                    max_redirects,
                    ca_file,
                },
            ),
            RawProbe::UdpEcho {
                id,
                interval_ms,
                timeout_ms,
                target,
                payload,
            } => section(
                id,
                interval_ms,
                timeout_ms,
                ProbeKindConfig::UdpEcho {
                    target,
                    payload: unescape(&payload)?,
                },
            ),
            RawProbe::CoapPing {
                id,
                interval_ms,
                timeout_ms,
                target,
            } => section(
                id,
                interval_ms,
                timeout_ms,
                ProbeKindConfig::CoapPing { target },
            ),
            RawProbe::Icmp {
                id,
                interval_ms,
                timeout_ms,
                host,
            } => section(id, interval_ms, timeout_ms, ProbeKindConfig::Icmp { host }),
            RawProbe::Transaction {
                id,
                interval_ms,
                timeout_ms,
                target,
                steps,
            } => section(
                id,
                interval_ms,
                timeout_ms,
                ProbeKindConfig::Transaction {
                    target,
                    steps: steps
                        .iter()
                        .map(|s| {
                            Ok(StepConfig {
                                send: unescape(&s.send)?,
                                expect: unescape(&s.expect)?,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                },
            ),
        })
    }
}

/// Default redirects followed.
pub fn default_redirects() -> u8 {
    5
}
/// Default UDP echo payload.
pub fn default_payload() -> String {
    "qos-edge echo".into()
}
/// Default interval, ms.
pub fn default_interval() -> u32 {
    10_000
}
/// Default timeout, ms.
pub fn default_timeout() -> u32 {
    2_000
}

/// Split `host:port` (`[v6]:port` too); `None` when there is no port or no host.
pub fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// A DNS resolver given as `ip` (port 53) or `ip:port`.
pub fn resolver_addr(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// Check a set of probes and rules together: each probe (ids unique and non-zero, interval and
/// timeout in range, kind-specific values) and each rule (naming an existing probe, valid
/// thresholds). The message names the probe or rule at fault.
pub fn validate_set(probes: &[ProbeSection], rules: &[RuleSection]) -> Result<(), String> {
    let mut ids = std::collections::BTreeSet::new();
    for p in probes {
        if p.id == 0 || !ids.insert(p.id) {
            return Err(format!(
                "probe id {}: ids must be unique and non-zero",
                p.id
            ));
        }
        if p.interval_ms < 100 || p.timeout_ms == 0 || p.timeout_ms > p.interval_ms {
            return Err(format!(
                "probe {}: need interval_ms >= 100 and 1 <= timeout_ms <= interval_ms",
                p.id
            ));
        }
        p.validate()?;
    }
    for r in rules {
        if !ids.contains(&r.probe) {
            return Err(format!("rule for probe {}: no such probe", r.probe));
        }
        r.rule()?;
    }
    Ok(())
}

/// A whole probe set in the edge's TOML format, as the centre keeps it for an edge:
/// `window_s` (optional, default 60) followed by `[[probe]]` and `[[rule]]` tables.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSet {
    /// Summary window, seconds (1..=65535).
    #[serde(default = "default_window")]
    pub window_s: u16,
    /// The probes (`[[probe]]` tables).
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeSection>,
    /// Local threshold rules (`[[rule]]` tables).
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSection>,
}

/// Default summary window, seconds.
pub fn default_window() -> u16 {
    60
}

/// A buffer that holds any `edge-config` (32 probes of the largest kind).
const MAX_EDGE_CONFIG: usize = 64 * 1024;

impl ProbeSet {
    /// Parse and check TOML `text`; the error is one line naming the value at fault.
    pub fn parse(text: &str) -> Result<ProbeSet, String> {
        let set: ProbeSet =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?;
        set.validate()?;
        Ok(set)
    }

    /// Check the values (see [`validate_set`]), the window and the wire's limits. Local
    /// options of an edge (`ca_file`) have no place in a set sent over the wire.
    pub fn validate(&self) -> Result<(), String> {
        if self.window_s == 0 {
            return Err("window_s must be at least 1".into());
        }
        if self.probes.len() > usize::from(qos_wire::config::MAX_PROBES) {
            return Err(format!(
                "{} probes: at most {} fit in one edge configuration",
                self.probes.len(),
                qos_wire::config::MAX_PROBES
            ));
        }
        if self.rules.len() > usize::from(qos_wire::config::MAX_RULES) {
            return Err(format!(
                "{} rules: at most {} fit in one edge configuration",
                self.rules.len(),
                qos_wire::config::MAX_RULES
            ));
        }
        for p in &self.probes {
            if let ProbeKindConfig::Http {
                ca_file: Some(f), ..
            } = &p.kind
            {
                return Err(format!(
                    "probe {}: ca_file {f:?} is a local option of an edge, not allowed here",
                    p.id
                ));
            }
        }
        validate_set(&self.probes, &self.rules)
    }

    /// Encode as the wire's `edge-config` with `etag` (call [`ProbeSet::validate`] first;
    /// errors only when the wire refuses a value).
    pub fn edge_config(&self, etag: u32) -> Result<Vec<u8>, String> {
        let steps: Vec<Vec<Step<'_>>> = self.probes.iter().map(ProbeSection::steps).collect();
        let specs: Vec<ProbeSpec<'_>> = self
            .probes
            .iter()
            .zip(&steps)
            .map(|(p, s)| p.spec(s))
            .collect();
        let rules = self
            .rules
            .iter()
            .map(|r| {
                Ok(RuleBinding {
                    probe: ProbeId(r.probe),
                    rule: r.rule()?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let cfg = EdgeConfig {
            etag,
            window_s: self.window_s,
            probes: List::from_slice(&specs),
            rules: List::from_slice(&rules),
        };
        cfg.validate().map_err(|e| e.reason().to_string())?;
        let mut buf = vec![0u8; MAX_EDGE_CONFIG];
        let n = cfg.encode(&mut buf).map_err(|e| e.reason().to_string())?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests;
