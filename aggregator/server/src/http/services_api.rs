//! The services' endpoints (service model, states, SLOs, incidents, component metrics) and
//! the OpenAPI document. Without a running [`Services`] (a library user that did not start
//! them) they answer 404. Every error is `{"error": reason}` with a 4xx (or 503 when the store
//! fails).
//!
//! | path | answer |
//! |---|---|
//! | `GET /api/v1/services` | `{"services":[{"name","status","availability","p95_us","state","report"}]}`: the engine's state and the last hour's availability and response time (`?window_s=` to change the period, at most 31 days) |
//! | `GET /api/v1/services/{name}` | state, per-region report, SLO budgets (availability, latency), burn rate of every alert rule over its long and short window, active alerts; `?from=&to=` (Unix s) for the report, default the last hour |
//! | `GET /api/v1/services/{name}/series?from=&to=&step=&phase=&region=` | drill-down series from stored summaries: per step runs, failures, windows, bad windows, availability, p50/p95/p99 of the total time from the merged sketches, phase means; hourly rollups for what is older than `retention.raw_days`. Defaults: the last hour, step = model window |
//! | `GET /api/v1/incidents[?open=true][&limit=N]` | stored incidents, newest first |
//! | `GET /api/v1/incidents/{id}` | one incident: ranked causes with evidence, drill-down chain; each drill-down series with its points around the incident |
//! | `GET /api/v1/slos` | every service's objectives, budgets and active alerts |
//! | `GET /api/v1/notifications[?limit=N]` | the webhook delivery log, newest first |
//! | `GET /api/v1/model` | the model (`{"source","format","origin","model"}`); 404 without one |
//! | `PUT /api/v1/model` | TOML or JSON body (JSON when `Content-Type` says so or it starts with `{`); validated (400 with the reason, nothing changed) and replaced atomically; the engine is rebuilt from the stored past |
//! | `POST /api/v1/metrics[?strict=true]` | component metrics, CSV `time,component,metric,value` or JSON lines; `{"accepted","rejected","errors":[{"line","reason"}]}`; good rows written in one transaction, bad ones skipped (with `strict`, any bad row: 400 and nothing written) |
//! | `GET /api/v1/openapi.json` | the OpenAPI 3 document of the whole API |

use std::collections::BTreeSet;

use qos_model::api::{budget_json, report_json, state_json};
use qos_model::slo::{burn_rate, Sli};
use qos_wire::phase::Phase;
use serde_json::{json, Value};

use crate::http::{Request, Response};
use crate::services::series::{self, SeriesQuery, MAX_POINTS};
use crate::services::{db, metrics, now_s, retention, Services, ServicesError};

/// Every route the router answers under `/api/v1/` (method, path template), the existing ones
/// and this module's; a test keeps it, the router and [`OPENAPI`] in step.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/health"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/edges"),
    ("GET", "/api/v1/edges/{id}/config"),
    ("PUT", "/api/v1/edges/{id}/config"),
    ("DELETE", "/api/v1/edges/{id}/config"),
    ("POST", "/api/v1/edges/{id}/probe"),
    ("GET", "/api/v1/edges/{id}/results"),
    ("GET", "/api/v1/summaries"),
    ("GET", "/api/v1/brokers"),
    ("GET", "/api/v1/topology"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/services"),
    ("GET", "/api/v1/services/{name}"),
    ("GET", "/api/v1/services/{name}/series"),
    ("GET", "/api/v1/incidents"),
    ("GET", "/api/v1/incidents/{id}"),
    ("GET", "/api/v1/slos"),
    ("GET", "/api/v1/notifications"),
    ("GET", "/api/v1/model"),
    ("PUT", "/api/v1/model"),
    ("POST", "/api/v1/metrics"),
    ("GET", "/api/v1/openapi.json"),
];

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Longest period of a report, seconds.
const MAX_PERIOD_S: u64 = 31 * 86_400;

fn bad(reason: impl Into<String>) -> Response {
    Response::json(400, &json!({"error": reason.into()}))
}

fn not_found(what: &str) -> Response {
    Response::json(404, &json!({"error": what}))
}

fn store_err(e: &dyn std::fmt::Display) -> Response {
    Response::json(503, &json!({"error": format!("store unavailable: {e}")}))
}

fn not_allowed(request: &Request, allow: &'static str) -> Response {
    Response::json(
        405,
        &json!({"error": "method not allowed", "method": request.method(), "path": request.path()}),
    )
    .with_header("Allow", allow)
}

