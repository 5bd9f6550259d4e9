//! An edge played by the test: a CoAP client and server on one real UDP socket, built from
//! `qos-coap`, in a thread of the test process. It registers, sends batches, asks for its
//! central configuration (`GET /c`, with or without ETag), reports on it (`POST /c`), and serves
//! what `edge/core/src/downlink.rs` serves: `POST /p` (empty ACK, then a separate 2.04 with a
//! `probe-result`) and `GET /r[?p=]` (`recent-results`). It can be made to go away (it then
//! neither receives nor sends) and come back.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qos_coap::{
    content_format, option, Code, Config, Endpoint, Event, ExchangeId, Incoming, Reliability,
    RequestHandle,
};
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::outcome::{encode_results, PhaseTimings, ProbeResult};
use qos_wire::phase::Phase;
use qos_wire::probe::ProbeSpec;
use qos_wire::samples;
use qos_wire::summary::Summary;

/// What the fake edge's probe reports: connect and total times, µs.
pub const CONNECT_US: u32 = 1_234;
/// See [`CONNECT_US`].
pub const TOTAL_US: u32 = 5_678;

type Ep = Endpoint<SocketAddr, 16, 64, 1152, 64>;

/// The requests served: path and queries.
type Seen = Mutex<Vec<(String, Vec<String>)>>;

/// An answer the fake edge received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The code.
    pub code: Code,
    /// Its ETag option.
    pub etag: Option<Vec<u8>>,
    /// Its Content-Format.
    pub cf: Option<u16>,
    /// Its payload.
    pub payload: Vec<u8>,
}

struct Ask {
    code: Code,
    path: String,
    queries: Vec<String>,
    etag: Option<u32>,
    cf: Option<u16>,
    payload: Vec<u8>,
    reply: Sender<Result<Answer, String>>,
}

/// The fake edge; its thread stops when it is dropped.
pub struct FakeEdge {
    /// Its numeric id.
    pub id: u32,
    /// Its socket's address.
    pub addr: SocketAddr,
    away: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    asks: Sender<Ask>,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

impl FakeEdge {
    /// Starts edge `id` talking to `upstream` (a broker or `serve`).
    pub fn start(id: u32, upstream: SocketAddr) -> FakeEdge {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the fake edge's socket");
        let addr = socket.local_addr().expect("its address");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set a read timeout");
        let (tx, rx) = mpsc::channel();
        let away = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s, v) = (away.clone(), stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || run(socket, upstream, &rx, &a, &s, &v, id));
        FakeEdge {
            id,
            addr,
            away,
            stop,
            asks: tx,
            seen,
            thread: Some(thread),
        }
    }

