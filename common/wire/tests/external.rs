//! Samples of every message, validated against `qos.cddl` by an external validator
//! (`cddl-verify` from the PyPI package cddl-verifier) and decoded by an independent CBOR
//! decoder (Python's `cbor2`). `.ci/run` installs both; without them this test fails, unless
//! `QOS_SKIP_EXTERNAL=1` says to skip it on purpose.
//!
//! Every sample is also mutated into an invalid one that the validator must reject, which proves
//! the check can fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use qos_wire::codec::{encode_into, List, SliceEncoder, WireError};
use qos_wire::config::{EdgeConfig, RuleBinding};
use qos_wire::event::Event;
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::metrics::{Metric as HostMetric, MetricsSample};
use qos_wire::phase::Phase;
use qos_wire::samples::{self, Rng};
use qos_wire::sketch::Sketch;
use qos_wire::summary::Summary;
use qos_wire::threshold::{Metric, ThresholdRule};
use qos_wire::uplink::{encode_batch_head, encode_record, Ack, RecordKind};

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/qos.cddl");

fn encode(f: impl FnOnce(&mut SliceEncoder<'_>) -> Result<(), WireError>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = encode_into(&mut buf, f).unwrap();
    buf.truncate(n);
    buf
}

fn tools_present() -> bool {
    let cddl = Command::new("cddl-verify")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let cbor2 = Command::new("python3")
        .args(["-c", "import cbor2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if cddl && cbor2 {
        return true;
    }
    if std::env::var("QOS_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("QOS_SKIP_EXTERNAL=1: skipping external CDDL/cbor2 validation");
        return false;
    }
    panic!("cddl-verify (pip install cddl-verifier) and python3 cbor2 are needed; .ci/run installs them");
}

fn dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wire-samples");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cddl_verify(ty: &str, name: &str, bytes: &[u8]) -> (bool, String) {
    let path = dir().join(format!("{name}.cbor"));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("cddl-verify")
        .args(["-t", ty, SCHEMA])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Decode with cbor2; returns the decoded value as JSON (byte strings as hex) and whether
/// cbor2's own encoding of it gives back exactly our bytes.
fn cbor2_decode(bytes: &[u8]) -> (serde_json::Value, bool) {
    const SCRIPT: &str = r#"
import sys, json, cbor2
data = sys.stdin.buffer.read()
value = cbor2.loads(data)
def plain(v):
    if isinstance(v, bytes): return {"hex": v.hex()}
    if isinstance(v, list): return [plain(x) for x in v]
    return v
print(json.dumps({"value": plain(value), "identical": cbor2.dumps(value) == data}))
"#;
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cbor2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["value"].clone(), v["identical"].as_bool().unwrap())
}

/// Validate a good sample (must pass) and a bad one (must fail).
fn check(ty: &str, name: &str, good: &[u8], bad: &[u8]) -> serde_json::Value {
    let (ok, text) = cddl_verify(ty, name, good);
    assert!(ok, "{name} should validate as {ty}:\n{text}");
    let (ok, text) = cddl_verify(ty, &format!("{name}-bad"), bad);
    assert!(!ok, "{name}-bad must NOT validate as {ty}:\n{text}");
    let (value, identical) = cbor2_decode(good);
    assert!(
        identical,
        "cbor2 re-encodes {name} differently: not preferred serialisation"
    );
    value
}

/// Replace the first occurrence of `from` (an encoded item) with `to`.
fn mutate(bytes: &[u8], at: usize, to: &[u8]) -> Vec<u8> {
    let mut v = bytes[..at].to_vec();
    v.extend_from_slice(to);
    v.extend_from_slice(&bytes[at + 1..]);
    v
}

#[test]
fn every_message_validates_against_the_schema() {
    if !tools_present() {
        return;
    }
    // summary (a realistic one, with a failure so every part is present)
    let s: Summary<128> = samples::http_summary(11, 5, 1);
    let summary = encode(|e| s.encode(e));
    // a text string where the probe id must be: invalid
    let v = check(
        "summary",
        "summary",
        &summary,
        &mutate(&summary, 1, b"\x61x"),
    );
    assert_eq!(v[0], 1);
    assert_eq!(v[3], s.ok);
    assert_eq!(v[4], s.failed);

    // event
    let ev = Event {
        probe: ProbeId(2),
        rule: 0,
        metric: Metric::Phase(Phase::FirstByte),
        raised: true,
        at_ms: 1_764_000_000_500,
        value: 250_000,
    };
    let event = encode(|e| ev.encode(e));
    let avail = Event {
        metric: Metric::Availability,
        raised: false,
        ..ev
    };
    check(
        "event",
        "event-availability",
        &encode(|e| avail.encode(e)),
        &mutate(&event, 4, b"\x07"),
    );
    let v = check("event", "event", &event, &mutate(&event, 3, b"\x02"));
    assert_eq!(v[2], true);
    assert_eq!(v[3], Phase::FirstByte as u8);

    // probe result
    let mut rng = Rng::new(2);
    let r = samples::http_result(&mut rng, ProbeId(1), 1_764_000_000_000, false);
    let result = encode(|e| r.encode(e));
    let v = check(
        "probe-result",
        "probe-result",
        &result,
        &mutate(&result, 1, b"\xf6"),
    );
    let fields = v.as_array().unwrap();
    assert_eq!(fields.len(), 7 + 6, "six phases measured");
    assert_eq!(fields[fields.len() - 2], 200);
    let failed = samples::http_result(&mut rng, ProbeId(1), 1_764_000_000_000, true);
    let failed_bytes = encode(|e| failed.encode(e));
    check(
        "probe-result",
        "probe-result-failed",
        &failed_bytes,
        &failed_bytes[..failed_bytes.len() - 1],
    );

    // recent results (newest first), as an edge answers GET /r
    let mut buf = [0u8; 1024];
    let (n, count) =
        qos_wire::outcome::encode_results(&mut buf, [&r, &failed].into_iter()).unwrap();
    assert_eq!(count, 2);
    let recent = buf[..n].to_vec();
    let (n, _) = qos_wire::outcome::encode_results(&mut buf, core::iter::empty()).unwrap();
    check(
        "recent-results",
        "recent-results-empty",
        &buf[..n],
        &mutate(&buf[..n], 1, b"\x02"),
    );
    // a bare probe-result where the list must be: invalid
    let mut bare = vec![0x82, 0x01];
    bare.extend_from_slice(&result);
    let v = check("recent-results", "recent-results", &recent, &bare);
    assert_eq!(v[0], 1);
    assert_eq!(v[1].as_array().unwrap().len(), 2);
    assert_eq!(v[1][1][0], 1, "probe id of the failed run");

    // host metrics: every metric, and a first sample with gauges only
    let m = samples::metrics_sample();
    let metrics = encode(|e| m.encode(e));
    // a metric id this schema does not know (16) in place of cpu_busy_permille (0)
    let unknown = {
        let mut e = minicbor::Encoder::new(Vec::new());
        e.array(3)
            .unwrap()
            .u32(m.at_s)
            .unwrap()
            .u32(m.interval_s)
            .unwrap();
        e.array(2).unwrap().u8(16).unwrap().u64(1).unwrap();
        e.into_writer()
    };
    let v = check("metrics", "metrics", &metrics, &unknown);
    assert_eq!(v[0], m.at_s);
    assert_eq!(v[1], 60);
    let pairs = v[2].as_array().unwrap();
    assert_eq!(pairs.len(), 2 * HostMetric::COUNT);
    assert_eq!(pairs[2 * HostMetric::MemTotalKib as usize], 3);
    assert_eq!(pairs[2 * HostMetric::MemTotalKib as usize + 1], 2_002_124);
    let mut gauges = MetricsSample::new(m.at_s, 0);
    gauges.set(HostMetric::MemTotalKib, 2_002_124).unwrap();
    let gauges = encode(|e| gauges.encode(e));
    // a negative value
    let negative = {
        let mut e = minicbor::Encoder::new(Vec::new());
        e.array(3).unwrap().u32(m.at_s).unwrap().u32(0).unwrap();
        e.array(2).unwrap().u8(3).unwrap().i64(-1).unwrap();
        e.into_writer()
    };
    check("metrics", "metrics-gauges", &gauges, &negative);

    // batch with one record of each kind
    let batch = encode(|e| {
        encode_batch_head(e, EdgeId(7), Seq::first_of_epoch(3), 2, 4)?;
        encode_record(e, RecordKind::Event, |e| ev.encode(e))?;
        encode_record(e, RecordKind::Summary, |e| s.encode(e))?;
        encode_record(e, RecordKind::Result, |e| r.encode(e))?;
        encode_record(e, RecordKind::Metrics, |e| m.encode(e))
    });
    // version 2 is not version 1
    let v = check("batch", "batch", &batch, &mutate(&batch, 1, b"\x02"));
    assert_eq!(v[1], 7);
    assert_eq!(v[2], 3u64 << 32);
    assert_eq!(v[4].as_array().unwrap().len(), 4);
    assert_eq!(v[4][3][0], 3, "metrics are record kind 3");
    // a metrics record whose body is a summary
    let swapped = encode(|e| {
        encode_batch_head(e, EdgeId(7), Seq::first_of_epoch(3), 2, 1)?;
        encode_record(e, RecordKind::Metrics, |e| s.encode(e))
    });
    assert!(!cddl_verify("batch", "batch-metrics-body", &swapped).0);
    // a record of unknown kind 9
    let rec_at = batch.iter().position(|&b| b == 0x82).unwrap();
    assert!(!cddl_verify("batch", "batch-kind", &mutate(&batch, rec_at + 1, b"\x09")).0);

    // ack
    let mut buf = [0u8; 16];
    let n = Ack {
        acked: Seq(3 << 32 | 41),
    }
    .encode(&mut buf)
    .unwrap();
    let v = check("ack", "ack", &buf[..n], &mutate(&buf[..n], 1, b"\x20"));
    assert_eq!(v[1], (3u64 << 32) | 41);

    // sketch, alone
    let mut sk: Sketch<128> = Sketch::new();
    for t in [9_000, 9_100, 12_000, 30_000] {
        sk.insert(t);
    }
    let sketch = encode(|e| {
        e.encode(&sk)?;
        Ok(())
    });
    check(
        "sketch",
        "sketch",
        &sketch,
        &mutate(&sketch, 2, b"\x19\x03\xd1"),
    );

    // configuration with every probe kind and both kinds of rule
    let specs = samples::probe_specs();
    let rules = [
        RuleBinding {
            probe: ProbeId(3),
            rule: ThresholdRule {
                metric: Metric::Phase(Phase::FirstByte),
                raise: 200_000,
                clear: 150_000,
                k: 2,
                n: 3,
            },
        },
        RuleBinding {
            probe: ProbeId(3),
            rule: ThresholdRule {
                metric: Metric::Availability,
                raise: 0,
                clear: 0,
                k: 3,
                n: 5,
            },
        },
    ];
    let cfg = EdgeConfig {
        etag: 42,
        window_s: 60,
        probes: List::from_slice(&specs),
        rules: List::from_slice(&rules),
    };
    let mut buf = vec![0u8; 2048];
    let n = cfg.encode(&mut buf).unwrap();
    let config = &buf[..n];
    let back = EdgeConfig::decode(config).unwrap();
    assert_eq!(back, cfg);
    // a window of 0 s is invalid
    let zero = EdgeConfig { window_s: 0, ..cfg };
    let mut bad = vec![0u8; 2048];
    let m = zero.encode(&mut bad).unwrap();
    let v = check("edge-config", "edge-config", config, &bad[..m]);
    assert_eq!(v[3].as_array().unwrap().len(), 7);
    assert_eq!(v[4][1][1][0], -1, "availability is -1 on the wire");

    // configuration report (a refusal with its reason); a reason of 97 bytes is invalid
    let report = samples::config_report();
    let long = {
        let mut e = minicbor::Encoder::new(Vec::new());
        e.array(4).unwrap().u8(1).unwrap().u32(7).unwrap();
        e.bool(false).unwrap().str(&"x".repeat(97)).unwrap();
        e.into_writer()
    };
    let v = check("config-report", "config-report", &report, &long);
    assert_eq!(v[1], 0x0102_0304);
    assert_eq!(v[2], false);
    assert_eq!(v[3], "invalid value: duplicate probe id");
    let ok = qos_wire::config::ConfigReport {
        etag: 9,
        accepted: true,
        reason: "",
    };
    let mut buf = [0u8; 16];
    let n = ok.encode(&mut buf).unwrap();
    check(
        "config-report",
        "config-report-accepted",
        &buf[..n],
        &mutate(&buf[..n], 3, b"\x01"),
    );
}
