//! Shared helpers: a three-region model and window samples.
#![allow(dead_code)]

use qos_model::{Model, Monitor, WindowSample};
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;

/// Three regions, regional DNS and paths, a classic lb → web → app → db stack; a second
/// service sharing the paths and the app.
pub const MODEL: &str = r#"
[defaults]
resolve_after = 3

[[component]]
name = "dns-eu"
kind = "dns"
region = "eu"
[[component]]
name = "dns-us"
kind = "dns"
region = "us"
[[component]]
name = "dns-ap"
kind = "dns"
region = "ap"
[[component]]
name = "path-eu"
kind = "network_path"
region = "eu"
[[component]]
name = "path-us"
kind = "network_path"
region = "us"
[[component]]
name = "path-ap"
kind = "network_path"
region = "ap"
[[component]]
name = "lb"
kind = "load_balancer"
depends_on = ["web"]
[[component]]
name = "web"
kind = "web"
depends_on = ["app"]
[[component]]
name = "app"
kind = "app"
depends_on = ["db"]
[[component]]
name = "db"
kind = "database"

[[service]]
name = "shop"
depends_on = ["dns-eu", "dns-us", "dns-ap", "path-eu", "path-us", "path-ap", "lb"]
[service.slo]
availability = 0.999
latency = { threshold_ms = 300.0 }
[[service.transaction]]
name = "home"
probes = [
  { edge = 1, probe = 0, region = "eu" },
  { edge = 2, probe = 0, region = "us" },
  { edge = 3, probe = 0, region = "ap" },
]

[[service]]
name = "api"
depends_on = ["path-eu", "path-us", "path-ap", "app"]
[[service.transaction]]
name = "get"
probes = [
  { edge = 1, probe = 1, region = "eu" },
  { edge = 2, probe = 1, region = "us" },
  { edge = 3, probe = 1, region = "ap" },
]
"#;

/// A slot-aligned start (a multiple of 60).
pub const T0: u64 = 1_764_000_000;

pub fn model() -> Model {
    Model::from_toml(MODEL).expect("test model")
}

/// Normal phase times (µs), with a small deterministic wobble per slot.
pub fn normal(slot: u64) -> Vec<(Phase, u32)> {
    let j = ((slot / 60) % 7) as u32 * 150;
    let p = [
        (Phase::Dns, 5_000 + j),
        (Phase::Connect, 20_000 + j),
        (Phase::Tls, 30_000 + j),
        (Phase::FirstByte, 100_000 + 2 * j),
        (Phase::Download, 10_000 + j),
    ];
    with_total(&p)
}

pub fn with_total(p: &[(Phase, u32)]) -> Vec<(Phase, u32)> {
    let mut v = p.to_vec();
    v.push((Phase::Total, p.iter().map(|x| x.1).sum()));
    v
}

/// 10 successful runs with `phases`.
pub fn ok(service: &str, region: &str, start: u64, phases: &[(Phase, u32)]) -> WindowSample {
    let mut s = WindowSample::new(service, region, start, 60);
    s.transaction = Some("t".into());
    s.add_ok(10, phases);
    s
}

/// 10 failed runs of `class` that got through `phases`.
pub fn failed(
    service: &str,
    region: &str,
    start: u64,
    class: ErrorClass,
    phases: &[(Phase, u32)],
) -> WindowSample {
    let mut s = WindowSample::new(service, region, start, 60);
    s.add_failed(10, class, phases);
    s
}

/// What a scenario puts in place of a normal window: `None` keeps it, `Some(None)` drops it.
pub type Override<'a> = &'a dyn Fn(&str, &str, u64) -> Option<Option<WindowSample>>;

/// Feed every service and region a normal window for each slot in `[from, to)`, except where
/// `f` returns a replacement (Some(None) = no data).
pub fn feed(m: &mut Monitor, from: u64, to: u64, f: Override<'_>) {
    let services: Vec<String> = m
        .model()
        .services()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    for slot in (from..to).step_by(60) {
        for s in &services {
            for r in ["eu", "us", "ap"] {
                let sample = match f(s, r, slot) {
                    Some(x) => x,
                    None => Some(ok(s, r, slot, &normal(slot))),
                };
                if let Some(x) = sample {
                    m.ingest(x).expect("sample fits the model");
                }
            }
        }
    }
}

/// A noisy but normal metric, then (optionally) a shift from `at`.
pub fn metric(
    m: &mut Monitor,
    comp: &str,
    name: &str,
    from: u64,
    to: u64,
    base: f64,
    shift: Option<(u64, f64)>,
) {
    for t in (from..to).step_by(60) {
        let wobble = [0.0, 0.03, -0.02, 0.05, -0.04, 0.01, -0.01][((t / 60) % 7) as usize];
        let mut v = base * (1.0 + wobble);
        if let Some((at, x)) = shift {
            if t >= at {
                v += x;
            }
        }
        m.record_metric(comp, name, t as f64, v);
    }
}
