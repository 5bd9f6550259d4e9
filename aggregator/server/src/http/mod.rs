//! The JSON API under `/api/v1/`: routes and answers. The HTTP/1.1 protocol (connections,
//! limits, timeouts, worker pool) is in [`server`], request-head parsing in [`parse`].
//!
//! | path | answer |
//! |---|---|
//! | `GET /api/v1/health` | `{"status":"ok","version":..,"uptime_s":..,"store":"ok"}`; 503 with `"status":"degraded"`, `"store":"error"` and `"store_error"` when the store does not answer |
//! | `GET /api/v1/stats` | the ingest counters ([`crate::stats::StatsSnapshot::to_json`]) plus `"store":{"records":..,"edges":..}` (or `"store":{"error":..}`), `uptime_s`, `http_auth_failures` and `http_refused` (connections and requests turned away by the HTTP limits, by reason: [`server::Refusal`]) |
//! | `GET /metrics` | the same counters, per edge and per broker (from its reports), and the HTTP requests by status class, in the Prometheus text exposition format ([`metrics`]); with a service model also the services' indicators per region and phase and the SLOs' error budgets ([`crate::services::exposition`]) |
//! | `GET /api/v1/events` | `{"events":[{"id","at","kind","broker","edges":[ids],"detail","region"}]}`, newest first (at most 200): `broker_silent` when a broker that reported or forwarded is not heard from for `[watch] broker_silent_after_ms` — one event naming the edges behind it — and `broker_back` when it is heard from again; `region_silent` (with `"region"`, `broker` listing its brokers) when every broker and direct edge of a region is silent — one event instead of one per broker — and `region_back` ([`crate::silence`]); `region` is null for broker events |
//! | `GET /api/v1/edges` | `{"edges":[{"id","name","region","up","first_seen","last_seen","last_seq","received","duplicates","gaps","dropped_at_edge","broker","registered","cfg","rtt_ms","loss"}]}`; times in unix milliseconds, `up` when seen in the last [`UP_WINDOW_MS`]; `broker` is `"direct"` (the edge talks to this process: it registered here from the address its batches come from, or that address is no broker), the address of the broker its last batch came from, or `null`; `registered` when it holds a current RFC 9176 registration here or, behind a broker, as that broker last reported; `name`/`region` come from the batches' store, that registration or that report; `cfg` is the `cfg=` attribute of that registration (the ETag of the central configuration in force on the edge) or `null`; `rtt_ms` (smoothed round trip, ms) and `loss` (share of lost transmissions, 0 to 1) measure the link edge → broker as the broker last reported them (`qos_broker::broker::link`), `null` before a measurement or for an edge that talks to this process; `behind_silent_broker` (the broker's address) is present while the broker the edge's batches came through is silent (see `GET /api/v1/events`). Edges that only registered are listed too |
//! | `PUT /api/v1/edges/{id}/config` | body: TOML in the edge's format (`window_s`, `[[probe]]`, `[[rule]]`; see `qos_probe_config::ProbeSet`); compiled to CDDL `edge-config` with an ETag that is a hash of its content, stored, served to the edge on `GET /c`. 200 with the `GET` answer; 400 `{"error":"invalid configuration","reason":..}` naming the value at fault (nothing stored) |
//! | `GET /api/v1/edges/{id}/config` | `{"edge","etag","updated_at","source":"api"\|"config-file","window_s","probes":[{"id","kind","target","interval_ms","timeout_ms"}],"rules","applied","last_report":{"etag","accepted","reason","at","applied_etag","rejected_etag","rejected_reason"}\|null}`; 404 when none |
//! | `DELETE /api/v1/edges/{id}/config` | 200 `{"edge","deleted":true}`; 404 when none (the edge then gets 4.04 on `GET /c` and keeps what it has) |
//! | `POST /api/v1/edges/{id}/probe[?wait_ms=N]` | body: one probe in the edge's format, JSON (`Content-Type: application/json` or a body starting with `{`) or TOML (the keys of one `[[probe]]` table); `timeout_ms` at most [`centre_api::MAX_PROBE_TIMEOUT_MS`]. Sent as CoAP `POST /p` to the edge (or `POST /p?id=` to its broker); waits `timeout_ms` + [`centre_api::PROBE_WAIT_MARGIN_MS`] (or `wait_ms`, at most [`centre_api::MAX_WAIT_MS`]). 200 `{"edge","via","result":{"probe","at_ms","status":"ok"\|"failed","phases_us":{"dns",..},"error","error_after_us","detail","redirects"}}`; 400 invalid probe; 404 unknown edge; 504 no answer; 502 the edge refused it |
//! | `GET /api/v1/edges/{id}/results[?probe=N][&wait_ms=N]` | the edge's recent raw results (CoAP `GET /r[?p=N]`), newest first: `{"edge","via","results":[..as above..]}`; waits [`centre_api::RESULTS_WAIT_MS`] by default; 404, 504, 502 as above |
//! | `GET /api/v1/summaries?since=UNIX_S[&limit=N]` | the stored window summaries, oldest first, with phases and error classes (see [`series`]) |
//! | `GET /api/v1/brokers` | `{"brokers":[{"id","address","edges":[ids],"last_batch","batches","records","report"}]}`: every broker, one entry per broker id (`id`: the `broker-id` of its reports, `null` for a broker that sent none; a restarted broker replaces its entry, `address` is where it talks from now): an address that reported itself (`POST /b`), or forwarded batches of several edges or of an edge registered here from another address (see `CentreState::is_broker`); `report` is its last `broker-report` or `null`: `{"at","received","acked","forwarded","queued","queued_bytes","dropped_quota","relayed","relay_timeouts","protected_relayed","rejected":{"malformed",..,"rate_limited","unknown_edge","too_large","incomplete"},"total_edges","edges":[{"id","name","region","registered","seen_ago_ms","cfg","rtt_ms","loss"}]}` |
//! | `GET /api/v1/topology` | `{"nodes":[{"id","kind":"super-manager"\|"broker"\|"edge",..}],"links":[{"from","to","rtt_ms","loss"}],"service_map":{"services","components","links"}}`: edge → broker → super-manager, or edge → super-manager for edges that talk to it directly; `service_map` is the model's services → components → dependencies ([`services_api::service_map`]) |
//!
//! The services' endpoints (`services`, `incidents`, `slos`, `notifications`, `model`,
//! `metrics`, `openapi.json`) are in [`services_api`].
//!
//! An HTTP worker waits for the answer of `probe` and `results` requests: with the default two
//! workers, two such requests at once hold the API until they end (raise `http.workers`).
//! Routes and addresses of edges are kept in memory: after a restart an edge is reachable again
//! once it sent a batch or registered. An edge that talks to this process directly and does not
//! answer is reached by the CoAP retransmissions (up to MAX_TRANSMIT_WAIT, 93 s with the RFC's
//! defaults, bounded by the request's wait); brokers hold requests for edges that are away
//! (their `hold_ms`).
//!
//! `HEAD` is accepted wherever `GET` is. Paths are percent-decoded; query strings are ignored by
//! the endpoints that do not list any (handlers get them through [`Request::query_pairs`]). Errors are JSON too:
//! `{"error": reason, ...}` with 404 (unknown path, echoing `path`), 405 (other methods, with an
//! `Allow` header), 503 (store unavailable), and from the protocol layer 400 (malformed
//! request), 408 (request not received within the read timeout), 411 (chunked body), 413 (body
//! over [`MAX_BODY_BYTES`], refused unread), 414 (URL over [`MAX_URL_BYTES`]), 431 (head over
//! [`parse::MAX_HEAD_BYTES`] or [`parse::MAX_HEADER_LINES`] lines), 501 (other transfer
//! codings), 505 (HTTP version) and 503 (all workers busy and the queue full). Every response
//! has `Content-Type: application/json` and `Cache-Control: no-store`.
//!
//! Each worker owns a read-only store connection ([`StoreRead`]); in WAL mode these never block
//! the ingest writer, and a slow API client never delays ingest.

