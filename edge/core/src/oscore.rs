//! OSCORE (RFC 8613) on the edge's uplink: the requests the edge sends to the super-manager
//! (batches `POST /u`, configuration `GET /c` and reports `POST /c`) are protected end to end;
//! brokers relay them unread. Registration with the broker (`/rd`) stays plaintext: it is
//! addressed to the broker itself.
//!
//! The super-manager's orders the edge serves (`POST /p`, `GET /r`) come protected with the
//! same context, roles swapped (RFC 8613 §3.1: serve's sender id is this edge's recipient id):
//! [`EdgeOscore::open`] verifies and decrypts them (the replay window refuses a number seen
//! before) and [`EdgeOscore::seal`] protects their answers, piggybacked or separate. A
//! plaintext request other than `GET /.well-known/core` is refused (dropped and counted): an
//! edge with a context takes orders only from the holder of the key.
//!
//! Sender sequence numbers: `epoch << bits | counter`, the boot epoch being persisted once per
//! boot ([`crate::storage`]), so a number is never used twice across reboots. A boot may send
//! 2^bits protected requests; then protection stops until the next boot. `bits` is the
//! board's choice ([`COUNTER_BITS`] for epochs counted from 1; 8 for an epoch in Unix seconds,
//! as on QEMU); `epoch << bits` must stay below 2^40.

use heapless::Vec;
use qos_coap::{option, Code, Message};
use qos_oscore::{Context, RequestInfo};
use qos_wire::registration::DIRECTORY_PATH;

use crate::fmt::warn;

/// Protected requests remembered to open their answers (and to send a retransmission as
/// the same bytes): one per exchange of the edge's endpoint.
const SENT: usize = 4;
/// Protected orders remembered to protect their answers (and recognise a retransmission).
const SERVED: usize = 4;
/// Bits of the per-boot counter in a sender sequence number, for boot epochs counted from 1
/// (up to 2^16 boots).
pub const COUNTER_BITS: u32 = 24;

/// Counters of the OSCORE hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OscoreStats {
    /// Requests protected (retransmissions not counted).
    pub protected: u32,
    /// Answers opened.
    pub opened: u32,
    /// Answers dropped: not verifying, or a success answer without protection.
    pub refused: u32,
    /// Requests dropped because they could not be protected (too large, numbers exhausted).
    pub unsendable: u32,
    /// Protected orders (`/p`, `/r`) verified and handed on.
    pub orders_opened: u32,
    /// Protected orders refused: a tag that does not verify, an unknown key id, malformed.
    pub orders_forged: u32,
    /// Protected orders refused as replays (a number already accepted, or older than the
    /// window).
    pub orders_replayed: u32,
    /// Plaintext requests refused (only `GET /.well-known/core` may come unprotected).
    pub orders_unprotected: u32,
    /// 4.01 "Replay detected" answers that moved the sender sequence number on.
    pub resynced: u32,
}

/// The edge's OSCORE state: its context, the protected requests in flight and a scratch copy
/// of one message (`M` bytes).
pub struct EdgeOscore<const M: usize> {
    ctx: Context,
    /// The end of this boot's sequence numbers (exclusive).
    limit: u64,
    sent: Vec<(u16, Vec<u8, 8>, RequestInfo), SENT>,
    /// Orders accepted: message id, token, binding of the answer.
    served: Vec<(u16, Vec<u8, 8>, RequestInfo), SERVED>,
    scratch: [u8; M],
    stats: OscoreStats,
}

