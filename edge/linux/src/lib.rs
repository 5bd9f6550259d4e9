//! The parts of the Linux sub-manager that the super-manager runs too (it embeds the
//! sub-manager's role, `qos-aggregator serve`'s `[[probe]]` sections): the probe runners over
//! std sockets and rustls ([`probe`]) and the probe set in force with its scheduled runs
//! ([`active`]). The `qos-edge` binary adds the uplink, the centre conversation, host metrics
//! and files around them; the protocol logic (scheduler, thresholds, summariser, outbox) is
//! `qos-edge-core`'s.
// The one unsafe call of the package (statvfs) is in the binary's host metrics.
#![deny(unsafe_code)]

pub mod active;
pub mod probe;
