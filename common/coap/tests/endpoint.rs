//! Endpoint tests: two endpoints wired back to back with virtual time.

use qos_coap::{
    option, Code, Config, Endpoint, Event, ExchangeId, Incoming, Message, MessageType,
    MessageWriter, Reliability, RequestError, RespondError,
};

const C: u8 = 1; // client address
const S: u8 = 2; // server address
const MSG: usize = 512;

type Ep = Endpoint<u8, 4, 8, MSG>;

fn ep(seed: u64) -> Ep {
    Ep::new(Config::default(), seed).unwrap()
}

fn ep_with(config: Config, seed: u64) -> Ep {
    Ep::new(config, seed).unwrap()
}

/// Drains everything `ep` wants to send at `now`.
fn drain<const E: usize, const D: usize, const M: usize, const R: usize>(
    ep: &mut Endpoint<u8, E, D, M, R>,
    now: u64,
) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some((to, n)) = ep.poll_transmit(now, &mut buf) {
        out.push((to, buf[..n].to_vec()));
        assert!(out.len() < 100, "poll_transmit does not terminate");
    }
    out
}

/// Exactly one datagram, to `to`.
fn one<const E: usize, const D: usize, const M: usize, const R: usize>(
    ep: &mut Endpoint<u8, E, D, M, R>,
    now: u64,
    to: u8,
) -> Vec<u8> {
    let mut out = drain(ep, now);
    assert_eq!(out.len(), 1, "expected one datagram, got {out:?}");
    let (dst, bytes) = out.pop().unwrap();
    assert_eq!(dst, to);
    bytes
}

fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes).unwrap()
}

fn post_q(client: &mut Ep, now: u64, body: &[u8]) -> ExchangeId {
    client
        .request(now, S, Reliability::Confirmable, Code::POST, |w| {
            w.uri_path("q")?;
            w.uint_option(option::CONTENT_FORMAT, 60)?;
            w.payload(body)
        })
        .unwrap()
}

