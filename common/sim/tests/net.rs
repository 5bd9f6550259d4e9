//! Behavioural and statistical tests of the simulated network.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use qos_sim::{Datagram, Event, Fault, LinkConfig, Net, Rng, SendFate, Stats};

const N: u64 = 20_000;

/// Sends `N` datagrams 1 → 2, one per millisecond, then drains the network.
fn blast(seed: u64, cfg: LinkConfig) -> (Net<u16>, Vec<Datagram<u16>>) {
    let mut net = Net::with_default_link(seed, cfg);
    let mut out = Vec::new();
    for t in 0..N {
        net.send(t, 1, 2, &t.to_be_bytes());
        out.extend(net.deliver_due(t));
    }
    out.extend(net.deliver_due(u64::MAX));
    assert_eq!(net.in_flight(), 0);
    (net, out)
}

fn payload_id(d: &Datagram<u16>) -> u64 {
    u64::from_be_bytes(d.bytes.as_slice().try_into().unwrap())
}

fn assert_accounted(net: &Net<u16>) {
    let s = net.stats();
    assert_eq!(
        s.sent + s.duplicated,
        s.delivered + s.dropped_loss + s.dropped_partition + net.in_flight() as u64,
        "{s:?}"
    );
}

#[test]
fn loss_rate_is_within_statistical_bounds() {
    for seed in [1, 2, 3] {
        let (net, out) = blast(seed, LinkConfig::perfect(3).with_loss(0.3));
        let s = net.stats();
        assert_eq!(s.sent, N);
        let frac = s.dropped_loss as f64 / N as f64;
        // sigma = sqrt(0.3 * 0.7 / 20000) ~ 0.0032; 0.02 is over 6 sigma.
        assert!(
            (frac - 0.3).abs() < 0.02,
            "seed {seed}: loss fraction {frac}"
        );
        assert_eq!(out.len() as u64, N - s.dropped_loss);
        assert_eq!(s.delivered, out.len() as u64);
        assert_eq!((s.duplicated, s.reordered, s.dropped_partition), (0, 0, 0));
        assert_accounted(&net);
    }
}

#[test]
fn no_loss_means_no_loss() {
    let (net, out) = blast(5, LinkConfig::perfect(3));
    assert_eq!(out.len() as u64, N);
    assert_eq!(net.stats().dropped_loss, 0);
}

#[test]
fn duplication_rate_is_within_statistical_bounds_and_copies_are_identical() {
    for seed in [4, 5] {
        let (net, out) = blast(seed, LinkConfig::perfect(3).with_duplicate(0.1));
        let s = net.stats();
        let frac = s.duplicated as f64 / N as f64;
        // sigma ~ 0.0021.
        assert!(
            (frac - 0.1).abs() < 0.015,
            "seed {seed}: dup fraction {frac}"
        );
        assert_eq!(out.len() as u64, N + s.duplicated);

        let mut copies: BTreeMap<u64, Vec<&Datagram<u16>>> = BTreeMap::new();
        for d in &out {
            copies.entry(payload_id(d)).or_default().push(d);
        }
        assert_eq!(
            copies.len() as u64,
            N,
            "every datagram arrives at least once"
        );
        let twice = copies.values().filter(|v| v.len() == 2).count() as u64;
        assert!(copies.values().all(|v| v.len() <= 2));
        assert_eq!(twice, s.duplicated);
        for v in copies.values().filter(|v| v.len() == 2) {
            assert_eq!(v[0].bytes, v[1].bytes);
            assert_eq!(v[0].sent_at, v[1].sent_at);
            assert_ne!(v[0].copy, v[1].copy);
        }
        assert_accounted(&net);
    }
}

#[test]
fn duplicates_get_independent_delays() {
    let (_, out) = blast(
        6,
        LinkConfig::perfect(0)
            .with_delay(1, 100)
            .with_duplicate(0.5),
    );
    // id -> [arrival of copy 0, arrival of copy 1]
    let mut by_id: BTreeMap<u64, [Option<u64>; 2]> = BTreeMap::new();
    for d in &out {
        by_id.entry(d.id).or_default()[usize::from(d.copy)] = Some(d.deliver_at);
    }
    let pairs: Vec<(u64, u64)> = by_id
        .values()
        .filter_map(|v| Some((v[0]?, v[1]?)))
        .collect();
    assert!(pairs.len() > 5_000);
    let n = pairs.len() as f64;
    // Independent uniform draws over 100 values tie about 1% of the time and
    // the duplicate arrives first in about half of the rest.
    let ties = pairs.iter().filter(|(a, b)| a == b).count() as f64;
    let dup_first = pairs.iter().filter(|(a, b)| b < a).count() as f64;
    assert!(ties / n < 0.02, "ties {ties} of {n}");
    assert!(
        (dup_first / n - 0.495).abs() < 0.03,
        "dup first {dup_first} of {n}"
    );
}

