//! `qos-aggregator report`: a service's availability, response time by phase, incidents, SLO
//! compliance and trends over a period, read from the store of `serve` (read-only), as a
//! printable HTML page per service ([`html`]) or CSV ([`csv`], long format).
//!
//! The trend of each daily series (p95 of the total time, load in runs per day) is its
//! least-squares line over the period's days; the forecast is the day that line reaches its
//! target (the SLO's latency threshold for p95 when the objective is on `total`, or
//! `--p95-target-ms`; `--load-target` for load), counted from the last day: a date, "already
//! above", or "not within 90 days" (flat or falling trend, or further away).

pub mod csv;
pub mod html;

use std::path::{Path, PathBuf};

use qos_model::api::report_json;
use qos_model::Model;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::config::Config;
use crate::services::series::{self, SeriesQuery};
use crate::services::{db, retention};

/// Days ahead a forecast looks.
pub const FORECAST_DAYS: f64 = 90.0;
const DAY: u64 = 86_400;

/// Why a report could not be made (one line each).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// `--from`/`--to` not understood.
    #[error("bad date {0:?}: expected an RFC 3339 date (2026-11-01), date-time (2026-11-01T12:00:00Z) or Unix seconds")]
    BadDate(String),
    /// An empty or reversed period.
    #[error("bad period: --from must be before --to")]
    BadPeriod,
    /// No database in the data dir.
    #[error("no store at {0} (run serve first, or give its --config)")]
    NoStore(PathBuf),
    /// No model in the configuration nor stored.
    #[error("no service model: neither [model] file in the configuration nor one stored through the API")]
    NoModel,
    /// The model does not parse.
    #[error("invalid service model: {0}")]
    Model(String),
    /// A service not in the model.
    #[error("unknown service {name:?}; known services: {known}")]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The model's services, comma-separated.
        known: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// Writing `--out` failed.
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    /// Reading the model file failed.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
}

impl From<rusqlite::Error> for ReportError {
    fn from(e: rusqlite::Error) -> Self {
        ReportError::Store(crate::config::one_line(&e.to_string()))
    }
}

