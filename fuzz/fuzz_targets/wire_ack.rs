//! `qos_wire::uplink::Ack::decode` on arbitrary bytes; an ack that decodes is encoded again to
//! the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_wire::uplink::Ack;

fuzz_target!(|data: &[u8]| {
    let Ok(ack) = Ack::decode(data) else {
        return;
    };
    let mut buf = [0u8; 16];
    let n = ack.encode(&mut buf).expect("encode");
    assert_eq!(Ack::decode(&buf[..n]), Ok(ack));
});
