//! What a board passes to [`run`](crate::run): who the edge is, whom it talks to, what it probes,
//! how often, and how its uptime maps to Unix time.

use embassy_net::IpEndpoint;
use qos_wire::threshold::ThresholdRule;

/// The one probe of the edge and its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProbeTarget {
    /// TCP connect to the endpoint, timed in µs (phases `connect` and `total`); the connection
    /// is aborted (RST) at once.
    TcpConnect(IpEndpoint),
    /// CoAP ping (RFC 7252 §4.3) of the endpoint: an empty CON answered by an RST, timed in µs
    /// (phases `connect` and `total`). Needs only UDP.
    CoapPing(IpEndpoint),
}

/// The edge's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Settings {
    /// Edge id.
    pub edge_id: u32,
    /// Boot epoch: the high half of every sequence number. Must grow at every boot (a board
    /// with flash persists it, see `qos_edge_core::storage::next_boot`; others take it from
    /// the build or the host).
    pub epoch: u32,
    /// Unix time in ms at embassy-time's `Instant` zero (power-on): window times are this plus
    /// the uptime. A board with a real-time clock or SNTP computes it before calling
    /// [`run`](crate::run); the others use the build time or the host's clock.
    pub unix_base_ms: u64,
    /// Seed of the randomised choices (CoAP message ids and tokens, probe jitter).
    pub seed: u64,
    /// The super-manager's (or broker's) CoAP endpoint.
    pub broker: IpEndpoint,
    /// Local UDP port of the uplink; a [`ProbeTarget::CoapPing`] probe uses the next one.
    pub local_port: u16,
    /// The probe.
    pub probe: ProbeTarget,
    /// Probe interval, ms.
    pub probe_interval_ms: u32,
    /// A probe without an answer after this long fails with `timeout`, ms.
    pub probe_timeout_ms: u32,
    /// Summary window length, s.
    pub window_s: u16,
    /// An optional local threshold rule on the probe: its crossings become events (sent before
    /// summaries) and a call of [`Hooks::on_event`](crate::Hooks::on_event).
    pub threshold: Option<ThresholdRule>,
    /// Stop and return the [`Report`](crate::Report) after this much uptime, ms (`None`: never).
    pub run_for_ms: Option<u64>,
    /// Stop and return once this many records are acknowledged (`None`: never).
    pub ack_target: Option<u64>,
    /// Endpoint name for the registration with the broker (RFC 9176 `ep`): letters, digits,
    /// `-`, `_`, `.`; unique in the region.
    pub name: &'static str,
    /// Region (RFC 9176 sector `d`), same characters.
    pub region: &'static str,
    /// Registration lifetime, s (≥ 60); refreshed at half of it.
    pub lifetime_s: u32,
    /// Poll the centre's configuration (`GET /c`) every this many s, and after each
    /// registration; 0 disables the poll.
    pub config_poll_s: u32,
    /// OSCORE (RFC 8613) with the super-manager (feature `oscore`); `None`: plaintext.
    #[cfg(feature = "oscore")]
    pub oscore: Option<OscoreKeys>,
}

/// The OSCORE credentials of an edge (what `qos-aggregator provision` creates). Its `Debug`
/// and `defmt::Format` show the ids only, never the secret.
#[cfg(feature = "oscore")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OscoreKeys {
    /// Master secret (16 to 64 bytes).
    pub secret: &'static [u8],
    /// Master salt (may be empty).
    pub salt: &'static [u8],
    /// The edge's sender id (its key id), at most 7 bytes.
    pub kid: &'static [u8],
    /// The super-manager's sender id, at most 7 bytes.
    pub serve_id: &'static [u8],
    /// Bits of the per-boot counter in the sender sequence number `epoch << bits | counter`
    /// (`epoch << bits` below 2^40): 24 for epochs counted from 1, 8 for epochs in Unix
    /// seconds.
    pub counter_bits: u32,
}

#[cfg(feature = "oscore")]
impl core::fmt::Debug for OscoreKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OscoreKeys")
            .field("kid", &self.kid)
            .field("serve_id", &self.serve_id)
            .finish_non_exhaustive()
    }
}

#[cfg(all(feature = "oscore", feature = "defmt"))]
impl defmt::Format for OscoreKeys {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "OscoreKeys {{ kid: {=[u8]:x}, .. }}", self.kid);
    }
}

