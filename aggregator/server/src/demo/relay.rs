//! A region's network path: an in-process TCP relay in front of the application and a UDP
//! relay in front of the region's DNS responder, so one region's path can get added latency or
//! loss while the others stay clean.
//!
//! Knobs ([`Path`]): `delay_ms` is added to every answer going back to the client (each chunk
//! of a TCP answer, each DNS answer); `loss_permille` drops that share of datagrams and closes
//! that share of new TCP connections at once. The component's metrics are its added delay,
//! what it forwarded and what it dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics::{Component, Derive, Kind, Raw};
use super::services::MAX_CONNECTIONS;

/// One region's path: knobs and metrics.
#[derive(Debug)]
pub struct Path {
    name: String,
    /// Milliseconds added to every answer.
    pub delay_ms: AtomicU64,
    /// Share of datagrams and new connections dropped, per mille.
    pub loss_permille: AtomicU64,
    connections: Raw,
    datagrams: Raw,
    dropped: Raw,
    bytes: Raw,
    rng: AtomicU64,
}

impl Path {
    /// A clean path named `name` (`path-east`).
    pub fn new(name: &str) -> Path {
        Path {
            name: name.to_string(),
            delay_ms: AtomicU64::new(0),
            loss_permille: AtomicU64::new(0),
            connections: Raw::default(),
            datagrams: Raw::default(),
            dropped: Raw::default(),
            bytes: Raw::default(),
            rng: AtomicU64::new(0x2545_f491_4f6c_dd1d),
        }
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    /// Whether to drop the next unit (a xorshift draw against `loss_permille`).
    fn lose(&self) -> bool {
        let loss = self.loss_permille.load(Ordering::Relaxed);
        if loss == 0 {
            return false;
        }
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        let lost = x % 1000 < loss;
        if lost {
            self.dropped.add(1);
        }
        lost
    }

    /// Relays TCP from `listen` to `upstream` until `shutdown`.
    pub fn start_tcp(
        self: &Arc<Self>,
        listen: SocketAddr,
        upstream: SocketAddr,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(listen)?;
        let local = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let path = self.clone();
        let open = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name(format!("demo-{}-tcp", self.name))
            .spawn(move || {
                while !shutdown.load(Ordering::Relaxed) {
                    let Ok((client, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS || path.lose() {
                        continue; // closed at once
                    }
                    path.connections.add(1);
                    open.fetch_add(1, Ordering::Relaxed);
                    let (path, open) = (path.clone(), open.clone());
                    let spawned = std::thread::Builder::new()
                        .name("demo-relay-conn".into())
                        .spawn(move || {
                            path.relay(client, upstream);
                            open.fetch_sub(1, Ordering::Relaxed);
                        });
                    if spawned.is_err() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })?;
        Ok(local)
    }

    fn relay(&self, client: TcpStream, upstream: SocketAddr) {
        let timeout = Some(Duration::from_secs(5));
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
            return;
        };
        for s in [&client, &server] {
            let _ = s.set_read_timeout(timeout);
            let _ = s.set_write_timeout(timeout);
        }
        let (Ok(mut c_in), Ok(mut s_out)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        // Requests go up as they come; answers come back delayed.
        let up = std::thread::Builder::new()
            .name("demo-relay-up".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = c_in.read(&mut buf) {
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Write);
            });
        let (mut s_in, mut c_out) = (server, client);
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s_in.read(&mut buf) {
            std::thread::sleep(self.delay());
            self.bytes.add(n as u64);
            if c_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = c_out.shutdown(Shutdown::Both);
        let _ = s_in.shutdown(Shutdown::Both);
        if let Ok(up) = up {
            let _ = up.join();
        }
    }

    /// Relays DNS (UDP) from `listen` to `upstream` until `shutdown`: queries go up at once,
    /// answers go back to the client that asked after the added delay.
    pub fn start_udp(
        self: &Arc<Self>,
        listen: SocketAddr,
        upstream: SocketAddr,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<SocketAddr> {
        let front = UdpSocket::bind(listen)?;
        let local = front.local_addr()?;
        let back = UdpSocket::bind("127.0.0.1:0")?;
        back.connect(upstream)?;
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
        }
        // Who asked, by DNS id (the last asker of an id wins; ids are random per query).
        let askers: Arc<Mutex<HashMap<u16, SocketAddr>>> = Arc::default();
        let (front_tx, back_rx) = (front.try_clone()?, back.try_clone()?);
        let (delayed_tx, delayed_rx) = mpsc::channel::<(Instant, Vec<u8>, SocketAddr)>();
        let name = self.name.clone();
        {
            let (path, askers, shutdown) = (self.clone(), askers.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name(format!("demo-{name}-udp-up"))
                .spawn(move || {
                    let mut buf = [0u8; 1500];
                    while !shutdown.load(Ordering::Relaxed) {
                        let Ok((n, from)) = front.recv_from(&mut buf) else {
                            continue;
                        };
                        if n < 2 || path.lose() {
                            continue;
                        }
                        path.datagrams.add(1);
                        let id = u16::from_be_bytes([buf[0], buf[1]]);
                        let mut map = askers.lock().unwrap_or_else(|e| e.into_inner());
                        if map.len() > 4096 {
                            map.clear();
                        }
                        map.insert(id, from);
                        drop(map);
                        let _ = back.send(&buf[..n]);
                    }
                })?;
        }
        {
            let (path, shutdown) = (self.clone(), shutdown.clone());
            std::thread::Builder::new()
                .name(format!("demo-{name}-udp-down"))
                .spawn(move || {
                    let mut buf = [0u8; 1500];
                    while !shutdown.load(Ordering::Relaxed) {
                        let Ok(n) = back_rx.recv(&mut buf) else {
                            continue;
                        };
                        if n < 2 || path.lose() {
                            continue;
                        }
                        let id = u16::from_be_bytes([buf[0], buf[1]]);
                        let to = askers.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                        if let Some(to) = to {
                            path.bytes.add(n as u64);
                            let due = Instant::now() + path.delay();
                            if delayed_tx.send((due, buf[..n].to_vec(), to)).is_err() {
                                return;
                            }
                        }
                    }
                })?;
        }
        std::thread::Builder::new()
            .name(format!("demo-{name}-udp-delay"))
            .spawn(move || {
                // Dropping the sender (the down thread ends at shutdown) ends this loop.
                for (due, bytes, to) in delayed_rx {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let _ = front_tx.send_to(&bytes, to);
                }
            })?;
        Ok(local)
    }
}

impl Component for Path {
    fn name(&self) -> &str {
        &self.name
    }
    fn raw(&self) -> Vec<(&'static str, Kind, u64)> {
        vec![
            (
                "path_added_delay_ms",
                Kind::Gauge,
                self.delay_ms.load(Ordering::Relaxed),
            ),
            (
                "path_connections_total",
                Kind::Counter,
                self.connections.get(),
            ),
            ("path_datagrams_total", Kind::Counter, self.datagrams.get()),
            ("path_dropped_total", Kind::Counter, self.dropped.get()),
            ("path_bytes_total", Kind::Counter, self.bytes.get()),
        ]
    }
    fn series(&self) -> &'static [(&'static str, Derive)] {
        &[
            ("added_delay_ms", Derive::Level(0, 1.0)),
            ("dropped_per_s", Derive::Rate(3, 1.0)),
            ("connections_per_s", Derive::Rate(1, 1.0)),
            ("datagrams_per_s", Derive::Rate(2, 1.0)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::services::{http_get, App, Db, Dns};
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn tcp_relay_forwards_and_its_knobs_delay_and_drop() {
        let shutdown = Arc::new(AtomicBool::new(false));
        let db = Arc::new(Db::default());
        let db_addr = db.start(local(), shutdown.clone()).unwrap();
        let app = Arc::new(App::default());
        let app_addr = app.start(local(), db_addr, shutdown.clone()).unwrap();
        let path = Arc::new(Path::new("path-test"));
        let front = path.start_tcp(local(), app_addr, shutdown.clone()).unwrap();
        assert_eq!(http_get(front, "/k").unwrap().0, 200);
        path.delay_ms.store(40, Ordering::Relaxed);
        let t = Instant::now();
        assert_eq!(http_get(front, "/k").unwrap().0, 200);
        // A lower bound: the relay sleeps at least the knob before answering.
        assert!(t.elapsed() >= Duration::from_millis(40));
        path.delay_ms.store(0, Ordering::Relaxed);
        path.loss_permille.store(1000, Ordering::Relaxed);
        assert!(
            http_get(front, "/k").is_err(),
            "every connection is dropped"
        );
        assert!(path.dropped.get() >= 1);
        shutdown.store(true, Ordering::Relaxed);
    }

    #[test]
    fn udp_relay_forwards_dns_answers_to_the_asker() {
        let shutdown = Arc::new(AtomicBool::new(false));
        let dns = Arc::new(Dns::new("dns-test"));
        let dns_addr = dns.start(local(), shutdown.clone()).unwrap();
        let path = Arc::new(Path::new("path-test"));
        let front = path.start_udp(local(), dns_addr, shutdown.clone()).unwrap();
        let client = UdpSocket::bind(local()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let q = [
            0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ];
        client.send_to(&q, front).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0xab, 0xcd]);
        assert_eq!(&buf[n - 4..n], &[127, 0, 0, 1]);
        assert_eq!(path.datagrams.get(), 1);
        shutdown.store(true, Ordering::Relaxed);
    }
}