#[test]
fn con_request_with_piggybacked_response() {
    let (mut client, mut server) = (ep(1), ep(2));
    let id = post_q(&mut client, 0, b"hello");
    let req = one(&mut client, 0, S);
    let m = parse(&req);
    assert_eq!(m.ty(), MessageType::Confirmable);
    assert_eq!(m.token().len(), 4);

    let Some(Incoming::Request(r)) = server.handle_datagram(5, C, &req) else {
        panic!("no request")
    };
    assert_eq!(r.from, C);
    assert!(!r.duplicate);
    assert!(r.message.path_is("q"));
    assert_eq!(r.message.content_format(), Some(60));
    assert_eq!(r.message.payload(), b"hello");
    server
        .respond(5, &r.handle, Code::CHANGED, |w| w.payload(b"ok"))
        .unwrap();
    let resp = one(&mut server, 5, C);
    let rm = parse(&resp);
    assert_eq!(rm.ty(), MessageType::Acknowledgement);
    assert_eq!(
        rm.message_id(),
        m.message_id(),
        "piggybacked response echoes the MID"
    );
    assert_eq!(rm.token(), m.token(), "and the token");

    match client.handle_datagram(10, S, &resp) {
        Some(Incoming::Response { exchange, message }) => {
            assert_eq!(exchange, id);
            assert_eq!(message.code(), Code::CHANGED);
            assert_eq!(message.payload(), b"ok");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.active_exchanges(), 0);
    assert!(drain(&mut client, 10).is_empty(), "nothing more to send");
    assert_eq!(client.stats().retransmissions, 0);
    assert_eq!(client.stats().tx, 1);
    assert_eq!(server.stats().rx, 1);
    // A late duplicate of the ACK is unexpected and ignored.
    assert!(client.handle_datagram(11, S, &resp).is_none());
    assert_eq!(client.stats().unexpected, 1);
}

#[test]
fn separate_response_after_empty_ack() {
    let (mut client, mut server) = (ep(3), ep(4));
    let id = post_q(&mut client, 0, b"x");
    let req = one(&mut client, 0, S);
    let Some(Incoming::Request(r)) = server.handle_datagram(1, C, &req) else {
        panic!()
    };
    let mut handle = r.handle;
    assert!(!client.awaiting_separate(id), "not acknowledged yet");
    server.defer(1, &mut handle).unwrap();
    assert!(handle.is_deferred());
    assert_eq!(
        server.respond(1, &handle, Code::CONTENT, |_| Ok(())),
        Err(RespondError::Deferred)
    );
    let ack = one(&mut server, 1, C);
    let am = parse(&ack);
    assert!(am.is_empty());
    assert_eq!(am.ty(), MessageType::Acknowledgement);
    assert!(client.handle_datagram(2, S, &ack).is_none());
    assert!(client.awaiting_separate(id));
    // Retransmission stopped; now waiting up to EXCHANGE_LIFETIME from the first send.
    assert_eq!(
        client.poll_timeout(),
        Some(Config::default().exchange_lifetime_ms())
    );
    assert!(
        drain(&mut client, 60_000).is_empty(),
        "no retransmission after the empty ACK"
    );

    // A retransmitted request (the ACK was "lost" from the client's view) gets another empty ACK.
    assert!(server.handle_datagram(3, C, &req).is_none());
    let ack2 = one(&mut server, 3, C);
    assert_eq!(ack2, ack);

    let sid = server
        .respond_separate(70_000, &mut handle, Code::CONTENT, |w| w.payload(b"later"))
        .unwrap();
    let sep = one(&mut server, 70_000, C);
    let sm = parse(&sep);
    assert_eq!(sm.ty(), MessageType::Confirmable);
    assert_eq!(sm.token(), parse(&req).token());
    assert_ne!(sm.message_id(), parse(&req).message_id());

    match client.handle_datagram(70_001, S, &sep) {
        Some(Incoming::Response { exchange, message }) => {
            assert_eq!(exchange, id);
            assert_eq!(message.payload(), b"later");
        }
        other => panic!("{other:?}"),
    }
    assert!(!client.awaiting_separate(id), "finished");
    let cack = one(&mut client, 70_001, S);
    let cm = parse(&cack);
    assert!(cm.is_empty() && cm.ty() == MessageType::Acknowledgement);
    assert_eq!(cm.message_id(), sm.message_id());

    // The separate response was ACKed: the server's exchange is delivered.
    assert!(server.handle_datagram(70_002, C, &cack).is_none());
    assert_eq!(server.poll_event(), Some(Event::Delivered(sid)));
    assert_eq!(server.poll_timeout(), None);

    // A duplicate of the separate response is re-ACKed, not delivered again.
    assert!(client.handle_datagram(70_003, S, &sep).is_none());
    assert_eq!(one(&mut client, 70_003, S), cack);
    assert_eq!(client.stats().duplicates, 1);
}

#[test]
fn separate_response_wait_is_bounded_by_exchange_lifetime() {
    let (mut client, mut server) = (ep(5), ep(6));
    let id = post_q(&mut client, 1000, b"x");
    assert_eq!(
        client.poll_timeout(),
        Some(1000),
        "queued datagram: due now"
    );
    let req = one(&mut client, 1000, S);
    assert_eq!(client.poll_timeout().map(|t| t >= 3000), Some(true));
    let Some(Incoming::Request(r)) = server.handle_datagram(1000, C, &req) else {
        panic!()
    };
    let mut h = r.handle;
    server.defer(1000, &mut h).unwrap();
    let ack = one(&mut server, 1000, C);
    client.handle_datagram(1001, S, &ack);
    let deadline = 1000 + Config::default().exchange_lifetime_ms();
    assert_eq!(client.poll_timeout(), Some(deadline));
    client.handle_timeout(deadline - 1);
    assert_eq!(client.poll_event(), None);
    client.handle_timeout(deadline);
    assert_eq!(client.poll_event(), Some(Event::Timeout(id)));
    assert_eq!(client.stats().timeouts, 1);
}

/// Runs a CON request into a black hole; returns the transmission times and the time of the
/// Timeout event.
fn black_hole(config: Config, seed: u64, lateness: u64) -> (Vec<u64>, u64) {
    let mut client = ep_with(config, seed);
    let id = post_q(&mut client, 0, b"lost");
    let mut sends = Vec::new();
    let mut now = 0;
    loop {
        for _ in drain(&mut client, now) {
            sends.push(now);
        }
        if let Some(ev) = client.poll_event() {
            assert_eq!(ev, Event::Timeout(id));
            break;
        }
        let next = client
            .poll_timeout()
            .expect("a timer runs until the timeout");
        assert!(next >= now, "timers do not go backwards");
        now = next + lateness;
        assert!(now < 10_000_000, "never gives up");
    }
    assert_eq!(client.poll_timeout(), None);
    assert!(
        drain(&mut client, now + 1_000_000).is_empty(),
        "nothing after the timeout"
    );
    assert_eq!(
        client.stats().retransmissions,
        u32::from(config.max_retransmit)
    );
    assert_eq!(client.stats().timeouts, 1);
    (sends, now)
}

fn check_rfc_schedule(config: Config, sends: &[u64], timeout_at: u64, lateness: u64) {
    let at = config.ack_timeout_ms;
    let f = u64::from(config.ack_random_factor_permille);
    assert_eq!(
        sends.len(),
        1 + usize::from(config.max_retransmit),
        "exactly MAX_RETRANSMIT retransmissions: {sends:?}"
    );
    // Gap i (between transmission i and i+1), and the final wait before giving up, all lie in
    // [ACK_TIMEOUT * 2^i, ACK_TIMEOUT * ACK_RANDOM_FACTOR * 2^i] (plus the driver's lateness).
    let mut times = sends.to_vec();
    times.push(timeout_at);
    for (i, w) in times.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let lo = at << i;
        let hi = (at * f / 1000) << i;
        assert!(
            gap >= lo + lateness && gap <= hi + lateness,
            "gap {i} = {gap} outside [{lo}, {hi}] (+{lateness}): {times:?}"
        );
    }
    assert!(timeout_at - sends[0] <= config.max_transmit_wait_ms() + lateness * sends.len() as u64);
}

