//! Probe specifications: what an edge measures, how often, and what counts as success.
//!
//! Strings and byte strings are borrowed from the received configuration (zero-copy); targets
//! are `host:port` (or a URL for HTTP), resolved by the edge's driver.

use minicbor::decode::Decoder;

use crate::codec::{self, Element, List, SliceEncoder, WireError};
use crate::ids::ProbeId;
use crate::outcome::opt;

/// Most steps in one client/server transaction.
pub const MAX_STEPS: u16 = 16;
/// Longest string or byte string in a probe specification.
pub const MAX_FIELD: usize = 512;

/// DNS record type a DNS probe asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DnsType {
    /// IPv4 address (type 1).
    A,
    /// IPv6 address (type 28).
    Aaaa,
}

impl DnsType {
    /// The RFC 1035 QTYPE value.
    pub fn qtype(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Aaaa => 28,
        }
    }
    fn from_qtype(v: u16) -> Option<Self> {
        match v {
            1 => Some(DnsType::A),
            28 => Some(DnsType::Aaaa),
            _ => None,
        }
    }
}

/// HTTP request method of an HTTP probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
#[non_exhaustive]
pub enum HttpMethod {
    /// GET.
    Get = 0,
    /// HEAD.
    Head = 1,
    /// POST with the probe's body (the upload phase).
    Post = 2,
}

impl HttpMethod {
    /// The method token.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(HttpMethod::Get),
            1 => Some(HttpMethod::Head),
            2 => Some(HttpMethod::Post),
            _ => None,
        }
    }
}

/// One step of a client/server transaction: send bytes, then expect the answer to start with
/// `expect` (empty: any answer, or none when `expect` is empty and nothing is sent back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Step<'a> {
    /// Bytes to send (may be empty: just read).
    pub send: &'a [u8],
    /// Expected prefix of the answer.
    pub expect: &'a [u8],
}

/// What a probe does. Wire: `[kind, ...params]` (CDDL `probe-kind`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ProbeKind<'a> {
    /// Ask `resolver` (`ip:port`) over UDP for `name`; if `expect` is given, an answer must
    /// contain that address.
    Dns {
        /// Resolver address, `ip:port`.
        resolver: &'a str,
        /// Name to look up.
        name: &'a str,
        /// Record type.
        qtype: DnsType,
        /// Address the answer must contain.
        expect: Option<&'a str>,
    },
    /// Open a TCP connection to `target` (`host:port`) and close it.
    Tcp {
        /// `host:port`.
        target: &'a str,
    },
    /// HTTP/1.1 (or HTTPS on hosts with TLS) request to `url`.
    Http {
        /// Method.
        method: HttpMethod,
        /// `http://host[:port]/path` or `https://...`.
        url: &'a str,
        /// Request body (POST): its sending time is the upload phase.
        body: &'a [u8],
        /// Expected status; 0 accepts any 2xx.
        expect_status: u16,
        /// A string the body must contain.
        expect_body: Option<&'a str>,
        /// Redirects to follow at most.
        max_redirects: u8,
    },
    /// Send `payload` to a UDP echo service at `target` and expect it back.
    UdpEcho {
        /// `host:port`.
        target: &'a str,
        /// Bytes to echo.
        payload: &'a [u8],
    },
    /// CoAP ping (an empty CON, answered by RST) to `target`.
    CoapPing {
        /// `host:port`.
        target: &'a str,
    },
    /// ICMP echo to `host`.
    Icmp {
        /// Host name or address.
        host: &'a str,
    },
    /// A send/expect script over TCP for non-web applications (e.g. Redis `PING` → `+PONG`).
    Transaction {
        /// `host:port`.
        target: &'a str,
        /// The steps, each timed.
        steps: List<'a, Step<'a>>,
    },
}

impl ProbeKind<'_> {
    /// Wire code of the kind.
    pub fn code(&self) -> u8 {
        match self {
            ProbeKind::Dns { .. } => 0,
            ProbeKind::Tcp { .. } => 1,
            ProbeKind::Http { .. } => 2,
            ProbeKind::UdpEcho { .. } => 3,
            ProbeKind::CoapPing { .. } => 4,
            ProbeKind::Icmp { .. } => 5,
            ProbeKind::Transaction { .. } => 6,
        }
    }

    /// Lower-case name (`dns`, `tcp`, `http`, `udp_echo`, `coap_ping`, `icmp`, `transaction`).
    pub fn name(&self) -> &'static str {
        KIND_NAMES[usize::from(self.code())]
    }
}

/// Names of the probe kinds by wire code.
pub const KIND_NAMES: [&str; 7] = [
    "dns",
    "tcp",
    "http",
    "udp_echo",
    "coap_ping",
    "icmp",
    "transaction",
];

/// One probe of an edge. Wire (CDDL `probe-spec`): `[id, interval_ms, timeout_ms, kind, ...]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSpec<'a> {
    /// Identity within the edge.
    pub id: ProbeId,
    /// Interval between runs, ms (≥ 100).
    pub interval_ms: u32,
    /// Timeout of one run, ms (≥ 1, ≤ interval).
    pub timeout_ms: u32,
    /// What to do.
    pub kind: ProbeKind<'a>,
}

