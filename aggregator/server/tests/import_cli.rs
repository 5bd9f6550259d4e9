//! `qos-aggregator import --csv FILE [--config FILE]`: points into the store, bad rows
//! counted, one-line errors.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_qos-aggregator");

mod common;
use common::TempDir;

#[test]
fn imports_the_data_sets_layout_and_counts_bad_rows() {
    let dir = TempDir::new("import", "ok");
    let csv = dir.0.join("metrics.csv");
    std::fs::write(
        &csv,
        "time,component,metric,value\n1,db,cpu,0.5\n2,db,cpu,NaN\n3,db,cpu,\n4,web,rps,12\n",
    )
    .unwrap();
    let config = dir.0.join("serve.toml");
    let data = dir.0.join("data");
    std::fs::write(
        &config,
        format!("[store]\ndata_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "import",
            "--csv",
            csv.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["imported"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("import: done"));
    let db = rusqlite::Connection::open(data.join("qos.sqlite")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM component_metrics", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn a_wrong_header_or_missing_file_is_one_line_and_exit_1() {
    let dir = TempDir::new("import", "bad");
    let csv = dir.0.join("m.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let config = dir.0.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\ndata_dir = {:?}\n",
            dir.0.join("d").display().to_string()
        ),
    )
    .unwrap();
    for file in [csv.clone(), dir.0.join("missing.csv")] {
        let out = Command::new(BIN)
            .args([
                "import",
                "--csv",
                file.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains(file.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
    }
}
