//! `qos-aggregator rca`: the real binary on generated case directories.

use std::process::Command;

use qos_rca::synthetic::{generate, write_case, Shape, Spec};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_qos-aggregator");

mod common;
use common::TempDir;

fn rca(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).arg("rca").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ranks_a_generated_case_with_the_root_first_as_json() {
    for (seed, shape) in [(5, Shape::LevelShift), (6, Shape::Spike), (8, Shape::Drift)] {
        let dir = TempDir::new("rca", "case");
        let g = generate(&Spec {
            seed,
            shape,
            ..Spec::default()
        });
        write_case(&dir.0, &g).unwrap();
        let at = format!("{}", g.incident.at as i64);
        let (code, stdout, stderr) = rca(&["--case", dir.0.to_str().unwrap(), "--at", &at]);
        assert_eq!(code, Some(0), "{stderr}");
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        let ranking = doc["ranking"].as_array().unwrap();
        assert_eq!(ranking.len(), 10);
        let first = &ranking[0];
        assert_eq!(first["component"], g.root.as_str(), "{shape:?}: {stdout}");
        assert!(first["score"].as_f64().unwrap() > ranking[1]["score"].as_f64().unwrap());
        assert!(
            first["metric"].is_string() && first["onset"].is_number(),
            "{first}"
        );
        assert!(!first["evidence"].as_array().unwrap().is_empty(), "{first}");
        assert!(
            doc["skipped"]["out_of_window"].as_u64().unwrap() > 0,
            "{stdout}"
        );
    }
}

#[test]
fn top_limits_the_ranking() {
    let dir = TempDir::new("rca", "top");
    let g = generate(&Spec::default());
    write_case(&dir.0, &g).unwrap();
    let at = format!("{}", g.incident.at);
    let (code, stdout, stderr) =
        rca(&["--case", dir.0.to_str().unwrap(), "--at", &at, "--top", "3"]);
    assert_eq!(code, Some(0), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["ranking"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_input_is_one_line_on_stderr_and_a_non_zero_exit() {
    let (code, stdout, stderr) = rca(&["--case", "no-such-case-dir", "--at", "1000"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no-such-case-dir/metrics.csv"), "{stderr}");

    let dir = TempDir::new("rca", "bad-header");
    std::fs::write(dir.0.join("metrics.csv"), "t,c,m\n1,a,b\n").unwrap();
    let (code, _, stderr) = rca(&["--case", dir.0.to_str().unwrap(), "--at", "1000"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("metrics.csv:1:"), "{stderr}");

    let (code, _, stderr) = rca(&["--case", dir.0.to_str().unwrap(), "--at", "soon"]);
    assert_eq!(code, Some(2), "{stderr}");

    let (code, _, stderr) = rca(&["--case", ".", "--at", "1000", "--horizon", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--horizon"), "{stderr}");
}
