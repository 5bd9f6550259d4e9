//! `qos-aggregator`: the super-manager of the QoS-monitoring system.
//!
//! The crate is a library plus a thin binary (`src/main.rs`) so that tests and later listeners
//! (the CoAP ingest) can drive the same code the binary runs. One module per concern:
//!
//! - [`config`]: the TOML configuration, its defaults and validation;
//! - [`store`]: the [`store::Store`] trait and its SQLite implementation (deduplication by
//!   `(edge, seq)`, gap and drop accounting, schema migrations);
//! - [`ingest`]: uplink batches to the store and back to an acknowledgement (sans-IO);
//! - [`centre`]: central edge configurations and reports, routes to edges, orders for them;
//! - [`coap`]: the CoAP resources of the super-manager over the shared endpoint (sans-IO);
//! - [`stats`]: lock-free ingest counters and the reasons a datagram can be rejected;
//! - [`http`]: the JSON API under `/api/v1/`;
//! - [`services`]: the service model at run time: monitor, incidents, SLOs, component metrics
//!   (push, import, scrape), retention and hourly rollups;
//! - [`serve`]: wires configuration, store, counters and listeners together ([`serve::run_serve`]);
//! - [`rca`]: `qos-aggregator rca`, offline root-cause analysis of a case directory (the engine
//!   is the `qos-rca` crate; this reads the case and prints the ranking as JSON);
//! - [`broker_config`], [`broker_run`]: `qos-aggregator broker`, a stand-alone store-and-forward
//!   broker (the logic is the `qos-broker` crate; this is its configuration and UDP driver).
//! - [`stream_config`], [`stream_io`], [`tls`]: CoAP over TCP and TLS (RFC 8323) between
//!   brokers and the super-manager: settings, the connection threads, rustls set-up.

pub mod broker_config;
pub mod broker_run;
pub mod centre;
pub mod coap;
pub mod config;
pub mod demo;
pub mod http;
pub mod ingest;
pub mod local_edge;
pub mod oscore;
pub mod rca;
pub mod report;
pub mod serve;
pub mod services;
pub mod silence;
pub mod stats;
pub mod store;
pub mod store_checkpoint;
pub mod stream_config;
pub mod stream_io;
pub mod tls;
pub mod udp_batch;

/// The version of this build, as reported by `GET /api/v1/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
