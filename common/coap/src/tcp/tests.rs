use std::vec::Vec as StdVec;

use proptest::prelude::*;

use super::*;
use crate::msg::{frame_len, MessageType};
use crate::Reliability;

type Ep = StreamEndpoint<u8, 8, 1152, 4>;

fn pair() -> (Ep, Ep) {
    let c = Ep::new(StreamConfig::default(), 1).unwrap();
    let s = Ep::new(StreamConfig::default(), 2).unwrap();
    (c, s)
}

/// Moves every frame from `a` (whose connection to `b` is `b_addr`) to `b` (which knows `a` as
/// `a_addr`) through a byte stream, split back into frames with `frame_len`; returns the
/// requests and responses `b` delivered, as (is_request, code, token, payload).
fn pump(now: u64, a: &mut Ep, b: &mut Ep, a_addr: u8) -> StdVec<(bool, Code, StdVec<u8>)> {
    let mut stream = StdVec::new();
    let mut buf = [0u8; 1152];
    while let Some((_, n)) = a.poll_transmit(now, &mut buf) {
        stream.extend_from_slice(&buf[..n]);
    }
    let mut out = StdVec::new();
    let mut rest = &stream[..];
    while let Some(n) = frame_len(rest).unwrap() {
        let (frame, tail) = rest.split_at(n);
        rest = tail;
        match b.handle_datagram(now, a_addr, frame) {
            Some(Incoming::Request(r)) => {
                out.push((true, r.message.code(), r.message.payload().to_vec()));
                let h = r.handle;
                b.respond(now, &h, Code::CONTENT, |w| w.payload(b"answer"))
                    .unwrap();
            }
            Some(Incoming::Response { message, .. }) => {
                out.push((false, message.code(), message.payload().to_vec()))
            }
            None => {}
        }
    }
    assert!(rest.is_empty());
    out
}

#[test]
fn csm_then_request_and_response() {
    let (mut c, mut s) = pair();
    assert!(c.connected(0, 2));
    assert!(s.connected(0, 1));
    let id = c
        .request(0, 2, Reliability::Confirmable, Code::POST, |w| {
            w.uri_path("u")?;
            w.payload(b"batch")
        })
        .unwrap();
    let got = pump(1, &mut c, &mut s, 1);
    assert_eq!(got, [(true, Code::POST, b"batch".to_vec())]);
    assert_eq!(s.peer_max_message_size(1), Some(1152));
    let got = pump(2, &mut s, &mut c, 2);
    assert_eq!(got, [(false, Code::CONTENT, b"answer".to_vec())]);
    assert!(!c.awaiting_separate(id));
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.active_exchanges(), 0);
}

#[test]
fn a_request_before_the_peer_csm_aborts() {
    let (mut c, mut s) = pair();
    s.connected(0, 1);
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new_frame(&mut buf, Code::GET, &[1]).unwrap();
    w.uri_path("x").unwrap();
    let n = w.finish();
    assert!(s.handle_datagram(0, 1, &buf[..n]).is_none());
    assert_eq!(s.poll_disconnect(), Some(1));
    // Our CSM, then the Abort.
    let (_, n) = s.poll_transmit(0, &mut buf).unwrap();
    assert_eq!(Message::parse_frame(&buf[..n]).unwrap().code(), CSM);
    let (_, n) = s.poll_transmit(0, &mut buf).unwrap();
    assert_eq!(Message::parse_frame(&buf[..n]).unwrap().code(), ABORT);
    let _ = &mut c;
}

