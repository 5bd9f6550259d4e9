//! The service model at run time: the `qos-model` engine fed from the store.
//!
//! [`Services`] is shared by the HTTP workers ([`crate::http::services_api`]) and the monitor
//! thread ([`runner`]). It holds the engine ([`qos_model::Monitor`]) behind a mutex and a
//! store connection of its own (the tables of [`db`]). The monitor thread hands each new
//! stored record to the engine (summaries → `ingest_summary`, edges' host metrics →
//! `record_metric` as metrics of the component `[[model.host]]` names), evaluates it every
//! `model.evaluate_s`, stores events and incidents, drives the webhooks, scrapes Prometheus
//! endpoints ([`scrape`]) and applies retention ([`retention`]).
//!
//! On start (and when the model is replaced) the engine is rebuilt by replaying the stored
//! summaries and component metrics of the last `model.replay_s` seconds; incidents it finds
//! open again keep their stored id (matched by subject and opening time), stored incidents it
//! no longer sees are closed with status `unknown`.

pub mod config;
pub mod db;
pub mod exposition;
pub mod metrics;
pub mod retention;
pub mod runner;
pub mod scrape;
pub mod series;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use minicbor::Decoder;
use qos_model::{Event, Model, Monitor};
use qos_wire::metrics::MetricsSample;
use rusqlite::Connection;
use serde_json::{json, Value};

use crate::config::Config;
use crate::store::{StoreError, BUSY_TIMEOUT};
use db::Point;

/// Why the services could not start or a model was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The model file could not be read.
    #[error("cannot read model file {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The model is invalid.
    #[error("invalid service model: {0}")]
    Model(String),
}

impl From<rusqlite::Error> for ServicesError {
    fn from(e: rusqlite::Error) -> Self {
        ServicesError::Store(e.into())
    }
}

/// The engine and what goes with it.
pub struct Engine {
    /// The engine; `None` without a model.
    pub monitor: Option<Monitor>,
    /// The model's text, format (`toml`/`json`) and origin (`file`/`api`).
    pub source: Option<(String, String, String)>,
    ids: HashMap<u64, i64>,
    /// Records read from the store: (received_at ms, edge, seq).
    cursor: (u64, u32, i64),
    /// Summaries the model does not place (unknown probe or region).
    pub unplaced: u64,
    /// Summaries handed to the engine.
    pub ingested: u64,
    /// Notifications found by a replay (incidents not stored before), sent with the next
    /// evaluation's.
    pending: Vec<Value>,
}