/// Whether `segments` (after `/api/v1/`) name one of this module's endpoints.
pub fn handles(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["services"]
            | ["services", _]
            | ["services", _, "series"]
            | ["incidents"]
            | ["incidents", _]
            | ["slos"]
            | ["notifications"]
            | ["model"]
            | ["metrics"]
            | ["openapi.json"]
    )
}

/// Answers one of this module's endpoints.
pub fn route(request: &Request, segments: &[&str], services: Option<&Services>) -> Response {
    let get = matches!(request.method(), "GET" | "HEAD");
    if segments == ["openapi.json"] {
        if !get {
            return not_allowed(request, "GET, HEAD");
        }
        let mut r = Response::json(200, &Value::Null);
        r.body = OPENAPI.as_bytes().to_vec();
        return r;
    }
    let Some(s) = services else {
        return not_found("services are not running");
    };
    let Some(query) = request.query_pairs() else {
        return bad("query string is not valid percent-encoded UTF-8");
    };
    let q = |k: &str| qv(&query, k);
    match segments {
        ["model"] => match request.method() {
            "GET" | "HEAD" => get_model(s),
            "PUT" => put_model(request, s),
            _ => not_allowed(request, "GET, HEAD, PUT"),
        },
        ["metrics"] => match request.method() {
            "POST" => post_metrics(request, s, q("strict") == Some("true")),
            _ => not_allowed(request, "POST"),
        },
        _ if !get => not_allowed(request, "GET, HEAD"),
        ["services"] => services_list(s, q("window_s")),
        ["services", name] => service(s, name, q("from"), q("to")),
        ["services", name, "series"] => service_series(s, name, &query),
        ["incidents"] => incidents(s, q("open"), q("limit")),
        ["incidents", id] => incident(s, id),
        ["slos"] => slos(s),
        ["notifications"] => notifications(s, q("limit")),
        _ => not_found("no such resource"),
    }
}

fn qv<'a>(query: &'a [(String, String)], k: &str) -> Option<&'a str> {
    query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

fn num(v: Option<&str>, name: &str) -> Result<Option<u64>, Response> {
    match v {
        None | Some("") => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("`{name}` = `{t}`: expected a non-negative integer"))),
    }
}

fn limit(v: Option<&str>) -> Result<usize, Response> {
    Ok(num(v, "limit")?.unwrap_or(100).clamp(1, 10_000) as usize)
}

fn get_model(s: &Services) -> Response {
    let e = s.engine();
    match (&e.monitor, &e.source) {
        (Some(m), Some((text, format, origin))) => Response::json(
            200,
            &json!({"format": format, "origin": origin, "source": text,
                    "model": serde_json::to_value(m.model().spec()).unwrap_or(Value::Null)}),
        ),
        _ => not_found("no service model"),
    }
}

fn put_model(request: &Request, s: &Services) -> Response {
    let Ok(text) = std::str::from_utf8(&request.body) else {
        return bad("body is not UTF-8");
    };
    let json = request
        .header("content-type")
        .is_some_and(|c| c.contains("json"))
        || text.trim_start().starts_with('{');
    match s.put_model(text, if json { "json" } else { "toml" }, now_s()) {
        Ok(()) => get_model(s),
        Err(ServicesError::Model(reason)) => bad(format!("invalid service model: {reason}")),
        Err(e) => store_err(&e),
    }
}

fn post_metrics(request: &Request, s: &Services, strict: bool) -> Response {
    let Ok(text) = std::str::from_utf8(&request.body) else {
        return bad("body is not UTF-8");
    };
    let parsed = metrics::parse(text);
    if strict && parsed.bad > 0 {
        let mut v = parsed.to_json(false);
        v["error"] = json!(format!("{} bad rows; nothing written", parsed.bad));
        return Response::json(400, &v);
    }
    if parsed.points.is_empty() && parsed.bad > 0 {
        let mut v = parsed.to_json(false);
        v["error"] = json!("no valid row");
        return Response::json(400, &v);
    }
    match s.add_points(&parsed.points) {
        Ok(()) => Response::json(200, &parsed.to_json(true)),
        Err(e) => store_err(&e),
    }
}

/// The last `period` seconds of a service's stored summaries as a report.
fn report(s: &Services, name: &str, from: u64, to: u64) -> Result<Option<Value>, Response> {
    Ok(s.report(name, from, to, now_s())
        .map_err(|e| store_err(&e))?
        .map(|r| report_json(&r)))
}