impl<'a> ProbeSpec<'a> {
    /// Check ranges that the types cannot express.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.interval_ms < 100 {
            return Err(WireError::Invalid("interval_ms below 100"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return Err(WireError::Invalid("timeout_ms must be 1..=interval_ms"));
        }
        if let ProbeKind::Http { url, .. } = self.kind {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(WireError::Invalid(
                    "url must start with http:// or https://",
                ));
            }
        }
        Ok(())
    }

    /// Encode as CDDL `probe-spec`.
    pub fn encode(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        let params: u64 = match self.kind {
            ProbeKind::Dns { .. } => 4,
            ProbeKind::Tcp { .. } | ProbeKind::CoapPing { .. } | ProbeKind::Icmp { .. } => 1,
            ProbeKind::Http { .. } => 6,
            ProbeKind::UdpEcho { .. } | ProbeKind::Transaction { .. } => 2,
        };
        e.array(4 + params)?;
        e.u16(self.id.0)?
            .u32(self.interval_ms)?
            .u32(self.timeout_ms)?
            .u8(self.kind.code())?;
        match self.kind {
            ProbeKind::Dns {
                resolver,
                name,
                qtype,
                expect,
            } => {
                e.str(resolver)?.str(name)?.u16(qtype.qtype())?;
                opt_str(e, expect)?;
            }
            ProbeKind::Tcp { target } | ProbeKind::CoapPing { target } => {
                e.str(target)?;
            }
            ProbeKind::Icmp { host } => {
                e.str(host)?;
            }
            ProbeKind::Http {
                method,
                url,
                body,
                expect_status,
                expect_body,
                max_redirects,
            } => {
                e.u8(method as u8)?
                    .str(url)?
                    .bytes(body)?
                    .u16(expect_status)?;
                opt_str(e, expect_body)?;
                e.u8(max_redirects)?;
            }
            ProbeKind::UdpEcho { target, payload } => {
                e.str(target)?.bytes(payload)?;
            }
            ProbeKind::Transaction { target, steps } => {
                e.str(target)?;
                steps.encode(e)?;
            }
        }
        Ok(())
    }

    /// Decode and validate CDDL `probe-spec`.
    pub fn decode(d: &mut Decoder<'a>) -> Result<Self, WireError> {
        let n = codec::array(d, 5, 10)?;
        let id = ProbeId(d.u16()?);
        let interval_ms = d.u32()?;
        let timeout_ms = d.u32()?;
        let code = d.u8()?;
        let (params, kind) = match code {
            0 => {
                let resolver = text(d)?;
                let name = text(d)?;
                let qtype = DnsType::from_qtype(d.u16()?).ok_or(WireError::Invalid("qtype"))?;
                let expect = opt(d, text)?;
                (
                    4,
                    ProbeKind::Dns {
                        resolver,
                        name,
                        qtype,
                        expect,
                    },
                )
            }
            1 => (1, ProbeKind::Tcp { target: text(d)? }),
            2 => {
                let method = HttpMethod::from_u8(d.u8()?).ok_or(WireError::Invalid("method"))?;
                let url = text(d)?;
                let body = blob(d)?;
                let expect_status = d.u16()?;
                let expect_body = opt(d, text)?;
                let max_redirects = d.u8()?;
                (
                    6,
                    ProbeKind::Http {
                        method,
                        url,
                        body,
                        expect_status,
                        expect_body,
                        max_redirects,
                    },
                )
            }
            3 => (
                2,
                ProbeKind::UdpEcho {
                    target: text(d)?,
                    payload: blob(d)?,
                },
            ),
            4 => (1, ProbeKind::CoapPing { target: text(d)? }),
            5 => (1, ProbeKind::Icmp { host: text(d)? }),
            6 => {
                let target = text(d)?;
                let steps = List::decode(d, MAX_STEPS)?;
                (2, ProbeKind::Transaction { target, steps })
            }
            _ => return Err(WireError::Invalid("probe kind")),
        };
        if n != 4 + params {
            return Err(WireError::Malformed);
        }
        let spec = ProbeSpec {
            id,
            interval_ms,
            timeout_ms,
            kind,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl<'a> Element<'a> for Step<'a> {
    fn decode_element(d: &mut Decoder<'a>) -> Result<Self, WireError> {
        codec::array(d, 2, 2)?;
        Ok(Step {
            send: blob(d)?,
            expect: blob(d)?,
        })
    }
    fn encode_element(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        e.array(2)?.bytes(self.send)?.bytes(self.expect)?;
        Ok(())
    }
}

fn text<'a>(d: &mut Decoder<'a>) -> Result<&'a str, WireError> {
    let s = d.str()?;
    if s.len() > MAX_FIELD {
        return Err(WireError::Invalid("string too long"));
    }
    Ok(s)
}

fn blob<'a>(d: &mut Decoder<'a>) -> Result<&'a [u8], WireError> {
    let b = d.bytes()?;
    if b.len() > MAX_FIELD {
        return Err(WireError::Invalid("byte string too long"));
    }
    Ok(b)
}

fn opt_str(e: &mut SliceEncoder<'_>, s: Option<&str>) -> Result<(), WireError> {
    match s {
        Some(s) => e.str(s)?,
        None => e.null()?,
    };
    Ok(())
}
