//! The control conversation ([`Centre`]) over the real [`Uplink`] and a small in-test broker
//! (registration directory, configuration resource, uplink acks) built on the `qos-coap`
//! endpoint, on the simulated network (`qos-sim`) in virtual time: a perfect link for the
//! state-machine checks, a lossy and duplicating one for the simulation test.

use qos_coap::{content_format, option, Code, Config as CoapConfig, Endpoint, Incoming};
use qos_edge_core::centre::{any_probe, Centre, CentreConfig, CentreEvent, Identity, Limits};
use qos_edge_core::outbox::Outbox;
use qos_edge_core::uplink::{Received, Uplink, UplinkConfig, MSG};
use qos_sim::{LinkConfig, Net};
use qos_wire::codec::List;
use qos_wire::config::{ConfigReport, EdgeConfig};
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::probe::{ProbeKind, ProbeSpec};
use qos_wire::summary::Summary;
use qos_wire::uplink::{Ack, Batch};

type Up = Uplink<u16, 2, 16, 256>;
type Srv = Endpoint<u16, 4, 16, MSG>;
const EDGE: u16 = 1;
const BROKER: u16 = 10;
const BROKER2: u16 = 11;

fn config_bytes(etag: u32, interval_ms: u32, probes: u16) -> Vec<u8> {
    let specs: Vec<ProbeSpec<'static>> = (1..=probes)
        .map(|i| ProbeSpec {
            id: ProbeId(i),
            interval_ms,
            timeout_ms: 1_000,
            kind: ProbeKind::Tcp {
                target: "127.0.0.1:9",
            },
        })
        .collect();
    let cfg = EdgeConfig {
        etag,
        window_s: 10,
        probes: List::from_slice(&specs),
        rules: List::from_slice(&[]),
    };
    let mut buf = vec![0u8; 2048];
    let n = cfg.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Two probes with the same id: `EdgeConfig::decode` refuses it.
fn invalid_config(etag: u32) -> Vec<u8> {
    let spec = ProbeSpec {
        id: ProbeId(1),
        interval_ms: 1_000,
        timeout_ms: 500,
        kind: ProbeKind::Tcp {
            target: "127.0.0.1:9",
        },
    };
    let specs = [spec, spec];
    let cfg = EdgeConfig {
        etag,
        window_s: 10,
        probes: List::from_slice(&specs),
        rules: List::from_slice(&[]),
    };
    let mut buf = vec![0u8; 2048];
    let n = cfg.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// What the broker serves at `/c`.
#[derive(Clone)]
enum Serve {
    NotFound,
    Config(u32, Vec<u8>),
    /// A 2.05 with a Block2 option saying more blocks follow.
    Blockwise(u32, Vec<u8>),
}

struct Broker {
    srv: Srv,
    serve: Serve,
    /// Uri-Query items of each registration.
    registrations: Vec<Vec<String>>,
    refreshes: u32,
    deletes: u32,
    /// Forget registrations (a refresh gets 4.04).
    forget: bool,
    /// Not a directory: `POST /rd` gets 4.04 (a bare super-manager).
    no_directory: bool,
    /// Registration attempts (answered or not).
    register_attempts: u32,
    /// ETag option of each GET /c.
    gets: Vec<Option<u32>>,
    reports: Vec<(u32, bool, String)>,
    next_reg: u32,
}

impl Broker {
    fn new() -> Self {
        Broker {
            srv: Srv::new(CoapConfig::default(), 99).unwrap(),
            serve: Serve::NotFound,
            registrations: vec![],
            refreshes: 0,
            deletes: 0,
            forget: false,
            no_directory: false,
            register_attempts: 0,
            gets: vec![],
            reports: vec![],
            next_reg: 1,
        }
    }

    fn handle(&mut self, now: u64, from: u16, bytes: &[u8]) {
        let Some(Incoming::Request(req)) = self.srv.handle_datagram(now, from, bytes) else {
            return;
        };
        let m = &req.message;
        let path: Vec<String> = m
            .uri_path()
            .map(|s| String::from_utf8_lossy(s).into())
            .collect();
        let queries: Vec<String> = m
            .uri_queries()
            .map(|s| String::from_utf8_lossy(s).into())
            .collect();
        let h = req.handle;
        let code = m.code();
        let empty = |_: &mut qos_coap::MessageWriter<'_>| Ok(());
        let segs: Vec<&str> = path.iter().map(String::as_str).collect();
        match (code, &segs[..]) {
            (Code::POST, ["rd"]) if self.no_directory => {
                self.register_attempts += 1;
                self.srv.respond(now, &h, Code::NOT_FOUND, empty).unwrap();
            }
            (Code::POST, ["rd"]) => {
                assert_eq!(m.payload(), qos_wire::registration::EDGE_LINKS.as_bytes());
                self.registrations.push(queries);
                let n = self.next_reg.to_string();
                self.next_reg += 1;
                self.srv
                    .respond(now, &h, Code::CREATED, |w| {
                        w.option(option::LOCATION_PATH, b"rd")?;
                        w.option(option::LOCATION_PATH, n.as_bytes())
                    })
                    .unwrap();
            }
            (Code::POST, ["rd", _]) => {
                self.refreshes += 1;
                let c = if self.forget {
                    Code::NOT_FOUND
                } else {
                    Code::CHANGED
                };
                self.srv.respond(now, &h, c, empty).unwrap();
            }
            (Code::DELETE, ["rd", _]) => {
                self.deletes += 1;
                self.srv.respond(now, &h, Code::DELETED, empty).unwrap();
            }
            (Code::GET, ["c"]) => {
                assert_eq!(queries, ["id=7"]);
                let etag = m
                    .option(option::ETAG)
                    .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
                self.gets.push(etag);
                match self.serve.clone() {
                    Serve::NotFound => self.srv.respond(now, &h, Code::NOT_FOUND, empty),
                    Serve::Config(e, _) if Some(e) == etag => {
                        self.srv.respond(now, &h, Code::VALID, |w| {
                            w.option(option::ETAG, &e.to_be_bytes())
                        })
                    }
                    Serve::Config(e, body) | Serve::Blockwise(e, body) => {
                        let block = matches!(self.serve, Serve::Blockwise(..));
                        self.srv.respond(now, &h, Code::CONTENT, |w| {
                            w.option(option::ETAG, &e.to_be_bytes())?;
                            w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                            if block {
                                w.uint_option(option::BLOCK2, 0b1110)?;
                            }
                            w.payload(&body[..body.len().min(1024)])
                        })
                    }
                }
                .unwrap();
            }
            (Code::POST, ["c"]) => {
                assert_eq!(queries, ["id=7"]);
                assert_eq!(m.content_format(), Some(content_format::CBOR));
                let r = ConfigReport::decode(m.payload()).unwrap();
                if !req.duplicate {
                    self.reports
                        .push((r.etag, r.accepted, r.reason.to_string()));
                }
                self.srv.respond(now, &h, Code::CHANGED, empty).unwrap();
            }
            (Code::POST, ["u"]) => {
                let b = Batch::decode(m.payload()).unwrap();
                let mut buf = [0u8; 16];
                let n = Ack {
                    acked: b.last_seq(),
                }
                .encode(&mut buf)
                .unwrap();
                self.srv
                    .respond(now, &h, Code::CHANGED, |w| w.payload(&buf[..n]))
                    .unwrap();
            }
            other => panic!("unexpected request {other:?}"),
        }
    }
}

struct Edge {
    up: Up,
    centre: Centre<u16>,
    /// Configurations applied, in order (etag, probe interval).
    applied: Vec<(u32, u32)>,
    rejected: Vec<(u32, String)>,
    unchanged: u32,
    not_found: u32,
    stored: Option<Vec<u8>>,
}

const LIMITS: Limits = Limits {
    max_probes: 4,
    max_rules: 4,
    probe: any_probe,
};

impl Edge {
    fn new(brokers: &[u16], cfg: CentreConfig) -> Self {
        let up = Up::new(
            EdgeId(7),
            brokers,
            UplinkConfig::default(),
            Outbox::new(Seq::first_of_epoch(1)),
            3,
        )
        .unwrap();
        let centre = Centre::new(
            Identity {
                name: "edge-7",
                region: "eu",
                id: EdgeId(7),
                fw: "0.1.0",
            },
            cfg,
            None,
        )
        .unwrap();
        Edge {
            up,
            centre,
            applied: vec![],
            rejected: vec![],
            unchanged: 0,
            not_found: 0,
            stored: None,
        }
    }

    fn handle(&mut self, now: u64, from: u16, bytes: &[u8]) {
        let mut buf = [0u8; 1024];
        match self.up.handle(now, from, bytes) {
            Some(Received::Control { exchange, message }) => {
                match self
                    .centre
                    .handle_answer(now, exchange, &message, &mut buf, &LIMITS)
                {
                    Some(CentreEvent::Apply { config, bytes }) => {
                        let interval = config.probes.iter().next().unwrap().interval_ms;
                        self.applied.push((config.etag, interval));
                        self.stored = Some(bytes.to_vec());
                        self.centre.applied(config.etag, Ok(()));
                    }
                    Some(CentreEvent::Rejected { etag, reason }) => {
                        self.rejected.push((etag, reason.as_str().into()))
                    }
                    Some(CentreEvent::Unchanged) => self.unchanged += 1,
                    Some(CentreEvent::NoCentralConfig) => self.not_found += 1,
                    _ => {}
                }
            }
            Some(Received::Request(_)) => panic!("no requests expected"),
            None => {}
        }
    }

    fn poll(&mut self, now: u64) {
        self.up.poll(now);
        self.centre.poll(now, &mut self.up);
    }

    fn timeout(&self) -> Option<u64> {
        [self.up.poll_timeout(), self.centre.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

struct World {
    net: Net<u16>,
    edge: Edge,
    brokers: Vec<(u16, Broker)>,
    now: u64,
}

impl World {
    fn new(link: LinkConfig, seed: u64, cfg: CentreConfig, brokers: &[u16]) -> Self {
        World {
            net: Net::with_default_link(seed, link),
            edge: Edge::new(brokers, cfg),
            brokers: brokers.iter().map(|&b| (b, Broker::new())).collect(),
            now: 0,
        }
    }

    fn broker(&mut self) -> &mut Broker {
        &mut self.brokers[0].1
    }

    /// Run until virtual time `until`.
    fn run_until(&mut self, until: u64) {
        let mut buf = [0u8; MSG];
        loop {
            let now = self.now;
            self.net.advance(now);
            while let Some(d) = self.net.deliver(now) {
                if d.to == EDGE {
                    self.edge.handle(now, d.from, &d.bytes);
                } else if let Some((_, b)) = self.brokers.iter_mut().find(|(a, _)| *a == d.to) {
                    b.handle(now, d.from, &d.bytes);
                }
            }
            self.edge.poll(now);
            while let Some((to, n)) = self.edge.up.poll_transmit(now, &mut buf) {
                self.net.send(now, EDGE, to, &buf[..n]);
            }
            for (addr, b) in &mut self.brokers {
                b.srv.handle_timeout(now);
                while let Some((to, n)) = b.srv.poll_transmit(now, &mut buf) {
                    self.net.send(now, *addr, to, &buf[..n]);
                }
            }
            let next = [
                self.net.next_delivery(),
                self.edge.timeout(),
                self.brokers
                    .iter()
                    .filter_map(|b| b.1.srv.poll_timeout())
                    .min(),
            ]
            .into_iter()
            .flatten()
            .filter(|&t| t > now)
            .min()
            .unwrap_or(until)
            .max(now + 1);
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
        }
    }
}

fn cfg(poll_ms: u64) -> CentreConfig {
    CentreConfig {
        lifetime_s: 120,
        config_poll_ms: poll_ms,
        retry_ms: 5_000,
    }
}

#[test]
fn registers_with_the_contract_query_and_polls_right_after() {
    let mut w = World::new(LinkConfig::perfect(1), 1, cfg(60_000), &[BROKER]);
    w.run_until(100);
    let b = w.broker();
    assert_eq!(
        b.registrations,
        [vec!["ep=edge-7", "d=eu", "lt=120", "id=7", "fw=0.1.0"]]
    );
    assert_eq!(
        b.gets,
        [None],
        "polled right after registering, no ETag yet"
    );
    assert_eq!(w.edge.not_found, 1, "4.04: the local configuration stays");
    assert_eq!(w.edge.centre.lease().location(), Some("rd/1"));
}

#[test]
fn lease_is_refreshed_at_half_the_lifetime_and_renewed_after_4_04() {
    let mut w = World::new(LinkConfig::perfect(1), 2, cfg(0), &[BROKER]);
    w.run_until(59_000);
    assert_eq!(w.broker().refreshes, 0);
    w.run_until(61_000);
    assert_eq!(w.broker().refreshes, 1, "refreshed at lifetime/2 = 60 s");
    w.run_until(121_000);
    assert_eq!(w.broker().refreshes, 2);
    assert!(w.broker().gets.is_empty(), "poll disabled with 0");
    w.broker().forget = true;
    w.run_until(181_000);
    assert_eq!(w.broker().refreshes, 3);
    assert_eq!(
        w.broker().registrations.len(),
        2,
        "a 4.04 on refresh registers again at once"
    );
    assert_eq!(w.edge.centre.lease().location(), Some("rd/2"));
}

#[test]
fn config_poll_etag_valid_and_rejection() {
    let mut w = World::new(LinkConfig::perfect(1), 3, cfg(10_000), &[BROKER]);
    let a = config_bytes(0xA, 5_000, 2);
    w.broker().serve = Serve::Config(0xA, a.clone());
    w.run_until(100);
    assert_eq!(w.edge.applied, [(0xA, 5_000)]);
    assert_eq!(w.edge.stored.as_deref(), Some(&a[..]), "bytes to persist");
    assert_eq!(w.broker().reports, [(0xA, true, String::new())]);
    // next poll carries the ETag and gets 2.03
    w.run_until(10_100);
    assert_eq!(w.broker().gets, [None, Some(0xA)]);
    assert_eq!(w.edge.unchanged, 1);
    assert_eq!(w.edge.applied.len(), 1);
    // an invalid configuration: refused with the reason, the old one stays in force
    w.broker().serve = Serve::Config(0xB, invalid_config(0xB));
    w.run_until(20_100);
    assert_eq!(
        w.edge.rejected,
        [(0xB, "invalid value: duplicate probe id".to_string())]
    );
    assert_eq!(w.edge.centre.applied_etag(), Some(0xA));
    assert_eq!(
        w.broker().reports.last().unwrap(),
        &(0xB, false, "invalid value: duplicate probe id".to_string())
    );
    assert_eq!(
        w.broker().gets.last(),
        Some(&Some(0xA)),
        "still asks with A"
    );
    // beyond this edge's capacity
    w.broker().serve = Serve::Config(0xC, config_bytes(0xC, 5_000, 5));
    w.run_until(30_100);
    assert_eq!(w.edge.rejected.last().unwrap().1, "too many probes (5 > 4)");
    // larger than one message
    w.broker().serve = Serve::Blockwise(0xD, config_bytes(0xD, 5_000, 1));
    w.run_until(40_100);
    assert_eq!(w.edge.rejected.last().unwrap(), &(0xD, "too large".into()));
    assert_eq!(w.broker().reports.last().unwrap().2, "too large");
    // the centre drops the configuration: 4.04 keeps what is in force
    w.broker().serve = Serve::NotFound;
    w.run_until(50_100);
    assert_eq!(w.edge.not_found, 1);
    assert_eq!(w.edge.centre.applied_etag(), Some(0xA));
}

#[test]
fn a_broker_change_registers_again_with_the_applied_etag() {
    let mut w = World::new(LinkConfig::perfect(1), 4, cfg(60_000), &[BROKER, BROKER2]);
    w.broker().serve = Serve::Config(5, config_bytes(5, 2_000, 1));
    w.run_until(100);
    assert_eq!(w.edge.centre.applied_etag(), Some(5));
    // the first broker goes silent; a batch fails over to the second
    w.net.block(EDGE, BROKER);
    let s: Summary<16> = Summary::new(ProbeId(1), 60, 60);
    w.edge.up.push_summary(&s).unwrap();
    w.run_until(30_000);
    assert_eq!(w.edge.up.broker(), BROKER2);
    let second = &w.brokers[1].1;
    assert_eq!(second.registrations.len(), 1);
    assert!(second.registrations[0].contains(&"cfg=5".to_string()));
    assert_eq!(w.edge.up.outbox().len(), 0, "the batch got through");
}

#[test]
fn a_peer_without_directory_still_serves_the_configuration_and_is_asked_rarely() {
    let mut w = World::new(LinkConfig::perfect(1), 6, cfg(60_000), &[BROKER]);
    w.broker().no_directory = true;
    w.broker().serve = Serve::Config(3, config_bytes(3, 1_000, 1));
    w.run_until(1_000);
    assert_eq!(w.edge.applied, [(3, 1_000)], "polled at start");
    w.run_until(600_000);
    // back-off 5, 10, 20, 40, 60, 60, ... s
    let attempts = w.broker().register_attempts;
    assert!(
        (10..=14).contains(&attempts),
        "{attempts} attempts in 10 min"
    );
    assert_eq!(w.edge.up.outbox().stats().dropped, 0);
}

#[test]
fn clean_stop_deletes_the_registration() {
    let mut w = World::new(LinkConfig::perfect(1), 5, cfg(0), &[BROKER]);
    w.run_until(100);
    assert!(w.edge.centre.stop(100, &mut w.edge.up));
    w.run_until(200);
    assert_eq!(w.broker().deletes, 1);
    assert!(!w.edge.centre.stopping());
}

/// Simulation: 20 % loss and 20 % duplication both ways. A new configuration is applied
/// exactly once however often its answer arrives, a bad one is refused and reported, and the
/// good one stays in force.
#[test]
fn sim_lossy_link_applies_once_and_refuses_bad() {
    for seed in 0..8 {
        let link = LinkConfig::perfect(5)
            .with_loss(0.2)
            .with_duplicate(0.2)
            .with_delay(2, 40);
        let mut w = World::new(link, seed, cfg(15_000), &[BROKER]);
        w.broker().serve = Serve::Config(0x10, config_bytes(0x10, 1_000, 1));
        w.run_until(120_000);
        assert_eq!(w.edge.applied, [(0x10, 1_000)], "seed {seed}");
        let b2 = config_bytes(0x11, 3_000, 2);
        w.broker().serve = Serve::Config(0x11, b2);
        w.run_until(240_000);
        assert_eq!(
            w.edge.applied,
            [(0x10, 1_000), (0x11, 3_000)],
            "seed {seed}"
        );
        w.broker().serve = Serve::Config(0x12, invalid_config(0x12));
        w.run_until(360_000);
        assert_eq!(w.edge.applied.len(), 2, "seed {seed}");
        assert!(
            w.edge.rejected.iter().all(|r| r.0 == 0x12),
            "seed {seed}: {:?}",
            w.edge.rejected
        );
        assert!(!w.edge.rejected.is_empty(), "seed {seed}");
        assert_eq!(w.edge.centre.applied_etag(), Some(0x11), "seed {seed}");
        assert!(
            w.broker().reports.iter().any(|r| r.0 == 0x12 && !r.1),
            "seed {seed}: the refusal was reported"
        );
        assert!(!w.broker().registrations.is_empty());
    }
}
