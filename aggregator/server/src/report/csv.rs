//! The report as CSV (RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or
//! line break), in long format: one header row, then one row per figure:
//!
//! `service,section,date,region,phase,item,metric,value`
//!
//! | section | rows (metric) |
//! |---|---|
//! | `period` | `from`, `to` (RFC 3339), `data` (`yes`/`no`) |
//! | `availability` | `ratio`, `good_windows`, `bad_windows`, `missing_windows`, `coverage` |
//! | `phase` | per `phase`: `count`, `mean_ms`, `p50_ms`, `p95_ms`, `p99_ms`, `max_ms` |
//! | `region` | per `region`: `availability`, `runs`, `failures`, `errors_<class>`, and `p95_ms` of the total |
//! | `daily` | per `date`: `runs`, `failures`, `availability`, `p95_ms` |
//! | `slo` | `target`, `availability`, `compliant`, `allowed_bad_windows`, `bad_windows`, `budget_remaining`, `latency_objective` |
//! | `trend` | `item` = `p95_ms` or `load_runs_per_day`: `slope_per_day`, `last_fit`, `target`, `forecast` |
//! | `incident` | `item` = its id: `opened`, `resolved`, `status`, `cause_<rank>` (component), `cause_<rank>_score` |
//!
//! Empty fields are figures that do not apply; numbers use a dot and no thousands separator.

use serde_json::Value;

use super::{date, datetime, ServiceReport, Trend};

/// The header row's fields.
pub const HEADER: [&str; 8] = [
    "service", "section", "date", "region", "phase", "item", "metric", "value",
];

fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".into()
        } else {
            s.to_string()
        }
    } else {
        String::new()
    }
}

fn jnum(v: &Value) -> String {
    v.as_f64().map(num).unwrap_or_default()
}

fn ms(v: &Value) -> String {
    v.as_f64().map(|u| num(u / 1000.0)).unwrap_or_default()
}

struct Rows<'a> {
    service: &'a str,
    out: String,
}

impl Rows<'_> {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        section: &str,
        date: &str,
        region: &str,
        phase: &str,
        item: &str,
        metric: &str,
        value: &str,
    ) {
        let fields = [
            self.service,
            section,
            date,
            region,
            phase,
            item,
            metric,
            value,
        ];
        let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
        self.out.push_str(&line.join(","));
        self.out.push_str("\r\n");
    }
}

fn trend_rows(r: &mut Rows<'_>, item: &str, t: &Option<Trend>) {
    if let Some(t) = t {
        r.row(
            "trend",
            "",
            "",
            "",
            item,
            "slope_per_day",
            &num(t.slope_per_day),
        );
        r.row("trend", "", "", "", item, "last_fit", &num(t.last_fit));
        r.row(
            "trend",
            "",
            "",
            "",
            item,
            "target",
            &t.target.map(num).unwrap_or_default(),
        );
        r.row("trend", "", "", "", item, "forecast", &t.forecast);
    }
}

