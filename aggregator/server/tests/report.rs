//! `qos-aggregator report` over a store filled with synthetic summaries of known figures: the
//! CSV read back, the HTML's parts, and the one-line errors.

use std::process::Command;

use qos_aggregator::config::Synchronous;
use qos_aggregator::services::db::{summary_record, upsert_incident};
use qos_aggregator::store::{EdgeKey, SqliteStore, Store};

mod common;
use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_qos-aggregator");
const DAY: u64 = 86_400;

const MODEL: &str = r#"
[[component]]
name = "web"
kind = "web"
depends_on = ["db"]

[[component]]
name = "db"
kind = "database"

[[service]]
name = "shop"
depends_on = ["web"]

[service.slo]
availability = 0.99
latency = { threshold_ms = 200.0 }

[[service.transaction]]
name = "home"
probes = [{ edge = 1, probe = 0, region = "eu" }, { edge = 2, probe = 0, region = "us" }]
"#;

/// Five whole days before today, one window an hour per edge, 10 runs each; the total time
/// grows 10 ms a day from 100 ms; on the last day 3 windows per edge fail 8 runs of 10.
/// Returns the config file and the first day (Unix s).
fn fixture(dir: &TempDir) -> (std::path::PathBuf, u64) {
    let now = qos_aggregator::services::now_s();
    let first = now - now % DAY - 5 * DAY;
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let model = dir.0.join("model.toml");
    std::fs::write(&model, MODEL).unwrap();
    let config = dir.0.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\ndata_dir = {:?}\n\n[model]\nfile = {:?}\n",
            data.display().to_string(),
            model.display().to_string()
        ),
    )
    .unwrap();
    let path = data.join("qos.sqlite3");
    let c = qos_aggregator::config::Config::load(&config).unwrap();
    assert_eq!(c.store.database_path().parent(), path.parent());
    let mut store = SqliteStore::open(&c.store.database_path(), Synchronous::Normal).unwrap();
    for edge in [1u32, 2] {
        let mut recs = Vec::new();
        for d in 0..5u64 {
            for h in 0..24u64 {
                let start = first + d * DAY + h * 3600;
                let failed = if d == 4 && h < 3 { 8 } else { 0 };
                let total = 100_000 + 10_000 * d as u32;
                recs.push(summary_record(
                    d * 24 + h,
                    0,
                    start as u32,
                    60,
                    10 - failed,
                    failed,
                    total,
                ));
            }
        }
        store
            .insert_batch(&EdgeKey::new(edge, now * 1000), &recs)
            .unwrap();
    }
    drop(store);
    // An incident on the last day (resolved after 3 h) whose top cause is the database, and one
    // of another service.
    let conn = rusqlite::Connection::open(c.store.database_path()).unwrap();
    let at = first + 4 * DAY;
    for subject in ["shop", "other"] {
        let mut body = serde_json::json!({
            "subject": {"kind": "service", "name": subject}, "affected": [subject],
            "opened_at": at, "resolved_at": at + 3 * 3600, "worst": "down",
            "causes": [{"component": "db", "score": 1.5}, {"component": "app", "score": 0.5}],
        });
        let end = Some(at + 3 * 3600);
        let id =
            upsert_incident(&conn, None, subject, at, at, end, "ok", Some("db"), &body).unwrap();
        body["id"] = id.into();
        upsert_incident(
            &conn,
            Some(id),
            subject,
            at,
            at,
            end,
            "ok",
            Some("db"),
            &body,
        )
        .unwrap();
    }
    (config, first)
}

fn date(t: u64) -> String {
    qos_aggregator::report::date(t)
}

