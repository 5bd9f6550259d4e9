//! The edge's control conversation with its broker (and through it the centre): registration
//! with a lease, configuration poll, and configuration reports. Sans-IO: every exchange goes
//! through the [`Uplink`]'s CoAP endpoint as a *control* exchange; the driver passes `now`,
//! the answers ([`Received::Control`](crate::uplink::Received::Control)) and a buffer for the
//! configuration, applies what it is handed and says how that went.
//!
//! # Contract (edge side)
//!
//! **Registration** (RFC 9176), after start and on every broker change:
//! CON `POST /rd?ep=<name>&d=<region>&lt=<lifetime s>&id=<edge id>[&fw=<version>][&cfg=<etag>]`,
//! Content-Format 40, payload the edge's resources in link format
//! ([`EDGE_LINKS`]); `cfg` is the etag (decimal) of the
//! central configuration in force, if any. The answer 2.01 carries Location-Path `rd/<n>`.
//! Refresh: empty `POST /rd/<n>` at half the lifetime ([`Lease`]); a 4.04 to a refresh means
//! register again. On a clean stop the driver calls [`Centre::stop`]: `DELETE /rd/<n>`, best
//! effort. The query is plain RFC 9176, so a standard directory (libcoap's `coap-rd`) accepts it.
//!
//! **Configuration poll**: CON `GET /c?id=<edge id>` to the current broker, with an ETag option
//! (4 bytes, big-endian) holding the etag of the central configuration in force, if any. At
//! start, every [`CentreConfig::config_poll_ms`] (0: never) and right after each
//! (re)registration. Answers:
//! - 2.05, Content-Format 60, CDDL `edge-config` (etag inside; also the ETag option): decoded
//!   and validated ([`EdgeConfig::decode`]), then checked against this edge's [`Limits`]
//!   (probe and rule counts, what its prober can run). Valid: handed to the driver as
//!   [`CentreEvent::Apply`]; the driver applies it without restart, persists it in
//!   [`Slot::Config`] and calls [`Centre::applied`]. Invalid: [`CentreEvent::Rejected`] with a
//!   reason; the old configuration stays. A 2.05 with the etag already in force is treated as
//!   2.03 (a duplicate answer is applied once). A body larger than one message (a Block2 option
//!   with more blocks, or larger than the driver's buffer) is refused as `too large`.
//! - 2.03 Valid: keep the configuration in force.
//! - 4.04: the centre has no configuration for this edge: keep the local one.
//! - anything else, or no answer: nothing changes; the next poll retries.
//!
//! **Configuration report**: after each apply or refusal, CON `POST /c?id=<edge id>`,
//! Content-Format 60, CDDL `config-report` ([`ConfigReport`]). 2.04 expected; a failed report
//! is not retried (the next poll and the registration's `cfg` tell the centre the state).
//!
//! One control exchange at a time; priority: registration/refresh, then report, then poll.
//!
//! # Apply semantics (drivers)
//! A driver replaces scheduler, thresholds and summariser window between probe runs: the
//! current summary window is flushed (closed early and queued), so no window mixes two
//! configurations; recent raw results are kept. A probe whose run is in flight finishes and
//! its result is still recorded.

use heapless::String;
use qos_coap::{content_format, option, Code, ExchangeId, Message, MessageWriter};
use qos_wire::config::{ConfigReport, EdgeConfig, CONFIG_PATH, MAX_REASON};
use qos_wire::ids::EdgeId;
use qos_wire::probe::ProbeSpec;
use qos_wire::registration::{DIRECTORY_PATH, EDGE_LINKS, MAX_NAME, MIN_LIFETIME};

use crate::fmt::{debug, info, warn};
use crate::registration::{Lease, LeaseOp};
use crate::storage::{Slot, Storage};
use crate::uplink::Uplink;

/// Content-Format of link format (RFC 6690).
const LINK_FORMAT: u32 = 40;

/// A refusal's reason (at most [`MAX_REASON`] bytes).
pub type Reason = String<MAX_REASON>;

