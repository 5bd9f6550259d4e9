//! The broker against a scripted edge and upstream, in virtual time.

use std::sync::{Arc, Mutex};

use qos_coap::{
    content_format, option, Code, Config as CoapConfig, Endpoint, Incoming, Message, Reliability,
};
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::samples;
use qos_wire::summary::Summary;
use qos_wire::uplink::{Ack, Batch};

use crate::broker::ReplayConfig;
use crate::queue::{MemoryQueue, NewBatch, Queue, QueueError, QueueId, QueueStats, QueuedBatch};
use crate::{Broker, BrokerConfig, WELL_KNOWN_CORE};

/// A queue the test can reach while the broker owns it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<MemoryQueue>>);

impl Queue for Shared {
    fn append_all(&mut self, batches: &[NewBatch<'_>]) -> Result<Vec<QueueId>, QueueError> {
        self.0.lock().unwrap().append_all(batches)
    }
    fn oldest(&mut self) -> Result<Option<QueuedBatch>, QueueError> {
        self.0.lock().unwrap().oldest()
    }
    fn heads(&mut self, n: usize) -> Result<Vec<(QueueId, EdgeId)>, QueueError> {
        self.0.lock().unwrap().heads(n)
    }
    fn get(&mut self, id: QueueId) -> Result<Option<QueuedBatch>, QueueError> {
        self.0.lock().unwrap().get(id)
    }
    fn oldest_live(&mut self, since_ms: u64) -> Result<Option<QueuedBatch>, QueueError> {
        self.0.lock().unwrap().oldest_live(since_ms)
    }
    fn remove(&mut self, id: QueueId) -> Result<bool, QueueError> {
        self.0.lock().unwrap().remove(id)
    }
    fn stats(&self) -> QueueStats {
        self.0.lock().unwrap().stats()
    }
}

type Peer = Endpoint<u8, 4, 16, 1152, 64>;

const EDGE_A: u8 = 1;
const EDGE_B: u8 = 2;
const BROKER: u8 = 50;
const UPSTREAM: u8 = 100;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Up {
    /// Answers 2.04 with an ack.
    Ack,
    /// Answers with this code.
    Answer(Code),
    /// Loses every datagram.
    Down,
    /// Receives and stores, but its answers are lost.
    Deaf,
}

struct Answer {
    code: Code,
    payload: Vec<u8>,
    location: Vec<String>,
    max_age: Option<u32>,
}

struct H {
    broker: Broker<u8>,
    queue: Shared,
    edges: [Peer; 2],
    upstream: Peer,
    mode: Up,
    /// Payloads of the batch requests the upstream received (retransmissions included once per
    /// datagram, so a count above the batches means retries).
    got: Vec<Vec<u8>>,
    /// Datagrams the broker sent upstream, lost or not.
    sent_up: Vec<Vec<u8>>,
    now: u64,
}

fn config() -> BrokerConfig {
    BrokerConfig {
        // A fast upstream: 200 ms, 2 retransmissions, so an exchange fails within ~1.2 s.
        upstream: CoapConfig::with_reliability(200, 1.5, 2),
        // No reports: the scripted upstream expects batches only (see the relay tests).
        report_interval_ms: 0,
        // No pings: the scripted edges expect answers only (see the link test).
        ping_interval_ms: 0,
        ..BrokerConfig::default()
    }
}

impl H {
    fn new() -> H {
        H::with_queue(Shared::default())
    }

    fn with_queue(queue: Shared) -> H {
        H::with_config(config(), queue)
    }

    fn with_config(config: BrokerConfig, queue: Shared) -> H {
        H {
            broker: Broker::new(config, UPSTREAM, Box::new(queue.clone()), 7).unwrap(),
            queue,
            edges: [
                Peer::new(CoapConfig::default(), 1).unwrap(),
                Peer::new(CoapConfig::default(), 2).unwrap(),
            ],
            upstream: Peer::new(CoapConfig::default(), 3).unwrap(),
            mode: Up::Ack,
            got: Vec::new(),
            sent_up: Vec::new(),
            now: 1_000,
        }
    }

    /// One request from edge `from` (1 or 2), answered synchronously by the broker.
    fn request(
        &mut self,
        from: u8,
        code: Code,
        path: &str,
        queries: &[&str],
        cf: Option<u16>,
        payload: &[u8],
    ) -> Answer {
        let now = self.now;
        let edge = &mut self.edges[usize::from(from - 1)];
        let id = edge
            .request(now, BROKER, Reliability::Confirmable, code, |w| {
                w.uri_path(path)?;
                if let Some(cf) = cf {
                    w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
                }
                for q in queries {
                    w.option(option::URI_QUERY, q.as_bytes())?;
                }
                w.payload(payload)
            })
            .unwrap();
        let mut buf = [0u8; 1152];
        let (to, n) = edge.poll_transmit(now, &mut buf).unwrap();
        assert_eq!(to, BROKER);
        self.broker
            .handle_downstream(now, 1_700_000_000_000 + now, from, &buf[..n]);
        let mut answer = None;
        while let Some((to, n)) = self.broker.poll_transmit_downstream(now, &mut buf) {
            assert_eq!(to, from);
            let bytes = buf[..n].to_vec();
            let edge = &mut self.edges[usize::from(from - 1)];
            if let Some(Incoming::Response { exchange, message }) =
                edge.handle_datagram(now, BROKER, &bytes)
            {
                assert_eq!(exchange, id);
                answer = Some(Answer {
                    code: message.code(),
                    payload: message.payload().to_vec(),
                    location: message
                        .options_numbered(option::LOCATION_PATH)
                        .map(|v| String::from_utf8(v.to_vec()).unwrap())
                        .collect(),
                    max_age: message.uint_option(option::MAX_AGE),
                });
            }
        }
        answer.expect("a piggybacked answer")
    }

    fn post_batch(&mut self, from: u8, payload: &[u8]) -> Answer {
        self.request(
            from,
            Code::POST,
            "u",
            &[],
            Some(content_format::CBOR),
            payload,
        )
    }

