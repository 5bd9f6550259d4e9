//! Relaying through the broker, in virtual time over a lossy network: an edge's `/c` up to the
//! upstream, the upstream's `/p` and `/r` down to the edge, and requests held for an edge that
//! is briefly away.

use std::collections::BTreeMap;

use qos_coap::{
    content_format, option, Code, Config as CoapConfig, Endpoint, Event, ExchangeId, Incoming,
    Reliability, RequestHandle,
};
use qos_wire::ids::EdgeId;

use crate::{Broker, BrokerConfig, BrokerReport, MemoryQueue, UPSTREAM_LINKS};

type Peer = Endpoint<u8, 8, 16, 1152, 64>;

const EDGE: u8 = 1;
const BROKER: u8 = 50;
const UPSTREAM: u8 = 100;
const EDGE_ID: u32 = 7;
/// How long the scripted edge takes to run an on-demand probe, ms.
const PROBE_MS: u64 = 1_500;

/// A received answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    code: Code,
    etag: Option<Vec<u8>>,
    cf: Option<u16>,
    payload: Vec<u8>,
}

struct Net {
    broker: Broker<u8>,
    edge: Peer,
    up: Peer,
    now: u64,
    /// The edge neither receives nor sends.
    edge_away: bool,
    /// Nothing the broker sends upstream arrives.
    upstream_down: bool,
    /// Lose about one datagram in `loss` (0: none), decided by a seeded generator.
    loss: u64,
    rng: u64,
    /// On-demand probes the edge runs: answer due at, handle, probe id.
    running: Vec<(u64, RequestHandle<u8>, Vec<u8>)>,
    /// The configuration the upstream serves for the edge: (etag, payload).
    config: Option<(u32, Vec<u8>)>,
    /// Reports the upstream received.
    reports: Vec<Vec<u8>>,
    /// `/p` and `/r` requests the edge received (path, queries).
    edge_saw: Vec<(String, Vec<String>)>,
    answers: BTreeMap<(u8, ExchangeId), Got>,
    timeouts: Vec<(u8, ExchangeId)>,
    /// The broker's reports (`POST /b`) the upstream received.
    broker_reports: Vec<BrokerReport>,
}

fn got(m: &qos_coap::Message<'_>) -> Got {
    Got {
        code: m.code(),
        etag: m.option(option::ETAG).map(<[u8]>::to_vec),
        cf: m.content_format(),
        payload: m.payload().to_vec(),
    }
}

impl Net {
    fn new(loss: u64, seed: u64) -> Net {
        Net::with(loss, seed, |_| {})
    }

    fn with(loss: u64, seed: u64, tweak: impl FnOnce(&mut BrokerConfig)) -> Net {
        let fast = CoapConfig::with_reliability(300, 1.5, 3);
        let mut config = BrokerConfig {
            downstream: fast,
            upstream: fast,
            hold_ms: 10_000,
            attempt_ms: 3_000,
            relay_timeout_ms: 8_000,
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        Net {
            broker: Broker::new(config, UPSTREAM, Box::new(MemoryQueue::default()), seed).unwrap(),
            edge: Peer::new(fast, seed ^ 1).unwrap(),
            up: Peer::new(fast, seed ^ 2).unwrap(),
            now: 1_000,
            edge_away: false,
            upstream_down: false,
            loss,
            rng: seed | 1,
            running: Vec::new(),
            config: None,
            reports: Vec::new(),
            edge_saw: Vec::new(),
            answers: BTreeMap::new(),
            timeouts: Vec::new(),
            broker_reports: Vec::new(),
        }
    }

    fn lost(&mut self) -> bool {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.loss != 0 && self.rng % self.loss == 0
    }

    /// A request from `who` (EDGE or UPSTREAM) to the broker.
    #[allow(clippy::too_many_arguments)]
    fn ask(
        &mut self,
        who: u8,
        code: Code,
        etag: Option<u32>,
        path: &str,
        queries: &[&str],
        cf: Option<u16>,
        payload: &[u8],
    ) -> ExchangeId {
        let now = self.now;
        let peer = if who == EDGE {
            &mut self.edge
        } else {
            &mut self.up
        };
        peer.request(now, BROKER, Reliability::Confirmable, code, |w| {
            if let Some(e) = etag {
                w.option(option::ETAG, &e.to_be_bytes())?;
            }
            w.uri_path(path)?;
            if let Some(cf) = cf {
                w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
            }
            for q in queries {
                w.option(option::URI_QUERY, q.as_bytes())?;
            }
            w.payload(payload)
        })
        .unwrap()
    }

    fn register(&mut self) {
        let id = format!("id={EDGE_ID}");
        let x = self.ask(
            EDGE,
            Code::POST,
            None,
            "rd",
            &["ep=e7", "d=eu", "lt=300", &id],
            None,
            b"",
        );
        let a = self.wait(EDGE, x, 10_000).expect("registered");
        assert_eq!(a.code, Code::CREATED);
    }

    /// Runs until the answer of `x` (asked by `who`) arrives, at most `ms`.
    fn wait(&mut self, who: u8, x: ExchangeId, ms: u64) -> Option<Got> {
        let end = self.now + ms;
        while self.now < end {
            if let Some(a) = self.answers.remove(&(who, x)) {
                return Some(a);
            }
            if self.timeouts.contains(&(who, x)) {
                return None;
            }
            self.step();
        }
        self.answers.remove(&(who, x))
    }

    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
    }

