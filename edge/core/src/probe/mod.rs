//! Protocol logic of the probes: sans-IO, no allocation, no clock.
//!
//! Each module builds what a probe sends into a caller's buffer and checks what comes back
//! through a validating view that never panics on hostile input. Drivers own sockets and
//! clocks, call these, and time the phases; [`classify`] turns what went wrong into an
//! [`ErrorClass`](qos_wire::outcome::ErrorClass).
//!
//! - [`dns`]: RFC 1035 query encoding and answer checking (A/AAAA, compression pointers).
//! - [`http`]: URL parsing, the HTTP/1.1 request head and an incremental response parser
//!   (status, headers, `Content-Length`, chunked bodies, `Location`, a bounded body matcher).
//! - [`transaction`]: the expect-prefix matcher of send/expect scripts.
//! - [`coap_ping`]: the empty CON and the matching RST.
//! - [`classify`]: error classes of all of the above and of transport failures.

pub mod classify;
pub mod coap_ping;
pub mod dns;
pub mod http;
pub mod transaction;
