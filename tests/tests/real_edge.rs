//! The centre's side of the edge contract with the REAL edge (DESIGN.md §3, §6 tier 3):
//! `qos-edge run` → `qos-aggregator broker` → `qos-aggregator serve`, and `qos-edge run`
//! straight to `serve`. (`tests/centre.rs` plays the edge with [`qos_e2e::FakeEdge`] to pin
//! the exact CoAP exchanges; this file checks that the real binaries agree.)
//!
//! For each route: the edge registers (its row in `GET /api/v1/edges` shows its name, region,
//! `registered` and route); `PUT /api/v1/edges/{id}/config` reaches it without a restart (it
//! reports the configuration accepted with the same ETag and the summaries of the new probe
//! are stored); a configuration the centre accepts but the edge refuses (more rules than an
//! edge evaluates) is reported rejected with the reason, and the old one keeps running; an
//! on-demand probe comes back with its phases; the recent results are listed; after a restart
//! the edge registers with `cfg=<etag>`, shown as `cfg` in its row. Waits are bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qos_e2e::{
    free_udp_port, fresh_dir, http_request, start_broker, start_edge_with, wait_for, EdgeSpec,
    Proc, Serve, TcpTarget,
};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(90);

/// The edge polls its configuration every second, so a PUT reaches it soon.
const UPLINK: &str = "config_poll_s = 1";

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-edge")
}

fn call(serve: &Serve, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_request(serve.http, method, path, body, WAIT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e} in {text:?}"));
    (status, json)
}

/// Summaries of `probe` stored for `edge`.
fn stored_summaries(db: &Path, edge: u32, probe: u16) -> Result<u64, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", db.display()))?;
    conn.query_row(
        "SELECT COUNT(*) FROM summaries WHERE edge_id = ?1 AND probe = ?2",
        [i64::from(edge), i64::from(probe)],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(|e| e.to_string())
}

/// A central configuration: probe `probe` (TCP to `target` every 200 ms) and `rules` rules on it.
fn config(probe: u16, target: SocketAddr, rules: usize) -> String {
    let mut s = format!(
        "window_s = 1\n[[probe]]\nid = {probe}\nkind = \"tcp\"\ntarget = \"{target}\"\n\
         interval_ms = 200\ntimeout_ms = 150\n"
    );
    for i in 0..rules {
        // Distinct rules: k of n with n = 32, k = 1..=32, then n = 31.
        let (k, n) = if i < 32 { (i + 1, 32) } else { (i - 31, 31) };
        s.push_str(&format!(
            "[[rule]]\nprobe = {probe}\nmetric = \"availability\"\nk = {k}\nn = {n}\n"
        ));
    }
    s
}

fn edge_spec(dir: &Path, id: u32, upstream: SocketAddr, target: SocketAddr) -> EdgeSpec {
    EdgeSpec {
        id,
        brokers: vec![upstream],
        target,
        storage: dir.join(format!("edge-{id}-data")),
        extra_toml: String::new(),
        bind: None,
    }
}