#[test]
fn ping_is_answered_and_keepalive_detects_a_dead_peer() {
    let (mut c, _) = pair();
    let quiet = StreamConfig {
        keepalive_ms: 0,
        ..StreamConfig::default()
    };
    let mut s = Ep::new(quiet, 2).unwrap();
    c.connected(0, 2);
    s.connected(0, 1);
    pump(0, &mut c, &mut s, 1);
    pump(0, &mut s, &mut c, 2);
    // Idle for keepalive_ms: the client pings; the server answers; nothing fails.
    let ka = c.config().keepalive_ms;
    assert_eq!(c.poll_timeout(), Some(ka));
    let mut buf = [0u8; 64];
    let (_, n) = c.poll_transmit(ka, &mut buf).unwrap();
    assert_eq!(Message::parse_frame(&buf[..n]).unwrap().code(), PING);
    s.handle_datagram(ka, 1, &buf[..n]);
    let (_, n) = s.poll_transmit(ka, &mut buf).unwrap();
    assert_eq!(Message::parse_frame(&buf[..n]).unwrap().code(), PONG);
    c.handle_datagram(ka + 1, 2, &buf[..n]);
    assert_eq!(c.poll_disconnect(), None);
    // Now the server goes silent: ping at 2ka+1, failure at 3ka+1.
    let id = c
        .request(ka + 1, 2, Reliability::Confirmable, Code::GET, |w| {
            w.uri_path("c")
        })
        .unwrap();
    while c.poll_transmit(ka + 1, &mut buf).is_some() {}
    c.handle_timeout(2 * ka + 1);
    while c.poll_transmit(2 * ka + 1, &mut buf).is_some() {}
    c.handle_timeout(3 * ka + 1);
    assert_eq!(c.poll_disconnect(), Some(2));
    c.disconnected(3 * ka + 1, 2);
    assert_eq!(c.poll_event(), Some(Event::Timeout(id)));
}

#[test]
fn a_failed_connection_sends_one_abort_and_nothing_more() {
    let (mut c, _) = pair();
    c.connected(0, 2);
    let mut buf = [0u8; 64];
    while c.poll_transmit(0, &mut buf).is_some() {}
    let ka = c.config().keepalive_ms;
    c.request(ka, 2, Reliability::Confirmable, Code::GET, |w| {
        w.uri_path("x")
    })
    .unwrap();
    // Ping (and the request), then no answer: failed.
    let mut codes = std::vec::Vec::new();
    for now in [ka, 2 * ka, 3 * ka, 4 * ka] {
        while let Some((_, n)) = c.poll_transmit(now, &mut buf) {
            codes.push(Message::parse_frame(&buf[..n]).unwrap().code());
            assert!(codes.len() < 10, "bounded: {codes:?}");
        }
    }
    assert_eq!(codes, [PING, Code::GET, ABORT]);
    assert_eq!(c.poll_disconnect(), Some(2));
    assert_eq!(c.poll_disconnect(), None);
    // Frames still arriving on it are not taken.
    let mut w = MessageWriter::new_frame(&mut buf, Code::CONTENT, &[]).unwrap();
    w.payload(b"late").unwrap();
    let n = w.finish();
    assert!(c.handle_datagram(4 * ka, 2, &buf[..n]).is_none());
}

#[test]
fn lost_connection_aborts_sent_requests_and_keeps_unsent_ones() {
    let (mut c, mut s) = pair();
    c.connected(0, 2);
    s.connected(0, 1);
    let sent = c
        .request(0, 2, Reliability::Confirmable, Code::POST, |w| {
            w.payload(b"a")
        })
        .unwrap();
    pump(0, &mut c, &mut s, 1);
    c.disconnected(1, 2);
    let unsent = c
        .request(1, 2, Reliability::Confirmable, Code::POST, |w| {
            w.payload(b"b")
        })
        .unwrap();
    assert_eq!(c.poll_event(), Some(Event::Aborted(sent)));
    let mut buf = [0u8; 64];
    assert_eq!(c.poll_transmit(1, &mut buf), None, "no connection");
    // Reconnect: CSM, then the waiting request.
    let mut s = Ep::new(StreamConfig::default(), 3).unwrap();
    c.connected(2, 2);
    s.connected(2, 1);
    pump(2, &mut s, &mut c, 2);
    let got = pump(2, &mut c, &mut s, 1);
    assert_eq!(got, [(true, Code::POST, b"b".to_vec())]);
    let got = pump(3, &mut s, &mut c, 2);
    assert_eq!(got, [(false, Code::CONTENT, b"answer".to_vec())]);
    assert!(c.poll_event().is_none());
    let _ = unsent;
}

