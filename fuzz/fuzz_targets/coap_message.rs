//! `qos_coap::Message::parse` on arbitrary bytes, then every accessor; a message that parses is
//! written again with `MessageWriter` and must parse to the same header, options and payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_coap::msg::peek_header;
use qos_coap::option::{self, Block};
use qos_coap::{Message, MessageWriter};

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    let Ok(m) = Message::parse(data) else {
        return;
    };
    assert_eq!(m.as_bytes(), data);
    let code = m.code();
    let _ = (
        code.class(),
        code.detail(),
        code.is_request(),
        code.is_response(),
        code.is_reserved(),
    );
    let _ = (m.ty(), m.message_id(), m.is_empty(), m.payload());
    let mut last = 0u16;
    let mut options = Vec::new();
    for (number, value) in m.options() {
        assert!(number >= last, "options out of order");
        last = number;
        let _ = option::decode_uint(value);
        let _ = option::is_known(number);
        if number == option::BLOCK1 || number == option::BLOCK2 {
            if let Some(b) = Block::decode(value) {
                let (bytes, n) = b.encode();
                assert_eq!(Block::decode(&bytes[3 - n..]), Some(b));
            }
        }
        assert!(m.option(number).is_some());
        assert!(m.options_numbered(number).count() >= 1);
        options.push((number, value));
    }
    let _ = m.uint_option(option::CONTENT_FORMAT);
    let _ = m.uri_path().count();
    let _ = m.uri_queries().count();
    let _ = (m.path_is("u"), m.path_is(".well-known/core"));
    let _ = m.content_format();
    let _ = m.unknown_critical_option();

    // Round trip through the writer.
    let mut buf = vec![0u8; data.len() + 16];
    let mut w =
        MessageWriter::new(&mut buf, m.ty(), code, m.message_id(), m.token()).expect("header");
    for (number, value) in &options {
        w.option(*number, value).expect("option");
    }
    w.payload(m.payload()).expect("payload");
    let n = w.finish();
    let again = Message::parse(&buf[..n]).expect("a written message parses");
    assert_eq!(
        (again.ty(), again.code(), again.message_id()),
        (m.ty(), code, m.message_id())
    );
    assert_eq!(again.token(), m.token());
    assert!(again.options().eq(options.iter().copied()));
    assert_eq!(again.payload(), m.payload());
});
