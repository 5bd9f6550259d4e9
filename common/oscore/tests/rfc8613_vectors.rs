//! The test vectors of RFC 8613 Appendix C: key derivation (C.1–C.3) and protection of
//! requests (C.4–C.6) and a response (C.7), byte for byte, both ways.

use qos_oscore::{Context, Error, RequestInfo};

const SECRET: [u8; 16] = [
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
];
const SALT: [u8; 8] = [0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];
const ID_CONTEXT: [u8; 8] = [0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3];

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn c1_key_derivation_with_master_salt() {
    let client = Context::derive(&SECRET, &SALT, None, &[], &[0x01]).unwrap();
    assert_eq!(
        client.sender_key().to_vec(),
        hex("f0910ed7295e6ad4b54fc793154302ff")
    );
    assert_eq!(
        client.recipient_key().to_vec(),
        hex("ffb14e093c94c9cac9471648b4f98710")
    );
    assert_eq!(
        client.common_iv().to_vec(),
        hex("4622d4dd6d944168eefb54987c")
    );
    let server = Context::derive(&SECRET, &SALT, None, &[0x01], &[]).unwrap();
    assert_eq!(server.sender_key(), client.recipient_key());
    assert_eq!(server.recipient_key(), client.sender_key());
    assert_eq!(server.common_iv(), client.common_iv());
}

#[test]
fn c2_key_derivation_without_master_salt() {
    let client = Context::derive(&SECRET, &[], None, &[0x00], &[0x01]).unwrap();
    assert_eq!(
        client.sender_key().to_vec(),
        hex("321b26943253c7ffb6003b0b64d74041")
    );
    assert_eq!(
        client.recipient_key().to_vec(),
        hex("e57b5635815177cd679ab4bcec9d7dda")
    );
    assert_eq!(
        client.common_iv().to_vec(),
        hex("be35ae297d2dace910c52e99f9")
    );
    let server = Context::derive(&SECRET, &[], None, &[0x01], &[0x00]).unwrap();
    assert_eq!(server.sender_key(), client.recipient_key());
}

#[test]
fn c3_key_derivation_with_id_context() {
    let client = Context::derive(&SECRET, &SALT, Some(&ID_CONTEXT), &[], &[0x01]).unwrap();
    assert_eq!(
        client.sender_key().to_vec(),
        hex("af2a1300a5e95788b356336eeecd2b92")
    );
    assert_eq!(
        client.recipient_key().to_vec(),
        hex("e39a0c7c77b43f03b4b39ab9a268699f")
    );
    assert_eq!(
        client.common_iv().to_vec(),
        hex("2ca58fb85ff1b81c0b7181b85e")
    );
}

/// GET coap://localhost/tv1 as in C.4–C.6 (message id and token vary).
fn request(mid_token: &str) -> Vec<u8> {
    hex(&format!("4401{mid_token} 39 6c6f63616c686f7374 83 747631"))
}

fn protect_and_back(client: &mut Context, server: &mut Context, plain: &[u8], expected: &[u8]) {
    client.set_sender_sequence(20);
    let mut out = [0u8; 128];
    let (n, info) = client.protect_request(plain, &mut out).unwrap();
    assert_eq!(&out[..n], expected, "protected request");
    assert_eq!(info.sequence(), 20);
    assert_eq!(client.sender_sequence(), 21, "the sequence number advances");
    let mut back = [0u8; 128];
    let (m, got) = server.unprotect_request(expected, &mut back).unwrap();
    assert_eq!(&back[..m], plain, "unprotected request");
    assert_eq!(got, info);
}

#[test]
fn c4_request_with_master_salt() {
    let mut client = Context::derive(&SECRET, &SALT, None, &[], &[0x01]).unwrap();
    let mut server = Context::derive(&SECRET, &SALT, None, &[0x01], &[]).unwrap();
    let expected =
        hex("44025d1f00003974 39 6c6f63616c686f7374 62 0914 ff 612f1092f1776f1c1668b3825e");
    protect_and_back(
        &mut client,
        &mut server,
        &request("5d1f00003974"),
        &expected,
    );
}

#[test]
fn c5_request_without_master_salt() {
    let mut client = Context::derive(&SECRET, &[], None, &[0x00], &[0x01]).unwrap();
    let mut server = Context::derive(&SECRET, &[], None, &[0x01], &[0x00]).unwrap();
    let expected =
        hex("440271c30000b932 39 6c6f63616c686f7374 63 091400 ff 4ed339a5a379b0b8bc731fffb0");
    protect_and_back(
        &mut client,
        &mut server,
        &request("71c30000b932"),
        &expected,
    );
}

#[test]
fn c6_request_with_id_context() {
    let mut client = Context::derive(&SECRET, &SALT, Some(&ID_CONTEXT), &[], &[0x01]).unwrap();
    let mut server = Context::derive(&SECRET, &SALT, Some(&ID_CONTEXT), &[0x01], &[]).unwrap();
    let expected = hex(
        "44022f8eef9bbf7a 39 6c6f63616c686f7374 6b 19140837cbf3210017a2d3 ff \
         72cd7273fd331ac45cffbe55c3",
    );
    protect_and_back(
        &mut client,
        &mut server,
        &request("2f8eef9bbf7a"),
        &expected,
    );
}

