//! The requests an edge serves (sans-IO): what the centre (super-manager, through the broker)
//! may ask of an edge on its uplink socket. The driver passes every request that
//! [`Uplink::handle_datagram`](crate::Uplink::handle_datagram) returns to [`Downlink::serve`].
//!
//! | request | answer |
//! |---|---|
//! | `GET /.well-known/core` | 2.05, Content-Format 40: [`EDGE_LINKS`] |
//! | `GET /r` or `GET /r?p=<probe id>` | 2.05, Content-Format 60: CDDL `recent-results`, newest first, as many as fit in one message (the older ones are left out) |
//! | `POST /p`, Content-Format 60, a CBOR `probe-spec` | empty ACK at once, later a separate (CON) 2.04, Content-Format 60: the `probe-result` of one run, sent by the driver with [`Downlink::answer_probe`] |
//! | `/c` | 4.05: the edge pulls its configuration (`GET /c?id=` to its broker, [`crate::centre`]); nothing is pushed to it |
//! | anything else | 4.04, or 4.05 for a known resource with another method |
//!
//! Errors: a `POST /p` without Content-Format 60 gets 4.15; a body that is not a valid
//! `probe-spec` (or whose `timeout_ms` exceeds [`MAX_ON_DEMAND_TIMEOUT_MS`]) gets 4.00 with a
//! diagnostic payload (RFC 7252 §5.5.2) naming the reason; a query other than `p=<u16>` gets
//! 4.00; more than `max_pending` on-demand probes at once get 5.03.
//!
//! The `probe-spec` of `POST /p` is run once, now; its `interval_ms` has no meaning for the run
//! but must still be valid (≥ 100, ≥ `timeout_ms`). The separate response is a CON message
//! retransmitted by the CoAP rules; a `POST /p` is always deferred (empty ACK) first, because a
//! probe may take longer than the requester's ACK timeout.

use core::fmt::Write as _;

use minicbor::decode::Decoder;
use qos_coap::{
    content_format, option, Code, Endpoint, ExchangeId, MessageWriter, Request, RequestHandle,
    RespondError, WriteError,
};
use qos_wire::codec::{encode_into, WireError};
use qos_wire::ids::ProbeId;
use qos_wire::outcome::ProbeResult;
use qos_wire::probe::ProbeSpec;
use qos_wire::registration::{CONFIG_PATH, EDGE_LINKS, PROBE_PATH, RESULTS_PATH};

use crate::fmt::{debug, warn};
use crate::recent::Recent;

/// Longest run an on-demand probe may ask for, ms: well within the requester's
/// EXCHANGE_LIFETIME (247 s by RFC 7252's defaults), and a bound on how long a driver's
/// thread or task is held.
pub const MAX_ON_DEMAND_TIMEOUT_MS: u32 = 60_000;

/// Largest payload of a `GET /r` answer: leaves room for the header, token and options in a
/// message of [`crate::uplink::MSG`] bytes.
pub const MAX_RESULTS_PAYLOAD: usize = 1024;

/// A probe the driver must run now, then answer with [`Downlink::answer_probe`].
#[derive(Debug, Clone, Copy)]
pub struct ProbeOrder<'a, A> {
    /// The validated specification (borrowing the request's datagram).
    pub spec: ProbeSpec<'a>,
    /// Its CBOR bytes, for a driver that runs the probe elsewhere (another thread) and decodes
    /// it again there with `ProbeSpec::decode`.
    pub spec_bytes: &'a [u8],
    /// The deferred request, to answer with [`Downlink::answer_probe`].
    pub handle: RequestHandle<A>,
}

/// Counters of the requests served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DownlinkStats {
    /// Requests served (any answer).
    pub requests: u32,
    /// On-demand probes accepted.
    pub probes: u32,
    /// Requests answered with a 4.xx or 5.xx code.
    pub rejected: u32,
}

/// Routes the requests an edge serves; holds the count of on-demand probes in progress.
#[derive(Debug, Clone)]
pub struct Downlink {
    max_pending: u8,
    pending: u8,
    stats: DownlinkStats,
}