    /// One CON request to the upstream and its answer (within 60 s).
    pub fn request(
        &self,
        code: Code,
        path: &str,
        queries: &[&str],
        etag: Option<u32>,
        cf: Option<u16>,
        payload: &[u8],
    ) -> Result<Answer, String> {
        let (tx, rx) = mpsc::channel();
        self.asks
            .send(Ask {
                code,
                path: path.to_string(),
                queries: queries.iter().map(|q| q.to_string()).collect(),
                etag,
                cf,
                payload: payload.to_vec(),
                reply: tx,
            })
            .map_err(|_| "the fake edge stopped".to_string())?;
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| format!("no answer to {code} /{path}"))?
    }

    /// Registers (RFC 9176) as `name` in `region` for 300 s.
    pub fn register(&self, name: &str, region: &str) -> Result<Answer, String> {
        let (ep, d, id) = (
            format!("ep={name}"),
            format!("d={region}"),
            format!("id={}", self.id),
        );
        self.request(Code::POST, "rd", &[&ep, &d, "lt=300", &id], None, None, b"")
    }

    /// Sends one batch of one summary numbered `seq`.
    pub fn send_batch(&self, seq: u64) -> Result<Answer, String> {
        let s: Summary<16> = samples::http_summary(seq, 60, 0);
        let b = samples::batch(EdgeId(self.id), Seq(seq), 0, &[s]).map_err(|e| e.to_string())?;
        self.request(Code::POST, "u", &[], None, Some(content_format::CBOR), &b)
    }

    /// `GET /c?id=<id>`, with `etag` if given.
    pub fn get_config(&self, etag: Option<u32>) -> Result<Answer, String> {
        let id = format!("id={}", self.id);
        self.request(Code::GET, "c", &[&id], etag, None, b"")
    }

    /// `POST /c?id=<id>` with `config-report = [1, etag, accepted, reason]`.
    pub fn report(&self, etag: u32, accepted: bool, reason: &str) -> Result<Answer, String> {
        let mut buf = vec![0u8; 64 + reason.len()];
        let n = qos_wire::codec::encode_into(&mut buf, |e| {
            e.array(4)?.u8(1)?.u32(etag)?.bool(accepted)?.str(reason)?;
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        buf.truncate(n);
        let id = format!("id={}", self.id);
        self.request(
            Code::POST,
            "c",
            &[&id],
            None,
            Some(content_format::CBOR),
            &buf,
        )
    }

    /// Makes it unreachable (it neither receives nor sends), or back.
    pub fn set_away(&self, away: bool) {
        self.away.store(away, Ordering::SeqCst);
    }

    /// The `/p` and `/r` requests it received: path and queries.
    pub fn seen(&self) -> Vec<(String, Vec<String>)> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for FakeEdge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[allow(clippy::too_many_arguments)]
fn run(
    socket: UdpSocket,
    upstream: SocketAddr,
    asks: &Receiver<Ask>,
    away: &AtomicBool,
    stop: &AtomicBool,
    seen: &Seen,
    id: u32,
) {
    let start = Instant::now();
    let mono = || start.elapsed().as_millis() as u64;
    let mut ep = Ep::new(Config::with_reliability(500, 1.5, 4), u64::from(id) + 1)
        .expect("endpoint configuration");
    let mut waiting: Vec<Ask> = Vec::new();
    let mut pending: Vec<(ExchangeId, Sender<Result<Answer, String>>)> = Vec::new();
    let mut running: Vec<(u64, RequestHandle<SocketAddr>, ProbeResult)> = Vec::new();
    let mut recent: Vec<ProbeResult> = Vec::new();
    let mut rx = [0u8; 1153];
    let mut tx = [0u8; 1152];
    while !stop.load(Ordering::SeqCst) {
        let now = mono();
        waiting.extend(asks.try_iter());
        let mut still = Vec::new();
        for a in waiting.drain(..) {
            let sent = ep.request(now, upstream, Reliability::Confirmable, a.code, |w| {
                if let Some(e) = a.etag {
                    w.option(option::ETAG, &e.to_be_bytes())?;
                }
                w.uri_path(&a.path)?;
                if let Some(cf) = a.cf {
                    w.uint_option(option::CONTENT_FORMAT, u32::from(cf))?;
                }
                for q in &a.queries {
                    w.option(option::URI_QUERY, q.as_bytes())?;
                }
                w.payload(&a.payload)
            });
            match sent {
                Ok(x) => pending.push((x, a.reply)),
                Err(qos_coap::RequestError::Busy) => still.push(a),
                Err(e) => {
                    let _ = a.reply.send(Err(e.to_string()));
                }
            }
        }
        waiting = still;
        if let Ok((n, from)) = socket.recv_from(&mut rx) {
            if !away.load(Ordering::SeqCst) {
                let now = mono();
                match ep.handle_datagram(now, from, &rx[..n]) {
                    Some(Incoming::Response { exchange, message }) => {
                        if let Some(i) = pending.iter().position(|(x, _)| *x == exchange) {
                            let (_, reply) = pending.swap_remove(i);
                            let _ = reply.send(Ok(Answer {
                                code: message.code(),
                                etag: message.option(option::ETAG).map(<[u8]>::to_vec),
                                cf: message.content_format(),
                                payload: message.payload().to_vec(),
                            }));
                        }
                    }
                    Some(Incoming::Request(req)) => {
                        let m = &req.message;
                        let path: Vec<String> = m
                            .uri_path()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect();
                        let queries: Vec<String> = m
                            .uri_queries()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect();
                        if let Ok(mut v) = seen.lock() {
                            v.push((path.join("/"), queries.clone()));
                        }
                        if m.path_is("p") && m.code() == Code::POST {
                            let spec = ProbeSpec::decode(&mut minicbor::Decoder::new(m.payload()));
                            match spec {
                                Ok(spec) => {
                                    let mut handle = req.handle;
                                    let _ = ep.defer(now, &mut handle);
                                    let mut phases = PhaseTimings::new();
                                    phases.set(Phase::Connect, CONNECT_US);
                                    phases.set(Phase::Total, TOTAL_US);
                                    let result = ProbeResult {
                                        probe: spec.id,
                                        at_ms: unix_ms(),
                                        phases,
                                        error: None,
                                        error_after_us: None,
                                        detail: 0,
                                        redirects: 0,
                                    };
                                    running.push((now + 200, handle, result));
                                }
                                Err(e) => {
                                    let why = e.to_string();
                                    let _ = ep.respond(now, &req.handle, Code::BAD_REQUEST, |w| {
                                        w.payload(why.as_bytes())
                                    });
                                }
                            }
                        } else if m.path_is("r") && m.code() == Code::GET {
                            let only: Option<u16> = queries
                                .iter()
                                .find_map(|q| q.strip_prefix("p=").and_then(|v| v.parse().ok()));
                            let list: Vec<ProbeResult> = recent
                                .iter()
                                .rev()
                                .filter(|r| only.is_none_or(|p| r.probe == ProbeId(p)))
                                .copied()
                                .collect();
                            let mut body = [0u8; 1024];
                            let n = encode_results(&mut body, list.iter())
                                .map(|(n, _)| n)
                                .unwrap_or(0);
                            let _ = ep.respond(now, &req.handle, Code::CONTENT, |w| {
                                w.uint_option(
                                    option::CONTENT_FORMAT,
                                    u32::from(content_format::CBOR),
                                )?;
                                w.payload(&body[..n])
                            });
                        } else {
                            let _ =
                                ep.respond(now, &req.handle, Code::NOT_FOUND, |w| w.payload(b""));
                        }
                    }
                    None => {}
                }
            }
        }
        let now = mono();
        ep.handle_timeout(now);
        while let Some(ev) = ep.poll_event() {
            if let Event::Timeout(x) | Event::Reset(x) = ev {
                if let Some(i) = pending.iter().position(|(p, _)| *p == x) {
                    let (_, reply) = pending.swap_remove(i);
                    let _ = reply.send(Err(format!("no answer ({ev:?})")));
                }
            }
        }
        if !away.load(Ordering::SeqCst) {
            let mut i = 0;
            while i < running.len() {
                if running[i].0 <= now {
                    let (_, mut handle, result) = running.swap_remove(i);
                    let mut body = [0u8; 96];
                    let n =
                        qos_wire::codec::encode_into(&mut body, |e| result.encode(e)).unwrap_or(0);
                    let _ = ep.respond_separate(now, &mut handle, Code::CHANGED, |w| {
                        w.uint_option(option::CONTENT_FORMAT, u32::from(content_format::CBOR))?;
                        w.payload(&body[..n])
                    });
                    recent.push(result);
                } else {
                    i += 1;
                }
            }
        }
        while let Some((to, n)) = ep.poll_transmit(now, &mut tx) {
            if !away.load(Ordering::SeqCst) {
                let _ = socket.send_to(&tx[..n], to);
            }
        }
    }
}
