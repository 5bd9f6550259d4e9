//! Round trips and hostile input for every decoder of the wire crate.

use minicbor::Decoder;
use proptest::prelude::*;
use qos_wire::codec::{encode_into, List, WireError};
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::metrics::{Metric, MetricsSample, MAX_METRICS};
use qos_wire::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use qos_wire::phase::Phase;
use qos_wire::probe::{ProbeKind, ProbeSpec, Step};
use qos_wire::samples::{self, Rng};
use qos_wire::summary::Summary;
use qos_wire::uplink::{Ack, Batch, RecordKind};

type S = Summary<128>;

fn encode_summary(s: &S) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = encode_into(&mut buf, |e| s.encode(e)).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn summary_round_trip_and_size() {
    for (interval, failures) in [(1, 0), (1, 2), (5, 0), (10, 1), (60, 0)] {
        let s: S = samples::http_summary(7, interval, failures);
        let bytes = encode_summary(&s);
        let back = S::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(back, s, "interval {interval}");
        assert_eq!(back.runs(), 60 / interval);
    }
}

#[test]
fn summary_records_failures_and_time_to_error() {
    let s: S = samples::http_summary(3, 10, 2);
    assert_eq!((s.ok, s.failed), (4, 2));
    assert_eq!(s.errors[ErrorClass::Timeout as usize], 2);
    assert_eq!(s.phases[qos_wire::summary::TIME_TO_ERROR].count, 2);
    assert_eq!(s.phase(Phase::Total).count, 4);
    assert_eq!(
        s.phase(Phase::Dns).count,
        6,
        "failed runs still resolved the name"
    );
    assert_eq!(s.sketch.count(), 4);
}

#[test]
fn summary_merge_is_exact_for_counts() {
    let mut a: S = samples::http_summary(1, 5, 1);
    let b: S = samples::http_summary(2, 5, 0);
    let (ta, tb) = (a.phase(Phase::Total).sum, b.phase(Phase::Total).sum);
    a.merge(&b);
    assert_eq!(a.runs(), 24);
    assert_eq!(a.phase(Phase::Total).sum, ta + tb);
    assert_eq!(a.sketch.count(), 23);
}

#[test]
fn batch_round_trip() {
    let sums: Vec<S> = (0..3).map(|i| samples::http_summary(i, 10, 0)).collect();
    let first = Seq::first_of_epoch(4).next();
    let bytes = samples::batch(EdgeId(9), first, 5, &sums).unwrap();
    let b = Batch::decode(&bytes).unwrap();
    assert_eq!(
        (b.edge, b.first_seq, b.dropped, b.len()),
        (EdgeId(9), first, 5, 3)
    );
    assert_eq!(b.last_seq(), Seq(first.0 + 2));
    for (i, r) in b.records().enumerate() {
        assert_eq!(r.kind, RecordKind::Summary);
        assert_eq!(r.seq, Seq(first.0 + i as u64));
        let s = S::decode(&mut Decoder::new(r.body)).unwrap();
        assert_eq!(s, sums[i]);
    }
}

