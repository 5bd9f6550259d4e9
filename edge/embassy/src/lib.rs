//! The QoS edge on embassy: a thin driver of `qos-edge-core` over embassy-net sockets and
//! embassy-time, shared by the embassy boards (QEMU mps2-an386, host-sim, Nucleo-F429ZI).
//!
//! A board brings up its clock, its network driver and the embassy-net stack (and waits for its
//! address), then awaits [`run`] with its [`Settings`] and its [`Hooks`] (the local action of a
//! threshold crossing: an LED, a log line):
//!
//! ```ignore
//! let report = qos_edge_embassy::run(stack, &settings, &mut hooks).await?;
//! ```
//!
//! - [`config`]: the settings, and compile-time parsers for boards that take them from
//!   environment variables.
//! - [`probe`]: the probes (TCP connect, CoAP ping) over embassy-net sockets.
//! - [`app`]: the probe loop and the uplink loop.
//!
//! Generic over nothing but the stack's lifetime: the driver type stays in the board (its
//! `Runner` task). Logging: the `defmt` feature (firmware) or the `log` feature (host boards).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod fmt;

pub mod app;
pub mod config;
pub mod probe;

pub use app::{run, run_with_storage, Hooks, NoStorage, Report, StartError};
#[cfg(feature = "oscore")]
pub use config::OscoreKeys;
pub use config::{ProbeTarget, Settings};
pub use probe::ProbeBuffers;
/// The core's storage and its flash record log, for boards that persist (boot epoch,
/// configuration) without depending on the core crate themselves.
pub use qos_edge_core::{flashlog, storage};
