//! `qos-aggregator demo` as users run it: the real binary (which starts `qos-edge` and
//! `qos-aggregator broker` children), a short scripted run and an interrupted one.
//!
//! Nothing here asserts on durations: the script's own `--duration` decides when faults happen;
//! the test reads the demo's progress lines and serve's API, and waits with generous deadlines.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_qos-aggregator");
/// Generous bound for anything to happen (a build of qos-edge on first use included).
const PATIENCE: Duration = Duration::from_secs(900);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    http: SocketAddr,
    _dir: TempDir,
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
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
            http,
            _dir: dir,
        }
    }

    /// Waits for a line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
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
    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.lines.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    assert!(Instant::now() < deadline, "the demo does not end");
                }
            }
        }
        let status = self.child.wait().unwrap();
        (status, self.seen)
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

/// The first `top cause:` line after the line containing `from` and before the one
/// containing `to`.
fn cause_between(lines: &[String], from: &str, to: &str) -> Option<String> {
    let start = lines.iter().position(|l| l.contains(from))?;
    let end = lines
        .iter()
        .position(|l| l.contains(to))
        .unwrap_or(lines.len());
    lines[start..end]
        .iter()
        .find(|l| l.contains("top cause:"))
        .cloned()
}

#[test]
fn a_short_demo_shows_each_fault_with_its_cause_and_leaves_nothing_behind() {
    let mut demo = Demo::start("short", &["--duration", "40"]);
    let pid = demo.child.id();
    let url = demo.wait_line("dashboard: http://");
    assert!(url.contains(&format!("http://{}/", demo.http)), "{url}");

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

    let (status, lines) = demo.finish();
    assert!(status.success(), "exit status {status}");

    let expected = [
        ("fault 1/4:", "fault 2/4:", "top cause: db "),
        ("fault 2/4:", "fault 3/4:", "top cause: dns-west "),
        ("fault 3/4:", "fault 4/4:", "top cause: path-east "),
    ];
    for (from, to, cause) in expected {
        let line = cause_between(&lines, from, to)
            .unwrap_or_else(|| panic!("no incident ranked after {from:?}:\n{}", lines.join("\n")));
        assert!(
            line.contains(cause),
            "after {from:?} expected {cause:?}, got {line}"
        );
    }
    for needle in [
        "broker-1 killed with SIGKILL",
        "failed over: batches now arrive through broker-2",
        "broker-1 is back",
        "demo stopped",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "no {needle:?} in:\n{}",
            lines.join("\n")
        );
    }
    let pids = child_pids(&lines);
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
    let (status, lines) = demo.finish();
    assert!(status.success(), "exit status {status}");
    assert!(lines.iter().any(|l| l.contains("demo stopped")));
    let pids = child_pids(&lines);
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