#[test]
fn retransmission_follows_rfc_timing() {
    let config = Config::default();
    let mut initial = std::collections::BTreeSet::new();
    for seed in 0..50 {
        let (sends, t) = black_hole(config, seed, 0);
        check_rfc_schedule(config, &sends, t, 0);
        initial.insert(sends[1] - sends[0]);
    }
    assert!(
        initial.len() > 10,
        "the initial timeout is randomised: {initial:?}"
    );
}

#[test]
fn retransmission_times_measured_from_actual_send() {
    // A driver that wakes 7 ms late: gaps still honour the minimum, measured from each send.
    let config = Config::default();
    let (sends, t) = black_hole(config, 9, 7);
    check_rfc_schedule(config, &sends, t, 7);
}

#[test]
fn config_changes_take_effect() {
    let config = Config {
        ack_timeout_ms: 500,
        max_retransmit: 2,
        ack_random_factor_permille: 1000,
        ..Config::default()
    };
    let (sends, t) = black_hole(config, 1, 0);
    assert_eq!(sends, vec![0, 500, 1500], "no jitter with factor 1.0");
    assert_eq!(t, 3500);

    let config = Config {
        ack_timeout_ms: 500,
        max_retransmit: 2,
        ..Config::default()
    };
    for seed in 0..20 {
        let (sends, t) = black_hole(config, seed, 0);
        check_rfc_schedule(config, &sends, t, 0);
    }

    // set_config on a live endpoint applies to new exchanges.
    let mut client = ep(1);
    client
        .set_config(Config {
            ack_timeout_ms: 100,
            ack_random_factor_permille: 1000,
            ..Config::default()
        })
        .unwrap();
    post_q(&mut client, 0, b"");
    drain(&mut client, 0);
    assert_eq!(client.poll_timeout(), Some(100));
    assert!(client
        .set_config(Config {
            nstart: 0,
            ..Config::default()
        })
        .is_err());
    assert!(Ep::new(
        Config {
            ack_random_factor_permille: 500,
            ..Config::default()
        },
        0
    )
    .is_err());
}

