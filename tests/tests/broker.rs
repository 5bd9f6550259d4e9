//! A stand-alone broker between edges and the super-manager, over real sockets (DESIGN.md §4,
//! §6 tier 3): `qos-edge run` ×2 → `qos-aggregator broker` → `qos-aggregator serve`.
//!
//! The broker is killed with SIGKILL mid-stream and restarted on the same port and data
//! directory; then the super-manager is killed for a while so the broker's durable queue grows,
//! and restarted. Afterwards every record each edge numbered is stored exactly once, without
//! gaps, and both the edges' outboxes and the broker's queue are empty. Everything is read from
//! the outside: the HTTP API, the SQLite files (read-only) and the edges' `outbox.bin`. No
//! assertion depends on how fast anything runs.
//!
//! A third test runs four edges and two brokers: one broker's upstream is cut (an in-test UDP
//! proxy drops everything for a while) and healed, the other is killed with SIGKILL and
//! restarted; every edge's records end up stored exactly once.
//!
//! A fourth test checks paced replay: while a broker drains a backlog of one edge after an
//! upstream cut, another edge's fresh batches are stored before the backlog has drained.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qos_coap::Code;
use qos_e2e::{
    free_udp_port, fresh_dir, start_edge, wait_for, EdgeSpec, FakeEdge, Proc, Serve, TcpTarget,
};
use qos_edge_core::Outbox;
use qos_wire::ids::Seq;
use rusqlite::{Connection, OpenFlags};

/// The outbox of `qos-edge` (its `OUTBOX_RECORDS` and `RECORD_BYTES`), to read `outbox.bin`.
type EdgeOutbox = Outbox<256, 512>;

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(90);

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broker")
}

/// Starts `qos-aggregator broker` with the test's settings (see [`qos_e2e::start_broker`]).
fn start_broker(dir: &Path, run: usize, listen: SocketAddr, upstream: SocketAddr) -> Proc {
    qos_e2e::start_broker(dir, run, listen, upstream, "")
}

/// Batches waiting in the broker's queue file.
fn queue_len(dir: &Path) -> Result<u64, String> {
    let db = dir.join("broker-data").join("queue.sqlite");
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", db.display()))?;
    conn.query_row("SELECT COUNT(*) FROM queue", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(|e| format!("count the queue: {e}"))
}

fn stored_seqs(db: &Path, edge: u32) -> Result<Vec<u64>, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", db.display()))?;
    let mut st = conn
        .prepare("SELECT seq FROM records WHERE edge_id = ?1 ORDER BY seq")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([i64::from(edge)], |r| r.get::<_, i64>(0))
        .map_err(|e| e.to_string())?;
    rows.map(|r| r.map(|s| s as u64).map_err(|e| e.to_string()))
        .collect()
}

fn read_outbox(storage: &Path) -> Result<EdgeOutbox, String> {
    let bytes = std::fs::read(storage.join("outbox.bin")).map_err(|e| e.to_string())?;
    EdgeOutbox::load(&bytes).map_err(|e| format!("outbox.bin does not load: {e}"))
}

/// Waits until every edge has `more` records stored beyond `from`.
fn wait_for_progress(serve: &Serve, ids: &[u32], from: &[u64], more: u64, what: &str) -> Vec<u64> {
    wait_for(what, WAIT, || {
        let now = ids
            .iter()
            .map(|&id| serve.received(id).unwrap_or(0))
            .collect::<Vec<_>>();
        if now.iter().zip(from).all(|(n, f)| *n >= f + more) {
            Ok(now)
        } else {
            Err(format!("received {now:?}, from {from:?}"))
        }
    })
}

