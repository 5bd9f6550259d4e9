//! API tokens end to end: the real `qos-aggregator` binary makes a viewer and an admin token
//! (`qos-aggregator token`), a real `serve` is configured with their hashes, and raw HTTP
//! requests on loopback check 401/403/200 by role, the counters by reason, and that neither a
//! token nor its hash ever appears in serve's output or in an API answer.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_qos-aggregator");

mod common;
use common::{exchange_with, Reply, TempDir};

/// `qos-aggregator token`: the token and the configuration fragment.
fn make_token(role: &str, name: &str) -> (String, String) {
    let out = Command::new(BIN)
        .args(["token", "--role", role, "--name", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (token, fragment) = text.split_once('\n').unwrap();
    assert!(
        !fragment.contains(token),
        "the fragment holds the hash only"
    );
    (token.to_string(), fragment.to_string())
}

fn sha256_line(fragment: &str) -> String {
    fragment
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

/// A `serve` child; its stderr lines read so far.
struct Serve {
    child: Child,
    addr: SocketAddr,
    stderr: BufReader<std::process::ChildStderr>,
    log: String,
}

impl Serve {
    fn start(dir: &TempDir, listen: &str, http_extra: &str) -> Serve {
        let config = dir.0.join("c.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"{listen}\"\n{http_extra}\n[coap]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = {:?}\nsynchronous = \"normal\"\n",
                dir.0.join("data")
            ),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .args(["--log-level", "debug", "serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("serve ended before listening:\n{log}");
            }
            log.push_str(&line);
            if let Some(rest) = line.split("HTTP API on http://").nth(1) {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        Serve {
            child,
            addr,
            stderr,
            log,
        }
    }

    /// Stops it with SIGKILL; everything it wrote (stderr and stdout).
    fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        format!("{}{rest}{out}", self.log)
    }
}

fn call(addr: SocketAddr, method: &str, target: &str, token: Option<&str>, body: &str) -> Reply {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    exchange_with(addr, method, target, &auth, body)
}

#[test]
fn tokens_gate_reads_and_writes_by_role_and_stay_secret() {
    let dir = TempDir::new("auth", "roles");
    let (viewer, viewer_cfg) = make_token("viewer", "wall");
    let (admin, admin_cfg) = make_token("admin", "ops");
    let serve = Serve::start(&dir, "127.0.0.1:0", &format!("{viewer_cfg}{admin_cfg}"));
    let addr = serve.addr;
    let mut answers = String::new();
    let mut check = |method: &str, target: &str, token: Option<&str>, body: &str, want: u16| {
        let r = call(addr, method, target, token, body);
        assert_eq!(r.status, want, "{method} {target} with {token:?}");
        answers.push_str(&format!("{:?}\n", r.headers));
        answers.push_str(&String::from_utf8_lossy(&r.body));
        r
    };

    // No token: 401 with the challenge; a bad one: 401 invalid_token.
    let r = check("GET", "/api/v1/edges", None, "", 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer realm=\"qos\""));
    assert_eq!(r.json()["error"], "unauthorized");
    let r = check("GET", "/metrics", Some("qos_0000"), "", 401);
    assert!(r
        .header("WWW-Authenticate")
        .unwrap()
        .contains("invalid_token"));
    let r = exchange_with(
        addr,
        "GET",
        "/api/v1/stats",
        "Authorization: Basic eDp5\r\n",
        "",
    );
    assert_eq!(r.status, 401);
    // Public: the health check and the dashboard's page.
    check("GET", "/api/v1/health", None, "", 200);
    check("GET", "/", None, "", 200);
    // A viewer reads but does not write.
    check("GET", "/api/v1/edges", Some(&viewer), "", 200);
    check("GET", "/metrics", Some(&viewer), "", 200);
    let csv = "time,component,metric,value\n1764000000,db,query_ms,5\n";
    let r = check("POST", "/api/v1/metrics", Some(&viewer), csv, 403);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(r.json()["required_role"], "admin");
    assert!(r.header("WWW-Authenticate").is_none());
    check("DELETE", "/api/v1/edges/1/config", Some(&viewer), "", 403);
    check("POST", "/api/v1/metrics", None, csv, 401);
    // An admin writes.
    let r = check("POST", "/api/v1/metrics", Some(&admin), csv, 200);
    assert_eq!(r.json()["accepted"], 1);

    // Counted by reason: 2 missing (GET edges, POST metrics), 1 malformed (Basic), 1 invalid,
    // 2 forbidden (the viewer's POST and DELETE).
    let stats = check("GET", "/api/v1/stats", Some(&admin), "", 200).json();
    let failures = &stats["http_auth_failures"];
    assert_eq!(failures["missing"], 2, "{failures}");
    assert_eq!(failures["malformed"], 1, "{failures}");
    assert_eq!(failures["invalid"], 1, "{failures}");
    assert_eq!(failures["forbidden"], 2, "{failures}");
    let metrics = call(addr, "GET", "/metrics", Some(&viewer), "");
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("qos_http_auth_failures_total{reason=\"forbidden\"} 2\n"),
        "{text}"
    );

    let output = serve.kill();
    assert!(
        output.contains("HTTP request refused by authentication"),
        "{output}"
    );
    assert!(
        output.contains("token=\"ops\"") || output.contains("token=ops"),
        "{output}"
    );
    for secret in [
        viewer.as_str(),
        admin.as_str(),
        &sha256_line(&viewer_cfg),
        &sha256_line(&admin_cfg),
    ] {
        assert!(!output.contains(secret), "a secret in serve's output");
        assert!(!answers.contains(secret), "a secret in an API answer");
        assert!(!text.contains(secret), "a secret in /metrics");
    }
}

#[test]
fn without_tokens_loopback_stays_open() {
    let dir = TempDir::new("auth", "open");
    let serve = Serve::start(&dir, "127.0.0.1:0", "");
    let csv = "time,component,metric,value\n1764000000,db,query_ms,5\n";
    assert_eq!(
        call(serve.addr, "POST", "/api/v1/metrics", None, csv).status,
        200
    );
    assert_eq!(
        call(serve.addr, "GET", "/api/v1/edges", None, "").status,
        200
    );
    serve.kill();
}

#[test]
fn a_non_loopback_listener_needs_tokens_or_the_explicit_flag() {
    let dir = TempDir::new("auth", "exposed");
    let config = dir.0.join("c.toml");
    let data = dir.0.join("data");
    std::fs::write(
        &config,
        format!("[http]\nlisten = \"0.0.0.0:0\"\n[store]\ndata_dir = {data:?}\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("http.listen") && stderr.contains("allow_unauthenticated"),
        "{stderr}"
    );
    assert!(!data.exists(), "refused before anything was created");

    // Allowed explicitly: it starts, with a warning.
    let serve = Serve::start(&dir, "0.0.0.0:0", "allow_unauthenticated = true\n");
    assert!(serve.addr.ip().is_unspecified(), "{}", serve.addr);
    let output = serve.kill();
    assert!(
        output.contains("WARN") && output.contains("without authentication"),
        "{output}"
    );
}
