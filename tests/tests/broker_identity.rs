//! Brokers are told apart by their id, not their source address (real processes):
//!
//! - a broker (no `[broker] id`: it makes one at its first start and keeps it in its data
//!   directory) is killed with SIGKILL; serve raises `broker_silent`; restarted, it talks from
//!   a new ephemeral port, and serve shows ONE entry for it (same id, new address), closes the
//!   silence with `broker_back`, and no silence of the old address stays behind, even after
//!   more than the silence threshold has passed;
//! - a broker whose upstream is plaintext to another machine refuses to start, naming the key
//!   and the address, unless `[upstream] allow_plaintext = true` (then it starts, with a
//!   warning); serve's `[coap_tcp]` off loopback likewise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qos_coap::Code;
use qos_e2e::{
    binary, free_udp_port, fresh_dir, http_get, start_broker, wait_for, FakeEdge, Proc, Serve,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broker_identity")
}

fn brokers(serve: &Serve) -> Result<Vec<Value>, String> {
    Ok(serve.get_json("/api/v1/brokers")?["brokers"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn events(serve: &Serve, kind: &str) -> Result<Vec<Value>, String> {
    Ok(serve
        .events()?
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect())
}

fn metric(serve: &Serve, name: &str) -> Result<u64, String> {
    let (status, text) = http_get(serve.http, "/metrics")?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| format!("{name} not in /metrics"))
}

/// The single broker entry, once it reported with an id and lists edge `edge`.
fn one_broker(serve: &Serve, edge: u32, not_at: Option<&str>) -> Value {
    wait_for("one broker entry with its id", WAIT, || {
        let list = brokers(serve)?;
        match list.as_slice() {
            [b] if b["id"].is_string()
                && b["edges"]
                    .as_array()
                    .is_some_and(|e| e.contains(&edge.into()))
                && b["report"].is_object()
                && not_at.is_none_or(|old| b["address"] != old) =>
            {
                Ok(b.clone())
            }
            _ => Err(format!("{list:?}")),
        }
    })
}

#[test]
fn a_restarted_broker_replaces_its_entry_and_leaves_no_silence_behind() {
    let dir = fresh_dir(&base(), "restart");
    let serve = Serve::start_with(&dir, "[watch]\nbroker_silent_after_ms = 3000\n");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(&dir, 0, listen, serve.coap, "report_interval_ms = 500");
    let edge = FakeEdge::start(71, listen);
    assert_eq!(
        edge.register("edge-71", "north").unwrap().code,
        Code::CREATED
    );
    assert_eq!(edge.send_batch(1).unwrap().code, Code::CHANGED);
    let before = one_broker(&serve, 71, None);
    let id = before["id"].as_str().unwrap().to_string();
    let old = before["address"].as_str().unwrap().to_string();
    let kept = std::fs::read_to_string(dir.join("broker-data").join("broker-id")).unwrap();
    assert_eq!(kept.trim(), id, "the id made at the first start is kept");
    println!("broker {id} at {old}");

    broker.kill9();
    let silent = wait_for("broker_silent", WAIT, || {
        let ev = events(&serve, "broker_silent")?;
        if ev.is_empty() {
            Err("none yet".into())
        } else {
            Ok(ev)
        }
    });
    assert_eq!(silent.len(), 1, "{silent:?}");
    assert_eq!(silent[0]["broker"], old.as_str());

    // Restarted with the same configuration and data: a new upstream port, the same id.
    let broker = start_broker(&dir, 1, listen, serve.coap, "report_interval_ms = 500");
    assert_eq!(edge.send_batch(2).unwrap().code, Code::CHANGED);
    let after = one_broker(&serve, 71, Some(&old));
    assert_eq!(after["id"], id.as_str(), "{after}");
    let new = after["address"].as_str().unwrap().to_string();
    let back = wait_for("broker_back", WAIT, || {
        let ev = events(&serve, "broker_back")?;
        if ev.is_empty() {
            Err("none yet".into())
        } else {
            Ok(ev)
        }
    });
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["broker"], new.as_str(), "{back:?}");
    assert!(
        back[0]["edges"].as_array().unwrap().contains(&71.into()),
        "{back:?}"
    );
    wait_for("edge 71 stored twice", WAIT, || match serve.received(71) {
        Ok(2) => Ok(()),
        other => Err(format!("{other:?}")),
    });

    // Let more than the silence threshold pass on serve's own clock (the new broker's report
    // times), then: still one entry, nothing silent, no second broker_silent.
    let first_at = after["report"]["at"].as_u64().unwrap();
    wait_for("serve's clock past the silence threshold", WAIT, || {
        let list = brokers(&serve)?;
        let at = list
            .first()
            .and_then(|b| b["report"]["at"].as_u64())
            .unwrap_or(0);
        if at >= first_at + 4_000 {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    });
    let list = brokers(&serve).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["address"], new.as_str());
    assert_eq!(events(&serve, "broker_silent").unwrap().len(), 1);
    assert_eq!(metric(&serve, "qos_brokers_silent"), Ok(0));
    let row = serve.edge_row(71).unwrap();
    assert!(row["behind_silent_broker"].is_null(), "{row}");
    assert_eq!(row["broker"], new.as_str(), "{row}");
    let (_, text) = http_get(serve.http, "/metrics").unwrap();
    assert!(
        !text.contains(&format!("broker=\"{old}\"")),
        "no series left for the old address"
    );
    drop(edge);
    broker.stop(WAIT);
    serve.proc.stop(WAIT);
}

/// Runs `qos-aggregator ARGS` to its end; (exit code, output).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary("qos-aggregator"))
        .args(args)
        .output()
        .expect("run qos-aggregator");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn plaintext_to_another_machine_needs_allow_plaintext() {
    let dir = fresh_dir(&base(), "plaintext");
    let data = dir.join("broker-data").display().to_string();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    // 192.0.2.0/24 is documentation space; with reports off and no edge, nothing is sent.
    let config = format!(
        "[broker]\nlisten = \"{listen}\"\nupstream = \"192.0.2.10:5683\"\ndata_dir = {data:?}\n\
         report_interval_ms = 0\nping_interval_ms = 0\n"
    );
    let refused = write(&dir.join("refused.toml"), &config);
    let (code, text) = run(&["broker", "--config", &refused]);
    assert_eq!(code, Some(2), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("broker.upstream"))
        .unwrap_or_else(|| panic!("the key is named: {text}"));
    assert!(line.contains("192.0.2.10:5683"), "{line}");
    assert!(line.contains("allow_plaintext"), "{line}");

    let allowed = write(
        &dir.join("allowed.toml"),
        &format!("{config}\n[upstream]\nallow_plaintext = true\n"),
    );
    let log = dir.join("allowed.log");
    let mut proc = Proc::spawn(
        "qos-aggregator broker",
        &binary("qos-aggregator"),
        &["broker", "--config", &allowed],
        &log,
    );
    let text = wait_for("the broker to start with a warning", WAIT, || {
        if let Some(status) = proc.exited() {
            panic!("exited with {status}: {}", proc.log_tail());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("broker listening") && text.contains("plaintext upstream") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    let warning = text
        .lines()
        .find(|l| l.contains("plaintext upstream"))
        .unwrap();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("192.0.2.10:5683"), "{warning}");
    proc.stop(WAIT);

    // Loopback: a notice, not a warning.
    let loopback = write(
        &dir.join("loopback.toml"),
        &config.replace("192.0.2.10:5683", "127.0.0.1:9"),
    );
    let log = dir.join("loopback.log");
    let mut proc = Proc::spawn(
        "qos-aggregator broker",
        &binary("qos-aggregator"),
        &["broker", "--config", &loopback],
        &log,
    );
    let text = wait_for("the broker to start with a notice", WAIT, || {
        if let Some(status) = proc.exited() {
            panic!("exited with {status}: {}", proc.log_tail());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("plaintext upstream on loopback") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    let notice = text
        .lines()
        .find(|l| l.contains("plaintext upstream on loopback"))
        .unwrap();
    assert!(notice.contains("INFO"), "{notice}");
    proc.stop(WAIT);

    // serve's plain CoAP-over-TCP listener for brokers off loopback: refused at start.
    let serve = write(
        &dir.join("serve.toml"),
        &format!(
            "[store]\ndata_dir = {:?}\n\n[coap_tcp]\nlisten = \"0.0.0.0:5683\"\n",
            dir.join("data").display().to_string()
        ),
    );
    let (code, text) = run(&["serve", "--config", &serve]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("coap_tcp.listen"), "{text}");
    assert!(text.contains("coap_tcp.allow_plaintext"), "{text}");
}