fn services_list(s: &Services, window: Option<&str>) -> Response {
    let period = match num(window, "window_s") {
        Ok(v) => v.unwrap_or(3600).clamp(1, MAX_PERIOD_S),
        Err(r) => return r,
    };
    let now = now_s();
    let names: Vec<(String, Option<Value>)> = {
        let e = s.engine();
        match e.monitor.as_ref() {
            Some(m) => m
                .model()
                .services()
                .iter()
                .map(|sv| (sv.name.clone(), m.state(&sv.name).map(state_json)))
                .collect(),
            None => Vec::new(),
        }
    };
    let mut out = Vec::new();
    for (name, state) in names {
        let rep = match report(s, &name, now.saturating_sub(period), now) {
            Ok(r) => r.unwrap_or(Value::Null),
            Err(r) => return r,
        };
        let p95 = rep["phases"]
            .as_array()
            .and_then(|p| p.iter().find(|x| x["phase"] == "total"))
            .map(|x| x["p95_us"].clone())
            .unwrap_or(Value::Null);
        out.push(json!({
            "name": name,
            "status": state.as_ref().map(|s| s["status"].clone()).unwrap_or(json!("unknown")),
            "availability": rep["availability"]["ratio"].clone(),
            "p95_us": p95,
            "state": state,
            "report": rep,
        }));
    }
    Response::json(200, &json!({"services": out, "window_s": period}))
}