#[test]
fn c7_response_with_master_salt() {
    let server = Context::derive(&SECRET, &SALT, None, &[0x01], &[]).unwrap();
    let client = Context::derive(&SECRET, &SALT, None, &[], &[0x01]).unwrap();
    // 2.05 Content, ACK, "Hello World!", answering the request of C.4 (kid h'', PIV 20).
    let plain = hex("64455d1f00003974 ff 48656c6c6f20576f726c6421");
    let expected = hex("64445d1f00003974 90 ff dbaad1e9a7e7b2a813d3c31524378303cdafae119106");
    let request = RequestInfo {
        kid: Default::default(),
        piv: heapless::Vec::from_slice(&[0x14]).unwrap(),
    };
    let mut out = [0u8; 64];
    let n = server.protect_response(&plain, &request, &mut out).unwrap();
    assert_eq!(&out[..n], &expected[..]);
    let mut back = [0u8; 64];
    let m = client
        .unprotect_response(&expected, &request, &mut back)
        .unwrap();
    assert_eq!(&back[..m], &plain[..]);
}

#[test]
fn c8_response_with_partial_iv_is_read() {
    let client = Context::derive(&SECRET, &SALT, None, &[], &[0x01]).unwrap();
    let protected = hex("64445d1f00003974 92 0100 ff 4d4c13669384b67354b2b6175ff4b8658c666a6cf88e");
    let plain = hex("64455d1f00003974 ff 48656c6c6f20576f726c6421");
    let request = RequestInfo {
        kid: Default::default(),
        piv: heapless::Vec::from_slice(&[0x14]).unwrap(),
    };
    let mut back = [0u8; 64];
    let m = client
        .unprotect_response(&protected, &request, &mut back)
        .unwrap();
    assert_eq!(&back[..m], &plain[..]);
}

/// Every single-byte change of a protected request is refused, and refusing changes nothing:
/// the genuine message is still accepted afterwards.
#[test]
fn any_altered_byte_is_refused_without_side_effects() {
    let expected =
        hex("44025d1f00003974 39 6c6f63616c686f7374 62 0914 ff 612f1092f1776f1c1668b3825e");
    let mut server = Context::derive(&SECRET, &SALT, None, &[0x01], &[]).unwrap();
    let mut back = [0u8; 128];
    // From the OSCORE option on: the header and Uri-Host are not protected (class U).
    for i in 18..expected.len() {
        let mut bad = expected.clone();
        bad[i] ^= 0x01;
        let err = server.unprotect_request(&bad, &mut back).unwrap_err();
        assert!(
            matches!(err, Error::Decrypt | Error::UnknownKid | Error::Malformed),
            "byte {i}: {err:?}"
        );
    }
    let mut tag_flipped = expected.clone();
    *tag_flipped.last_mut().unwrap() ^= 0x80;
    assert_eq!(
        server.unprotect_request(&tag_flipped, &mut back),
        Err(Error::Decrypt)
    );
    server.unprotect_request(&expected, &mut back).unwrap();
    assert_eq!(
        server.unprotect_request(&expected, &mut back),
        Err(Error::Replay)
    );
}

#[test]
fn wrong_kid_unprotected_and_stale_requests_are_told_apart() {
    let mut client = Context::derive(&SECRET, &SALT, None, &[0x05], &[0x01]).unwrap();
    let mut server = Context::derive(&SECRET, &SALT, None, &[0x01], &[0x06]).unwrap();
    let plain = request("5d1f00003974");
    let mut p = [0u8; 128];
    let mut back = [0u8; 128];
    let (n, _) = client.protect_request(&plain, &mut p).unwrap();
    assert_eq!(
        server.unprotect_request(&p[..n], &mut back),
        Err(Error::UnknownKid)
    );
    assert_eq!(
        server.unprotect_request(&plain, &mut back),
        Err(Error::NotProtected)
    );
    assert_eq!(qos_oscore::request_kid(&p[..n]), Ok(Some(&[0x05][..])));

    let mut client = Context::derive(&SECRET, &SALT, None, &[0x06], &[0x01]).unwrap();
    let (old, _) = client.protect_request(&plain, &mut p).unwrap();
    let old_msg = p[..old].to_vec();
    client.set_sender_sequence(1000);
    let (n, _) = client.protect_request(&plain, &mut p).unwrap();
    server.unprotect_request(&p[..n], &mut back).unwrap();
    assert_eq!(
        server.unprotect_request(&old_msg, &mut back),
        Err(Error::Stale)
    );
}

#[test]
fn sequence_numbers_end_at_2_pow_40() {
    let mut client = Context::derive(&SECRET, &SALT, None, &[], &[0x01]).unwrap();
    client.set_sender_sequence(qos_oscore::MAX_SEQUENCE);
    let mut p = [0u8; 128];
    let (_, info) = client
        .protect_request(&request("5d1f00003974"), &mut p)
        .unwrap();
    assert_eq!(info.piv.len(), 5);
    assert_eq!(
        client
            .protect_request(&request("5d1f00003974"), &mut p)
            .unwrap_err(),
        Error::SequenceExhausted
    );
}

#[test]
fn a_retransmission_is_protected_to_the_same_bytes() {
    let mut client = Context::derive(&SECRET, &SALT, None, &[], &[0x01]).unwrap();
    client.set_sender_sequence(20);
    let plain = request("5d1f00003974");
    let mut first = [0u8; 128];
    let (n, info) = client.protect_request(&plain, &mut first).unwrap();
    let mut again = [0u8; 128];
    let m = client
        .protect_request_again(&plain, &info, &mut again)
        .unwrap();
    assert_eq!(&first[..n], &again[..m]);
    assert_eq!(
        client.sender_sequence(),
        21,
        "no number is used up by a retransmission"
    );
    let expected =
        hex("44025d1f00003974 39 6c6f63616c686f7374 62 0914 ff 612f1092f1776f1c1668b3825e");
    assert_eq!(&again[..m], &expected[..]);
}