/// What the HTTP workers and the monitor thread share.
pub struct Services {
    config: Config,
    db: Mutex<Connection>,
    engine: Mutex<Engine>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// Wall-clock Unix seconds.
pub fn now_s() -> u64 {
    crate::http::now_ms() / 1000
}

fn parse_model(text: &str, format: &str) -> Result<Model, ServicesError> {
    let r = if format == "json" {
        Model::from_json(text)
    } else {
        Model::from_toml(text)
    };
    r.map_err(|e| ServicesError::Model(crate::config::one_line(&e.to_string())))
}

impl Services {
    /// Opens the services on the database at `path` (migrated already), loads the model
    /// (`[model] file`, else the one stored through the API) and replays the recent past.
    pub fn open(path: &Path, config: &Config, now: u64) -> Result<Services, ServicesError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let source = match &config.model.file {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| ServicesError::Read {
                    path: file.clone(),
                    source,
                })?;
                let json = file.extension().is_some_and(|e| e == "json");
                let format = if json { "json" } else { "toml" };
                Some((text, format.to_string(), "file".to_string()))
            }
            None => db::stored_model(&conn)?.map(|(t, f)| (t, f, "api".to_string())),
        };
        let monitor = match &source {
            Some((text, format, _)) => Some(Monitor::new(parse_model(text, format)?)),
            None => None,
        };
        let cursor = (db::last_received(&conn)?, u32::MAX, i64::MAX);
        let s = Services {
            config: config.clone(),
            db: Mutex::new(conn),
            engine: Mutex::new(Engine {
                monitor,
                source,
                ids: HashMap::new(),
                cursor,
                unplaced: 0,
                ingested: 0,
                pending: Vec::new(),
            }),
        };
        {
            let mut e = s.engine();
            if let Some(mut m) = e.monitor.take() {
                s.replay(&mut e, &mut m, now)?;
                e.monitor = Some(m);
            }
        }
        Ok(s)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The store connection of the services.
    pub fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The engine.
    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The component of edge `edge`'s host metrics.
    pub fn host_component(&self, edge: u32) -> Option<&str> {
        self.config
            .model
            .hosts
            .iter()
            .find(|h| h.edge == edge)
            .map(|h| h.component.as_str())
    }

    /// Feeds `m` with the stored past up to the cursor, evaluates, and reconciles incidents.
    fn replay(&self, e: &mut Engine, m: &mut Monitor, now: u64) -> Result<(), ServicesError> {
        let from = now.saturating_sub(self.config.model.replay_s);
        let conn = self.db();
        // Only what the cursor passed: later records come through `ingest_new`.
        let mut rows = db::summaries_received_by(&conn, from, e.cursor.0)?;
        rows.sort_by_key(|r| r.summary.start_s);
        for r in &rows {
            let _ = m.ingest_summary(r.edge, &*r.summary);
        }
        for p in db::points(&conn, None, None, from as f64, f64::MAX)? {
            m.record_metric(&p.component, &p.metric, p.at, p.value);
        }
        // Events of the replayed past were stored (and notified) when they happened; only
        // incidents not stored yet (opened while serve was away) are new.
        let _ = m.evaluate(now);
        let mut keep = Vec::new();
        for i in m.incidents() {
            let (id, new) = self.incident_id(&conn, e, i)?;
            keep.push(id);
            if new && i.resolved_at.is_none() {
                let body = json!({"type": "incident_opened", "incident": incident_body(i, id)});
                db::insert_event(&conn, now, "incident_opened", Some(i.subject.name()), &body)?;
                e.pending.push(body);
            }
        }
        db::close_stale_incidents(&conn, &keep, now)?;
        Ok(())
    }

    fn incident_id(
        &self,
        conn: &Connection,
        e: &mut Engine,
        i: &qos_model::Incident,
    ) -> Result<(i64, bool), ServicesError> {
        let existing = match e.ids.get(&i.id) {
            Some(id) => Some(*id),
            None => db::find_open_incident(conn, i.subject.name(), i.opened_at)?,
        };
        let body = incident_body(i, existing.unwrap_or(0));
        let id = db::upsert_incident(
            conn,
            existing,
            i.subject.name(),
            i.opened_at,
            i.updated_at,
            i.resolved_at,
            i.status.name(),
            i.causes.first().map(|c| c.component.as_str()),
            &body,
        )?;
        if existing.is_none() {
            // store the id inside the body too
            db::upsert_incident(
                conn,
                Some(id),
                i.subject.name(),
                i.opened_at,
                i.updated_at,
                i.resolved_at,
                i.status.name(),
                i.causes.first().map(|c| c.component.as_str()),
                &incident_body(i, id),
            )?;
        }
        e.ids.insert(i.id, id);
        Ok((id, existing.is_none()))
    }

    /// Hands records stored since the last call to the engine; returns how many.
    pub fn ingest_new(&self) -> Result<usize, ServicesError> {
        let mut e = self.engine();
        let rows = db::records_after(&self.db(), e.cursor, 10_000)?;
        let n = rows.len();
        let mut points = Vec::new();
        for (received, edge, seq, kind, body) in rows {
            e.cursor = (received, edge, seq);
            match kind {
                0 => {
                    if let Some(s) = db::decode_summary(&body) {
                        let placed = match e.monitor.as_mut() {
                            Some(m) => m.ingest_summary(edge, &*s).is_ok(),
                            None => false,
                        };
                        if placed {
                            e.ingested += 1;
                        } else {
                            e.unplaced += 1;
                        }
                    }
                }
                3 => {
                    if let Some(c) = self.host_component(edge) {
                        points.extend(host_points(c, &body));
                    }
                }
                _ => {}
            }
        }
        drop(e);
        if !points.is_empty() {
            self.add_points(&points)?;
        }
        Ok(n)
    }

    /// Stores component metric points and hands them to the engine.
    pub fn add_points(&self, points: &[Point]) -> Result<(), ServicesError> {
        db::insert_points(&mut self.db(), points)?;
        let mut e = self.engine();
        if let Some(m) = e.monitor.as_mut() {
            for p in points {
                m.record_metric(&p.component, &p.metric, p.at, p.value);
            }
        }
        Ok(())
    }

    /// Evaluates the engine at `now`; stores events and incidents; returns the notifications
    /// (incidents carry their stored id).
    pub fn evaluate(&self, now: u64) -> Result<Vec<Value>, ServicesError> {
        let mut e = self.engine();
        let Some(mut m) = e.monitor.take() else {
            return Ok(Vec::new());
        };
        let events = m.evaluate(now);
        let r = self.persist(&mut e, &events, now);
        e.monitor = Some(m);
        r
    }

    fn persist(
        &self,
        e: &mut Engine,
        events: &[Event],
        now: u64,
    ) -> Result<Vec<Value>, ServicesError> {
        let conn = self.db();
        let mut out = std::mem::take(&mut e.pending);
        for ev in events {
            let (kind, subject, mut body) = event_json(ev);
            if let Event::IncidentOpened(i)
            | Event::IncidentUpdated(i)
            | Event::IncidentResolved(i) = ev
            {
                let (id, _) = self.incident_id(&conn, e, i)?;
                body["incident"] = incident_body(i, id);
            }
            db::insert_event(&conn, now, kind, subject.as_deref(), &body)?;
            if qos_model::notification(ev).is_some() {
                out.push(body);
            }
        }
        Ok(out)
    }

    /// Replaces the model (validated first; nothing changes when invalid), rebuilding the
    /// engine from the stored past; stores it so a restart without `[model] file` keeps it.
    pub fn put_model(&self, text: &str, format: &str, now: u64) -> Result<(), ServicesError> {
        let model = parse_model(text, format)?;
        let mut m = Monitor::new(model);
        let mut e = self.engine();
        e.ids.clear();
        self.replay(&mut e, &mut m, now)?;
        db::store_model(&self.db(), text, format, now)?;
        e.monitor = Some(m);
        e.source = Some((text.to_string(), format.to_string(), "api".to_string()));
        Ok(())
    }
}

