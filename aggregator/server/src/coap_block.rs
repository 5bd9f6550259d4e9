//! Block1 reassembly (RFC 7959) on serve's own CoAP port, for edges that send large batches
//! straight to the super-manager. The rules are the broker's (the shared
//! [`qos_coap::block::Reassembler::request`]; `docs/wire.md`, "Block-wise transfer"): every
//! block but the last is answered 2.31 Continue; the last one hands the whole body on as the
//! request's payload, and its answer (for `POST /u`: 2.04 with the cumulative ack) echoes the
//! Block1 option. A body over [`MAX_BODY`] gets 4.13 with Size1 (counted as `oversized`), a
//! missing block 4.08 and a bad block 4.00 / 4.02 (`malformed`), more than
//! [`TRANSFERS_PER_PEER`] transfers of one address or [`BLOCK_SLOTS`] in all 5.03
//! (`rate_limited`). A transfer without a block for [`TIMEOUT_MS`] is forgotten.
//!
//! A CoAP retransmission of a block (same message ID) never reaches this module: the
//! endpoint's deduplication answers it from its cache.

use qos_coap::block::{Block1Answer, Block1Request, Reassembler, Refusal};
use qos_coap::option::{self, Block};
use qos_coap::{Message, MessageWriter, Request};

use super::ServerEndpoint;
use crate::stats::{IngestStats, RejectReason};

/// Largest body reassembled, bytes (the broker's limit).
pub const MAX_BODY: usize = qos_broker::broker::blockwise::MAX_BODY;
/// Transfers in progress at most, all peers together.
pub const BLOCK_SLOTS: usize = 16;
/// Transfers in progress at most per peer address.
pub const TRANSFERS_PER_PEER: usize = 2;
/// A transfer without a block for this long is dropped, ms.
pub const TIMEOUT_MS: u64 = 60_000;

/// The reassembly state of the server (boxed: its buffers are [`BLOCK_SLOTS`] ×
/// [`MAX_BODY`]).
pub(super) struct Blocks<A> {
    r: Box<Reassembler<A, BLOCK_SLOTS, MAX_BODY>>,
}

impl<A: Copy + Eq> Blocks<A> {
    pub(super) fn new() -> Self {
        Blocks {
            r: Box::new(Reassembler::new(MAX_BODY, TRANSFERS_PER_PEER, TIMEOUT_MS)),
        }
    }

    /// Block1 handling of `req`: `Some((request, echo))` to process, where `request` is
    /// `req` itself (no Block1 option; `echo` is `None`) or, once the last block arrived, the
    /// request rebuilt in `whole` with the reassembled body as its payload and without
    /// Block1 / Size1 (`echo`: the Block1 to put in the answer). `None` when the block was
    /// answered here (2.31 or a refusal, counted in `stats`).
    pub(super) fn request<'a>(
        &mut self,
        now: u64,
        req: Request<'a, A>,
        whole: &'a mut Vec<u8>,
        endpoint: &mut ServerEndpoint<A>,
        stats: &IngestStats,
    ) -> Option<(Request<'a, A>, Option<Block>)> {
        let answer = match self.r.request(now, req.from, &req.message) {
            Block1Request::Complete { block, body } => {
                *whole = rebuild(&req.message, body)?;
                let whole: &'a [u8] = whole;
                let message = Message::parse(whole).ok()?;
                return Some((Request { message, ..req }, Some(block)));
            }
            Block1Request::Answer(a) => a,
            _ => return Some((req, None)),
        };
        match answer {
            Block1Answer::Continue(_) => {}
            Block1Answer::Refused(Refusal::TooLarge { .. }) => {
                stats.reject(RejectReason::Oversized)
            }
            Block1Answer::Refused(Refusal::Busy) => stats.reject(RejectReason::RateLimited),
            _ => stats.reject(RejectReason::Malformed),
        }
        let _ = endpoint.respond(now, &req.handle, answer.code(), |w| answer.write(w));
        None
    }
}

/// `m` with `body` as its payload, without its Block1 and Size1 options.
fn rebuild(m: &Message<'_>, body: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64 + m.options().map(|(_, v)| v.len() + 5).sum::<usize>() + body.len()];
    let mut w = MessageWriter::new(&mut buf, m.ty(), m.code(), m.message_id(), m.token()).ok()?;
    for (number, value) in m.options() {
        if number != option::BLOCK1 && number != option::SIZE1 {
            w.option(number, value).ok()?;
        }
    }
    w.payload(body).ok()?;
    let n = w.finish();
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use qos_coap::block::Block1Sender;
    use qos_coap::{Code, Config, Incoming, MessageType};

    use super::*;

    fn block_request(mid: u16, block: Block, size1: usize, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 1200];
        let mut w =
            MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, mid, b"tk").unwrap();
        w.uri_path("u").unwrap();
        w.uint_option(option::CONTENT_FORMAT, 60).unwrap();
        w.block_option(option::BLOCK1, block).unwrap();
        if block.num() == 0 {
            w.uint_option(option::SIZE1, size1 as u32).unwrap();
        }
        w.payload(payload).unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    #[test]
    fn blocks_are_continued_then_handed_on_whole_without_block_options() {
        let body: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let mut ep = ServerEndpoint::<u8>::new(Config::default(), 1).unwrap();
        let mut blocks = Blocks::new();
        let stats = IngestStats::new();
        let mut sender = Block1Sender::new(body.len(), 6);
        let mut got = None;
        let mut mid = 10;
        while let Some((b, part)) = sender.next_block(&body) {
            mid += 1;
            let dgram = block_request(mid, b, body.len(), part);
            let Some(Incoming::Request(req)) = ep.handle_datagram(0, 7, &dgram) else {
                panic!("a request");
            };
            let mut whole = Vec::new();
            match blocks.request(0, req, &mut whole, &mut ep, &stats) {
                None => {
                    let mut out = [0u8; 256];
                    let (_, n) = ep.poll_transmit(0, &mut out).unwrap();
                    let m = Message::parse(&out[..n]).unwrap();
                    assert_eq!(m.code(), Code::CONTINUE);
                    let echo = qos_coap::block::block1_of(&m).unwrap();
                    assert_eq!(
                        sender.on_response(m.code(), echo),
                        qos_coap::block::SendStep::Next
                    );
                }
                Some((req, echo)) => {
                    assert_eq!(echo.map(|e| (e.num(), e.more())), Some((2, false)));
                    assert!(req.message.path_is("u"));
                    assert_eq!(req.message.content_format(), Some(60));
                    assert_eq!(req.message.option(option::BLOCK1), None);
                    assert_eq!(req.message.option(option::SIZE1), None);
                    assert_eq!(req.message.message_id(), mid);
                    got = Some(req.message.payload().to_vec());
                    break;
                }
            }
        }
        assert_eq!(got, Some(body));
        // A block for no transfer: 4.08, counted as malformed.
        let late = block_request(99, Block::new(1, true, 6).unwrap(), 0, &[0; 1024]);
        let Some(Incoming::Request(req)) = ep.handle_datagram(0, 7, &late) else {
            panic!("a request");
        };
        let mut whole = Vec::new();
        assert!(blocks
            .request(0, req, &mut whole, &mut ep, &stats)
            .is_none());
        let mut out = [0u8; 256];
        let (_, n) = ep.poll_transmit(0, &mut out).unwrap();
        assert_eq!(
            Message::parse(&out[..n]).unwrap().code(),
            Code::REQUEST_ENTITY_INCOMPLETE
        );
        assert_eq!(stats.snapshot().rejected(RejectReason::Malformed), 1);
    }
}