impl From<crate::store::StoreError> for ReportError {
    fn from(e: crate::store::StoreError) -> Self {
        ReportError::Store(crate::config::one_line(&e.to_string()))
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `YYYY-MM-DD` of Unix seconds (UTC).
pub fn date(t: u64) -> String {
    let (y, m, d) = civil_from_days((t / DAY) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix seconds.
pub fn datetime(t: u64) -> String {
    let s = t % DAY;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(t),
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Parses a `--from`/`--to` value: Unix seconds, an RFC 3339 date-time, or a date (midnight
/// UTC; with `end_of_day`, the next midnight, so that `--to 2026-11-30` includes that day).
pub fn parse_time(s: &str, end_of_day: bool) -> Result<u64, ReportError> {
    let bad = || ReportError::BadDate(s.to_string());
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let num = |r: &str| -> Result<u32, ReportError> {
        if r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        r.parse().map_err(|_| bad())
    };
    let (d, rest) = if s.len() > 10 {
        s.split_at(10)
    } else {
        (s, "")
    };
    let p: Vec<&str> = d.split('-').collect();
    let [y, m, dd] = p.as_slice() else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || dd.len() != 2 {
        return Err(bad());
    }
    let (y, m, dd) = (num(y)?, num(m)?, num(dd)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || dd == 0 || dd > month_days[m as usize - 1] {
        return Err(bad());
    }
    let day = days_from_civil(i64::from(y), m, dd);
    let mut t = day * DAY as i64;
    if rest.is_empty() {
        if end_of_day {
            t += DAY as i64;
        }
    } else {
        let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
        let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
            (c, 0i64)
        } else {
            let at = rest.rfind(['+', '-']).ok_or_else(bad)?;
            let (c, o) = rest.split_at(at);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':').ok_or_else(bad)?;
            let (oh, om) = (num(oh)?, num(om)?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            (c, sign * i64::from(oh * 3600 + om * 60))
        };
        let clock = clock.split('.').next().unwrap_or("");
        let c: Vec<&str> = clock.split(':').collect();
        let [h, mi, se] = c.as_slice() else {
            return Err(bad());
        };
        let (h, mi, se) = (num(h)?, num(mi)?, num(se)?);
        if h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        t += i64::from(h * 3600 + mi * 60 + se) - offset;
    }
    u64::try_from(t).map_err(|_| bad())
}

/// A least-squares line over daily values and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Trend {
    /// Change per day.
    pub slope_per_day: f64,
    /// The line's value on the last day.
    pub last_fit: f64,
    /// The target, if any.
    pub target: Option<f64>,
    /// The forecast: a date (`YYYY-MM-DD`), `already above target`, `not within 90 days`, or
    /// `no target`/`too few days`.
    pub forecast: String,
}

/// The least-squares line through `(day, value)` points and its forecast against `target`;
/// `last_day` is the Unix time of the last day's start. `None` with fewer than two points.
pub fn trend(points: &[(f64, f64)], target: Option<f64>, last_day: u64) -> Option<Trend> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let x_last = points.iter().map(|p| p.0).fold(f64::MIN, f64::max);
    let last_fit = my + slope * (x_last - mx);
    let forecast = match target {
        None => "no target".to_string(),
        Some(t) if last_fit >= t => "already above target".to_string(),
        Some(t) if slope > 0.0 && (t - last_fit) / slope <= FORECAST_DAYS => {
            let days = ((t - last_fit) / slope).ceil() as u64;
            date(last_day + days * DAY)
        }
        Some(_) => format!("not within {FORECAST_DAYS} days"),
    };
    Some(Trend {
        slope_per_day: slope,
        last_fit,
        target,
        forecast,
    })
}

/// One day of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    /// Start, Unix seconds.
    pub t: u64,
    /// Probe runs.
    pub runs: u64,
    /// Failed runs.
    pub failures: u64,
    /// Share of good windows.
    pub availability: Option<f64>,
    /// p95 of the total time, ms.
    pub p95_ms: Option<f64>,
}

/// The SLO figures over the period.
#[derive(Debug, Clone, PartialEq)]
pub struct SloFigures {
    /// The availability target.
    pub target: f64,
    /// Measured (good windows / windows with data).
    pub availability: Option<f64>,
    /// Whether the target is met.
    pub compliant: Option<bool>,
    /// Bad windows allowed in the period by the target.
    pub allowed_bad: f64,
    /// Bad windows.
    pub bad: u64,
    /// Share of the period's budget left (negative when overspent).
    pub budget_remaining: Option<f64>,
    /// The latency objective, as text.
    pub latency: Option<String>,
}

/// One service's report.
#[derive(Debug, Clone)]
pub struct ServiceReport {
    /// The service.
    pub service: String,
    /// Period start (Unix s).
    pub from: u64,
    /// Period end, exclusive.
    pub to: u64,
    /// The model's report over the period ([`qos_model::api::report_json`]): availability,
    /// phases with percentiles, regions.
    pub summary: Value,
    /// Daily figures.
    pub days: Vec<Day>,
    /// Incidents of the service that overlap the period (their stored JSON).
    pub incidents: Vec<Value>,
    /// SLO figures, when the service has an objective.
    pub slo: Option<SloFigures>,
    /// p95 trend (ms per day).
    pub p95_trend: Option<Trend>,
    /// Load trend (runs per day per day).
    pub load_trend: Option<Trend>,
    /// Whether the period held no data at all.
    pub empty: bool,
}

/// What a report is asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Services, in order.
    pub services: Vec<String>,
    /// Period start, Unix s.
    pub from: u64,
    /// Period end, exclusive.
    pub to: u64,
    /// Overrides the p95 target (ms).
    pub p95_target_ms: Option<f64>,
    /// A load target (runs per day).
    pub load_target: Option<f64>,
}

fn load_model(config: &Config, conn: &Connection) -> Result<Model, ReportError> {
    let (text, json) = match &config.model.file {
        Some(f) => (
            std::fs::read_to_string(f).map_err(|e| ReportError::Read(f.clone(), e))?,
            f.extension().is_some_and(|e| e == "json"),
        ),
        None => match db::stored_model(conn)? {
            Some((t, format)) => (t, format == "json"),
            None => return Err(ReportError::NoModel),
        },
    };
    let m = if json {
        Model::from_json(&text)
    } else {
        Model::from_toml(&text)
    };
    m.map_err(|e| ReportError::Model(crate::config::one_line(&e.to_string())))
}

/// Opens the store of `config` read-only.
pub fn open_store(config: &Config) -> Result<Connection, ReportError> {
    let path = config.store.database_path();
    if !Path::new(&path).exists() {
        return Err(ReportError::NoStore(path));
    }
    Ok(Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?)
}

/// Builds the reports; `now` places the raw/hourly boundary of the store's retention.
pub fn build(config: &Config, req: &Request, now: u64) -> Result<Vec<ServiceReport>, ReportError> {
    if req.from >= req.to {
        return Err(ReportError::BadPeriod);
    }
    let conn = open_store(config)?;
    let model = load_model(config, &conn)?;
    for name in &req.services {
        if model.service(name).is_none() {
            let known: Vec<&str> = model.services().iter().map(|s| s.name.as_str()).collect();
            return Err(ReportError::UnknownService {
                name: name.clone(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    let cutoff = retention::raw_cutoff(now, &config.retention);
    let all_incidents = db::incidents(&conn, false, usize::MAX >> 1)?;
    req.services
        .iter()
        .map(|name| one(&conn, &model, name, req, cutoff, &all_incidents))
        .collect()
}

fn one(
    conn: &Connection,
    model: &Model,
    name: &str,
    req: &Request,
    cutoff: u64,
    incidents: &[db::IncidentRow],
) -> Result<ServiceReport, ReportError> {
    let pairs: Vec<(u32, u16)> = series::probes_of(model, name)
        .into_iter()
        .map(|p| (p.0, p.1))
        .collect();
    let rows = series::rows(conn, &pairs, req.from, req.to, cutoff)?.0;
    let samples = series::samples(model, &rows);
    let summary = qos_model::report(model, name, &samples, req.from, req.to)
        .map(|r| report_json(&r))
        .unwrap_or(Value::Null);
    let q = SeriesQuery {
        from: req.from - req.from % DAY,
        to: req.to,
        step: DAY,
        phase: None,
        region: None,
    };
    let daily = series::series(conn, model, name, &q, cutoff)?;
    let days: Vec<Day> = daily["points"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter(|p| p["missing"] != true)
                .map(|p| Day {
                    t: p["t"].as_u64().unwrap_or(0),
                    runs: p["runs"].as_u64().unwrap_or(0),
                    failures: p["failures"].as_u64().unwrap_or(0),
                    availability: p["availability"].as_f64(),
                    p95_ms: p["p95_us"].as_f64().map(|u| u / 1000.0),
                })
                .collect()
        })
        .unwrap_or_default();
    let empty = days.is_empty();
    let mine: Vec<Value> = incidents
        .iter()
        .filter(|i| {
            let b = &i.body;
            let about = b["subject"]["name"] == name
                || b["affected"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == name));
            let opened = b["opened_at"].as_u64().unwrap_or(0);
            let resolved = b["resolved_at"].as_u64().unwrap_or(u64::MAX);
            about && opened < req.to && resolved >= req.from
        })
        .map(|i| i.body.clone())
        .collect();
    let sv = model.service(name);
    let slo = sv.and_then(|s| s.slo.as_ref()).map(|o| {
        let good = summary["availability"]["good"].as_u64().unwrap_or(0);
        let bad = summary["availability"]["bad"].as_u64().unwrap_or(0);
        let total = good + bad;
        let availability = (total > 0).then(|| good as f64 / total as f64);
        let allowed_bad = (1.0 - o.availability) * total as f64;
        SloFigures {
            target: o.availability,
            availability,
            compliant: availability.map(|a| a >= o.availability),
            allowed_bad,
            bad,
            budget_remaining: (total > 0).then(|| {
                if allowed_bad > 0.0 {
                    1.0 - bad as f64 / allowed_bad
                } else if bad == 0 {
                    1.0
                } else {
                    f64::NEG_INFINITY
                }
            }),
            latency: o.latency.as_ref().map(|l| {
                format!(
                    "p{} of {} <= {} ms",
                    (l.quantile * 100.0).round(),
                    l.phase,
                    l.threshold_ms
                )
            }),
        }
    });
    let p95_target = req.p95_target_ms.or_else(|| {
        sv.and_then(|s| s.slo.as_ref())
            .and_then(|o| o.latency.as_ref())
            .filter(|l| l.phase == "total")
            .map(|l| l.threshold_ms)
    });
    let last_day = days.last().map_or(req.to, |d| d.t);
    let x = |d: &Day| (d.t / DAY) as f64;
    let p95_points: Vec<(f64, f64)> = days
        .iter()
        .filter_map(|d| Some((x(d), d.p95_ms?)))
        .collect();
    let load_points: Vec<(f64, f64)> = days.iter().map(|d| (x(d), d.runs as f64)).collect();
    Ok(ServiceReport {
        service: name.to_string(),
        from: req.from,
        to: req.to,
        summary,
        days,
        incidents: mine,
        slo,
        p95_trend: trend(&p95_points, p95_target, last_day),
        load_trend: trend(&load_points, req.load_target, last_day),
        empty,
    })
}

/// The options of `qos-aggregator report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The service (repeat for several: one page each).
    #[arg(long, value_name = "NAME", required = true)]
    pub service: Vec<String>,
    /// Start: RFC 3339 date (midnight UTC) or date-time, or Unix seconds.
    #[arg(long, value_name = "DATE")]
    pub from: String,
    /// End, exclusive: RFC 3339 date (its whole day is included) or date-time, or Unix seconds.
    #[arg(long, value_name = "DATE")]
    pub to: String,
    /// html (printable, one page per service) or csv (long format).
    #[arg(long, value_name = "FORMAT", default_value = "html", value_parser = ["html", "csv"])]
    pub format: String,
    /// The configuration of `serve` (for `store.data_dir`, `[model] file`, retention).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The p95 target of the trend forecast, ms [default: the SLO's latency threshold on total].
    #[arg(long, value_name = "MS")]
    pub p95_target_ms: Option<f64>,
    /// A load target for the trend forecast, runs per day [default: none].
    #[arg(long, value_name = "RUNS")]
    pub load_target: Option<f64>,
}

/// What `run` failed at: usage (exit 2) or the store or output (exit 1).
pub fn exit_code(e: &ReportError) -> u8 {
    match e {
        ReportError::Store(_) | ReportError::Write(..) => 1,
        _ => 2,
    }
}

/// Runs `report`: the document (also written to `--out` when given) and the warnings to print
/// (an empty period is a warning, not an error: the report says "no data between …").
pub fn run(
    args: &ReportArgs,
    config: &Config,
    now: u64,
) -> Result<(String, Vec<String>), ReportError> {
    let req = Request {
        services: args.service.clone(),
        from: parse_time(&args.from, false)?,
        to: parse_time(&args.to, true)?,
        p95_target_ms: args.p95_target_ms,
        load_target: args.load_target,
    };
    let reports = build(config, &req, now)?;
    let warnings = reports
        .iter()
        .filter(|r| r.empty)
        .map(|r| {
            format!(
                "{}: no data between {} and {}",
                r.service,
                datetime(r.from),
                datetime(r.to)
            )
        })
        .collect();
    let doc = if args.format == "csv" {
        csv::render(&reports)
    } else {
        html::render(&reports)
    };
    if let Some(out) = &args.out {
        std::fs::write(out, &doc).map_err(|e| ReportError::Write(out.clone(), e))?;
    }
    Ok((doc, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse() {
        assert_eq!(parse_time("0", false).unwrap(), 0);
        assert_eq!(parse_time("1700000000", false).unwrap(), 1_700_000_000);
        assert_eq!(parse_time("1970-01-02", false).unwrap(), 86_400);
        assert_eq!(parse_time("1970-01-02", true).unwrap(), 2 * 86_400);
        assert_eq!(
            parse_time("2024-02-29T12:00:00Z", false).unwrap(),
            1_709_208_000
        );
        assert_eq!(
            parse_time("2024-02-29T14:00:00.5+02:00", false).unwrap(),
            1_709_208_000
        );
        assert_eq!(
            parse_time("2024-02-29T10:00:00-02:00", false).unwrap(),
            1_709_208_000
        );
        for bad in [
            "",
            "2023-02-29",
            "2024-13-01",
            "yesterday",
            "2024-1-1",
            "2024-01-01T25:00:00Z",
            "2024-01-01T10:00:00",
            "-5",
        ] {
            assert!(parse_time(bad, false).is_err(), "{bad}");
        }
        assert_eq!(date(1_709_208_000), "2024-02-29");
        assert_eq!(datetime(1_709_208_000), "2024-02-29T12:00:00Z");
        for d in [-800_000i64, -1, 0, 59, 19_000, 800_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn trends_forecast() {
        // p95 rises 10 ms a day from 100: reaches 200 six days after the last day (day 4: 140).
        let pts: Vec<(f64, f64)> = (0..5)
            .map(|d| (d as f64, 100.0 + 10.0 * d as f64))
            .collect();
        let t = trend(&pts, Some(200.0), 4 * DAY).unwrap();
        assert!((t.slope_per_day - 10.0).abs() < 1e-9);
        assert!((t.last_fit - 140.0).abs() < 1e-9);
        assert_eq!(t.forecast, date(4 * DAY + 6 * DAY));
        assert_eq!(
            trend(&pts, Some(130.0), 4 * DAY).unwrap().forecast,
            "already above target"
        );
        assert_eq!(
            trend(&pts, Some(10_000.0), 4 * DAY).unwrap().forecast,
            "not within 90 days"
        );
        let flat: Vec<(f64, f64)> = (0..5).map(|d| (d as f64, 5.0)).collect();
        assert_eq!(
            trend(&flat, Some(10.0), 0).unwrap().forecast,
            "not within 90 days"
        );
        assert_eq!(trend(&flat, None, 0).unwrap().forecast, "no target");
        assert!(trend(&pts[..1], None, 0).is_none());
    }
}