pub mod auth;
pub mod centre_api;
pub mod dashboard;
pub mod metrics;
pub mod parse;
pub mod series;
pub mod server;
pub mod services_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::centre::Centre;
use crate::stats::IngestStats;
use crate::store::{EdgeRow, StoreRead};

pub use parse::MAX_URL_BYTES;
pub use server::{HttpError, HttpServer, Request, Response, ServerOptions};

/// Prefix of every API path.
pub const API_PREFIX: &str = "/api/v1/";
/// Largest request body accepted (configurations, probes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// An edge is `up` when its last batch arrived at most this long ago.
pub const UP_WINDOW_MS: u64 = 180_000;

const ALLOW: &str = "GET, HEAD";

/// What every worker shares.
pub(crate) struct Shared {
    stats: Arc<IngestStats>,
    started: Instant,
    centre: Option<Arc<Centre>>,
    http: metrics::HttpCounters,
    services: Option<Arc<crate::services::Services>>,
}

/// One worker's API: its own store reader plus the shared state.
struct Api {
    store: Box<dyn StoreRead>,
    shared: Arc<Shared>,
    auth: Arc<auth::Auth>,
}

impl server::Handler for Api {
    fn handle(&mut self, request: &Request) -> Response {
        let response = match self.auth.check(request) {
            Ok(who) => {
                if let Some(name) = who.filter(|_| !matches!(request.method(), "GET" | "HEAD")) {
                    tracing::info!(
                        token = name,
                        method = request.method(),
                        path = request.path(),
                        "HTTP API write"
                    );
                }
                route(request, self.store.as_ref(), &self.shared)
            }
            Err((failure, needed)) => {
                self.shared.http.count_auth(failure);
                tracing::info!(
                    reason = failure.as_str(),
                    method = request.method(),
                    path = request.path(),
                    "HTTP request refused by authentication"
                );
                failure.response(needed)
            }
        };
        self.shared.http.count(response.status);
        response
    }
}

