//! Datagrams by the group for the CoAP ingest driver: on Linux one `recvmmsg` takes what is
//! waiting (blocking, up to the socket's read timeout, only for the first) and one `sendmmsg`
//! sends a group's answers; elsewhere the same with one `recv_from`/`send_to` per datagram.
//!
//! [`Receiver::recv`] fills fixed slots of [`Receiver::SLOT`] bytes (one more than the largest
//! message, so an oversized datagram is seen as such: it arrives truncated to a slot and longer
//! than [`MAX_MESSAGE`]); [`Outbox`] copies what is to be sent until [`Outbox::flush`].

use std::io;
use std::net::{SocketAddr, UdpSocket};

use crate::coap::MAX_MESSAGE;

/// Receives up to `max` datagrams at a time into slots of its own.
pub struct Receiver {
    data: Vec<u8>,
    /// (sender, length) of each datagram of the last [`Receiver::recv`].
    got: Vec<(SocketAddr, usize)>,
    #[cfg(target_os = "linux")]
    sys: linux::RecvState,
}

impl Receiver {
    /// Bytes of a slot: one more than the largest message.
    pub const SLOT: usize = MAX_MESSAGE + 1;

    /// Room for `max` datagrams.
    pub fn new(max: usize) -> Receiver {
        let max = max.max(1);
        let mut data = vec![0u8; max * Self::SLOT];
        #[cfg(target_os = "linux")]
        let sys = linux::RecvState::new(&mut data, Self::SLOT);
        Receiver {
            data,
            got: Vec::with_capacity(max),
            #[cfg(target_os = "linux")]
            sys,
        }
    }

    /// Waits for a datagram (as long as the socket's read timeout: `Ok(0)` when none came) and
    /// takes it with those already waiting behind it, without waiting for more. Returns how
    /// many; read them with [`Receiver::get`].
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        #[cfg(target_os = "linux")]
        {
            linux::recv(socket, &mut self.sys, &mut self.got)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            portable_recv(socket, &mut self.data, Self::SLOT, &mut self.got)?;
        }
        Ok(self.got.len())
    }

    /// The `i`-th datagram of the last [`Receiver::recv`]: its sender and bytes.
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let (from, n) = self.got[i];
        (from, &self.data[i * Self::SLOT..i * Self::SLOT + n])
    }

    /// How many the last [`Receiver::recv`] took.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// Whether the last [`Receiver::recv`] took nothing.
    pub fn is_empty(&self) -> bool {
        self.got.is_empty()
    }
}

fn quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One `recv_from` per datagram: a blocking one, then non-blocking ones while any wait.
#[cfg(any(not(target_os = "linux"), test))]
fn portable_recv(
    socket: &UdpSocket,
    data: &mut [u8],
    slot: usize,
    got: &mut Vec<(SocketAddr, usize)>,
) -> io::Result<()> {
    let max = data.len() / slot;
    while got.len() < max {
        let i = got.len();
        match socket.recv_from(&mut data[i * slot..(i + 1) * slot]) {
            Ok((n, from)) => got.push((from, n)),
            Err(e) if quiet(&e) => break,
            Err(e) if got.is_empty() => return Err(e),
            Err(_) => break,
        }
        if got.len() == 1 {
            socket.set_nonblocking(true)?;
        }
    }
    if !got.is_empty() {
        socket.set_nonblocking(false)?;
    }
    Ok(())
}

/// Datagrams to send, copied, sent together by [`Outbox::flush`].
#[derive(Default)]
pub struct Outbox {
    data: Vec<u8>,
    queued: Vec<(SocketAddr, std::ops::Range<usize>)>,
    #[cfg(target_os = "linux")]
    sys: linux::SendState,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Queues `bytes` for `to`.
    pub fn push(&mut self, to: SocketAddr, bytes: &[u8]) {
        let at = self.data.len();
        self.data.extend_from_slice(bytes);
        self.queued.push((to, at..at + bytes.len()));
    }

    /// How many datagrams wait.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends everything queued and empties the outbox. A datagram the system refuses (e.g. no
    /// route to its peer) is dropped and counted in the result, as a lost UDP datagram would
    /// be; the others are still sent.
    pub fn flush(&mut self, socket: &UdpSocket) -> usize {
        if self.queued.is_empty() {
            return 0;
        }
        #[cfg(target_os = "linux")]
        let failed = linux::send(socket, &mut self.sys, &self.data, &self.queued);
        #[cfg(not(target_os = "linux"))]
        let failed = portable_send(socket, &self.data, &self.queued);
        self.queued.clear();
        self.data.clear();
        failed
    }
}

