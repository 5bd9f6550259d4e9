//! The live path over real sockets (DESIGN.md §6, tier 3): `qos-edge run` probing a TCP
//! listener and sending summaries over CoAP/UDP to `qos-aggregator serve`, which stores them in
//! SQLite and reports them over HTTP. Processes are killed with SIGKILL and restarted.
//!
//! What is checked is the delivery contract of DESIGN.md §4 (nothing acknowledged lost, nothing
//! stored twice, numbering never reused across restarts) and the HTTP contract of §5, read from
//! the outside: the HTTP API, the SQLite file (read-only) and the edge's persisted outbox. No
//! assertion depends on how fast anything runs; conditions are polled with generous deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qos_coap::{option, Code, Message, MessageType, MessageWriter};
use qos_e2e::{
    free_udp_port, fresh_dir, start_edge, wait_for, EdgeSpec, Serve, TcpTarget, PATIENCE,
};
use qos_edge_core::Outbox;
use qos_wire::metrics::{Metric, MetricsSample};
use qos_wire::summary::Summary;
use rusqlite::{Connection, OpenFlags};

/// The outbox of `qos-edge` (its `OUTBOX_RECORDS` and `RECORD_BYTES`), to read `outbox.bin`.
type EdgeOutbox = Outbox<256, 512>;
/// A summary as the super-manager decodes it (every sketch bucket).
type CentralSummary = Summary<976>;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live_path")
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn epoch(seq: u64) -> u32 {
    (seq >> 32) as u32
}

/// One stored record, read back from SQLite.
#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    kind: u8,
    body: Vec<u8>,
}

fn read_records(db: &Path, edge: u32) -> Result<Vec<Row>, String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open {}: {e}", db.display()))?;
    let mut st = conn
        .prepare("SELECT seq, kind, body FROM records WHERE edge_id = ?1")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([i64::from(edge)], |r| {
            Ok(Row {
                seq: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                body: r.get(2)?,
            })
        })
        .map_err(|e| e.to_string())?;
    let mut out = rows
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    out.sort_by_key(|r| r.seq);
    Ok(out)
}

/// A probe target that goes down: the edge's local availability rule raises an event at once,
/// logs it (the local action), and the event reaches the store ahead of queued summaries.
#[test]
fn a_threshold_crossing_is_logged_and_stored_as_an_event() {
    let dir = fresh_dir(&base(), "threshold");
    let serve = Serve::start(&dir);
    let target = TcpTarget::start();
    let down = target.addr;
    drop(target); // refused from now on
    let spec = EdgeSpec {
        id: 14,
        brokers: vec![serve.coap],
        target: down,
        storage: dir.join("edge-storage"),
        extra_toml: "[[rule]]\nprobe = 1\nmetric = \"availability\"\nk = 2\nn = 3\n".into(),
        bind: None,
    };
    let edge = start_edge(&dir, &spec);
    let db = serve.database();
    let events = wait_for("an event record", PATIENCE, || {
        let rows = read_records(&db, spec.id)?;
        let ev: Vec<Row> = rows.into_iter().filter(|r| r.kind == 1).collect();
        if ev.is_empty() {
            Err(edge.log_tail())
        } else {
            Ok(ev)
        }
    });
    let mut d = minicbor::Decoder::new(&events[0].body);
    assert_eq!(d.array().unwrap(), Some(2));
    assert_eq!(d.u8().unwrap(), 1);
    let ev = qos_wire::event::Event::decode(&mut d).expect("an event body");
    assert!(ev.raised, "{ev:?}");
    assert_eq!((ev.probe.0, ev.rule), (1, 0));
    assert_eq!(ev.metric, qos_wire::threshold::Metric::Availability);
    assert!(ev.value >= 2, "{ev:?}");
    assert!(
        edge.log_tail().contains("threshold raised"),
        "{}",
        edge.log_tail()
    );
    // summaries of the failing probe arrive too, with the failures classified
    wait_for("a summary with failures", PATIENCE, || {
        let rows = read_records(&db, spec.id)?;
        let failed: u32 = rows
            .iter()
            .filter(|r| r.kind == 0)
            .map(|r| decode_summary(&r.body).failed)
            .sum();
        if failed > 0 {
            Ok(())
        } else {
            Err(format!("{} rows", rows.len()))
        }
    });
    edge.stop(PATIENCE);
    serve.proc.stop(PATIENCE);
}

