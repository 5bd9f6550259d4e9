//! Incidents as serve's engine sees them: the demo reads `GET /api/v1/incidents` (what the
//! dashboard shows) and `GET /api/v1/events` (broker silences) about once a second and prints
//! what is new — an incident opening with its top-ranked cause and that cause's evidence, a
//! change of the top cause as more data comes in, the resolution — and each broker event.
//!
//! The rest of the demo sees only [`IncidentSource`]; the demo decides nothing itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;

use super::{api, Console};

/// Something that reports incidents and their ranked causes as they happen.
pub trait IncidentSource {
    /// Looks for news (called about once a second) and prints it on `console`; `broker`
    /// names a broker by the address serve sees it at.
    fn tick(&mut self, console: &Console, broker: &dyn Fn(&str) -> String);
    /// Incidents opened so far.
    fn opened(&self) -> usize;
}

/// What was printed about one incident.
#[derive(Debug, Default)]
struct Printed {
    top: Option<String>,
    resolved: bool,
}

/// Reads serve's incidents and broker events (see the module documentation).
#[derive(Debug)]
pub struct ServeIncidents {
    api: SocketAddr,
    incidents: BTreeMap<i64, Printed>,
    last_event: i64,
    last_error: Option<String>,
}

/// Incidents read per poll (the newest).
const POLL_LIMIT: usize = 100;

impl ServeIncidents {
    /// Reads serve's API at `api`.
    pub fn new(api: SocketAddr) -> ServeIncidents {
        ServeIncidents {
            api,
            incidents: BTreeMap::new(),
            last_event: 0,
            last_error: None,
        }
    }

    fn error(&mut self, console: &Console, e: String) {
        if self.last_error.as_ref() != Some(&e) {
            console.say(&format!("cannot read from serve: {e}"));
        }
        self.last_error = Some(e);
    }
}

/// `top cause: NAME (score S, METRIC) — EVIDENCE; EVIDENCE` of an incident's JSON, and the
/// cause's name.
pub fn top_cause(incident: &Value) -> (Option<String>, String) {
    let Some(c) = incident["causes"].as_array().and_then(|c| c.first()) else {
        return (None, "top cause: none yet (no component data)".into());
    };
    let name = c["component"].as_str().unwrap_or("?").to_string();
    let metric = c["metric"]
        .as_str()
        .map(|m| format!(", metric {m}"))
        .unwrap_or_default();
    let evidence: Vec<&str> = c["evidence"]
        .as_array()
        .map(|e| e.iter().filter_map(Value::as_str).take(2).collect())
        .unwrap_or_default();
    let text = format!(
        "top cause: {name} (score {:.2}{metric}){}",
        c["score"].as_f64().unwrap_or(0.0),
        if evidence.is_empty() {
            String::new()
        } else {
            format!(" — {}", evidence.join("; "))
        }
    );
    (Some(name), text)
}

fn describe(i: &Value) -> String {
    let subject = i["subject"]["name"].as_str().unwrap_or("?");
    let kind = i["subject"]["kind"].as_str().unwrap_or("service");
    let regions: Vec<&str> = i["degraded_regions"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let phases: Vec<&str> = i["phases"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["phase"].as_str()).collect())
        .unwrap_or_default();
    format!(
        "{kind} {subject} {}{}{}",
        i["status"].as_str().unwrap_or("?"),
        if regions.is_empty() {
            String::new()
        } else {
            format!(", degraded regions: {}", regions.join(", "))
        },
        if phases.is_empty() {
            String::new()
        } else {
            format!(", phases: {}", phases.join(", "))
        }
    )
}

impl IncidentSource for ServeIncidents {
    fn tick(&mut self, console: &Console, broker: &dyn Fn(&str) -> String) {
        let doc = match api::get_json(self.api, &format!("/api/v1/incidents?limit={POLL_LIMIT}")) {
            Ok(doc) => doc,
            Err(e) => return self.error(console, e),
        };
        let mut list: Vec<&Value> = doc["incidents"]
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        list.sort_by_key(|i| i["id"].as_i64().unwrap_or(0));
        for i in list {
            let Some(id) = i["id"].as_i64() else {
                continue;
            };
            let (top, cause) = top_cause(i);
            let resolved = i["resolved_at"].as_u64();
            let p = self.incidents.entry(id).or_insert_with(|| {
                console.say(&format!("incident {id} opened: {} — {cause}", describe(i)));
                Printed {
                    top: top.clone(),
                    resolved: false,
                }
            });
            if p.top != top {
                console.say(&format!("incident {id} {cause}"));
                p.top = top;
            }
            if let (Some(end), false) = (resolved, p.resolved) {
                p.resolved = true;
                let opened = i["opened_at"].as_u64().unwrap_or(end);
                console.say(&format!(
                    "incident {id} resolved after {} s; final {cause}",
                    end.saturating_sub(opened)
                ));
            }
        }
        let doc = match api::get_json(self.api, "/api/v1/events") {
            Ok(doc) => doc,
            Err(e) => return self.error(console, e),
        };
        self.last_error = None;
        let mut events: Vec<&Value> = doc["events"]
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        events.sort_by_key(|e| e["id"].as_i64().unwrap_or(0));
        for e in events {
            let id = e["id"].as_i64().unwrap_or(0);
            if id <= self.last_event {
                continue;
            }
            self.last_event = id;
            let addr = e["broker"].as_str().unwrap_or("?");
            console.say(&format!(
                "serve event {}: {} ({addr}) — {}",
                e["kind"].as_str().unwrap_or("?"),
                broker(addr),
                e["detail"].as_str().unwrap_or("")
            ));
        }
    }

    fn opened(&self) -> usize {
        self.incidents.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_top_cause_line_names_the_cause_and_its_evidence() {
        let i = json!({"causes": [{"component": "db", "score": 1.234, "metric": "query_latency_ms",
                                    "evidence": ["a up", "b", "c"]}]});
        let (name, text) = top_cause(&i);
        assert_eq!(name.as_deref(), Some("db"));
        assert_eq!(
            text,
            "top cause: db (score 1.23, metric query_latency_ms) — a up; b"
        );
        assert_eq!(top_cause(&json!({"causes": []})).0, None);
    }
}
