//! The shared vocabulary of the QoS system, for the edge (no_std, no alloc), the broker and the
//! super-manager.
//!
//! Everything that crosses the wire is defined here, together with its CBOR encoding
//! (`minicbor`, integer keys or arrays, a version field first, zero-copy decode). The CDDL schema
//! that describes the encoding lives next to this file in `qos.cddl`, and the tests validate
//! encoded samples against it with an external validator.
//!
//! Untrusted bytes are decoded into validated values: decoders return errors, they never panic
//! (see the property tests and the fuzz targets).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(any(test, feature = "samples"))]
extern crate std;

pub mod codec;
pub mod config;
pub mod event;
pub mod ids;
pub mod metrics;
pub mod outcome;
pub mod phase;
pub mod probe;
pub mod registration;
#[cfg(feature = "samples")]
pub mod samples;
pub mod sketch;
pub mod summary;
pub mod threshold;
pub mod uplink;