#[test]
fn nstart_limits_outstanding_con_requests_per_peer() {
    let (mut client, mut server) = (ep(7), ep(8));
    let id = post_q(&mut client, 0, b"1");
    let second = client.request(0, S, Reliability::Confirmable, Code::GET, |_| Ok(()));
    assert_eq!(second, Err(RequestError::Busy));
    // Another peer and NON requests are not limited.
    client
        .request(0, 3, Reliability::Confirmable, Code::GET, |_| Ok(()))
        .unwrap();
    client
        .request(0, S, Reliability::NonConfirmable, Code::GET, |_| Ok(()))
        .unwrap();
    // Slots: 3 of 4 used; one more NON fills them.
    client
        .request(0, 4, Reliability::NonConfirmable, Code::GET, |_| Ok(()))
        .unwrap();
    assert_eq!(
        client.request(0, 5, Reliability::Confirmable, Code::GET, |_| Ok(())),
        Err(RequestError::NoSlot)
    );

    // Complete the first exchange; then a new CON to S is allowed.
    let out = drain(&mut client, 0);
    let req = &out
        .iter()
        .find(|(to, b)| *to == S && parse(b).ty() == MessageType::Confirmable)
        .unwrap()
        .1;
    let Some(Incoming::Request(r)) = server.handle_datagram(1, C, req) else {
        panic!()
    };
    server
        .respond(1, &r.handle, Code::CONTENT, |_| Ok(()))
        .unwrap();
    let resp = one(&mut server, 1, C);
    assert!(
        matches!(client.handle_datagram(2, S, &resp), Some(Incoming::Response { exchange, .. }) if exchange == id)
    );
    client
        .request(2, S, Reliability::Confirmable, Code::GET, |_| Ok(()))
        .unwrap();

    // NSTART 2 allows two.
    let mut c2 = ep_with(
        Config {
            nstart: 2,
            ..Config::default()
        },
        1,
    );
    post_q(&mut c2, 0, b"a");
    post_q(&mut c2, 0, b"b");
    assert_eq!(
        c2.request(0, S, Reliability::Confirmable, Code::GET, |_| Ok(())),
        Err(RequestError::Busy)
    );
}

#[test]
fn duplicate_con_gets_cached_response_without_reaching_the_app() {
    let (mut client, mut server) = (ep(9), ep(10));
    post_q(&mut client, 0, b"once");
    let req = one(&mut client, 0, S);
    let Some(Incoming::Request(r)) = server.handle_datagram(1, C, &req) else {
        panic!()
    };
    server
        .respond(1, &r.handle, Code::CHANGED, |w| w.payload(b"done"))
        .unwrap();
    let resp = one(&mut server, 1, C);
    // The client's retransmission (the response was lost) reaches the server twice.
    for t in [3000, 9000] {
        assert!(
            server.handle_datagram(t, C, &req).is_none(),
            "the app sees it once"
        );
        assert_eq!(one(&mut server, t, C), resp, "same response re-sent");
    }
    assert_eq!(server.stats().duplicates, 2);
}