/// Decodes a stored record `[kind, body]` whose kind is 0 (summary).
fn decode_summary(raw: &[u8]) -> CentralSummary {
    let mut d = minicbor::Decoder::new(raw);
    assert_eq!(d.array().expect("record array"), Some(2), "{raw:02x?}");
    assert_eq!(d.u8().expect("record kind"), 0, "not a summary: {raw:02x?}");
    let s = CentralSummary::decode(&mut d).expect("a valid summary");
    assert_eq!(d.position(), raw.len(), "trailing bytes in {raw:02x?}");
    s
}

/// Decodes a stored record `[kind, body]` whose kind is 3 (host metrics).
fn decode_metrics(raw: &[u8]) -> MetricsSample {
    let mut d = minicbor::Decoder::new(raw);
    assert_eq!(d.array().expect("record array"), Some(2), "{raw:02x?}");
    assert_eq!(d.u8().expect("record kind"), 3, "not metrics: {raw:02x?}");
    let m = MetricsSample::decode(&mut d).expect("a valid metrics sample");
    assert_eq!(d.position(), raw.len(), "trailing bytes in {raw:02x?}");
    m
}

/// Whether a stored record was made before `t` (Unix s): a summary whose window started
/// before it, or host metrics sampled at or before it (a new boot samples only at grid points
/// after it started).
fn made_before(r: &Row, t: u64) -> bool {
    match r.kind {
        3 => u64::from(decode_metrics(&r.body).at_s) <= t,
        _ => u64::from(decode_summary(&r.body).start_s) < t,
    }
}

/// Checks what holds for every stored record of an edge: unique sequence numbers (also as a
/// database constraint), contiguous within each epoch, all summaries (or host metrics) that
/// decode, no two records for the same probe and window (or metrics for the same second), no
/// identical bodies. Returns the summaries by seq.
fn check_records(rows: &[Row]) -> BTreeMap<u64, CentralSummary> {
    let seqs: BTreeSet<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), rows.len(), "duplicate sequence numbers");
    let mut by_epoch: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for s in &seqs {
        by_epoch.entry(epoch(*s)).or_default().push(*s);
    }
    for (e, list) in &by_epoch {
        for w in list.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "hole in epoch {e}: {:#x} then {:#x}",
                w[0],
                w[1]
            );
        }
    }
    let bodies: BTreeSet<&[u8]> = rows.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies.len(), rows.len(), "the same record stored twice");
    let mut windows = BTreeSet::new();
    let mut samples = BTreeSet::new();
    let mut out = BTreeMap::new();
    for r in rows {
        if r.kind == 3 {
            let m = decode_metrics(&r.body);
            assert!(samples.insert(m.at_s), "two metrics samples at {}", m.at_s);
            continue;
        }
        assert_eq!(r.kind, 0, "record {:#x} is not a summary", r.seq);
        let s = decode_summary(&r.body);
        assert!(
            windows.insert((s.probe.0, s.start_s)),
            "two records for probe {} window {}",
            s.probe.0,
            s.start_s
        );
        out.insert(r.seq, s);
    }
    out
}

fn read_outbox(storage: &Path) -> Result<EdgeOutbox, String> {
    let bytes = std::fs::read(storage.join("outbox.bin")).map_err(|e| e.to_string())?;
    EdgeOutbox::load(&bytes).map_err(|e| format!("outbox.bin does not load: {e}"))
}