impl Downlink {
    /// A router accepting up to `max_pending` on-demand probes at once (0: none, every
    /// `POST /p` gets 5.03).
    pub const fn new(max_pending: u8) -> Self {
        Downlink {
            max_pending,
            pending: 0,
            stats: DownlinkStats {
                requests: 0,
                probes: 0,
                rejected: 0,
            },
        }
    }

    /// On-demand probes accepted and not answered yet.
    pub fn pending(&self) -> u8 {
        self.pending
    }

    /// Counters.
    pub fn stats(&self) -> DownlinkStats {
        self.stats
    }

    /// Answer `req` through `endpoint`, from `recent` for `GET /r`. Returns a [`ProbeOrder`]
    /// for an accepted `POST /p` (already deferred: the empty ACK is queued); everything else is
    /// answered here. Follow with the endpoint's `poll_transmit`.
    pub fn serve<
        'a,
        A,
        const E: usize,
        const D: usize,
        const M: usize,
        const R: usize,
        const K: usize,
    >(
        &mut self,
        endpoint: &mut Endpoint<A, E, D, M, R>,
        now: u64,
        req: Request<'a, A>,
        recent: &Recent<K>,
    ) -> Option<ProbeOrder<'a, A>>
    where
        A: Copy + Eq,
    {
        self.stats.requests = self.stats.requests.wrapping_add(1);
        let m = &req.message;
        let code = m.code();
        let answer = if m.path_is(".well-known/core") {
            if code == Code::GET {
                Answer::Links
            } else {
                Answer::Error(Code::METHOD_NOT_ALLOWED, "")
            }
        } else if m.path_is(RESULTS_PATH) {
            if code != Code::GET {
                Answer::Error(Code::METHOD_NOT_ALLOWED, "")
            } else {
                match probe_filter(m.uri_queries()) {
                    Ok(p) => Answer::Results(p),
                    Err(why) => Answer::Error(Code::BAD_REQUEST, why),
                }
            }
        } else if m.path_is(PROBE_PATH) {
            if code != Code::POST {
                Answer::Error(Code::METHOD_NOT_ALLOWED, "")
            } else if m.content_format() != Some(content_format::CBOR) {
                Answer::Error(
                    Code::UNSUPPORTED_CONTENT_FORMAT,
                    "probe-spec needs Content-Format 60",
                )
            } else {
                match decode_spec(m.payload()) {
                    Err(e) => Answer::Invalid(e),
                    Ok(_) if self.pending >= self.max_pending => {
                        Answer::Error(Code::SERVICE_UNAVAILABLE, "on-demand probes busy")
                    }
                    Ok(spec) => Answer::Probe(spec),
                }
            }
        } else if m.path_is(CONFIG_PATH) {
            // Configuration arrives through the broker in a later step; until then the
            // resource exists (it is registered) but accepts no method.
            Answer::Error(Code::METHOD_NOT_ALLOWED, "")
        } else {
            Answer::Error(Code::NOT_FOUND, "")
        };

        let mut handle = req.handle;
        let sent = match answer {
            Answer::Links => endpoint.respond(now, &handle, Code::CONTENT, |w| {
                w.uint_option(
                    option::CONTENT_FORMAT,
                    u32::from(content_format::LINK_FORMAT),
                )?;
                w.payload(EDGE_LINKS.as_bytes())
            }),
            Answer::Results(p) => {
                let mut buf = [0u8; MAX_RESULTS_PAYLOAD];
                let room = M.saturating_sub(32).min(MAX_RESULTS_PAYLOAD);
                match recent.encode_newest(&mut buf[..room], p) {
                    Ok((n, count)) => {
                        debug!("GET /r: {} results", count);
                        endpoint.respond(now, &handle, Code::CONTENT, |w| {
                            w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                            w.payload(&buf[..n])
                        })
                    }
                    Err(_) => {
                        self.stats.rejected = self.stats.rejected.wrapping_add(1);
                        endpoint.respond(now, &handle, Code::INTERNAL_SERVER_ERROR, |_| Ok(()))
                    }
                }
            }
            Answer::Probe(spec) => {
                // NON requests cannot be deferred: the separate response answers them.
                if handle.is_confirmable() {
                    if let Err(e) = endpoint.defer(now, &mut handle) {
                        // respond_separate defers again when it can.
                        warn!("cannot defer the probe request: {:?}", e);
                    }
                }
                self.pending += 1;
                self.stats.probes = self.stats.probes.wrapping_add(1);
                return Some(ProbeOrder {
                    spec,
                    spec_bytes: req.message.payload(),
                    handle,
                });
            }
            Answer::Invalid(e) => {
                self.stats.rejected = self.stats.rejected.wrapping_add(1);
                let mut why: heapless::String<96> = heapless::String::new();
                let _ = write!(why, "probe-spec: {e}");
                endpoint.respond(now, &handle, Code::BAD_REQUEST, |w| diagnostic(w, &why))
            }
            Answer::Error(code, why) => {
                self.stats.rejected = self.stats.rejected.wrapping_add(1);
                endpoint.respond(now, &handle, code, |w| diagnostic(w, why))
            }
        };
        if let Err(e) = sent {
            warn!("cannot answer a request: {:?}", e);
        }
        None
    }

