//! The report as one self-contained, printable HTML page: one section per service, each on its
//! own printed page (`break-after: page`), tables and inline SVG charts, no external assets.

use std::fmt::Write;

use serde_json::Value;

use super::{date, datetime, ServiceReport, Trend};

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#111}
section.service{break-after:page;page-break-after:always}
section.service:last-child{break-after:auto;page-break-after:auto}
table{border-collapse:collapse;margin:.4rem 0 1rem}th,td{border:1px solid #bbb;padding:.2rem .5rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#2e7d32}.bad{color:#c62828}.muted{color:#666}
svg text{font-size:10px}figure{margin:.5rem 0}figcaption{font-weight:bold}
@page{size:A4;margin:15mm}
@media print{body{margin:0}}";

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.3} %", v * 100.0))
}

fn ms(v: &Value) -> String {
    v.as_f64()
        .map_or("–".into(), |u| format!("{:.1}", u / 1000.0))
}

/// A small line chart of daily values (`None` gaps), with a dashed target line.
fn line_chart(title: &str, days: &[(u64, Option<f64>)], target: Option<f64>, unit: &str) -> String {
    let (w, h, l, b) = (520.0, 140.0, 50.0, 18.0);
    let vals: Vec<f64> = days.iter().filter_map(|d| d.1).chain(target).collect();
    let top = vals.iter().cloned().fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let n = days.len().max(2) as f64 - 1.0;
    let x = |i: usize| l + (w - l - 8.0) * i as f64 / n;
    let y = |v: f64| 6.0 + (h - b - 6.0) * (1.0 - v / top);
    let mut s = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        esc(title),
        esc(title),
        esc(title)
    );
    for k in 0..=2 {
        let v = top * f64::from(k) / 2.0;
        let _ = write!(s, "<line x1=\"{l}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.1}{}</text>", w - 8.0, y(v), y(v), l - 3.0, y(v) + 3.0, v, esc(unit));
    }
    if let (Some(f), Some(last)) = (days.first(), days.last()) {
        let _ = write!(s, "<text x=\"{l}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", h - 4.0, date(f.0), w - 8.0, h - 4.0, date(last.0));
    }
    let pts: Vec<String> = days
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some(format!("{:.1},{:.1}", x(i), y(d.1?))))
        .collect();
    if !pts.is_empty() {
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                s,
                "<circle cx=\"{px}\" cy=\"{py}\" r=\"2\" fill=\"#1565c0\"/>"
            );
        }
    }
    if let Some(t) = target {
        let _ = write!(s, "<line x1=\"{l}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c62828\" stroke-dasharray=\"4 3\"/>", w - 8.0, y(t), y(t));
    }
    s.push_str("</svg></figure>");
    s
}

fn trend_row(name: &str, t: &Option<Trend>, unit: &str) -> String {
    match t {
        Some(t) => format!(
            "<tr><td>{}</td><td class=n>{:+.3} {unit}/day</td><td class=n>{:.2}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(name),
            t.slope_per_day,
            t.last_fit,
            t.target.map_or("–".into(), |v| format!("{v}")),
            esc(&t.forecast)
        ),
        None => format!("<tr><td>{}</td><td colspan=4 class=muted>fewer than two days of data</td></tr>", esc(name)),
    }
}

