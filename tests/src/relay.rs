//! A UDP relay on loopback that delays and drops datagrams, both ways, between one client
//! (the first address other than the server that sends to it) and a server: an edge's link to
//! its broker made slow and lossy in a controlled way.
//!
//! Dropping is deterministic (every `n`-th datagram, counted over both directions), so a run
//! is reproducible; delays are added to every forwarded datagram. Both can be changed while it
//! runs ([`LossyRelay::set`]).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The relay; stops when dropped.
pub struct LossyRelay {
    /// Where the client sends to.
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    drop_every: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LossyRelay {
    /// A relay to `server`, forwarding at once and dropping nothing until [`LossyRelay::set`].
    pub fn start(server: SocketAddr) -> LossyRelay {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        sock.set_read_timeout(Some(Duration::from_millis(2)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("relay address");
        let delay_ms = Arc::new(AtomicU64::new(0));
        let drop_every = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, e, x, s) = (
            delay_ms.clone(),
            drop_every.clone(),
            dropped.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut client: Option<SocketAddr> = None;
            let mut pending: Vec<(Instant, SocketAddr, Vec<u8>)> = Vec::new();
            let mut seen = 0u64;
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let to = if from == server {
                        client
                    } else {
                        client = Some(from);
                        Some(server)
                    };
                    if let Some(to) = to {
                        seen += 1;
                        let every = e.load(Ordering::Relaxed);
                        if every > 0 && seen % every == 0 {
                            x.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let due =
                                Instant::now() + Duration::from_millis(d.load(Ordering::Relaxed));
                            pending.push((due, to, buf[..n].to_vec()));
                        }
                    }
                }
                let now = Instant::now();
                pending.retain(|(due, to, bytes)| {
                    if *due <= now {
                        let _ = sock.send_to(bytes, to);
                        false
                    } else {
                        true
                    }
                });
            }
        });
        LossyRelay {
            addr,
            delay_ms,
            drop_every,
            dropped,
            stop,
            thread: Some(thread),
        }
    }

    /// From now on, delays every datagram by `delay_ms` and drops every `drop_every`-th one
    /// (0: none).
    pub fn set(&self, delay_ms: u64, drop_every: u64) {
        self.delay_ms.store(delay_ms, Ordering::Relaxed);
        self.drop_every.store(drop_every, Ordering::Relaxed);
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
