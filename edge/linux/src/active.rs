//! The probes, rules and summary window in force on an edge, and one scheduled run of a probe.
//!
//! A probe's specification is kept encoded (CBOR, as on the wire) and decoded again on the
//! thread that runs it, so a run owns nothing but bytes and can be moved anywhere. Both the
//! `qos-edge` binary and the super-manager's local edge drive their scheduler with
//! [`Active::cadences`] and run what is due with [`run_scheduled`].

use std::sync::Arc;

use qos_probe_config::{ProbeKindConfig, ProbeSection, RuleSection};
use qos_wire::codec::encode_into;
use qos_wire::config::EdgeConfig;
use qos_wire::ids::ProbeId;
use qos_wire::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use qos_wire::probe::ProbeSpec;
use qos_wire::threshold::ThresholdRule;

use qos_edge_core::scheduler::Cadence;

use crate::probe;

/// Driver options of a configured probe that the wire's probe specification does not carry.
pub trait DriverOptions {
    /// This probe's driver options.
    fn options(&self) -> probe::Options;
}

impl DriverOptions for ProbeSection {
    fn options(&self) -> probe::Options {
        match &self.kind {
            ProbeKindConfig::Http { ca_file, .. } => probe::Options {
                ca_file: ca_file.clone(),
            },
            _ => probe::Options::default(),
        }
    }
}

/// A probe in force: its specification encoded (decoded again on the probe's thread) and the
/// driver options the wire does not carry.
#[derive(Debug)]
pub struct ActiveProbe {
    /// The probe's id.
    pub id: u16,
    /// Run every this many ms.
    pub interval_ms: u32,
    /// The wire's `probe-spec`, CBOR.
    pub spec: Vec<u8>,
    /// Driver options.
    pub options: probe::Options,
}

/// The probes, rules and window in force: a configuration file's, or a central configuration's.
#[derive(Debug)]
pub struct Active {
    /// Etag of the central configuration (`None`: the file's).
    pub etag: Option<u32>,
    /// Summary window, seconds.
    pub window_s: u16,
    /// The probes.
    pub probes: Vec<Arc<ActiveProbe>>,
    /// The threshold rules, each with the probe it watches.
    pub rules: Vec<(ProbeId, ThresholdRule)>,
}

fn encode_spec(spec: &ProbeSpec<'_>) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 8192];
    let n = encode_into(&mut buf, |e| spec.encode(e)).map_err(|e| e.to_string())?;
    buf.truncate(n);
    Ok(buf)
}

impl Active {
    /// Probes and rules from a configuration file (checked with the file, e.g. by
    /// [`qos_probe_config::validate_set`]); a rule that does not convert is an error naming it.
    pub fn from_sections(
        window_s: u16,
        probes: &[ProbeSection],
        rules: &[RuleSection],
    ) -> Result<Active, String> {
        let mut active = Vec::new();
        for p in probes {
            let steps = p.steps();
            active.push(Arc::new(ActiveProbe {
                id: p.id,
                interval_ms: p.interval_ms,
                spec: encode_spec(&p.spec(&steps))?,
                options: p.options(),
            }));
        }
        let rules = rules
            .iter()
            .map(|r| Ok((ProbeId(r.probe), r.rule()?)))
            .collect::<Result<_, String>>()?;
        Ok(Active {
            etag: None,
            window_s,
            probes: active,
            rules,
        })
    }

    /// A central configuration (validated by decoding).
    pub fn central(c: &EdgeConfig<'_>) -> Result<Active, String> {
        let mut probes = Vec::new();
        for p in c.probes.iter() {
            probes.push(Arc::new(ActiveProbe {
                id: p.id.0,
                interval_ms: p.interval_ms,
                spec: encode_spec(&p)?,
                options: probe::Options::default(),
            }));
        }
        Ok(Active {
            etag: Some(c.etag),
            window_s: c.window_s,
            probes,
            rules: c.rules.iter().map(|r| (r.probe, r.rule)).collect(),
        })
    }

    /// The scheduler's cadences of these probes, failures confirmed after `confirm_ms`.
    pub fn cadences(&self, confirm_ms: u32) -> impl Iterator<Item = Cadence> + '_ {
        self.probes.iter().map(move |p| Cadence {
            id: ProbeId(p.id),
            interval_ms: p.interval_ms,
            confirm_ms,
        })
    }

    /// The probe with this id.
    pub fn probe(&self, id: ProbeId) -> Option<&Arc<ActiveProbe>> {
        self.probes.iter().find(|p| p.id == id.0)
    }
}

/// Run one scheduled probe from its encoded specification; `at` is its slot (Unix ms).
pub fn run_scheduled(p: &ActiveProbe, at: u64) -> ProbeResult {
    run_encoded(&p.spec, ProbeId(p.id), at, &p.options)
}

/// Run a probe from its encoded specification at `at` (Unix ms); a specification that does not
/// decode gives a failed result of probe `id` (class `Other`) instead of no result.
pub fn run_encoded(spec: &[u8], id: ProbeId, at: u64, options: &probe::Options) -> ProbeResult {
    match ProbeSpec::decode(&mut minicbor::Decoder::new(spec)) {
        Ok(spec) => probe::run_with(&spec, at, options).result,
        Err(_) => ProbeResult {
            probe: id,
            at_ms: at,
            phases: PhaseTimings::new(),
            error: Some(ErrorClass::Other),
            error_after_us: Some(0),
            detail: 0,
            redirects: 0,
        },
    }
}