/// An incident's JSON with its stored id (the engine's own id as `engine_id`).
pub fn incident_body(i: &qos_model::Incident, id: i64) -> Value {
    let mut v = qos_model::api::incident_json(i);
    v["engine_id"] = json!(i.id);
    v["id"] = json!(id);
    v
}

/// The JSON stored for an event: `(kind, subject, body)`.
fn event_json(ev: &Event) -> (&'static str, Option<String>, Value) {
    use qos_model::api::{component_json, state_json};
    let typed = qos_model::notification(ev);
    let kind = |v: &Value| match v["type"].as_str() {
        Some("incident_opened") => "incident_opened",
        Some("incident_updated") => "incident_updated",
        Some("incident_resolved") => "incident_resolved",
        Some("slo_alert_raised") => "slo_alert_raised",
        Some("slo_alert_cleared") => "slo_alert_cleared",
        Some("flapping_started") => "flapping_started",
        Some("flapping_stopped") => "flapping_stopped",
        _ => "other",
    };
    match ev {
        Event::StatusChanged {
            state,
            previous,
            held,
        } => (
            "status_changed",
            Some(state.service.clone()),
            json!({"type": "status_changed", "state": state_json(state),
                   "previous": previous.name(), "held": held}),
        ),
        Event::ComponentChanged(c) => (
            "component_changed",
            Some(c.component.clone()),
            json!({"type": "component_changed", "component": component_json(c)}),
        ),
        Event::IncidentOpened(i) | Event::IncidentUpdated(i) | Event::IncidentResolved(i) => {
            let v = typed.unwrap_or(Value::Null);
            (kind(&v), Some(i.subject.name().to_string()), v)
        }
        _ => {
            let v = typed.unwrap_or_else(|| json!({"type": "other"}));
            let subject = v["service"]
                .as_str()
                .or(v["alert"]["service"].as_str())
                .map(str::to_string);
            (kind(&v), subject, v)
        }
    }
}

