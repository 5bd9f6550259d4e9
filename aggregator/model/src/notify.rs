//! Webhook notifications: the JSON documents ([`notification`]), a sans-IO delivery core
//! ([`Notifier`]: queue, exponential back-off, attempt limit, delivery log) and a small std
//! driver ([`http`]) that POSTs over a `TcpStream`.
//!
//! The core never reads a clock or touches a socket: the caller passes `now` (Unix seconds),
//! takes due attempts with [`Notifier::poll_attempt`], delivers them as it likes and reports
//! with [`Notifier::on_result`]. A 2xx status is delivered; anything else (another status, a
//! connection error) is retried after `initial_s · factor^(attempt−1)` seconds (at most
//! `max_delay_s`) until `max_attempts` attempts were made, then dropped — and logged as such.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};

use crate::incident::Level;
use crate::monitor::{Event, Incident, Subject};
use crate::slo::{Alert, AlertChange};

/// The JSON notification of an event, for those that notify: incidents opened, updated and
/// resolved; SLO alerts raised and cleared; flapping started and stopped. `None` for others
/// (state changes are visible in the API; incidents carry them).
pub fn notification(e: &Event) -> Option<Value> {
    Some(match e {
        Event::IncidentOpened(i) => {
            json!({"type": "incident_opened", "incident": incident_json(i)})
        }
        Event::IncidentUpdated(i) => {
            json!({"type": "incident_updated", "incident": incident_json(i)})
        }
        Event::IncidentResolved(i) => {
            json!({"type": "incident_resolved", "incident": incident_json(i)})
        }
        Event::Alert(AlertChange::Raised(a)) => {
            json!({"type": "slo_alert_raised", "alert": alert_json(a)})
        }
        Event::Alert(AlertChange::Cleared(a)) => {
            json!({"type": "slo_alert_cleared", "alert": alert_json(a)})
        }
        Event::FlappingStarted {
            service,
            changes,
            at,
        } => json!({"type": "flapping_started", "service": service, "changes": changes, "at": at}),
        Event::FlappingStopped(s) => json!({"type": "flapping_stopped", "service": s.service,
            "status": s.status.name(), "at": s.slot}),
        _ => return None,
    })
}

fn level(l: Level) -> &'static str {
    match l {
        Level::Service => "service",
        Level::Phase => "phase",
        Level::Region => "region",
        Level::Component => "component",
        _ => "metric",
    }
}

