//! The latency sketch decoded from arbitrary CBOR with the edge's capacity (128 buckets) and the
//! super-manager's (every bucket); a sketch that decodes answers quantiles, merges, and encodes
//! again to an equal sketch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_wire::codec::encode_into;
use qos_wire::sketch::{Sketch, BUCKETS};

fn exercise<const N: usize>(data: &[u8]) {
    let Ok(s) = minicbor::decode::<Sketch<N>>(data) else {
        return;
    };
    for q in [0.0, 0.5, 0.99, 1.0] {
        let _ = s.quantile(q);
        let _ = s.quantile_is_guaranteed(q);
    }
    let total: u64 = s.iter().map(|(_, c)| u64::from(c)).sum();
    let _ = (s.min_index(), s.max_index(), total);
    let mut big = Sketch::<BUCKETS>::new();
    big.merge(&s);
    let mut buf = vec![0u8; data.len() + 64];
    let n = encode_into(&mut buf, |e| {
        e.encode(&s)?;
        Ok(())
    })
    .expect("re-encode");
    let again = minicbor::decode::<Sketch<N>>(&buf[..n]).expect("round trip");
    assert_eq!(again, s);
}

fuzz_target!(|data: &[u8]| {
    exercise::<128>(data);
    exercise::<BUCKETS>(data);
});
