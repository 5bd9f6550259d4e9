//! Component metrics of the demo's services: raw counters and gauges per component, their
//! Prometheus text exposition (`GET /metrics` on a loopback port), and the sampler, which
//! derives series from them every [`SAMPLE_EVERY`] and pushes them to serve
//! (`POST /api/v1/metrics`), where the engine's root-cause analysis reads them.
//!
//! A component declares its raw metrics (counters only grow, gauges are levels) and how each
//! series is derived from two consecutive readings ([`Derive`]): a rate, a mean (Δsum/Δcount),
//! or a level.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the sampler reads every component.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Samples of one family: (component, value) per component.
type Family = (Kind, Vec<(String, f64)>);

/// One raw metric: a counter or a gauge, read atomically.
#[derive(Debug, Default)]
pub struct Raw(AtomicU64);

impl Raw {
    /// Adds `n` (counters).
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Subtracts `n` (gauges).
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
    /// Sets the level (gauges).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether a raw metric is a counter or a gauge (Prometheus `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows.
    Counter,
    /// A level.
    Gauge,
}

/// How a series is derived from two readings of the raw metrics (indices into
/// [`Component::raw`]).
#[derive(Debug, Clone, Copy)]
pub enum Derive {
    /// `scale` × Δcounter / Δt (per second).
    Rate(usize, f64),
    /// `scale` × Δsum / Δcount; no point when the count did not change.
    Mean(usize, usize, f64),
    /// `scale` × the gauge's value.
    Level(usize, f64),
}

/// A component of the demo's service (database, application, DNS, network path).
pub trait Component: Send + Sync {
    /// Its name, as RCA reports it (`db`, `app`, `dns-east`, `path-west`, ...).
    fn name(&self) -> &str;
    /// Its raw metrics: name (Prometheus, without prefix), kind, value.
    fn raw(&self) -> Vec<(&'static str, Kind, u64)>;
    /// Its derived series: name and rule.
    fn series(&self) -> &'static [(&'static str, Derive)];
}

/// The Prometheus text exposition of `components` (version 0.0.4): one family per raw metric
/// name, `qos_demo_<name>{component="..."}`, in base units: raw microsecond counters
/// (`*_us_total`) become `*_seconds_total`, millisecond gauges (`*_ms`) become `*_seconds`.
pub fn prometheus(components: &[Arc<dyn Component>]) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for c in components {
        for (name, kind, value) in c.raw() {
            let (name, scale) = if let Some(base) = name.strip_suffix("_us_total") {
                (format!("{base}_seconds_total"), 1e-6)
            } else if let Some(base) = name.strip_suffix("_ms") {
                (format!("{base}_seconds"), 1e-3)
            } else {
                (name.to_string(), 1.0)
            };
            families
                .entry(name)
                .or_insert((kind, Vec::new()))
                .1
                .push((c.name().to_string(), value as f64 * scale));
        }
    }
    let mut out = String::new();
    for (name, (kind, samples)) in families {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(
            out,
            "# HELP qos_demo_{name} qos-aggregator demo: {} per component.",
            name.replace('_', " ")
        );
        let _ = writeln!(out, "# TYPE qos_demo_{name} {kind}");
        for (component, value) in samples {
            let _ = writeln!(out, "qos_demo_{name}{{component=\"{component}\"}} {value}");
        }
    }
    out
}

/// Reads every component every [`SAMPLE_EVERY`] and pushes the derived series to serve's
/// `POST /api/v1/metrics` at `api` (CSV, one request per round), until `shutdown`. A round that
/// cannot be delivered is dropped (and counted in the returned thread's result).
pub fn start_sampler(
    components: Vec<Arc<dyn Component>>,
    api: SocketAddr,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<u64>> {
    std::thread::Builder::new()
        .name("demo-sampler".into())
        .spawn(move || {
            let mut dropped = 0;
            let mut last: Vec<(Instant, Vec<u64>)> = components
                .iter()
                .map(|c| (Instant::now(), values(c.as_ref())))
                .collect();
            while !shutdown.load(Ordering::Relaxed) {
                std::thread::sleep(SAMPLE_EVERY);
                let t = super::unix_now();
                let mut csv = String::from("time,component,metric,value\n");
                for (c, (at, before)) in components.iter().zip(last.iter_mut()) {
                    let now = Instant::now();
                    let after = values(c.as_ref());
                    let dt = now.duration_since(*at).as_secs_f64().max(1e-3);
                    for &(name, rule) in c.series() {
                        if let Some(v) = derive(rule, before, &after, dt) {
                            let _ = writeln!(csv, "{t:.3},{},{name},{v}", c.name());
                        }
                    }
                    *at = now;
                    *before = after;
                }
                if super::api::post(api, "/api/v1/metrics", "text/csv", &csv).is_err() {
                    dropped += 1;
                }
            }
            dropped
        })
}

fn values(c: &dyn Component) -> Vec<u64> {
    c.raw().into_iter().map(|(_, _, v)| v).collect()
}

/// One derived value from two readings `dt` seconds apart.
pub fn derive(rule: Derive, before: &[u64], after: &[u64], dt: f64) -> Option<f64> {
    let delta = |i: usize| {
        let a = *after.get(i)?;
        let b = *before.get(i)?;
        Some(a.saturating_sub(b) as f64)
    };
    match rule {
        Derive::Rate(i, scale) => Some(scale * delta(i)? / dt),
        Derive::Mean(sum, count, scale) => {
            let n = delta(count)?;
            (n > 0.0).then_some(scale * delta(sum)? / n)
        }
        Derive::Level(i, scale) => Some(scale * *after.get(i)? as f64),
    }
}

/// Serves the Prometheus text of `components` at `GET /metrics` (any other path: 404) on
/// `listen`, one connection at a time (scrapes are small), until `shutdown`.
pub fn start_exporter(
    listen: SocketAddr,
    components: Vec<Arc<dyn Component>>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen)?;
    let local = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let thread = std::thread::Builder::new()
        .name("demo-metrics".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => answer_scrape(stream, &components),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok((local, thread))
}

fn answer_scrape(mut stream: TcpStream, components: &[Arc<dyn Component>]) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if path == "/metrics" || path.starts_with("/metrics?") {
        (
            "200 OK",
            "text/plain; version=0.0.4",
            prometheus(components),
        )
    } else {
        (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n".into(),
        )
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_passes_promtool() {
        let db: Arc<dyn Component> = Arc::new(super::super::services::Db::default());
        let path: Arc<dyn Component> = Arc::new(super::super::relay::Path::new("path-x"));
        let text = prometheus(&[db, path]);
        assert!(text.contains("qos_demo_db_query_time_seconds_total{component=\"db\"} 0"));
        assert!(text.contains("qos_demo_path_added_delay_seconds{component=\"path-x\"} 0"));
        if std::env::var_os("QOS_SKIP_EXTERNAL").is_some_and(|v| v == "1") {
            return;
        }
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (Debian prometheus) runs; QOS_SKIP_EXTERNAL=1 skips this");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn derived_rate_mean_and_level() {
        let before = [10, 1000, 2, 7];
        let after = [30, 5000, 6, 9];
        assert_eq!(
            derive(Derive::Rate(0, 1.0), &before, &after, 2.0),
            Some(10.0)
        );
        assert_eq!(
            derive(Derive::Mean(1, 2, 1e-3), &before, &after, 2.0),
            Some(1.0)
        );
        assert_eq!(derive(Derive::Mean(1, 3, 1.0), &before, &before, 1.0), None);
        assert_eq!(
            derive(Derive::Level(3, 2.0), &before, &after, 1.0),
            Some(18.0)
        );
    }
}