#[test]
fn loss_and_duplication_combine() {
    let cfg = LinkConfig::perfect(2).with_loss(0.3).with_duplicate(0.1);
    let (net, out) = blast(7, cfg);
    let s = net.stats();
    let survived = N - s.dropped_loss;
    let dup_frac = s.duplicated as f64 / survived as f64;
    assert!((s.dropped_loss as f64 / N as f64 - 0.3).abs() < 0.02);
    assert!((dup_frac - 0.1).abs() < 0.02, "{dup_frac}");
    assert_eq!(out.len() as u64, survived + s.duplicated);
    assert_accounted(&net);
}

#[test]
fn delays_stay_within_bounds_and_cover_the_range() {
    let (_, out) = blast(8, LinkConfig::perfect(0).with_delay(5, 40));
    let delays: Vec<u64> = out.iter().map(|d| d.deliver_at - d.sent_at).collect();
    assert!(delays.iter().all(|d| (5..=40).contains(d)));
    assert_eq!(delays.iter().min(), Some(&5));
    assert_eq!(delays.iter().max(), Some(&40));
    let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
    assert!((mean - 22.5).abs() < 0.5, "mean delay {mean}");
}

#[test]
fn reordering_delay_is_applied_with_the_configured_probability() {
    let cfg = LinkConfig::perfect(0)
        .with_delay(5, 40)
        .with_reorder(0.1, 100);
    let (net, out) = blast(9, cfg);
    let mut extra = 0;
    for d in &out {
        let delay = d.deliver_at - d.sent_at;
        match delay {
            5..=40 => {}
            105..=140 => extra += 1,
            _ => panic!("delay {delay} outside both ranges"),
        }
    }
    assert_eq!(extra, net.stats().reordered);
    let frac = extra as f64 / N as f64;
    assert!((frac - 0.1).abs() < 0.015, "{frac}");
}

fn inversions(out: &[Datagram<u16>]) -> usize {
    out.windows(2).filter(|w| w[1].id < w[0].id).count()
}

#[test]
fn no_reordering_when_disabled_with_constant_delay() {
    // Several sends per millisecond, loss and duplication on: delivery order
    // must still be send order (duplicates adjacent).
    let cfg = LinkConfig::perfect(10).with_loss(0.3).with_duplicate(0.2);
    let mut net = Net::with_default_link(10, cfg);
    let mut out = Vec::new();
    let mut sent = 0u64;
    for t in 0..5_000u64 {
        for _ in 0..3 {
            net.send(t, 1u16, 2, &sent.to_be_bytes());
            sent += 1;
        }
        out.extend(net.deliver_due(t));
    }
    out.extend(net.deliver_due(u64::MAX));
    assert_eq!(inversions(&out), 0);
    assert_eq!(net.stats().reordered, 0);
    assert!(out.windows(2).all(|w| w[0].deliver_at <= w[1].deliver_at));
}

#[test]
fn reordering_occurs_when_enabled() {
    let cfg = LinkConfig::perfect(10).with_reorder(0.2, 30);
    let (net, out) = blast(11, cfg);
    assert_eq!(out.len() as u64, N);
    let inv = inversions(&out);
    assert!(inv > 1000, "only {inv} inversions");
    let frac = net.stats().reordered as f64 / N as f64;
    assert!((frac - 0.2).abs() < 0.02, "{frac}");
    // Deliveries themselves are always in arrival-time order.
    assert!(out.windows(2).all(|w| w[0].deliver_at <= w[1].deliver_at));
}