/// Settings of the control conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CentreConfig {
    /// Registration lifetime, s (≥ 60, RFC 9176).
    pub lifetime_s: u32,
    /// Configuration poll period, ms (0: no poll).
    pub config_poll_ms: u64,
    /// Retry a failed registration or refresh after this long, ms.
    pub retry_ms: u64,
}

impl Default for CentreConfig {
    fn default() -> Self {
        CentreConfig {
            lifetime_s: qos_wire::registration::DEFAULT_LIFETIME,
            config_poll_ms: 60_000,
            retry_ms: 10_000,
        }
    }
}

/// Who the edge is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// Endpoint name (`ep`).
    pub name: &'a str,
    /// Sector: the region (`d`).
    pub region: &'a str,
    /// Numeric id (`id`).
    pub id: EdgeId,
    /// Firmware or binary version (`fw`, left out when empty).
    pub fw: &'a str,
}

/// What this edge can run: a configuration beyond it is refused whole.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most probes.
    pub max_probes: usize,
    /// Most threshold rules.
    pub max_rules: usize,
    /// Whether the prober runs this probe (kind, sizes); `Err` names why not.
    pub probe: fn(&ProbeSpec<'_>) -> Result<(), &'static str>,
}

impl Limits {
    /// Check `cfg` against the limits.
    pub fn check(&self, cfg: &EdgeConfig<'_>) -> Result<(), Reason> {
        let too_many = |what: &str, n: usize, max: usize| {
            let mut r = Reason::new();
            push(&mut r, &["too many ", what, " ("]);
            push_u32(&mut r, n as u32);
            push(&mut r, &[" > "]);
            push_u32(&mut r, max as u32);
            push(&mut r, &[")"]);
            r
        };
        if cfg.probes.len() > self.max_probes {
            return Err(too_many("probes", cfg.probes.len(), self.max_probes));
        }
        if cfg.rules.len() > self.max_rules {
            return Err(too_many("rules", cfg.rules.len(), self.max_rules));
        }
        for p in cfg.probes.iter() {
            (self.probe)(&p).map_err(|why| {
                let mut r = Reason::new();
                push(&mut r, &["probe "]);
                push_u32(&mut r, u32::from(p.id.0));
                push(&mut r, &[": ", why]);
                r
            })?;
        }
        Ok(())
    }
}

/// Any probe is fine.
pub fn any_probe(_: &ProbeSpec<'_>) -> Result<(), &'static str> {
    Ok(())
}

/// Append `parts` to `out`, cut at its capacity (on a character boundary). No `core::fmt`:
/// it would cost kilobytes of firmware flash.
pub fn push<const N: usize>(out: &mut String<N>, parts: &[&str]) {
    for part in parts {
        for c in part.chars() {
            if out.push(c).is_err() {
                return;
            }
        }
    }
}

/// Append `v` in decimal.
pub fn push_u32<const N: usize>(out: &mut String<N>, v: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    push(out, &[core::str::from_utf8(&digits[i..]).unwrap_or("")]);
}

/// The reason of a decoding error (as its `Display` says it, without `core::fmt`).
pub fn wire_reason(e: &qos_wire::codec::WireError) -> Reason {
    use qos_wire::codec::WireError as W;
    let mut r = Reason::new();
    match e {
        W::Truncated => push(&mut r, &["message truncated"]),
        W::Malformed => push(&mut r, &["malformed CBOR for this message"]),
        W::UnsupportedVersion(v) => {
            push(&mut r, &["unsupported wire version "]);
            push_u32(&mut r, u32::from(*v));
        }
        W::Invalid(what) => push(&mut r, &["invalid value: ", what]),
        W::TooMany => push(&mut r, &["more items than capacity"]),
        other => push(&mut r, &[other.reason()]),
    }
    r
}

fn text(s: &str) -> Reason {
    let mut r = Reason::new();
    push(&mut r, &[s]);
    r
}

/// Why a [`Centre`] could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CentreError {
    /// Name, region or version empty, too long or not `[A-Za-z0-9._-]`.
    Identity,
    /// Lifetime below 60 s.
    Lifetime,
}