#[test]
fn batch_rejects_bad_headers() {
    let s: S = samples::http_summary(1, 10, 0);
    let good = samples::batch(EdgeId(1), Seq(1), 0, &[s]).unwrap();
    // wrong version
    let mut v2 = good.clone();
    v2[1] = 2;
    assert_eq!(Batch::decode(&v2), Err(WireError::UnsupportedVersion(2)));
    // truncated anywhere
    for cut in 0..good.len() {
        assert!(Batch::decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    // trailing byte
    let mut t = good.clone();
    t.push(0);
    assert_eq!(Batch::decode(&t), Err(WireError::TrailingBytes));
    // sequence numbers running past the epoch
    let s: S = samples::http_summary(1, 10, 0);
    let over = samples::batch(EdgeId(1), Seq(u32::MAX as u64), 0, &[s.clone(), s]).unwrap();
    assert!(matches!(Batch::decode(&over), Err(WireError::Invalid(_))));
}

#[test]
fn ack_round_trip() {
    let mut buf = [0u8; 16];
    let n = Ack {
        acked: Seq(7 << 32 | 3),
    }
    .encode(&mut buf)
    .unwrap();
    assert_eq!(Ack::decode(&buf[..n]).unwrap().acked, Seq(7 << 32 | 3));
    assert!(Ack::decode(&buf[..n - 1]).is_err());
}

#[test]
fn seq_gaps() {
    let a = Seq::first_of_epoch(3).next();
    assert_eq!(a.gap_to(a.next()), 0);
    assert_eq!(a.gap_to(Seq(a.0 + 5)), 4);
    assert_eq!(
        a.gap_to(Seq::first_of_epoch(4)),
        0,
        "a new boot is not a gap"
    );
    assert_eq!(a.gap_to(a), 0);
}

#[test]
fn probe_specs_round_trip() {
    for spec in samples::probe_specs() {
        let mut buf = [0u8; 256];
        let n = encode_into(&mut buf, |e| spec.encode(e)).unwrap();
        let back = ProbeSpec::decode(&mut Decoder::new(&buf[..n])).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.kind.name(), spec.kind.name());
        if let ProbeKind::Transaction { steps, .. } = back.kind {
            let s: Vec<Step> = steps.iter().collect();
            assert_eq!(s[0].expect, b"+PONG");
        }
    }
}

#[test]
fn probe_spec_validation() {
    let mut spec = samples::probe_specs()[1];
    spec.timeout_ms = 20_000;
    let mut buf = [0u8; 256];
    let n = encode_into(&mut buf, |e| spec.encode(e)).unwrap();
    assert!(matches!(
        ProbeSpec::decode(&mut Decoder::new(&buf[..n])),
        Err(WireError::Invalid(_))
    ));
}

#[test]
fn probe_result_round_trip() {
    let mut rng = Rng::new(5);
    for fail in [false, true] {
        let r = samples::http_result(&mut rng, ProbeId(3), 1_764_000_000_123, fail);
        let mut buf = [0u8; 128];
        let n = encode_into(&mut buf, |e| r.encode(e)).unwrap();
        assert_eq!(
            ProbeResult::decode(&mut Decoder::new(&buf[..n])).unwrap(),
            r
        );
    }
    let empty = ProbeResult {
        probe: ProbeId(1),
        at_ms: 0,
        phases: PhaseTimings::new(),
        error: Some(ErrorClass::Refused),
        error_after_us: None,
        detail: 0,
        redirects: 0,
    };
    let mut buf = [0u8; 64];
    let n = encode_into(&mut buf, |e| empty.encode(e)).unwrap();
    assert_eq!(
        ProbeResult::decode(&mut Decoder::new(&buf[..n])).unwrap(),
        empty
    );
}

fn encode_metrics(m: &MetricsSample) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let n = encode_into(&mut buf, |e| m.encode(e)).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn metrics_round_trip_and_size() {
    let m = samples::metrics_sample();
    assert_eq!(m.len(), Metric::COUNT);
    let bytes = encode_metrics(&m);
    assert!(bytes.len() <= 96, "{} bytes", bytes.len());
    let back = MetricsSample::decode(&mut Decoder::new(&bytes)).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.get(Metric::MemTotalKib), Some(2_002_124));
    // gauges only, nothing measured: both decode
    for m in [MetricsSample::new(5, 0), {
        let mut g = MetricsSample::new(5, 0);
        g.set(Metric::MemTotalKib, 1).unwrap();
        g
    }] {
        let back = MetricsSample::decode(&mut Decoder::new(&encode_metrics(&m))).unwrap();
        assert_eq!(back, m);
    }
    // in a batch, as kind 3
    let mut buf = vec![0u8; 512];
    let n = encode_into(&mut buf, |e| {
        qos_wire::uplink::encode_batch_head(e, EdgeId(2), Seq(9), 0, 1)?;
        qos_wire::uplink::encode_record(e, RecordKind::Metrics, |e| m.encode(e))
    })
    .unwrap();
    let b = Batch::decode(&buf[..n]).unwrap();
    let r = b.records().next().unwrap();
    assert_eq!((r.kind, r.kind.name()), (RecordKind::Metrics, "metrics"));
    assert_eq!(MetricsSample::decode(&mut Decoder::new(r.body)).unwrap(), m);
}