#[test]
fn summaries_flow_from_edge_to_store() {
    let dir = fresh_dir(&base(), "flow");
    let serve = Serve::start(&dir);
    let target = TcpTarget::start();
    let spec = EdgeSpec {
        id: 11,
        brokers: vec![serve.coap],
        target: target.addr,
        storage: dir.join("edge-storage"),
        extra_toml: String::new(),
        bind: None,
    };
    let edge = start_edge(&dir, &spec);

    wait_for("3 stored summaries", PATIENCE, || {
        let stats = serve.get_json("/api/v1/stats")?;
        match stats["stored"].as_u64() {
            Some(n) if n >= 3 => Ok(()),
            _ => Err(format!("{stats}\n{}", edge.log_tail())),
        }
    });

    let (status, body) = qos_e2e::http_get(serve.http, "/api/v1/health").expect("health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"ok""#), "{body}");

    let row = serve.edge_row(spec.id).expect("edge listed");
    assert!(row["received"].as_u64().unwrap() >= 3, "{row}");
    assert_eq!(row["gaps"], 0, "{row}");

    // Host metrics are on by default: sampled every window (1 s here), kind 3.
    let metrics = wait_for("host metrics with counters, 3 summaries", PATIENCE, || {
        let rows = read_records(&serve.database(), spec.id)?;
        let summaries = rows.iter().filter(|r| r.kind == 0).count();
        let m: Vec<MetricsSample> = rows
            .iter()
            .filter(|r| r.kind == 3)
            .map(|r| decode_metrics(&r.body))
            .collect();
        if summaries >= 3 && m.iter().any(|m| m.interval_s > 0) {
            Ok(m)
        } else {
            Err(format!(
                "{summaries} summaries, {} metrics records\n{}",
                m.len(),
                edge.log_tail()
            ))
        }
    });
    for m in &metrics {
        assert!(m.get(Metric::MemTotalKib) > Some(0), "{m:?}");
        assert!(m.get(Metric::DiskTotalKib) > Some(0), "{m:?}");
        if m.interval_s > 0 {
            assert!(m.get(Metric::CpuBusyPermille) <= Some(1000), "{m:?}");
            assert!(m.get(Metric::NetRxKib).is_some(), "{m:?}");
        }
    }

    let rows = read_records(&serve.database(), spec.id).expect("records");
    assert!(rows.len() >= 3, "{rows:?}");
    let summaries = check_records(&rows);
    assert!(summaries.len() >= 3, "{summaries:?}");
    for (seq, s) in &summaries {
        assert_eq!(s.probe.0, 1, "seq {seq:#x}");
        assert_eq!(s.len_s, 1, "seq {seq:#x}");
        assert!(s.ok > 0, "a live listener must answer: {s:?}");
        assert_eq!(s.failed, 0, "a live listener must not fail: {s:?}");
        assert!(s.sketch.quantile(0.5).is_some(), "{s:?}");
    }
    // One boot, numbered from the start of its epoch.
    let first = rows[0].seq;
    assert!(rows.iter().all(|r| epoch(r.seq) == epoch(first)));
    assert_eq!(first & 0xffff_ffff, 0, "numbering starts at 0 in an epoch");

    edge.stop(PATIENCE);
    serve.proc.stop(PATIENCE);
}

#[test]
fn edge_restart_continues_numbering_and_keeps_unsent() {
    let dir = fresh_dir(&base(), "edge-restart");
    let target = TcpTarget::start();
    let storage = dir.join("edge-storage");
    // Nothing listens on this port yet: the edge's outbox fills.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut spec = EdgeSpec {
        id: 12,
        brokers: vec![nowhere],
        target: target.addr,
        storage: storage.clone(),
        extra_toml: String::new(),
        bind: None,
    };
    let edge = start_edge(&dir, &spec);
    wait_for(
        "3 summaries in the persisted outbox",
        PATIENCE,
        || match read_outbox(&storage) {
            Ok(o) if o.len() >= 3 => Ok(()),
            Ok(o) => Err(format!("{} records\n{}", o.len(), edge.log_tail())),
            Err(e) => Err(format!("{e}\n{}", edge.log_tail())),
        },
    );
    edge.kill9();
    let killed_at = unix_s();
    let saved = read_outbox(&storage).expect("outbox after the kill");
    let in_flight = saved.in_flight();
    let old_epoch = saved.next_seq().epoch();
    assert!(saved.len() >= 3);

    let serve = Serve::start(&dir);
    spec.brokers = vec![serve.coap];
    let edge = start_edge(&dir, &spec);

    // Every summary of a window that ended before the kill starts before `killed_at`; every
    // window of the new boot starts at or after it (host metrics: see `made_before`).
    let pre_kill = |rows: &[Row]| rows.iter().filter(|r| made_before(r, killed_at)).count();
    wait_for(
        "the saved outbox and 2 new summaries stored",
        PATIENCE,
        || {
            let rows = read_records(&serve.database(), spec.id)?;
            let old = pre_kill(&rows);
            if old >= saved.len() && rows.len() >= saved.len() + 2 {
                Ok(())
            } else {
                Err(format!(
                    "{old} of {} saved, {} in all\n{}",
                    saved.len(),
                    rows.len(),
                    edge.log_tail()
                ))
            }
        },
    );
    edge.stop(PATIENCE);

    let rows = read_records(&serve.database(), spec.id).expect("records");
    let summaries = check_records(&rows);
    assert_eq!(
        pre_kill(&rows),
        saved.len(),
        "exactly the records of the saved outbox arrive"
    );
    // The batch that was in flight keeps its numbers of the old boot; everything else is
    // numbered in the new boot's epoch.
    let old_seqs: BTreeSet<u64> = in_flight
        .map(|f| (f.first.0..=f.last().0).collect())
        .unwrap_or_default();
    let stored: BTreeSet<u64> = rows.iter().map(|r| r.seq).collect();
    for seq in &old_seqs {
        assert!(stored.contains(seq), "in-flight {seq:#x} missing");
    }
    for r in &rows {
        let seq = r.seq;
        if old_seqs.contains(&seq) {
            assert_eq!(epoch(seq), old_epoch);
        } else {
            assert!(
                epoch(seq) > old_epoch,
                "{seq:#x} (kind {}, window {:?}) not in a newer epoch than {old_epoch}",
                r.kind,
                summaries.get(&seq).map(|s| s.start_s)
            );
        }
    }
    let row = serve.edge_row(spec.id).expect("edge listed");
    assert_eq!(row["gaps"], 0, "{row}");
    assert_eq!(row["received"].as_u64(), Some(rows.len() as u64), "{row}");
    serve.proc.stop(PATIENCE);
}

