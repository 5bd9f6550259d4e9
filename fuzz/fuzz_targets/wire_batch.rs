//! `qos_wire::uplink::Batch::decode` on arbitrary bytes, then every record body decoded by its
//! kind (as the super-manager does, with the edge's sketch size; host metrics too). A body that decodes is encoded
//! again and must decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minicbor::Decoder;
use qos_wire::codec::encode_into;
use qos_wire::event::Event;
use qos_wire::metrics::MetricsSample;
use qos_wire::outcome::ProbeResult;
use qos_wire::summary::Summary;
use qos_wire::uplink::{Batch, RecordKind};

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = Batch::decode(data) else {
        return;
    };
    assert!(!batch.is_empty());
    assert!(batch.last_seq().0 >= batch.first_seq.0);
    let mut count = 0;
    let mut buf = [0u8; 4096];
    for (i, r) in batch.records().enumerate() {
        count += 1;
        assert_eq!(r.seq.0, batch.first_seq.0 + i as u64);
        assert!(r.raw.ends_with(r.body));
        let mut d = Decoder::new(r.body);
        match r.kind {
            RecordKind::Summary => {
                if let Ok(s) = Summary::<128>::decode(&mut d) {
                    let _ = (s.runs(), s.availability(), s.sketch.quantile(0.99));
                    let n = encode_into(&mut buf, |e| s.encode(e)).expect("re-encode");
                    let again =
                        Summary::<128>::decode(&mut Decoder::new(&buf[..n])).expect("round trip");
                    assert_eq!(again, s);
                }
            }
            RecordKind::Event => {
                if let Ok(ev) = Event::decode(&mut d) {
                    let n = encode_into(&mut buf, |e| ev.encode(e)).expect("re-encode");
                    assert_eq!(Event::decode(&mut Decoder::new(&buf[..n])).ok(), Some(ev));
                }
            }
            RecordKind::Result => {
                if let Ok(pr) = ProbeResult::decode(&mut d) {
                    let _ = (pr.ok(), pr.phases.iter().count());
                    let n = encode_into(&mut buf, |e| pr.encode(e)).expect("re-encode");
                    assert_eq!(
                        ProbeResult::decode(&mut Decoder::new(&buf[..n])).ok(),
                        Some(pr)
                    );
                }
            }
            RecordKind::Metrics => {
                if let Ok(m) = MetricsSample::decode(&mut d) {
                    let n = encode_into(&mut buf, |e| m.encode(e)).expect("re-encode");
                    assert_eq!(
                        MetricsSample::decode(&mut Decoder::new(&buf[..n])).ok(),
                        Some(m)
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(count, batch.len());
});
