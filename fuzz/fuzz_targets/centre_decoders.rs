//! The decoders of the centre's side of the edge contract on arbitrary bytes:
//! `qos_broker::BrokerReport::decode` (a broker's `POST /b`; a report that decodes encodes and
//! decodes again to the same value when its edges fit in one message) and
//! `qos_aggregator::centre::decode_report` (an edge's `config-report`, `POST /c`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_aggregator::centre::decode_report;
use qos_broker::BrokerReport;

fuzz_target!(|data: &[u8]| {
    let _ = decode_report(data);
    if let Ok(r) = BrokerReport::decode(data) {
        let again = BrokerReport::decode(&r.encode()).expect("our own encoding decodes");
        assert_eq!(again.stats, r.stats);
        assert_eq!(again.total_edges, r.total_edges);
        assert_eq!(again.edges[..], r.edges[..again.edges.len()]);
    }
});