#[test]
fn duplicate_with_uncached_response_is_redelivered_marked_duplicate() {
    // RESP = 16: a 40-byte response does not fit the cache.
    let mut server: Endpoint<u8, 4, 8, MSG, 16> = Endpoint::new(Config::default(), 11).unwrap();
    let mut client = ep(12);
    post_q(&mut client, 0, b"big");
    let req = one(&mut client, 0, S);
    let Some(Incoming::Request(r)) = server.handle_datagram(1, C, &req) else {
        panic!()
    };
    server
        .respond(1, &r.handle, Code::CONTENT, |w| w.payload(&[7; 40]))
        .unwrap();
    let resp = one(&mut server, 1, C);
    match server.handle_datagram(2, C, &req) {
        Some(Incoming::Request(r2)) => {
            assert!(r2.duplicate);
            server
                .respond(2, &r2.handle, Code::CONTENT, |w| w.payload(&[7; 40]))
                .unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(one(&mut server, 2, C), resp);

    // A duplicate of a request still being processed (no response yet) is dropped.
    let mut s2 = ep(13);
    assert!(matches!(
        s2.handle_datagram(1, C, &req),
        Some(Incoming::Request(_))
    ));
    assert!(s2.handle_datagram(2, C, &req).is_none());
    assert!(drain(&mut s2, 2).is_empty());
}

#[test]
fn duplicate_non_is_dropped() {
    let (mut client, mut server) = (ep(14), ep(15));
    client
        .request(0, S, Reliability::NonConfirmable, Code::GET, |w| {
            w.uri_path("n")
        })
        .unwrap();
    let req = one(&mut client, 0, S);
    assert_eq!(parse(&req).ty(), MessageType::NonConfirmable);
    assert!(matches!(
        server.handle_datagram(1, C, &req),
        Some(Incoming::Request(_))
    ));
    assert!(server.handle_datagram(2, C, &req).is_none());
    assert_eq!(server.stats().duplicates, 1);
    assert!(drain(&mut server, 2).is_empty());
}

#[test]
fn non_request_non_response_and_lifetime() {
    let (mut client, mut server) = (ep(16), ep(17));
    let id = client
        .request(0, S, Reliability::NonConfirmable, Code::GET, |w| {
            w.uri_path("t")
        })
        .unwrap();
    let req = one(&mut client, 0, S);
    // Never retransmitted.
    let lifetime = Config::default().non_lifetime_ms();
    assert_eq!(client.poll_timeout(), Some(lifetime));
    assert!(drain(&mut client, lifetime - 1).is_empty());

    let Some(Incoming::Request(r)) = server.handle_datagram(1, C, &req) else {
        panic!()
    };
    server
        .respond(1, &r.handle, Code::CONTENT, |w| w.payload(b"v"))
        .unwrap();
    let resp = one(&mut server, 1, C);
    let rm = parse(&resp);
    assert_eq!(rm.ty(), MessageType::NonConfirmable);
    assert_eq!(rm.token(), parse(&req).token());
    assert!(
        matches!(client.handle_datagram(2, S, &resp), Some(Incoming::Response { exchange, .. }) if exchange == id)
    );
    assert!(
        drain(&mut client, 2).is_empty(),
        "a NON response is not ACKed"
    );
    // Its duplicate is dropped.
    assert!(client.handle_datagram(3, S, &resp).is_none());

    // Without a response, the NON exchange times out after NON_LIFETIME.
    let id2 = client
        .request(10, S, Reliability::NonConfirmable, Code::GET, |_| Ok(()))
        .unwrap();
    drain(&mut client, 10);
    client.handle_timeout(10 + lifetime);
    assert_eq!(client.poll_event(), Some(Event::Timeout(id2)));
}

#[test]
fn empty_con_ping_gets_rst() {
    let mut server = ep(18);
    let mut buf = [0u8; 4];
    let n = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::EMPTY, 0x4242, &[])
        .unwrap()
        .finish();
    assert!(server.handle_datagram(0, C, &buf[..n]).is_none());
    let rst = one(&mut server, 0, C);
    let m = parse(&rst);
    assert_eq!(m.ty(), MessageType::Reset);
    assert!(m.is_empty());
    assert_eq!(m.message_id(), 0x4242);
    assert_eq!(server.stats().rejected, 1);
}

#[test]
fn rst_fails_the_exchange() {
    let (mut client, mut server) = (ep(19), ep(20));
    let id = post_q(&mut client, 0, b"x");
    let req = one(&mut client, 0, S);
    // The server has no use for it: reset.
    let mut buf = [0u8; 4];
    let n = MessageWriter::new(
        &mut buf,
        MessageType::Reset,
        Code::EMPTY,
        parse(&req).message_id(),
        &[],
    )
    .unwrap()
    .finish();
    assert!(client.handle_datagram(1, S, &buf[..n]).is_none());
    assert_eq!(client.poll_event(), Some(Event::Reset(id)));
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.poll_timeout(), None);
    assert!(
        drain(&mut client, 100_000).is_empty(),
        "no more retransmissions"
    );
    assert_eq!(client.stats().resets, 1);
    // A RST for another MID or from another peer matches nothing.
    let id2 = post_q(&mut client, 2, b"y");
    drain(&mut client, 2);
    assert!(client.handle_datagram(3, 99, &buf[..n]).is_none());
    assert_eq!(client.stats().unexpected, 1);
    assert!(client.cancel(id2));
    assert!(!client.cancel(id2));
    assert_eq!(client.poll_timeout(), None);
    let _ = &mut server;
}