/// The reports as one CSV document.
pub fn render(reports: &[ServiceReport]) -> String {
    let mut out = HEADER.join(",");
    out.push_str("\r\n");
    for rep in reports {
        let mut r = Rows {
            service: &rep.service,
            out: String::new(),
        };
        r.row("period", "", "", "", "", "from", &datetime(rep.from));
        r.row("period", "", "", "", "", "to", &datetime(rep.to));
        r.row(
            "period",
            "",
            "",
            "",
            "",
            "data",
            if rep.empty { "no" } else { "yes" },
        );
        let a = &rep.summary["availability"];
        for (k, m) in [
            ("ratio", "ratio"),
            ("good", "good_windows"),
            ("bad", "bad_windows"),
            ("missing", "missing_windows"),
            ("coverage", "coverage"),
        ] {
            r.row("availability", "", "", "", "", m, &jnum(&a[k]));
        }
        for p in rep.summary["phases"].as_array().into_iter().flatten() {
            let phase = p["phase"].as_str().unwrap_or("");
            r.row("phase", "", "", phase, "", "count", &jnum(&p["count"]));
            for (k, m) in [
                ("mean_us", "mean_ms"),
                ("p50_us", "p50_ms"),
                ("p95_us", "p95_ms"),
                ("p99_us", "p99_ms"),
                ("max_us", "max_ms"),
            ] {
                r.row("phase", "", "", phase, "", m, &ms(&p[k]));
            }
        }
        for g in rep.summary["regions"].as_array().into_iter().flatten() {
            let region = g["region"].as_str().unwrap_or("");
            r.row(
                "region",
                "",
                region,
                "",
                "",
                "availability",
                &jnum(&g["availability"]["ratio"]),
            );
            r.row("region", "", region, "", "", "runs", &jnum(&g["runs"]));
            r.row(
                "region",
                "",
                region,
                "",
                "",
                "failures",
                &jnum(&g["failures"]),
            );
            for e in g["errors"].as_array().into_iter().flatten() {
                let m = format!("errors_{}", e["class"].as_str().unwrap_or("other"));
                r.row("region", "", region, "", "", &m, &jnum(&e["count"]));
            }
            if let Some(t) = g["phases"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["phase"] == "total"))
            {
                r.row(
                    "region",
                    "",
                    region,
                    "total",
                    "",
                    "p95_ms",
                    &ms(&t["p95_us"]),
                );
            }
        }
        for d in &rep.days {
            let day = date(d.t);
            r.row("daily", &day, "", "", "", "runs", &d.runs.to_string());
            r.row(
                "daily",
                &day,
                "",
                "",
                "",
                "failures",
                &d.failures.to_string(),
            );
            r.row(
                "daily",
                &day,
                "",
                "",
                "",
                "availability",
                &d.availability.map(num).unwrap_or_default(),
            );
            r.row(
                "daily",
                &day,
                "",
                "",
                "",
                "p95_ms",
                &d.p95_ms.map(num).unwrap_or_default(),
            );
        }
        if let Some(s) = &rep.slo {
            r.row("slo", "", "", "", "", "target", &num(s.target));
            r.row(
                "slo",
                "",
                "",
                "",
                "",
                "availability",
                &s.availability.map(num).unwrap_or_default(),
            );
            r.row(
                "slo",
                "",
                "",
                "",
                "",
                "compliant",
                s.compliant.map_or("", |c| if c { "yes" } else { "no" }),
            );
            r.row(
                "slo",
                "",
                "",
                "",
                "",
                "allowed_bad_windows",
                &num(s.allowed_bad),
            );
            r.row("slo", "", "", "", "", "bad_windows", &s.bad.to_string());
            r.row(
                "slo",
                "",
                "",
                "",
                "",
                "budget_remaining",
                &s.budget_remaining.map(num).unwrap_or_default(),
            );
            r.row(
                "slo",
                "",
                "",
                "",
                "",
                "latency_objective",
                s.latency.as_deref().unwrap_or(""),
            );
        }
        trend_rows(&mut r, "p95_ms", &rep.p95_trend);
        trend_rows(&mut r, "load_runs_per_day", &rep.load_trend);
        for i in &rep.incidents {
            let id = i["id"].to_string();
            let t = |v: &Value| v.as_u64().map(datetime).unwrap_or_default();
            r.row("incident", "", "", "", &id, "opened", &t(&i["opened_at"]));
            r.row(
                "incident",
                "",
                "",
                "",
                &id,
                "resolved",
                &t(&i["resolved_at"]),
            );
            r.row(
                "incident",
                "",
                "",
                "",
                &id,
                "status",
                i["worst"].as_str().unwrap_or(""),
            );
            for (n, c) in i["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .take(3)
                .enumerate()
            {
                r.row(
                    "incident",
                    "",
                    "",
                    "",
                    &id,
                    &format!("cause_{}", n + 1),
                    c["component"].as_str().unwrap_or(""),
                );
                r.row(
                    "incident",
                    "",
                    "",
                    "",
                    &id,
                    &format!("cause_{}_score", n + 1),
                    &jnum(&c["score"]),
                );
            }
        }
        out.push_str(&r.out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_per_rfc_4180() {
        assert_eq!(field("a"), "a");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(f64::NAN), "");
    }
}