/// What the driver learns from [`Centre::handle_answer`].
#[derive(Debug)]
pub enum CentreEvent<'b> {
    /// Registered with the current broker (location `rd/<n>`, empty if none given).
    Registered,
    /// Registration or refresh failed; retried later.
    RegistrationFailed(Code),
    /// The lease was refreshed.
    Refreshed,
    /// A new valid configuration: apply it, persist its bytes in [`Slot::Config`], then call
    /// [`Centre::applied`].
    Apply {
        /// The configuration (borrowing the driver's buffer).
        config: EdgeConfig<'b>,
        /// Its CBOR bytes, to persist.
        bytes: &'b [u8],
    },
    /// A configuration was refused; the old one stays. A report is queued.
    Rejected {
        /// Its etag (0 if it could not be read).
        etag: u32,
        /// Why.
        reason: Reason,
    },
    /// 2.03 (or the etag in force again): nothing changes.
    Unchanged,
    /// 4.04: no central configuration for this edge; the local one stays.
    NoCentralConfig,
    /// The poll failed (code of the answer); retried at the next poll.
    PollFailed(Code),
    /// The report was answered (2.04 expected).
    Reported(Code),
    /// The registration was removed.
    Deregistered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Lease(LeaseOp),
    Get,
    Report,
    Delete,
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CentreStats {
    /// Registrations that succeeded.
    pub registrations: u32,
    /// Configuration polls sent.
    pub polls: u32,
    /// Configurations applied.
    pub applied: u32,
    /// Configurations refused.
    pub rejected: u32,
    /// Control exchanges that failed (no answer).
    pub failures: u32,
}

/// The control conversation of one edge with its current broker.
#[derive(Debug)]
pub struct Centre<A> {
    name: String<MAX_NAME>,
    region: String<MAX_NAME>,
    fw: String<MAX_NAME>,
    id: EdgeId,
    config: CentreConfig,
    lease: Lease<A>,
    inflight: Option<(ExchangeId, Pending, A)>,
    poll_at: Option<u64>,
    applied: Option<u32>,
    report: Option<(u32, bool, Reason)>,
    /// A configuration handed to the driver, waiting for [`Centre::applied`].
    applying: Option<u32>,
    stopping: bool,
    stats: CentreStats,
}