#[test]
fn serve_restart_keeps_data_and_dedups() {
    let dir = fresh_dir(&base(), "serve-restart");
    let target = TcpTarget::start();
    let serve = Serve::start(&dir);
    let (http, coap) = (serve.http, serve.coap);
    let spec = EdgeSpec {
        id: 13,
        brokers: vec![coap],
        target: target.addr,
        storage: dir.join("edge-storage"),
        extra_toml: String::new(),
        bind: None,
    };
    let edge = start_edge(&dir, &spec);
    let before = wait_for("3 stored summaries", PATIENCE, || {
        match serve.received(spec.id) {
            Ok(n) if n >= 3 => Ok(n),
            Ok(n) => Err(format!("{n}\n{}", edge.log_tail())),
            Err(e) => Err(e),
        }
    });
    let rows_before = read_records(&serve.database(), spec.id).expect("records");
    serve.proc.kill9();

    // The edge keeps summarising while nobody answers.
    wait_for(
        "2 records waiting in the edge's outbox",
        PATIENCE,
        || match read_outbox(&spec.storage) {
            Ok(o) if o.len() >= 2 => Ok(()),
            Ok(o) => Err(format!("{} records\n{}", o.len(), edge.log_tail())),
            Err(e) => Err(e),
        },
    );

    let serve = Serve::start_at(&dir, http, coap);
    let mut last = before.max(rows_before.len() as u64);
    wait_for("the backlog and 3 more summaries stored", PATIENCE, || {
        let n = serve.received(spec.id)?;
        assert!(n >= last, "the stored count went down from {last} to {n}");
        last = n;
        let waiting = read_outbox(&spec.storage)
            .map(|o| o.len())
            .unwrap_or(usize::MAX);
        if n >= before + 5 && waiting <= 1 {
            Ok(())
        } else {
            Err(format!(
                "{n} stored, {waiting} waiting\n{}",
                edge.log_tail()
            ))
        }
    });
    edge.stop(PATIENCE);

    let rows = read_records(&serve.database(), spec.id).expect("records");
    let summaries = check_records(&rows);
    // Everything stored before the kill is still there, unchanged.
    for r in &rows_before {
        let again = rows.iter().find(|x| x.seq == r.seq).expect("kept");
        assert_eq!(again.body, r.body);
    }
    // One boot of the edge: one epoch, numbered from 0 without holes (checked above).
    let first = *summaries.keys().next().expect("records");
    assert_eq!(first & 0xffff_ffff, 0);
    assert!(summaries.keys().all(|s| epoch(*s) == epoch(first)));
    let row = serve.edge_row(spec.id).expect("edge listed");
    assert_eq!(row["gaps"], 0, "{row}");
    assert_eq!(row["received"].as_u64(), Some(rows.len() as u64), "{row}");
    let stats = serve.get_json("/api/v1/stats").expect("stats");
    assert_eq!(
        stats["store"]["records"].as_u64(),
        Some(rows.len() as u64),
        "{stats}"
    );
    serve.proc.stop(PATIENCE);
}