/// A minimal RFC 4180 reader (quoted fields, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    rows
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).arg("report").args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn csv_figures_match_the_inputs() {
    let dir = TempDir::new("report", "csv");
    let (config, first) = fixture(&dir);
    let out = dir.0.join("shop.csv");
    let cfg = config.to_str().unwrap();
    let (code, _, err) = run(&[
        "--service",
        "shop",
        "--from",
        &date(first),
        "--to",
        &date(first + 4 * DAY),
        "--format",
        "csv",
        "--config",
        cfg,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("\r\n"));
    let rows = parse_csv(&text);
    assert_eq!(
        rows[0],
        ["service", "section", "date", "region", "phase", "item", "metric", "value"]
    );
    assert!(rows.iter().all(|r| r.len() == 8), "{rows:?}");
    let get = |section: &str, date: &str, region: &str, item: &str, metric: &str| -> String {
        rows.iter()
            .find(|r| {
                r[1] == section && r[2] == date && r[3] == region && r[5] == item && r[6] == metric
            })
            .unwrap_or_else(|| panic!("no {section} {date} {region} {item} {metric}"))[7]
            .clone()
    };
    let f = |s: String| -> f64 { s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}")) };
    // 120 service windows (the two regions' windows judged together), 3 bad on the last day.
    assert_eq!(get("availability", "", "", "", "good_windows"), "117");
    assert_eq!(get("availability", "", "", "", "bad_windows"), "3");
    assert!((f(get("availability", "", "", "", "ratio")) - 0.975).abs() < 1e-9);
    for region in ["eu", "us"] {
        assert!((f(get("region", "", region, "", "availability")) - 0.975).abs() < 1e-9);
        assert_eq!(get("region", "", region, "", "runs"), "1200");
        assert_eq!(get("region", "", region, "", "failures"), "24");
    }
    for d in 0..5 {
        let day = date(first + d * DAY);
        assert_eq!(get("daily", &day, "", "", "runs"), "480", "{day}");
        let p95 = f(get("daily", &day, "", "", "p95_ms"));
        let base = 100.0 + 10.0 * d as f64;
        assert!(p95 >= base && p95 <= base * 1.08, "{day}: {p95}");
    }
    assert_eq!(
        get("daily", &date(first + 4 * DAY), "", "", "failures"),
        "48"
    );
    // SLO 99 %: 1.2 bad windows allowed, 3 spent.
    assert_eq!(get("slo", "", "", "", "compliant"), "no");
    assert!((f(get("slo", "", "", "", "allowed_bad_windows")) - 1.2).abs() < 1e-9);
    assert!((f(get("slo", "", "", "", "budget_remaining")) + 1.5).abs() < 1e-9);
    assert_eq!(
        get("slo", "", "", "", "latency_objective"),
        "p95 of total <= 200 ms"
    );
    // p95 grows about 10 ms a day from about 140 on the last day: 200 ms in about 6 days.
    let slope = f(get("trend", "", "", "p95_ms", "slope_per_day"));
    assert!((10.0..11.5).contains(&slope), "{slope}");
    assert_eq!(get("trend", "", "", "p95_ms", "target"), "200");
    let forecast = get("trend", "", "", "p95_ms", "forecast");
    let candidates: Vec<String> = (8..=10).map(|d| date(first + d * DAY)).collect();
    assert!(
        candidates.contains(&forecast),
        "{forecast} not in {candidates:?}"
    );
    // The incident, its times and causes; not the other service's.
    assert_eq!(
        get("incident", "", "", "1", "opened"),
        qos_aggregator::report::datetime(first + 4 * DAY)
    );
    assert_eq!(get("incident", "", "", "1", "cause_1"), "db");
    assert_eq!(get("incident", "", "", "1", "cause_1_score"), "1.5");
    assert_eq!(get("incident", "", "", "1", "cause_2"), "app");
    assert_eq!(
        rows.iter()
            .filter(|r| r[1] == "incident" && r[6] == "opened")
            .count(),
        1
    );
    // The load is flat: no target, then a target it never reaches.
    assert_eq!(
        get("trend", "", "", "load_runs_per_day", "forecast"),
        "no target"
    );
    let (_, csv, _) = run(&[
        "--service",
        "shop",
        "--from",
        &date(first),
        "--to",
        &date(first + 4 * DAY),
        "--format",
        "csv",
        "--config",
        cfg,
        "--load-target",
        "1000",
    ]);
    assert!(
        csv.contains("load_runs_per_day,forecast,not within 90 days"),
        "{csv}"
    );
}

#[test]
fn html_is_self_contained_and_printable() {
    let dir = TempDir::new("report", "html");
    let (config, first) = fixture(&dir);
    let (code, html, err) = run(&[
        "--service",
        "shop",
        "--service",
        "shop",
        "--from",
        &first.to_string(),
        "--to",
        &format!("{}T00:00:00Z", date(first + 5 * DAY)),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.ends_with("</html>\n"));
    assert_eq!(html.matches("<section class=\"service\"").count(), 2);
    assert!(html.contains("<h1>Service shop</h1>"));
    assert!(html.contains("break-after:page") && html.contains("@page"));
    assert!(html.matches("<svg").count() >= 2);
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    assert_eq!(
        html.matches("<table").count(),
        html.matches("</table>").count()
    );
    assert_eq!(html.matches("<tr>").count(), html.matches("</tr>").count());
    assert!(html.contains("97.500 %"), "availability shown");
    assert!(
        html.contains("<td>#1</td>") && html.contains("db (1.50), app (0.50)"),
        "incident shown"
    );
    let rest = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!rest.contains("http://") && !rest.contains("https://") && !rest.contains("src="));
}

#[test]
fn errors_are_one_line() {
    let dir = TempDir::new("report", "errors");
    let (config, _) = fixture(&dir);
    let cfg = config.to_str().unwrap();
    let (code, _, err) = run(&[
        "--service",
        "nope",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
        "--config",
        cfg,
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown service \"nope\"; known services: shop"),
        "{err}"
    );
    for bad in ["2026-02-30", "yesterday", "2026-01-01T10:00"] {
        let (code, _, err) = run(&[
            "--service",
            "shop",
            "--from",
            bad,
            "--to",
            "2026-03-01",
            "--config",
            cfg,
        ]);
        assert_eq!(code, 2, "{bad}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("bad date"), "{err}");
    }
    let (code, _, err) = run(&[
        "--service",
        "shop",
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-01",
        "--config",
        cfg,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--from must be before --to"), "{err}");
    // An empty period: a report that says so, a warning, exit 0.
    let (code, csv, err) = run(&[
        "--service",
        "shop",
        "--from",
        "2001-01-01",
        "--to",
        "2001-01-02",
        "--format",
        "csv",
        "--config",
        cfg,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no data between 2001-01-01T00:00:00Z and 2001-01-03T00:00:00Z"),
        "{err}"
    );
    assert!(csv.contains("shop,period,,,,,data,no"), "{csv}");
    // No store.
    let empty = TempDir::new("report", "nostore");
    let other = empty.0.join("serve.toml");
    std::fs::write(
        &other,
        format!(
            "[store]\ndata_dir = {:?}\n",
            empty.0.join("none").display().to_string()
        ),
    )
    .unwrap();
    let (code, _, err) = run(&[
        "--service",
        "shop",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
        "--config",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no store at"), "{err}");
}
