//! The same broker logic over a stream upstream (CoAP over TCP/TLS, RFC 8323) and over
//! datagrams, and two brokers chained over a stream, in virtual time. The "connection" is a
//! byte pipe split back into frames with `frame_len`, which the test can cut.

use qos_coap::msg::frame_len;
use qos_coap::{
    content_format, option, Code, Config as CoapConfig, Endpoint, Incoming, Link, Reliability,
    StreamConfig, Transport,
};
use qos_wire::ids::{EdgeId, Seq};
use qos_wire::samples;
use qos_wire::uplink::{Ack, Batch};

use crate::queue::MemoryQueue;
use crate::{Broker, BrokerConfig};

const EDGE: u8 = 1;
const BROKER: u8 = 50;
const REGION: u8 = 60;
const UPSTREAM: u8 = 100;

type Edge = Endpoint<u8, 4, 16, 1152, 64>;
/// The super-manager's side: a link, so it takes a stream or datagrams like `serve`.
type Centre = Link<u8, 16, 64, 1152, 64, 4>;

fn batch(first: u64, n: usize) -> Vec<u8> {
    let summaries: Vec<qos_wire::summary::Summary<16>> = (0..n)
        .map(|i| samples::http_summary(first + i as u64, 60, 0))
        .collect();
    samples::batch(EdgeId(7), Seq(first), 0, &summaries).unwrap()
}

fn config() -> BrokerConfig {
    BrokerConfig {
        upstream: CoapConfig::with_reliability(200, 1.5, 2),
        report_interval_ms: 0,
        retry_initial_ms: 100,
        retry_max_ms: 400,
        ..BrokerConfig::default()
    }
}

fn stream() -> StreamConfig {
    StreamConfig {
        request_timeout_ms: 2_000,
        keepalive_ms: 0,
        ..StreamConfig::default()
    }
}

/// The centre: answers `POST /u` 2.04 with the ack, records the first sequence numbers.
struct Sink {
    link: Centre,
    got: Vec<u64>,
    /// Answers are lost (the connection dies before they leave).
    deaf: bool,
}

impl Sink {
    fn new(transport: Transport) -> Sink {
        Sink {
            link: Centre::with_transport(CoapConfig::default(), stream(), transport, 9).unwrap(),
            got: Vec::new(),
            deaf: false,
        }
    }

    fn take(&mut self, now: u64, from: u8, bytes: &[u8]) {
        if let Some(Incoming::Request(r)) = self.link.handle_datagram(now, from, bytes) {
            let b = Batch::decode(r.message.payload()).unwrap();
            self.got.push(b.first_seq.0);
            let mut ack = [0u8; 16];
            let n = (Ack {
                acked: b.last_seq(),
            })
            .encode(&mut ack)
            .unwrap();
            let h = r.handle;
            self.link
                .respond(now, &h, Code::CHANGED, |w| {
                    w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                    w.payload(&ack[..n])
                })
                .unwrap();
        }
    }
}

/// Splits a byte stream into frames (as a TCP driver does).
fn frames(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Ok(Some(n)) = frame_len(rest) {
        let (f, tail) = rest.split_at(n);
        out.push(f.to_vec());
        rest = tail;
    }
    assert!(rest.is_empty(), "frames are written whole");
    out
}

struct World {
    edge: Edge,
    broker: Broker<u8>,
    sink: Sink,
    /// The broker's upstream is a stream and the connection is up.
    linked: bool,
    stream_up: bool,
    now: u64,
}

impl World {
    fn new(transport: Transport) -> World {
        let broker = Broker::with_upstream_transport(
            config(),
            transport,
            stream(),
            UPSTREAM,
            Box::new(MemoryQueue::new()),
            3,
        )
        .unwrap();
        World {
            edge: Edge::new(CoapConfig::default(), 1).unwrap(),
            broker,
            sink: Sink::new(transport),
            linked: false,
            stream_up: transport == Transport::Stream,
            now: 1_000,
        }
    }

    fn connect(&mut self) {
        self.linked = true;
        self.broker.upstream_connected(self.now);
        self.sink.link.connected(self.now, BROKER);
    }

    fn cut(&mut self) {
        self.linked = false;
        self.broker.upstream_disconnected(self.now);
        self.sink.link.disconnected(self.now, BROKER);
    }

    fn send(&mut self, first: u64) {
        let payload = batch(first, 2);
        self.edge
            .request(
                self.now,
                BROKER,
                Reliability::Confirmable,
                Code::POST,
                |w| {
                    w.uri_path("u")?;
                    w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                    w.payload(&payload)
                },
            )
            .unwrap();
    }

    /// Runs every component until `until`, 10 ms steps.
    fn run(&mut self, until: u64) {
        let mut buf = [0u8; 1152];
        while self.now < until {
            let now = self.now;
            while let Some((_, n)) = self.edge.poll_transmit(now, &mut buf) {
                let d = buf[..n].to_vec();
                self.broker.handle_downstream(now, 0, EDGE, &d);
            }
            self.broker.poll(now);
            while let Some((_, n)) = self.broker.poll_transmit_downstream(now, &mut buf) {
                let d = buf[..n].to_vec();
                let _ = self.edge.handle_datagram(now, BROKER, &d);
            }
            let mut up = Vec::new();
            while let Some((to, n)) = self.broker.poll_transmit_upstream(now, &mut buf) {
                assert_eq!(to, UPSTREAM);
                up.extend_from_slice(&buf[..n]);
                if !self.stream_up {
                    let d = buf[..n].to_vec();
                    self.sink.take(now, BROKER, &d);
                    up.clear();
                }
            }
            if self.stream_up {
                assert!(self.linked || up.is_empty(), "nothing written while cut");
                for f in frames(&up) {
                    self.sink.take(now, BROKER, &f);
                }
            }
            let mut down = Vec::new();
            while let Some((_, n)) = self.sink.link.poll_transmit(now, &mut buf) {
                down.extend_from_slice(&buf[..n]);
                if !self.stream_up && !self.sink.deaf {
                    let d = buf[..n].to_vec();
                    self.broker.handle_upstream(now, UPSTREAM, &d);
                }
            }
            if self.stream_up && !self.sink.deaf {
                for f in frames(&down) {
                    self.broker.handle_upstream(now, UPSTREAM, &f);
                }
            }
            while self.edge.poll_event().is_some() {}
            self.now += 10;
        }
    }
}

