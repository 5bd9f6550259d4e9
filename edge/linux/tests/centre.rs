//! The real `qos-edge` binary against an in-test broker on 127.0.0.1 (built from `qos-coap`):
//! registration, configuration from the centre applied without restart, a bad configuration
//! refused and reported, the applied one kept across SIGKILL, the registration removed on
//! SIGTERM. And, when libcoap's `coap-rd-notls` is installed, registration with a real RFC 9176
//! directory.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qos_coap::{content_format, option, Code, Config as CoapConfig, Endpoint, Incoming};
use qos_wire::codec::List;
use qos_wire::config::{ConfigReport, EdgeConfig};
use qos_wire::ids::ProbeId;
use qos_wire::probe::{ProbeKind, ProbeSpec};
use qos_wire::uplink::{Ack, Batch, RecordKind};

type Srv = Endpoint<SocketAddr, 8, 16, 1152>;

fn config(etag: u32, ids: &[u16], interval_ms: u32, target: &str) -> Vec<u8> {
    let specs: Vec<ProbeSpec<'_>> = ids
        .iter()
        .map(|&id| ProbeSpec {
            id: ProbeId(id),
            interval_ms,
            timeout_ms: 200,
            kind: ProbeKind::Tcp { target },
        })
        .collect();
    let cfg = EdgeConfig {
        etag,
        window_s: 1,
        probes: List::from_slice(&specs),
        rules: List::from_slice(&[]),
    };
    let mut buf = vec![0u8; 2048];
    let n = cfg.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// What the broker does at `/c`.
#[derive(Clone, Default)]
enum Serve {
    /// 4.04.
    #[default]
    Nothing,
    /// 2.05 with this configuration (2.03 if the ETag matches).
    Config(u32, Vec<u8>),
    /// No answer at all (a silent centre).
    Silent,
}

#[derive(Default)]
struct State {
    serve: Serve,
    registrations: Vec<Vec<String>>,
    deletes: u32,
    gets: Vec<Option<u32>>,
    reports: Vec<(u32, bool, String)>,
    /// Probe ids of the summaries received, in order.
    summaries: Vec<u16>,
}

struct Broker {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    fn start() -> Broker {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let now = || start.elapsed().as_millis() as u64;
            let mut srv = Srv::new(CoapConfig::default(), 5).unwrap();
            let mut buf = [0u8; 2048];
            let mut out = [0u8; 2048];
            while !sp.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let Some(Incoming::Request(req)) =
                        srv.handle_datagram(now(), from, &buf[..n])
                    {
                        serve(&mut srv, now(), req, &mut st.lock().unwrap());
                    }
                }
                srv.handle_timeout(now());
                while let Some((to, n)) = srv.poll_transmit(now(), &mut out) {
                    let _ = sock.send_to(&out[..n], to);
                }
            }
        });
        Broker {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Wait up to `secs` for `cond`.
    fn wait(&self, secs: u64, what: &str, cond: impl Fn(&State) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if cond(&self.state.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = self.state.lock().unwrap();
        panic!(
            "timed out waiting for {what}: registrations {:?}, gets {:?}, reports {:?}, summaries {:?}",
            s.registrations,
            s.gets,
            s.reports,
            &s.summaries[s.summaries.len().saturating_sub(20)..]
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(srv: &mut Srv, now: u64, req: qos_coap::Request<'_, SocketAddr>, s: &mut State) {
    let m = &req.message;
    let path: Vec<String> = m
        .uri_path()
        .map(|p| String::from_utf8_lossy(p).into())
        .collect();
    let queries: Vec<String> = m
        .uri_queries()
        .map(|p| String::from_utf8_lossy(p).into())
        .collect();
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let h = req.handle;
    let empty = |_: &mut qos_coap::MessageWriter<'_>| Ok(());
    let _ = match (m.code(), &segs[..]) {
        (Code::POST, ["rd"]) => {
            if !req.duplicate {
                s.registrations.push(queries);
            }
            srv.respond(now, &h, Code::CREATED, |w| {
                w.option(option::LOCATION_PATH, b"rd")?;
                w.option(option::LOCATION_PATH, b"1")
            })
        }
        (Code::POST, ["rd", "1"]) => srv.respond(now, &h, Code::CHANGED, empty),
        (Code::DELETE, ["rd", "1"]) => {
            s.deletes += 1;
            srv.respond(now, &h, Code::DELETED, empty)
        }
        (Code::GET, ["c"]) => {
            let etag = m
                .option(option::ETAG)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes);
            s.gets.push(etag);
            match s.serve.clone() {
                Serve::Nothing => srv.respond(now, &h, Code::NOT_FOUND, empty),
                Serve::Silent => Ok(()),
                Serve::Config(e, _) if Some(e) == etag => srv.respond(now, &h, Code::VALID, empty),
                Serve::Config(e, body) => srv.respond(now, &h, Code::CONTENT, |w| {
                    w.option(option::ETAG, &e.to_be_bytes())?;
                    w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                    w.payload(&body)
                }),
            }
        }
        (Code::POST, ["c"]) => {
            let r = ConfigReport::decode(m.payload()).unwrap();
            s.reports.push((r.etag, r.accepted, r.reason.to_string()));
            srv.respond(now, &h, Code::CHANGED, empty)
        }
        (Code::POST, ["u"]) => {
            let b = Batch::decode(m.payload()).unwrap();
            for r in b.records() {
                if r.kind == RecordKind::Summary {
                    let mut d = minicbor::Decoder::new(r.body);
                    d.array().unwrap();
                    s.summaries.push(d.u16().unwrap());
                }
            }
            let mut buf = [0u8; 16];
            let n = Ack {
                acked: b.last_seq(),
            }
            .encode(&mut buf)
            .unwrap();
            srv.respond(now, &h, Code::CHANGED, |w| w.payload(&buf[..n]))
        }
        _ => srv.respond(now, &h, Code::NOT_FOUND, empty),
    };
}

fn write_config(dir: &Path, broker: SocketAddr, target: &str) -> std::path::PathBuf {
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        format!(
            r#"[edge]
id = 7
name = "edge-t"
region = "test"
[uplink]
brokers = ["{broker}"]
window_s = 1
lifetime_s = 60
config_poll_s = 1
ack_timeout_ms = 300
[storage]
dir = "{}"
[metrics]
enabled = false
[[probe]]
id = 1
kind = "tcp"
target = "{target}"
interval_ms = 300
timeout_ms = 200
"#,
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

fn spawn_edge(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_qos-edge"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn central_config_applied_without_restart_refused_when_bad_and_kept_across_sigkill() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    // B probes another target
    let listener_b = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_b = listener_b.local_addr().unwrap().to_string();
    let dir = tmpdir("edge-centre");
    let broker = Broker::start();
    let cfg_path = write_config(&dir, broker.addr, &target);
    let a = config(1, &[11], 400, &target);
    let b = config(2, &[12], 300, &target_b);
    // two probes with one id: refused by decoding
    let bad = {
        let mut v = config(3, &[13, 13], 300, &target);
        assert!(EdgeConfig::decode(&v).is_err());
        v.shrink_to_fit();
        v
    };
    broker.with(|s| s.serve = Serve::Config(1, a));
    let mut edge = spawn_edge(&cfg_path);
    let pid = edge.id();

    broker.wait(10, "registration", |s| !s.registrations.is_empty());
    let reg = broker.with(|s| s.registrations[0].clone());
    for want in ["ep=edge-t", "d=test", "lt=60", "id=7"] {
        assert!(reg.contains(&want.to_string()), "{want} in {reg:?}");
    }
    assert!(reg.iter().any(|q| q.starts_with("fw=")), "{reg:?}");
    assert!(
        !reg.iter().any(|q| q.starts_with("cfg=")),
        "nothing applied yet: {reg:?}"
    );
    broker.wait(10, "A applied", |s| {
        s.reports.contains(&(1, true, String::new()))
    });
    broker.wait(10, "summaries of A's probe", |s| s.summaries.contains(&11));

    // B: another probe id, interval and target, applied by the same process
    broker.with(|s| s.serve = Serve::Config(2, b));
    broker.wait(10, "B applied", |s| {
        s.reports.contains(&(2, true, String::new()))
    });
    let seen = broker.with(|s| s.summaries.len());
    broker.wait(10, "summaries of B's probe", |s| {
        s.summaries[seen..].contains(&12)
    });
    assert_eq!(edge.id(), pid);
    assert!(edge.try_wait().unwrap().is_none(), "still the same process");

    // the bad one: refused with its reason, B stays
    broker.with(|s| s.serve = Serve::Config(3, bad));
    broker.wait(10, "refusal report", |s| s.reports.iter().any(|r| r.0 == 3));
    let refusal = broker.with(|s| s.reports.iter().find(|r| r.0 == 3).cloned().unwrap());
    assert!(!refusal.1);
    assert!(refusal.2.contains("duplicate probe id"), "{refusal:?}");
    let gets = broker.with(|s| s.gets.len());
    broker.wait(10, "a poll with B's ETag after the refusal", |s| {
        s.gets[gets..].contains(&Some(2))
    });
    let seen = broker.with(|s| s.summaries.len());
    broker.wait(10, "B still running", |s| s.summaries[seen..].contains(&12));
    assert!(broker.with(|s| !s.summaries[seen..].contains(&13)));

    // SIGKILL, and a centre that no longer answers /c: B comes from storage
    signal(&edge, "-KILL");
    let _ = edge.wait();
    broker.with(|s| {
        s.serve = Serve::Silent;
        s.registrations.clear();
        s.summaries.clear();
    });
    let mut edge = spawn_edge(&cfg_path);
    broker.wait(10, "registration after restart", |s| {
        !s.registrations.is_empty()
    });
    let reg = broker.with(|s| s.registrations[0].clone());
    assert!(reg.contains(&"cfg=2".to_string()), "{reg:?}");
    broker.wait(10, "B's probe after restart", |s| s.summaries.contains(&12));
    assert!(
        broker.with(|s| !s.summaries.contains(&1)),
        "the TOML's probe does not run"
    );

    // clean stop: the registration is removed
    signal(&edge, "-TERM");
    let status = edge.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(broker.with(|s| s.deletes), 1);
    drop((listener, listener_b));
}

/// The edge registers with libcoap's RFC 9176 directory (`coap-rd-notls`); checked with
/// `coap-client-notls`: `GET /rd-lookup/ep` where the directory has a lookup interface, else
/// (libcoap 4.3, Debian 12) the registration listed in `/.well-known/core` and its links.
/// Skipped (with a message) when libcoap's tools are not installed (Debian `libcoap3-bin`).
#[test]
fn registers_with_libcoap_resource_directory() {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("coap-rd-notls") || !have("coap-client-notls") {
        eprintln!("skipped: coap-rd-notls or coap-client-notls not installed (apt-get install libcoap3-bin)");
        return;
    }
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut rd = Command::new("coap-rd-notls")
        .args(["-A", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let dir = tmpdir("edge-libcoap-rd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg_path = write_config(&dir, addr, "127.0.0.1:9");
    let mut edge = spawn_edge(&cfg_path);
    let get = |path: &str| {
        let out = Command::new("coap-client-notls")
            .args(["-m", "get", "-B", "2"])
            .arg(format!("coap://127.0.0.1:{port}/{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The lookup interface where the directory has one (newer libcoap); libcoap 4.3's example
    // directory has none: it lists each registration in /.well-known/core as </rd/...> and
    // serves the registered links there.
    let until = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    while Instant::now() < until && found.is_none() {
        let lookup = get("rd-lookup/ep");
        if lookup.contains("edge-t") {
            found = Some(lookup);
            break;
        }
        let wkc = get(".well-known/core");
        if let Some(loc) = wkc
            .split(',')
            .find_map(|l| l.strip_prefix("</rd/").and_then(|l| l.split('>').next()))
        {
            found = Some(get(&format!("rd/{loc}")));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    signal(&edge, "-TERM");
    let _ = edge.wait();
    let _ = rd.kill();
    let _ = rd.wait();
    let text = found.expect("no registration in the directory within 10 s");
    assert!(
        text.contains("edge-t") || text.contains(qos_wire::registration::EDGE_LINKS),
        "{text}"
    );
}