/// Everything the edge numbered is acknowledged (outbox empty), forwarded (the queues of the
/// brokers whose data lives under `queue_dirs` are empty) and stored once: every sequence
/// number of the edge's boot up to its next one, contiguous, with gaps 0 and no drops.
fn check_all_stored(serve: &Serve, spec: &EdgeSpec, queue_dirs: &[&Path]) {
    let db = serve.database();
    let (next, seqs) = wait_for("outbox and queues empty, all stored", WAIT, || {
        let outbox = read_outbox(&spec.storage)?;
        if !outbox.is_empty() {
            return Err(format!("{} records in the outbox", outbox.len()));
        }
        for dir in queue_dirs {
            let queued = queue_len(dir)?;
            if queued != 0 {
                return Err(format!(
                    "{queued} batches queued at the broker in {}",
                    dir.display()
                ));
            }
        }
        let next = outbox.next_seq();
        let seqs = stored_seqs(&db, spec.id)?;
        let have: BTreeSet<u64> = seqs.iter().copied().collect();
        let epoch_start = Seq::first_of_epoch((next.0 >> 32) as u32).0;
        let missing: Vec<u64> = (epoch_start..next.0)
            .filter(|s| !have.contains(s))
            .collect();
        if missing.is_empty() {
            Ok((next, seqs))
        } else {
            Err(format!(
                "{} of {} numbered records not stored, first {:#x}",
                missing.len(),
                next.0 - epoch_start,
                missing[0]
            ))
        }
    });
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "edge {}: a seq stored twice",
        spec.id
    );
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "edge {}: hole after {:#x}", spec.id, w[0]);
    }
    assert_eq!(
        seqs.first().copied(),
        Some(Seq::first_of_epoch((next.0 >> 32) as u32).0),
        "edge {}: the first record of its boot is stored",
        spec.id
    );
    let row = serve.edge_row(spec.id).expect("the edge's row");
    assert_eq!(row["gaps"], 0, "{row}");
    assert_eq!(row["dropped_at_edge"], 0, "{row}");
    println!(
        "edge {}: {} records stored (seq {:#x}..{:#x}), duplicates absorbed {}, gaps {}",
        spec.id,
        seqs.len(),
        seqs[0],
        seqs[seqs.len() - 1],
        row["duplicates"],
        row["gaps"]
    );
}

