//! The API of the centre's side of the edge contract: central edge configurations, on-demand
//! probes and recent results (carried to the edge by the CoAP thread, see
//! [`crate::centre::Order`]), brokers and topology. Routed from the module above; the table
//! of endpoints is in the module docs of [`super`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use qos_coap::Code;
use qos_probe_config::{validate_set, ProbeKindConfig, ProbeSection, ProbeSet};
use qos_wire::codec::encode_into;
use qos_wire::ids::EdgeId;
use qos_wire::outcome::{ProbeResult, RecentResults};
use qos_wire::registration::{PROBE_PATH, RESULTS_PATH};
use serde_json::{json, Map, Value};

use super::{now_ms, store_unavailable, Request, Response};
use crate::centre::{CentralConfig, Centre, Order, OrderAnswer, PutError, Route};
use crate::store::EdgeRow;

/// Longest on-demand run an edge accepts, ms (the edge's `MAX_ON_DEMAND_TIMEOUT_MS`).
pub const MAX_PROBE_TIMEOUT_MS: u32 = 60_000;
/// Added to a probe's `timeout_ms` for the wait of `POST .../probe` (the way there and back,
/// an edge briefly away and held by its broker), ms.
pub const PROBE_WAIT_MARGIN_MS: u64 = 15_000;
/// The wait of `GET .../results`, ms.
pub const RESULTS_WAIT_MS: u64 = 15_000;
/// Longest `wait_ms` a request may ask for.
pub const MAX_WAIT_MS: u64 = 300_000;

fn error(status: u16, what: &str, extra: Value) -> Response {
    let mut body = json!({ "error": what });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    Response::json(status, &body)
}

/// `"direct"`, or the broker's address.
pub fn route_name(route: Option<Route>) -> Value {
    match route {
        Some(Route::Direct(_)) => "direct".into(),
        Some(Route::Broker(a)) => a.to_string().into(),
        None => Value::Null,
    }
}

fn probes_json(set: &ProbeSet) -> Vec<Value> {
    set.probes
        .iter()
        .map(|p| {
            let steps = p.steps();
            json!({
                "id": p.id,
                "kind": p.spec(&steps).kind.name(),
                "target": p.kind.target(),
                "interval_ms": p.interval_ms,
                "timeout_ms": p.timeout_ms,
            })
        })
        .collect()
}

fn config_json(centre: &Centre, c: &CentralConfig) -> Value {
    let set = ProbeSet::parse(&c.toml).ok();
    let report = match centre.configs.report(c.edge_id) {
        Ok(Some(r)) => json!({
            "etag": r.report.etag,
            "accepted": r.report.accepted,
            "reason": r.report.reason,
            "at": r.at_ms,
            "applied_etag": r.applied_etag,
            "rejected_etag": r.rejected.as_ref().map(|x| x.0),
            "rejected_reason": r.rejected.as_ref().map(|x| x.1.clone()),
        }),
        _ => Value::Null,
    };
    json!({
        "edge": c.edge_id,
        "etag": c.etag,
        "updated_at": c.updated_at_ms,
        "source": c.source,
        "window_s": set.as_ref().map(|s| s.window_s),
        "probes": set.as_ref().map(probes_json).unwrap_or_default(),
        "rules": set.as_ref().map_or(0, |s| s.rules.len()),
        "applied": report.get("applied_etag").and_then(Value::as_u64) == Some(u64::from(c.etag)),
        "last_report": report,
    })
}