    /// Answer an accepted on-demand probe with its result: a separate CON 2.04 response,
    /// Content-Format 60, carrying the CBOR `probe-result`. The probe is no longer pending
    /// afterwards, whether or not the response could be queued (an error means the endpoint has
    /// no free slot; the requester then times out and may ask again).
    pub fn answer_probe<A, const E: usize, const D: usize, const M: usize, const R: usize>(
        &mut self,
        endpoint: &mut Endpoint<A, E, D, M, R>,
        now: u64,
        handle: &mut RequestHandle<A>,
        result: &ProbeResult,
    ) -> Result<ExchangeId, RespondError>
    where
        A: Copy + Eq,
    {
        self.pending = self.pending.saturating_sub(1);
        let mut buf = [0u8; 96];
        let n = encode_into(&mut buf, |e| result.encode(e))
            .map_err(|_| RespondError::Write(WriteError::BufferTooSmall))?;
        endpoint.respond_separate(now, handle, Code::CHANGED, |w| {
            w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
            w.payload(&buf[..n])
        })
    }
}

enum Answer<'a> {
    Links,
    Results(Option<ProbeId>),
    Probe(ProbeSpec<'a>),
    Invalid(WireError),
    Error(Code, &'static str),
}

fn diagnostic(w: &mut MessageWriter<'_>, why: &str) -> Result<(), WriteError> {
    w.payload(why.as_bytes())
}

/// A whole `probe-spec` (nothing after it) with a timeout an on-demand run may have.
fn decode_spec(bytes: &[u8]) -> Result<ProbeSpec<'_>, WireError> {
    let mut d = Decoder::new(bytes);
    let spec = ProbeSpec::decode(&mut d)?;
    if d.position() != bytes.len() {
        return Err(WireError::TrailingBytes);
    }
    if spec.timeout_ms > MAX_ON_DEMAND_TIMEOUT_MS {
        return Err(WireError::Invalid(
            "timeout_ms above 60000 for an on-demand run",
        ));
    }
    Ok(spec)
}

