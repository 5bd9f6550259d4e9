//! The webhook driver against a real loopback HTTP server that fails once, then accepts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

use qos_model::notify::http::{deliver_due, Webhook};
use qos_model::notify::{Notifier, Outcome, RetryPolicy};
use serde_json::json;

/// Serve `statuses.len()` requests, answering each with the next status; send back each
/// request's (request line, body).
fn server(statuses: Vec<u16>) -> (u16, mpsc::Receiver<(String, String)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for status in statuses {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let mut s = s;
            write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            tx.send((
                line.trim_end().to_string(),
                String::from_utf8(body).unwrap(),
            ))
            .unwrap();
        }
    });
    (port, rx)
}

#[test]
fn retries_after_a_500_and_logs_every_attempt() {
    let (port, rx) = server(vec![500, 200]);
    let hook = Webhook::parse(&format!("http://127.0.0.1:{port}/hooks/qos")).unwrap();
    let mut n = Notifier::new(RetryPolicy {
        initial_s: 10,
        factor: 2,
        max_delay_s: 60,
        max_attempts: 3,
    });
    let doc = json!({"type": "incident_opened", "incident": {"id": 1}});
    let id = n.push(1000, &doc);

    assert_eq!(deliver_due(&mut n, &hook, 1000), 1);
    let (line, body) = rx.recv().unwrap();
    assert_eq!(line, "POST /hooks/qos HTTP/1.1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        doc
    );
    assert_eq!(n.pending(), 1);
    assert_eq!(n.poll_timeout(), Some(1010));
    // not due yet: nothing is sent
    assert_eq!(deliver_due(&mut n, &hook, 1009), 0);
    assert_eq!(deliver_due(&mut n, &hook, 1010), 1);
    let (_, body2) = rx.recv().unwrap();
    assert_eq!(body2, body);
    assert_eq!(n.pending(), 0);

    let log: Vec<_> = n.log().cloned().collect();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].id, log[0].attempt, log[0].at), (id, 1, 1000));
    assert!(matches!(
        &log[0].outcome,
        Outcome::Failed {
            status: Some(500),
            ..
        }
    ));
    assert_eq!(log[0].next_attempt, Some(1010));
    assert_eq!((log[1].attempt, log[1].at), (2, 1010));
    assert_eq!(log[1].outcome, Outcome::Delivered { status: 200 });
    assert_eq!((log[1].next_attempt, log[1].gave_up), (None, false));
}

#[test]
fn an_unreachable_endpoint_is_retried_then_given_up() {
    // a port with no listener: bind, learn the port, close
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = Webhook::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let mut n = Notifier::new(RetryPolicy {
        initial_s: 1,
        factor: 2,
        max_delay_s: 60,
        max_attempts: 2,
    });
    n.push(0, &json!({}));
    assert_eq!(deliver_due(&mut n, &hook, 0), 1);
    assert_eq!(deliver_due(&mut n, &hook, 1), 1);
    let log: Vec<_> = n.log().collect();
    assert!(matches!(
        &log[1].outcome,
        Outcome::Failed { status: None, .. }
    ));
    assert!(log[1].gave_up);
    assert_eq!(n.pending(), 0);
}