#[test]
fn metrics_validation() {
    use minicbor::Encoder;
    let raw = |pairs: &[(u64, u64)], odd: bool| {
        let mut e = Encoder::new(Vec::new());
        e.array(3).unwrap().u32(10).unwrap().u32(60).unwrap();
        e.array(2 * pairs.len() as u64 + u64::from(odd)).unwrap();
        for &(m, v) in pairs {
            e.u64(m).unwrap().u64(v).unwrap();
        }
        if odd {
            e.u8(0).unwrap();
        }
        e.into_writer()
    };
    let dec = |b: &[u8]| MetricsSample::decode(&mut Decoder::new(b));
    assert!(dec(&raw(&[(0, 1), (3, 2)], false)).is_ok());
    assert_eq!(
        dec(&raw(&[(3, 1), (3, 2)], false)),
        Err(WireError::Invalid("duplicate metric"))
    );
    assert_eq!(
        dec(&raw(&[(Metric::COUNT as u64, 1)], false)),
        Err(WireError::Invalid("metric id"))
    );
    assert!(dec(&raw(&[(300, 1)], false)).is_err());
    assert_eq!(dec(&raw(&[(0, 1)], true)), Err(WireError::Malformed));
    let many: Vec<(u64, u64)> = (0..MAX_METRICS as u64 + 1).map(|i| (i, 0)).collect();
    assert_eq!(dec(&raw(&many, false)), Err(WireError::TooMany));
    let good = encode_metrics(&samples::metrics_sample());
    for cut in 0..good.len() {
        assert!(dec(&good[..cut]).is_err(), "cut at {cut}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Batch::decode(&bytes).map(|b| b.records().count());
        let _ = Ack::decode(&bytes);
        let _ = S::decode(&mut Decoder::new(&bytes));
        let _ = ProbeSpec::decode(&mut Decoder::new(&bytes)).map(|s| {
            if let ProbeKind::Transaction { steps, .. } = s.kind { steps.iter().count() } else { 0 }
        });
        let _ = ProbeResult::decode(&mut Decoder::new(&bytes));
        let _ = MetricsSample::decode(&mut Decoder::new(&bytes));
    }

    #[test]
    fn metrics_round_trip(at in any::<u32>(), interval in any::<u32>(),
                          pairs in proptest::collection::vec((0..Metric::COUNT as u8, any::<u64>()), 0..20)) {
        let mut m = MetricsSample::new(at, interval);
        for (id, v) in pairs {
            m.set(Metric::from_u8(id).unwrap(), v).unwrap();
        }
        let bytes = encode_metrics(&m);
        prop_assert_eq!(MetricsSample::decode(&mut Decoder::new(&bytes)).unwrap(), m);
    }

    #[test]
    fn mutated_metrics_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = encode_metrics(&samples::metrics_sample());
        for (at, v) in flips {
            let i = at % bytes.len();
            bytes[i] ^= v;
        }
        if let Ok(m) = MetricsSample::decode(&mut Decoder::new(&bytes)) {
            // what decodes is valid: known ids, no duplicates, and it encodes back
            let ids: std::collections::BTreeSet<Metric> = m.values().iter().map(|p| p.0).collect();
            prop_assert_eq!(ids.len(), m.len());
            let again = encode_metrics(&m);
            prop_assert_eq!(MetricsSample::decode(&mut Decoder::new(&again)).unwrap(), m);
        }
    }

    #[test]
    fn mutated_batches_never_panic(seed in any::<u64>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let s: S = samples::http_summary(seed, 5, (seed % 3) as u32);
        let mut bytes = samples::batch(EdgeId(1), Seq(seed >> 1), seed % 7, &[s]).unwrap();
        for (at, v) in flips {
            let i = at % bytes.len();
            bytes[i] ^= v;
        }
        if let Ok(b) = Batch::decode(&bytes) {
            for r in b.records() {
                let _ = S::decode(&mut Decoder::new(r.body));
            }
        }
    }

    #[test]
    fn summaries_round_trip(seed in any::<u64>(), interval in 1u32..=60, failures in 0u32..4) {
        let s: S = samples::http_summary(seed, interval, failures.min(60 / interval));
        let bytes = encode_summary(&s);
        prop_assert_eq!(S::decode(&mut Decoder::new(&bytes)).unwrap(), s);
    }
}

mod registration {
    use qos_wire::ids::EdgeId;
    use qos_wire::registration::{Registration, RegistrationError, DEFAULT_LIFETIME};

