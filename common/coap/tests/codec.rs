//! Codec tests: property tests (no panics, round trips) and a cross-check against the
//! independent `coap-lite` implementation in both directions.

use std::collections::BTreeMap;

use coap_lite::{CoapOption, MessageClass, Packet};
use proptest::prelude::*;
use qos_coap::{option, Code, Message, MessageType, MessageWriter, ParseError};

fn any_type() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Confirmable),
        Just(MessageType::NonConfirmable),
        Just(MessageType::Acknowledgement),
        Just(MessageType::Reset),
    ]
}

fn to_lite(ty: MessageType) -> coap_lite::MessageType {
    match ty {
        MessageType::Confirmable => coap_lite::MessageType::Confirmable,
        MessageType::NonConfirmable => coap_lite::MessageType::NonConfirmable,
        MessageType::Acknowledgement => coap_lite::MessageType::Acknowledgement,
        MessageType::Reset => coap_lite::MessageType::Reset,
    }
}

/// A non-empty message: code 1..=255, token, sorted options, payload.
#[derive(Debug, Clone)]
struct Msg {
    ty: MessageType,
    code: u8,
    mid: u16,
    token: Vec<u8>,
    options: Vec<(u16, Vec<u8>)>,
    payload: Vec<u8>,
}

fn any_msg() -> impl Strategy<Value = Msg> {
    (
        any_type(),
        1u8..=255,
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..=8),
        prop::collection::vec(
            (
                prop_oneof![0u16..40, 0u16..400, any::<u16>()],
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..16),
                    prop::collection::vec(any::<u8>(), 0..300),
                ],
            ),
            0..8,
        ),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(ty, code, mid, token, mut options, payload)| {
            // Stable sort keeps the order of repeated options, as both codecs do.
            options.sort_by_key(|(n, _)| *n);
            Msg {
                ty,
                code,
                mid,
                token,
                options,
                payload,
            }
        })
}

fn write(m: &Msg, buf: &mut [u8]) -> usize {
    let mut w = MessageWriter::new(buf, m.ty, Code::from_raw(m.code), m.mid, &m.token).unwrap();
    for (n, v) in &m.options {
        w.option(*n, v).unwrap();
    }
    w.payload(&m.payload).unwrap();
    w.finish()
}

fn check_ours(parsed: &Message<'_>, m: &Msg) {
    assert_eq!(parsed.ty(), m.ty);
    assert_eq!(parsed.code().raw(), m.code);
    assert_eq!(parsed.message_id(), m.mid);
    assert_eq!(parsed.token(), &m.token[..]);
    let opts: Vec<(u16, Vec<u8>)> = parsed.options().map(|(n, v)| (n, v.to_vec())).collect();
    assert_eq!(opts, m.options);
    assert_eq!(parsed.payload(), &m.payload[..]);
}

fn lite_options(p: &Packet) -> Vec<(u16, Vec<u8>)> {
    p.options()
        .flat_map(|(n, list)| list.iter().map(move |v| (*n, v.clone())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Parsing arbitrary bytes never panics, and every accessor of an accepted message works
    /// and stays inside the datagram.
    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(m) = Message::parse(&bytes) {
            let _ = (m.ty(), m.code(), m.message_id());
            prop_assert!(m.token().len() <= 8);
            let mut total = 0usize;
            let mut last = 0u16;
            for (n, v) in m.options() {
                prop_assert!(n >= last);
                last = n;
                total += v.len();
            }
            prop_assert!(total + m.payload().len() + m.token().len() + 4 <= bytes.len());
            let _ = (m.content_format(), m.uri_path().count(), m.uri_queries().count());
            let _ = (m.option(option::URI_PATH), m.uint_option(option::OBSERVE));
            if !m.payload().is_empty() {
                prop_assert!(bytes.ends_with(m.payload()));
            }
        }
    }

    /// Mutating one byte of a valid message never panics either.
    #[test]
    fn parse_mutations_never_panic(m in any_msg(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut buf = vec![0u8; 4096];
        let n = write(&m, &mut buf);
        buf.truncate(n);
        let i = pos % n;
        buf[i] = byte;
        let _ = Message::parse(&buf).map(|p| p.options().count());
        let _ = Message::parse(&buf[..i]).map(|p| p.options().count());
    }

    /// writer → parse round trip.
    #[test]
    fn writer_parse_round_trip(m in any_msg()) {
        let mut buf = vec![0u8; 4096];
        let n = write(&m, &mut buf);
        let parsed = Message::parse(&buf[..n]).unwrap();
        check_ours(&parsed, &m);
    }

    /// Too small a buffer gives an error, never a panic or a partial success.
    #[test]
    fn writer_small_buffer_errors(m in any_msg(), cut in any::<usize>()) {
        let mut buf = vec![0u8; 4096];
        let full = write(&m, &mut buf);
        let size = cut % full;
        let mut small = vec![0u8; size];
        let res = (|| {
            let mut w = MessageWriter::new(&mut small, m.ty, Code::from_raw(m.code), m.mid, &m.token)?;
            for (n, v) in &m.options {
                w.option(*n, v)?;
            }
            w.payload(&m.payload)?;
            Ok::<usize, qos_coap::WriteError>(w.finish())
        })();
        prop_assert_eq!(res, Err(qos_coap::WriteError::BufferTooSmall));
    }

    /// What we write, coap-lite reads with identical fields.
    #[test]
    fn coap_lite_reads_ours(m in any_msg()) {
        let mut buf = vec![0u8; 4096];
        let n = write(&m, &mut buf);
        let p = Packet::from_bytes(&buf[..n]).unwrap();
        prop_assert_eq!(p.header.get_type(), to_lite(m.ty));
        prop_assert_eq!(u8::from(p.header.code), m.code);
        prop_assert_eq!(p.header.message_id, m.mid);
        prop_assert_eq!(p.get_token(), &m.token[..]);
        prop_assert_eq!(lite_options(&p), m.options.clone());
        prop_assert_eq!(&p.payload, &m.payload);
    }

    /// What coap-lite writes, we read with identical fields.
    #[test]
    fn we_read_coap_lite(m in any_msg()) {
        let mut p = Packet::new();
        p.header.set_type(to_lite(m.ty));
        p.header.code = MessageClass::from(m.code);
        p.header.message_id = m.mid;
        p.set_token(m.token.clone());
        for (n, v) in &m.options {
            p.add_option(CoapOption::from(*n), v.clone());
        }
        p.payload = m.payload.clone();
        let bytes = p.to_bytes_unlimited().unwrap();
        let parsed = Message::parse(&bytes).unwrap();
        check_ours(&parsed, &m);
        // And our encoding is byte-identical (both encode minimally and in order).
        let mut buf = vec![0u8; 4096];
        let n = write(&m, &mut buf);
        prop_assert_eq!(&buf[..n], &bytes[..]);
    }

    /// Uint options: minimal encoding, and coap-lite decodes the same number.
    #[test]
    fn uint_options_cross_check(v in any::<u32>()) {
        let mut buf = [0u8; 32];
        let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 1, &[]).unwrap();
        w.uint_option(option::MAX_AGE, v).unwrap();
        let n = w.finish();
        let ours = Message::parse(&buf[..n]).unwrap();
        prop_assert_eq!(ours.uint_option(option::MAX_AGE), Some(v));
        let p = Packet::from_bytes(&buf[..n]).unwrap();
        let raw = p.get_first_option(CoapOption::MaxAge).unwrap();
        prop_assert_eq!(raw.first().copied().unwrap_or(1) != 0, true, "no leading zero byte");
        prop_assert_eq!(raw.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)), v);
    }

    /// Block values round-trip through the option codec.
    #[test]
    fn block_option_round_trip(num in 0u32..=option::Block::MAX_NUM, more in any::<bool>(), szx in 0u8..=6) {
        let b = option::Block::new(num, more, szx).unwrap();
        let mut buf = [0u8; 32];
        let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 1, &[]).unwrap();
        w.block_option(option::BLOCK2, b).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        prop_assert_eq!(m.option(option::BLOCK2).and_then(option::Block::decode), Some(b));
    }
}