/// An incident as JSON.
pub fn incident_json(i: &Incident) -> Value {
    let (kind, name) = match &i.subject {
        Subject::Service(s) => ("service", s.as_str()),
        Subject::Component(c) => ("component", c.as_str()),
        #[allow(unreachable_patterns)]
        _ => ("other", i.subject.name()),
    };
    let b = i.breakdown.as_ref();
    json!({
        "id": i.id,
        "subject": {"kind": kind, "name": name},
        "status": i.status.name(),
        "worst": i.worst.name(),
        "opened_at": i.opened_at,
        "updated_at": i.updated_at,
        "resolved_at": i.resolved_at,
        "affected": i.affected,
        "phases": b.map(|b| b.phase_weights.iter().map(|(p, w)| json!({"phase": p.name(), "weight": w})).collect::<Vec<_>>()),
        "degraded_regions": b.map(|b| b.degraded_regions()),
        "causes": i.causes.iter().take(5).map(|c| json!({
            "component": c.component,
            "kind": c.kind.map(|k| k.name()),
            "region": c.region,
            "score": c.score,
            "rca": c.rca,
            "prior": c.prior,
            "metric": c.metric,
            "onset": c.onset,
            "evidence": c.evidence,
        })).collect::<Vec<_>>(),
        "drill_down": i.drill.iter().map(|s| json!({
            "level": level(s.level),
            "name": s.name,
            "detail": s.detail,
            "series": s.series.iter().map(|r| json!({"component": r.component, "metric": r.metric})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// An SLO alert as JSON.
pub fn alert_json(a: &Alert) -> Value {
    let ev = |e: &crate::slo::BurnEvidence| {
        json!({"at": e.at, "long_burn": e.long_burn, "short_burn": e.short_burn,
               "long_events": e.long.0, "long_bad": e.long.1,
               "short_events": e.short.0, "short_bad": e.short.1})
    };
    json!({
        "service": a.service,
        "sli": a.sli.name(),
        "severity": a.rule.severity.name(),
        "long_s": a.rule.long_s,
        "short_s": a.rule.short_s,
        "factor": a.rule.factor,
        "raised_at": a.raised_at,
        "raised_with": ev(&a.raised_with),
        "last": ev(&a.last),
    })
}

/// Retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt, seconds.
    pub initial_s: u64,
    /// Each further delay is this many times the previous one.
    pub factor: u64,
    /// Longest delay, seconds.
    pub max_delay_s: u64,
    /// Attempts before giving up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_s: 5,
            factor: 2,
            max_delay_s: 600,
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> u64 {
        let mut d = self.initial_s;
        for _ in 1..n {
            d = d.saturating_mul(self.factor);
            if d >= self.max_delay_s {
                break;
            }
        }
        d.min(self.max_delay_s)
    }
}

/// One delivery attempt to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The notification.
    pub id: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The JSON body.
    pub body: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A 2xx status.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Another status, or no answer.
    Failed {
        /// The status, if one came.
        status: Option<u16>,
        /// What happened.
        reason: String,
    },
}

/// One line of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLogEntry {
    /// The notification.
    pub id: u64,
    /// The attempt (1-based).
    pub attempt: u32,
    /// When it ended, Unix seconds.
    pub at: u64,
    /// How.
    pub outcome: Outcome,
    /// When the next attempt is due, if one will be made.
    pub next_attempt: Option<u64>,
    /// Whether the notification was dropped after this attempt (attempts exhausted).
    pub gave_up: bool,
}

#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    body: String,
    attempts: u32,
    due: u64,
}

/// The sans-IO webhook delivery core.
#[derive(Debug)]
pub struct Notifier {
    policy: RetryPolicy,
    queue: VecDeque<Pending>,
    in_flight: BTreeMap<u64, Pending>,
    log: VecDeque<DeliveryLogEntry>,
    next_id: u64,
    max_log: usize,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new(RetryPolicy::default())
    }
}

impl Notifier {
    /// A notifier with `policy`, keeping the last 1000 log entries.
    pub fn new(policy: RetryPolicy) -> Notifier {
        Notifier {
            policy,
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            log: VecDeque::new(),
            next_id: 1,
            max_log: 1000,
        }
    }

    /// Keep at most `n` delivery log entries (the oldest go first).
    pub fn with_log_limit(mut self, n: usize) -> Notifier {
        self.max_log = n;
        self
    }

    /// Queue a notification; due at once. Returns its id.
    pub fn push(&mut self, now: u64, body: &Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Pending {
            id,
            body: body.to_string(),
            attempts: 0,
            due: now,
        });
        id
    }

    /// Queue the notifications of `events` (those that notify). Returns how many.
    pub fn push_events(&mut self, now: u64, events: &[Event]) -> usize {
        events
            .iter()
            .filter_map(notification)
            .map(|v| self.push(now, &v))
            .count()
    }

    /// The next due attempt, oldest first; the notification stays in flight until
    /// [`Notifier::on_result`].
    pub fn poll_attempt(&mut self, now: u64) -> Option<Attempt> {
        let pos = self.queue.iter().position(|p| p.due <= now)?;
        let mut p = self.queue.remove(pos)?;
        p.attempts += 1;
        let a = Attempt {
            id: p.id,
            attempt: p.attempts,
            body: p.body.clone(),
        };
        self.in_flight.insert(p.id, p);
        Some(a)
    }

    /// Report an attempt's result: `Ok(status)` for an HTTP answer, `Err(reason)` for none.
    pub fn on_result(&mut self, id: u64, now: u64, result: Result<u16, String>) {
        let Some(mut p) = self.in_flight.remove(&id) else {
            return;
        };
        let outcome = match result {
            Ok(s) if (200..300).contains(&s) => Outcome::Delivered { status: s },
            Ok(s) => Outcome::Failed {
                status: Some(s),
                reason: format!("HTTP status {s}"),
            },
            Err(reason) => Outcome::Failed {
                status: None,
                reason,
            },
        };
        let failed = matches!(outcome, Outcome::Failed { .. });
        let gave_up = failed && p.attempts >= self.policy.max_attempts;
        let next_attempt = (failed && !gave_up).then(|| now + self.policy.delay(p.attempts));
        self.log.push_back(DeliveryLogEntry {
            id,
            attempt: p.attempts,
            at: now,
            outcome,
            next_attempt,
            gave_up,
        });
        while self.log.len() > self.max_log {
            self.log.pop_front();
        }
        if let Some(due) = next_attempt {
            p.due = due;
            self.queue.push_back(p);
        }
    }

    /// When the next queued attempt is due, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.queue.iter().map(|p| p.due).min()
    }

    /// Notifications queued or in flight.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.in_flight.len()
    }

    /// The delivery log, oldest first.
    pub fn log(&self) -> impl Iterator<Item = &DeliveryLogEntry> {
        self.log.iter()
    }
}

pub mod http {
    //! The std driver: an HTTP/1.1 POST of each due notification over a `TcpStream`
    //! (plain HTTP; put a TLS-terminating relay in front for HTTPS endpoints).

    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    use super::Notifier;

    /// Why a webhook could not be set up or reached.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum WebhookError {
        /// The URL is not `http://host[:port][/path]`.
        #[error("webhook URL `{0}`: expected http://host[:port][/path]")]
        Url(String),
        /// Connecting, sending or receiving failed.
        #[error("webhook I/O: {0}")]
        Io(#[from] std::io::Error),
        /// The answer is not HTTP.
        #[error("webhook answered something that is not HTTP")]
        Protocol,
    }