/// Sends `bytes` and returns the first answer within a generous time, if any.
fn exchange(sock: &UdpSocket, to: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    sock.send_to(bytes, to).expect("send");
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer");
    buf[..n].to_vec()
}

fn request(mid: u16, token: &[u8], path: &str, cf: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, mid, token)
        .expect("header");
    w.uri_path(path).expect("path");
    if let Some(cf) = cf {
        w.uint_option(option::CONTENT_FORMAT, cf).expect("cf");
    }
    w.payload(payload).expect("payload");
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// Parses an answer and checks it is the piggybacked response to `mid`/`token`.
fn answer_code(raw: &[u8], mid: u16, token: &[u8]) -> Code {
    let m = Message::parse(raw).expect("a CoAP answer");
    assert_eq!(m.ty(), MessageType::Acknowledgement, "{raw:02x?}");
    assert_eq!(
        m.message_id(),
        mid,
        "an answer to another message: {raw:02x?}"
    );
    assert_eq!(m.token(), token);
    m.code()
}

#[test]
fn bad_datagrams_are_counted() {
    let dir = fresh_dir(&base(), "bad");
    let serve = Serve::start(&dir);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let to = serve.coap;

    // Garbage (CoAP version 3: silently ignored) and an oversized datagram (a well-formed CON
    // header and 1500 bytes in all): no answer. The answer to the next request proves it, as
    // the ingest handles datagrams in order.
    sock.send_to(&[0xff, 0x13, 0x37, 0x00, 0x42], to)
        .expect("send");
    let mut big = request(1, &[1], "u", Some(60), &[0u8; 1400]);
    big.resize(1500, 0);
    sock.send_to(&big, to).expect("send");

    // A batch of wire version 2: [2, edge, first_seq, dropped, [[0, 0]]].
    let v2 = [0x85, 0x02, 0x01, 0x00, 0x00, 0x81, 0x82, 0x00, 0x00];
    let raw = exchange(&sock, to, &request(2, &[2], "u", Some(60), &v2));
    assert_eq!(answer_code(&raw, 2, &[2]), Code::BAD_REQUEST);
    let raw = exchange(&sock, to, &request(3, &[3], "nope", Some(60), &v2));
    assert_eq!(answer_code(&raw, 3, &[3]), Code::NOT_FOUND);
    let raw = exchange(&sock, to, &request(4, &[4], "u", Some(50), b"{}"));
    assert_eq!(answer_code(&raw, 4, &[4]), Code::UNSUPPORTED_CONTENT_FORMAT);

    let stats = serve.get_json("/api/v1/stats").expect("stats");
    for reason in [
        "malformed",
        "unsupported_version",
        "unknown_resource",
        "bad_content_format",
        "oversized",
    ] {
        assert!(
            stats["rejected"][reason].as_u64() >= Some(1),
            "{reason} not counted: {stats}"
        );
    }
    assert_eq!(stats["received"]["datagrams"], 5, "{stats}");
    assert_eq!(stats["stored"], 0, "{stats}");
    assert_eq!(stats["store"]["records"], 0, "{stats}");
    serve.proc.stop(PATIENCE);
}

const AIOCOAP_GET: &str = r#"
import asyncio, sys
import aiocoap

async def main():
    ctx = await aiocoap.Context.create_client_context()
    try:
        req = aiocoap.Message(code=aiocoap.GET, uri=sys.argv[1])
        resp = await asyncio.wait_for(ctx.request(req).response, 60)
        print(resp.code)
        print(resp.payload.decode())
    finally:
        await ctx.shutdown()

asyncio.run(main())
"#;

