//! Deterministic network simulator with virtual time (dev-only, testing tier 2).
//!
//! The project's sans-IO state machines take `now: u64` (milliseconds) and
//! datagrams in, and give datagrams and deadlines out. [`Net`] carries the
//! datagrams between such nodes with seeded loss, duplication, delay,
//! reordering and partitions, entirely in virtual time, so a failing run is
//! reproduced exactly from its seed.
//!
//! * [`Net::send`] decides a datagram's fate from the directed link's
//!   [`LinkConfig`] using the net's seeded [`Rng`].
//! * [`Net::deliver`] pops datagrams due by `now` in (arrival time, enqueue order).
//! * [`Net::partition`], [`Net::block`], [`Net::heal_all`] and
//!   [`Net::schedule`]`(at, `[`Fault`]`)` change the network.
//! * [`Net::next_event_time`] gives a driver loop the next time to jump to.
//! * [`Net::set_trace`] records every [`Event`] for debugging a failing seed.
//!
//! # Driver loop
//!
//! ```
//! use qos_sim::{LinkConfig, Net};
//!
//! let mut net = Net::with_default_link(7, LinkConfig::perfect(5).with_loss(0.2));
//! // A toy "node": node 1 pings node 2 every 100 ms until t = 1000.
//! let mut next_ping = Some(0u64);
//! let mut pongs = 0;
//! while let Some(now) = net.next_event_time(&[next_ping]) {
//!     while let Some(d) = net.deliver(now) {
//!         match d.to {
//!             2 => {
//!                 net.send(now, 2, 1, &d.bytes);
//!             }
//!             _ => pongs += 1,
//!         }
//!     }
//!     if next_ping == Some(now) {
//!         net.send(now, 1u16, 2, b"ping");
//!         next_ping = Some(now + 100).filter(|&t| t < 1000);
//!     }
//! }
//! assert!(pongs > 0 && pongs <= 10);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod link;
mod net;
mod rng;
mod trace;

pub use link::{Fault, InvalidLinkConfig, LinkConfig};
pub use net::{earliest, Datagram, Net, SendFate, Stats};
pub use rng::{splitmix64, Rng};
pub use trace::{Event, TraceHead};