#[test]
fn partition_drops_everything_across_it_and_nothing_else() {
    let nodes = [1u16, 2, 3, 4, 5];
    let side_a = [1u16, 2];
    let side_b = [3u16, 4];
    let crosses = |f: u16, t: u16| {
        (side_a.contains(&f) && side_b.contains(&t)) || (side_b.contains(&f) && side_a.contains(&t))
    };
    let mut net = Net::with_default_link(12, LinkConfig::perfect(0).with_delay(1, 20));
    net.partition(&side_a, &side_b);

    let mut expected = 0u64;
    let mut crossing = 0u64;
    let mut now = 0;
    for round in 0..50u64 {
        now = round * 7;
        for &f in &nodes {
            for &t in &nodes {
                let fate = net.send(now, f, t, &[f as u8, t as u8]);
                if crosses(f, t) {
                    assert_eq!(fate, SendFate::DroppedPartition, "{f}->{t}");
                    assert!(net.is_blocked(f, t));
                    crossing += 1;
                } else {
                    assert_eq!(fate, SendFate::Queued { copies: 1 }, "{f}->{t}");
                    assert!(!net.is_blocked(f, t));
                    expected += 1;
                }
            }
        }
        for d in net.deliver_due(now) {
            assert!(!crosses(d.from, d.to), "{d:?}");
        }
    }
    let rest = net.deliver_due(now + 100);
    assert!(rest.iter().all(|d| !crosses(d.from, d.to)));
    let s = net.stats();
    assert_eq!(s.delivered, expected);
    assert_eq!(s.dropped_partition, crossing);
    assert_eq!(s.dropped_loss, 0);

    // Healing restores every link.
    net.heal_all();
    let now = now + 200;
    for &f in &nodes {
        for &t in &nodes {
            assert!(matches!(net.send(now, f, t, b"x"), SendFate::Queued { .. }));
        }
    }
    assert_eq!(net.deliver_due(now + 100).len(), nodes.len() * nodes.len());
}

#[test]
fn partition_drops_datagrams_in_flight_across_it_only() {
    let mut net = Net::with_default_link(13, LinkConfig::perfect(10)).traced();
    net.send(0, 1u16, 2, b"across");
    net.send(0, 1, 3, b"same side");
    net.send(0, 2, 1, b"across, reverse");
    assert_eq!(net.in_flight(), 3);
    net.advance(5);
    net.partition(&[1], &[2]);
    assert_eq!(net.in_flight(), 1);
    let out = net.deliver_due(100);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bytes, b"same side");
    assert_eq!(net.stats().dropped_partition, 2);
    let in_flight_drops = net
        .trace()
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::DroppedPartition {
                    in_flight: true,
                    at: 5,
                    ..
                }
            )
        })
        .count();
    assert_eq!(in_flight_drops, 2);
}

#[test]
fn one_way_block() {
    let mut net = Net::<u16>::new(14);
    net.block(1, 2);
    assert_eq!(net.send(0, 1, 2, b"a"), SendFate::DroppedPartition);
    assert_eq!(net.send(0, 2, 1, b"b"), SendFate::Queued { copies: 1 });
    let out = net.deliver_due(10);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].from, out[0].to), (2, 1));
    net.unblock(1, 2);
    assert_eq!(net.send(10, 1, 2, b"c"), SendFate::Queued { copies: 1 });
    assert_eq!(net.deliver_due(20).len(), 1);
}

#[test]
fn unblock_lifts_one_direction_of_a_partition() {
    let mut net = Net::<u16>::new(15);
    net.partition(&[1], &[2]);
    net.unblock(2, 1);
    assert!(net.is_blocked(1, 2));
    assert!(!net.is_blocked(2, 1));
}

#[test]
fn per_link_overrides_are_directed() {
    let mut net = Net::<u16>::new(16);
    net.set_link(1, 2, LinkConfig::perfect(50).with_loss(1.0));
    assert_eq!(net.send(0, 1, 2, b"x"), SendFate::DroppedLoss);
    assert_eq!(net.send(0, 2, 1, b"x"), SendFate::Queued { copies: 1 });
    assert_eq!(net.link(2, 1), LinkConfig::default());
    net.set_link(1, 2, LinkConfig::perfect(50));
    net.send(0, 1, 2, b"y");
    let out = net.deliver_due(100);
    assert_eq!(
        out.iter().map(|d| d.deliver_at).collect::<Vec<_>>(),
        [1, 50]
    );
    net.clear_link(1, 2);
    assert_eq!(net.link(1, 2), LinkConfig::default());
    net.set_link_both(1, 2, LinkConfig::perfect(7));
    assert_eq!(net.link(2, 1).delay_min_ms, 7);
    net.set_default_link(LinkConfig::perfect(9));
    assert_eq!(net.link(3, 4).delay_max_ms, 9);
}