#[test]
fn request_timeout_and_release() {
    let (mut c, mut s) = pair();
    c.connected(0, 2);
    s.connected(0, 1);
    pump(0, &mut s, &mut c, 2);
    let id = c
        .request(0, 2, Reliability::Confirmable, Code::GET, |w| {
            w.uri_path("x")
        })
        .unwrap();
    let mut buf = [0u8; 64];
    while c.poll_transmit(0, &mut buf).is_some() {}
    let t = c.config().request_timeout_ms;
    c.handle_timeout(t);
    assert_eq!(c.poll_event(), Some(Event::Timeout(id)));
    let mut w = MessageWriter::new_frame(&mut buf, RELEASE, &[]).unwrap();
    w.option(OPT_CUSTODY, &[]).unwrap();
    let n = w.finish();
    c.handle_datagram(t, 2, &buf[..n]);
    assert_eq!(c.poll_disconnect(), Some(2));
}

#[test]
fn frame_length_boundaries() {
    for body in [0usize, 12, 13, 268, 269, 270, 65804, 65805, 70000] {
        let mut buf = std::vec![0u8; body + 16];
        let mut w = MessageWriter::new_frame(&mut buf, Code::POST, &[9, 8]).unwrap();
        if body > 0 {
            w.payload(&std::vec![7u8; body - 1]).unwrap();
        }
        let n = w.finish();
        assert_eq!(frame_len(&buf[..n]), Ok(Some(n)), "body {body}");
        let m = Message::parse_frame(&buf[..n]).unwrap();
        assert_eq!(m.payload().len(), body.saturating_sub(1));
        assert_eq!(m.token(), &[9, 8]);
        assert_eq!(m.code(), Code::POST);
        // Every prefix of the head is "need more", never an error.
        for k in 0..3.min(n) {
            assert!(matches!(frame_len(&buf[..k]), Ok(None) | Ok(Some(_))));
        }
        assert_eq!(
            Message::parse_frame(&buf[..n - 1]),
            Err(crate::ParseError::FrameLength)
        );
    }
}

fn options_strategy() -> impl Strategy<Value = StdVec<(u16, StdVec<u8>)>> {
    prop::collection::vec(
        (0u16..2000, prop::collection::vec(any::<u8>(), 0..300)),
        0..6,
    )
    .prop_map(|mut v| {
        v.sort_by_key(|(n, _)| *n);
        v
    })
}

proptest! {
    #[test]
    fn both_framings_round_trip(
        code in 1u8..=255,
        token in prop::collection::vec(any::<u8>(), 0..=8),
        options in options_strategy(),
        payload in prop::collection::vec(any::<u8>(), 0..400),
        mid in any::<u16>(),
    ) {
        let code = Code::from_raw(code);
        let mut dgram = std::vec![0u8; 4096];
        let mut frame = std::vec![0u8; 4096];
        let mut w = MessageWriter::new(&mut dgram, MessageType::Confirmable, code, mid, &token).unwrap();
        let mut f = MessageWriter::new_frame(&mut frame, code, &token).unwrap();
        for (n, v) in &options {
            w.option(*n, v).unwrap();
            f.option(*n, v).unwrap();
        }
        w.payload(&payload).unwrap();
        f.payload(&payload).unwrap();
        let (dn, fn_) = (w.finish(), f.finish());
        let d = Message::parse(&dgram[..dn]).unwrap();
        let m = Message::parse_frame(&frame[..fn_]).unwrap();
        prop_assert_eq!(frame_len(&frame[..fn_]), Ok(Some(fn_)));
        // Frames carry no type and message ID: 4 - 1 header bytes fewer, plus the length.
        prop_assert!(fn_ <= dn + 2);
        for msg in [d, m] {
            prop_assert_eq!(msg.code(), code);
            prop_assert_eq!(msg.token(), &token[..]);
            prop_assert_eq!(msg.payload(), &payload[..]);
            let got: StdVec<(u16, StdVec<u8>)> = msg.options().map(|(n, v)| (n, v.to_vec())).collect();
            prop_assert_eq!(&got, &options);
        }
        prop_assert_eq!(d.message_id(), mid);
        prop_assert_eq!(m.message_id(), 0);
    }

    #[test]
    fn frame_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(Some(n)) = frame_len(&bytes) {
            if let Some(f) = bytes.get(..n) {
                let _ = Message::parse_frame(f);
            }
        }
        let _ = Message::parse_frame(&bytes);
        let mut ep = Ep::new(StreamConfig::default(), 5).unwrap();
        ep.connected(0, 1);
        let _ = ep.handle_datagram(0, 1, &bytes);
    }
}