    /// Moves upstream datagrams for `ms` of virtual time, in 10 ms steps.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        let mut buf = [0u8; 1152];
        while self.now < end {
            self.now += 10;
            let now = self.now;
            self.broker.poll(now);
            while let Some((to, n)) = self.broker.poll_transmit_upstream(now, &mut buf) {
                assert_eq!(to, UPSTREAM);
                let bytes = buf[..n].to_vec();
                self.sent_up.push(bytes.clone());
                if self.mode == Up::Down {
                    continue;
                }
                if self.mode == Up::Deaf {
                    self.got
                        .push(Message::parse(&bytes).unwrap().payload().to_vec());
                    continue;
                }
                if let Some(Incoming::Request(req)) =
                    self.upstream.handle_datagram(now, BROKER, &bytes)
                {
                    assert!(req.message.path_is("u"));
                    assert_eq!(req.message.code(), Code::POST);
                    assert_eq!(req.message.content_format(), Some(content_format::CBOR));
                    let payload = req.message.payload().to_vec();
                    self.got.push(payload.clone());
                    let (code, body) = match self.mode {
                        Up::Ack => {
                            let b = Batch::decode(&payload).unwrap();
                            let mut ack = [0u8; 16];
                            let n = Ack {
                                acked: b.last_seq(),
                            }
                            .encode(&mut ack)
                            .unwrap();
                            (Code::CHANGED, ack[..n].to_vec())
                        }
                        Up::Answer(code) => (code, Vec::new()),
                        Up::Down | Up::Deaf => unreachable!(),
                    };
                    self.upstream
                        .respond(now, &req.handle, code, |w| w.payload(&body))
                        .unwrap();
                }
                let mut out = [0u8; 1152];
                while let Some((to, n)) = self.upstream.poll_transmit(now, &mut out) {
                    assert_eq!(to, BROKER);
                    let answer = out[..n].to_vec();
                    self.broker.handle_upstream(now, UPSTREAM, &answer);
                }
            }
        }
    }

    /// Advances 10 ms and lets at most one datagram reach the (acknowledging) upstream, whose
    /// answer comes straight back; returns its payload.
    fn deliver_one(&mut self) -> Option<Vec<u8>> {
        self.now += 10;
        let now = self.now;
        self.broker.poll(now);
        let mut buf = [0u8; 1152];
        let (to, n) = self.broker.poll_transmit_upstream(now, &mut buf)?;
        assert_eq!(to, UPSTREAM);
        let Some(Incoming::Request(req)) = self.upstream.handle_datagram(now, BROKER, &buf[..n])
        else {
            return None;
        };
        let payload = req.message.payload().to_vec();
        let b = Batch::decode(&payload).unwrap();
        let mut ack = [0u8; 16];
        let len = Ack {
            acked: b.last_seq(),
        }
        .encode(&mut ack)
        .unwrap();
        self.upstream
            .respond(now, &req.handle, Code::CHANGED, |w| w.payload(&ack[..len]))
            .unwrap();
        let mut out = [0u8; 1152];
        while let Some((_, m)) = self.upstream.poll_transmit(now, &mut out) {
            let answer = out[..m].to_vec();
            self.broker.handle_upstream(now, UPSTREAM, &answer);
        }
        self.got.push(payload.clone());
        Some(payload)
    }

    fn queued(&self) -> u64 {
        self.queue.stats().len
    }
}

fn batch(edge: u32, first: u64, n: usize) -> Vec<u8> {
    let summaries: Vec<Summary<16>> = (0..n)
        .map(|i| samples::http_summary(first + i as u64, 60, 0))
        .collect();
    samples::batch(EdgeId(edge), Seq(first), 0, &summaries).unwrap()
}

fn acked(a: &Answer) -> u64 {
    assert_eq!(
        a.code,
        Code::CHANGED,
        "{:?}",
        String::from_utf8_lossy(&a.payload)
    );
    Ack::decode(&a.payload).unwrap().acked.0
}