/// A CoAP client not written here (aiocoap, DESIGN.md §6 tier 4) reads the resource list.
#[test]
fn a_foreign_coap_client_reads_well_known_core() {
    let importable = Command::new("python3")
        .args(["-c", "import aiocoap"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        if std::env::var_os("QOS_SKIP_EXTERNAL").is_some_and(|v| v == "1") {
            eprintln!("aiocoap missing; skipped because QOS_SKIP_EXTERNAL=1");
            return;
        }
        panic!(
            "the Python package aiocoap is not importable by python3; .ci/run installs it \
             (pip install aiocoap), or set QOS_SKIP_EXTERNAL=1 to skip this check"
        );
    }
    let dir = fresh_dir(&base(), "aiocoap");
    let serve = Serve::start(&dir);
    let uri = format!("coap://{}/.well-known/core", serve.coap);
    let out = Command::new("python3")
        .args(["-c", AIOCOAP_GET, &uri])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aiocoap failed: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve.proc.log_tail()
    );
    assert!(stdout.contains("2.05"), "{stdout}");
    assert!(stdout.contains("</u>"), "{stdout}");
    serve.proc.stop(PATIENCE);
}

/// The process helper itself: SIGTERM stops `serve` cleanly (exit 0).
#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = fresh_dir(&base(), "sigterm");
    let serve = Serve::start(&dir);
    let pid = serve.proc.pid();
    let status = serve.proc.stop(PATIENCE);
    assert!(status.success(), "pid {pid}: {status}");
}

/// A CoAP client over a real UDP socket (the test's side of the downlink).
struct CoapClient {
    sock: UdpSocket,
    ep: qos_coap::Endpoint<SocketAddr, 4, 8, 1152>,
    start: std::time::Instant,
}

impl CoapClient {
    fn new() -> CoapClient {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let config = qos_coap::Config::with_reliability(500, 1.5, 3);
        CoapClient {
            sock,
            ep: qos_coap::Endpoint::new(config, u64::from(std::process::id())).expect("endpoint"),
            start: std::time::Instant::now(),
        }
    }

    /// One CON request; the response's code, Content-Format and payload, or why there is none
    /// (the CoAP exchange timed out: bounded by the retransmission parameters).
    fn call(
        &mut self,
        to: SocketAddr,
        code: Code,
        path: &str,
        query: Option<&str>,
        cbor: Option<&[u8]>,
    ) -> Result<(Code, Option<u16>, Vec<u8>), String> {
        let now = self.start.elapsed().as_millis() as u64;
        let id = self
            .ep
            .request(now, to, qos_coap::Reliability::Confirmable, code, |w| {
                w.uri_path(path)?;
                if cbor.is_some() {
                    w.uint_option(option::CONTENT_FORMAT, 60)?;
                }
                if let Some(q) = query {
                    w.option(option::URI_QUERY, q.as_bytes())?;
                }
                w.payload(cbor.unwrap_or_default())
            })
            .map_err(|e| format!("request: {e:?}"))?;
        let mut buf = [0u8; 1152];
        loop {
            let now = self.start.elapsed().as_millis() as u64;
            while let Some((peer, n)) = self.ep.poll_transmit(now, &mut buf) {
                let _ = self.sock.send_to(&buf[..n], peer);
            }
            while let Some(ev) = self.ep.poll_event() {
                if matches!(ev, qos_coap::Event::Timeout(e) | qos_coap::Event::Reset(e) if e == id)
                {
                    return Err(format!("{code} /{path}: {ev:?}"));
                }
            }
            // nothing received within the read timeout: go round (retransmit, time out)
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                let bytes = buf[..n].to_vec();
                let now = self.start.elapsed().as_millis() as u64;
                if let Some(qos_coap::Incoming::Response { exchange, message }) =
                    self.ep.handle_datagram(now, from, &bytes)
                {
                    if exchange == id {
                        return Ok((
                            message.code(),
                            message.content_format(),
                            message.payload().to_vec(),
                        ));
                    }
                }
            }
        }
    }
}

fn recent_results(body: &[u8]) -> Result<Vec<qos_wire::outcome::ProbeResult>, String> {
    let r = qos_wire::outcome::RecentResults::decode(body).map_err(|e| e.to_string())?;
    Ok(r.results.iter().collect())
}

