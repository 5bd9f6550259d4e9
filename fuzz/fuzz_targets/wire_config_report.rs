//! `qos_wire::config::ConfigReport::decode` on arbitrary bytes; a report that decodes has a
//! reason of at most 96 bytes, and is encoded again to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_wire::config::{ConfigReport, MAX_REASON};

fuzz_target!(|data: &[u8]| {
    let Ok(r) = ConfigReport::decode(data) else {
        return;
    };
    assert!(r.reason.len() <= MAX_REASON);
    let mut buf = [0u8; 128];
    let n = r.encode(&mut buf).expect("re-encode");
    assert_eq!(ConfigReport::decode(&buf[..n]).expect("round trip"), r);
});
