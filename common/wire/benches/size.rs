//! Size benchmark: one 60 s summary of an HTTP probe (six phases with count/min/max/sum, error
//! classes, the latency sketch) in our CBOR, beside the same data as SenML-CBOR (RFC 8428) and
//! as JSON. Run with `cargo bench -p qos-wire --bench size`.
//!
//! The same summary value feeds all three encodings, so the comparison is like for like:
//! SenML carries one record per number (count/min/max/sum per phase, one per error class, one
//! per non-empty sketch bucket), JSON an object with the same fields.

use minicbor::Encoder;
use qos_wire::codec::encode_into;
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;
use qos_wire::samples;
use qos_wire::sketch::Sketch;
use qos_wire::summary::{Summary, STATS, TIME_TO_ERROR};

type S = Summary<128>;

/// Budget from the design: one 60 s summary of an HTTP probe.
const BUDGET: usize = 96;

fn ours(s: &S) -> usize {
    let mut buf = [0u8; 1024];
    encode_into(&mut buf, |e| s.encode(e)).expect("fits")
}

fn stat_name(i: usize) -> &'static str {
    if i == TIME_TO_ERROR {
        "time_to_error"
    } else {
        Phase::ALL[i].name()
    }
}

/// SenML-CBOR (RFC 8428 §6): an array of maps with integer labels: bn -2, bt -3, n 0, u 1, v 2.
fn senml(s: &S) -> usize {
    let mut recs: Vec<(String, &'static str, f64)> = vec![
        ("ok".into(), "count", f64::from(s.ok)),
        ("failed".into(), "count", f64::from(s.failed)),
    ];
    for i in 0..STATS {
        let p = &s.phases[i];
        if p.count == 0 {
            continue;
        }
        let n = stat_name(i);
        recs.push((format!("{n}.count"), "count", f64::from(p.count)));
        recs.push((format!("{n}.min"), "s", f64::from(p.min) / 1e6));
        recs.push((format!("{n}.max"), "s", f64::from(p.max) / 1e6));
        recs.push((format!("{n}.sum"), "s", p.sum as f64 / 1e6));
    }
    for c in ErrorClass::ALL {
        if s.errors[c as usize] > 0 {
            recs.push((
                format!("err.{}", c.name()),
                "count",
                f64::from(s.errors[c as usize]),
            ));
        }
    }
    for (i, count) in s.sketch.iter() {
        recs.push((format!("sk.{i}"), "count", f64::from(count)));
    }
    let mut e = Encoder::new(Vec::new());
    e.array(recs.len() as u64).unwrap();
    for (k, (name, unit, v)) in recs.iter().enumerate() {
        e.map(if k == 0 { 5 } else { 3 }).unwrap();
        if k == 0 {
            e.i8(-2)
                .unwrap()
                .str("urn:dev:qos:edge-1:probe-1:")
                .unwrap();
            e.i8(-3).unwrap().u32(s.start_s).unwrap();
        }
        e.u8(0).unwrap().str(name).unwrap();
        e.u8(1).unwrap().str(unit).unwrap();
        e.u8(2).unwrap();
        if v.fract() == 0.0 {
            e.u64(*v as u64).unwrap();
        } else {
            e.f64(*v).unwrap();
        }
    }
    e.into_writer().len()
}

fn json(s: &S) -> usize {
    let mut phases = serde_json::Map::new();
    for i in 0..STATS {
        let p = &s.phases[i];
        if p.count > 0 {
            phases.insert(
                stat_name(i).into(),
                serde_json::json!({"count": p.count, "min_us": p.min, "max_us": p.max, "sum_us": p.sum}),
            );
        }
    }
    let errors: serde_json::Map<String, serde_json::Value> = ErrorClass::ALL
        .iter()
        .filter(|c| s.errors[**c as usize] > 0)
        .map(|c| (c.name().to_string(), s.errors[*c as usize].into()))
        .collect();
    let sketch: Vec<[u32; 2]> = s.sketch.iter().map(|(i, c)| [u32::from(i), c]).collect();
    let v = serde_json::json!({
        "probe": s.probe.0, "start_s": s.start_s, "len_s": s.len_s, "ok": s.ok, "failed": s.failed,
        "phases": phases, "errors": errors, "sketch": sketch,
    });
    serde_json::to_vec(&v).unwrap().len()
}

fn main() {
    println!("one 60 s summary of an HTTP probe: 6 phases (dns, connect, upload, first_byte, download, total)");
    println!("with count/min/max/sum, error classes, and a sketch of total time (log-normal phases, seeded)");
    println!();
    println!(
        "{:<34} {:>6} {:>8} {:>11} {:>7} {:>9} {:>8}",
        "scenario", "runs", "buckets", "ours (B)", "budget", "SenML (B)", "JSON (B)"
    );
    let mut worst_default = 0;
    for (label, interval, failures) in [
        ("every 10 s (default), all ok", 10, 0),
        ("every 10 s, 1 timeout", 10, 1),
        ("every 5 s, all ok", 5, 0),
        ("every 5 s, 1 timeout", 5, 1),
        ("every 1 s, all ok", 1, 0),
        ("every 1 s, 2 timeouts", 1, 2),
    ] {
        let mut sizes = Vec::new();
        for seed in 0..50u64 {
            let s: S = samples::http_summary(seed, interval, failures);
            sizes.push((ours(&s), senml(&s), json(&s), s.sketch.iter().count()));
        }
        let max = sizes.iter().map(|x| x.0).max().unwrap();
        let mean = |f: fn(&(usize, usize, usize, usize)) -> usize| {
            sizes.iter().map(f).sum::<usize>() as f64 / sizes.len() as f64
        };
        if interval == 10 {
            worst_default = worst_default.max(max);
        }
        println!(
            "{:<34} {:>6} {:>8.1} {:>5.1} ≤{:>3} {:>7} {:>9.1} {:>8.1}",
            label,
            60 / interval,
            mean(|x| x.3),
            mean(|x| x.0),
            max,
            if max <= BUDGET { "ok" } else { "OVER" },
            mean(|x| x.1),
            mean(|x| x.2),
        );
    }
    let one: S = samples::http_summary(0, 10, 0);
    println!();
    println!(
        "ratio at the default interval (seed 0): SenML-CBOR / ours = {:.1}x, JSON / ours = {:.1}x",
        senml(&one) as f64 / ours(&one) as f64,
        json(&one) as f64 / ours(&one) as f64
    );
    println!(
        "sketch memory on the edge: size_of::<Sketch<128>>() = {} bytes",
        core::mem::size_of::<Sketch<128>>()
    );
    println!(
        "worst case at the default interval over 50 seeds: {worst_default} bytes (budget {BUDGET})"
    );
    let host = samples::metrics_sample();
    let mut buf = [0u8; 256];
    let n = qos_wire::codec::encode_into(&mut buf, |e| host.encode(e)).unwrap();
    println!(
        "host metrics record body, all {} metrics (samples::metrics_sample): {n} bytes",
        host.len()
    );
}