    /// A webhook endpoint.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Webhook {
        /// Host name or address.
        pub host: String,
        /// Port.
        pub port: u16,
        /// Path (with query).
        pub path: String,
        /// Connect, write and read timeout.
        pub timeout: Duration,
    }

    impl Webhook {
        /// Parse `http://host[:port][/path]` (10 s timeout).
        pub fn parse(url: &str) -> Result<Webhook, WebhookError> {
            let bad = || WebhookError::Url(url.to_string());
            let rest = url.strip_prefix("http://").ok_or_else(bad)?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                let (h, after) = v6.split_once(']').ok_or_else(bad)?;
                let port = match after.strip_prefix(':') {
                    Some(p) => p.parse().map_err(|_| bad())?,
                    None if after.is_empty() => 80,
                    None => return Err(bad()),
                };
                (h, port)
            } else {
                match authority.rsplit_once(':') {
                    Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                    None => (authority, 80),
                }
            };
            if host.is_empty() {
                return Err(bad());
            }
            Ok(Webhook {
                host: host.into(),
                port,
                path: path.into(),
                timeout: Duration::from_secs(10),
            })
        }

        /// POST `body` as JSON; the answer's status code.
        pub fn post(&self, body: &str) -> Result<u16, WebhookError> {
            let addr = (self.host.as_str(), self.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| WebhookError::Url(self.host.clone()))?;
            let mut s = TcpStream::connect_timeout(&addr, self.timeout)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            let host = if self.host.contains(':') {
                format!("[{}]:{}", self.host, self.port)
            } else {
                format!("{}:{}", self.host, self.port)
            };
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\nUser-Agent: qos-model\r\n\r\n",
                self.path,
                body.len()
            );
            s.write_all(head.as_bytes())?;
            s.write_all(body.as_bytes())?;
            s.flush()?;
            // Read up to the end of the status line.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 512];
            while !buf.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut chunk)?;
                if n == 0 || buf.len() > 8192 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let line = std::str::from_utf8(&buf)
                .ok()
                .and_then(|t| t.split("\r\n").next())
                .ok_or(WebhookError::Protocol)?;
            let mut parts = line.split(' ');
            match (parts.next(), parts.next()) {
                (Some(v), Some(code)) if v.starts_with("HTTP/1.") => {
                    code.parse().map_err(|_| WebhookError::Protocol)
                }
                _ => Err(WebhookError::Protocol),
            }
        }
    }

    /// Make every attempt due at `now` against `hook` and report the results; returns the
    /// number of attempts made.
    pub fn deliver_due(notifier: &mut Notifier, hook: &Webhook, now: u64) -> usize {
        let mut n = 0;
        while let Some(a) = notifier.poll_attempt(now) {
            let r = hook.post(&a.body).map_err(|e| e.to_string());
            notifier.on_result(a.id, now, r);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_and_give_up() {
        let p = RetryPolicy {
            initial_s: 5,
            factor: 2,
            max_delay_s: 30,
            max_attempts: 4,
        };
        assert_eq!([1, 2, 3, 4, 5].map(|n| p.delay(n)), [5, 10, 20, 30, 30]);
        let mut n = Notifier::new(p);
        let id = n.push(100, &json!({"x": 1}));
        assert_eq!(n.poll_timeout(), Some(100));
        let mut now = 100;
        for k in 1..=4u32 {
            assert!(n.poll_attempt(now - 1).is_none() || k == 1);
            let a = n.poll_attempt(now).expect("due");
            assert_eq!((a.id, a.attempt), (id, k));
            assert_eq!(a.body, r#"{"x":1}"#);
            n.on_result(id, now, Err("refused".into()));
            if k < 4 {
                now = n.poll_timeout().unwrap();
            }
        }
        assert_eq!(n.pending(), 0);
        let log: Vec<_> = n.log().collect();
        assert_eq!(log.len(), 4);
        assert_eq!(
            log.iter().map(|e| e.next_attempt).collect::<Vec<_>>(),
            vec![Some(105), Some(115), Some(135), None]
        );
        assert!(log[3].gave_up && !log[2].gave_up);
    }

    #[test]
    fn default_notifier_logs_and_the_log_is_bounded() {
        let mut n = Notifier::default().with_log_limit(2);
        for i in 0..3 {
            let id = n.push(i, &json!(i));
            let a = n.poll_attempt(i).unwrap();
            assert_eq!(a.id, id);
            n.on_result(id, i, Ok(204));
        }
        let ids: Vec<u64> = n.log().map(|e| e.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(Notifier::default().push(0, &json!({})), 1);
    }

    #[test]
    fn urls() {
        let w = http::Webhook::parse("http://example.test:8081/hook?x=1").unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.path.as_str()),
            ("example.test", 8081, "/hook?x=1")
        );
        let w = http::Webhook::parse("http://[::1]:9/").unwrap();
        assert_eq!((w.host.as_str(), w.port), ("::1", 9));
        assert_eq!(http::Webhook::parse("http://h").unwrap().port, 80);
        assert!(http::Webhook::parse("https://h/").is_err());
        assert!(http::Webhook::parse("http://h:x/").is_err());
    }
}
