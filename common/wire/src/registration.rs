//! Registration of an edge with a directory (its broker), per the registration interface of the
//! CoRE Resource Directory (RFC 9176).
//!
//! The edge sends `POST /rd?ep=<name>&d=<region>&lt=<lifetime>&...` with a link-format payload
//! listing its resources ([`EDGE_LINKS`]). The answer's Location-Path names the registration
//! resource; the edge refreshes it with an empty `POST` before the lifetime ends and removes it
//! with `DELETE`. What RFC 9176 has no parameter for travels as extra endpoint attributes, which
//! a standard directory stores and ignores: `id` (numeric edge id used on the hot path), `fw`
//! (firmware version) and `pd` (probe-set digest, hex).

use core::fmt;

use crate::ids::EdgeId;

/// URI path of the registration resource of a directory (RFC 9176 §5.3 default).
pub const DIRECTORY_PATH: &str = "rd";
/// Resource type of a directory's registration interface.
pub const DIRECTORY_RT: &str = "core.rd";
/// Resources an edge offers, in link format (RFC 6690): its configuration state, the
/// on-demand probe resource and its recent raw results.
pub const EDGE_LINKS: &str = "</c>;rt=\"qos.config\",</p>;rt=\"qos.probe\",</r>;rt=\"qos.results\"";
/// URI path of an edge's configuration resource (`</c>`).
pub const CONFIG_PATH: &str = "c";
/// URI path of an edge's on-demand probe resource (`</p>`): `POST` a CBOR `probe-spec`, get
/// the `probe-result` of one run.
pub const PROBE_PATH: &str = "p";
/// URI path of an edge's recent raw results (`</r>`): `GET`, optionally `?p=<probe id>`, gives
/// `recent-results`.
pub const RESULTS_PATH: &str = "r";
/// Shortest lifetime accepted, seconds (RFC 9176: `lt` ≥ 60).
pub const MIN_LIFETIME: u32 = 60;
/// Default lifetime, seconds (RFC 9176 default 90000; edges use a short one so the registry
/// knows within minutes that an edge is gone).
pub const DEFAULT_LIFETIME: u32 = 300;
/// Longest endpoint name or sector (RFC 9176: 63 bytes).
pub const MAX_NAME: usize = 63;

/// The registration of one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Registration<'a> {
    /// Endpoint name (`ep`): the edge's name, unique in its sector.
    pub ep: &'a str,
    /// Sector (`d`): the region.
    pub d: &'a str,
    /// Lifetime in seconds (`lt`).
    pub lt: u32,
    /// Numeric edge id used in batches (`id`).
    pub id: EdgeId,
    /// Firmware or binary version (`fw`).
    pub fw: &'a str,
    /// Digest of the probe set in force (`pd`).
    pub pd: u32,
}

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RegistrationError {
    /// A required parameter is missing (its name).
    Missing(&'static str),
    /// A parameter has a bad value (its name).
    Invalid(&'static str),
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrationError::Missing(p) => write!(f, "missing registration parameter `{p}`"),
            RegistrationError::Invalid(p) => write!(f, "invalid registration parameter `{p}`"),
        }
    }
}

/// One `key=value` Uri-Query option of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryParam<'a> {
    /// A text value.
    Text(&'static str, &'a str),
    /// A decimal value.
    Number(&'static str, u32),
    /// A hexadecimal value.
    Hex(&'static str, u32),
}

impl fmt::Display for QueryParam<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryParam::Text(k, v) => write!(f, "{k}={v}"),
            QueryParam::Number(k, v) => write!(f, "{k}={v}"),
            QueryParam::Hex(k, v) => write!(f, "{k}={v:08x}"),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl<'a> Registration<'a> {
    /// The Uri-Query options to send, in order.
    pub fn query(&self) -> [QueryParam<'a>; 6] {
        [
            QueryParam::Text("ep", self.ep),
            QueryParam::Text("d", self.d),
            QueryParam::Number("lt", self.lt),
            QueryParam::Number("id", self.id.0),
            QueryParam::Text("fw", self.fw),
            QueryParam::Hex("pd", self.pd),
        ]
    }

    /// Parse the Uri-Query options of a registration request. Unknown parameters are ignored
    /// (RFC 9176 allows any endpoint attribute); `ep`, `d` and `id` are required; `lt`
    /// defaults to [`DEFAULT_LIFETIME`].
    pub fn from_query<I>(options: I) -> Result<Self, RegistrationError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let (mut ep, mut d, mut id, mut lt, mut fw, mut pd) = (None, None, None, None, "", 0);
        for opt in options {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            match k {
                "ep" => ep = Some(v),
                "d" => d = Some(v),
                "lt" => {
                    lt = Some(
                        v.parse::<u32>()
                            .map_err(|_| RegistrationError::Invalid("lt"))?,
                    )
                }
                "id" => {
                    id = Some(
                        v.parse::<u32>()
                            .map_err(|_| RegistrationError::Invalid("id"))?,
                    )
                }
                "fw" => fw = v,
                "pd" => {
                    pd = u32::from_str_radix(v, 16).map_err(|_| RegistrationError::Invalid("pd"))?
                }
                _ => {}
            }
        }
        let ep = ep.ok_or(RegistrationError::Missing("ep"))?;
        let d = d.ok_or(RegistrationError::Missing("d"))?;
        let id = EdgeId(id.ok_or(RegistrationError::Missing("id"))?);
        let lt = lt.unwrap_or(DEFAULT_LIFETIME);
        if !valid_name(ep) {
            return Err(RegistrationError::Invalid("ep"));
        }
        if !valid_name(d) {
            return Err(RegistrationError::Invalid("d"));
        }
        if lt < MIN_LIFETIME {
            return Err(RegistrationError::Invalid("lt"));
        }
        if fw.len() > MAX_NAME {
            return Err(RegistrationError::Invalid("fw"));
        }
        Ok(Registration {
            ep,
            d,
            lt,
            id,
            fw,
            pd,
        })
    }
}
