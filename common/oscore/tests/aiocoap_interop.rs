//! Interoperability with an OSCORE implementation not written here: aiocoap (Python), through
//! real UDP sockets on loopback, in both directions. Skipped only with `QOS_SKIP_EXTERNAL=1`
//! when aiocoap's OSCORE extras are missing (`.ci/requirements.txt` installs them).

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qos_coap::{Code, Message, MessageType, MessageWriter};
use qos_oscore::Context;

const SECRET: [u8; 16] = *b"interop-secret!!";
const SALT: [u8; 4] = *b"salt";
const EDGE_ID: &[u8] = b"\x0e\x01";
const SERVE_ID: &[u8] = b"\x5e";

fn aiocoap_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiocoap.oscore, filelock, cbor2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("QOS_SKIP_EXTERNAL").is_some_and(|v| v == "1") {
            eprintln!("aiocoap[oscore] missing; skipped because QOS_SKIP_EXTERNAL=1");
            return false;
        }
        panic!(
            "aiocoap with its OSCORE extras is not importable by python3; .ci/run installs it \
             (.ci/requirements.txt), or set QOS_SKIP_EXTERNAL=1 to skip this check"
        );
    }
    true
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh aiocoap security-context directory.
fn context_dir(name: &str, sender: &[u8], recipient: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qos-oscore-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = format!(
        r#"{{"sender-id_hex": "{}", "recipient-id_hex": "{}", "secret_hex": "{}", "salt_hex": "{}"}}"#,
        hex(sender),
        hex(recipient),
        hex(&SECRET),
        hex(&SALT)
    );
    std::fs::write(dir.join("settings.json"), settings).unwrap();
    dir
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiocoap_peer.py")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn post(mid: u16, token: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let mut w =
        MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, mid, token).unwrap();
    w.uri_path("c").unwrap();
    w.payload(payload).unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

/// Our client (the edge's side) → aiocoap's OSCORE server.
#[test]
fn our_client_talks_to_an_aiocoap_oscore_server() {
    if !aiocoap_available() {
        return;
    }
    let dir = context_dir("server", SERVE_ID, EDGE_ID);
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut child = Command::new("python3")
        .arg(script())
        .args(["server", dir.to_str().unwrap(), &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _child = Killed(child);
    assert_eq!(line.trim(), "ready");

    let mut ctx = Context::derive(&SECRET, &SALT, None, EDGE_ID, SERVE_ID).unwrap();
    ctx.set_sender_sequence(5 << 24); // an edge's boot epoch 5
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for (i, text) in ["first report", "second report"].iter().enumerate() {
        let token = [0xa0, i as u8];
        let plain = post(100 + i as u16, &token, text.as_bytes());
        let mut protected = [0u8; 256];
        let (n, info) = ctx.protect_request(&plain, &mut protected).unwrap();
        assert!(
            !protected[..n]
                .windows(text.len())
                .any(|w| w == text.as_bytes()),
            "the payload travels encrypted"
        );
        sock.send_to(&protected[..n], ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 512];
        let response = loop {
            let (m, from) = sock.recv_from(&mut buf).expect("a response from aiocoap");
            let msg = Message::parse(&buf[..m]).unwrap();
            if msg.ty() == MessageType::Confirmable {
                let mut ack = [0u8; 8];
                let w = MessageWriter::new(
                    &mut ack,
                    MessageType::Acknowledgement,
                    Code::EMPTY,
                    msg.message_id(),
                    &[],
                )
                .unwrap();
                let k = w.finish();
                sock.send_to(&ack[..k], from).unwrap();
            }
            if msg.code().is_response() && msg.token() == token {
                break buf[..m].to_vec();
            }
        };
        let outer = Message::parse(&response).unwrap();
        assert_eq!(
            outer.code(),
            Code::CHANGED,
            "the outer code of a protected response"
        );
        let mut out = [0u8; 512];
        let m = ctx.unprotect_response(&response, &info, &mut out).unwrap();
        let inner = Message::parse(&out[..m]).unwrap();
        assert_eq!(inner.code(), Code::CONTENT);
        assert_eq!(inner.payload(), format!("aiocoap saw: {text}").as_bytes());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// aiocoap's OSCORE client → our server side (serve's), including a replay of its request.
#[test]
fn an_aiocoap_oscore_client_talks_to_our_server() {
    if !aiocoap_available() {
        return;
    }
    let dir = context_dir("client", EDGE_ID, SERVE_ID);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let uri = format!("coap://{}/c", sock.local_addr().unwrap());
    let child = Command::new("python3")
        .arg(script())
        .args(["client", dir.to_str().unwrap(), &uri, "hello from aiocoap"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");

    let mut ctx = Context::derive(&SECRET, &SALT, None, SERVE_ID, EDGE_ID).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = sock.recv_from(&mut buf).expect("aiocoap's request");
    let request = buf[..n].to_vec();
    assert_eq!(qos_oscore::request_kid(&request), Ok(Some(EDGE_ID)));
    let mut plain = [0u8; 1024];
    let (m, info) = ctx.unprotect_request(&request, &mut plain).unwrap();
    let inner = Message::parse(&plain[..m]).unwrap();
    assert_eq!(inner.code(), Code::POST);
    assert!(inner.path_is("c"));
    assert_eq!(inner.payload(), b"hello from aiocoap");

    let mut resp = [0u8; 256];
    let ty = if inner.ty() == MessageType::Confirmable {
        MessageType::Acknowledgement
    } else {
        MessageType::NonConfirmable
    };
    let mut w = MessageWriter::new(
        &mut resp,
        ty,
        Code::CONTENT,
        inner.message_id(),
        inner.token(),
    )
    .unwrap();
    w.payload(b"serve saw: hello from aiocoap").unwrap();
    let k = w.finish();
    let mut protected = [0u8; 256];
    let p = ctx
        .protect_response(&resp[..k], &info, &mut protected)
        .unwrap();
    sock.send_to(&protected[..p], from).unwrap();

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aiocoap client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2.05"), "{stdout}");
    assert!(stdout.contains("serve saw: hello from aiocoap"), "{stdout}");
    // The captured request sent again is refused.
    assert_eq!(
        ctx.unprotect_request(&request, &mut plain).unwrap_err(),
        qos_oscore::Error::Replay
    );
    let _ = std::fs::remove_dir_all(&dir);
}