    /// 10 ms of virtual time: timers, then every datagram in flight delivered (or lost).
    fn step(&mut self) {
        self.now += 10;
        let now = self.now;
        self.broker.poll(now);
        self.edge.handle_timeout(now);
        self.up.handle_timeout(now);
        for (who, peer) in [(EDGE, &mut self.edge), (UPSTREAM, &mut self.up)] {
            while let Some(ev) = peer.poll_event() {
                if let Event::Timeout(x) | Event::Reset(x) = ev {
                    self.timeouts.push((who, x));
                }
            }
        }
        // The edge's probes that finished.
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].0 <= now && !self.edge_away {
                let (_, mut handle, body) = self.running.swap_remove(i);
                self.edge
                    .respond_separate(now, &mut handle, Code::CHANGED, |w| {
                        w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                        w.payload(&body)
                    })
                    .unwrap();
            } else {
                i += 1;
            }
        }
        let mut buf = [0u8; 1152];
        for _ in 0..8 {
            let mut moved = false;
            while let Some((to, n)) = self.broker.poll_transmit_upstream(now, &mut buf) {
                assert_eq!(to, UPSTREAM);
                moved = true;
                let d = buf[..n].to_vec();
                if !self.upstream_down && !self.lost() {
                    self.upstream_gets(&d);
                }
            }
            while let Some((to, n)) = self.broker.poll_transmit_downstream(now, &mut buf) {
                assert_eq!(to, EDGE);
                moved = true;
                let d = buf[..n].to_vec();
                if !self.edge_away && !self.lost() {
                    self.edge_gets(&d);
                }
            }
            while let Some((to, n)) = self.up.poll_transmit(now, &mut buf) {
                assert_eq!(to, BROKER);
                moved = true;
                let d = buf[..n].to_vec();
                if !self.lost() {
                    self.broker.handle_upstream(now, UPSTREAM, &d);
                }
            }
            while let Some((to, n)) = self.edge.poll_transmit(now, &mut buf) {
                assert_eq!(to, BROKER);
                moved = true;
                let d = buf[..n].to_vec();
                if !self.edge_away && !self.lost() {
                    self.broker.handle_downstream(now, 0, EDGE, &d);
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// The upstream: serves `/c` (GET with ETag, POST report).
    fn upstream_gets(&mut self, d: &[u8]) {
        let now = self.now;
        match self.up.handle_datagram(now, BROKER, d) {
            Some(Incoming::Request(req)) if req.message.path_is("b") => {
                let m = &req.message;
                assert_eq!(m.ty(), qos_coap::MessageType::NonConfirmable);
                assert_eq!(m.content_format(), Some(content_format::CBOR));
                self.broker_reports
                    .push(BrokerReport::decode(m.payload()).expect("a broker-report"));
                self.up
                    .respond(now, &req.handle, Code::CHANGED, |w| w.payload(b""))
                    .unwrap();
            }
            Some(Incoming::Request(req)) => {
                let m = &req.message;
                assert!(m.path_is("c"), "only /c and /b go up");
                let queries: Vec<&[u8]> = m.uri_queries().collect();
                assert_eq!(queries, [format!("id={EDGE_ID}").as_bytes()]);
                let asked = m.option(option::ETAG).map(<[u8]>::to_vec);
                let (code, etag, body) = if m.code() == Code::POST {
                    self.reports.push(m.payload().to_vec());
                    (Code::CHANGED, None, Vec::new())
                } else {
                    match &self.config {
                        None => (Code::NOT_FOUND, None, Vec::new()),
                        Some((e, _)) if asked.as_deref() == Some(&e.to_be_bytes()[..]) => {
                            (Code::VALID, Some(*e), Vec::new())
                        }
                        Some((e, body)) => (Code::CONTENT, Some(*e), body.clone()),
                    }
                };
                self.up
                    .respond(now, &req.handle, code, |w| {
                        if let Some(e) = etag {
                            w.option(option::ETAG, &e.to_be_bytes())?;
                        }
                        if !body.is_empty() {
                            w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                        }
                        w.payload(&body)
                    })
                    .unwrap();
            }
            Some(Incoming::Response { exchange, message }) => {
                self.answers.insert((UPSTREAM, exchange), got(&message));
            }
            None => {}
        }
    }

    /// The edge: serves `/p` (deferred, answered after [`PROBE_MS`]) and `/r`.
    fn edge_gets(&mut self, d: &[u8]) {
        let now = self.now;
        match self.edge.handle_datagram(now, BROKER, d) {
            Some(Incoming::Request(req)) => {
                let m = &req.message;
                let path: Vec<String> = m
                    .uri_path()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                let queries: Vec<String> = m
                    .uri_queries()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                self.edge_saw.push((path.join("/"), queries.clone()));
                if m.path_is("p") {
                    let mut handle = req.handle;
                    self.edge.defer(now, &mut handle).unwrap();
                    let mut body = b"result of ".to_vec();
                    body.extend_from_slice(m.payload());
                    self.running.push((now + PROBE_MS, handle, body));
                } else {
                    let body = format!("results {}", queries.join("&"));
                    self.edge
                        .respond(now, &req.handle, Code::CONTENT, |w| {
                            w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                            w.payload(body.as_bytes())
                        })
                        .unwrap();
                }
            }
            Some(Incoming::Response { exchange, message }) => {
                self.answers.insert((EDGE, exchange), got(&message));
            }
            None => {}
        }
    }
}

fn id_query() -> String {
    format!("id={EDGE_ID}")
}

#[test]
fn config_is_relayed_up_with_its_etag_and_a_report_after_it() {
    for seed in 1..=8 {
        let mut n = Net::new(if seed > 4 { 5 } else { 0 }, seed);
        n.register();
        let q = id_query();
        // Nothing for this edge yet: the upstream's 4.04 comes back.
        let x = n.ask(EDGE, Code::GET, None, "c", &[&q], None, b"");
        assert_eq!(n.wait(EDGE, x, 30_000).unwrap().code, Code::NOT_FOUND);

        n.config = Some((0x0102_0304, b"cfg-bytes".to_vec()));
        let x = n.ask(EDGE, Code::GET, None, "c", &[&q], None, b"");
        let a = n.wait(EDGE, x, 30_000).expect("an answer");
        assert_eq!(a.code, Code::CONTENT, "seed {seed}");
        assert_eq!(a.etag.as_deref(), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(a.cf, Some(content_format::CBOR));
        assert_eq!(a.payload, b"cfg-bytes");

        // Same ETag: 2.03 Valid, no payload.
        let x = n.ask(EDGE, Code::GET, Some(0x0102_0304), "c", &[&q], None, b"");
        let a = n.wait(EDGE, x, 30_000).unwrap();
        assert_eq!((a.code, a.payload.len()), (Code::VALID, 0));

        let x = n.ask(
            EDGE,
            Code::POST,
            None,
            "c",
            &[&q],
            Some(content_format::CBOR),
            b"report",
        );
        assert_eq!(n.wait(EDGE, x, 30_000).unwrap().code, Code::CHANGED);
        assert!(n.reports.iter().all(|r| r == b"report"));
        assert!(!n.reports.is_empty());
        assert_eq!(n.broker.stats().config_relayed, 4, "seed {seed}");
        assert_eq!(n.broker.stats().config_timeouts, 0);
    }
}

#[test]
fn config_requests_are_checked_and_time_out_without_an_upstream() {
    let mut n = Net::new(0, 3);
    // No id, wrong method, a report without CBOR: refused at once.
    let x = n.ask(EDGE, Code::GET, None, "c", &[], None, b"");
    assert_eq!(n.wait(EDGE, x, 1_000).unwrap().code, Code::BAD_REQUEST);
    let x = n.ask(EDGE, Code::DELETE, None, "c", &["id=7"], None, b"");
    assert_eq!(
        n.wait(EDGE, x, 1_000).unwrap().code,
        Code::METHOD_NOT_ALLOWED
    );
    let x = n.ask(EDGE, Code::POST, None, "c", &["id=7"], None, b"x");
    assert_eq!(
        n.wait(EDGE, x, 1_000).unwrap().code,
        Code::UNSUPPORTED_CONTENT_FORMAT
    );
    // An edge that neither registered nor sent a batch: 4.04, counted.
    let x = n.ask(EDGE, Code::GET, None, "c", &["id=7"], None, b"");
    assert_eq!(n.wait(EDGE, x, 1_000).unwrap().code, Code::NOT_FOUND);
    assert_eq!(n.broker.stats().unknown_edge, 1);
    n.register();
    // The upstream is unreachable: 5.04 once its exchange fails, within relay_timeout_ms.
    n.upstream_down = true;
    let before = n.now;
    let x = n.ask(EDGE, Code::GET, None, "c", &["id=7"], None, b"");
    let a = n.wait(EDGE, x, 30_000).expect("an answer");
    assert_eq!(a.code, Code::GATEWAY_TIMEOUT);
    assert!(n.now - before <= 8_000 + 100, "by relay_timeout_ms");
    assert_eq!(n.broker.stats().config_timeouts, 1);
}

#[test]
fn probe_and_results_are_routed_to_the_edge_and_answered_back() {
    for seed in 1..=8 {
        let mut n = Net::new(if seed > 4 { 6 } else { 0 }, seed);
        n.register();
        let q = id_query();
        let x = n.ask(
            UPSTREAM,
            Code::POST,
            None,
            "p",
            &[&q],
            Some(content_format::CBOR),
            b"spec",
        );
        let a = n.wait(UPSTREAM, x, 30_000).expect("the probe result");
        assert_eq!(a.code, Code::CHANGED, "seed {seed}");
        assert_eq!(a.cf, Some(content_format::CBOR));
        assert_eq!(a.payload, b"result of spec");
        let x = n.ask(UPSTREAM, Code::GET, None, "r", &[&q, "p=3"], None, b"");
        let a = n.wait(UPSTREAM, x, 30_000).expect("the results");
        assert_eq!(
            (a.code, a.payload.as_slice()),
            (Code::CONTENT, &b"results p=3"[..])
        );
        // The edge saw the requests without the id.
        assert!(n
            .edge_saw
            .iter()
            .any(|(p, q)| p == "r" && q == &["p=3".to_string()]));
        assert!(n
            .edge_saw
            .iter()
            .all(|(_, q)| !q.iter().any(|q| q.starts_with("id="))));
        assert_eq!(n.broker.stats().edge_relayed, 2);
    }
}

#[test]
fn an_unknown_edge_and_bad_requests_are_answered_at_once() {
    let mut n = Net::new(0, 5);
    n.register();
    let x = n.ask(UPSTREAM, Code::GET, None, "r", &["id=99"], None, b"");
    let a = n.wait(UPSTREAM, x, 1_000).unwrap();
    assert_eq!(
        (a.code, a.payload.as_slice()),
        (Code::NOT_FOUND, &b"unknown edge"[..])
    );
    assert_eq!(n.broker.stats().unknown_edge, 1);
    let x = n.ask(UPSTREAM, Code::GET, None, "r", &[], None, b"");
    assert_eq!(n.wait(UPSTREAM, x, 1_000).unwrap().code, Code::BAD_REQUEST);
    let x = n.ask(UPSTREAM, Code::GET, None, "p", &["id=7"], None, b"");
    assert_eq!(
        n.wait(UPSTREAM, x, 1_000).unwrap().code,
        Code::METHOD_NOT_ALLOWED
    );
    let x = n.ask(
        UPSTREAM,
        Code::GET,
        None,
        ".well-known/core",
        &[],
        None,
        b"",
    );
    let a = n.wait(UPSTREAM, x, 1_000).unwrap();
    assert_eq!(a.payload, UPSTREAM_LINKS.as_bytes());
    assert!(n.edge_saw.is_empty());
}

#[test]
fn a_request_for_an_edge_briefly_away_is_held_and_sent_when_it_is_heard_from() {
    let mut n = Net::new(0, 9);
    n.register();
    n.edge_away = true;
    let q = id_query();
    let x = n.ask(UPSTREAM, Code::GET, None, "r", &[&q], None, b"");
    // Well past one attempt: held, no answer yet.
    n.run(5_000);
    assert!(!n.answers.contains_key(&(UPSTREAM, x)));
    assert!(n.broker.stats().held >= 1);
    assert!(n.edge_saw.is_empty());
    // The edge is back and speaks (a /c request): the held request goes out.
    n.edge_away = false;
    let c = n.ask(EDGE, Code::GET, None, "c", &[&q], None, b"");
    let a = n
        .wait(UPSTREAM, x, 5_000)
        .expect("delivered after the edge came back");
    assert_eq!(a.code, Code::CONTENT);
    assert_eq!(n.edge_saw.len(), 1);
    n.wait(EDGE, c, 10_000).expect("its own request answered");
    assert_eq!(n.broker.stats().edge_timeouts, 0);
}

#[test]
fn a_request_for_an_edge_away_too_long_gets_5_04_after_the_hold() {
    let mut n = Net::new(0, 11);
    n.register();
    n.edge_away = true;
    let start = n.now;
    let x = n.ask(
        UPSTREAM,
        Code::POST,
        None,
        "p",
        &[&id_query()],
        Some(content_format::CBOR),
        b"spec",
    );
    let a = n.wait(UPSTREAM, x, 30_000).expect("an answer");
    assert_eq!(a.code, Code::GATEWAY_TIMEOUT);
    assert!(n.now - start >= 10_000, "held for hold_ms first");
    assert_eq!(n.broker.stats().edge_timeouts, 1);
    assert!(n.broker.registry().get(EdgeId(EDGE_ID)).is_some());
}

#[test]
fn an_edge_back_while_an_attempt_runs_out_gets_the_request_again_at_once() {
    // The attempt ends by the CoAP exchange's failure (its retransmissions end by 3.15 s, it
    // fails by 6.75 s), not by attempt_ms.
    let mut n = Net::with(0, 13, |c| c.attempt_ms = 20_000);
    n.register();
    n.edge_away = true;
    let q = id_query();
    let x = n.ask(UPSTREAM, Code::GET, None, "r", &[&q], None, b"");
    // Every retransmission of the first attempt is lost.
    n.run(3_500);
    assert!(n.edge_saw.is_empty());
    // Back and speaking while that attempt has yet to fail.
    n.edge_away = false;
    let c = n.ask(EDGE, Code::GET, None, "c", &[&q], None, b"");
    n.wait(EDGE, c, 10_000).expect("its own request answered");
    let a = n
        .wait(UPSTREAM, x, 5_000)
        .expect("delivered, not held until hold_ms");
    assert_eq!(a.code, Code::CONTENT);
}

#[test]
fn the_broker_reports_itself_upstream_soon_after_a_registration_and_then_periodically() {
    let mut n = Net::with(0, 17, |c| c.report_interval_ms = 10_000);
    n.run(100);
    assert_eq!(n.broker_reports.len(), 1, "one at start");
    assert_eq!(n.broker_reports[0].total_edges, 0);
    n.register();
    n.run(1_500);
    let last = n.broker_reports.last().unwrap();
    assert_eq!(
        n.broker_reports.len(),
        2,
        "brought forward by the registration"
    );
    assert_eq!(last.total_edges, 1);
    let e = &last.edges[0];
    assert_eq!(
        (e.id, e.name.as_str(), e.region.as_str(), e.registered),
        (EDGE_ID, "e7", "eu", true)
    );
    n.run(10_000);
    assert_eq!(n.broker_reports.len(), 3, "then every report_interval_ms");
}