#[test]
fn specific_malformed_cases_rejected() {
    // TKL 9 (with 9 bytes of "token" present).
    let tkl9 = [0x49, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    assert_eq!(Message::parse(&tkl9), Err(ParseError::TokenLength));
    // Option header says 5 bytes of value, 2 present.
    assert_eq!(
        Message::parse(&[0x40, 0x01, 0, 1, 0xb5, b'a', b'b']),
        Err(ParseError::Truncated)
    );
    // Payload marker with nothing after it.
    assert_eq!(
        Message::parse(&[0x40, 0x45, 0, 1, 0xff]),
        Err(ParseError::EmptyPayload)
    );
    // Option delta 15 that is not the payload marker.
    assert_eq!(
        Message::parse(&[0x40, 0x01, 0, 1, 0xf1, 0]),
        Err(ParseError::ReservedNibble)
    );
}

#[test]
fn known_wire_examples() {
    // RFC 7252 Appendix A, figure 16-ish: CON GET /temperature, MID 0x7d34, no token.
    let mut bytes = vec![0x40, 0x01, 0x7d, 0x34, 0xbb];
    bytes.extend_from_slice(b"temperature");
    let m = Message::parse(&bytes).unwrap();
    assert!(m.path_is("/temperature"));
    assert_eq!(m.token(), b"");
    // ACK 2.05 piggybacked, payload "22.3 C".
    let mut bytes = vec![0x60, 0x45, 0x7d, 0x34, 0xff];
    bytes.extend_from_slice(b"22.3 C");
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.ty(), MessageType::Acknowledgement);
    assert_eq!(m.code(), Code::CONTENT);
    assert_eq!(m.payload(), b"22.3 C");
    // Same from coap-lite.
    let p = Packet::from_bytes(&bytes).unwrap();
    assert_eq!(p.payload, b"22.3 C");
}

#[test]
fn extended_delta_and_length_forms() {
    // Deltas 12 (4-bit), 13 and 268 (1-byte ext), 269 and 65535 (2-byte ext); lengths likewise.
    let cases: [(u16, usize); 6] = [
        (12, 12),
        (25, 13),
        (280, 268),
        (549, 269),
        (1000, 1000),
        (65535, 0),
    ];
    let mut buf = vec![0u8; 8192];
    let mut w =
        MessageWriter::new(&mut buf, MessageType::NonConfirmable, Code::PUT, 3, &[9]).unwrap();
    let mut total_delta = 0;
    for (n, len) in cases {
        assert!(n >= total_delta);
        total_delta = n;
        w.option(n, &vec![0x11; len]).unwrap();
    }
    let n = w.finish();
    let m = Message::parse(&buf[..n]).unwrap();
    let got: Vec<(u16, usize)> = m.options().map(|(n, v)| (n, v.len())).collect();
    assert_eq!(got, cases.to_vec());
    let p = Packet::from_bytes(&buf[..n]).unwrap();
    assert_eq!(lite_options(&p).len(), cases.len());
    // Headers: delta 12 fits the nibble; delta 13 uses 1 ext byte.
    let lens: BTreeMap<u16, usize> = lite_options(&p)
        .into_iter()
        .map(|(n, v)| (n, v.len()))
        .collect();
    assert_eq!(lens.get(&65535), Some(&0));
}