fn name_ok(s: &str, may_be_empty: bool) -> bool {
    (may_be_empty || !s.is_empty())
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl<A: Copy + Eq> Centre<A> {
    /// The conversation of `identity`; `applied` is the etag of the central configuration the
    /// edge starts with (loaded from storage), if any. Registration is due at once.
    pub fn new(
        identity: Identity<'_>,
        config: CentreConfig,
        applied: Option<u32>,
    ) -> Result<Self, CentreError> {
        if !name_ok(identity.name, false)
            || !name_ok(identity.region, false)
            || !name_ok(identity.fw, true)
        {
            return Err(CentreError::Identity);
        }
        if config.lifetime_s < MIN_LIFETIME {
            return Err(CentreError::Lifetime);
        }
        let s = |v: &str| {
            let mut out = String::new();
            let _ = out.push_str(v);
            out
        };
        Ok(Centre {
            name: s(identity.name),
            region: s(identity.region),
            fw: s(identity.fw),
            id: identity.id,
            config,
            lease: Lease::new(config.lifetime_s, config.retry_ms),
            inflight: None,
            // First poll at start (after the registration attempt): a peer that is no
            // directory still serves the configuration.
            poll_at: Some(0),
            applied,
            report: None,
            applying: None,
            stopping: false,
            stats: CentreStats::default(),
        })
    }

    /// The etag of the central configuration in force, if any.
    pub fn applied_etag(&self) -> Option<u32> {
        self.applied
    }

    /// The lease.
    pub fn lease(&self) -> &Lease<A> {
        &self.lease
    }

    /// Counters.
    pub fn stats(&self) -> CentreStats {
        self.stats
    }

    /// Start what is due: call after the uplink's `poll`, after each answer and at
    /// [`Centre::poll_timeout`].
    pub fn poll<const B: usize, const N: usize, const REC: usize>(
        &mut self,
        now: u64,
        uplink: &mut Uplink<A, B, N, REC>,
    ) {
        while let Some(failed) = uplink.poll_control_failure() {
            if let Some((id, what, _)) = self.inflight {
                if id == failed {
                    self.inflight = None;
                    self.stats.failures += 1;
                    debug!("control exchange failed without an answer");
                    self.failed(now, what);
                }
            }
        }
        if self.inflight.is_some() || self.stopping {
            return;
        }
        let broker = uplink.broker();
        let what = if let Some(op) = self.lease.due(now, broker) {
            Pending::Lease(op)
        } else if self.report.is_some() {
            Pending::Report
        } else if self.poll_due(now) {
            Pending::Get
        } else {
            return;
        };
        let sent = match what {
            Pending::Lease(LeaseOp::Register) => self.send_register(now, uplink),
            Pending::Lease(LeaseOp::Refresh) => {
                let loc = self.lease.location().unwrap_or("");
                uplink.control_request(now, Code::POST, |w| w.uri_path(loc))
            }
            Pending::Report => self.send_report(now, uplink),
            Pending::Get => self.send_get(now, uplink),
            Pending::Delete => return,
        };
        match sent {
            Ok(id) => {
                self.inflight = Some((id, what, broker));
                match what {
                    Pending::Get => self.stats.polls += 1,
                    Pending::Report => self.report = None,
                    _ => {}
                }
            }
            // Busy: the uplink holds new batches until this can start; retry at next poll.
            Err(e) => debug!("control request waits: {:?}", e),
        }
    }

    fn poll_due(&self, now: u64) -> bool {
        self.config.config_poll_ms > 0
            && self.applying.is_none()
            && self.poll_at.is_some_and(|t| now >= t)
    }

    fn failed(&mut self, now: u64, what: Pending) {
        match what {
            Pending::Lease(op) => self.lease.failed(now, op),
            Pending::Get => self.poll_at = Some(now + self.config.config_poll_ms),
            Pending::Report | Pending::Delete => {}
        }
    }

    fn send_register<const B: usize, const N: usize, const REC: usize>(
        &self,
        now: u64,
        uplink: &mut Uplink<A, B, N, REC>,
    ) -> Result<ExchangeId, qos_coap::RequestError> {
        let text_q = |w: &mut MessageWriter<'_>, key: &str, v: &str| {
            let mut q: String<72> = String::new();
            push(&mut q, &[key, v]);
            w.option(option::URI_QUERY, q.as_bytes())
        };
        let num_q = |w: &mut MessageWriter<'_>, key: &str, v: u32| {
            let mut q: String<16> = String::new();
            push(&mut q, &[key]);
            push_u32(&mut q, v);
            w.option(option::URI_QUERY, q.as_bytes())
        };
        uplink.control_request(now, Code::POST, |w| {
            w.uri_path(DIRECTORY_PATH)?;
            w.uint_option(option::CONTENT_FORMAT, LINK_FORMAT)?;
            text_q(w, "ep=", &self.name)?;
            text_q(w, "d=", &self.region)?;
            num_q(w, "lt=", self.config.lifetime_s)?;
            num_q(w, "id=", self.id.0)?;
            if !self.fw.is_empty() {
                text_q(w, "fw=", &self.fw)?;
            }
            if let Some(etag) = self.applied {
                num_q(w, "cfg=", etag)?;
            }
            w.payload(EDGE_LINKS.as_bytes())
        })
    }

    fn id_query(&self) -> String<16> {
        let mut q = String::new();
        push(&mut q, &["id="]);
        push_u32(&mut q, self.id.0);
        q
    }

    fn send_get<const B: usize, const N: usize, const REC: usize>(
        &self,
        now: u64,
        uplink: &mut Uplink<A, B, N, REC>,
    ) -> Result<ExchangeId, qos_coap::RequestError> {
        let q = self.id_query();
        let etag = self.applied;
        uplink.control_request(now, Code::GET, |w| {
            if let Some(etag) = etag {
                w.option(option::ETAG, &etag.to_be_bytes())?;
            }
            w.uri_path(CONFIG_PATH)?;
            w.option(option::URI_QUERY, q.as_bytes())
        })
    }

    fn send_report<const B: usize, const N: usize, const REC: usize>(
        &self,
        now: u64,
        uplink: &mut Uplink<A, B, N, REC>,
    ) -> Result<ExchangeId, qos_coap::RequestError> {
        let Some((etag, accepted, reason)) = &self.report else {
            return Err(qos_coap::RequestError::InvalidCode);
        };
        let mut body = [0u8; 8 + MAX_REASON];
        let n = ConfigReport {
            etag: *etag,
            accepted: *accepted,
            reason,
        }
        .encode(&mut body)
        .unwrap_or(0);
        let q = self.id_query();
        uplink.control_request(now, Code::POST, |w| {
            w.uri_path(CONFIG_PATH)?;
            w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
            w.option(option::URI_QUERY, q.as_bytes())?;
            w.payload(&body[..n])
        })
    }

    /// The answer to a control exchange (from [`Received::Control`](crate::uplink::Received::Control)).
    /// A configuration is copied into `buf` (the driver's, about 1 KiB) and validated against
    /// `limits`. Returns `None` for an exchange that is not this conversation's.
    pub fn handle_answer<'b>(
        &mut self,
        now: u64,
        exchange: ExchangeId,
        message: &Message<'_>,
        buf: &'b mut [u8],
        limits: &Limits,
    ) -> Option<CentreEvent<'b>> {
        let (id, what, broker) = self.inflight?;
        if id != exchange {
            return None;
        }
        self.inflight = None;
        let code = message.code();
        Some(match what {
            Pending::Lease(op) => {
                if op == LeaseOp::Register && code == Code::CREATED {
                    self.lease.registered(
                        now,
                        broker,
                        message.options_numbered(option::LOCATION_PATH),
                    );
                    self.stats.registrations += 1;
                    info!("registered as {}", self.lease.location().unwrap_or(""));
                    // Poll the configuration right after each (re)registration.
                    if self.config.config_poll_ms > 0 {
                        self.poll_at = Some(now);
                    }
                    CentreEvent::Registered
                } else if op == LeaseOp::Refresh && code == Code::CHANGED {
                    self.lease.refreshed(now);
                    CentreEvent::Refreshed
                } else if op == LeaseOp::Refresh && code == Code::NOT_FOUND {
                    self.lease.forgotten(now);
                    warn!("registration forgotten by the directory; registering again");
                    CentreEvent::RegistrationFailed(code)
                } else {
                    self.lease.failed(now, op);
                    warn!(
                        "registration answered {}.{:02}",
                        code.class(),
                        code.detail()
                    );
                    CentreEvent::RegistrationFailed(code)
                }
            }
            Pending::Get => {
                self.poll_at = Some(now + self.config.config_poll_ms);
                self.on_config(message, buf, limits)
            }
            Pending::Report => CentreEvent::Reported(code),
            Pending::Delete => {
                self.lease.clear();
                CentreEvent::Deregistered
            }
        })
    }

    fn on_config<'b>(
        &mut self,
        message: &Message<'_>,
        buf: &'b mut [u8],
        limits: &Limits,
    ) -> CentreEvent<'b> {
        let code = message.code();
        if code == Code::VALID {
            return CentreEvent::Unchanged;
        }
        if code == Code::NOT_FOUND {
            return CentreEvent::NoCentralConfig;
        }
        if code != Code::CONTENT {
            return CentreEvent::PollFailed(code);
        }
        let option_etag = message
            .option(option::ETAG)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes);
        if option_etag.is_some() && option_etag == self.applied {
            return CentreEvent::Unchanged;
        }
        let payload = message.payload();
        let more_blocks = message
            .uint_option(option::BLOCK2)
            .is_some_and(|b| b & 0x8 != 0);
        if more_blocks || payload.len() > buf.len() {
            return self.reject(option_etag.unwrap_or(0), text("too large"));
        }
        if message
            .content_format()
            .is_some_and(|cf| cf != content_format::CBOR)
        {
            return self.reject(option_etag.unwrap_or(0), text("content-format must be 60"));
        }
        let bytes = &mut buf[..payload.len()];
        bytes.copy_from_slice(payload);
        let bytes: &'b [u8] = bytes;
        let config = match EdgeConfig::decode(bytes) {
            Ok(c) => c,
            Err(e) => return self.reject(option_etag.unwrap_or(0), wire_reason(&e)),
        };
        if Some(config.etag) == self.applied {
            return CentreEvent::Unchanged;
        }
        if let Err(why) = limits.check(&config) {
            return self.reject(config.etag, why);
        }
        self.applying = Some(config.etag);
        CentreEvent::Apply { config, bytes }
    }

    fn reject<'b>(&mut self, etag: u32, why: Reason) -> CentreEvent<'b> {
        warn!("configuration {} refused: {}", etag, why.as_str());
        self.stats.rejected += 1;
        self.report = Some((etag, false, why.clone()));
        CentreEvent::Rejected { etag, reason: why }
    }

    /// The driver applied (`Ok`) or could not apply (`Err(reason)`) the configuration
    /// `etag` handed out with [`CentreEvent::Apply`]; a report follows.
    pub fn applied(&mut self, etag: u32, result: Result<(), &str>) {
        self.applying = None;
        match result {
            Ok(()) => {
                self.applied = Some(etag);
                self.stats.applied += 1;
                info!("configuration {} applied", etag);
                self.report = Some((etag, true, Reason::new()));
            }
            Err(why) => {
                self.stats.rejected += 1;
                warn!("configuration {} refused: {}", etag, why);
                self.report = Some((etag, false, text(why)));
            }
        }
    }

    /// Clean stop: remove the registration (`DELETE /rd/<n>`), best effort. Returns whether a
    /// request was queued (flush the uplink and wait briefly for its answer). Nothing else is
    /// sent afterwards.
    pub fn stop<const B: usize, const N: usize, const REC: usize>(
        &mut self,
        now: u64,
        uplink: &mut Uplink<A, B, N, REC>,
    ) -> bool {
        self.stopping = true;
        if let Some((id, _, _)) = self.inflight.take() {
            uplink.cancel_control(id);
        }
        let broker = uplink.broker();
        if !self.lease.registered_with(broker) {
            return false;
        }
        let Some(loc) = self.lease.location() else {
            return false;
        };
        match uplink.control_request(now, Code::DELETE, |w| w.uri_path(loc)) {
            Ok(id) => {
                self.inflight = Some((id, Pending::Delete, broker));
                true
            }
            Err(_) => false,
        }
    }

    /// Whether a `DELETE` from [`Centre::stop`] is still waiting for its answer.
    pub fn stopping(&self) -> bool {
        self.stopping && self.inflight.is_some()
    }

    /// Earliest time [`Centre::poll`] must run again, if any (answers also need a poll).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.inflight.is_some() || self.stopping {
            return None;
        }
        let poll = if self.config.config_poll_ms > 0 && self.applying.is_none() {
            self.poll_at
        } else {
            None
        };
        let lease = Some(self.lease.deadline());
        let report = self.report.as_ref().map(|_| 0);
        [poll, lease, report].into_iter().flatten().min()
    }
}

/// Load the central configuration persisted in [`Slot::Config`] into `buf`, validated against
/// `limits` like a received one. `None` when there is none or it is unusable (logged).
pub fn load_config<'b, S: Storage>(
    storage: &mut S,
    buf: &'b mut [u8],
    limits: &Limits,
) -> Option<(EdgeConfig<'b>, &'b [u8])> {
    let bytes: &'b [u8] = match storage.read(Slot::Config, buf) {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(_) => {
            warn!("stored configuration unreadable; using the local one");
            return None;
        }
    };
    match EdgeConfig::decode(bytes) {
        Ok(c) if limits.check(&c).is_ok() => Some((c, bytes)),
        _ => {
            warn!("stored configuration invalid; using the local one");
            None
        }
    }
}
