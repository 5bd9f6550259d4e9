//! Accuracy of the HTTP probe against curl: both time the same requests to the same local
//! server, alternately, and the medians are printed side by side. Run with
//! `cargo bench -p qos-edge --bench curl_compare` (optionally `-- N` for the runs per tool,
//! default 30). Nothing is asserted: machines are noisy; the table says whether each phase
//! is within the budget of 1 ms or 5 % (DESIGN.md §7).
//!
//! Our probe runs as `qos-edge probe --kind http` (a process per run, like curl), so both
//! pay the same process start, which neither counts. curl reports cumulative times
//! (`-w '%{time_namelookup} %{time_connect} %{time_appconnect} %{time_starttransfer}
//! %{time_total}'`); they are mapped to our per-phase definitions:
//!
//! | phase      | ours                                   | curl                                       |
//! |------------|----------------------------------------|--------------------------------------------|
//! | dns        | name lookup (absent for IP literals)   | namelookup                                 |
//! | connect    | TCP connect                            | connect − namelookup                       |
//! | tls        | TLS handshake                          | appconnect − connect (HTTPS only)          |
//! | first_byte | end of request → first response byte   | starttransfer − max(appconnect, connect)   |
//! | download   | first byte → last byte                 | total − starttransfer                      |
//! | total      | start → last byte                      | total                                      |
//!
//! For HTTPS curl makes two transfers in one process and the second is used: its first
//! handshake includes loading the CA store, which ours does before the clock starts.
//! curl's first_byte includes writing the request (ours starts after it); for a small GET on
//! loopback that is a few µs. Note that IP-literal URLs make both skip DNS (curl still
//! reports a tiny namelookup).

#[allow(dead_code)]
#[path = "../src/probe/testutil.rs"]
mod testutil;

use std::path::Path;
use std::process::Command;

const PHASES: [&str; 6] = ["dns", "connect", "tls", "first_byte", "download", "total"];

fn ours(url: &str, ca: Option<&Path>) -> Option<[f64; 6]> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qos-edge"));
    cmd.args([
        "--log-level",
        "error",
        "probe",
        "--kind",
        "http",
        "--target",
        url,
    ]);
    if let Some(ca) = ca {
        cmd.arg("--ca-file").arg(ca);
    }
    let out = cmd.output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    if v["ok"] != true {
        eprintln!("our probe failed: {v}");
        return None;
    }
    let p = &v["phases_us"];
    let mut r = [0.0; 6];
    for (i, name) in PHASES.iter().enumerate() {
        r[i] = p[name].as_f64().unwrap_or(0.0);
    }
    Some(r)
}

fn curl(url: &str, ca: Option<&Path>) -> Option<[f64; 6]> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{time_namelookup} %{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}\n",
    ]);
    if let Some(ca) = ca {
        // Two transfers in one process, the second one measured: curl (with OpenSSL) loads
        // and parses the CA store while its first handshake is timed, which our probe does
        // before its clock starts (the store is cached across runs). The server closes each
        // connection and `--no-sessionid` forbids resumption, so the second transfer makes a
        // new connection with a full handshake.
        cmd.arg("--cacert").arg(ca).arg("--no-sessionid").arg(url);
        cmd.args(["-o", "/dev/null"]);
    }
    let out = cmd.arg(url).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let t: Vec<f64> = text
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|x| x.parse::<f64>().ok())
        .map(|s| s * 1e6)
        .collect();
    let [dns, connect, app, start, total] = t[..] else {
        eprintln!("curl: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    };
    let tls = if app > 0.0 { app - connect } else { 0.0 };
    Some([
        dns,
        connect - dns,
        tls,
        start - app.max(connect),
        total - start,
        total,
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn compare(title: &str, url: &str, ca: Option<&Path>, runs: usize) {
    // Warm-up (page cache, the trust store, the server's threads).
    let _ = ours(url, ca);
    let _ = curl(url, ca);
    let mut a: Vec<[f64; 6]> = Vec::new();
    let mut b: Vec<[f64; 6]> = Vec::new();
    for _ in 0..runs {
        a.extend(ours(url, ca));
        b.extend(curl(url, ca));
    }
    println!(
        "\n{title}: {url} ({} runs of ours, {} of curl; medians in µs)",
        a.len(),
        b.len()
    );
    println!(
        "{:<11} {:>10} {:>10} {:>10}  within 1 ms or 5 %",
        "phase", "qos-edge", "curl", "diff"
    );
    for (i, name) in PHASES.iter().enumerate() {
        let x = median(a.iter().map(|r| r[i]).collect());
        let y = median(b.iter().map(|r| r[i]).collect());
        let d = x - y;
        let ok = d.abs() <= 1000.0 || d.abs() <= 0.05 * y.abs();
        println!(
            "{name:<11} {x:>10.0} {y:>10.0} {d:>+10.0}  {}",
            if ok { "yes" } else { "NO" }
        );
    }
}

fn main() {
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(30);
    if Command::new("curl").arg("--version").output().is_err() {
        println!("curl not found: nothing to compare");
        return;
    }
    let plain = testutil::http_server(None);
    compare(
        "HTTP, small body",
        &format!("http://{plain}/ok"),
        None,
        runs,
    );
    compare(
        "HTTP, 256 KiB body",
        &format!("http://{plain}/big"),
        None,
        runs,
    );
    compare(
        "HTTP by name",
        &format!("http://localhost:{}/ok", plain.port()),
        None,
        runs,
    );
    let pki = testutil::pki("bench");
    let tls = testutil::http_server(Some(pki.server.clone()));
    compare(
        "HTTPS (TLS 1.3, rustls server)",
        &format!("https://127.0.0.1:{}/ok", tls.port()),
        Some(&pki.ca_file),
        runs,
    );
}
