//! The edge's persisted outbox (`Outbox::load`, postcard) from arbitrary bytes, then used as a
//! restored outbox is used after a reboot: a new epoch, a batch put in flight, acknowledged,
//! new records pushed, saved and loaded again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_edge_core::Outbox;
use qos_wire::uplink::RecordKind;

type Small = Outbox<8, 256>;

fuzz_target!(|data: &[u8]| {
    let Ok(mut o) = Small::load(data) else {
        return;
    };
    let _ = (o.len(), o.is_empty(), o.stats(), o.next_seq());
    if let Some(f) = o.in_flight() {
        let _ = f.last();
    }
    for e in o.in_flight_records() {
        assert!(e.seq().is_some());
        let _ = (e.kind(), e.bytes().len());
    }
    let epoch = o.next_seq().epoch().saturating_add(1);
    o.start_epoch(epoch);
    if let Some(f) = o.start_batch(1024, 64) {
        let _ = o.ack(f.last());
    }
    for _ in 0..3 {
        let _ = o.push(RecordKind::Summary, |e| {
            e.array(0)?;
            Ok(())
        });
    }
    let _ = o.start_batch(1024, 64);
    let mut buf = vec![0u8; 8 * 300 + 64];
    let saved = o.save(&mut buf).expect("save").to_vec();
    let again = Small::load(&saved).expect("a saved outbox loads");
    assert_eq!(again, o);
});
