//! Link quality in the registry: a real `qos-edge` reaches a real `qos-aggregator broker`
//! through a [`LossyRelay`] on loopback; `serve` behind the broker shows the edge's `rtt_ms`
//! and `loss` in `GET /api/v1/edges` and `GET /api/v1/topology`, from the broker's reports.
//! First the relay forwards at once; then it delays every datagram by 150 ms and drops every
//! fourth one: the round trip must rise to at least the one-way delay the relay adds (the
//! smoothed value climbs towards the 300 ms samples from below), and the loss rate above what
//! it was. Nothing is asserted on how long that takes (conditions are polled).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qos_e2e::relay::LossyRelay;
use qos_e2e::{
    free_udp_port, fresh_dir, start_broker, start_edge, wait_for, EdgeSpec, Serve, TcpTarget,
};

const WAIT: Duration = Duration::from_secs(120);
const EDGE: u32 = 61;
const DELAY_MS: u64 = 150;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("link-quality")
}

/// `(rtt_ms, loss)` of the edge once both are measured.
fn link(serve: &Serve) -> Result<(u64, f64), String> {
    let row = serve.edge_row(EDGE)?;
    match (row["rtt_ms"].as_u64(), row["loss"].as_f64()) {
        (Some(r), Some(l)) => Ok((r, l)),
        _ => Err(format!("not measured yet: {row}")),
    }
}

#[test]
fn round_trip_and_loss_rise_behind_a_slow_lossy_relay() {
    let dir = fresh_dir(&base(), "relay");
    let serve = Serve::start(&dir);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(
        &dir,
        0,
        listen,
        serve.coap,
        "ping_interval_ms = 200\nreport_interval_ms = 500",
    );
    let relay = LossyRelay::start(listen);
    let target = TcpTarget::start();
    let edge = start_edge(
        &dir,
        &EdgeSpec {
            id: EDGE,
            brokers: vec![relay.addr],
            target: target.addr,
            storage: dir.join("edge"),
            extra_toml: String::new(),
            bind: None,
        },
    );

    let (rtt0, loss0) = wait_for("a first measurement", WAIT, || link(&serve));
    println!("direct: rtt_ms = {rtt0}, loss = {loss0}");
    relay.set(DELAY_MS, 4);
    let (rtt1, loss1) = wait_for("round trip and loss to rise", WAIT, || {
        let (rtt, loss) = link(&serve)?;
        if rtt >= DELAY_MS && rtt > rtt0 && loss > loss0 {
            Ok((rtt, loss))
        } else {
            Err(format!("rtt_ms = {rtt}, loss = {loss}"))
        }
    });
    println!(
        "behind the relay ({DELAY_MS} ms each way, every 4th datagram dropped, {} dropped): \
         rtt_ms = {rtt1}, loss = {loss1}",
        relay.dropped()
    );
    assert!(rtt1 > rtt0 && loss1 > loss0);
    assert!(relay.dropped() > 0);
    // The topology carries the same figures on the edge's link to the broker.
    let topo = serve.get_json("/api/v1/topology").expect("topology");
    let l = topo["links"]
        .as_array()
        .and_then(|ls| {
            ls.iter()
                .find(|l| l["from"] == format!("edge:{EDGE}"))
                .cloned()
        })
        .expect("the edge's link");
    assert!(l["rtt_ms"].as_u64().is_some_and(|r| r >= DELAY_MS), "{l}");
    assert!(l["loss"].as_f64().is_some_and(|x| x > loss0), "{l}");
    // And the broker's report, as `GET /api/v1/brokers` shows it.
    let brokers = serve.get_json("/api/v1/brokers").expect("brokers");
    let reported = brokers["brokers"][0]["report"]["edges"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["id"] == EDGE).cloned())
        .expect("the edge in the broker's report");
    assert!(reported["rtt_ms"].as_u64().is_some(), "{reported}");
    edge.stop(WAIT);
    broker.stop(WAIT);
    serve.proc.stop(WAIT);
}