fn service(s: &mut String, r: &ServiceReport) {
    let _ = write!(
        s,
        "<section class=\"service\" id=\"service-{}\"><h1>Service {}</h1><p>{} – {} (UTC)</p>",
        esc(&r.service),
        esc(&r.service),
        datetime(r.from),
        datetime(r.to)
    );
    if r.empty {
        let _ = write!(
            s,
            "<p class=\"bad\"><strong>No data between {} and {}.</strong></p>",
            datetime(r.from),
            datetime(r.to)
        );
    }
    let a = &r.summary["availability"];
    let _ = write!(
        s,
        "<h2>Availability</h2><table><tr><th>availability</th><th>good windows</th><th>bad windows</th><th>missing windows</th></tr><tr><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr></table>",
        pct(a["ratio"].as_f64()),
        a["good"].as_u64().unwrap_or(0),
        a["bad"].as_u64().unwrap_or(0),
        a["missing"].as_u64().unwrap_or(0)
    );
    s.push_str("<h2>Response time by phase (ms)</h2><table><tr><th>phase</th><th>count</th><th>mean</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>");
    for p in r.summary["phases"].as_array().into_iter().flatten() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(p["phase"].as_str().unwrap_or("")),
            p["count"].as_u64().unwrap_or(0),
            ms(&p["mean_us"]),
            ms(&p["p50_us"]),
            ms(&p["p95_us"]),
            ms(&p["p99_us"]),
            ms(&p["max_us"])
        );
    }
    s.push_str("</table><h2>Per region</h2><table><tr><th>region</th><th>availability</th><th>runs</th><th>failures</th><th>p95 total (ms)</th><th>errors</th></tr>");
    for g in r.summary["regions"].as_array().into_iter().flatten() {
        let p95 = g["phases"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["phase"] == "total"))
            .map_or("–".into(), |t| ms(&t["p95_us"]));
        let errors: Vec<String> = g["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{} {}", e["class"].as_str().unwrap_or(""), e["count"]))
            .collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td></tr>",
            esc(g["region"].as_str().unwrap_or("")),
            pct(g["availability"]["ratio"].as_f64()),
            g["runs"].as_u64().unwrap_or(0),
            g["failures"].as_u64().unwrap_or(0),
            p95,
            esc(&errors.join(", "))
        );
    }
    s.push_str("</table>");
    if let Some(o) = &r.slo {
        let _ = write!(
            s,
            "<h2>SLO</h2><table><tr><th>target</th><th>measured</th><th>compliant</th><th>bad windows / allowed</th><th>budget remaining</th><th>latency objective</th></tr><tr><td class=n>{}</td><td class=n>{}</td><td class=\"{}\">{}</td><td class=n>{} / {:.1}</td><td class=n>{}</td><td>{}</td></tr></table>",
            pct(Some(o.target)),
            pct(o.availability),
            if o.compliant == Some(false) { "bad" } else { "ok" },
            o.compliant.map_or("–", |c| if c { "yes" } else { "no" }),
            o.bad,
            o.allowed_bad,
            o.budget_remaining.map_or("–".into(), |b| format!("{:.1} %", b * 100.0)),
            esc(o.latency.as_deref().unwrap_or("none"))
        );
    }
    s.push_str("<h2>Daily trend</h2>");
    let p95: Vec<(u64, Option<f64>)> = r.days.iter().map(|d| (d.t, d.p95_ms)).collect();
    let load: Vec<(u64, Option<f64>)> = r.days.iter().map(|d| (d.t, Some(d.runs as f64))).collect();
    s.push_str(&line_chart(
        "Daily p95 of the total time (ms)",
        &p95,
        r.p95_trend.as_ref().and_then(|t| t.target),
        " ms",
    ));
    s.push_str(&line_chart(
        "Daily load (runs)",
        &load,
        r.load_trend.as_ref().and_then(|t| t.target),
        "",
    ));
    s.push_str("<table><tr><th>series</th><th>slope</th><th>fit on the last day</th><th>target</th><th>forecast: crosses the target</th></tr>");
    s.push_str(&trend_row("p95 (ms)", &r.p95_trend, "ms"));
    s.push_str(&trend_row("load (runs per day)", &r.load_trend, "runs"));
    s.push_str("</table><table><tr><th>day</th><th>runs</th><th>failures</th><th>availability</th><th>p95 (ms)</th></tr>");
    for d in &r.days {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            date(d.t),
            d.runs,
            d.failures,
            pct(d.availability),
            d.p95_ms.map_or("–".into(), |v| format!("{v:.1}"))
        );
    }
    s.push_str("</table><h2>Incidents</h2>");
    if r.incidents.is_empty() {
        s.push_str("<p>None in the period.</p>");
    } else {
        s.push_str("<table><tr><th>id</th><th>opened</th><th>resolved</th><th>worst</th><th>causes (score)</th></tr>");
        for i in &r.incidents {
            let t = |v: &Value| v.as_u64().map_or("open".into(), datetime);
            let causes: Vec<String> = i["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .take(3)
                .map(|c| {
                    format!(
                        "{} ({:.2})",
                        c["component"].as_str().unwrap_or("?"),
                        c["score"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            let _ = write!(
                s,
                "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                i["id"],
                t(&i["opened_at"]),
                t(&i["resolved_at"]),
                esc(i["worst"].as_str().unwrap_or("")),
                esc(&causes.join(", "))
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</section>\n");
}

/// The reports as one HTML document.
pub fn render(reports: &[ServiceReport]) -> String {
    let names: Vec<&str> = reports.iter().map(|r| r.service.as_str()).collect();
    let mut s = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>QoS report: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&names.join(", "))
    );
    for r in reports {
        service(&mut s, r);
    }
    s.push_str("</body></html>\n");
    s
}