#[cfg(any(not(target_os = "linux"), test))]
fn portable_send(
    socket: &UdpSocket,
    data: &[u8],
    queued: &[(SocketAddr, std::ops::Range<usize>)],
) -> usize {
    queued
        .iter()
        .filter(|(to, r)| socket.send_to(&data[r.clone()], to).is_err())
        .count()
}

#[cfg(target_os = "linux")]
mod linux {
    //! `recvmmsg`/`sendmmsg` through `libc`.

    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
    use std::os::fd::AsRawFd;

    /// Headers of `recvmmsg`, pointing into the receiver's slots (a `Vec`'s heap buffer, which
    /// does not move with the `Receiver`).
    pub(super) struct RecvState {
        names: Vec<libc::sockaddr_storage>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    // SAFETY: the raw pointers only point into buffers owned by the same `Receiver`, used only
    // through `&mut Receiver`.
    unsafe impl Send for RecvState {}

    impl RecvState {
        pub(super) fn new(data: &mut [u8], slot: usize) -> RecvState {
            let n = data.len() / slot;
            // SAFETY: all-zero is a valid `sockaddr_storage`.
            let mut names: Vec<libc::sockaddr_storage> =
                (0..n).map(|_| unsafe { zeroed() }).collect();
            let mut iovs: Vec<libc::iovec> = data
                .chunks_exact_mut(slot)
                .map(|c| libc::iovec {
                    iov_base: c.as_mut_ptr().cast(),
                    iov_len: slot,
                })
                .collect();
            let hdrs = (0..n)
                .map(|i| {
                    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
                    let mut h: libc::mmsghdr = unsafe { zeroed() };
                    h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                    h.msg_hdr.msg_iov = &mut iovs[i];
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            RecvState { names, iovs, hdrs }
        }
    }

    pub(super) fn recv(
        socket: &UdpSocket,
        st: &mut RecvState,
        got: &mut Vec<(SocketAddr, usize)>,
    ) -> io::Result<()> {
        debug_assert_eq!(st.iovs.len(), st.hdrs.len());
        for h in st.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `hdrs` holds `hdrs.len()` initialised headers whose name and iovec pointers
        // point to live buffers of the stated sizes (see `RecvState::new`).
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                st.hdrs.as_mut_ptr(),
                st.hdrs.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if super::quiet(&e) { Ok(()) } else { Err(e) };
        }
        for (h, name) in st.hdrs.iter().zip(&st.names).take(n as usize) {
            if let Some(from) = from_storage(name) {
                got.push((from, h.msg_len as usize));
            }
        }
        Ok(())
    }

    fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(s.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a `sockaddr_in`.
                let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const _) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a `sockaddr_in6`.
                let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const _) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn to_storage(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: all-zero is a valid `sockaddr_storage`.
        let mut s: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                // SAFETY: `sockaddr_storage` is large and aligned enough for a `sockaddr_in`.
                let sin: &mut libc::sockaddr_in = unsafe { &mut *(&mut s as *mut _ as *mut _) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                // SAFETY: `sockaddr_storage` is large and aligned enough for a `sockaddr_in6`.
                let sin6: &mut libc::sockaddr_in6 = unsafe { &mut *(&mut s as *mut _ as *mut _) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (s, len as libc::socklen_t)
    }

    /// Scratch of `sendmmsg`, kept to avoid allocating per group.
    #[derive(Default)]
    pub(super) struct SendState {
        names: Vec<libc::sockaddr_storage>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    // SAFETY: the pointers are rebuilt at every `send` and not used outside it.
    unsafe impl Send for SendState {}

    /// Sends `queued` (ranges of `data`); returns how many the system refused.
    pub(super) fn send(
        socket: &UdpSocket,
        st: &mut SendState,
        data: &[u8],
        queued: &[(SocketAddr, std::ops::Range<usize>)],
    ) -> usize {
        st.names.clear();
        st.iovs.clear();
        st.hdrs.clear();
        let mut lens = Vec::with_capacity(queued.len());
        for (to, r) in queued {
            let (name, len) = to_storage(to);
            st.names.push(name);
            lens.push(len);
            st.iovs.push(libc::iovec {
                iov_base: data[r.clone()].as_ptr() as *mut libc::c_void,
                iov_len: r.len(),
            });
        }
        for ((name, iov), len) in st.names.iter_mut().zip(st.iovs.iter_mut()).zip(lens) {
            // SAFETY: all-zero is a valid `mmsghdr`.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = len;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            st.hdrs.push(h);
        }
        let (mut at, mut failed) = (0, 0);
        while at < st.hdrs.len() {
            let rest = &mut st.hdrs[at..];
            // SAFETY: `rest` holds initialised headers pointing to `names`, `iovs` and `data`,
            // all alive and unchanged during the call; the kernel only reads them (and writes
            // `msg_len`).
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                at += n as usize;
            } else {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first one failed: drop it, go on with the next.
                tracing::debug!(error = %e, peer = %queued[at].0, "CoAP send failed");
                failed += 1;
                at += 1;
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        (a, b)
    }

    #[test]
    fn a_group_is_received_whole_with_senders_and_oversized_lengths() {
        let (server, client) = pair();
        let to = server.local_addr().unwrap();
        let sizes = [1usize, 83, MAX_MESSAGE, MAX_MESSAGE + 40, 0, 500];
        for (i, &n) in sizes.iter().enumerate() {
            client.send_to(&vec![i as u8; n], to).unwrap();
        }
        let mut rx = Receiver::new(4);
        let mut seen = Vec::new();
        while seen.len() < sizes.len() {
            let got = rx.recv(&server).unwrap();
            assert!(got > 0 && got <= 4, "{got}");
            for i in 0..rx.len() {
                let (from, bytes) = rx.get(i);
                assert_eq!(from, client.local_addr().unwrap());
                seen.push(bytes.to_vec());
            }
        }
        for (i, (&n, got)) in sizes.iter().zip(&seen).enumerate() {
            // an oversized datagram arrives cut to a slot, longer than any message
            assert_eq!(got.len(), n.min(Receiver::SLOT), "datagram {i}");
            assert!(got.iter().all(|&b| b == i as u8));
        }
        // nothing more: the read timeout ends the wait with nothing
        server
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        assert_eq!(rx.recv(&server).unwrap(), 0);
        assert!(rx.is_empty());
    }

    #[test]
    fn an_outbox_sends_everything_queued_to_each_peer_in_order() {
        let (server, a) = pair();
        let b = UdpSocket::bind("[::1]:0").ok();
        let v6_server = UdpSocket::bind("[::1]:0").ok();
        let mut out = Outbox::new();
        for i in 0..100u8 {
            out.push(a.local_addr().unwrap(), &[i; 16]);
        }
        assert_eq!(out.len(), 100);
        assert_eq!(out.flush(&server), 0);
        assert!(out.is_empty());
        let mut buf = [0u8; 64];
        for i in 0..100u8 {
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!((n, from), (16, server.local_addr().unwrap()));
            assert_eq!(buf[0], i);
        }
        // IPv6 loopback, where the machine has it
        if let (Some(b), Some(v6)) = (b, v6_server) {
            b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            out.push(b.local_addr().unwrap(), b"six");
            assert_eq!(out.flush(&v6), 0);
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"six"[..], v6.local_addr().unwrap()));
        }
    }

    #[test]
    fn the_portable_paths_agree() {
        let (server, client) = pair();
        let to = server.local_addr().unwrap();
        let queued: Vec<(SocketAddr, std::ops::Range<usize>)> =
            (0..3).map(|i| (to, i..i + 2)).collect();
        assert_eq!(portable_send(&client, b"abcd", &queued), 0);
        let mut data = vec![0u8; 8 * Receiver::SLOT];
        let mut got = Vec::new();
        while got.len() < 3 {
            portable_recv(&server, &mut data, Receiver::SLOT, &mut got).unwrap();
        }
        let from = client.local_addr().unwrap();
        assert_eq!(got, [(from, 2), (from, 2), (from, 2)]);
        let slot = |i: usize| &data[i * Receiver::SLOT..i * Receiver::SLOT + 2];
        assert_eq!(
            (slot(0), slot(1), slot(2)),
            (&b"ab"[..], &b"bc"[..], &b"cd"[..])
        );
    }
}