/// Binds `listen` and starts one worker thread per reader, with the default limits
/// ([`ServerOptions::default`], body limit [`MAX_BODY_BYTES`]). `started` is the process start,
/// for `uptime_s`.
/// `centre` serves the endpoints about edges' configurations, probes, brokers and topology
/// (without it they answer 404). `auth` holds the accepted tokens ([`auth`]; none: no checks).
/// With `tls` the API is served over HTTPS only.
#[allow(clippy::too_many_arguments)]
pub fn start(
    listen: SocketAddr,
    readers: Vec<Box<dyn StoreRead>>,
    stats: Arc<IngestStats>,
    started: Instant,
    centre: Option<Arc<Centre>>,
    services: Option<Arc<crate::services::Services>>,
    auth: auth::Auth,
    tls: Option<crate::tls::ServerSlot>,
) -> Result<HttpServer, HttpError> {
    start_secured(
        listen,
        readers,
        stats,
        started,
        ServerOptions::default(),
        centre,
        services,
        auth,
        tls,
    )
}

/// [`start`] with explicit limits and timeouts (tests lower the read timeout).
pub fn start_with(
    listen: SocketAddr,
    readers: Vec<Box<dyn StoreRead>>,
    stats: Arc<IngestStats>,
    started: Instant,
    options: ServerOptions,
) -> Result<HttpServer, HttpError> {
    start_full(listen, readers, stats, started, options, None, None)
}

/// [`start_full`] with the accepted tokens ([`auth`]) and, with `tls`, over HTTPS (`serve`
/// passes `[http]`'s connection and rate limits in `options`).
#[allow(clippy::too_many_arguments)]
pub fn start_secured(
    listen: SocketAddr,
    readers: Vec<Box<dyn StoreRead>>,
    stats: Arc<IngestStats>,
    started: Instant,
    options: ServerOptions,
    centre: Option<Arc<Centre>>,
    services: Option<Arc<crate::services::Services>>,
    auth: auth::Auth,
    tls: Option<crate::tls::ServerSlot>,
) -> Result<HttpServer, HttpError> {
    let shared = Arc::new(Shared {
        stats,
        started,
        centre,
        http: metrics::HttpCounters::default(),
        services,
    });
    let auth = Arc::new(auth);
    let refused = shared.http.refused.clone();
    let handlers = readers
        .into_iter()
        .map(|store| Api {
            store,
            shared: shared.clone(),
            auth: auth.clone(),
        })
        .collect();
    HttpServer::start_counted(listen, handlers, options, tls, refused)
}

