//! The super-manager's ingest (`Ingest::handle_batch`) over a SQLite store in a temporary file,
//! opened once per process. A batch is acknowledged exactly up to its last record, sending it
//! again is acknowledged the same way without storing anything new, and a refusal is never a
//! store error.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use qos_aggregator::ingest::Ingest;
use qos_aggregator::stats::{IngestStats, RejectReason};
use qos_aggregator::store::{SqliteStore, Synchronous};
use qos_wire::uplink::Batch;

fn ingest() -> &'static Mutex<Ingest> {
    static INGEST: OnceLock<Mutex<Ingest>> = OnceLock::new();
    INGEST.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("qos-fuzz-ingest-{}.sqlite", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let store = SqliteStore::open(&path, Synchronous::Normal).expect("open the store");
        Mutex::new(Ingest::new(Box::new(store), Arc::new(IngestStats::new())))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut ingest = ingest().lock().unwrap_or_else(|e| e.into_inner());
    let before = ingest.stats().snapshot();
    match ingest.handle_batch(data, 1_800_000_000_000) {
        Ok(ack) => {
            let batch = Batch::decode(data).expect("an acknowledged batch decodes");
            assert_eq!(ack.acked, batch.last_seq());
            let mid = ingest.stats().snapshot();
            assert_eq!(
                mid.stored + mid.duplicates - before.stored - before.duplicates,
                batch.len() as u64
            );
            let again = ingest
                .handle_batch(data, 1_800_000_000_001)
                .expect("the same batch again");
            assert_eq!(again, ack);
            let after = ingest.stats().snapshot();
            assert_eq!(
                after.stored, mid.stored,
                "a resent batch stored something new"
            );
        }
        Err(r) => {
            assert_ne!(r.reason, RejectReason::StoreError, "{r}");
            let after = ingest.stats().snapshot();
            assert_eq!(
                after.stored, before.stored,
                "a refused batch stored something"
            );
        }
    }
});