#[test]
fn scheduled_faults_apply_at_the_right_virtual_time() {
    let mut net = Net::with_default_link(17, LinkConfig::perfect(10)).traced();
    net.schedule(100, Fault::Partition(vec![1u16], vec![2]));
    net.schedule(200, Fault::HealAll);
    net.schedule(
        300,
        Fault::SetLink(1, 2, LinkConfig::perfect(10).with_loss(1.0)),
    );
    net.schedule(400, Fault::ClearLink(1, 2));
    assert_eq!(net.next_fault(), Some(100));

    let mut fates = Vec::new();
    for t in [85u64, 95, 99, 100, 150, 195, 200, 250, 300, 350, 400] {
        fates.push((t, net.send(t, 1, 2, &t.to_be_bytes())));
        if t == 99 {
            assert!(!net.is_blocked(1, 2), "blocked too early");
        }
        if t == 100 {
            assert!(net.is_blocked(1, 2) && net.is_blocked(2, 1));
        }
    }
    let q = SendFate::Queued { copies: 1 };
    let p = SendFate::DroppedPartition;
    let l = SendFate::DroppedLoss;
    assert_eq!(
        fates,
        [
            (85, q),
            (95, q), // queued, then cut in flight at 100 (would arrive at 105)
            (99, q), // likewise
            (100, p),
            (150, p),
            (195, p),
            (200, q),
            (250, q),
            (300, l),
            (350, l),
            (400, q),
        ]
    );
    let delivered: Vec<u64> = net.deliver_due(1_000).iter().map(|d| d.sent_at).collect();
    assert_eq!(delivered, [85, 200, 250, 400]);
    assert_eq!(net.next_fault(), None);

    let fault_times: Vec<u64> = net
        .trace()
        .iter()
        .filter(|e| matches!(e, Event::FaultApplied { .. }))
        .map(Event::at)
        .collect();
    assert_eq!(fault_times, [100, 200, 300, 400]);
}

#[test]
fn scheduled_fault_is_ordered_against_deliveries_within_one_deliver_call() {
    // Nothing is called between t=0 and t=1000: the partition at t=100 must
    // still let the datagram arriving at t=90 through and cut the one
    // arriving at t=100 (faults win ties) and t=110.
    let mut net = Net::<u16>::new(18);
    net.set_link(1, 2, LinkConfig::perfect(90));
    net.send(0, 1, 2, b"90");
    net.set_link(1, 2, LinkConfig::perfect(100));
    net.send(0, 1, 2, b"100");
    net.set_link(1, 2, LinkConfig::perfect(110));
    net.send(0, 1, 2, b"110");
    net.schedule(100, Fault::Block(1, 2));
    net.schedule(105, Fault::Unblock(1, 2));

    let first = net.deliver(1_000).expect("the t=90 datagram");
    assert_eq!(first.bytes, b"90");
    assert!(
        !net.is_blocked(1, 2),
        "fault at 100 applied before the t=90 delivery"
    );
    assert_eq!(net.deliver(1_000), None);
    assert!(!net.is_blocked(1, 2), "unblocked at 105");
    assert_eq!(net.stats().dropped_partition, 2);
    assert_eq!(net.next_fault(), None);
}

#[test]
fn fault_scheduled_in_the_past_applies_immediately() {
    let mut net = Net::<u16>::new(19);
    net.advance(50);
    net.schedule(10, Fault::Block(1, 2));
    assert!(net.is_blocked(1, 2));
    net.schedule(50, Fault::Unblock(1, 2));
    assert!(!net.is_blocked(1, 2));
}

#[test]
fn next_event_time_is_the_minimum_clamped_to_now() {
    let mut net = Net::with_default_link(20, LinkConfig::perfect(30));
    assert_eq!(net.next_event_time(&[]), None);
    assert_eq!(net.next_event_time(&[None, None]), None);
    assert_eq!(net.next_event_time(&[Some(40), None, Some(25)]), Some(25));
    net.send(10, 1u16, 2, b"x");
    assert_eq!(net.next_delivery(), Some(40));
    assert_eq!(net.next_event_time(&[Some(45)]), Some(40));
    net.schedule(35, Fault::HealAll);
    assert_eq!(net.next_event_time(&[Some(45)]), Some(35));
    // An overdue node timer means "now", never the past.
    assert_eq!(net.next_event_time(&[Some(3)]), Some(10));
    assert_eq!(qos_sim::earliest([Some(3), None, Some(1)]), Some(1));
}

#[test]
#[should_panic(expected = "virtual time went backwards")]
fn time_must_not_go_backwards() {
    let mut net = Net::<u16>::new(21);
    net.send(100, 1, 2, b"x");
    net.send(99, 1, 2, b"x");
}

#[test]
#[should_panic(expected = "loss must be in [0, 1]")]
fn invalid_link_config_is_rejected() {
    Net::<u16>::new(22).set_link(1, 2, LinkConfig::perfect(1).with_loss(1.5));
}

#[test]
fn link_config_validation() {
    assert!(LinkConfig::default().validate().is_ok());
    assert!(LinkConfig::perfect(1).with_delay(5, 4).validate().is_err());
    assert!(LinkConfig::perfect(1)
        .with_duplicate(-0.1)
        .validate()
        .is_err());
    assert!(LinkConfig::perfect(1)
        .with_reorder(f64::NAN, 1)
        .validate()
        .is_err());
}

