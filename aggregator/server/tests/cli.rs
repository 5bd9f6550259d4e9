//! The `qos-aggregator` binary: exit codes, one-line errors, clean shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_qos-aggregator");

mod common;
use common::TempDir;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_config_error_exits_2_with_one_line_naming_file_and_line() {
    let dir = TempDir::new("cli", "bad-config");
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, "[store]\ndata_dir = \"x\"\ndatadir = \"y\"\n").unwrap();
    let (code, stderr) = run(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("bad.toml:3:"), "{stderr}");
    assert!(lines[0].contains("datadir"), "{stderr}");
}

#[test]
fn a_missing_config_file_exits_2() {
    let (code, stderr) = run(&["serve", "--config", "does-not-exist.toml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("does-not-exist.toml"), "{stderr}");
}

#[test]
fn subcommands_not_built_yet_are_usage_errors() {
    let (code, stderr) = run(&["report"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn broker_config_errors_exit_2_naming_the_file() {
    let (code, stderr) = run(&["broker", "--config", "no-such-broker.toml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no-such-broker.toml"), "{stderr}");
    let dir = TempDir::new("cli", "broker-bad-config");
    let path = dir.0.join("b.toml");
    std::fs::write(
        &path,
        "[broker]
listen = \"127.0.0.1:0\"\nupstrem = \"x\"\n",
    )
    .unwrap();
    let (code, stderr) = run(&["broker", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("b.toml:3:") && stderr.contains("upstrem"),
        "{stderr}"
    );
}

#[test]
fn broker_runtime_errors_exit_1_naming_the_path_or_address() {
    let dir = TempDir::new("cli", "broker-runtime");
    let blocker = dir.0.join("file");
    std::fs::write(&blocker, b"").unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    for (toml, expected) in [
        (
            format!(
                "[broker]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
                blocker.join("sub")
            ),
            "sub".to_string(),
        ),
        (
            format!(
                "[broker]\nlisten = \"{taken_addr}\"\ndata_dir = {:?}\n",
                dir.0.join("data")
            ),
            taken_addr.to_string(),
        ),
    ] {
        let config = dir.0.join("c.toml");
        std::fs::write(&config, toml).unwrap();
        let (code, stderr) = run(&["broker", "--config", config.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("qos-aggregator: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(&expected), "{stderr}");
    }
}

#[cfg(unix)]
#[test]
fn broker_listens_then_exits_cleanly_on_sigterm() {
    let dir = TempDir::new("cli", "broker-sigterm");
    let config = dir.0.join("b.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.0.join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["broker", "--config", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("broker ended before listening:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("broker listening") {
            break;
        }
    }
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("broker stopped"), "{seen}{rest}");
    assert!(dir.0.join("data").join("queue.sqlite").exists());
}

#[test]
fn a_runtime_error_exits_1() {
    let dir = TempDir::new("cli", "runtime");
    let blocker = dir.0.join("file");
    std::fs::write(&blocker, b"").unwrap();
    let config = dir.0.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = {:?}\n",
            blocker.join("sub")
        ),
    )
    .unwrap();
    let (code, stderr) = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("qos-aggregator: error:"))
        .collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(error_lines[0].contains("sub"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn serve_answers_then_exits_cleanly_on_sigterm() {
    let dir = TempDir::new("cli", "sigterm");
    let config = dir.0.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = {:?}\nsynchronous = \"normal\"\n",
            dir.0.join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let addr: SocketAddr = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("server ended before listening:\n{seen}");
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("HTTP API on http://").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };

    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"status\":\"ok\""), "{reply}");

    let pid = child.id().to_string();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("stopped"), "{seen}{rest}");
    assert!(dir.0.join("data").join("qos.sqlite").exists());
}
