//! Compile-time settings, from environment variables read when the firmware is built (QEMU has
//! no storage to hold a configuration file, and no clock).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `QOS_EDGE_ID` | 101 | edge id |
//! | `QOS_PROBE_PORT` | 18080 | TCP port probed on 10.0.2.2 (the host's 127.0.0.1) |
//! | `QOS_COAP_PORT` | 15683 | CoAP port of the super-manager on 10.0.2.2 |
//! | `QOS_RUN_SECS` | 20 | run this long, then exit QEMU |
//! | `QOS_ACK_TARGET` | 0 | exit as soon as this many summaries are acknowledged (0: run the full time) |
//! | `QOS_EPOCH` | build time (Unix s) | boot epoch: the high half of every sequence number |
//! | `QOS_UNIX_BASE` | build time (Unix s) | Unix time at power-on; uptime is added |
//! | `QOS_OSCORE_SECRET` | a test secret | feature `oscore`: the master secret (its bytes as given, at least 16) |
//! | `QOS_OSCORE_SALT` | empty | feature `oscore`: the master salt (bytes as given) |
//! | `QOS_OSCORE_KID` | `q` | feature `oscore`: the edge's sender id (bytes as given, at most 7) |
//! | `QOS_OSCORE_SERVE_ID` | `s` | feature `oscore`: the super-manager's sender id |
//!
//! With feature `oscore` the sender sequence numbers are `epoch << 8 | counter` (the epoch
//! being Unix seconds, below 2^32): 256 protected requests per boot.
//!
//! A real board persists its boot epoch and advances it at every boot
//! (`qos_edge_core::storage::next_boot`); QEMU's machine has no persistent storage, so the epoch
//! comes from the build, and two boots of the same image reuse it (the super-manager then counts
//! the second run's records as duplicates). Build once per run, as run-test.sh does.

use embassy_net::{IpEndpoint, Ipv4Address};
use qos_edge_embassy::config::parse_u32 as parse;
use qos_edge_embassy::{ProbeTarget, Settings};

/// The host as seen from QEMU's user network; the only address the firmware talks to.
pub const HOST: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Edge id.
pub const EDGE_ID: u32 = parse(option_env!("QOS_EDGE_ID"), 101);
/// Probed TCP port on [`HOST`].
pub const PROBE_PORT: u16 = parse(option_env!("QOS_PROBE_PORT"), 18080) as u16;
/// CoAP port of the super-manager on [`HOST`].
pub const COAP_PORT: u16 = parse(option_env!("QOS_COAP_PORT"), 15683) as u16;
/// Run time before exiting QEMU, s.
pub const RUN_SECS: u32 = parse(option_env!("QOS_RUN_SECS"), 20);
/// Exit once this many summaries are acknowledged (`QOS_ACK_TARGET`; 0 or unset: never early).
pub const ACK_TARGET: Option<u64> = match parse(option_env!("QOS_ACK_TARGET"), 0) {
    0 => None,
    n => Some(n as u64),
};
/// Boot epoch.
pub const EPOCH: u32 = parse(Some(env!("QOS_BUILD_EPOCH")), 0);
/// Unix time at power-on, s.
pub const UNIX_BASE: u32 = parse(Some(env!("QOS_BUILD_UNIX_BASE")), 0);

/// The settings of the edge application; `seed` mixes in the boot time.
pub fn settings(seed: u64) -> Settings {
    let mut s = Settings::new(
        EDGE_ID,
        EPOCH,
        u64::from(UNIX_BASE) * 1_000,
        IpEndpoint::new(HOST.into(), COAP_PORT),
        ProbeTarget::TcpConnect(IpEndpoint::new(HOST.into(), PROBE_PORT)),
    );
    s.seed = seed;
    s.run_for_ms = Some(u64::from(RUN_SECS) * 1_000);
    s.ack_target = ACK_TARGET;
    #[cfg(feature = "oscore")]
    {
        s.oscore = Some(qos_edge_embassy::OscoreKeys {
            secret: option_env!("QOS_OSCORE_SECRET")
                .unwrap_or("qemu-test-secret-not-for-use")
                .as_bytes(),
            salt: option_env!("QOS_OSCORE_SALT").unwrap_or("").as_bytes(),
            kid: option_env!("QOS_OSCORE_KID").unwrap_or("q").as_bytes(),
            serve_id: option_env!("QOS_OSCORE_SERVE_ID")
                .unwrap_or("s")
                .as_bytes(),
            counter_bits: 8,
        });
    }
    s
}