/// Distinct payloads, in the order first seen.
fn distinct(list: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for p in list {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// Payloads of the requests in `datagrams`.
fn payloads(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    datagrams
        .iter()
        .map(|d| Message::parse(d).unwrap().payload().to_vec())
        .collect()
}

#[test]
fn a_batch_is_acked_only_after_a_durable_append() {
    let mut h = H::new();
    h.queue.0.lock().unwrap().set_failing(true);
    let b = batch(4, 10, 2);
    let a = h.post_batch(EDGE_A, &b);
    assert_eq!(a.code, Code::SERVICE_UNAVAILABLE);
    let s = h.broker.stats();
    assert_eq!((s.received, s.acked, s.queue_failures), (1, 0, 1));
    assert_eq!(h.queue.0.lock().unwrap().items().count(), 0);
    assert!(h.broker.registry().get(EdgeId(4)).is_none());

    // the edge sends it again once the queue works: acked with the batch's last seq
    h.queue.0.lock().unwrap().set_failing(false);
    let a = h.post_batch(EDGE_A, &b);
    assert_eq!(acked(&a), 11);
    assert_eq!(h.queued(), 1);
    let queued = h.queue.0.lock().unwrap().oldest().unwrap().unwrap();
    assert_eq!(
        (queued.edge, queued.first_seq, queued.last_seq),
        (EdgeId(4), Seq(10), Seq(11))
    );
    assert_eq!(queued.payload, b);
    assert_eq!(h.broker.stats().acked, 1);
    let e = h.broker.registry().get(EdgeId(4)).unwrap();
    assert_eq!(
        (e.batches, e.last_seq, e.address),
        (1, Some(Seq(11)), EDGE_A)
    );
}

/// A `POST /u` of `payload` from edge `from`, as the datagram the broker would receive.
fn uplink_datagram(h: &mut H, from: u8, payload: &[u8]) -> Vec<u8> {
    let now = h.now;
    let edge = &mut h.edges[usize::from(from - 1)];
    edge.request(now, BROKER, Reliability::Confirmable, Code::POST, |w| {
        w.uri_path("u")?;
        w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
        w.payload(payload)
    })
    .unwrap();
    let mut buf = [0u8; 1152];
    let (_, n) = edge.poll_transmit(now, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// What the broker sends to edges now: (edge, code, payload) of each answer.
fn answers(h: &mut H) -> Vec<(u8, Code, Vec<u8>)> {
    let mut buf = [0u8; 1152];
    let mut out = Vec::new();
    while let Some((to, n)) = h.broker.poll_transmit_downstream(h.now, &mut buf) {
        let bytes = buf[..n].to_vec();
        if let Some(Incoming::Response { message, .. }) =
            h.edges[usize::from(to - 1)].handle_datagram(h.now, BROKER, &bytes)
        {
            out.push((to, message.code(), message.payload().to_vec()));
        }
    }
    out
}

/// Edges A and B each send a batch, and A sends its batch again, all in one group left open;
/// returns the two payloads.
fn two_batches_in_a_group(h: &mut H) -> (Vec<u8>, Vec<u8>) {
    let (a, b) = (batch(4, 10, 2), batch(5, 0, 3));
    let (da, db) = (
        uplink_datagram(h, EDGE_A, &a),
        uplink_datagram(h, EDGE_B, &b),
    );
    let unix = 1_700_000_000_000;
    h.broker.begin_group();
    h.broker.handle_downstream(h.now, unix, EDGE_A, &da);
    h.broker.handle_downstream(h.now, unix, EDGE_B, &db);
    h.broker.handle_downstream(h.now, unix, EDGE_A, &da);
    (a, b)
}

#[test]
fn a_group_is_queued_in_one_append_and_answered_only_after_it() {
    let mut h = H::new();
    // The retransmission within the group is not queued twice (checked below).
    let (a, b) = two_batches_in_a_group(&mut h);
    assert_eq!(
        answers(&mut h),
        vec![],
        "nothing answered before the append"
    );
    assert_eq!(h.queued(), 0);
    h.broker.end_group(h.now);
    let got = answers(&mut h);
    assert_eq!(got.len(), 2, "{got:?}");
    for (edge, code, payload) in &got {
        assert_eq!(*code, Code::CHANGED);
        let want = if *edge == EDGE_A { 11 } else { 2 };
        assert_eq!(Ack::decode(payload).unwrap().acked.0, want);
    }
    let q = h.queue.0.lock().unwrap();
    assert_eq!(q.appends(), 1, "one append for the group");
    let items: Vec<_> = q.items().map(|i| (i.edge, i.payload.clone())).collect();
    assert_eq!(items, vec![(EdgeId(4), a), (EdgeId(5), b)]);
    drop(q);
    assert_eq!(h.broker.stats().acked, 2);
    assert_eq!(
        h.broker.registry().get(EdgeId(5)).unwrap().last_seq,
        Some(Seq(2))
    );
}

#[test]
fn a_group_whose_append_fails_is_answered_5_03_and_nothing_is_queued() {
    let mut h = H::new();
    h.queue.0.lock().unwrap().set_failing(true);
    two_batches_in_a_group(&mut h);
    h.broker.end_group(h.now);
    let codes: Vec<Code> = answers(&mut h).into_iter().map(|(_, c, _)| c).collect();
    assert_eq!(codes, vec![Code::SERVICE_UNAVAILABLE; 2]);
    h.queue.0.lock().unwrap().set_failing(false);
    assert_eq!(h.queued(), 0);
    let s = h.broker.stats();
    assert_eq!((s.received, s.acked, s.queue_failures), (2, 0, 2));
    assert!(h.broker.registry().get(EdgeId(4)).is_none());
}

#[test]
fn queued_batches_are_forwarded_and_removed_on_the_upstream_ack() {
    let mut h = H::new();
    let batches = [batch(1, 0, 1), batch(1, 1, 3), batch(2, 0, 2)];
    assert_eq!(acked(&h.post_batch(EDGE_A, &batches[0])), 0);
    assert_eq!(acked(&h.post_batch(EDGE_A, &batches[1])), 3);
    assert_eq!(acked(&h.post_batch(EDGE_B, &batches[2])), 1);
    h.run(1_000);
    assert_eq!(h.got, batches.to_vec(), "each once, in append order");
    assert_eq!(h.queued(), 0);
    let s = h.broker.stats();
    assert_eq!(
        (s.forwarded, s.upstream_failures, s.dropped_refused),
        (3, 0, 0)
    );
    assert!(!h.broker.forwarding());
    assert!(
        h.broker.poll_timeout().is_none_or(|t| t > h.now),
        "idle: no immediate timer"
    );
}

#[test]
fn an_upstream_that_does_not_answer_gets_the_same_batch_again_later() {
    let mut h = H::new();
    h.mode = Up::Down;
    let b1 = batch(1, 0, 1);
    let b2 = batch(1, 1, 1);
    acked(&h.post_batch(EDGE_A, &b1));
    acked(&h.post_batch(EDGE_A, &b2));
    h.run(20_000);
    let s = h.broker.stats();
    assert!(s.upstream_failures >= 3, "{s:?}");
    assert_eq!(s.forwarded, 0);
    assert_eq!(h.queued(), 2, "nothing leaves the queue without an ack");
    // one exchange at a time, and always the oldest batch
    assert_eq!(distinct(&payloads(&h.sent_up)), vec![b1.clone()]);
    // back-off: 1 s doubling (1, 2, 4, 8 ...) between failed exchanges of ~1.2 s
    assert!(s.upstream_failures <= 6, "{s:?}");

    h.mode = Up::Ack;
    h.run(40_000);
    assert_eq!(h.queued(), 0);
    assert_eq!(distinct(&h.got), vec![b1, b2]);
    assert_eq!(h.broker.stats().forwarded, 2);
}

#[test]
fn order_is_kept_across_edges_and_an_outage() {
    let mut h = H::new();
    h.mode = Up::Down;
    let mut sent = Vec::new();
    for i in 0..10u64 {
        let b = batch(1 + (i % 2) as u32, i, 1);
        let from = if i % 2 == 0 { EDGE_A } else { EDGE_B };
        assert_eq!(acked(&h.post_batch(from, &b)), i);
        sent.push(b);
        h.run(300);
    }
    assert_eq!(h.queued(), 10);
    h.mode = Up::Ack;
    h.run(60_000);
    assert_eq!(h.queued(), 0);
    assert_eq!(distinct(&h.got), sent);
    assert_eq!(h.broker.stats().forwarded, 10);
}

/// A broker with `window` batches upstream at once, whose upstream takes what comes but
/// answers nothing yet.
fn windowed(window: usize) -> H {
    let config = BrokerConfig {
        upstream_window: window,
        ..config()
    };
    let mut h = H::with_config(config, Shared::default());
    h.mode = Up::Deaf;
    h
}

#[test]
fn a_window_sends_several_edges_at_once_and_each_edge_one_at_a_time() {
    let mut h = windowed(3);
    let (a0, a1, a2) = (batch(1, 0, 1), batch(1, 1, 1), batch(1, 2, 1));
    let (b0, c0) = (batch(2, 0, 1), batch(3, 0, 1));
    for b in [&a0, &a1, &a2, &b0, &c0] {
        h.post_batch(EDGE_A, b);
        h.run(10);
    }
    assert_eq!(
        distinct(&h.got),
        vec![a0.clone(), b0.clone(), c0.clone()],
        "the first batch of each of three edges, none of edge 1's next ones"
    );
    h.mode = Up::Ack;
    h.run(60_000);
    assert_eq!(distinct(&h.got), vec![a0, b0, c0, a1, a2]);
    assert_eq!(h.queued(), 0);
    assert_eq!(h.broker.stats().forwarded, 5);
}

#[test]
fn the_window_looks_no_further_than_the_lookahead() {
    let mut h = windowed(2);
    let n = crate::broker::replay::LOOKAHEAD as u64 + 1;
    for i in 0..n {
        h.post_batch(EDGE_A, &batch(1, i, 1));
    }
    // Edge 2's batch comes after more of edge 1's than the pacer looks at.
    h.post_batch(EDGE_B, &batch(2, 0, 1));
    h.run(10);
    assert_eq!(distinct(&h.got), vec![batch(1, 0, 1)]);
    // Once edge 1's backlog is within reach, edge 2 goes beside it.
    h.mode = Up::Ack;
    h.run(60_000);
    assert_eq!(h.queued(), 0);
    let got = distinct(&h.got);
    assert_eq!(got.len() as u64, n + 1);
    let of_edge_1: Vec<Vec<u8>> = (0..n).map(|i| batch(1, i, 1)).collect();
    let kept: Vec<Vec<u8>> = got.into_iter().filter(|b| of_edge_1.contains(b)).collect();
    assert_eq!(kept, of_edge_1, "edge 1's batches in order");
}

#[test]
fn upstream_errors_are_retried_and_refusals_dropped_and_counted() {
    let mut h = H::new();
    h.mode = Up::Answer(Code::SERVICE_UNAVAILABLE);
    let b1 = batch(1, 0, 1);
    let b2 = batch(1, 1, 1);
    acked(&h.post_batch(EDGE_A, &b1));
    acked(&h.post_batch(EDGE_A, &b2));
    h.run(5_000);
    assert!(h.broker.stats().upstream_failures >= 2);
    assert_eq!(h.queued(), 2);
    assert_eq!(distinct(&h.got), vec![b1.clone()]);

    h.mode = Up::Answer(Code::BAD_REQUEST);
    h.got.clear();
    h.run(40_000);
    let s = h.broker.stats();
    assert_eq!((s.dropped_refused, s.forwarded), (2, 0));
    assert_eq!(h.queued(), 0);
    assert_eq!(h.got, vec![b1, b2]);
}

#[test]
fn batches_left_by_a_previous_run_go_first() {
    let queue = Shared::default();
    let old = batch(3, 0, 2);
    queue
        .clone()
        .append(EdgeId(3), Seq(0), Seq(1), &old, 0)
        .unwrap();
    let mut h = H::with_queue(queue);
    let new = batch(3, 2, 1);
    acked(&h.post_batch(EDGE_A, &new));
    h.run(1_000);
    assert_eq!(h.got, vec![old, new]);
}

#[test]
fn registration_lifecycle_and_lease_expiry() {
    let mut h = H::new();
    let reg = ["ep=site-1", "d=eu-west", "lt=60", "id=9", "fw=1.2.3"];
    let a = h.request(EDGE_A, Code::POST, "rd", &reg, None, b"</c>");
    assert_eq!(a.code, Code::CREATED);
    assert_eq!(a.location, vec!["rd".to_string(), "1".to_string()]);
    let e = h.broker.registry().get(EdgeId(9)).unwrap().clone();
    assert_eq!((e.name.as_str(), e.region.as_str()), ("site-1", "eu-west"));
    assert_eq!(e.firmware, "1.2.3");
    assert!(e.registered(h.now));
    assert_eq!(e.lease_expires_ms, Some(h.now + 60_000));

    // refresh before the end of the lease, with a new lifetime
    h.now += 50_000;
    let a = h.request(EDGE_A, Code::POST, "rd/1", &["lt=120"], None, b"");
    assert_eq!(a.code, Code::CHANGED);
    assert_eq!(
        h.broker.registry().get(EdgeId(9)).unwrap().lease_expires_ms,
        Some(h.now + 120_000)
    );
    // registering again keeps the location
    let a = h.request(EDGE_A, Code::POST, "rd", &reg, None, b"");
    assert_eq!(a.location, vec!["rd".to_string(), "1".to_string()]);
    // removal
    let a = h.request(EDGE_A, Code::DELETE, "rd/1", &[], None, b"");
    assert_eq!(a.code, Code::DELETED);
    assert_eq!(h.broker.registry().registered(h.now), 0);
    let a = h.request(EDGE_A, Code::POST, "rd/1", &[], None, b"");
    assert_eq!(a.code, Code::NOT_FOUND);

    // a new registration gets a new location and expires without refresh
    let a = h.request(EDGE_B, Code::POST, "rd", &reg, None, b"");
    assert_eq!(a.location, vec!["rd".to_string(), "2".to_string()]);
    assert_eq!(h.broker.registry().registered(h.now), 1);
    let expiry = h.broker.registry().next_expiry().unwrap();
    assert_eq!(expiry, h.now + 60_000);
    assert!(h.broker.poll_timeout().unwrap() <= expiry);
    h.run(60_010);
    assert_eq!(h.broker.registry().registered(h.now), 0);
    assert_eq!(h.broker.registry().expired(), 1);
    assert!(!h
        .broker
        .registry()
        .get(EdgeId(9))
        .unwrap()
        .registered(h.now));
    let a = h.request(EDGE_B, Code::POST, "rd/2", &[], None, b"");
    assert_eq!(a.code, Code::NOT_FOUND);
    assert_eq!(h.broker.stats().registrations, 4);
}

#[test]
fn bad_registrations_are_refused_with_the_reason() {
    let mut h = H::new();
    for (q, reason) in [
        (&["d=x", "id=1"][..], "`ep`"),
        (&["ep=a", "id=1"][..], "`d`"),
        (&["ep=a", "d=x"][..], "`id`"),
        (&["ep=a", "d=x", "id=1", "lt=5"][..], "`lt`"),
        (&["ep=a b", "d=x", "id=1"][..], "`ep`"),
    ] {
        let a = h.request(EDGE_A, Code::POST, "rd", q, None, b"");
        assert_eq!(a.code, Code::BAD_REQUEST, "{q:?}");
        let text = String::from_utf8(a.payload).unwrap();
        assert!(text.contains(reason), "{q:?}: {text}");
    }
    assert_eq!(h.broker.stats().rejected_registration, 5);
    assert_eq!(h.broker.registry().edges().count(), 0);
}

#[test]
fn malformed_batches_get_4_00_and_nothing_is_queued() {
    let mut h = H::new();
    let good = batch(1, 0, 1);
    for bad in [
        &b""[..],
        &[0xa0],
        &good[..good.len() - 1],
        &[0x85, 0x02, 0, 0, 0, 0x80],
    ] {
        let a = h.post_batch(EDGE_A, bad);
        assert_eq!(a.code, Code::BAD_REQUEST, "{bad:02x?}");
        assert!(String::from_utf8(a.payload)
            .unwrap()
            .starts_with("bad batch"));
    }
    let a = h.request(EDGE_A, Code::POST, "u", &[], None, &good);
    assert_eq!(a.code, Code::UNSUPPORTED_CONTENT_FORMAT);
    let a = h.request(EDGE_A, Code::GET, "u", &[], None, b"");
    assert_eq!(a.code, Code::METHOD_NOT_ALLOWED);
    let a = h.request(EDGE_A, Code::GET, "nope", &[], None, b"");
    assert_eq!(a.code, Code::NOT_FOUND);
    let s = h.broker.stats();
    assert_eq!(
        (
            s.rejected_bad_batch,
            s.rejected_content_format,
            s.rejected_method,
            s.rejected_not_found
        ),
        (4, 1, 1, 1)
    );
    assert_eq!((s.acked, h.queued()), (0, 0));
    h.run(1_000);
    assert!(h.got.is_empty());
}

#[test]
fn well_known_core_lists_the_directory_the_uplink_and_the_config() {
    let mut h = H::new();
    let a = h.request(EDGE_A, Code::GET, ".well-known/core", &[], None, b"");
    assert_eq!(a.code, Code::CONTENT);
    assert_eq!(a.payload, WELL_KNOWN_CORE.as_bytes());
    assert_eq!(
        WELL_KNOWN_CORE,
        "</rd>;rt=\"core.rd\",</u>;rt=\"qos.uplink\";ct=60,</c>;rt=\"qos.config\";ct=60"
    );
}

#[test]
fn a_retransmitted_batch_is_answered_from_the_cache_not_queued_twice() {
    let mut h = H::new();
    let b = batch(1, 0, 1);
    let now = h.now;
    let edge = &mut h.edges[0];
    edge.request(now, BROKER, Reliability::Confirmable, Code::POST, |w| {
        w.uri_path("u")?;
        w.uint_option(option::CONTENT_FORMAT, 60)?;
        w.payload(&b)
    })
    .unwrap();
    let mut buf = [0u8; 1152];
    let (_, n) = edge.poll_transmit(now, &mut buf).unwrap();
    let datagram = buf[..n].to_vec();
    h.broker.handle_downstream(now, 0, EDGE_A, &datagram);
    h.broker.handle_downstream(now + 100, 0, EDGE_A, &datagram);
    let mut answers = 0;
    while h
        .broker
        .poll_transmit_downstream(now + 100, &mut buf)
        .is_some()
    {
        answers += 1;
    }
    assert_eq!(answers, 2, "the lost ack is sent again");
    assert_eq!((h.queued(), h.broker.stats().acked), (1, 1));
}

#[test]
fn a_restarted_broker_forwards_again_what_was_not_acknowledged_upstream() {
    // The upstream stores the batch but the broker dies before the answer arrives: the batch
    // is still queued, and the next broker over the same queue sends it again (the upstream
    // deduplicates by edge and seq).
    let queue = Shared::default();
    let mut h = H::with_queue(queue.clone());
    h.mode = Up::Deaf;
    let b = batch(5, 0, 2);
    assert_eq!(acked(&h.post_batch(EDGE_A, &b)), 1);
    h.run(100);
    assert_eq!(h.got, vec![b.clone()]);
    drop(h); // the kill

    let mut h = H::with_queue(queue);
    assert_eq!(h.queued(), 1);
    h.run(1_000);
    assert_eq!(h.got, vec![b]);
    assert_eq!((h.queued(), h.broker.stats().forwarded), (0, 1));
}

/// What a block-wise exchange got back.
struct BlockAnswer {
    code: Code,
    block1: Option<option::Block>,
    block2: Option<option::Block>,
    size1: Option<u32>,
    payload: Vec<u8>,
}

/// One request of edge `from` with Block1/Block2/Size1 options, answered synchronously.
#[allow(clippy::too_many_arguments)]
fn block_request(
    h: &mut H,
    from: u8,
    code: Code,
    path: &str,
    block2: Option<option::Block>,
    block1: Option<option::Block>,
    size1: Option<u32>,
    payload: &[u8],
) -> BlockAnswer {
    let now = h.now;
    let edge = &mut h.edges[usize::from(from - 1)];
    edge.request(now, BROKER, Reliability::Confirmable, code, |w| {
        w.uri_path(path)?;
        if code == Code::POST {
            w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
        }
        if let Some(b) = block2 {
            w.block_option(option::BLOCK2, b)?;
        }
        if let Some(b) = block1 {
            w.block_option(option::BLOCK1, b)?;
        }
        if let Some(s) = size1 {
            w.uint_option(option::SIZE1, s)?;
        }
        w.payload(payload)
    })
    .unwrap();
    let mut buf = [0u8; 1152];
    let (_, n) = edge.poll_transmit(now, &mut buf).unwrap();
    h.broker
        .handle_downstream(now, 1_700_000_000_000, from, &buf[..n]);
    let (_, n) = h.broker.poll_transmit_downstream(now, &mut buf).unwrap();
    let bytes = buf[..n].to_vec();
    let edge = &mut h.edges[usize::from(from - 1)];
    match edge.handle_datagram(now, BROKER, &bytes) {
        Some(Incoming::Response { message: m, .. }) => BlockAnswer {
            code: m.code(),
            block1: qos_coap::block::block1_of(&m).unwrap(),
            block2: qos_coap::block::block2_of(&m).unwrap(),
            size1: m.uint_option(option::SIZE1),
            payload: m.payload().to_vec(),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_batch_sent_in_block1_blocks_is_acked_once_queued_in_parts_and_forwarded_whole() {
    let mut h = H::new();
    let body = batch(1, 0, 60);
    assert!(body.len() > 2048, "{}", body.len());
    let mut sender = qos_coap::block::Block1Sender::new(body.len(), 6);
    let mut last = None;
    let mut continues = 0;
    while let Some((b, part)) = sender.next_block(&body) {
        let size1 = (b.num() == 0).then_some(body.len() as u32);
        let a = block_request(&mut h, EDGE_A, Code::POST, "u", None, Some(b), size1, part);
        assert_eq!(a.block1.map(|e| e.num()), Some(b.num()), "Block1 echoed");
        if a.code == Code::CONTINUE {
            continues += 1;
            assert_eq!(h.queued(), 0, "nothing queued before the last block");
        }
        if sender.on_response(a.code, a.block1) == qos_coap::block::SendStep::Done {
            last = Some(a);
        }
    }
    let last = last.expect("a final answer");
    assert!(continues >= 2);
    assert_eq!(last.code, Code::CHANGED);
    assert_eq!(Ack::decode(&last.payload).unwrap().acked, Seq(59));
    assert_eq!(h.broker.stats().acked, 1);
    assert!(h.queued() >= 3, "split into upstream-sized batches");
    h.run(2_000);
    assert_eq!(h.queued(), 0);
    let whole = Batch::decode(&body).unwrap();
    let expected: Vec<_> = whole.records().map(|r| (r.seq, r.raw.to_vec())).collect();
    let mut forwarded = Vec::new();
    for p in distinct(&h.got) {
        assert!(p.len() <= 1024);
        let b = Batch::decode(&p).unwrap();
        forwarded.extend(b.records().map(|r| (r.seq, r.raw.to_vec())));
    }
    assert_eq!(forwarded, expected, "every record once, in order");
}

#[test]
fn block1_refusals_too_large_and_gaps_are_answered_and_counted() {
    let mut h = H::new();
    let block = |num, more| option::Block::new(num, more, 6).unwrap();
    let part = vec![0x55u8; 1024];
    // Announced too large: 4.13 with the limit in Size1.
    let a = block_request(
        &mut h,
        EDGE_A,
        Code::POST,
        "u",
        None,
        Some(block(0, true)),
        Some(100_000),
        &part,
    );
    assert_eq!(a.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(a.size1, Some(crate::broker::blockwise::MAX_BODY as u32));
    // A gap: block 0, then the last block 2 without block 1.
    let a = block_request(
        &mut h,
        EDGE_A,
        Code::POST,
        "u",
        None,
        Some(block(0, true)),
        None,
        &part,
    );
    assert_eq!(a.code, Code::CONTINUE);
    let a = block_request(
        &mut h,
        EDGE_A,
        Code::POST,
        "u",
        None,
        Some(block(2, false)),
        None,
        &part[..10],
    );
    assert_eq!(a.code, Code::REQUEST_ENTITY_INCOMPLETE);
    // Growing past the limit block by block.
    for n in 0..16 {
        let a = block_request(
            &mut h,
            EDGE_A,
            Code::POST,
            "u",
            None,
            Some(block(n, true)),
            None,
            &part,
        );
        assert_eq!(a.code, Code::CONTINUE, "block {n}");
    }
    let a = block_request(
        &mut h,
        EDGE_A,
        Code::POST,
        "u",
        None,
        Some(block(16, false)),
        None,
        &part[..1],
    );
    assert_eq!(a.code, Code::REQUEST_ENTITY_TOO_LARGE);
    let s = h.broker.stats();
    assert_eq!(
        (s.rejected_too_large, s.rejected_incomplete, s.acked),
        (2, 1, 0)
    );
    assert_eq!(h.queued(), 0);
    let report = h.broker.report(h.now);
    let reasons = crate::report::REJECT_REASONS;
    let at = |name| reasons.iter().position(|r| *r == name).unwrap();
    assert_eq!(report.stats.rejected[at("too_large")], 2);
    assert_eq!(report.stats.rejected[at("incomplete")], 1);
}

#[test]
fn well_known_core_is_served_in_block2_slices_on_request() {
    let mut h = H::new();
    let mut fetch = qos_coap::block::Block2Fetch::new(0);
    let mut ask = fetch.first();
    let mut buf = [0u8; 2048];
    let mut rounds = 0;
    let n = loop {
        rounds += 1;
        let a = block_request(
            &mut h,
            EDGE_A,
            Code::GET,
            ".well-known/core",
            Some(ask),
            None,
            None,
            b"",
        );
        assert_eq!(a.code, Code::CONTENT);
        assert!(a.payload.len() <= 16);
        match fetch.on_response(a.block2, &a.payload, &mut buf) {
            qos_coap::block::FetchStep::Next(b) => ask = b,
            qos_coap::block::FetchStep::Done(n) => break n,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(&buf[..n], WELL_KNOWN_CORE.as_bytes());
    assert_eq!(rounds, WELL_KNOWN_CORE.len().div_ceil(16));
    // A block beyond the end: 4.02.
    let beyond = option::Block::new(40, false, 0).unwrap();
    let a = block_request(
        &mut h,
        EDGE_A,
        Code::GET,
        ".well-known/core",
        Some(beyond),
        None,
        None,
        b"",
    );
    assert_eq!(a.code, Code::BAD_OPTION);
}

#[test]
fn pings_measure_round_trip_and_loss_of_a_registered_edge() {
    let mut h = H::new();
    let cfg = BrokerConfig {
        ping_interval_ms: 1_000,
        ping_timeout_ms: 500,
        ..config()
    };
    h.broker = Broker::new(cfg, UPSTREAM, Box::new(h.queue.clone()), 7).unwrap();
    let reg = ["ep=site-1", "d=eu-west", "lt=600", "id=9"];
    assert_eq!(
        h.request(EDGE_A, Code::POST, "rd", &reg, None, b"").code,
        Code::CREATED
    );
    let link = |h: &H| h.broker.registry().get(EdgeId(9)).unwrap().link;
    assert_eq!(link(&h).rtt_ms(), None);
    let mut buf = [0u8; 1152];
    // One ping round per virtual second; the edge's endpoint answers each with a Reset that
    // arrives `delay` ms later; rounds 6 and 8 are lost on the way.
    let mut pings = 0;
    for round in 0..10u64 {
        let delay = if round < 5 { 20 } else { 200 };
        h.now += 1_000;
        let now = h.now;
        h.broker.poll(now);
        let mut resets = Vec::new();
        while let Some((to, n)) = h.broker.poll_transmit_downstream(now, &mut buf) {
            assert_eq!(to, EDGE_A);
            let m = Message::parse(&buf[..n]).unwrap();
            assert_eq!(
                (m.ty(), m.code(), m.token()),
                (qos_coap::MessageType::Confirmable, Code::EMPTY, &[][..])
            );
            pings += 1;
            let edge = &mut h.edges[0];
            assert!(edge.handle_datagram(now, BROKER, &buf[..n]).is_none());
            let mut out = [0u8; 64];
            while let Some((_, k)) = edge.poll_transmit(now, &mut out) {
                resets.push(out[..k].to_vec());
            }
        }
        assert_eq!(resets.len(), 1, "one ping per round, answered by a Reset");
        if round == 6 || round == 8 {
            h.now += 600;
            h.broker.poll(h.now);
            continue;
        }
        h.now += delay;
        for r in resets {
            h.broker.handle_downstream(h.now, 0, EDGE_A, &r);
        }
    }
    assert_eq!(pings, 10);
    let q = link(&h);
    assert_eq!(q.rtt_samples, 8);
    // Smoothed: 5 samples of 20 ms, then 3 of 200 ms pull it towards 200.
    let rtt = q.rtt_ms().unwrap();
    assert!(rtt > 20 && rtt < 200, "{rtt}");
    // 2 of 11 transmissions: 10 pings and the registration.
    assert_eq!(q.loss_permille(), Some(182));
    let report = h.broker.report(h.now);
    assert_eq!(report.edges[0].rtt_ms, Some(rtt));
    assert_eq!(report.edges[0].loss_permille, Some(182));
    // A retransmitted request from the edge counts as a loss too.
    let b = batch(9, 0, 1);
    let now = h.now;
    let edge = &mut h.edges[0];
    edge.request(now, BROKER, Reliability::Confirmable, Code::POST, |w| {
        w.uri_path("u")?;
        w.uint_option(option::CONTENT_FORMAT, 60)?;
        w.payload(&b)
    })
    .unwrap();
    let (_, n) = edge.poll_transmit(now, &mut buf).unwrap();
    let datagram = buf[..n].to_vec();
    h.broker.handle_downstream(now, 0, EDGE_A, &datagram);
    h.broker
        .handle_downstream(now + 3_000, 0, EDGE_A, &datagram);
    let q = link(&h);
    assert_eq!(q.losses, 3);
    assert_eq!(q.loss_permille(), Some(231), "3 of 13 transmissions");
}

/// Edge 1 builds a backlog of `n` batches while the upstream is down; once it is back, edge 2
/// sends a fresh batch every third exchange (and edge 1 one fresh batch) until all is drained.
/// Returns, for each of edge 2's batches, how many of edge 1's batches reached the upstream
/// between its acknowledgement and its own arrival, and the harness.
fn replay_scenario(replay: ReplayConfig, n: u64) -> (Vec<usize>, H) {
    let mut h = H::with_config(BrokerConfig { replay, ..config() }, Shared::default());
    h.mode = Up::Down;
    for i in 0..n {
        acked(&h.post_batch(EDGE_A, &batch(1, i, 1)));
        h.run(20);
    }
    h.run(6_000); // older than live_after_ms
    h.mode = Up::Ack;
    h.got.clear();
    let is_backlog = |p: &Vec<u8>| Batch::decode(p).unwrap().edge == EdgeId(1);
    let mut live_seq = 0u64;
    let mut waiting: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut waits = Vec::new();
    let mut steps = 0u32;
    while h.queued() > 0 || live_seq < 10 {
        steps += 1;
        assert!(steps < 100_000, "no progress");
        let Some(p) = h.deliver_one() else { continue };
        let backlog_so_far = h.got.iter().filter(|p| is_backlog(p)).count();
        if let Some(i) = waiting.iter().position(|(w, _)| *w == p) {
            let (_, at) = waiting.remove(i);
            waits.push(backlog_so_far - at);
        }
        // once the drain runs: a fresh batch of edge 2 every third exchange
        if h.got.len() % 3 == 0 && live_seq < 10 {
            let b = batch(2, live_seq, 1);
            acked(&h.post_batch(EDGE_B, &b));
            waiting.push((b, backlog_so_far));
            live_seq += 1;
            if live_seq == 3 {
                // edge 1 has backlog: its fresh batch must not overtake it
                acked(&h.post_batch(EDGE_A, &batch(1, n, 1)));
            }
        }
    }
    assert!(waiting.is_empty());
    (waits, h)
}

#[test]
fn paced_replay_lets_live_batches_through_while_a_backlog_drains_in_order_per_edge() {
    const N: u64 = 60;
    const K: u32 = 2;
    let replay = ReplayConfig {
        live_after_ms: 5_000,
        backlog_per_live: K,
    };
    let (waits, h) = replay_scenario(replay, N);
    println!("paced: backlog batches each live batch waited behind: {waits:?}");
    assert_eq!(waits.len(), 10);
    // At most K backlog batches started after it was queued, plus the one in flight then.
    assert!(
        waits.iter().all(|w| *w <= K as usize + 1),
        "a live batch waited behind more than {} backlog batches: {waits:?}",
        K + 1
    );
    // Live batches went while the backlog was still draining, not after it.
    let decoded: Vec<Batch> = h.got.iter().map(|p| Batch::decode(p).unwrap()).collect();
    let last_backlog = decoded.iter().rposition(|b| b.edge == EdgeId(1)).unwrap();
    let last_live = decoded.iter().rposition(|b| b.edge == EdgeId(2)).unwrap();
    assert!(
        last_live < last_backlog,
        "all live data before the backlog ended"
    );
    // Each edge in its own order, each batch exactly once (a loss-free run).
    for edge in [1, 2] {
        let seqs: Vec<u64> = decoded
            .iter()
            .filter(|b| b.edge == EdgeId(edge))
            .map(|b| b.first_seq.0)
            .collect();
        let want = if edge == 1 { N + 1 } else { 10 };
        assert_eq!(seqs, (0..want).collect::<Vec<_>>(), "edge {edge}");
    }
    let s = h.broker.stats();
    assert_eq!(s.forwarded, N + 1 + 10);
    assert!(s.forwarded_live_first >= 1, "{s:?}");

    // Without pacing, the first live batch waits for the whole remaining backlog.
    let (waits, _) = replay_scenario(
        ReplayConfig {
            live_after_ms: 0,
            ..replay
        },
        N,
    );
    println!("append order: backlog batches each live batch waited behind: {waits:?}");
    assert!(waits[0] > K as usize + 1, "{waits:?}");
}

/// A broker that gives each edge id one token a second, `burst` at once.
fn edge_limited(burst: u32) -> H {
    let limit = crate::RateLimit {
        rate_per_s: 1,
        burst,
        max_sources: 16,
    };
    let mut h = H::new();
    h.broker = Broker::new(config(), UPSTREAM, Box::new(h.queue.clone()), 7)
        .unwrap()
        .with_edge_rate_limit(limit);
    h
}

#[test]
fn an_edge_over_its_own_rate_gets_4_29_while_another_edge_at_the_same_address_does_not() {
    let mut h = edge_limited(3);
    // Edges 10 (noisy) and 11 (quiet) behind one address (a NAT): both come from EDGE_A.
    let mut refused = 0;
    let mut seq = 0;
    for _ in 0..20 {
        let a = h.post_batch(EDGE_A, &batch(10, seq, 1));
        if a.code == Code::CHANGED {
            assert_eq!(acked(&a), seq);
            seq += 1;
        } else {
            assert_eq!(a.code, Code::TOO_MANY_REQUESTS);
            assert_eq!(a.max_age, Some(1), "one token per second");
            refused += 1;
        }
    }
    assert_eq!((seq, refused), (3, 17), "the burst, then refusals");
    for i in 0..3 {
        let a = h.post_batch(EDGE_A, &batch(11, i, 1));
        assert_eq!(a.code, Code::CHANGED, "the quiet edge, batch {i}");
    }
    // Refused batches are neither queued nor acknowledged: 3 + 3 queued.
    assert_eq!(h.queued(), 6);
    assert_eq!(h.broker.stats().rejected_rate_limited_edge, 17);
    let report = h.broker.report(h.now);
    let at = crate::report::REJECT_REASONS
        .iter()
        .position(|r| *r == "rate_limited_edge")
        .unwrap();
    assert_eq!(report.stats.rejected[at], 17);
    // A second later the noisy edge has a token again.
    h.now += 1_000;
    assert_eq!(h.post_batch(EDGE_A, &batch(10, seq, 1)).code, Code::CHANGED);
}

#[test]
fn registrations_take_their_edges_tokens_too() {
    let mut h = edge_limited(2);
    let reg = |id: &str| {
        ["d=eu-west", "lt=60", "fw=1.2.3"]
            .map(String::from)
            .into_iter()
            .chain([format!("ep=site-{id}"), format!("id={id}")])
            .collect::<Vec<_>>()
    };
    let register = |h: &mut H, id: &str| {
        let q = reg(id);
        let q: Vec<&str> = q.iter().map(String::as_str).collect();
        h.request(EDGE_A, Code::POST, "rd", &q, None, b"")
    };
    // Edge 10 re-registers in a loop: its burst, then 4.29 with Max-Age.
    let codes: Vec<Code> = (0..5).map(|_| register(&mut h, "10").code).collect();
    assert_eq!(codes[..2], [Code::CREATED, Code::CREATED]);
    assert_eq!(codes[2..], [Code::TOO_MANY_REQUESTS; 3]);
    assert_eq!(register(&mut h, "10").max_age, Some(1));
    // Its batches share the bucket: refused too, and nothing queued.
    assert_eq!(
        h.post_batch(EDGE_A, &batch(10, 0, 1)).code,
        Code::TOO_MANY_REQUESTS
    );
    assert_eq!(h.queued(), 0);
    // Another edge at the same address registers, and an update (not a registration) of the
    // noisy one is not refused.
    assert_eq!(register(&mut h, "11").code, Code::CREATED);
    let a = h.request(EDGE_A, Code::POST, "rd/1", &["lt=120"], None, b"");
    assert_eq!(a.code, Code::CHANGED);
    assert_eq!(h.broker.stats().rejected_rate_limited_edge, 5);
    // Edge 10 twice, edge 11, the update.
    assert_eq!(h.broker.stats().registrations, 4);
    h.now += 1_000;
    assert_eq!(
        register(&mut h, "10").code,
        Code::CREATED,
        "a token a second later"
    );
}