/// `/api/v1/edges/{id}/config`: GET, PUT (TOML body), DELETE.
pub fn config(request: &Request, centre: &Centre, edge: u32) -> Response {
    match request.method() {
        "GET" | "HEAD" => match centre.configs.get(edge) {
            Ok(Some(c)) => Response::json(200, &config_json(centre, &c)),
            Ok(None) => error(
                404,
                "no configuration for this edge",
                json!({ "edge": edge }),
            ),
            Err(e) => store_unavailable(&e),
        },
        "PUT" => {
            let Ok(text) = std::str::from_utf8(&request.body) else {
                return error(
                    400,
                    "invalid configuration",
                    json!({"reason": "the body is not UTF-8"}),
                );
            };
            match centre.configs.put(edge, text, "api", now_ms()) {
                Ok(c) => Response::json(200, &config_json(centre, &c)),
                Err(PutError::Invalid(reason)) => error(
                    400,
                    "invalid configuration",
                    json!({ "edge": edge, "reason": reason }),
                ),
                Err(PutError::Store(e)) => store_unavailable(&e),
            }
        }
        "DELETE" => match centre.configs.delete(edge) {
            Ok(true) => Response::json(200, &json!({ "edge": edge, "deleted": true })),
            Ok(false) => error(
                404,
                "no configuration for this edge",
                json!({ "edge": edge }),
            ),
            Err(e) => store_unavailable(&e),
        },
        _ => super::method_not_allowed(request, "GET, HEAD, PUT, DELETE"),
    }
}

/// One probe result as JSON: phases in µs by name, the error class by name.
pub fn result_json(r: &ProbeResult) -> Value {
    let phases: Map<String, Value> = r
        .phases
        .iter()
        .map(|(p, us)| (p.name().to_string(), us.into()))
        .collect();
    json!({
        "probe": r.probe.0,
        "at_ms": r.at_ms,
        "status": if r.ok() { "ok" } else { "failed" },
        "phases_us": phases,
        "error": r.error.map(|c| c.name()),
        "error_after_us": r.error_after_us,
        "detail": r.detail,
        "redirects": r.redirects,
    })
}

/// The `wait_ms` query, or `default`.
fn wait_ms(request: &Request, default: u64) -> Result<u64, Response> {
    let pairs = request.query_pairs().unwrap_or_default();
    match pairs.iter().find(|(k, _)| k == "wait_ms") {
        None => Ok(default),
        Some((_, v)) => match v.parse::<u64>() {
            Ok(ms) if (1..=MAX_WAIT_MS).contains(&ms) => Ok(ms),
            _ => Err(error(
                400,
                "bad query",
                json!({"reason": format!("wait_ms {v:?}: expected 1 to {MAX_WAIT_MS}")}),
            )),
        },
    }
}

/// Hands the order to the CoAP thread and waits for the answer at most `wait_ms`.
fn ask(
    centre: &Centre,
    edge: u32,
    code: Code,
    path: &'static str,
    queries: Vec<String>,
    payload: Vec<u8>,
    wait_ms: u64,
) -> Result<(Code, Vec<u8>, Route), Response> {
    let (tx, rx) = mpsc::channel();
    centre.order(Order {
        edge,
        code,
        path,
        queries,
        payload,
        reply: tx,
    });
    let no_answer = |detail: &str| {
        error(
            504,
            "no answer from the edge",
            json!({"edge": edge, "detail": detail}),
        )
    };
    match rx.recv_timeout(Duration::from_millis(wait_ms)) {
        Ok(OrderAnswer::Answer {
            code,
            payload,
            route,
            ..
        }) => {
            let text = || String::from_utf8_lossy(&payload).into_owned();
            match (code.class(), code) {
                (2, _) => Ok((code, payload, route)),
                (_, Code::NOT_FOUND) => Err(error(
                    404,
                    "unknown edge",
                    json!({"edge": edge, "detail": text(), "via": route_name(Some(route))}),
                )),
                (_, Code::GATEWAY_TIMEOUT) => Err(no_answer(&text())),
                _ => Err(error(
                    502,
                    "the edge refused the request",
                    json!({"edge": edge, "code": code.to_string(), "reason": text(),
                           "via": route_name(Some(route))}),
                )),
            }
        }
        Ok(OrderAnswer::UnknownEdge) => Err(error(
            404,
            "unknown edge",
            json!({"edge": edge, "detail": "never registered here nor sent a batch"}),
        )),
        Ok(OrderAnswer::NoAnswer) => Err(no_answer("the CoAP exchange failed")),
        Err(_) => Err(no_answer(&format!("nothing within {wait_ms} ms"))),
    }
}

