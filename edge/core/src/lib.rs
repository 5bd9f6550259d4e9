//! The sub-manager (edge) state machine: no_std, no allocation, no clock, no sockets.
//!
//! - [`outbox`]: the fixed-capacity store-and-forward queue with sequence numbers, cumulative
//!   acknowledgement and the stated loss rules.
//! - [`uplink`]: CON exchanges carrying batches from the outbox to a broker, with failover.
//! - [`summariser`]: window summaries of probe results.
//! - [`scheduler`]: when each probe runs (grid without drift, confirmation runs, concurrency).
//! - [`thresholds`]: local threshold rules turning results into events at once.
//! - [`recent`]: the last raw results, kept for drill-down.
//! - [`downlink`]: the requests an edge serves (on-demand probes, recent results, discovery).
//! - [`centre`]: the control conversation with the broker: registration with a lease
//!   ([`registration`]), configuration poll with ETag, configuration reports.
//! - `oscore` (feature `oscore`): OSCORE (RFC 8613) on the uplink, end to end to the
//!   super-manager.
//! - [`flashlog`]: [`storage::Storage`] over two pages of NOR flash (an append-only record log
//!   with CRC, newest-wins, torn-write safe compaction), for boards with internal flash.
//! - [`storage`]: what an edge persists (boot epoch, configuration, outbox) behind a small trait.
//!
//! Drivers (the Linux binary, the embassy boards) own the sockets and the clock and call into
//! these with `now` in milliseconds.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub(crate) mod fmt;

pub mod centre;
pub mod downlink;
pub mod flashlog;
#[cfg(feature = "oscore")]
pub mod oscore;
pub mod outbox;
pub mod probe;
pub mod recent;
pub mod registration;
pub mod scheduler;
pub mod storage;
pub mod summariser;
pub mod thresholds;
pub mod uplink;

pub use centre::{Centre, CentreConfig, CentreEvent};
pub use downlink::Downlink;
pub use outbox::Outbox;
pub use recent::Recent;
pub use summariser::Summariser;
pub use uplink::{Received, Uplink, UplinkConfig};
