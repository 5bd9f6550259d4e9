//! Ranks one case with engine settings given on the command line, for trying variants of the
//! method (`docs/rca.md`): `cargo run --release -p qos-rca --example rank_case -- --case DIR
//! --at UNIX_TS [name=value ...]`, where `name` is a field of `qos_rca::Config`. Prints
//! `{"ranking":[{"component":...},...]}` like `qos-aggregator rca`, without the evidence.

use std::path::PathBuf;
use std::process::ExitCode;

use qos_rca::{case, rank, Config};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rank_case: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut at) = (None, None);
    let mut config = Config::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--case" => dir = args.next().map(PathBuf::from),
            "--at" => at = args.next().and_then(|s| s.parse::<f64>().ok()),
            kv => set(&mut config, kv)?,
        }
    }
    let dir = dir.ok_or("--case DIR is required")?;
    let at = at.ok_or("--at UNIX_TS is required")?;
    let loaded = case::load(&dir, at, &config).map_err(|e| e.to_string())?;
    let names: Vec<String> = rank(&loaded.incident, &config)
        .into_iter()
        .map(|c| format!("{{\"component\":{:?},\"score\":{}}}", c.component, c.score))
        .collect();
    println!("{{\"ranking\":[{}]}}", names.join(","));
    Ok(())
}

fn set(c: &mut Config, kv: &str) -> Result<(), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or(format!("expected name=value, got {kv}"))?;
    let x: f64 = v.parse().map_err(|_| format!("{k}: not a number: {v}"))?;
    match k {
        "lookback" => c.lookback = x,
        "horizon" => c.horizon = x,
        "min_baseline" => c.min_baseline = x as usize,
        "relative_floor" => c.relative_floor = x,
        "redundancy" => c.redundancy = x,
        "z_threshold" => c.z_threshold = x,
        "top_metrics" => c.top_metrics = x as usize,
        "sustained_weight" => c.sustained_weight = x,
        "onset_weight" => c.onset_weight = x,
        "sli_weight" => c.sli_weight = x,
        "explained_discount" => c.explained_discount = x,
        "explained_ratio" => c.explained_ratio = x,
        "explains_weight" => c.explains_weight = x,
        _ => return Err(format!("unknown setting {k}")),
    }
    Ok(())
}