/// Parses one probe in the edge's format: JSON when the Content-Type says so or the body
/// starts with `{`, TOML otherwise (the body of one `[[probe]]` table).
fn parse_probe(request: &Request) -> Result<ProbeSection, String> {
    let text = std::str::from_utf8(&request.body).map_err(|_| "the body is not UTF-8")?;
    let json = request
        .header("Content-Type")
        .is_some_and(|t| t.contains("json"))
        || text.trim_start().starts_with('{');
    let probe: ProbeSection = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?
    };
    if let ProbeKindConfig::Http {
        ca_file: Some(f), ..
    } = &probe.kind
    {
        return Err(format!(
            "probe {}: ca_file {f:?} is a local option of an edge, not allowed here",
            probe.id
        ));
    }
    if probe.timeout_ms > MAX_PROBE_TIMEOUT_MS {
        return Err(format!(
            "probe {}: timeout_ms {} is above {MAX_PROBE_TIMEOUT_MS} for an on-demand run",
            probe.id, probe.timeout_ms
        ));
    }
    validate_set(std::slice::from_ref(&probe), &[])?;
    Ok(probe)
}

/// `POST /api/v1/edges/{id}/probe`.
pub fn probe(request: &Request, centre: &Centre, edge: u32) -> Response {
    if request.method() != "POST" {
        return super::method_not_allowed(request, "POST");
    }
    let probe = match parse_probe(request) {
        Ok(p) => p,
        Err(reason) => return error(400, "invalid probe", json!({ "reason": reason })),
    };
    let wait = match wait_ms(request, u64::from(probe.timeout_ms) + PROBE_WAIT_MARGIN_MS) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let steps = probe.steps();
    let spec = probe.spec(&steps);
    let mut buf = vec![0u8; 2048];
    let n = match encode_into(&mut buf, |e| spec.encode(e)) {
        Ok(n) => n,
        Err(e) => return error(400, "invalid probe", json!({ "reason": e.to_string() })),
    };
    buf.truncate(n);
    let (_, payload, route) = match ask(centre, edge, Code::POST, PROBE_PATH, Vec::new(), buf, wait)
    {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut d = minicbor::Decoder::new(&payload);
    match ProbeResult::decode(&mut d) {
        Ok(r) => Response::json(
            200,
            &json!({"edge": edge, "via": route_name(Some(route)), "result": result_json(&r)}),
        ),
        Err(e) => error(
            502,
            "the edge's answer is not a probe-result",
            json!({"edge": edge, "reason": e.to_string()}),
        ),
    }
}

/// `GET /api/v1/edges/{id}/results[?probe=N]`.
pub fn results(request: &Request, centre: &Centre, edge: u32) -> Response {
    if !matches!(request.method(), "GET" | "HEAD") {
        return super::method_not_allowed(request, "GET, HEAD");
    }
    let pairs = request.query_pairs().unwrap_or_default();
    let mut queries = Vec::new();
    if let Some((_, v)) = pairs.iter().find(|(k, _)| k == "probe") {
        match v.parse::<u16>() {
            Ok(p) => queries.push(format!("p={p}")),
            Err(_) => {
                return error(
                    400,
                    "bad query",
                    json!({"reason": format!("probe {v:?}: expected a probe id (0-65535)")}),
                )
            }
        }
    }
    let wait = match wait_ms(request, RESULTS_WAIT_MS) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (code, payload, route) = match ask(
        centre,
        edge,
        Code::GET,
        RESULTS_PATH,
        queries,
        Vec::new(),
        wait,
    ) {
        Ok(a) => a,
        Err(r) => return r,
    };
    if code != Code::CONTENT {
        return error(
            502,
            "unexpected answer from the edge",
            json!({"code": code.to_string()}),
        );
    }
    match RecentResults::decode(&payload) {
        Ok(r) => {
            let list: Vec<Value> = r.results.iter().map(|r| result_json(&r)).collect();
            Response::json(
                200,
                &json!({"edge": edge, "via": route_name(Some(route)), "results": list}),
            )
        }
        Err(e) => error(
            502,
            "the edge's answer is not recent-results",
            json!({"reason": e.to_string()}),
        ),
    }
}

/// Adds `name`, `region` (when the store has none), `broker` and `registered` to the edges
/// of the store, and lists edges that only registered.
pub fn augment_edges(rows: &[EdgeRow], centre: &Centre, list: &mut Vec<Value>) {
    let st = centre.state();
    let now = centre.mono_ms();
    for (row, v) in rows.iter().zip(list.iter_mut()) {
        let reg = st.registry.get(EdgeId(row.edge_id));
        let route = st.route(row.edge_id);
        // Registered here, or as its broker last reported.
        let (rtt_ms, loss) = link_quality(&st, route, row.edge_id);
        let (name, region, registered, cfg) = match (route, reg) {
            (Some(Route::Broker(b)), _) => match st.reported(b, row.edge_id) {
                Some(e) => (e.name.clone(), e.region.clone(), e.registered, e.cfg),
                None => (String::new(), String::new(), false, None),
            },
            (_, Some(r)) => (
                r.name.clone(),
                r.region.clone(),
                r.registered(now),
                r.config_etag,
            ),
            _ => (String::new(), String::new(), false, None),
        };
        if let Value::Object(m) = v {
            if row.name.is_none() && !name.is_empty() {
                m.insert("name".into(), name.into());
            }
            if row.region.is_none() && !region.is_empty() {
                m.insert("region".into(), region.into());
            }
            m.insert("broker".into(), route_name(route));
            m.insert("registered".into(), registered.into());
            m.insert("cfg".into(), cfg.into());
            m.insert("rtt_ms".into(), rtt_ms.into());
            m.insert("loss".into(), loss.into());
            // The consequence of a silent broker, not an event of its own.
            if let Some(Route::Broker(b)) = route {
                if st.silent.contains_key(&b) {
                    m.insert("behind_silent_broker".into(), b.to_string().into());
                }
            }
        }
    }
    let known: BTreeSet<u32> = rows.iter().map(|r| r.edge_id).collect();
    for r in st.registry.edges().filter(|r| !known.contains(&r.id.0)) {
        list.push(json!({
            "id": r.id.0,
            "name": r.name,
            "region": r.region,
            "up": r.registered(now),
            "broker": route_name(st.route(r.id.0)),
            "registered": r.registered(now),
            "cfg": r.config_etag,
            "rtt_ms": r.link.rtt_ms(),
            "loss": r.link.loss(),
            "received": 0,
        }));
    }
}

/// The round trip (ms) and loss rate (0 to 1) of the link to edge `id`: as its broker last
/// reported them, or as measured here for an edge that talks to this process.
fn link_quality(
    st: &crate::centre::CentreState,
    route: Option<Route>,
    id: u32,
) -> (Option<u32>, Option<f64>) {
    match route {
        Some(Route::Broker(b)) => st.reported(b, id).map_or((None, None), |e| {
            (e.rtt_ms, e.loss_permille.map(|p| f64::from(p) / 1000.0))
        }),
        _ => st
            .registry
            .get(EdgeId(id))
            .map_or((None, None), |r| (r.link.rtt_ms(), r.link.loss())),
    }
}

/// `GET /api/v1/brokers`.
pub fn brokers(centre: &Centre) -> Response {
    let st = centre.state();
    let mut addrs: BTreeSet<SocketAddr> = st.reports.keys().copied().collect();
    addrs.extend(st.senders.keys().copied().filter(|a| st.is_broker(*a)));
    let list: Vec<Value> = addrs
        .into_iter()
        .map(|a| {
            let seen = st.senders.get(&a).cloned().unwrap_or_default();
            let report = st.reports.get(&a).map(|(at, r)| {
                let s = &r.stats;
                json!({
                    "at": at,
                    "protected_relayed": r.protected_relayed,
                    "received": s.received,
                    "acked": s.acked,
                    "forwarded": s.forwarded,
                    "queued": s.queued,
                    "queued_bytes": s.queued_bytes,
                    "dropped_quota": s.dropped_quota,
                    "relayed": s.relayed,
                    "relay_timeouts": s.relay_timeouts,
                    "rejected": qos_broker::report::REJECT_REASONS
                        .iter()
                        .zip(s.rejected)
                        .map(|(k, n)| ((*k).to_string(), Value::from(n)))
                        .collect::<serde_json::Map<_, _>>(),
                    "total_edges": r.total_edges,
                    "edges": r.edges.iter().map(|e| json!({
                        "id": e.id,
                        "name": e.name,
                        "region": e.region,
                        "registered": e.registered,
                        "seen_ago_ms": e.seen_ago_ms,
                        "cfg": e.cfg,
                        "rtt_ms": e.rtt_ms,
                        "loss": e.loss_permille.map(|p| f64::from(p) / 1000.0),
                    })).collect::<Vec<_>>(),
                })
            });
            json!({
                "id": st.broker_id(a),
                "address": a.to_string(),
                "edges": seen.edges.iter().collect::<Vec<_>>(),
                "last_batch": (seen.batches > 0).then_some(seen.last_batch_ms),
                "batches": seen.batches,
                "records": seen.records,
                "report": report,
            })
        })
        .collect();
    Response::json(200, &json!({ "brokers": list }))
}

/// `GET /api/v1/topology`: edges → broker → super-manager.
pub fn topology(centre: &Centre) -> Response {
    Response::json(200, &topology_json(centre))
}

/// The body of [`topology`].
pub fn topology_json(centre: &Centre) -> Value {
    let st = centre.state();
    let mut nodes = vec![json!({"id": "super-manager", "kind": "super-manager"})];
    let mut links = Vec::new();
    let mut edges: BTreeSet<u32> = st.via.keys().copied().collect();
    edges.extend(st.registry.edges().map(|e| e.id.0));
    let mut brokers = BTreeSet::new();
    for edge in edges {
        let route = st.route(edge);
        let (name, region) = match route {
            Some(Route::Broker(b)) => st
                .reported(b, edge)
                .map(|e| (e.name.clone(), e.region.clone())),
            _ => st
                .registry
                .get(EdgeId(edge))
                .map(|r| (r.name.clone(), r.region.clone())),
        }
        .unzip();
        nodes.push(json!({
            "id": format!("edge:{edge}"),
            "kind": "edge",
            "edge": edge,
            "name": name,
            "region": region,
        }));
        let (rtt_ms, loss) = link_quality(&st, route, edge);
        match route {
            Some(Route::Broker(a)) => {
                brokers.insert(a);
                links.push(json!({
                    "from": format!("edge:{edge}"),
                    "to": format!("broker:{a}"),
                    "rtt_ms": rtt_ms,
                    "loss": loss,
                }));
            }
            _ => links.push(json!({
                "from": format!("edge:{edge}"),
                "to": "super-manager",
                "rtt_ms": rtt_ms,
                "loss": loss,
            })),
        }
    }
    for a in brokers {
        nodes
            .push(json!({"id": format!("broker:{a}"), "kind": "broker", "address": a.to_string()}));
        links.push(json!({"from": format!("broker:{a}"), "to": "super-manager"}));
    }
    json!({ "nodes": nodes, "links": links })
}