/// The downlink of a running edge: discovery, the recent raw results of its scheduled probe,
/// and an on-demand TCP probe asked for over CoAP and answered with the full result; that
/// result is in the recent ring afterwards but never in a summary.
#[test]
fn on_demand_probe_and_recent_results() {
    let dir = fresh_dir(&base(), "downlink");
    let serve = Serve::start(&dir);
    let target = TcpTarget::start();
    let edge_addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let spec = EdgeSpec {
        id: 21,
        brokers: vec![serve.coap],
        target: target.addr,
        storage: dir.join("edge-storage"),
        extra_toml: String::new(),
        bind: Some(edge_addr),
    };
    let edge = start_edge(&dir, &spec);
    let mut client = CoapClient::new();

    let (code, cf, links) = wait_for("/.well-known/core of the edge", PATIENCE, || {
        client
            .call(edge_addr, Code::GET, ".well-known/core", None, None)
            .map_err(|e| format!("{e}\n{}", edge.log_tail()))
    });
    assert_eq!((code, cf), (Code::CONTENT, Some(40)));
    assert_eq!(links, qos_wire::registration::EDGE_LINKS.as_bytes());

    // recent results of the scheduled probe (id 1), newest first
    let scheduled = wait_for("recent results of probe 1", PATIENCE, || {
        let (code, cf, body) = client.call(edge_addr, Code::GET, "r", Some("p=1"), None)?;
        if (code, cf) != (Code::CONTENT, Some(60)) {
            return Err(format!("{code} {cf:?}"));
        }
        let rs = recent_results(&body)?;
        if rs.len() >= 2 {
            Ok(rs)
        } else {
            Err(format!("{} results", rs.len()))
        }
    });
    assert!(scheduled.iter().all(|r| r.probe.0 == 1));
    assert!(
        scheduled.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
        "newest first"
    );
    assert!(
        scheduled
            .iter()
            .any(|r| r.ok() && r.phases.get(qos_wire::phase::Phase::Connect).is_some()),
        "{scheduled:?}"
    );

    // an on-demand TCP probe with an id the edge does not schedule
    let probe = qos_wire::probe::ProbeSpec {
        id: qos_wire::ids::ProbeId(900),
        interval_ms: 60_000,
        timeout_ms: 2_000,
        kind: qos_wire::probe::ProbeKind::Tcp {
            target: &target.addr.to_string(),
        },
    };
    let mut buf = [0u8; 256];
    let n = qos_wire::codec::encode_into(&mut buf, |e| probe.encode(e)).expect("encode");
    let (code, cf, body) = client
        .call(edge_addr, Code::POST, "p", None, Some(&buf[..n]))
        .unwrap_or_else(|e| panic!("POST /p: {e}\n{}", edge.log_tail()));
    assert_eq!(
        (code, cf),
        (Code::CHANGED, Some(60)),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let result = qos_wire::outcome::ProbeResult::decode(&mut minicbor::Decoder::new(&body))
        .expect("a probe-result");
    assert_eq!(result.probe.0, 900);
    assert!(result.ok(), "{result:?}");
    let connect = result
        .phases
        .get(qos_wire::phase::Phase::Connect)
        .expect("a connect phase");
    assert!(connect > 0, "{result:?}");

    // a bad spec is refused with a reason
    let (code, _, why) = client
        .call(edge_addr, Code::POST, "p", None, Some(b"\x81\x01"))
        .expect("an answer");
    assert_eq!(code, Code::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&why).starts_with("probe-spec"));

    // the on-demand result is kept for drill-down
    let (_, _, body) = client
        .call(edge_addr, Code::GET, "r", Some("p=900"), None)
        .expect("GET /r?p=900");
    assert_eq!(recent_results(&body).expect("recent-results"), [result]);

    // ... but summaries describe the schedule only: once windows after the run are stored,
    // none of them is of probe 900
    let after_s = result.at_ms / 1000 + 2;
    let db = serve.database();
    let summaries = wait_for("summaries after the on-demand run", PATIENCE, || {
        let rows = read_records(&db, spec.id)?;
        let s: Vec<CentralSummary> = rows
            .iter()
            .filter(|r| r.kind == 0)
            .map(|r| decode_summary(&r.body))
            .collect();
        if s.iter().any(|s| u64::from(s.start_s) > after_s) {
            Ok(s)
        } else {
            Err(format!("{} summaries", s.len()))
        }
    });
    assert!(summaries.iter().all(|s| s.probe.0 == 1), "{summaries:?}");
    edge.stop(PATIENCE);
    serve.proc.stop(PATIENCE);
}