/// [`start_with`] and a [`Centre`] and the [`crate::services::Services`].
pub fn start_full(
    listen: SocketAddr,
    readers: Vec<Box<dyn StoreRead>>,
    stats: Arc<IngestStats>,
    started: Instant,
    options: ServerOptions,
    centre: Option<Arc<Centre>>,
    services: Option<Arc<crate::services::Services>>,
) -> Result<HttpServer, HttpError> {
    start_secured(
        listen,
        readers,
        stats,
        started,
        options,
        centre,
        services,
        auth::Auth::default(),
        None,
    )
}

/// 405 with the allowed methods.
fn method_not_allowed(request: &Request, allow: &'static str) -> Response {
    let list: Vec<&str> = allow.split(", ").collect();
    Response::json(
        405,
        &json!({
            "error": "method not allowed",
            "method": request.method(),
            "path": request.path(),
            "allow": list,
        }),
    )
    .with_header("Allow", allow)
}

pub(crate) fn route(request: &Request, store: &dyn StoreRead, shared: &Shared) -> Response {
    let path = request.path();
    let not_found = || Response::json(404, &json!({"error": "no such resource", "path": path}));
    if path == "/metrics" {
        return prometheus(request, store, shared);
    }
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return dashboard::serve(request).unwrap_or_else(not_found);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let get = matches!(request.method(), "GET" | "HEAD");
    let uptime_s = shared.started.elapsed().as_secs();
    let centre = shared.centre.as_deref();
    match (segments.as_slice(), centre) {
        (
            ["health"]
            | ["stats"]
            | ["edges"]
            | ["summaries"]
            | ["brokers"]
            | ["topology"]
            | ["events"],
            _,
        ) if !get => method_not_allowed(request, ALLOW),
        (["health"], _) => health(store, uptime_s),
        (["stats"], _) => stats(store, shared, uptime_s),
        (["edges"], _) => match store.edges() {
            Ok(rows) => {
                let mut body = edges_json(&rows, now_ms());
                if let (Some(c), Some(Value::Array(list))) = (centre, body.get_mut("edges")) {
                    centre_api::augment_edges(&rows, c, list);
                }
                Response::json(200, &body)
            }
            Err(e) => store_unavailable(&e),
        },
        (["summaries"], _) => series::summaries(request, store, centre),
        (["brokers"], Some(c)) => centre_api::brokers(c),
        (["events"], Some(c)) if get => match c.configs.events(200) {
            Ok(list) => Response::json(200, &json!({ "events": list })),
            Err(e) => store_unavailable(&e),
        },
        (["topology"], Some(c)) => {
            let mut body = centre_api::topology_json(c);
            body["service_map"] = services_api::service_map(shared.services.as_deref());
            Response::json(200, &body)
        }
        (["edges", id, what @ ("config" | "probe" | "results")], Some(c)) => {
            let Ok(edge) = id.parse::<u32>() else {
                return Response::json(
                    400,
                    &json!({"error": "bad edge id", "value": id, "reason": "expected a number (0-4294967295)"}),
                );
            };
            match *what {
                "config" => centre_api::config(request, c, edge),
                "probe" => centre_api::probe(request, c, edge),
                _ => centre_api::results(request, c, edge),
            }
        }
        (s, _) if services_api::handles(s) => {
            services_api::route(request, s, shared.services.as_deref())
        }
        _ => not_found(),
    }
}

fn health(store: &dyn StoreRead, uptime_s: u64) -> Response {
    match store.check() {
        Ok(()) => Response::json(
            200,
            &json!({
            "status": "ok",
            "version": crate::VERSION,
            "uptime_s": uptime_s,
            "store": "ok",
            }),
        ),
        Err(e) => Response::json(
            503,
            &json!({
                "status": "degraded",
                "version": crate::VERSION,
                "uptime_s": uptime_s,
                "store": "error",
                "store_error": e.to_string(),
            }),
        ),
    }
}

