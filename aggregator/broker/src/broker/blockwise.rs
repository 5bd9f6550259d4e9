//! Block-wise transfer (RFC 7959) on the broker's edge-facing side.
//!
//! - **Block1 requests** (any resource, in practice `POST /u` batches and `POST /c` reports
//!   larger than 1 KiB): the blocks are reassembled by a [`qos_coap::block::Reassembler`]
//!   (at most [`BrokerConfig::max_body_bytes`] per body, [`BrokerConfig::block_transfers_per_peer`]
//!   transfers per edge address, 16 in all, dropped after [`BrokerConfig::block_timeout_ms`]
//!   without a block). Each block but the last is answered 2.31 Continue; the last one gets
//!   the resource's answer with the Block1 option echoed. A body over the limit is answered
//!   4.13 with Size1, a missing block 4.08, a bad block 4.00, too many transfers 5.03; the
//!   refusals are counted in [`BrokerStats::rejected_too_large`],
//!   [`BrokerStats::rejected_incomplete`] and [`BrokerStats::rejected_malformed`].
//! - **Block2 responses**: an answer larger than 1 KiB, or to a request with a Block2
//!   option, goes in 1 KiB slices (or the smaller size asked for), block 0 with Size2.
//! - **Large batches upstream**: a batch larger than [`UPSTREAM_BATCH_BYTES`] is queued as
//!   several smaller batches of consecutive records (the same records and sequence numbers,
//!   each with the edge's `dropped` count), so the upstream link carries single-datagram
//!   batches whatever the transport. The super-manager stores records by (edge, seq), so the
//!   split changes nothing it stores; the edge still gets one cumulative ack.
//!
//! [`BrokerConfig::max_body_bytes`]: super::BrokerConfig::max_body_bytes
//! [`BrokerConfig::block_transfers_per_peer`]: super::BrokerConfig::block_transfers_per_peer
//! [`BrokerConfig::block_timeout_ms`]: super::BrokerConfig::block_timeout_ms
//! [`BrokerStats::rejected_too_large`]: super::BrokerStats::rejected_too_large
//! [`BrokerStats::rejected_incomplete`]: super::BrokerStats::rejected_incomplete
//! [`BrokerStats::rejected_malformed`]: super::BrokerStats::rejected_malformed

use qos_coap::block::{self, Block1Answer, Block1Request, Refusal};
use qos_coap::option::Block;
use qos_coap::Request;
use qos_wire::codec::encode_into;
use qos_wire::ids::Seq;
use qos_wire::uplink::{encode_batch_head, Batch};

use super::Broker;

/// Largest body reassembled from Block1 blocks, whatever the configuration, bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// Block1 transfers in progress at most, all edges together.
pub const BLOCK_SLOTS: usize = 16;
/// Largest batch sent upstream as is; larger ones are split (see the module documentation).
pub const UPSTREAM_BATCH_BYTES: usize = 1024;

/// The reassembler of the broker.
pub(super) type Blocks<A> = block::Reassembler<A, BLOCK_SLOTS, MAX_BODY>;

/// The body of a request, after Block1 handling.
pub(super) enum Body {
    /// No Block1 option: the request's own payload.
    Whole,
    /// The last block completed the body; echo `Block` in the answer.
    Reassembled(Vec<u8>, Block),
    /// A 2.31 or a refusal was sent; nothing more to do.
    Answered,
}

/// Splits `batch` into batches of consecutive records of at most `max` bytes each:
/// `(first, last, payload)`. `Err` when one record alone does not fit.
pub(super) fn split_batch(batch: &Batch<'_>, max: usize) -> Result<Vec<(Seq, Seq, Vec<u8>)>, ()> {
    // Room for the head: array(5), version, edge id, first seq, dropped, array(count).
    const HEAD: usize = 1 + 1 + 5 + 9 + 9 + 3;
    let mut out = Vec::new();
    let mut records = batch.records().peekable();
    while let Some(first) = records.next() {
        if HEAD + first.raw.len() > max {
            return Err(());
        }
        let mut chunk = vec![first];
        let mut len = HEAD + first.raw.len();
        while let Some(r) = records.next_if(|r| len + r.raw.len() <= max) {
            len += r.raw.len();
            chunk.push(r);
        }
        let mut head = [0u8; HEAD];
        let n = encode_into(&mut head, |e| {
            encode_batch_head(e, batch.edge, first.seq, batch.dropped, chunk.len() as u16)
        })
        .map_err(|_| ())?;
        let mut payload = head[..n].to_vec();
        for r in &chunk {
            payload.extend_from_slice(r.raw);
        }
        let last = chunk.last().map_or(first.seq, |r| r.seq);
        out.push((first.seq, last, payload));
    }
    Ok(out)
}

impl<A: Copy + Eq> Broker<A> {
    /// Block1 handling of an edge's request (the shared [`block::Reassembler::request`]):
    /// answers the blocks that do not complete a body.
    pub(super) fn block1_body(&mut self, now: u64, req: &Request<'_, A>) -> Body {
        let answer = match self.blocks.request(now, req.from, &req.message) {
            Block1Request::Complete { block, body } => {
                return Body::Reassembled(body.to_vec(), block);
            }
            Block1Request::Answer(a) => a,
            _ => return Body::Whole,
        };
        match answer {
            Block1Answer::Continue(_) => {}
            Block1Answer::Refused(Refusal::TooLarge { .. }) => self.stats.rejected_too_large += 1,
            Block1Answer::Refused(Refusal::Incomplete) => self.stats.rejected_incomplete += 1,
            Block1Answer::Refused(Refusal::Busy) => self.stats.relay_overload += 1,
            _ => self.stats.rejected_malformed += 1,
        }
        let _ = self
            .down
            .respond(now, &req.handle, answer.code(), |w| answer.write(w));
        Body::Answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_wire::ids::EdgeId;

    #[test]
    fn a_split_batch_keeps_every_record_and_its_sequence_number() {
        let summaries: Vec<_> = (0..60)
            .map(|i| qos_wire::samples::http_summary::<128>(i, 60, i as u32 % 3))
            .collect();
        let first = Seq::first_of_epoch(3);
        let whole = qos_wire::samples::batch(EdgeId(5), first, 7, &summaries).unwrap();
        assert!(whole.len() > 2 * UPSTREAM_BATCH_BYTES, "{}", whole.len());
        let batch = Batch::decode(&whole).unwrap();
        let parts = split_batch(&batch, UPSTREAM_BATCH_BYTES).unwrap();
        assert!(parts.len() >= 3);
        let mut records = Vec::new();
        let mut next = first;
        for (lo, hi, payload) in &parts {
            assert!(payload.len() <= UPSTREAM_BATCH_BYTES);
            let b = Batch::decode(payload).unwrap();
            assert_eq!(
                (b.edge, b.first_seq, b.last_seq(), b.dropped),
                (EdgeId(5), *lo, *hi, 7)
            );
            assert_eq!(*lo, next, "consecutive");
            next = Seq(hi.0 + 1);
            records.extend(b.records().map(|r| (r.seq, r.raw.to_vec())));
        }
        let expected: Vec<_> = batch.records().map(|r| (r.seq, r.raw.to_vec())).collect();
        assert_eq!(records, expected);
        assert_eq!(
            split_batch(&batch, 40),
            Err(()),
            "a record larger than the limit"
        );
    }
}
