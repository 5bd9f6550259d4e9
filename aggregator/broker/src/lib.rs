//! The broker of the QoS-monitoring system (DESIGN §1, §4): store-and-forward of uplink batches
//! between edges and the super-manager (or a parent broker), with a durable queue, and a
//! registry of edges (the registration interface of the CoRE Resource Directory, RFC 9176).
//!
//! Sans-IO like the rest of the protocol code: [`Broker`] takes datagrams and the time and hands
//! out datagrams; the UDP driver lives in `qos-aggregator broker`.
//!
//! - [`broker`]: the state machine, its resources and forwarding rules;
//! - [`queue`]: the [`Queue`] interface and an in-memory queue for tests;
//! - [`sqlite_queue`]: the durable queue (SQLite, WAL, `synchronous = FULL`, byte quota);
//! - [`registry`]: who registered, from where, until when, what was received from them;
//! - [`report`]: what a broker tells its upstream about itself (`POST /b`);
//! - [`directory`]: the RFC 9176 registration resources over a [`Registry`] (the broker's, and
//!   the super-manager's for edges that send straight to it).
//!
//! # The delivery promise
//! A batch is acknowledged to its edge only after [`Queue::append`] returned, i.e. after it is
//! on disk; it leaves the queue only after the upstream acknowledged it. A broker killed at any
//! point therefore loses nothing it acknowledged, and may forward a batch twice, which the
//! super-manager absorbs (it deduplicates by edge and sequence number). The one exception is
//! the queue's byte quota: beyond it the oldest batches are dropped and counted, and the
//! super-manager sees the hole as gaps in that edge's numbering.

pub mod broker;
pub mod directory;
pub mod queue;
pub mod ratelimit;
pub mod registry;
pub mod report;
pub mod sqlite_queue;

pub use broker::{
    Broker, BrokerConfig, BrokerStats, RejectReason, ReplayConfig, MAX_MESSAGE, UPSTREAM_LINKS,
    WELL_KNOWN_CORE,
};
pub use queue::{MemoryQueue, Queue, QueueError, QueueId, QueueStats, QueuedBatch};
pub use ratelimit::{RateLimit, RateLimiter};
pub use registry::{EdgeEntry, Registry};
pub use report::{BrokerReport, ReportEdge, ReportStats, REPORT_PATH};
pub use sqlite_queue::SqliteQueue;

#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