#[test]
fn dedup_entries_expire_after_exchange_lifetime() {
    let (mut client, mut server) = (ep(21), ep(22));
    post_q(&mut client, 0, b"x");
    let req = one(&mut client, 0, S);
    let t0 = 1000;
    let Some(Incoming::Request(r)) = server.handle_datagram(t0, C, &req) else {
        panic!()
    };
    server
        .respond(t0, &r.handle, Code::CHANGED, |_| Ok(()))
        .unwrap();
    let resp = one(&mut server, t0, C);
    let life = Config::default().exchange_lifetime_ms();
    assert!(server.handle_datagram(t0 + life - 1, C, &req).is_none());
    assert_eq!(one(&mut server, t0 + life - 1, C), resp);
    match server.handle_datagram(t0 + life, C, &req) {
        Some(Incoming::Request(r)) => assert!(!r.duplicate, "forgotten: a new request"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dedup_cache_evicts_oldest_when_full() {
    let mut server: Endpoint<u8, 4, 2, MSG> = Endpoint::new(Config::default(), 23).unwrap();
    let mut reqs = Vec::new();
    for mid in 0..3u16 {
        let mut buf = [0u8; 32];
        let mut w = MessageWriter::new(&mut buf, MessageType::NonConfirmable, Code::GET, mid, &[1])
            .unwrap();
        w.uri_path("a").unwrap();
        let n = w.finish();
        reqs.push(buf[..n].to_vec());
    }
    for (t, r) in reqs.iter().enumerate() {
        assert!(server.handle_datagram(t as u64, C, r).is_some());
    }
    assert_eq!(server.stats().dedup_evictions, 1);
    // The oldest (MID 0) was evicted: it is new again; MID 2 is still remembered.
    assert!(server.handle_datagram(10, C, &reqs[2]).is_none());
    assert!(server.handle_datagram(11, C, &reqs[0]).is_some());
}

#[test]
fn malformed_datagrams_are_counted_and_con_rejected() {
    let mut server = ep(24);
    // CON with TKL 9: RST with its MID.
    assert!(server
        .handle_datagram(0, C, &[0x49, 0x01, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .is_none());
    let rst = one(&mut server, 0, C);
    assert_eq!(parse(&rst).ty(), MessageType::Reset);
    assert_eq!(parse(&rst).message_id(), 0x1234);
    // NON with a truncated option, version 2, a 3-byte datagram: ignored silently.
    assert!(server
        .handle_datagram(0, C, &[0x50, 0x01, 0, 1, 0xb5, b'a'])
        .is_none());
    assert!(server.handle_datagram(0, C, &[0x80, 0x01, 0, 1]).is_none());
    assert!(server.handle_datagram(0, C, &[0x40, 0x01, 0]).is_none());
    assert!(drain(&mut server, 0).is_empty());
    // Reserved code class 7 in a CON: RST.
    assert!(server.handle_datagram(0, C, &[0x40, 0xe0, 0, 2]).is_none());
    assert_eq!(parse(&one(&mut server, 0, C)).ty(), MessageType::Reset);
    // A non-empty RST and an ACK carrying a request: ignored.
    assert!(server.handle_datagram(0, C, &[0x70, 0x45, 0, 3]).is_none());
    assert!(server.handle_datagram(0, C, &[0x60, 0x01, 0, 3]).is_none());
    assert!(drain(&mut server, 0).is_empty());
    assert_eq!(server.stats().malformed, 7);
    assert_eq!(server.stats().rx, 7);
}

#[test]
fn unknown_critical_option_in_con_request_gets_4_02() {
    let mut server = ep(25);
    let mut buf = [0u8; 32];
    let mut w =
        MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 77, &[5]).unwrap();
    w.option(13, b"x").unwrap(); // 13: critical, not known here
    let n = w.finish();
    assert!(server.handle_datagram(0, C, &buf[..n]).is_none());
    let resp = one(&mut server, 0, C);
    let m = parse(&resp);
    assert_eq!(m.ty(), MessageType::Acknowledgement);
    assert_eq!(m.code(), Code::BAD_OPTION);
    assert_eq!(m.token(), &[5]);
    assert_eq!(m.message_id(), 77);
    // With the check off, the application sees it.
    let mut server = ep_with(
        Config {
            reject_unknown_critical: false,
            ..Config::default()
        },
        25,
    );
    assert!(matches!(
        server.handle_datagram(0, C, &buf[..n]),
        Some(Incoming::Request(_))
    ));
}

#[test]
fn unexpected_con_response_is_reset() {
    let mut client = ep(26);
    let mut buf = [0u8; 32];
    let n = MessageWriter::new(
        &mut buf,
        MessageType::Confirmable,
        Code::CONTENT,
        5,
        &[1, 2, 3],
    )
    .unwrap()
    .finish();
    assert!(client.handle_datagram(0, S, &buf[..n]).is_none());
    let rst = one(&mut client, 0, S);
    assert_eq!(parse(&rst).ty(), MessageType::Reset);
    assert_eq!(parse(&rst).message_id(), 5);
    assert_eq!(client.stats().unexpected, 1);
}

#[test]
fn separate_response_is_retransmitted_until_timeout() {
    let (mut client, mut server) = (ep(27), ep(28));
    post_q(&mut client, 0, b"x");
    let req = one(&mut client, 0, S);
    let Some(Incoming::Request(r)) = server.handle_datagram(0, C, &req) else {
        panic!()
    };
    let mut h = r.handle;
    let sid = server
        .respond_separate(0, &mut h, Code::CONTENT, |w| w.payload(b"p"))
        .unwrap();
    let out = drain(&mut server, 0);
    assert_eq!(out.len(), 2, "empty ACK, then the CON response");
    assert!(parse(&out[0].1).is_empty());
    let mut sends = 1;
    let mut now = 0;
    let ev = loop {
        if let Some(ev) = server.poll_event() {
            break ev;
        }
        now = server.poll_timeout().unwrap();
        sends += drain(&mut server, now).len();
    };
    assert_eq!(ev, Event::Timeout(sid));
    assert_eq!(sends, 5, "1 + MAX_RETRANSMIT transmissions");
    let wait = Config::default();
    assert!(now >= wait.ack_timeout_ms * 31 && now <= wait.max_transmit_wait_ms());
}

#[test]
fn lossy_link_delivers_each_request_once() {
    // 30 % loss in both directions; every exchange either completes or times out, and the
    // server application never sees a request twice (responses fit the cache).
    let (mut client, mut server) = (ep(29), ep(30));
    let mut rng = 0x1234_5678u64;
    let mut lose = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % 10 < 3
    };
    let mut seen = std::collections::BTreeSet::new();
    let (mut done, mut failed) = (0, 0);
    let mut now = 0u64;
    for i in 0..40u32 {
        let id = client
            .request(now, S, Reliability::Confirmable, Code::POST, |w| {
                w.payload(&i.to_be_bytes())
            })
            .unwrap();
        loop {
            let mut progressed = false;
            for (_, b) in drain(&mut client, now) {
                progressed = true;
                if lose() {
                    continue;
                }
                if let Some(Incoming::Request(r)) = server.handle_datagram(now, C, &b) {
                    assert!(
                        seen.insert(r.message.payload().to_vec()),
                        "request {i} seen twice"
                    );
                    server
                        .respond(now, &r.handle, Code::CHANGED, |w| w.payload(b"k"))
                        .unwrap();
                }
            }
            for (_, b) in drain(&mut server, now) {
                progressed = true;
                if lose() {
                    continue;
                }
                if let Some(Incoming::Response { exchange, .. }) =
                    client.handle_datagram(now, S, &b)
                {
                    assert_eq!(exchange, id);
                    done += 1;
                }
            }
            if let Some(ev) = client.poll_event() {
                assert_eq!(ev, Event::Timeout(id));
                failed += 1;
            }
            if client.active_exchanges() == 0 {
                break;
            }
            if !progressed {
                now = client.poll_timeout().unwrap();
            }
        }
    }
    assert_eq!(done + failed, 40);
    assert!(done >= 35, "retransmission recovers most losses: {done}");
    assert!(client.stats().retransmissions > 0);
}

#[test]
fn same_seed_same_bytes() {
    let run = |seed| {
        let mut c = ep(seed);
        post_q(&mut c, 0, b"d");
        let first = drain(&mut c, 0);
        let t = c.poll_timeout();
        (first, t)
    };
    assert_eq!(run(42), run(42));
    assert_ne!(
        run(42).0,
        run(43).0,
        "different seeds give different MIDs/tokens"
    );
}

#[test]
fn tokens_are_fresh_and_mids_sequential() {
    let mut c = Endpoint::<u8, 8, 8, MSG>::new(Config::default(), 31).unwrap();
    let mut mids = Vec::new();
    let mut tokens = std::collections::BTreeSet::new();
    for peer in 10..16 {
        c.request(0, peer, Reliability::Confirmable, Code::GET, |_| Ok(()))
            .unwrap();
    }
    for (_, b) in drain(&mut c, 0) {
        let m = parse(&b);
        mids.push(m.message_id());
        tokens.insert(m.token().to_vec());
    }
    assert_eq!(tokens.len(), 6);
    for w in mids.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1));
    }
}

