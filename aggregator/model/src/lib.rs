//! The super-manager's service model and the judgements made over it, as pure logic (no
//! sockets except the small webhook driver, no clock reads: time is passed in).
//!
//! - [`model`]: services → transactions (probes, from regions) → components with
//!   `depends_on` edges (the service map), read from TOML or JSON and validated.
//! - [`window`]: [`window::WindowSample`] (one probe's window, from a
//!   `qos_wire::summary::Summary`), availability (good / windows with data; missing counted
//!   apart, never as up) and response time per service, region, phase and period.
//! - [`slo`]: error budgets and multi-window, multi-burn-rate alerts.
//! - [`state`]: k-of-n quorum, dependency suppression, flapping with hysteresis.
//! - [`incident`]: phase/region breakdown, the prior it gives components, its combination
//!   with the `qos-rca` ranking, and the drill-down chain.
//! - [`monitor`]: the live engine tying these together: ingest samples and metrics,
//!   `evaluate(now)`, get events.
//! - [`api`]: JSON views of states, reports, budgets, alerts and incidents for the HTTP API.
//! - [`notify`]: webhook notifications: JSON, a sans-IO retry core and a std HTTP driver.
//!
//! Semantics and math: `docs/slo.md`.
//!
//! # Wiring
//!
//! ```
//! use qos_model::{Model, Monitor, Notifier, WindowSample, Status};
//! use qos_wire::phase::Phase;
//!
//! let model = Model::from_toml(r#"
//!     [[component]]
//!     name = "web"
//!     kind = "web"
//!     [[service]]
//!     name = "shop"
//!     depends_on = ["web"]
//!     [[service.transaction]]
//!     name = "home"
//!     probes = [{ edge = 1, probe = 0, region = "eu" }]
//! "#)?;
//! let mut monitor = Monitor::new(model);
//! let mut notifier = Notifier::default();
//! // serve: for each summary, `monitor.ingest_summary(edge_id, &summary)`; here by hand
//! let mut w = WindowSample::new("shop", "eu", 1_764_000_000, 60);
//! w.add_ok(6, &[(Phase::Total, 120_000)]);
//! monitor.ingest(w)?;
//! // serve: every few seconds, with the current Unix time
//! let now = 1_764_000_000 + 60 + 30;
//! let events = monitor.evaluate(now);
//! notifier.push_events(now, &events);
//! assert_eq!(monitor.state("shop").unwrap().status, Status::Up);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod incident;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod slo;
pub mod state;
pub mod window;

pub use model::{Model, ModelError, ServiceModel};
pub use monitor::{Event, Incident, IngestError, Monitor, Subject};
pub use notify::{notification, Notifier, RetryPolicy};
pub use state::Status;
pub use window::{report, ServiceReport, WindowSample};