fn service(s: &Services, name: &str, from: Option<&str>, to: Option<&str>) -> Response {
    let now = now_s();
    let (from, to) = match (num(from, "from"), num(to, "to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to.saturating_sub(3600));
    if from >= to || to - from > MAX_PERIOD_S {
        return bad("expected from < to, at most 31 days apart");
    }
    let (state, slo, alerts, rules, budget_a, budget_l, regions) = {
        let e = s.engine();
        let Some(m) = e.monitor.as_ref() else {
            return not_found("no service model");
        };
        let Some(sv) = m.model().service(name) else {
            return not_found("no such service");
        };
        let alerts: Vec<Value> = m
            .alerts()
            .filter(|a| a.service == name)
            .map(qos_model::api::alert_json)
            .collect();
        (
            m.state(name).map(state_json),
            sv.slo.clone(),
            alerts,
            m.model().burn_rules(name).to_vec(),
            m.budget(name, Sli::Availability, now)
                .map(|b| budget_json(&b)),
            m.budget(name, Sli::Latency, now).map(|b| budget_json(&b)),
            m.model().regions(name).to_vec(),
        )
    };
    let rep = match report(s, name, from, to) {
        Ok(r) => r,
        Err(r) => return r,
    };
    // Burn rates of every rule over its windows, from stored summaries.
    let mut burns = Vec::new();
    if let Some(slo) = &slo {
        for rule in &rules {
            let one = |len: u64| -> Result<Option<f64>, Response> {
                let r = report(s, name, now.saturating_sub(len), now)?;
                Ok(r.and_then(|r| {
                    let good = r["availability"]["good"].as_u64()?;
                    let badw = r["availability"]["bad"].as_u64()?;
                    burn_rate(slo.availability, good + badw, badw)
                }))
            };
            let (long, short) = match (one(rule.long_s), one(rule.short_s)) {
                (Ok(l), Ok(s)) => (l, s),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            burns.push(
                json!({"sli": "availability", "long_s": rule.long_s, "short_s": rule.short_s,
                "factor": rule.factor, "severity": rule.severity.name(),
                "long_burn": long, "short_burn": short}),
            );
        }
    }
    Response::json(
        200,
        &json!({
            "name": name,
            "regions": regions,
            "state": state,
            "report": rep,
            "slo": slo.map(|x| serde_json::to_value(x).unwrap_or(Value::Null)),
            "budget": {"availability": budget_a, "latency": budget_l},
            "burn_rates": burns,
            "alerts": alerts,
        }),
    )
}

fn service_series(s: &Services, name: &str, query: &[(String, String)]) -> Response {
    let q = |k: &str| qv(query, k);
    let now = now_s();
    let (from, to, step) = match (
        num(q("from"), "from"),
        num(q("to"), "to"),
        num(q("step"), "step"),
    ) {
        (Ok(f), Ok(t), Ok(st)) => (f, t, st),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let phase = match q("phase") {
        None | Some("") => None,
        Some(p) => match Phase::from_name(p) {
            Some(p) => Some(p),
            None => return bad(format!("unknown phase `{p}`")),
        },
    };
    let e = s.engine();
    let Some(m) = e.monitor.as_ref() else {
        return not_found("no service model");
    };
    let model = m.model();
    if model.service(name).is_none() {
        return not_found("no such service");
    }
    let region = q("region").filter(|r| !r.is_empty()).map(str::to_string);
    if let Some(r) = &region {
        if !model.regions(name).contains(r) {
            return bad(format!("service `{name}` is not probed from region `{r}`"));
        }
    }
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to.saturating_sub(3600));
    let step = step.unwrap_or(model.defaults().window_s);
    if from >= to {
        return bad("expected from < to");
    }
    if step == 0 || (to - from).div_ceil(step) > MAX_POINTS {
        return bad(format!(
            "expected a step of at least 1 s and at most {MAX_POINTS} points"
        ));
    }
    let query = SeriesQuery {
        from,
        to,
        step,
        phase,
        region,
    };
    let cutoff = retention::raw_cutoff(now, &s.config().retention);
    match series::series(&s.db(), model, name, &query, cutoff) {
        Ok(v) => Response::json(200, &v),
        Err(e) => store_err(&e),
    }
}

fn incidents(s: &Services, open: Option<&str>, lim: Option<&str>) -> Response {
    let open = match open {
        None | Some("false") | Some("") => false,
        Some("true") => true,
        Some(o) => return bad(format!("`open` = `{o}`: expected true or false")),
    };
    let limit = match limit(lim) {
        Ok(l) => l,
        Err(r) => return r,
    };
    match db::incidents(&s.db(), open, limit) {
        Ok(rows) => Response::json(
            200,
            &json!({"incidents": rows.into_iter().map(|r| r.body).collect::<Vec<_>>()}),
        ),
        Err(e) => store_err(&e),
    }
}

fn incident(s: &Services, id: &str) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return bad(format!("incident id `{id}`: expected a number"));
    };
    let conn = s.db();
    let mut body = match db::incident(&conn, id) {
        Ok(Some(r)) => r.body,
        Ok(None) => return not_found("no such incident"),
        Err(e) => return store_err(&e),
    };
    // Attach the points of every component series of the drill-down around the incident.
    let opened = body["opened_at"].as_f64().unwrap_or(0.0);
    let end = body["resolved_at"]
        .as_f64()
        .or(body["updated_at"].as_f64())
        .unwrap_or(opened)
        + 600.0;
    let start = opened - 1800.0;
    if let Some(steps) = body["drill_down"].as_array_mut() {
        for st in steps {
            if let Some(series) = st["series"].as_array_mut() {
                for r in series {
                    let (Some(c), Some(m)) = (r["component"].as_str(), r["metric"].as_str()) else {
                        continue;
                    };
                    let pts = match db::points(&conn, Some(c), Some(m), start, end) {
                        Ok(p) => p,
                        Err(e) => return store_err(&e),
                    };
                    r["points"] = json!(pts.iter().map(|p| [p.at, p.value]).collect::<Vec<_>>());
                }
            }
        }
    }
    Response::json(200, &body)
}

fn slos(s: &Services) -> Response {
    let now = now_s();
    let e = s.engine();
    let Some(m) = e.monitor.as_ref() else {
        return Response::json(200, &json!({"slos": []}));
    };
    let out: Vec<Value> = m
        .model()
        .services()
        .iter()
        .filter_map(|sv| {
            let slo = sv.slo.as_ref()?;
            Some(json!({
                "service": sv.name,
                "objective": serde_json::to_value(slo).unwrap_or(Value::Null),
                "budget": {
                    "availability": m.budget(&sv.name, Sli::Availability, now).map(|b| budget_json(&b)),
                    "latency": m.budget(&sv.name, Sli::Latency, now).map(|b| budget_json(&b)),
                },
                "alerts": m.alerts().filter(|a| a.service == sv.name).map(qos_model::api::alert_json).collect::<Vec<_>>(),
            }))
        })
        .collect();
    Response::json(200, &json!({"slos": out}))
}

fn notifications(s: &Services, lim: Option<&str>) -> Response {
    let limit = match limit(lim) {
        Ok(l) => l,
        Err(r) => return r,
    };
    match db::deliveries(&s.db(), limit) {
        Ok(rows) => Response::json(
            200,
            &json!({"webhooks": s.config().webhooks.iter().map(|w| w.url.clone()).collect::<Vec<_>>(),
                    "deliveries": rows.iter().map(|d| json!({
                "webhook": d.webhook, "notification": d.notification, "type": d.kind,
                "attempt": d.attempt, "at": d.at, "delivered": d.delivered, "status": d.status,
                "reason": d.reason, "next_attempt": d.next_attempt, "gave_up": d.gave_up,
            })).collect::<Vec<_>>()}),
        ),
        Err(e) => store_err(&e),
    }
}

/// The service map for `GET /api/v1/topology`: services → components → dependencies.
pub fn service_map(s: Option<&Services>) -> Value {
    let Some(s) = s else {
        return json!({"services": [], "components": [], "links": []});
    };
    let e = s.engine();
    let Some(m) = e.monitor.as_ref() else {
        return json!({"services": [], "components": [], "links": []});
    };
    let model = m.model();
    let mut links = Vec::new();
    let services: Vec<Value> = model
        .services()
        .iter()
        .map(|sv| {
            for d in &sv.depends_on {
                links.push(
                    json!({"from": format!("service:{}", sv.name), "to": format!("component:{d}")}),
                );
            }
            json!({"id": format!("service:{}", sv.name), "name": sv.name,
                   "status": m.state(&sv.name).map(|st| st.status.name()),
                   "regions": model.regions(&sv.name)})
        })
        .collect();
    let down: BTreeSet<&str> = m
        .component_states()
        .filter(|c| c.down)
        .map(|c| c.component.as_str())
        .collect();
    let components: Vec<Value> = model
        .components()
        .iter()
        .map(|c| {
            for d in &c.depends_on {
                links.push(json!({"from": format!("component:{}", c.name), "to": format!("component:{d}")}));
            }
            json!({"id": format!("component:{}", c.name), "name": c.name, "kind": c.kind.name(),
                   "region": c.region, "down": down.contains(c.name.as_str())})
        })
        .collect();
    json!({"services": services, "components": components, "links": links})
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::centre::{Centre, ConfigStore};
    use crate::config::{Config, Synchronous};
    use crate::http::parse::parse_head;
    use crate::stats::IngestStats;
    use crate::store::{SqliteStore, Store};

    fn request(method: &str, path: &str, body: &str) -> Request {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        Request {
            head: parse_head(head.as_bytes()).unwrap(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn unknown_path(r: &Response) -> bool {
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        r.status == 404 && v["error"] == "no such resource"
    }

    /// Every route the router knows is in the OpenAPI document and vice versa; each is
    /// answered (not as an unknown path, not 405), and other methods on documented paths get
    /// 405 rather than 404.
    #[test]
    fn openapi_document_and_router_agree() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let routes: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(routes, documented);

        let dir = std::env::temp_dir().join(format!("qos-openapi-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("qos.sqlite");
        let store = SqliteStore::open(&db, Synchronous::Normal).unwrap();
        let shared = crate::http::Shared {
            stats: Arc::new(IngestStats::new()),
            started: Instant::now(),
            http: Default::default(),
            centre: Some(Arc::new(Centre::new(ConfigStore::open(&db).unwrap()))),
            services: Some(Arc::new(
                crate::services::Services::open(&db, &Config::default(), 1_764_000_000).unwrap(),
            )),
        };
        let reader = store.open_reader().unwrap();
        let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
        for (method, template) in ROUTES {
            let path = template.replace("{id}", "1").replace("{name}", "shop");
            let body = if *method == "POST" && path.ends_with("probe") {
                "{\"kind\":\"tcp\",\"target\":\"127.0.0.1:1\",\"timeout_ms\":1}"
            } else {
                ""
            };
            let path = if path.ends_with("probe") || path.ends_with("results") {
                format!("{path}?wait_ms=1")
            } else {
                path
            };
            let r = crate::http::route(&request(method, &path, body), reader.as_ref(), &shared);
            assert!(
                !unknown_path(&r) && r.status != 405,
                "{method} {path}: {}",
                r.status
            );
        }
        for template in paths {
            let path = template.replace("{id}", "1").replace("{name}", "shop");
            let documented: Vec<&str> = ROUTES
                .iter()
                .filter(|(_, p)| *p == template)
                .map(|(m, _)| *m)
                .collect();
            for method in ["GET", "PUT", "POST", "DELETE"] {
                if documented.contains(&method) || (method == "GET" && documented.contains(&"HEAD"))
                {
                    continue;
                }
                let r = crate::http::route(&request(method, &path, ""), reader.as_ref(), &shared);
                assert_eq!(r.status, 405, "{method} {path}");
            }
            // one level deeper is unknown
            let r = crate::http::route(
                &request("GET", &format!("{path}/zzz"), ""),
                reader.as_ref(),
                &shared,
            );
            assert!(matches!(r.status, 400 | 404), "{path}/zzz");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