/// The points of a host-metrics record body, as metrics of `component`.
pub fn host_points(component: &str, body: &[u8]) -> Vec<Point> {
    let mut d = Decoder::new(db::record_body(body));
    let Ok(s) = MetricsSample::decode(&mut d) else {
        return Vec::new();
    };
    s.values()
        .iter()
        .map(|(metric, v)| Point {
            component: component.to_string(),
            metric: metric.name().to_string(),
            at: f64::from(s.at_s),
            value: *v as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use qos_wire::codec::encode_into;
    use qos_wire::ids::{EdgeId, Seq};
    use qos_wire::samples;
    use qos_wire::summary::Summary;
    use qos_wire::uplink::{encode_batch_head, encode_record, RecordKind};

    use super::*;
    use crate::config::Synchronous;
    use crate::ingest::Ingest;
    use crate::services::config::HostEntry;
    use crate::stats::IngestStats;
    use crate::store::SqliteStore;

    const MODEL: &str = r#"
        [[component]]
        name = "web"
        kind = "web"
        depends_on = ["host-3"]
        [[component]]
        name = "host-3"
        kind = "host"
        [[service]]
        name = "shop"
        depends_on = ["web"]
        [[service.transaction]]
        name = "home"
        probes = [{ edge = 3, probe = 1, region = "eu" }]
    "#;

    /// Batches as the CoAP ingest stores them reach the engine: summaries by edge and probe,
    /// host metrics as the metrics of the edge's host component.
    #[test]
    fn ingested_batches_reach_the_engine() {
        let dir = std::env::temp_dir().join(format!("qos-services-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("qos.sqlite");
        std::fs::write(dir.join("m.toml"), MODEL).unwrap();
        let store = SqliteStore::open(&db, Synchronous::Normal).unwrap();
        let mut config = Config::default();
        config.model.file = Some(dir.join("m.toml"));
        config.model.hosts.push(HostEntry {
            edge: 3,
            component: "host-3".into(),
        });
        let services = Services::open(&db, &config, 1_764_000_000).unwrap();
        let mut ingest = Ingest::new(Box::new(store), Arc::new(IngestStats::new()));
        let sums: Vec<Summary<128>> = (0..3).map(|i| samples::http_summary(i, 10, 0)).collect();
        let first = Seq::first_of_epoch(1);
        let bytes = samples::batch(EdgeId(3), first, 0, &sums).unwrap();
        ingest.handle_batch(&bytes, 1_764_000_100_000).unwrap();
        let m = samples::metrics_sample();
        let mut buf = vec![0u8; 1024];
        let n = encode_into(&mut buf, |e| {
            encode_batch_head(e, EdgeId(3), Seq(first.0 + 3), 0, 1)?;
            encode_record(e, RecordKind::Metrics, |e| m.encode(e))
        })
        .unwrap();
        ingest.handle_batch(&buf[..n], 1_764_000_101_000).unwrap();
        assert_eq!(services.ingest_new().unwrap(), 4);
        {
            let e = services.engine();
            assert_eq!((e.ingested, e.unplaced), (3, 0));
        }
        let points = db::points(&services.db(), Some("host-3"), None, 0.0, f64::MAX).unwrap();
        assert_eq!(points.len(), m.len());
        assert!(points.iter().any(|p| p.metric == "cpu_busy_permille"));
        // nothing new: nothing read again
        assert_eq!(services.ingest_new().unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
