//! Block-wise batches (RFC 7959 Block1) from the REAL Linux edge: `qos-edge run` is cut off
//! from its uplink peer (a relay on loopback that drops every datagram) until its outbox holds
//! well over 1 KiB of summaries, then the link is restored. The backlog goes in Block1 blocks
//! (`uplink.max_body = 8192`, `uplink.block_size = 512`):
//!
//! - straight to `qos-aggregator serve` (its own CoAP port reassembles);
//! - through a `qos-aggregator broker` (it reassembles and splits upstream).
//!
//! Checked: the edge sent at least one batch block-wise and never fell back; what serve stored
//! is what the edge had acknowledged (at most the records of a batch in flight when it
//! stopped more), no duplicates, no gaps, nothing dropped. Waits are bounded by conditions
//! (the size of the edge's saved outbox, serve's counters), with generous timeouts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qos_e2e::relay::LossyRelay;
use qos_e2e::{
    free_udp_port, fresh_dir, start_broker, start_edge_with, wait_for, EdgeSpec, Serve, TcpTarget,
};

const WAIT: Duration = Duration::from_secs(120);
/// The saved outbox must reach this size (bytes) while cut off: several blocks' worth.
const BACKLOG_BYTES: u64 = 4000;
const UPLINK: &str = "max_body = 8192\nblock_size = 512\nconfig_poll_s = 0";

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("blockwise-edge")
}

/// Seven more TCP probes on `target`, so summaries pile up quickly (windows of 1 s).
fn probes(target: SocketAddr) -> String {
    (2..=8)
        .map(|id| {
            format!(
                "[[probe]]\nid = {id}\nkind = \"tcp\"\ntarget = \"{target}\"\n\
                 interval_ms = 200\ntimeout_ms = 150\n\n"
            )
        })
        .collect()
}

fn outbox_len(storage: &Path) -> u64 {
    std::fs::metadata(storage.join("outbox.bin")).map_or(0, |m| m.len())
}

/// The value of `key=` on the edge's "edge stopped" log line (ANSI colours removed).
fn stopped_field(log: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(log).expect("the edge's log");
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("edge stopped"))
        .unwrap_or_else(|| panic!("no 'edge stopped' line in {}", log.display()));
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let at = plain
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {plain}"));
    plain[at + key.len() + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {plain}: {e}"))
}

fn cut_off_then_restored(name: &str, id: u32, via_broker: bool) {
    let dir = fresh_dir(&base(), name);
    let serve = Serve::start(&dir);
    let target = TcpTarget::start();
    let broker = via_broker.then(|| {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        (start_broker(&dir, 0, listen, serve.coap, ""), listen)
    });
    let peer = broker.as_ref().map_or(serve.coap, |b| b.1);
    let relay = LossyRelay::start(peer);
    relay.set(0, 1); // cut: every datagram dropped
    let storage = dir.join("edge-store");
    let spec = EdgeSpec {
        id,
        brokers: vec![relay.addr],
        target: target.addr,
        storage: storage.clone(),
        extra_toml: probes(target.addr),
        bind: None,
    };
    let edge = start_edge_with(&dir, &spec, UPLINK);
    let log = dir.join(format!("edge-{id}.log"));

    let backlog = wait_for(
        "a backlog in the edge's outbox",
        WAIT,
        || match outbox_len(&storage) {
            n if n >= BACKLOG_BYTES => Ok(n),
            n => Err(format!("outbox.bin: {n} bytes")),
        },
    );
    println!("{name}: backlog of {backlog} bytes saved; restoring the link");
    relay.set(0, 0);
    // Drained: the saved outbox is small again, and serve holds well over a backlog.
    wait_for("the backlog to drain", WAIT, || {
        let stored = serve.received(id)?;
        match outbox_len(&storage) {
            n if n < 1000 && stored > 60 => Ok(()),
            n => Err(format!("outbox.bin {n} bytes, {stored} stored")),
        }
    });
    edge.stop(WAIT);
    let acked = stopped_field(&log, "acked_records");
    let in_flight = stopped_field(&log, "in_flight");
    let row = wait_for(
        "serve to store what the edge had acknowledged",
        WAIT,
        || {
            let row = serve.edge_row(id)?;
            match row["received"].as_u64() {
                Some(n) if n >= acked => Ok(row),
                _ => Err(format!("{row}")),
            }
        },
    );
    println!(
        "{name}: {row}; edge: acked {acked}, in flight {in_flight}, block batches {}, blocks {}",
        stopped_field(&log, "block_batches"),
        stopped_field(&log, "blocks")
    );
    let received = row["received"].as_u64().unwrap();
    assert!(
        received >= acked && received <= acked + in_flight,
        "stored {received}, acknowledged {acked} (+{in_flight} in flight)"
    );
    assert_eq!(row["duplicates"], 0, "{row}");
    assert_eq!(row["gaps"], 0, "{row}");
    assert_eq!(row["dropped_at_edge"], 0, "{row}");
    assert_eq!(stopped_field(&log, "dropped_records"), 0);
    assert!(
        stopped_field(&log, "block_batches") >= 1,
        "the backlog went block-wise"
    );
    assert!(stopped_field(&log, "blocks") >= 4, "several blocks");
    assert_eq!(stopped_field(&log, "block_fallbacks"), 0);
    if let Some((b, _)) = broker {
        b.stop(WAIT);
    }
    serve.proc.stop(WAIT);
}

#[test]
fn a_cut_off_edge_sends_its_backlog_block_wise_straight_to_serve() {
    cut_off_then_restored("direct", 301, false);
}

#[test]
fn a_cut_off_edge_sends_its_backlog_block_wise_through_a_broker() {
    cut_off_then_restored("broker", 302, true);
}