    #[test]
    fn query_round_trip() {
        let r = Registration {
            ep: "seoul-1",
            d: "kr-central",
            lt: 300,
            id: EdgeId(42),
            fw: "0.1.0",
            pd: 0xdead_beef,
        };
        let opts: Vec<String> = r.query().iter().map(|q| q.to_string()).collect();
        assert_eq!(
            opts,
            [
                "ep=seoul-1",
                "d=kr-central",
                "lt=300",
                "id=42",
                "fw=0.1.0",
                "pd=deadbeef"
            ]
        );
        let back = Registration::from_query(opts.iter().map(String::as_str)).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn defaults_unknown_and_bad_parameters() {
        let r = Registration::from_query(["ep=a", "d=b", "id=1", "et=oic.d.sensor"]).unwrap();
        assert_eq!((r.lt, r.fw, r.pd), (DEFAULT_LIFETIME, "", 0));
        assert_eq!(
            Registration::from_query(["d=b", "id=1"]),
            Err(RegistrationError::Missing("ep"))
        );
        assert_eq!(
            Registration::from_query(["ep=a", "d=b"]),
            Err(RegistrationError::Missing("id"))
        );
        assert_eq!(
            Registration::from_query(["ep=a b", "d=b", "id=1"]),
            Err(RegistrationError::Invalid("ep"))
        );
        assert_eq!(
            Registration::from_query(["ep=a", "d=b", "id=1", "lt=5"]),
            Err(RegistrationError::Invalid("lt"))
        );
        assert_eq!(
            Registration::from_query(["ep=a", "d=b", "id=x"]),
            Err(RegistrationError::Invalid("id"))
        );
        let long = format!("ep={}", "x".repeat(64));
        assert_eq!(
            Registration::from_query([long.as_str(), "d=b", "id=1"]),
            Err(RegistrationError::Invalid("ep"))
        );
    }
}

mod config_and_events {
    use super::*;
    use qos_wire::config::{EdgeConfig, RuleBinding};
    use qos_wire::event::Event;
    use qos_wire::threshold::{Metric, ThresholdRule};

    fn tcp(id: u16) -> ProbeSpec<'static> {
        ProbeSpec {
            id: ProbeId(id),
            interval_ms: 1000,
            timeout_ms: 500,
            kind: ProbeKind::Tcp {
                target: "127.0.0.1:1",
            },
        }
    }

    fn encode(cfg: &EdgeConfig) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        let n = cfg.encode(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn config_rejects_what_an_edge_must_not_apply() {
        let rule = ThresholdRule {
            metric: Metric::Availability,
            raise: 0,
            clear: 0,
            k: 2,
            n: 3,
        };
        let probes = [tcp(1), tcp(2)];
        let good = [RuleBinding {
            probe: ProbeId(2),
            rule,
        }];
        let cfg = EdgeConfig {
            etag: 1,
            window_s: 60,
            probes: List::from_slice(&probes),
            rules: List::from_slice(&good),
        };
        let bytes = encode(&cfg);
        let back = EdgeConfig::decode(&bytes).unwrap();
        assert_eq!(back.probe(ProbeId(2)), Some(tcp(2)));
        assert_eq!(back.rules.iter().next().unwrap().rule, rule);

        let dup = [tcp(1), tcp(1)];
        let bad = EdgeConfig {
            probes: List::from_slice(&dup),
            rules: List::from_slice(&[]),
            ..cfg
        };
        assert_eq!(
            EdgeConfig::decode(&encode(&bad)),
            Err(WireError::Invalid("duplicate probe id"))
        );
        let orphan = [RuleBinding {
            probe: ProbeId(9),
            rule,
        }];
        let bad = EdgeConfig {
            rules: List::from_slice(&orphan),
            ..cfg
        };
        assert_eq!(
            EdgeConfig::decode(&encode(&bad)),
            Err(WireError::Invalid("rule names an unknown probe"))
        );
        let invalid = [RuleBinding {
            probe: ProbeId(1),
            rule: ThresholdRule { k: 4, ..rule },
        }];
        let bad = EdgeConfig {
            rules: List::from_slice(&invalid),
            ..cfg
        };
        assert!(
            EdgeConfig::decode(&encode(&bad)).is_err(),
            "k > n is refused"
        );
        let mut v2 = bytes.clone();
        v2[1] = 2;
        assert_eq!(
            EdgeConfig::decode(&v2),
            Err(WireError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn events_round_trip() {
        for metric in [
            Metric::Availability,
            Metric::Phase(Phase::Dns),
            Metric::Phase(Phase::Total),
        ] {
            let ev = Event {
                probe: ProbeId(3),
                rule: 1,
                metric,
                raised: true,
                at_ms: 1_764_000_000_000,
                value: 7,
            };
            let mut buf = [0u8; 64];
            let n = encode_into(&mut buf, |e| ev.encode(e)).unwrap();
            assert_eq!(Event::decode(&mut Decoder::new(&buf[..n])).unwrap(), ev);
        }
    }

    proptest! {
        #[test]
        fn config_and_event_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(c) = EdgeConfig::decode(&bytes) {
                let _ = c.probes.iter().count() + c.rules.iter().count();
            }
            let _ = Event::decode(&mut Decoder::new(&bytes));
        }
    }
}
