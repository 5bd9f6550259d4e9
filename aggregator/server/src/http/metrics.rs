//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4) of what
//! `GET /api/v1/stats`, `/api/v1/edges` and `/api/v1/brokers` show, for scrapers:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `qos_ingest_datagrams_total` etc. | | the ingest counters of `/api/v1/stats` (`datagrams`, `batches`, `records`, `duplicates`, `stored`, `acked`) |
//! | `qos_ingest_rejected_total` | `reason` | refusals by reason (`malformed`, `truncated`, `oversized`, `unsupported_version`, `rate_limited`, `unknown_edge`, `oscore_forged`, `oscore_replay`, ...) |
//! | `qos_store_records` | | records in the store |
//! | `qos_edge_received_total`, `qos_edge_duplicates_total`, `qos_edge_gaps_total`, `qos_edge_dropped_total` | `edge` | per edge: records stored, received again, forward jumps of its numbering, dropped at the edge (its own count) |
//! | `qos_broker_received_total`, `..._acked_total`, `..._forwarded_total`, `..._dropped_quota_total`, `..._relayed_total`, `..._relay_timeouts_total`, `..._protected_relayed_total`, `qos_broker_queued`, `qos_broker_queued_bytes`, `qos_broker_edges` | `broker` | each broker's last report (`POST /b`) |
//! | `qos_broker_rejected_total` | `broker`, `reason` | the broker's refusals by reason |
//! | `qos_broker_report_age_seconds` | `broker` | since its last report |
//! | `qos_silence_events_total` | `kind` | events of [`crate::silence`] raised since start (`broker_silent`, `broker_back`, `region_silent`, `region_back`) |
//! | `qos_regions_silent`, `qos_brokers_silent` | | regions and brokers silent now |
//! | `qos_http_requests_total` | `code` | HTTP requests answered, by status class (`2xx`, `4xx`, `5xx`, ...) |
//! | `qos_http_refused_total` | `reason` | HTTP connections and requests turned away by the server's limits (`connections`, `peer_connections`, `rate_limited`, `too_large`, `timeout`) |
//! | `qos_uptime_seconds` | | since start |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::centre::Centre;
use crate::stats::StatsSnapshot;
use crate::store::{EdgeRow, StoreTotals};

use super::server::Response;

/// HTTP requests answered, by status class (index 1 to 5).
#[derive(Debug, Default)]
pub struct HttpCounters {
    by_class: [AtomicU64; 6],
    auth_failures: [AtomicU64; 4],
    /// Connections and requests the server turned away by its limits ([`super::server`]).
    pub refused: std::sync::Arc<super::server::Refusals>,
}