impl<const M: usize> EdgeOscore<M> {
    /// The hook for `ctx` in boot epoch `epoch`: sequence numbers from `epoch << bits` to
    /// below `(epoch + 1) << bits` (and 2^40).
    pub fn new(mut ctx: Context, epoch: u32, bits: u32) -> EdgeOscore<M> {
        let bits = bits.min(40);
        let first = u64::from(epoch) << bits;
        ctx.set_sender_sequence(first);
        EdgeOscore {
            ctx,
            limit: (first + (1 << bits)).min(qos_oscore::MAX_SEQUENCE + 1),
            sent: Vec::new(),
            served: Vec::new(),
            scratch: [0; M],
            stats: OscoreStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> OscoreStats {
        self.stats
    }

    /// The context (its sender sequence number, ids).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Protects the request the endpoint wrote into `buf[..n]`, in place; its new length, or
    /// `None` to send nothing. Other messages (ACKs, answers, registration) pass unchanged.
    // Not inlined: the firmware's uplink task would take a copy per call path (0.7 KiB).
    #[inline(never)]
    pub fn seal(&mut self, buf: &mut [u8], n: usize) -> Option<usize> {
        let Some(plain) = buf.get(..n) else {
            return Some(n);
        };
        let Ok(m) = Message::parse(plain) else {
            return Some(n);
        };
        if m.code().is_response() {
            return self.seal_answer(buf, n);
        }
        let registration = m.uri_path().next() == Some(DIRECTORY_PATH.as_bytes());
        if !m.code().is_request() || registration {
            return Some(n);
        }
        let (mid, token) = (m.message_id(), m.token());
        let known = self
            .sent
            .iter()
            .position(|(id, t, _)| *id == mid && t.as_slice() == token);
        self.scratch.get_mut(..n)?.copy_from_slice(plain);
        let plain = self.scratch.get(..n)?;
        let result = match known {
            Some(i) => self
                .ctx
                .protect_request_again(plain, &self.sent[i].2, buf)
                .map(|k| (k, None)),
            None if self.ctx.sender_sequence() >= self.limit => {
                Err(qos_oscore::Error::SequenceExhausted)
            }
            None => {
                let token = Vec::from_slice(token).unwrap_or_default();
                self.ctx
                    .protect_request(plain, buf)
                    .map(|(k, info)| (k, Some((mid, token, info))))
            }
        };
        match result {
            Ok((k, new)) => {
                if let Some(entry) = new {
                    self.stats.protected = self.stats.protected.saturating_add(1);
                    if self.sent.is_full() {
                        self.sent.remove(0);
                    }
                    let _ = self.sent.push(entry);
                }
                Some(k)
            }
            Err(_) => {
                self.stats.unsendable = self.stats.unsendable.saturating_add(1);
                None
            }
        }
    }

    /// Opens an answer received into `buf[..n]`, in place; its new length, or `None` to drop
    /// it. Requests and empty messages pass unchanged; an unprotected error answer (4.xx, 5.xx:
    /// a broker's 5.04 or 5.03) to a protected request passes too (it only makes the edge try
    /// again); an unprotected success answer to one is dropped.
    // Not inlined, as `seal`.
    #[inline(never)]
    pub fn open(&mut self, buf: &mut [u8], n: usize) -> Option<usize> {
        let protected = buf.get(..n)?;
        let Ok(m) = Message::parse(protected) else {
            return Some(n);
        };
        if m.code().is_request() {
            return self.open_order(buf, n);
        }
        if m.code() == Code::EMPTY {
            return Some(n);
        }
        let Some(i) = self
            .sent
            .iter()
            .position(|(_, t, _)| t.as_slice() == m.token())
        else {
            return Some(n);
        };
        if m.option(option::OSCORE).is_none() {
            if m.code() == Code::UNAUTHORIZED && m.payload() == qos_oscore::REPLAY_DETECTED {
                self.resync(i);
            }
            if m.code().class() >= 4 {
                return Some(n);
            }
            self.stats.refused = self.stats.refused.saturating_add(1);
            return None;
        }
        self.scratch.get_mut(..n)?.copy_from_slice(protected);
        let copy = self.scratch.get_mut(..n)?;
        match self
            .ctx
            .unprotect_response_in_place(copy, &self.sent[i].2, buf)
        {
            Ok(k) => {
                self.stats.opened = self.stats.opened.saturating_add(1);
                self.sent.remove(i);
                Some(k)
            }
            Err(_) => {
                self.stats.refused = self.stats.refused.saturating_add(1);
                None
            }
        }
    }

    /// The answer to the protected request `sent[i]` was 4.01 "Replay detected": the
    /// receiver's replay window is ahead of our number (serve restarted and refuses up to its
    /// persisted mark + N). Move on by [`qos_oscore::RESYNC_STEP`] (at most this boot's limit:
    /// then nothing more is sent until the next boot), once per request: the answer comes
    /// unprotected, so a forged one burns at most one step.
    fn resync(&mut self, i: usize) {
        self.sent.remove(i);
        let next = self
            .ctx
            .sender_sequence()
            .saturating_add(qos_oscore::RESYNC_STEP)
            .min(self.limit);
        self.ctx.set_sender_sequence(next);
        self.stats.resynced = self.stats.resynced.saturating_add(1);
        warn!(
            "OSCORE: replay detected by the receiver; sequence number moved on to {}",
            next
        );
    }

    /// A request received into `buf[..n]`: a protected order opened in place, `GET
    /// /.well-known/core` as it is; anything else refused (`None`).
    fn open_order(&mut self, buf: &mut [u8], n: usize) -> Option<usize> {
        let m = Message::parse(buf.get(..n)?).ok()?;
        if m.option(option::OSCORE).is_none() {
            if m.code() == Code::GET && m.path_is(".well-known/core") {
                return Some(n);
            }
            self.stats.orders_unprotected = self.stats.orders_unprotected.saturating_add(1);
            return None;
        }
        let (mid, token) = (m.message_id(), Vec::<u8, 8>::from_slice(m.token()).ok()?);
        self.scratch.get_mut(..n)?.copy_from_slice(buf.get(..n)?);
        let copy = self.scratch.get_mut(..n)?;
        match self.ctx.unprotect_request_in_place(copy, buf) {
            Ok((k, info)) => {
                self.stats.orders_opened = self.stats.orders_opened.saturating_add(1);
                if self.served.is_full() {
                    self.served.remove(0);
                }
                let _ = self.served.push((mid, token, info));
                Some(k)
            }
            Err(qos_oscore::Error::Replay)
                if self.served.iter().any(|(i, t, _)| *i == mid && *t == token) =>
            {
                // A CoAP retransmission of an order accepted: the endpoint recognises its
                // message id and sends its answer again (protected again by `seal`).
                Some(n)
            }
            Err(qos_oscore::Error::Replay | qos_oscore::Error::Stale) => {
                self.stats.orders_replayed = self.stats.orders_replayed.saturating_add(1);
                None
            }
            Err(_) => {
                self.stats.orders_forged = self.stats.orders_forged.saturating_add(1);
                None
            }
        }
    }

    /// An answer the endpoint wrote into `buf[..n]`: protected when it answers an order
    /// accepted protected (by token); `None` (never in plaintext) when it cannot be.
    fn seal_answer(&mut self, buf: &mut [u8], n: usize) -> Option<usize> {
        let plain = buf.get(..n)?;
        let m = Message::parse(plain).ok()?;
        let Some(i) = self
            .served
            .iter()
            .rposition(|(_, t, _)| t.as_slice() == m.token())
        else {
            return Some(n);
        };
        self.scratch.get_mut(..n)?.copy_from_slice(plain);
        let plain = self.scratch.get(..n)?;
        match self.ctx.protect_response(plain, &self.served[i].2, buf) {
            Ok(k) => Some(k),
            Err(_) => {
                self.stats.unsendable = self.stats.unsendable.saturating_add(1);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_coap::{MessageType, MessageWriter};

    const SECRET: [u8; 32] = [3; 32];

    fn edge() -> EdgeOscore<1152> {
        let ctx = Context::derive(&SECRET, b"salt", None, b"\x0e", b"\x5e").unwrap();
        EdgeOscore::new(ctx, 1, COUNTER_BITS)
    }

    /// serve's side: the same context, roles swapped.
    fn serve() -> Context {
        Context::derive(&SECRET, b"salt", None, b"\x5e", b"\x0e").unwrap()
    }

    fn get_r(mid: u16, token: u8) -> std::vec::Vec<u8> {
        let mut buf = [0u8; 64];
        let mut w =
            MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, mid, &[token])
                .unwrap();
        w.option(option::URI_HOST, b"edge-7").unwrap();
        w.uri_path("r").unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    }

    fn answer(mid: u16, token: u8) -> std::vec::Vec<u8> {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::Acknowledgement,
            Code::CONTENT,
            mid,
            &[token],
        )
        .unwrap();
        w.payload(b"results").unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    }

    /// An unprotected answer to the edge's request `(mid, token)`.
    fn plain_answer(mid: u16, token: u8, code: Code, payload: &[u8]) -> std::vec::Vec<u8> {
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(&mut buf, MessageType::Acknowledgement, code, mid, &[token])
            .unwrap();
        w.payload(payload).unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn replay_detected_moves_the_numbers_on_once_per_request() {
        let mut edge = edge();
        let start = edge.context().sender_sequence();
        let mut buf = [0u8; 1152];
        let send = |edge: &mut EdgeOscore<1152>, buf: &mut [u8; 1152], mid: u16, token: u8| {
            let mut w = MessageWriter::new(
                &mut buf[..],
                MessageType::Confirmable,
                Code::POST,
                mid,
                &[token],
            )
            .unwrap();
            w.uri_path("u").unwrap();
            w.payload(b"batch").unwrap();
            let n = w.finish();
            edge.seal(buf, n).expect("protected")
        };
        send(&mut edge, &mut buf, 1, 0xb1);
        assert_eq!(edge.context().sender_sequence(), start + 1);

        // Another 4.01 (not "Replay detected") and a "Replay detected" for a token never sent
        // change nothing.
        for a in [
            plain_answer(1, 0xb1, Code::UNAUTHORIZED, b"no"),
            plain_answer(9, 0xee, Code::UNAUTHORIZED, qos_oscore::REPLAY_DETECTED),
        ] {
            buf[..a.len()].copy_from_slice(&a);
            assert_eq!(edge.open(&mut buf, a.len()), Some(a.len()), "passed on");
        }
        assert_eq!(edge.context().sender_sequence(), start + 1);
        assert_eq!(edge.stats().resynced, 0);

        send(&mut edge, &mut buf, 2, 0xb2);
        let a = plain_answer(2, 0xb2, Code::UNAUTHORIZED, qos_oscore::REPLAY_DETECTED);
        buf[..a.len()].copy_from_slice(&a);
        assert_eq!(
            edge.open(&mut buf, a.len()),
            Some(a.len()),
            "the uplink sees the 4.01"
        );
        let moved = start + 2 + qos_oscore::RESYNC_STEP;
        assert_eq!(edge.context().sender_sequence(), moved);
        assert_eq!(edge.stats().resynced, 1);
        // The same answer again (a duplicate, or a forgery replayed) moves nothing more.
        buf[..a.len()].copy_from_slice(&a);
        edge.open(&mut buf, a.len());
        assert_eq!(edge.context().sender_sequence(), moved);
        assert_eq!(edge.stats().resynced, 1);
    }

    #[test]
    fn replay_detected_never_moves_past_the_boot_limit() {
        let ctx = Context::derive(&SECRET, b"salt", None, b"\x0e", b"\x5e").unwrap();
        // 2^12 numbers per boot: one step goes to the limit, then nothing is protected.
        let mut edge: EdgeOscore<1152> = EdgeOscore::new(ctx, 1, 12);
        let mut buf = [0u8; 1152];
        let mut w = MessageWriter::new(
            &mut buf[..],
            MessageType::Confirmable,
            Code::POST,
            1,
            &[0xc1],
        )
        .unwrap();
        w.uri_path("u").unwrap();
        let n = w.finish();
        edge.seal(&mut buf, n).expect("protected");
        let a = plain_answer(1, 0xc1, Code::UNAUTHORIZED, qos_oscore::REPLAY_DETECTED);
        buf[..a.len()].copy_from_slice(&a);
        edge.open(&mut buf, a.len());
        assert_eq!(
            edge.context().sender_sequence(),
            2 << 12,
            "the boot's limit"
        );
        let mut w = MessageWriter::new(
            &mut buf[..],
            MessageType::Confirmable,
            Code::POST,
            2,
            &[0xc2],
        )
        .unwrap();
        w.uri_path("u").unwrap();
        let n = w.finish();
        assert_eq!(
            edge.seal(&mut buf, n),
            None,
            "numbers exhausted: nothing sent"
        );
        assert_eq!(edge.stats().unsendable, 1);
    }

    #[test]
    fn orders_of_serve_are_opened_answered_protected_and_replays_refused() {
        let (mut edge, mut serve) = (edge(), serve());
        let plain = get_r(1, 0xa1);
        let mut wire = [0u8; 256];
        let (n, info) = serve.protect_request(&plain, &mut wire).unwrap();
        let protected = wire[..n].to_vec();
        assert!(Message::parse(&protected)
            .unwrap()
            .uri_path()
            .next()
            .is_none());

        let mut buf = [0u8; 1152];
        buf[..n].copy_from_slice(&protected);
        let k = edge.open(&mut buf, n).expect("a protected order opens");
        assert_eq!(&buf[..k], &plain[..], "the order as serve wrote it");
        assert_eq!(edge.stats().orders_opened, 1);

        // Its answer leaves protected; serve verifies it.
        let a = answer(1, 0xa1);
        buf[..a.len()].copy_from_slice(&a);
        let k = edge.seal(&mut buf, a.len()).unwrap();
        let sealed = buf[..k].to_vec();
        assert!(Message::parse(&sealed)
            .unwrap()
            .option(option::OSCORE)
            .is_some());
        let mut out = [0u8; 256];
        let m = serve.unprotect_response(&sealed, &info, &mut out).unwrap();
        assert_eq!(&out[..m], &a[..]);

        // The same datagram again is a retransmission: handed on as it is (the endpoint
        // answers from its cache); the same ciphertext under another message id is a replay.
        buf[..n].copy_from_slice(&protected);
        assert_eq!(edge.open(&mut buf, n), Some(n));
        let mut other = protected.clone();
        other[3] ^= 0x40;
        buf[..n].copy_from_slice(&other);
        assert_eq!(edge.open(&mut buf, n), None);
        assert_eq!(edge.stats().orders_replayed, 1);

        // A forged order (a flipped ciphertext byte under a fresh number) is refused.
        let (n2, _) = serve.protect_request(&get_r(2, 0xa2), &mut wire).unwrap();
        wire[n2 - 1] ^= 1;
        buf[..n2].copy_from_slice(&wire[..n2]);
        assert_eq!(edge.open(&mut buf, n2), None);
        assert_eq!(edge.stats().orders_forged, 1);
        // The number was not burnt by the forgery: the genuine order still opens.
        serve.set_sender_sequence(serve.sender_sequence() - 1);
        let (n3, _) = serve.protect_request(&get_r(2, 0xa2), &mut wire).unwrap();
        buf[..n3].copy_from_slice(&wire[..n3]);
        assert!(edge.open(&mut buf, n3).is_some());

        // A plaintext order is refused; the resource list is not an order.
        let p = get_r(3, 0xa3);
        buf[..p.len()].copy_from_slice(&p);
        assert_eq!(edge.open(&mut buf, p.len()), None);
        assert_eq!(edge.stats().orders_unprotected, 1);
        let mut wk = [0u8; 64];
        let mut w =
            MessageWriter::new(&mut wk, MessageType::Confirmable, Code::GET, 4, &[1]).unwrap();
        w.uri_path(".well-known/core").unwrap();
        let l = w.finish();
        buf[..l].copy_from_slice(&wk[..l]);
        assert_eq!(edge.open(&mut buf, l), Some(l));
    }
}
