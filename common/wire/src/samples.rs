//! Realistic sample messages, for tests, the size benchmark and fuzz seeds (feature `samples`,
//! needs std for the random distributions). Deterministic from a seed.

use std::vec::Vec;

use crate::codec::List;
use crate::codec::{encode_into, WireError};
use crate::ids::{EdgeId, ProbeId, Seq};
use crate::metrics::{Metric, MetricsSample};
use crate::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use crate::phase::Phase;
use crate::probe::{DnsType, HttpMethod, ProbeKind, ProbeSpec, Step};
use crate::summary::Summary;
use crate::uplink::{encode_batch_head, encode_record, RecordKind};

/// A small deterministic PRNG (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * core::f64::consts::PI * self.unit()).cos()
    }
    /// Log-normal with the given median (µs) and shape σ.
    pub fn log_normal(&mut self, median_us: f64, sigma: f64) -> u32 {
        (median_us * (sigma * self.normal()).exp())
            .round()
            .clamp(1.0, u32::MAX as f64) as u32
    }
}

/// Medians (µs) and shapes of the phases of an HTTP GET to a server in the same region:
/// DNS from a caching resolver, connect over a short path, the request upload, server
/// processing until the first byte, and the download of a ~50 KB page.
pub const HTTP_PHASES: [(Phase, f64, f64); 5] = [
    (Phase::Dns, 800.0, 0.30),
    (Phase::Connect, 1_500.0, 0.20),
    (Phase::Upload, 40.0, 0.25),
    (Phase::FirstByte, 9_000.0, 0.25),
    (Phase::Download, 1_200.0, 0.30),
];

/// One run of an HTTP probe with realistic phase timings; a run fails with a timeout when
/// `fail` is set.
pub fn http_result(rng: &mut Rng, probe: ProbeId, at_ms: u64, fail: bool) -> ProbeResult {
    let mut phases = PhaseTimings::new();
    let mut total = 0u32;
    for (p, median, sigma) in HTTP_PHASES {
        let t = rng.log_normal(median, sigma);
        phases.set(p, t);
        total += t;
    }
    let mut r = ProbeResult {
        probe,
        at_ms,
        phases,
        error: None,
        error_after_us: None,
        detail: 200,
        redirects: 0,
    };
    if fail {
        r.phases = PhaseTimings::new();
        r.phases.set(Phase::Dns, rng.log_normal(800.0, 0.3));
        r.error = Some(ErrorClass::Timeout);
        r.error_after_us = Some(2_000_000 + rng.log_normal(300.0, 0.5));
        r.detail = 0;
    } else {
        r.phases.set(Phase::Total, total);
    }
    r
}

/// A 60 s summary of one HTTP probe run every `interval_s` seconds, `failures` of the runs
/// failed (timeouts).
pub fn http_summary<const N: usize>(seed: u64, interval_s: u32, failures: u32) -> Summary<N> {
    let mut rng = Rng::new(seed);
    let start = 1_764_000_000;
    let mut s = Summary::new(ProbeId(1), start, 60);
    let runs = 60 / interval_s;
    for i in 0..runs {
        let at = u64::from(start + i * interval_s) * 1000;
        s.record(&http_result(&mut rng, ProbeId(1), at, i < failures));
    }
    s
}

/// Encode a batch of `summaries` (numbered from `first`) as the edge would send it.
pub fn batch<const N: usize>(
    edge: EdgeId,
    first: Seq,
    dropped: u64,
    summaries: &[Summary<N>],
) -> Result<Vec<u8>, WireError> {
    let mut buf = std::vec![0u8; 64 + 512 * summaries.len()];
    let n = encode_into(&mut buf, |e| {
        encode_batch_head(e, edge, first, dropped, summaries.len() as u16)?;
        for s in summaries {
            encode_record(e, RecordKind::Summary, |e| s.encode(e))?;
        }
        Ok(())
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// Host metrics of a small Linux box over a 60 s interval: every metric present, realistic
/// values (2 GiB of memory, a 16 GiB SD card, light network traffic).
pub fn metrics_sample() -> MetricsSample {
    let mut m = MetricsSample::new(1_764_000_060, 60);
    for (metric, value) in [
        (Metric::CpuBusyPermille, 123),
        (Metric::CpuIowaitPermille, 4),
        (Metric::Load1Centi, 37),
        (Metric::MemTotalKib, 2_002_124),
        (Metric::MemAvailableKib, 1_433_600),
        (Metric::SwapUsedKib, 0),
        (Metric::DiskTotalKib, 15_023_104),
        (Metric::DiskAvailableKib, 9_871_360),
        (Metric::DiskReadKib, 12),
        (Metric::DiskWriteKib, 348),
        (Metric::NetRxKib, 1_907),
        (Metric::NetTxKib, 655),
        (Metric::NetRxErrors, 0),
        (Metric::NetTxErrors, 0),
        (Metric::NetDrops, 3),
        (Metric::TcpRetransSegs, 1),
    ] {
        // Cannot fail: 16 distinct metrics fit.
        let _ = m.set(metric, value);
    }
    m
}

static STEPS: [Step<'static>; 2] = [
    Step {
        send: b"PING\r\n",
        expect: b"+PONG",
    },
    // PostgreSQL SSLRequest, answered `N` by a server without TLS
    Step {
        send: b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        expect: b"N",
    },
];

/// One probe of every kind, ids 1.., each every 10 s with a 2 s timeout.
pub fn probe_specs() -> std::vec::Vec<ProbeSpec<'static>> {
    let kinds = [
        ProbeKind::Dns {
            resolver: "127.0.0.1:5353",
            name: "shop.test",
            qtype: DnsType::A,
            expect: Some("127.0.0.1"),
        },
        ProbeKind::Tcp {
            target: "127.0.0.1:5432",
        },
        ProbeKind::Http {
            method: HttpMethod::Post,
            url: "https://127.0.0.1:8443/api",
            body: b"{}",
            expect_status: 201,
            expect_body: Some("ok"),
            max_redirects: 2,
        },
        ProbeKind::UdpEcho {
            target: "127.0.0.1:7",
            payload: b"qos",
        },
        ProbeKind::CoapPing {
            target: "127.0.0.1:5683",
        },
        ProbeKind::Icmp { host: "127.0.0.1" },
        ProbeKind::Transaction {
            target: "127.0.0.1:6379",
            steps: List::from_slice(&STEPS),
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| ProbeSpec {
            id: ProbeId(i as u16 + 1),
            interval_ms: 10_000,
            timeout_ms: 2_000,
            kind,
        })
        .collect()
}

/// A refused configuration's report, as an edge sends it (`POST /c?id=<edge>`), encoded.
pub fn config_report() -> Vec<u8> {
    let r = crate::config::ConfigReport {
        etag: 0x0102_0304,
        accepted: false,
        reason: "invalid value: duplicate probe id",
    };
    let mut buf = [0u8; 128];
    let n = r.encode(&mut buf).expect("fits");
    buf[..n].to_vec()
}