impl HttpCounters {
    /// One answer with `status`.
    pub fn count(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// One request refused by authentication ([`super::auth`]).
    pub fn count_auth(&self, failure: super::auth::Failure) {
        self.auth_failures[failure.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The authentication failures by reason, in [`super::auth::Failure::ALL`] order.
    pub fn auth_failures(&self) -> [(&'static str, u64); 4] {
        super::auth::Failure::ALL.map(|f| {
            (
                f.as_str(),
                self.auth_failures[f.index()].load(Ordering::Relaxed),
            )
        })
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition.
pub fn render(
    stats: &StatsSnapshot,
    totals: Option<&StoreTotals>,
    edges: &[EdgeRow],
    centre: Option<&Centre>,
    http: &HttpCounters,
    uptime_s: u64,
    now_unix_ms: u64,
) -> String {
    let mut out = String::with_capacity(4096);
    for (name, help, v) in [
        (
            "qos_ingest_datagrams_total",
            "Datagrams received by the CoAP ingest (valid or not).",
            stats.received.datagrams,
        ),
        (
            "qos_ingest_batches_total",
            "Uplink batches decoded.",
            stats.received.batches,
        ),
        (
            "qos_ingest_records_total",
            "Records decoded (new or duplicate).",
            stats.received.records,
        ),
        (
            "qos_ingest_duplicates_total",
            "Records already stored, ignored.",
            stats.duplicates,
        ),
        (
            "qos_ingest_stored_total",
            "Records stored for the first time.",
            stats.stored,
        ),
        (
            "qos_ingest_acked_total",
            "Acknowledgements sent.",
            stats.acked,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        &mut out,
        "qos_ingest_rejected_total",
        "counter",
        "Datagrams, records and requests refused, by reason.",
    );
    for (reason, n) in stats.rejected {
        let _ = writeln!(
            out,
            "qos_ingest_rejected_total{{reason=\"{}\"}} {n}",
            reason.name()
        );
    }
    if let Some(t) = totals {
        family(
            &mut out,
            "qos_store_records",
            "gauge",
            "Records in the store.",
        );
        let _ = writeln!(out, "qos_store_records {}", t.records);
    }
    for (name, help, get) in [
        (
            "qos_edge_received_total",
            "Records of the edge stored.",
            (|e: &EdgeRow| e.received) as fn(&EdgeRow) -> u64,
        ),
        (
            "qos_edge_duplicates_total",
            "Records of the edge received again and ignored.",
            |e: &EdgeRow| e.duplicates,
        ),
        (
            "qos_edge_gaps_total",
            "Forward jumps of the edge's numbering within a boot epoch.",
            |e: &EdgeRow| e.gaps,
        ),
        (
            "qos_edge_dropped_total",
            "Records the edge dropped itself (its cumulative count).",
            |e: &EdgeRow| e.dropped_at_edge,
        ),
    ] {
        if edges.is_empty() {
            continue;
        }
        family(&mut out, name, "counter", help);
        for e in edges {
            let _ = writeln!(out, "{name}{{edge=\"{}\"}} {}", e.edge_id, get(e));
        }
    }
    if let Some(c) = centre {
        let st = c.state();
        family(
            &mut out,
            "qos_silence_events_total",
            "counter",
            "Silence events raised since start, by kind.",
        );
        for kind in [
            "broker_silent",
            "broker_back",
            "region_silent",
            "region_back",
        ] {
            let n = st.silence_events.get(kind).copied().unwrap_or(0);
            let _ = writeln!(out, "qos_silence_events_total{{kind=\"{kind}\"}} {n}");
        }
        family(
            &mut out,
            "qos_regions_silent",
            "gauge",
            "Regions whose brokers and direct edges are all silent now.",
        );
        let _ = writeln!(out, "qos_regions_silent {}", st.silent_regions.len());
        family(
            &mut out,
            "qos_brokers_silent",
            "gauge",
            "Brokers silent now (on their own or within a silent region).",
        );
        let _ = writeln!(out, "qos_brokers_silent {}", st.silent.len());
        if !st.reports.is_empty() {
            type Get = fn(&qos_broker::BrokerReport) -> u64;
            let per_broker: [(&str, &str, &str, Get); 10] = [
                (
                    "qos_broker_received_total",
                    "counter",
                    "Batches the broker received from edges.",
                    |r| r.stats.received,
                ),
                (
                    "qos_broker_acked_total",
                    "counter",
                    "Batches the broker acknowledged to edges.",
                    |r| r.stats.acked,
                ),
                (
                    "qos_broker_forwarded_total",
                    "counter",
                    "Batches the broker forwarded upstream.",
                    |r| r.stats.forwarded,
                ),
                (
                    "qos_broker_dropped_quota_total",
                    "counter",
                    "Batches the broker's queue quota dropped.",
                    |r| r.stats.dropped_quota,
                ),
                (
                    "qos_broker_relayed_total",
                    "counter",
                    "Requests the broker relayed with an answer.",
                    |r| r.stats.relayed,
                ),
                (
                    "qos_broker_relay_timeouts_total",
                    "counter",
                    "Relayed requests answered 5.04.",
                    |r| r.stats.relay_timeouts,
                ),
                (
                    "qos_broker_protected_relayed_total",
                    "counter",
                    "OSCORE-protected requests of edges the broker relayed unread.",
                    |r| r.protected_relayed,
                ),
                (
                    "qos_broker_queued",
                    "gauge",
                    "Batches waiting in the broker's queue.",
                    |r| r.stats.queued,
                ),
                (
                    "qos_broker_queued_bytes",
                    "gauge",
                    "Payload bytes waiting in the broker's queue.",
                    |r| r.stats.queued_bytes,
                ),
                (
                    "qos_broker_edges",
                    "gauge",
                    "Edges the broker's registry knows.",
                    |r| r.total_edges,
                ),
            ];
            for (name, kind, help, get) in per_broker {
                family(&mut out, name, kind, help);
                for (addr, (_, r)) in st.reports.iter() {
                    let _ = writeln!(
                        out,
                        "{name}{{broker=\"{}\"}} {}",
                        label(&addr.to_string()),
                        get(r)
                    );
                }
            }
            family(
                &mut out,
                "qos_broker_rejected_total",
                "counter",
                "Datagrams and requests the broker refused, by reason.",
            );
            for (addr, (_, r)) in st.reports.iter() {
                for (reason, n) in qos_broker::report::REJECT_REASONS
                    .iter()
                    .zip(r.stats.rejected)
                {
                    let _ = writeln!(
                        out,
                        "qos_broker_rejected_total{{broker=\"{}\",reason=\"{reason}\"}} {n}",
                        label(&addr.to_string())
                    );
                }
            }
            family(
                &mut out,
                "qos_broker_report_age_seconds",
                "gauge",
                "Seconds since the broker's last report.",
            );
            for (addr, (at, _)) in st.reports.iter() {
                let age = now_unix_ms.saturating_sub(*at) as f64 / 1000.0;
                let _ = writeln!(
                    out,
                    "qos_broker_report_age_seconds{{broker=\"{}\"}} {age}",
                    label(&addr.to_string())
                );
            }
        }
    }
    family(
        &mut out,
        "qos_http_requests_total",
        "counter",
        "HTTP requests answered, by status class.",
    );
    for (class, c) in http.by_class.iter().enumerate().skip(1) {
        let _ = writeln!(
            out,
            "qos_http_requests_total{{code=\"{class}xx\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "qos_http_auth_failures_total",
        "counter",
        "HTTP requests refused by authentication, by reason (missing, malformed or invalid token: 401; forbidden role: 403).",
    );
    for (reason, n) in http.auth_failures() {
        let _ = writeln!(
            out,
            "qos_http_auth_failures_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(
        &mut out,
        "qos_http_refused_total",
        "counter",
        "HTTP connections and requests turned away by the server's limits, by reason (connections, peer_connections: 503; rate_limited: 429; too_large: 413/414/431; timeout: 408).",
    );
    for (reason, n) in http.refused.snapshot() {
        let _ = writeln!(out, "qos_http_refused_total{{reason=\"{reason}\"}} {n}");
    }
    family(
        &mut out,
        "qos_uptime_seconds",
        "gauge",
        "Seconds since the process started.",
    );
    let _ = writeln!(out, "qos_uptime_seconds {uptime_s}");
    out
}

/// The answer of `GET /metrics`.
pub fn response(text: String) -> Response {
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        headers: vec![("Cache-Control", "no-store".into())],
        body: text.into_bytes(),
        close: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{IngestStats, RejectReason};

    #[test]
    fn renders_counters_by_reason_and_edge() {
        let s = IngestStats::new();
        s.add_datagrams(3);
        s.reject(RejectReason::RateLimited);
        let http = HttpCounters::default();
        http.count(200);
        http.count(404);
        http.count_auth(crate::http::auth::Failure::Forbidden);
        http.refused
            .count(crate::http::server::Refusal::PeerConnections);
        let edge = EdgeRow {
            edge_id: 7,
            name: None,
            region: None,
            first_seen_ms: 0,
            last_seen_ms: 0,
            last_seq: None,
            received: 5,
            duplicates: 1,
            gaps: 2,
            dropped_at_edge: 3,
        };
        let text = render(&s.snapshot(), None, &[edge], None, &http, 9, 0);
        assert!(text.contains("qos_ingest_datagrams_total 3\n"), "{text}");
        assert!(text.contains("qos_ingest_rejected_total{reason=\"rate_limited\"} 1\n"));
        assert!(text.contains("qos_edge_gaps_total{edge=\"7\"} 2\n"));
        assert!(text.contains("qos_http_requests_total{code=\"4xx\"} 1\n"));
        assert!(text.contains("qos_http_auth_failures_total{reason=\"forbidden\"} 1\n"));
        assert!(text.contains("qos_http_auth_failures_total{reason=\"missing\"} 0\n"));
        assert!(text.contains("qos_http_refused_total{reason=\"peer_connections\"} 1\n"));
        assert!(text.contains("qos_http_refused_total{reason=\"rate_limited\"} 0\n"));
        assert!(text.contains("# TYPE qos_edge_received_total counter\n"));
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