/// Two brokers: the edge's preferred one is killed with SIGKILL while the edge sends. The edge
/// moves to the second (after `failover_after_ms`, 8 s), records keep arriving through it, and
/// once the killed broker is back (same port, same queue file) and has forwarded what it had
/// acknowledged, every record the edge numbered is stored exactly once.
#[test]
fn an_edge_fails_over_when_its_broker_is_killed() {
    let dir = fresh_dir(&base(), "failover");
    let serve_dir = dir.join("serve");
    let (b1_dir, b2_dir) = (dir.join("b1"), dir.join("b2"));
    for d in [&serve_dir, &b1_dir, &b2_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let serve = Serve::start(&serve_dir);
    let l1 = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let l2 = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let b1 = start_broker(&b1_dir, 0, l1, serve.coap);
    let b2 = start_broker(&b2_dir, 0, l2, serve.coap);
    let target = TcpTarget::start();
    let spec = EdgeSpec {
        id: 41,
        brokers: vec![l1, l2],
        target: target.addr,
        storage: dir.join("edge-41"),
        extra_toml: String::new(),
        bind: None,
    };
    let edge = start_edge(&dir, &spec);
    let ids = [spec.id];
    let steady = wait_for_progress(&serve, &ids, &[0], 3, "records through the first broker");
    assert_eq!(queue_len(&b2_dir).unwrap_or(0), 0);

    b1.kill9();
    let after = wait_for_progress(
        &serve,
        &ids,
        &steady,
        8,
        "records through the second broker",
    );
    println!("first broker killed: received {steady:?} -> {after:?} through the second");
    // The killed broker's acknowledged-but-unforwarded batches come back with it.
    let b1 = start_broker(&b1_dir, 1, l1, serve.coap);
    check_all_stored(&serve, &spec, &[&b1_dir, &b2_dir]);

    edge.stop(WAIT);
    assert!(b1.stop(WAIT).success());
    assert!(b2.stop(WAIT).success());
    serve.proc.stop(WAIT);
}

#[test]
fn a_killed_broker_and_an_absent_super_manager_lose_nothing() {
    let dir = fresh_dir(&base(), "kill9");
    let serve_dir = dir.join("serve");
    std::fs::create_dir_all(&serve_dir).unwrap();
    let serve = Serve::start(&serve_dir);
    let (http, coap) = (serve.http, serve.coap);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(&dir, 0, listen, coap);
    let target = TcpTarget::start();
    let specs: Vec<EdgeSpec> = [31u32, 32]
        .iter()
        .map(|&id| EdgeSpec {
            id,
            brokers: vec![listen],
            target: target.addr,
            storage: dir.join(format!("edge-{id}")),
            extra_toml: String::new(),
            bind: None,
        })
        .collect();
    let ids: Vec<u32> = specs.iter().map(|s| s.id).collect();
    let edges: Vec<Proc> = specs.iter().map(|s| start_edge(&dir, s)).collect();

    // (a) steady state: records reach the store through the broker
    let steady = wait_for_progress(&serve, &ids, &[0, 0], 3, "records through the broker");
    println!("steady state: received {steady:?}");

    // (b) SIGKILL the broker mid-stream; the edges keep their records meanwhile
    broker.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let broker = start_broker(&dir, 1, listen, coap);
    let after_kill = wait_for_progress(
        &serve,
        &ids,
        &steady,
        5,
        "records after the broker's restart",
    );
    println!("after the broker's kill -9 and restart: received {after_kill:?}");

    // (c) SIGKILL the super-manager: the broker acknowledges and queues
    serve.proc.kill9();
    let peak = wait_for("the broker's queue to grow", WAIT, || {
        let n = queue_len(&dir)?;
        if n >= 10 {
            Ok(n)
        } else {
            Err(format!("{n} batches queued"))
        }
    });
    println!("super-manager down: {peak} batches queued at the broker");
    let serve = Serve::start_at(&serve_dir, http, coap);
    let after_outage = wait_for_progress(
        &serve,
        &ids,
        &after_kill,
        peak / 2 + 3,
        "the queued records after the super-manager's restart",
    );
    println!("after the outage: received {after_outage:?}");

    let queues = [dir.as_path()];
    for spec in &specs {
        check_all_stored(&serve, spec, &queues);
    }

    for edge in edges {
        edge.stop(WAIT);
    }
    assert!(
        broker.stop(WAIT).success(),
        "the broker stops cleanly on SIGTERM"
    );
    serve.proc.stop(WAIT);
}

/// A UDP relay between a broker and its upstream that drops everything while `cut` is set,
/// and holds each datagram towards the upstream for `pace_ms` (a slow link; 0: none).
struct CutProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    pace_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CutProxy {
    fn start(upstream: SocketAddr) -> CutProxy {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the proxy");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = sock.local_addr().unwrap();
        let (cut, stop, dropped) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let pace_ms = Arc::new(AtomicU64::new(0));
        let (c, s, d, p) = (cut.clone(), stop.clone(), dropped.clone(), pace_ms.clone());
        let thread = std::thread::spawn(move || {
            let mut client: Option<SocketAddr> = None;
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if c.load(Ordering::Relaxed) {
                    d.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let to = if from == upstream {
                    match client {
                        Some(c) => c,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    let pace = p.load(Ordering::Relaxed);
                    if pace > 0 {
                        std::thread::sleep(Duration::from_millis(pace));
                    }
                    upstream
                };
                let _ = sock.send_to(&buf[..n], to);
            }
        });
        CutProxy {
            addr,
            cut,
            pace_ms,
            stop,
            dropped,
            thread: Some(thread),
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Four edges, two brokers: broker A reaches `serve` through [`CutProxy`], which drops
/// everything until A has queued a few batches (bounded by a count, not a time), then forwards
/// again; broker B is killed with SIGKILL mid-stream (its edges fail over to A) and restarted on
/// the same port and queue. Afterwards, for every edge: everything it numbered is acknowledged
/// (its outbox is empty after a clean stop) and stored exactly once, without gaps.
#[test]
fn an_upstream_cut_and_a_killed_broker_lose_nothing_for_four_edges() {
    let dir = fresh_dir(&base(), "cut");
    let serve_dir = dir.join("serve");
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    for d in [&serve_dir, &a_dir, &b_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let serve = Serve::start(&serve_dir);
    let proxy = CutProxy::start(serve.coap);
    let la = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let lb = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let a = start_broker(&a_dir, 0, la, proxy.addr);
    let b = start_broker(&b_dir, 0, lb, serve.coap);
    let target = TcpTarget::start();
    let specs: Vec<EdgeSpec> = [
        (51u32, [la, lb]),
        (52, [la, lb]),
        (53, [lb, la]),
        (54, [lb, la]),
    ]
    .iter()
    .map(|&(id, brokers)| EdgeSpec {
        id,
        brokers: brokers.to_vec(),
        target: target.addr,
        storage: dir.join(format!("edge-{id}")),
        extra_toml: String::new(),
        bind: None,
    })
    .collect();
    let ids: Vec<u32> = specs.iter().map(|s| s.id).collect();
    let edges: Vec<Proc> = specs.iter().map(|s| start_edge(&dir, s)).collect();
    let zero = vec![0; ids.len()];
    let steady = wait_for_progress(&serve, &ids, &zero, 3, "records from every edge");
    println!("steady: received {steady:?}");

    // Cut A's upstream until A holds a few acknowledged batches it cannot forward.
    proxy.cut.store(true, Ordering::Relaxed);
    let queued = wait_for("broker A to queue behind the cut", WAIT, || {
        let n = queue_len(&a_dir)?;
        if n >= 6 {
            Ok(n)
        } else {
            Err(format!("{n} batches queued at A"))
        }
    });
    proxy.cut.store(false, Ordering::Relaxed);
    println!(
        "upstream of A cut: {queued} batches queued, {} datagrams dropped by the proxy",
        proxy.dropped.load(Ordering::Relaxed)
    );
    let healed = wait_for_progress(&serve, &ids, &steady, 3, "records after the cut healed");
    println!("after the cut: received {healed:?}");

    // SIGKILL B mid-stream: its edges go to A; B comes back on the same port and queue.
    b.kill9();
    let failed_over = wait_for_progress(&serve, &ids, &healed, 5, "records with B dead");
    println!("B killed: received {failed_over:?}");
    let b = start_broker(&b_dir, 1, lb, serve.coap);
    let back = wait_for_progress(&serve, &ids, &failed_over, 3, "records with B back");
    println!("B restarted: received {back:?}");

    for e in edges {
        e.stop(WAIT);
    }
    for spec in &specs {
        check_all_stored(&serve, spec, &[&a_dir, &b_dir]);
    }
    let stats = serve.get_json("/api/v1/stats").unwrap();
    println!(
        "serve: stored {}, duplicates absorbed {}",
        stats["stored"], stats["duplicates"]
    );
    assert!(a.stop(WAIT).success());
    assert!(b.stop(WAIT).success());
    serve.proc.stop(WAIT);
}

/// `(seq, received_at)` of edge `edge`'s records in `serve`'s database, by seq.
fn stored_at(db: &Path, edge: u32) -> Result<Vec<(u64, i64)>, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", db.display()))?;
    let mut st = conn
        .prepare("SELECT seq, received_at FROM records WHERE edge_id = ?1 ORDER BY seq")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([i64::from(edge)], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
        })
        .map_err(|e| e.to_string())?;
    rows.map(|r| r.map_err(|e| e.to_string())).collect()
}

/// Paced replay (`[broker.replay]`): edge 71 builds a backlog of 300 batches at the broker while
/// its upstream is cut; once the backlog is older than `live_after_ms`, the cut heals over a
/// slow link (the proxy holds each datagram 10 ms, so the drain takes a while whatever the
/// machine's speed), and when the first backlog records reach the store, edge 72 sends fresh
/// batches. They are stored before the backlog has drained (ordered by the store's reception
/// time; in plain append order they would all come after it); afterwards every acknowledged
/// record of both edges is stored exactly once, without gaps.
#[test]
fn paced_replay_stores_live_data_before_the_backlog_has_drained() {
    const BACKLOG: u64 = 300;
    const LIVE: u64 = 5;
    let dir = fresh_dir(&base(), "paced");
    let serve_dir = dir.join("serve");
    let b_dir = dir.join("b");
    for d in [&serve_dir, &b_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let serve = Serve::start(&serve_dir);
    let proxy = CutProxy::start(serve.coap);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = qos_e2e::start_broker(
        &b_dir,
        0,
        listen,
        proxy.addr,
        "replay = { live_after_ms = 2000, backlog_per_live = 1 }",
    );
    let (x, y) = (FakeEdge::start(71, listen), FakeEdge::start(72, listen));
    let send = |e: &FakeEdge, seq: u64| {
        let a = e.send_batch(seq).expect("the broker answers");
        assert_eq!(a.code, Code::CHANGED, "edge {} seq {seq}: {a:?}", e.id);
    };
    send(&x, 0);
    send(&y, 0);
    wait_for_progress(&serve, &[71, 72], &[0, 0], 1, "a first record of each edge");

    proxy.cut.store(true, Ordering::Relaxed);
    for seq in 1..=BACKLOG {
        send(&x, seq);
    }
    // The newest backlog batch is older than live_after_ms (the queue's own clock).
    let db = b_dir.join("broker-data").join("queue.sqlite");
    wait_for("the backlog to age", WAIT, || {
        let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?;
        let newest: i64 = conn
            .query_row("SELECT MAX(queued_at) FROM queue", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        if now - newest > 2_500 {
            Ok(())
        } else {
            Err(format!("newest batch queued {} ms ago", now - newest))
        }
    });
    let queued = queue_len(&b_dir).unwrap();
    assert_eq!(queued, BACKLOG, "every backlog batch waits at the broker");
    proxy.pace_ms.store(10, Ordering::Relaxed);
    proxy.cut.store(false, Ordering::Relaxed);
    wait_for_progress(&serve, &[71], &[1], 1, "the backlog to start draining");
    for seq in 1..=LIVE {
        send(&y, seq);
    }
    let left_when_live_sent = queue_len(&b_dir).unwrap();

    let (xs, ys) = wait_for("everything stored", WAIT, || {
        let (xs, ys) = (
            stored_at(&serve.database(), 71)?,
            stored_at(&serve.database(), 72)?,
        );
        let queued = queue_len(&b_dir)?;
        if xs.len() as u64 == BACKLOG + 1 && ys.len() as u64 == LIVE + 1 && queued == 0 {
            Ok((xs, ys))
        } else {
            Err(format!(
                "stored {} and {}, {queued} queued",
                xs.len(),
                ys.len()
            ))
        }
    });
    // Stored == acknowledged: every seq once, none missing, no gaps counted.
    assert_eq!(
        xs.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..=BACKLOG).collect::<Vec<_>>()
    );
    assert_eq!(
        ys.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..=LIVE).collect::<Vec<_>>()
    );
    for id in [71, 72] {
        let row = serve.edge_row(id).unwrap();
        assert_eq!(row["gaps"], 0, "{row}");
    }
    // The live records came in while the backlog was still draining.
    let backlog_done = xs.iter().map(|r| r.1).max().unwrap();
    let first_live = ys[1..].iter().map(|r| r.1).min().unwrap();
    let after_live = xs.iter().filter(|r| r.1 > first_live).count();
    println!(
        "paced replay: {BACKLOG} backlog batches of edge 71 acknowledged behind the cut \
         ({} datagrams dropped by the proxy); {LIVE} live batches of edge 72 acknowledged with \
         {left_when_live_sent} backlog batches still queued; {after_live} backlog records stored \
         after the first live record; stored {} + {} records, duplicates absorbed {} + {}",
        proxy.dropped.load(Ordering::Relaxed),
        xs.len(),
        ys.len(),
        serve.edge_row(71).unwrap()["duplicates"],
        serve.edge_row(72).unwrap()["duplicates"],
    );
    assert!(
        first_live < backlog_done,
        "live data stored only after the whole backlog (first live at {first_live} ms, \
         backlog done at {backlog_done} ms)"
    );
    drop((x, y));
    assert!(broker.stop(WAIT).success());
    serve.proc.stop(WAIT);
}