/// `p=<probe id>` or nothing.
fn probe_filter<'a>(
    mut queries: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<ProbeId>, &'static str> {
    let Some(q) = queries.next() else {
        return Ok(None);
    };
    if queries.next().is_some() {
        return Err("only one query, p=<probe id>");
    }
    let id = q
        .strip_prefix(b"p=")
        .and_then(|v| core::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u16>().ok())
        .ok_or("query must be p=<probe id>")?;
    Ok(Some(ProbeId(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::{EdgeEndpoint, MSG};
    use qos_coap::{Config, Incoming, Reliability};
    use qos_wire::outcome::{ErrorClass, PhaseTimings, RecentResults};
    use qos_wire::phase::Phase;
    use qos_wire::probe::ProbeKind;
    use std::string::String;
    use std::vec::Vec;

    const EDGE: u8 = 1;
    type Client = qos_coap::Endpoint<u8, 4, 8, MSG>;

    /// A response a client received: its code, Content-Format and payload.
    type Got = (Code, Option<u16>, Vec<u8>);

    /// Clients (addresses 10, 11, ...) and an edge endpoint back to back, in virtual time.
    struct Net {
        clients: Vec<Client>,
        edge: EdgeEndpoint<u8>,
        down: Downlink,
        recent: Recent<32>,
        orders: Vec<(Vec<u8>, RequestHandle<u8>)>,
        got: Vec<(usize, ExchangeId, Got)>,
        now: u64,
    }

    impl Net {
        fn new(clients: usize, max_pending: u8) -> Net {
            Net {
                clients: (0..clients)
                    .map(|i| Client::new(Config::default(), 100 + i as u64).unwrap())
                    .collect(),
                edge: EdgeEndpoint::new(Config::default(), 7).unwrap(),
                down: Downlink::new(max_pending),
                recent: Recent::new(),
                orders: Vec::new(),
                got: Vec::new(),
                now: 0,
            }
        }

        fn request(
            &mut self,
            client: usize,
            code: Code,
            path: &str,
            query: &[&str],
            cf: Option<u16>,
            body: &[u8],
        ) -> ExchangeId {
            let now = self.now;
            self.clients[client]
                .request(now, EDGE, Reliability::Confirmable, code, |w| {
                    w.uri_path(path)?;
                    if let Some(cf) = cf {
                        w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
                    }
                    for q in query {
                        w.option(option::URI_QUERY, q.as_bytes())?;
                    }
                    w.payload(body)
                })
                .unwrap()
        }

        /// Move datagrams both ways until nothing moves.
        fn pump(&mut self) {
            let now = self.now;
            let mut buf = [0u8; MSG];
            loop {
                let mut moved = false;
                for (i, c) in self.clients.iter_mut().enumerate() {
                    while let Some((to, n)) = c.poll_transmit(now, &mut buf) {
                        assert_eq!(to, EDGE);
                        moved = true;
                        let bytes = buf[..n].to_vec();
                        if let Some(Incoming::Request(req)) =
                            self.edge.handle_datagram(now, 10 + i as u8, &bytes)
                        {
                            if let Some(order) =
                                self.down.serve(&mut self.edge, now, req, &self.recent)
                            {
                                self.orders.push((order.spec_bytes.to_vec(), order.handle));
                            }
                        }
                    }
                }
                while let Some((to, n)) = self.edge.poll_transmit(now, &mut buf) {
                    moved = true;
                    let i = usize::from(to - 10);
                    let bytes = buf[..n].to_vec();
                    if let Some(Incoming::Response { exchange, message }) =
                        self.clients[i].handle_datagram(now, EDGE, &bytes)
                    {
                        self.got.push((
                            i,
                            exchange,
                            (
                                message.code(),
                                message.content_format(),
                                message.payload().to_vec(),
                            ),
                        ));
                    }
                }
                if !moved {
                    break;
                }
            }
        }

        fn answer(&mut self, id: ExchangeId) -> Got {
            let at = self
                .got
                .iter()
                .position(|(_, e, _)| *e == id)
                .expect("an answer");
            self.got.remove(at).2
        }

        fn ask(
            &mut self,
            code: Code,
            path: &str,
            query: &[&str],
            cf: Option<u16>,
            body: &[u8],
        ) -> Got {
            let id = self.request(0, code, path, query, cf, body);
            self.pump();
            self.answer(id)
        }
    }

    fn result(probe: u16, at_ms: u64) -> ProbeResult {
        let mut phases = PhaseTimings::new();
        phases.set(Phase::Connect, 2_500);
        phases.set(Phase::Total, 2_600);
        ProbeResult {
            probe: ProbeId(probe),
            at_ms,
            phases,
            error: None,
            error_after_us: None,
            detail: 0,
            redirects: 0,
        }
    }

    fn tcp_spec(timeout_ms: u32) -> Vec<u8> {
        let spec = ProbeSpec {
            id: ProbeId(77),
            interval_ms: 60_000,
            timeout_ms,
            kind: ProbeKind::Tcp {
                target: "192.0.2.1:443",
            },
        };
        let mut buf = [0u8; 128];
        let n = encode_into(&mut buf, |e| spec.encode(e)).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn well_known_core_lists_the_edge_resources() {
        let mut net = Net::new(1, 1);
        let (code, cf, body) = net.ask(Code::GET, ".well-known/core", &[], None, b"");
        assert_eq!(code, Code::CONTENT);
        assert_eq!(cf, Some(content_format::LINK_FORMAT));
        assert_eq!(body, EDGE_LINKS.as_bytes());
    }

    #[test]
    fn recent_results_newest_first_and_filtered() {
        let mut net = Net::new(1, 1);
        let (code, cf, body) = net.ask(Code::GET, RESULTS_PATH, &[], None, b"");
        assert_eq!((code, cf), (Code::CONTENT, Some(content_format::CBOR)));
        assert!(RecentResults::decode(&body).unwrap().results.is_empty());
        for at in 1..=6 {
            net.recent.push(result((at % 2) as u16 + 1, at));
        }
        let (_, _, body) = net.ask(Code::GET, RESULTS_PATH, &[], None, b"");
        let all: Vec<u64> = RecentResults::decode(&body)
            .unwrap()
            .results
            .iter()
            .map(|r| r.at_ms)
            .collect();
        assert_eq!(all, [6, 5, 4, 3, 2, 1]);
        let (_, _, body) = net.ask(Code::GET, RESULTS_PATH, &["p=2"], None, b"");
        let two: Vec<(u16, u64)> = RecentResults::decode(&body)
            .unwrap()
            .results
            .iter()
            .map(|r| (r.probe.0, r.at_ms))
            .collect();
        assert_eq!(two, [(2, 5), (2, 3), (2, 1)]);
        for bad in [&["p=x"][..], &["q=1"], &["p=1", "p=2"], &["p=70000"]] {
            let (code, _, why) = net.ask(Code::GET, RESULTS_PATH, bad, None, b"");
            assert_eq!(code, Code::BAD_REQUEST, "{bad:?}");
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn a_full_ring_is_answered_with_what_fits_in_one_message() {
        let mut net = Net::new(1, 1);
        for at in 1..=32 {
            net.recent.push(result(1, at));
        }
        let (code, _, body) = net.ask(Code::GET, RESULTS_PATH, &[], None, b"");
        assert_eq!(code, Code::CONTENT);
        assert!(body.len() <= MAX_RESULTS_PAYLOAD);
        let back = RecentResults::decode(&body).unwrap();
        assert!(back.results.len() >= 10, "{}", back.results.len());
        assert_eq!(back.results.iter().next().unwrap().at_ms, 32);
    }

    #[test]
    fn an_on_demand_probe_is_deferred_then_answered_separately() {
        let mut net = Net::new(1, 1);
        let spec = tcp_spec(2_000);
        let id = net.request(
            0,
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::CBOR),
            &spec,
        );
        net.pump();
        assert!(net.got.is_empty(), "only an empty ACK so far");
        assert_eq!(net.orders.len(), 1);
        assert_eq!(net.down.pending(), 1);
        let (bytes, mut handle) = net.orders.pop().unwrap();
        assert_eq!(bytes, spec);
        let decoded = ProbeSpec::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(decoded.id, ProbeId(77));
        assert!(handle.is_deferred());

        // the probe runs for a while (longer than the client's ACK timeout): no retransmission
        // reaches the edge as a new request
        net.now = 5_000;
        net.pump();
        assert!(net.orders.is_empty());
        let mut r = result(77, 1_764_000_000_000);
        r.error = Some(ErrorClass::Refused);
        r.error_after_us = Some(800);
        let now = net.now;
        net.down
            .answer_probe(&mut net.edge, now, &mut handle, &r)
            .unwrap();
        assert_eq!(net.down.pending(), 0);
        net.pump();
        let (code, cf, body) = net.answer(id);
        assert_eq!((code, cf), (Code::CHANGED, Some(content_format::CBOR)));
        let back = ProbeResult::decode(&mut Decoder::new(&body)).unwrap();
        assert_eq!(back, r);
        assert_eq!(net.down.stats().probes, 1);
    }

    #[test]
    fn bad_probe_requests_are_refused_with_a_reason() {
        let mut net = Net::new(1, 1);
        let spec = tcp_spec(2_000);
        let (code, _, _) = net.ask(Code::POST, PROBE_PATH, &[], None, &spec);
        assert_eq!(code, Code::UNSUPPORTED_CONTENT_FORMAT);
        let (code, _, _) = net.ask(
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::JSON),
            &spec,
        );
        assert_eq!(code, Code::UNSUPPORTED_CONTENT_FORMAT);
        let (code, _, why) = net.ask(
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::CBOR),
            b"\x83\x01\x02",
        );
        assert_eq!(code, Code::BAD_REQUEST);
        assert!(
            why.starts_with(b"probe-spec: "),
            "{}",
            String::from_utf8_lossy(&why)
        );
        let (code, _, why) = net.ask(
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::CBOR),
            &tcp_spec(60_001),
        );
        assert_eq!(code, Code::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&why).contains("timeout_ms"));
        let mut trailing = spec.clone();
        trailing.push(0);
        let (code, _, _) = net.ask(
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::CBOR),
            &trailing,
        );
        assert_eq!(code, Code::BAD_REQUEST);
        assert!(net.orders.is_empty());
        assert_eq!(net.down.pending(), 0);
        assert_eq!(net.down.stats().rejected, 5);
    }

    #[test]
    fn methods_and_unknown_paths() {
        let mut net = Net::new(1, 1);
        for (code, path, want) in [
            (Code::GET, CONFIG_PATH, Code::METHOD_NOT_ALLOWED),
            (Code::POST, CONFIG_PATH, Code::METHOD_NOT_ALLOWED),
            (Code::GET, PROBE_PATH, Code::METHOD_NOT_ALLOWED),
            (Code::POST, RESULTS_PATH, Code::METHOD_NOT_ALLOWED),
            (Code::PUT, ".well-known/core", Code::METHOD_NOT_ALLOWED),
            (Code::GET, "nothing/here", Code::NOT_FOUND),
            (Code::GET, "u", Code::NOT_FOUND),
        ] {
            let (got, _, _) = net.ask(code, path, &[], None, b"");
            assert_eq!(got, want, "{code} {path}");
        }
    }

    #[test]
    fn too_many_on_demand_probes_get_service_unavailable() {
        let mut net = Net::new(2, 1);
        let spec = tcp_spec(1_000);
        net.request(
            0,
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::CBOR),
            &spec,
        );
        net.pump();
        assert_eq!(net.orders.len(), 1);
        let second = net.request(
            1,
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::CBOR),
            &spec,
        );
        net.pump();
        assert_eq!(net.answer(second).0, Code::SERVICE_UNAVAILABLE);
        assert_eq!(net.orders.len(), 1);
        // once the first is answered, another is accepted
        let (_, mut handle) = net.orders.pop().unwrap();
        net.down
            .answer_probe(&mut net.edge, 0, &mut handle, &result(77, 1))
            .unwrap();
        net.pump();
        let third = net.request(
            1,
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::CBOR),
            &spec,
        );
        net.pump();
        assert!(net.got.iter().all(|(_, e, _)| *e != third));
        assert_eq!(net.orders.len(), 1);
        let mut none = Net::new(1, 0);
        let (code, _, _) = none.ask(
            Code::POST,
            PROBE_PATH,
            &[],
            Some(content_format::CBOR),
            &spec,
        );
        assert_eq!(code, Code::SERVICE_UNAVAILABLE);
    }
}
