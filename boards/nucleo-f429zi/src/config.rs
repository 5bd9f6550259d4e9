//! Compile-time settings, from environment variables read when the firmware is built. The
//! addresses are the user's network; the defaults suit a LAN 192.168.1.0/24 with the
//! super-manager on 192.168.1.10.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `QOS_EDGE_ID` | 301 | edge id |
//! | `QOS_BROKER_ADDR` | 192.168.1.10 | IPv4 address of the super-manager (or broker) |
//! | `QOS_COAP_PORT` | 5683 | its CoAP port |
//! | `QOS_PROBE` | `tcp` | `tcp`: TCP connect to the probe target; `coap-ping`: CoAP ping of it |
//! | `QOS_PROBE_ADDR` | `QOS_BROKER_ADDR` | IPv4 address of the probe target |
//! | `QOS_PROBE_PORT` | 80 (`tcp`), `QOS_COAP_PORT` (`coap-ping`) | its port |
//! | `QOS_PROBE_INTERVAL_MS` | 1000 | probe interval |
//! | `QOS_WINDOW_S` | 10 | summary window |
//! | `QOS_RAISE_MS` | 0 | a threshold: raise when 3 of 5 probes are slower than this or fail (0: availability only) |
//! | `QOS_EPOCH` | build time (Unix s) | lowest boot epoch (the high half of every sequence number) |
//! | `QOS_EDGE_NAME` | `nucleo` | registration name (RFC 9176 `ep`), unique in the region |
//! | `QOS_REGION` | `default` | region (RFC 9176 sector `d`) |
//! | `QOS_UNIX_BASE` | build time (Unix s) | Unix time at power-on; uptime is added |
//!
//! The boot epoch is persisted in flash (`src/flash.rs`) and advances at every boot, never below
//! `QOS_EPOCH`. The board has no battery-backed clock in use: window times come from the build
//! time plus the uptime and drift from the wall clock by the time between build and boot.

use embassy_net::{IpEndpoint, Ipv4Address};
use qos_edge_embassy::config::{parse_ipv4, parse_u32 as parse};
use qos_edge_embassy::{ProbeTarget, Settings};
use qos_wire::phase::Phase;
use qos_wire::threshold::{Metric, ThresholdRule};

const fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn ip(a: [u8; 4]) -> Ipv4Address {
    Ipv4Address::new(a[0], a[1], a[2], a[3])
}

/// Edge id.
pub const EDGE_ID: u32 = parse(option_env!("QOS_EDGE_ID"), 301);
const BROKER_OCTETS: [u8; 4] = parse_ipv4(option_env!("QOS_BROKER_ADDR"), [192, 168, 1, 10]);
/// The super-manager's address.
pub const BROKER_ADDR: Ipv4Address = ip(BROKER_OCTETS);
/// Its CoAP port.
pub const COAP_PORT: u16 = parse(option_env!("QOS_COAP_PORT"), 5683) as u16;
/// Whether the probe is a CoAP ping (else a TCP connect).
pub const PROBE_PING: bool = match option_env!("QOS_PROBE") {
    None => false,
    Some(k) if eq(k, "tcp") => false,
    Some(k) if eq(k, "coap-ping") => true,
    Some(_) => panic!("QOS_PROBE: `tcp` or `coap-ping`"),
};
/// The probe target's address.
pub const PROBE_ADDR: Ipv4Address = ip(parse_ipv4(option_env!("QOS_PROBE_ADDR"), BROKER_OCTETS));
/// The probe target's port.
pub const PROBE_PORT: u16 = parse(
    option_env!("QOS_PROBE_PORT"),
    if PROBE_PING { COAP_PORT as u32 } else { 80 },
) as u16;
/// Probe interval, ms.
pub const PROBE_INTERVAL_MS: u32 = parse(option_env!("QOS_PROBE_INTERVAL_MS"), 1_000);
/// Summary window, s.
pub const WINDOW_S: u16 = parse(option_env!("QOS_WINDOW_S"), 10) as u16;
/// Latency threshold, ms (0: the rule watches availability).
pub const RAISE_MS: u32 = parse(option_env!("QOS_RAISE_MS"), 0);
/// Boot epoch.
pub const EPOCH: u32 = parse(Some(env!("QOS_BUILD_EPOCH")), 0);
/// Unix time at power-on, s.
pub const UNIX_BASE: u32 = parse(Some(env!("QOS_BUILD_UNIX_BASE")), 0);

/// The settings of the edge application.
pub fn settings(seed: u64) -> Settings {
    let to = IpEndpoint::new(PROBE_ADDR.into(), PROBE_PORT);
    let probe = if PROBE_PING {
        ProbeTarget::CoapPing(to)
    } else {
        ProbeTarget::TcpConnect(to)
    };
    let mut s = Settings::new(
        EDGE_ID,
        EPOCH,
        u64::from(UNIX_BASE) * 1_000,
        IpEndpoint::new(BROKER_ADDR.into(), COAP_PORT),
        probe,
    );
    s.seed = seed;
    s.name = match option_env!("QOS_EDGE_NAME") {
        Some(n) => n,
        None => "nucleo",
    };
    s.region = match option_env!("QOS_REGION") {
        Some(r) => r,
        None => "default",
    };
    s.probe_interval_ms = PROBE_INTERVAL_MS;
    s.window_s = WINDOW_S;
    // Raised (red LED) when 3 of the last 5 probes failed (or were slower than QOS_RAISE_MS);
    // cleared when 3 of the last 5 were good.
    s.threshold = Some(if RAISE_MS == 0 {
        ThresholdRule {
            metric: Metric::Availability,
            raise: 0,
            clear: 0,
            k: 3,
            n: 5,
        }
    } else {
        ThresholdRule {
            metric: Metric::Phase(Phase::Total),
            raise: RAISE_MS * 1_000,
            clear: RAISE_MS * 1_000,
            k: 3,
            n: 5,
        }
    });
    s
}
