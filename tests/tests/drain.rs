//! A broker that is full or draining tells its edges where else to go (real processes):
//! broker A has `peers = [B]` and `max_edges = 2`. Two edges preferring A are served by it; a
//! third edge preferring A is turned away (5.03 `alt=B`) and goes to B at once; then A gets
//! SIGUSR1 and drains: its two edges move to B while A keeps running (it answers, so the move
//! is the hint's doing, not a silent broker's failover). Everything every edge numbered is
//! stored once. Bounded waits, no timing assertions.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use qos_e2e::{
    all_stored, free_udp_port, fresh_dir, start_broker, start_edge, wait_for, EdgeSpec, Proc,
    Serve, TcpTarget,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("drain")
}

/// The edges whose batches the broker that forwarded edge `known` (or, with `None`, any other
/// broker than `not`) forwarded, per `GET /api/v1/brokers`.
fn forwarded_by(serve: &Serve, with: u32) -> Result<(String, BTreeSet<u64>), String> {
    let b = serve.get_json("/api/v1/brokers")?;
    let list = b["brokers"].as_array().cloned().unwrap_or_default();
    list.iter()
        .find(|x| {
            x["edges"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| *e == with))
        })
        .map(|x| {
            (
                x["address"].as_str().unwrap_or("").to_string(),
                x["edges"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
            )
        })
        .ok_or_else(|| format!("no broker forwarded edge {with}: {b}"))
}

fn edge_broker(serve: &Serve, id: u32) -> Result<String, String> {
    Ok(serve.edge_row(id)?["broker"]
        .as_str()
        .unwrap_or("")
        .to_string())
}

#[test]
fn a_full_or_draining_broker_sends_edges_to_its_peer() {
    let dir = fresh_dir(&base(), "drain");
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    for d in [&a_dir, &b_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let serve = Serve::start(&dir);
    let la = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let lb = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let a = start_broker(
        &a_dir,
        0,
        la,
        serve.coap,
        &format!("peers = [\"{lb}\"]\nmax_edges = 2"),
    );
    let b = start_broker(&b_dir, 0, lb, serve.coap, "");
    let target = TcpTarget::start();
    let spec = |id: u32| EdgeSpec {
        id,
        brokers: vec![la, lb],
        target: target.addr,
        storage: dir.join(format!("edge-{id}")),
        extra_toml: String::new(),
        bind: None,
    };
    let specs = [spec(71), spec(72), spec(73)];
    let mut edges: Vec<Proc> = specs[..2].iter().map(|s| start_edge(&dir, s)).collect();
    let (a_addr, _) = wait_for("A to forward edges 71 and 72", WAIT, || {
        let (addr, edges) = forwarded_by(&serve, 71)?;
        if edges.contains(&72) {
            Ok((addr, edges))
        } else {
            Err(format!("{addr}: {edges:?}"))
        }
    });

    // A third edge: A is full and names B; the edge goes there.
    edges.push(start_edge(&dir, &specs[2]));
    let b_addr = wait_for("edge 73 to be served by B", WAIT, || {
        let via = edge_broker(&serve, 73)?;
        if !via.is_empty() && via != a_addr && serve.received(73)? >= 2 {
            Ok(via)
        } else {
            Err(format!("edge 73 via {via:?} (A is {a_addr})"))
        }
    });
    let (_, a_edges) = forwarded_by(&serve, 71).unwrap();
    assert!(
        !a_edges.contains(&73),
        "A never forwarded edge 73: {a_edges:?}"
    );
    println!("A ({a_addr}) full: edge 73 went to B ({b_addr})");

    // SIGUSR1: A drains; its edges move to B while A runs on.
    let sent = Command::new("kill")
        .args(["-USR1", &a.pid().to_string()])
        .status()
        .expect("kill -USR1");
    assert!(sent.success());
    wait_for("edges 71 and 72 to move to B", WAIT, || {
        let now: Vec<String> = [71, 72]
            .iter()
            .map(|&id| edge_broker(&serve, id))
            .collect::<Result<_, _>>()?;
        if now.iter().all(|v| *v == b_addr) {
            Ok(())
        } else {
            Err(format!("{now:?}\n{}", a.log_tail()))
        }
    });
    let before: Vec<u64> = [71, 72].map(|id| serve.received(id).unwrap()).to_vec();
    wait_for("records through B after the drain", WAIT, || {
        let now: Vec<u64> = [71, 72]
            .iter()
            .map(|&id| serve.received(id))
            .collect::<Result<_, _>>()?;
        if now.iter().zip(&before).all(|(n, b)| *n >= b + 3) {
            Ok(())
        } else {
            Err(format!("{now:?} (before {before:?})"))
        }
    });
    assert!(
        std::fs::read_dir(&a_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .any(|e| std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("broker draining")),
        "A logged its drain\n{}",
        a.log_tail()
    );

    for e in edges {
        e.stop(WAIT);
    }
    let counts = wait_for("everything stored", WAIT, || {
        specs
            .iter()
            .map(|s| all_stored(&serve, s))
            .collect::<Result<Vec<_>, _>>()
    });
    println!("stored per edge (71, 72, 73): {counts:?}");
    assert!(a.stop(WAIT).success());
    assert!(b.stop(WAIT).success());
    serve.proc.stop(WAIT);
}
