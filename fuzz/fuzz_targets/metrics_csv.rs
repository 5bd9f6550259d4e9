//! Component metrics as users import them: `services::metrics::parse` (the body of
//! `POST /api/v1/metrics`, CSV or JSON lines) and `services::metrics::import_csv`
//! (`qos-aggregator import --csv`) of the same text written to a file, into a SQLite store in a
//! temporary directory (one per process). Every accepted point has finite numbers and
//! non-empty names; the import accepts and rejects exactly the rows `csv_row` does, and refuses
//! a file whose header is not `time,component,metric,value`.
#![no_main]

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use qos_aggregator::services::metrics::{csv_row, import_csv, parse, ImportError};

fn dir() -> &'static Mutex<PathBuf> {
    static DIR: OnceLock<Mutex<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("qos-fuzz-csv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the temporary directory");
        Mutex::new(d)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(text);
    for p in &parsed.points {
        assert!(p.at.is_finite() && p.value.is_finite());
        assert!(!p.component.is_empty() && !p.metric.is_empty());
    }
    assert!(parsed.points.len() as u64 + parsed.bad <= text.lines().count() as u64);

    let dir = dir().lock().unwrap_or_else(|e| e.into_inner());
    let file = dir.join("in.csv");
    std::fs::write(&file, data).expect("write the CSV file");
    let result = import_csv(&dir.join("qos.sqlite"), &file);
    let mut lines = text.split_inclusive('\n');
    let header_ok = lines
        .next()
        .is_some_and(|h| h.trim().replace(' ', "") == "time,component,metric,value");
    match result {
        Ok((n, bad)) => {
            assert!(header_ok);
            let (mut want_n, mut want_bad) = (0, 0);
            for line in lines {
                if line.trim().is_empty() {
                    continue;
                }
                match csv_row(line.trim_end_matches('\n')) {
                    Ok(Some(_)) => want_n += 1,
                    Ok(None) => {}
                    Err(_) => want_bad += 1,
                }
            }
            assert_eq!((n, bad), (want_n, want_bad));
        }
        Err(ImportError::Header { .. }) => assert!(!header_ok),
        Err(e) => panic!("import failed on valid UTF-8: {e}"),
    }
});
