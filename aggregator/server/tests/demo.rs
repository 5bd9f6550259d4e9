//! `qos-aggregator demo` as users run it: the real binary (which starts `qos-edge` and
//! `qos-aggregator broker` children), a short scripted run and an interrupted one.
//!
//! Nothing here asserts on durations: the script's own `--duration` decides when faults happen;
//! the test reads the demo's progress lines and serve's API, and waits with generous deadlines.
//! The incidents are serve's: the test polls `GET /api/v1/incidents` (what the dashboard
//! shows) while the demo runs and checks them against the faults' times.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{free_port, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_qos-aggregator");
/// Generous bound for anything to happen (a build of qos-edge on first use included).
const PATIENCE: Duration = Duration::from_secs(900);

fn try_get(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (_, body) = raw.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

fn get(addr: SocketAddr, path: &str) -> serde_json::Value {
    try_get(addr, path).unwrap_or_else(|| panic!("GET {path} failed"))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Polls serve's `GET /api/v1/incidents` once a second until stopped; the latest version of
/// every incident seen, by id.
fn watch_incidents(
    http: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<i64, serde_json::Value>> {
    std::thread::spawn(move || {
        let mut seen = BTreeMap::new();
        while !stop.load(Ordering::SeqCst) {
            if let Some(doc) = try_get(http, "/api/v1/incidents?limit=100") {
                for i in doc["incidents"].as_array().into_iter().flatten() {
                    seen.insert(i["id"].as_i64().unwrap(), i.clone());
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        seen
    })
}

struct Demo {
    child: Child,
    /// Lines with the Unix time they were read at.
    lines: mpsc::Receiver<(f64, String)>,
    seen: Vec<String>,
    times: Vec<f64>,
    http: SocketAddr,
    dir: TempDir,
}

impl Demo {
    fn start(name: &str, extra: &[&str]) -> Demo {
        let dir = TempDir::new("demo", name);
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args = vec![
            "demo".to_string(),
            "--http".into(),
            http.to_string(),
            "--data".into(),
            dir.0.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("demo| {line}");
                if tx.send((unix_now(), line)).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
            times: Vec::new(),
            http,
            dir,
        }
    }

    /// Waits for a line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_secs(1)) {
                Ok((t, line)) => {
                    self.times.push(t);
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no line with {needle:?}; seen:\n{}", self.seen.join("\n"));
    }

    /// Reads the rest of the output and the exit status.
    fn finish(mut self) -> Finished {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.lines.recv_timeout(Duration::from_secs(1)) {
                Ok((t, line)) => {
                    self.times.push(t);
                    self.seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(Instant::now() < deadline, "the demo does not end");
                }
            }
        }
        let status = self.child.wait().unwrap();
        Finished {
            status,
            lines: self.seen,
            times: self.times,
            _dir: self.dir,
        }
    }
}

struct Finished {
    status: std::process::ExitStatus,
    lines: Vec<String>,
    times: Vec<f64>,
    _dir: TempDir,
}

impl Finished {
    /// When the first line containing `needle` was read.
    fn time_of(&self, needle: &str) -> Option<f64> {
        let i = self.lines.iter().position(|l| l.contains(needle))?;
        Some(self.times[i])
    }

    fn all(&self) -> String {
        self.lines.join("\n")
    }

    /// The report files the demo printed.
    fn reports(&self) -> Vec<PathBuf> {
        self.lines
            .iter()
            .filter_map(|l| l.split_once("report of the demo's period: "))
            .map(|(_, p)| PathBuf::from(p.trim()))
            .collect()
    }
}

/// Every `(pid N)` the demo printed: its children.
fn child_pids(lines: &[String]) -> BTreeSet<u32> {
    lines
        .iter()
        .filter(|l| l.contains("started "))
        .chain(lines.iter().filter(|l| l.contains("is back (pid")))
        .filter_map(|l| {
            let rest = &l[l.find("pid ")? + 4..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Processes still alive whose pid or process group is one of `pids`, or whose parent is
/// `parent`.
fn survivors(pids: &BTreeSet<u32>, parent: u32) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_string()) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        let (ppid, pgrp): (u32, u32) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        if pids.contains(&pid) || pids.contains(&pgrp) || ppid == parent {
            left.push(stat);
        }
    }
    left
}

/// The component of an incident's top-ranked cause.
fn top(i: &serde_json::Value) -> &str {
    i["causes"][0]["component"].as_str().unwrap_or("none")
}

#[test]
fn a_short_demo_shows_each_fault_with_its_cause_and_leaves_nothing_behind() {
    let mut demo = Demo::start("short", &["--duration", "120"]);
    let pid = demo.child.id();
    let url = demo.wait_line("dashboard: http://");
    assert!(url.contains(&format!("http://{}/", demo.http)), "{url}");
    let stop = Arc::new(AtomicBool::new(false));
    let poller = watch_incidents(demo.http, stop.clone());

    // The edges' summaries arrive in serve, each edge with its region.
    demo.wait_line("summaries arriving in serve from all 4 edges");
    let edges = get(demo.http, "/api/v1/edges");
    let edges = edges["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 4, "{edges:?}");
    for e in edges {
        assert!(e["received"].as_u64().unwrap() > 0, "{e}");
    }
    let regions: BTreeSet<&str> = edges.iter().filter_map(|e| e["region"].as_str()).collect();
    assert_eq!(regions, BTreeSet::from(["east", "west"]));
    let summaries = get(demo.http, "/api/v1/summaries?since=0&limit=10");
    assert!(!summaries["summaries"].as_array().unwrap().is_empty());
    // serve has the demo's service model.
    let services = get(demo.http, "/api/v1/services");
    let names: BTreeSet<&str> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["lookup", "shop"]), "{services}");

    let done = demo.finish();
    stop.store(true, Ordering::SeqCst);
    let incidents = poller.join().unwrap();
    assert!(done.status.success(), "exit status {}", done.status);
    let all = done.all();

    // Each fault yields an incident of serve's, opened while the fault was on (its first
    // window may begin up to one window, 2 s, before), whose top cause is the faulty
    // component, that serve's API showed (the dashboard's source) and that resolved; the demo
    // printed it with that cause.
    let expected = [
        ("fault 1/4:", "fault 1/4 over", "db"),
        ("fault 2/4:", "fault 2/4 over", "dns-west"),
        ("fault 3/4:", "fault 3/4 over", "path-east"),
    ];
    for (from, to, cause) in expected {
        let start = done.time_of(from).expect(from) - 3.0;
        let end = done.time_of(to).expect(to);
        let during: Vec<&serde_json::Value> = incidents
            .values()
            .filter(|i| {
                let at = i["opened_at"].as_f64().unwrap();
                at >= start && at < end
            })
            .collect();
        let first = during.first().unwrap_or_else(|| {
            panic!("no incident in serve during {from:?}: {incidents:#?}\n{all}")
        });
        assert_eq!(top(first), cause, "{from}: {first:#}");
        assert!(
            !first["causes"][0]["evidence"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{first:#}"
        );
        assert!(first["resolved_at"].as_u64().is_some(), "{first:#}");
        for i in &during {
            assert_eq!(top(i), cause, "every incident of {from}: {i:#}");
        }
        let id = first["id"].as_i64().unwrap();
        let mine = format!("incident {id} ");
        assert!(
            done.lines
                .iter()
                .any(|l| l.contains(&format!("incident {id} opened: "))),
            "{all}"
        );
        let last = done
            .lines
            .iter()
            .rfind(|l| l.contains(&mine) && l.contains("top cause: "))
            .unwrap_or_else(|| panic!("no top cause printed for {mine}:\n{all}"));
        assert!(last.contains(&format!("top cause: {cause} (")), "{last}");
        assert!(
            done.lines
                .iter()
                .any(|l| l.contains(&format!("incident {id} resolved after"))),
            "{all}"
        );
    }
    // The broker's kill: serve's one silence event for it, the failover, the return, and not
    // one summary lost.
    for needle in [
        "broker-1 killed with SIGKILL",
        "serve event broker_silent: broker-1 ",
        "failed over: batches now arrive through broker-2",
        "broker-1 is back",
        "; 0 sequence gaps",
        "demo stopped",
    ] {
        assert!(all.contains(needle), "no {needle:?} in:\n{all}");
    }

    // The report of the demo's period, as HTML and CSV, with the incidents and their causes.
    let reports = done.reports();
    assert_eq!(reports.len(), 2, "{all}");
    for path in &reports {
        let text = std::fs::read_to_string(path).unwrap();
        let csv = path.extension().unwrap() == "csv";
        for (_, _, cause) in expected {
            // The incident's top cause: its own CSV row, or first in the HTML's causes cell.
            let needle = if csv {
                format!(",cause_1,{cause}\r\n")
            } else {
                format!("<td>{cause} (")
            };
            assert!(
                text.contains(&needle),
                "{} lacks {needle:?}",
                path.display()
            );
        }
    }
    assert!(reports.iter().any(|p| p.extension().unwrap() == "html"));
    assert!(reports.iter().any(|p| p.extension().unwrap() == "csv"));

    let pids = child_pids(&done.lines);
    assert_eq!(
        pids.len(),
        7,
        "2 brokers, 4 edges, 1 restarted broker: {pids:?}"
    );
    assert_eq!(survivors(&pids, pid), Vec::<String>::new());
}

#[test]
fn sigint_stops_the_demo_and_its_children() {
    let mut demo = Demo::start("sigint", &[]);
    let pid = demo.child.id();
    demo.wait_line("summaries arriving in serve from all 4 edges");
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let done = demo.finish();
    assert!(done.status.success(), "exit status {}", done.status);
    assert!(done.lines.iter().any(|l| l.contains("demo stopped")));
    // Interrupted, it still writes the report of its period.
    let reports = done.reports();
    assert_eq!(reports.len(), 2, "{}", done.all());
    for path in &reports {
        assert!(
            std::fs::metadata(path).unwrap().len() > 0,
            "{}",
            path.display()
        );
    }
    let pids = child_pids(&done.lines);
    assert_eq!(pids.len(), 6, "{pids:?}");
    assert_eq!(survivors(&pids, pid), Vec::<String>::new());
}

#[test]
fn a_too_short_duration_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["demo", "--duration", "5", "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--duration"), "{stderr}");
}

#[test]
fn without_qos_edge_beside_it_the_demo_says_how_to_build_it() {
    let dir = TempDir::new("demo", "no-edge");
    let copy = dir.0.join("qos-aggregator");
    std::fs::copy(BIN, &copy).unwrap();
    let out = Command::new(&copy)
        .args([
            "demo",
            "--duration",
            "30",
            "--http",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(dir.0.join("data"))
        .env_remove("CARGO")
        .env_remove("CARGO_MANIFEST_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("qos-edge not found")
            && stderr.contains("cargo build --release -p qos-edge"),
        "{stderr}"
    );
}
