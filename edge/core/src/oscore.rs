//! OSCORE (RFC 8613) on the edge's uplink: the requests the edge sends to the super-manager
//! (batches `POST /u`, configuration `GET /c` and reports `POST /c`) are protected end to end;
//! brokers relay them unread. Registration with the broker (`/rd`) stays plaintext: it is
//! addressed to the broker itself. Requests the edge serves (`/p`, `/r`) are not protected.
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

/// Protected requests remembered to open their answers (and to send a retransmission as
/// the same bytes): one per exchange of the edge's endpoint.
const SENT: usize = 4;
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
}

/// The edge's OSCORE state: its context, the protected requests in flight and a scratch copy
/// of one message (`M` bytes).
pub struct EdgeOscore<const M: usize> {
    ctx: Context,
    /// The end of this boot's sequence numbers (exclusive).
    limit: u64,
    sent: Vec<(u16, Vec<u8, 8>, RequestInfo), SENT>,
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
    pub fn seal(&mut self, buf: &mut [u8], n: usize) -> Option<usize> {
        let Some(plain) = buf.get(..n) else {
            return Some(n);
        };
        let Ok(m) = Message::parse(plain) else {
            return Some(n);
        };
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
    pub fn open(&mut self, buf: &mut [u8], n: usize) -> Option<usize> {
        let protected = buf.get(..n)?;
        let Ok(m) = Message::parse(protected) else {
            return Some(n);
        };
        if m.code().is_request() || m.code() == Code::EMPTY {
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
}