/// Everything, for the real edge `spec` whose route is `via` (`"direct"` or the broker's
/// address as serve sees it, `None`: whichever broker serve lists).
fn exercise(serve: &Serve, dir: &Path, spec: &EdgeSpec, edge: Proc, via: Option<&str>) {
    let id = spec.id;
    let row = wait_for("the edge's row to show its registration", WAIT, || {
        let row = serve.edge_row(id)?;
        let route_ok = match via {
            Some(v) => row["broker"] == v,
            None => row["broker"].is_string() && row["broker"] != "direct",
        };
        if route_ok && row["registered"] == true && row["name"] == format!("e2e-{id}") {
            Ok(row)
        } else {
            Err(format!("{row}\n{}", edge.log_tail()))
        }
    });
    assert_eq!(row["region"], "loopback", "{row}");

    // A new configuration: probe 7 instead of the TOML's probe 1, applied without a restart.
    let target = spec.target;
    let (status, put) = call(
        serve,
        "PUT",
        &format!("/api/v1/edges/{id}/config"),
        &config(7, target, 1),
    );
    assert_eq!(status, 200, "{put}");
    let etag = put["etag"].as_u64().expect("an etag");
    let got = wait_for("the edge to report the configuration applied", WAIT, || {
        let (_, got) = call(serve, "GET", &format!("/api/v1/edges/{id}/config"), "");
        if got["applied"] == true {
            Ok(got)
        } else {
            Err(format!("{got}\n{}", edge.log_tail()))
        }
    });
    assert_eq!(got["last_report"]["etag"], etag, "{got}");
    assert_eq!(got["last_report"]["accepted"], true, "{got}");
    assert_eq!(got["last_report"]["applied_etag"], etag, "{got}");
    let db = serve.database();
    let n7 = wait_for(
        "summaries of the new probe to be stored",
        WAIT,
        || match stored_summaries(&db, id, 7)? {
            n if n >= 2 => Ok(n),
            n => Err(format!("{n} summaries of probe 7\n{}", edge.log_tail())),
        },
    );
    println!("edge {id}: {n7} summaries of probe 7 stored after the configuration");

    // The centre accepts 33 rules (the wire allows 64); the edge evaluates 32 at most.
    let (status, put) = call(
        serve,
        "PUT",
        &format!("/api/v1/edges/{id}/config"),
        &config(7, target, 33),
    );
    assert_eq!(status, 200, "{put}");
    let bad = put["etag"].as_u64().expect("an etag");
    assert_ne!(bad, etag);
    let got = wait_for(
        "the edge to report the configuration rejected",
        WAIT,
        || {
            let (_, got) = call(serve, "GET", &format!("/api/v1/edges/{id}/config"), "");
            if got["last_report"]["etag"] == bad {
                Ok(got)
            } else {
                Err(format!("{got}\n{}", edge.log_tail()))
            }
        },
    );
    assert_eq!(got["last_report"]["accepted"], false, "{got}");
    assert_eq!(got["applied"], false, "{got}");
    assert_eq!(got["last_report"]["applied_etag"], etag, "{got}");
    assert_eq!(got["last_report"]["rejected_etag"], bad, "{got}");
    let reason = got["last_report"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("rules"), "reason names the rules: {got}");
    println!("edge {id}: rejected with {reason:?}");
    // The old configuration keeps running: more summaries of probe 7.
    let before = stored_summaries(&db, id, 7).unwrap();
    wait_for(
        "more summaries of probe 7 under the old configuration",
        WAIT,
        || match stored_summaries(&db, id, 7)? {
            n if n >= before + 2 => Ok(n),
            n => Err(format!("{n} (was {before})")),
        },
    );

    // An on-demand probe: a real result with its phases.
    let (status, r) = call(
        serve,
        "POST",
        &format!("/api/v1/edges/{id}/probe"),
        &format!(
            "{{\"id\": 42, \"kind\": \"tcp\", \"target\": \"{target}\", \"timeout_ms\": 1000}}"
        ),
    );
    assert_eq!(status, 200, "{r}\n{}", edge.log_tail());
    if let Some(v) = via {
        assert_eq!(r["via"], v, "{r}");
    }
    assert_eq!(r["result"]["probe"], 42, "{r}");
    assert_eq!(r["result"]["status"], "ok", "{r}");
    let connect = r["result"]["phases_us"]["connect"]
        .as_u64()
        .expect("connect");
    let total = r["result"]["phases_us"]["total"].as_u64().expect("total");
    assert!(connect <= total, "{r}");

    // The recent results: the scheduled runs of probe 7 and the on-demand one.
    let (status, list) = call(serve, "GET", &format!("/api/v1/edges/{id}/results"), "");
    assert_eq!(status, 200, "{list}");
    let results = list["results"].as_array().expect("results");
    assert!(results.iter().any(|r| r["probe"] == 42), "{list}");
    assert!(results.iter().any(|r| r["probe"] == 7), "{list}");
    let (status, list) = call(
        serve,
        "GET",
        &format!("/api/v1/edges/{id}/results?probe=7"),
        "",
    );
    assert_eq!(status, 200, "{list}");
    let results = list["results"].as_array().expect("results");
    assert!(
        !results.is_empty() && results.iter().all(|r| r["probe"] == 7),
        "{list}"
    );

    // Restarted, the edge keeps the applied configuration and registers with cfg=<etag>.
    edge.stop(WAIT);
    let edge = start_edge_with(dir, spec, UPLINK);
    let row = wait_for("the edge's row to show cfg", WAIT, || {
        let row = serve.edge_row(id)?;
        if row["cfg"] == etag && row["registered"] == true {
            Ok(row)
        } else {
            Err(format!("{row}\n{}", edge.log_tail()))
        }
    });
    println!("edge {id}: {row}");
    edge.stop(WAIT);
}

#[test]
fn real_edge_through_a_broker() {
    let dir = fresh_dir(&base(), "broker");
    let target = TcpTarget::start();
    let serve = Serve::start(&dir);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let _broker = start_broker(&dir, 0, listen, serve.coap, "");
    let spec = edge_spec(&dir, 31, listen, target.addr);
    let edge = start_edge_with(&dir, &spec, UPLINK);
    exercise(&serve, &dir, &spec, edge, None);
}

#[test]
fn real_edge_straight_to_serve() {
    let dir = fresh_dir(&base(), "direct");
    let target = TcpTarget::start();
    let serve = Serve::start(&dir);
    let spec = edge_spec(&dir, 32, serve.coap, target.addr);
    let edge = start_edge_with(&dir, &spec, UPLINK);
    exercise(&serve, &dir, &spec, edge, Some("direct"));
}