#[test]
fn batches_go_up_over_a_stream_and_over_datagrams_alike() {
    for transport in [Transport::Stream, Transport::Datagram] {
        let mut w = World::new(transport);
        if transport == Transport::Stream {
            w.connect();
        }
        for first in [1, 3, 5] {
            w.send(first);
            w.run(w.now + 500);
        }
        assert_eq!(w.sink.got, [1, 3, 5], "{transport:?}");
        assert_eq!(w.broker.stats().forwarded, 3);
        assert_eq!(w.broker.queue_stats().len, 0);
        assert_eq!(w.broker.upstream_transport(), transport);
    }
}

#[test]
fn batches_wait_for_the_connection() {
    let mut w = World::new(Transport::Stream);
    w.send(1);
    w.run(w.now + 500);
    w.send(3);
    w.run(w.now + 500);
    assert!(w.sink.got.is_empty());
    assert_eq!(
        w.broker.stats().acked,
        2,
        "acknowledged to the edge: queued durably"
    );
    w.connect();
    w.run(w.now + 3_000);
    assert_eq!(w.sink.got, [1, 3]);
    assert_eq!(w.broker.queue_stats().len, 0);
}

#[test]
fn a_cut_connection_loses_nothing_acknowledged() {
    let mut w = World::new(Transport::Stream);
    w.connect();
    w.send(1);
    w.run(w.now + 300);
    // The centre stores the next batch but the connection dies before its answer leaves.
    w.sink.deaf = true;
    w.send(3);
    w.run(w.now + 300);
    assert_eq!(w.sink.got, [1, 3]);
    w.cut();
    w.sink.deaf = false;
    assert_eq!(w.broker.queue_stats().len, 1, "kept until answered");
    w.send(5);
    w.run(w.now + 500);
    assert!(w.broker.stats().upstream_failures >= 1);
    w.connect();
    w.run(w.now + 3_000);
    // 3 arrives twice (the centre deduplicates by edge and sequence), 5 once, nothing lost.
    assert_eq!(w.sink.got, [1, 3, 3, 5]);
    assert_eq!(w.broker.queue_stats().len, 0);
}

#[test]
fn brokers_chain_over_a_stream() {
    // Site broker (stream upstream) → region broker (takes the stream downstream, datagrams
    // upstream) → centre.
    let mut site = Broker::with_upstream_transport(
        config(),
        Transport::Stream,
        stream(),
        REGION,
        Box::new(MemoryQueue::new()),
        4,
    )
    .unwrap();
    let mut region = Broker::with_upstream_transport(
        config(),
        Transport::Datagram,
        stream(),
        UPSTREAM,
        Box::new(MemoryQueue::new()),
        5,
    )
    .unwrap();
    let mut centre = Sink::new(Transport::Datagram);
    let mut edge = Edge::new(CoapConfig::default(), 1).unwrap();
    let mut now = 0;
    site.upstream_connected(now);
    assert!(region.downstream_connected(now, BROKER));
    assert!(region.downstream_is_stream(BROKER));
    for first in [1u64, 3] {
        let payload = batch(first, 2);
        edge.request(now, BROKER, Reliability::Confirmable, Code::POST, |w| {
            w.uri_path("u")?;
            w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
            w.payload(&payload)
        })
        .unwrap();
        let mut buf = [0u8; 1152];
        for _ in 0..100 {
            while let Some((_, n)) = edge.poll_transmit(now, &mut buf) {
                let d = buf[..n].to_vec();
                site.handle_downstream(now, 0, EDGE, &d);
            }
            site.poll(now);
            while let Some((_, n)) = site.poll_transmit_downstream(now, &mut buf) {
                let d = buf[..n].to_vec();
                let _ = edge.handle_datagram(now, BROKER, &d);
            }
            let mut up = Vec::new();
            while let Some((_, n)) = site.poll_transmit_upstream(now, &mut buf) {
                up.extend_from_slice(&buf[..n]);
            }
            for f in frames(&up) {
                region.handle_downstream(now, 0, BROKER, &f);
            }
            region.poll(now);
            let mut down = Vec::new();
            while let Some((to, n)) = region.poll_transmit_downstream(now, &mut buf) {
                assert_eq!(to, BROKER);
                down.extend_from_slice(&buf[..n]);
            }
            for f in frames(&down) {
                site.handle_upstream(now, REGION, &f);
            }
            while let Some((_, n)) = region.poll_transmit_upstream(now, &mut buf) {
                let d = buf[..n].to_vec();
                centre.take(now, REGION, &d);
            }
            while let Some((_, n)) = centre.link.poll_transmit(now, &mut buf) {
                let d = buf[..n].to_vec();
                region.handle_upstream(now, UPSTREAM, &d);
            }
            while edge.poll_event().is_some() {}
            now += 10;
        }
    }
    assert_eq!(centre.got, [1, 3]);
    assert_eq!(site.stats().forwarded, 2);
    assert_eq!(region.stats().forwarded, 2);
    assert_eq!(region.stats().acked, 2);
    assert!(
        region.registry().get(EdgeId(7)).is_some(),
        "edge known via the site broker"
    );
}