/// A busy, faulty scenario among four nodes; returns the trace and what was delivered.
fn scenario(seed: u64) -> (Vec<Event<u16>>, Vec<Datagram<u16>>, Stats) {
    let cfg = LinkConfig::perfect(0)
        .with_delay(1, 30)
        .with_loss(0.2)
        .with_duplicate(0.1)
        .with_reorder(0.1, 50);
    let mut net = Net::with_default_link(seed, cfg).traced();
    net.set_link(3, 4, LinkConfig::perfect(5));
    net.schedule(300, Fault::Partition(vec![1, 2], vec![3]));
    net.schedule(600, Fault::HealAll);
    net.schedule(700, Fault::Block(4, 1));
    // The workload is fixed (its own rng, same for every net seed).
    let mut load = Rng::new(0xC0FFEE);
    let mut delivered = Vec::new();
    for t in 0..1_000u64 {
        for _ in 0..load.below(3) {
            let from = 1 + load.below(4) as u16;
            let to = 1 + load.below(4) as u16;
            let len = load.below(64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| load.next_u64() as u8).collect();
            net.send(t, from, to, &bytes);
        }
        delivered.extend(net.deliver_due(t));
    }
    delivered.extend(net.deliver_due(10_000));
    let stats = net.stats();
    (net.take_trace(), delivered, stats)
}

#[test]
fn same_seed_gives_identical_runs_different_seed_differs() {
    let (trace_a, out_a, stats_a) = scenario(1234);
    let (trace_b, out_b, stats_b) = scenario(1234);
    assert!(trace_a.len() > 2_000);
    assert_eq!(trace_a, trace_b);
    assert_eq!(out_a, out_b);
    assert_eq!(stats_a, stats_b);

    let (trace_c, out_c, _) = scenario(1235);
    assert_ne!(trace_a, trace_c);
    assert_ne!(out_a, out_c);
    // Every fault kind was exercised.
    let s = stats_a;
    assert!(s.dropped_loss > 0 && s.dropped_partition > 0 && s.duplicated > 0);
    assert!(s.reordered > 0 && s.delivered > 0);
    assert_eq!(
        s.sent + s.duplicated,
        s.delivered + s.dropped_loss + s.dropped_partition
    );
}

#[test]
fn different_seeds_give_different_fates() {
    let fates = |seed| {
        let mut net = Net::with_default_link(seed, LinkConfig::perfect(1).with_loss(0.5));
        (0..64)
            .map(|t| net.send(t, 1u16, 2, b"x"))
            .collect::<Vec<_>>()
    };
    assert_eq!(fates(1), fates(1));
    assert_ne!(fates(1), fates(2));
    assert_ne!(fates(2), fates(3));
}

#[test]
fn trace_is_off_by_default_and_prints_its_head() {
    let mut net = Net::<u16>::new(23);
    net.send(0, 1, 2, b"abc");
    assert!(net.trace().is_empty());
    net.set_trace(true);
    net.send(1, 1, 2, b"abcd");
    net.block(2, 1);
    net.send(1, 2, 1, b"x");
    net.deliver_due(5);
    let text = net.trace_head(3).to_string();
    assert_eq!(
        text,
        "t=1 send #1 1 -> 2 (4 B)\n\
         t=1 queue #1.0 1 -> 2 arrives t=2\n\
         t=1 fault Block(2, 1)\n\
         ... 4 more events\n"
    );
    let all = format!("{:?}", net.trace_head(100));
    assert!(
        all.contains("t=1 deliver #0.0 1 -> 2 (3 B, sent t=0)"),
        "{all}"
    );
    assert!(all.contains("t=1 drop-partition #2.0 2 -> 1"), "{all}");
    assert!(!all.contains("more events"));
    net.set_trace(false);
    assert!(net.trace().is_empty());
}

#[test]
fn works_with_socket_addresses() {
    let a = SocketAddr::from((Ipv4Addr::LOCALHOST, 5683));
    let b = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 2), 5683));
    let mut net = Net::new(24);
    net.partition(&[a], &[b]);
    assert_eq!(net.send(0, a, b, b"x"), SendFate::DroppedPartition);
    net.heal_all();
    net.send(0, b, a, b"y");
    let d = net.deliver(1).unwrap();
    assert_eq!((d.from, d.to, d.bytes.as_slice()), (b, a, &b"y"[..]));
    assert!(format!("{net:?}").contains("Net"));
}