impl Settings {
    /// Settings with the usual intervals (probe every 200 ms, 1 s timeout, 1 s windows, local
    /// port 5683, no threshold, no end).
    pub const fn new(
        edge_id: u32,
        epoch: u32,
        unix_base_ms: u64,
        broker: IpEndpoint,
        probe: ProbeTarget,
    ) -> Self {
        Settings {
            edge_id,
            epoch,
            unix_base_ms,
            seed: ((edge_id as u64) << 32) ^ epoch as u64,
            broker,
            local_port: 5683,
            probe,
            probe_interval_ms: 200,
            probe_timeout_ms: 1_000,
            window_s: 1,
            threshold: None,
            run_for_ms: None,
            ack_target: None,
            name: "qos-edge",
            region: "default",
            lifetime_s: qos_wire::registration::DEFAULT_LIFETIME,
            config_poll_s: 60,
            #[cfg(feature = "oscore")]
            oscore: None,
        }
    }
}

/// Parse a decimal `u32` at compile time, for settings taken from environment variables
/// (`option_env!`): `None` gives `default`; anything but digits (or a value above `u32::MAX`)
/// stops the build.
pub const fn parse_u32(v: Option<&str>, default: u32) -> u32 {
    let Some(s) = v else { return default };
    let b = s.as_bytes();
    assert!(!b.is_empty(), "empty numeric setting");
    let mut n: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "numeric setting expected");
        n = n * 10 + (b[i] - b'0') as u64;
        assert!(n <= u32::MAX as u64, "setting out of range");
        i += 1;
    }
    n as u32
}

/// Parse a dotted IPv4 address (`a.b.c.d`) at compile time; `None` gives `default`. Anything
/// else stops the build.
pub const fn parse_ipv4(v: Option<&str>, default: [u8; 4]) -> [u8; 4] {
    let Some(s) = v else { return default };
    let b = s.as_bytes();
    let mut out = [0u8; 4];
    let mut part = 0;
    let mut n: u32 = 0;
    let mut digits = 0;
    let mut i = 0;
    while i <= b.len() {
        if i == b.len() || b[i] == b'.' {
            assert!(digits > 0 && part < 4, "IPv4 address a.b.c.d expected");
            out[part] = n as u8;
            part += 1;
            n = 0;
            digits = 0;
        } else {
            assert!(b[i].is_ascii_digit(), "IPv4 address a.b.c.d expected");
            n = n * 10 + (b[i] - b'0') as u32;
            digits += 1;
            assert!(n <= 255 && digits <= 3, "IPv4 address part above 255");
        }
        i += 1;
    }
    assert!(part == 4, "IPv4 address a.b.c.d expected");
    out
}

/// Parse `a.b.c.d:port` at run time (a probe target of a central configuration); the boards
/// have no resolver, so names are refused.
pub fn parse_endpoint(s: &str) -> Option<IpEndpoint> {
    // Hand-rolled (no `str::parse`): a few hundred bytes less firmware.
    fn number(s: &str, max: u32) -> Option<u32> {
        if s.is_empty() || s.len() > 5 {
            return None;
        }
        let mut n = 0u32;
        for b in s.bytes() {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(b - b'0');
        }
        (n <= max).then_some(n)
    }
    let (host, port) = s.rsplit_once(':')?;
    let port = number(port, 65_535)? as u16;
    let mut out = [0u8; 4];
    let mut parts = host.split('.');
    for b in &mut out {
        *b = number(parts.next()?, 255)? as u8;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpEndpoint::new(
        embassy_net::Ipv4Address::new(out[0], out[1], out[2], out[3]).into(),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_addresses_parse() {
        assert_eq!(parse_u32(None, 7), 7);
        assert_eq!(parse_u32(Some("4294967295"), 7), u32::MAX);
        assert_eq!(parse_ipv4(None, [1, 2, 3, 4]), [1, 2, 3, 4]);
        assert_eq!(parse_ipv4(Some("192.168.0.10"), [0; 4]), [192, 168, 0, 10]);
        const AT_BUILD: [u8; 4] = parse_ipv4(Some("10.0.2.2"), [0; 4]);
        assert_eq!(AT_BUILD, [10, 0, 2, 2]);
    }

    #[test]
    fn endpoints_parse_at_run_time() {
        let e = parse_endpoint("10.0.2.2:8080").unwrap();
        assert_eq!(e.port, 8080);
        for bad in [
            "10.0.2:80",
            "10.0.2.2",
            "10.0.2.256:80",
            "host:80",
            "1.2.3.4.5:1",
        ] {
            assert!(parse_endpoint(bad).is_none(), "{bad}");
        }
    }

    #[test]
    #[should_panic]
    fn short_address_is_refused() {
        let _ = parse_ipv4(Some("10.0.2"), [0; 4]);
    }

    #[test]
    #[should_panic]
    fn big_part_is_refused() {
        let _ = parse_ipv4(Some("10.0.2.256"), [0; 4]);
    }
}