#[test]
fn builder_errors_free_the_slot() {
    let mut c = Endpoint::<u8, 1, 1, 16>::new(Config::default(), 32).unwrap();
    let e = c.request(0, S, Reliability::Confirmable, Code::POST, |w| {
        w.payload(&[0; 32])
    });
    assert!(matches!(e, Err(RequestError::Write(_))));
    assert_eq!(
        c.request(0, S, Reliability::Confirmable, Code::CONTENT, |_| Ok(())),
        Err(RequestError::InvalidCode)
    );
    c.request(0, S, Reliability::Confirmable, Code::GET, |_| Ok(()))
        .unwrap();
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary datagrams never panic the endpoint, whatever state it is in.
        #[test]
        fn endpoint_survives_garbage(
            datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..20),
            seed in any::<u64>(),
        ) {
            let mut e = ep(seed);
            post_q(&mut e, 0, b"x");
            e.request(0, 3, Reliability::NonConfirmable, Code::GET, |_| Ok(())).unwrap();
            let mut now = 0;
            for d in &datagrams {
                now += 100;
                let from = d.first().copied().unwrap_or(0) % 4;
                if let Some(Incoming::Request(r)) = e.handle_datagram(now, from, d) {
                    let _ = e.respond(now, &r.handle, Code::CONTENT, |w| w.payload(b"r"));
                }
                let out = drain(&mut e, now);
                for (_, b) in out {
                    prop_assert!(Message::parse(&b).is_ok(), "we only send valid messages");
                }
                while e.poll_event().is_some() {}
            }
        }
    }
}