fn stats(store: &dyn StoreRead, shared: &Shared, uptime_s: u64) -> Response {
    let mut body = shared.stats.snapshot().to_json();
    let store_json = match store.totals() {
        Ok(t) => json!({"records": t.records, "edges": t.edges}),
        Err(e) => json!({"error": e.to_string()}),
    };
    if let Value::Object(map) = &mut body {
        map.insert("store".into(), store_json);
        map.insert("uptime_s".into(), uptime_s.into());
        let auth: serde_json::Map<String, Value> = shared
            .http
            .auth_failures()
            .into_iter()
            .map(|(reason, n)| (reason.to_string(), n.into()))
            .collect();
        map.insert("http_auth_failures".into(), Value::Object(auth));
        let refused: serde_json::Map<String, Value> = (shared.http.refused.snapshot().iter())
            .map(|(reason, n)| (reason.to_string(), (*n).into()))
            .collect();
        map.insert("http_refused".into(), Value::Object(refused));
    }
    Response::json(200, &body)
}

/// `GET /metrics` ([`metrics`]).
fn prometheus(request: &Request, store: &dyn StoreRead, shared: &Shared) -> Response {
    if !matches!(request.method(), "GET" | "HEAD") {
        return method_not_allowed(request, ALLOW);
    }
    let edges = match store.edges() {
        Ok(rows) => rows,
        Err(e) => return store_unavailable(&e),
    };
    let totals = store.totals().ok();
    let mut text = metrics::render(
        &shared.stats.snapshot(),
        totals.as_ref(),
        &edges,
        shared.centre.as_deref(),
        &shared.http,
        shared.started.elapsed().as_secs(),
        now_ms(),
    );
    if let Some(services) = &shared.services {
        match crate::services::exposition::render(services, now_ms() / 1000) {
            Ok(more) => text.push_str(&more),
            Err(e) => return store_unavailable(&e),
        }
    }
    metrics::response(text)
}

fn store_unavailable(e: &crate::store::StoreError) -> Response {
    Response::json(
        503,
        &json!({"error": "store unavailable", "reason": e.to_string()}),
    )
}

/// Renders the edges; `now_ms` decides `up`.
fn edges_json(rows: &[EdgeRow], now_ms: u64) -> Value {
    let edges: Vec<Value> = rows
        .iter()
        .map(|e| {
            json!({
                "id": e.edge_id,
                "name": e.name,
                "region": e.region,
                "up": now_ms.saturating_sub(e.last_seen_ms) <= UP_WINDOW_MS,
                "first_seen": e.first_seen_ms,
                "last_seen": e.last_seen_ms,
                "last_seq": e.last_seq,
                "received": e.received,
                "duplicates": e.duplicates,
                "gaps": e.gaps,
                "dropped_at_edge": e.dropped_at_edge,
            })
        })
        .collect();
    json!({ "edges": edges })
}

/// Wall-clock time in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(edge_id: u32, last_seen_ms: u64) -> EdgeRow {
        EdgeRow {
            edge_id,
            name: None,
            region: Some("eu".into()),
            first_seen_ms: 1,
            last_seen_ms,
            last_seq: Some(4),
            received: 4,
            duplicates: 0,
            gaps: 0,
            dropped_at_edge: 0,
        }
    }

    #[test]
    fn up_means_seen_within_the_window() {
        let now = 1_000_000_000;
        let rows = [
            row(1, now),
            row(2, now - UP_WINDOW_MS),
            row(3, now - UP_WINDOW_MS - 1),
            // A clock step backwards puts last_seen in the future: still up.
            row(4, now + 5_000),
        ];
        let json = edges_json(&rows, now);
        let up: Vec<bool> = json["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["up"].as_bool().unwrap())
            .collect();
        assert_eq!(up, [true, true, false, true]);
        assert_eq!(json["edges"][0]["region"], "eu");
        assert!(json["edges"][0]["name"].is_null());
    }
}
