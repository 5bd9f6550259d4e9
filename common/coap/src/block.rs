//! Block-wise transfer (RFC 7959), sans-IO and without allocation: the state a server needs to
//! reassemble a request body sent in Block1 blocks, the stateless slicing of a large response
//! into Block2 blocks, and the two client-side helpers (sending a body in Block1 blocks,
//! fetching a representation in Block2 blocks).
//!
//! None of these touch messages themselves: the application reads the Block option of a
//! received message ([`block1_of`], [`block2_of`]), asks the helper what to do, and writes the
//! options and payload of its answer or next request with [`MessageWriter::block_option`]
//! (and [`option::SIZE1`] / [`option::SIZE2`]).
//!
//! # Server-side reassembly ([`Reassembler`])
//! A transfer is keyed by the peer and a caller-chosen `key` (the request's URI, hashed; RFC
//! 7959 §2.3 matches blocks by endpoint and request options). Its body is written into the
//! reassembler's own fixed buffers (`SLOTS` of `MAX` bytes, owned by the caller that created
//! the reassembler; nothing is allocated). Rules:
//! - block 0 starts (or restarts) a transfer; its size (szx) is the transfer's block size,
//!   which later blocks may reduce (RFC 7959 §2.5) but not increase (4.00);
//! - blocks may arrive in any order while `M` is set; a block already received (a client's
//!   retransmission with a new message ID) is accepted again and changes nothing;
//! - every block but the last carries exactly one block size of payload (else 4.00);
//! - the block with `M` clear completes the transfer when every earlier block is there; if
//!   one is missing (a gap), or a block other than 0 arrives for no transfer (it timed out or
//!   never started), the answer is 4.08 Request Entity Incomplete and the transfer is dropped;
//! - a body larger than the limit (the Size1 the client announced, or the blocks themselves)
//!   is answered 4.13 Request Entity Too Large with Size1 = the limit;
//! - at most `per_peer` transfers per peer and `SLOTS` in all: more get 5.03;
//! - a transfer without a block for `timeout_ms` is dropped ([`Reassembler::expire`]).
//!
//! # Not implemented
//! The Request-Tag option (RFC 9175), BERT (szx 7, RFC 8323), and caching of Block2 bodies
//! between requests: [`slice()`] expects the application to regenerate the representation.

use crate::msg::{Code, Message, MessageWriter};
use crate::option::{self, Block};
use crate::WriteError;

/// Block 0 of 16 bytes, no more.
const BLOCK_0: Block = match Block::new(0, false, 0) {
    Some(b) => b,
    None => panic!("block 0 is valid"),
};

/// Largest block size this module sends (szx 6: 1024 bytes, the largest for datagrams).
pub const MAX_BLOCK: usize = 1024;

/// The Block1 option of a message, if present and valid. `Err(())` when present but invalid
/// (answer 4.02 Bad Option).
#[allow(clippy::result_unit_err)]
pub fn block1_of(m: &Message<'_>) -> Result<Option<Block>, ()> {
    block_of(m, option::BLOCK1)
}

/// The Block2 option of a message, if present and valid. `Err(())` when present but invalid.
#[allow(clippy::result_unit_err)]
pub fn block2_of(m: &Message<'_>) -> Result<Option<Block>, ()> {
    block_of(m, option::BLOCK2)
}

fn block_of(m: &Message<'_>, number: u16) -> Result<Option<Block>, ()> {
    match m.option(number) {
        None => Ok(None),
        Some(v) => Block::decode(v).map(Some).ok_or(()),
    }
}

/// Why a block-wise request is refused; [`Refusal::code`] is the response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Refusal {
    /// The body would exceed `limit` bytes: 4.13 with Size1 = `limit`.
    TooLarge {
        /// The largest body accepted, bytes.
        limit: usize,
    },
    /// A block is missing, or a continuation arrived for no transfer: 4.08.
    Incomplete,
    /// A block other than the last without a full block of payload, or a block size that
    /// grew mid-transfer: 4.00.
    BadBlock,
    /// Too many transfers in progress (for this peer or in all): 5.03.
    Busy,
}

impl Refusal {
    /// The response code for this refusal.
    pub const fn code(self) -> Code {
        match self {
            Refusal::TooLarge { .. } => Code::REQUEST_ENTITY_TOO_LARGE,
            Refusal::Incomplete => Code::REQUEST_ENTITY_INCOMPLETE,
            Refusal::BadBlock => Code::BAD_REQUEST,
            Refusal::Busy => Code::SERVICE_UNAVAILABLE,
        }
    }

    /// Writes the options that go with the refusal (Size1 for 4.13), in option order.
    pub fn write_options(self, w: &mut MessageWriter<'_>) -> Result<(), WriteError> {
        if let Refusal::TooLarge { limit } = self {
            w.uint_option(option::SIZE1, u32::try_from(limit).unwrap_or(u32::MAX))?;
        }
        Ok(())
    }
}

/// What to answer to a Block1 block.
#[derive(Debug, PartialEq, Eq)]
pub enum Block1Step<'b> {
    /// Stored; more blocks are expected: answer 2.31 Continue with Block1 = the block.
    Continue(Block),
    /// The body is complete: process it and answer the final response with Block1 = the
    /// block (`M` clear). The transfer is finished; the slot is free again.
    Complete {
        /// The last block, to echo in the final response.
        block: Block,
        /// The whole body.
        body: &'b [u8],
    },
    /// Refused: answer [`Refusal::code`]; the transfer (if any) is dropped.
    Refused(Refusal),
}

/// Bits of the received-block map: at most this many blocks per body.
pub const MAX_BLOCKS: usize = 256;

#[derive(Debug, Clone)]
struct Transfer<A, const MAX: usize> {
    peer: A,
    key: u64,
    szx: u8,
    received: [u64; MAX_BLOCKS / 64],
    /// Complete and lent out: freed at the next call.
    done: bool,
    touched: u64,
    buf: [u8; MAX],
}

impl<A, const MAX: usize> Transfer<A, MAX> {
    fn has(&self, num: u32) -> bool {
        let n = num as usize;
        self.received
            .get(n / 64)
            .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
    }

    fn mark(&mut self, num: u32) {
        let n = num as usize;
        if let Some(w) = self.received.get_mut(n / 64) {
            *w |= 1u64 << (n % 64);
        }
    }

    /// Re-expresses the received-block map in the smaller size `szx`.
    fn rescale(&mut self, szx: u8) {
        let f = 1u32 << (self.szx - szx);
        let old = self.received;
        self.received = [0; MAX_BLOCKS / 64];
        for k in 0..MAX_BLOCKS as u32 {
            let n = k as usize;
            if old[n / 64] & (1u64 << (n % 64)) != 0 {
                for j in k * f..(k + 1) * f {
                    self.mark(j);
                }
            }
        }
        self.szx = szx;
    }

    fn complete_up_to(&self, last: u32) -> bool {
        (0..=last).all(|n| self.has(n))
    }
}

/// Counters of a [`Reassembler`] (wrapping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlockStats {
    /// Bodies reassembled completely.
    pub completed: u32,
    /// Blocks received again (already stored).
    pub duplicate_blocks: u32,
    /// Refusals 4.13.
    pub too_large: u32,
    /// Refusals 4.08.
    pub incomplete: u32,
    /// Refusals 4.00.
    pub bad_block: u32,
    /// Refusals 5.03.
    pub busy: u32,
    /// Transfers dropped after `timeout_ms` without a block.
    pub timed_out: u32,
}

/// Server-side Block1 reassembly: up to `SLOTS` concurrent transfers of at most `MAX` bytes
/// each (see the [module documentation](self)). `A` is the peer address.
#[derive(Debug)]
pub struct Reassembler<A, const SLOTS: usize, const MAX: usize> {
    slots: heapless::Vec<Transfer<A, MAX>, SLOTS>,
    limit: usize,
    per_peer: usize,
    timeout_ms: u64,
    stats: BlockStats,
}

impl<A: Copy + Eq, const SLOTS: usize, const MAX: usize> Reassembler<A, SLOTS, MAX> {
    /// A reassembler accepting bodies up to `limit` bytes (at most `MAX`), `per_peer`
    /// transfers per peer, dropping transfers idle for `timeout_ms`.
    pub fn new(limit: usize, per_peer: usize, timeout_ms: u64) -> Self {
        Reassembler {
            slots: heapless::Vec::new(),
            limit: limit.min(MAX),
            per_peer: per_peer.max(1),
            timeout_ms,
            stats: BlockStats::default(),
        }
    }

    /// The largest body accepted, bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The counters.
    pub fn stats(&self) -> BlockStats {
        self.stats
    }

    /// Transfers in progress.
    pub fn in_progress(&self) -> usize {
        self.slots.iter().filter(|t| !t.done).count()
    }

    /// Drops the transfers idle for `timeout_ms` at `now`; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.slots.len();
        let timeout = self.timeout_ms;
        self.slots
            .retain(|t| t.done || now < t.touched.saturating_add(timeout));
        let n = before - self.slots.len();
        self.stats.timed_out = self.stats.timed_out.wrapping_add(n as u32);
        n
    }

    /// When the oldest transfer times out, for the driver's timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|t| !t.done)
            .map(|t| t.touched.saturating_add(self.timeout_ms))
            .min()
    }

    fn refuse(&mut self, r: Refusal) -> Block1Step<'_> {
        let s = &mut self.stats;
        match r {
            Refusal::TooLarge { .. } => s.too_large = s.too_large.wrapping_add(1),
            Refusal::Incomplete => s.incomplete = s.incomplete.wrapping_add(1),
            Refusal::BadBlock => s.bad_block = s.bad_block.wrapping_add(1),
            Refusal::Busy => s.busy = s.busy.wrapping_add(1),
        }
        Block1Step::Refused(r)
    }

    fn drop_transfer(&mut self, peer: A, key: u64) {
        if let Some(i) = self.find(peer, key) {
            self.slots.swap_remove(i);
        }
    }

    fn find(&self, peer: A, key: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|t| !t.done && t.peer == peer && t.key == key)
    }

    /// One Block1 block of the request `key` from `peer` at `now`, with the request's Size1
    /// (if any) and payload. Expired transfers are dropped first.
    pub fn block(
        &mut self,
        now: u64,
        peer: A,
        key: u64,
        block: Block,
        size1: Option<u32>,
        payload: &[u8],
    ) -> Block1Step<'_> {
        self.slots.retain(|t| !t.done);
        self.expire(now);
        let limit = self.limit;
        if size1.is_some_and(|s| s as usize > limit) {
            self.drop_transfer(peer, key);
            return self.refuse(Refusal::TooLarge { limit });
        }
        let end = block.offset().saturating_add(payload.len());
        if end > limit || block.num() as usize >= MAX_BLOCKS {
            self.drop_transfer(peer, key);
            return self.refuse(Refusal::TooLarge { limit });
        }
        if (block.more() && payload.len() != block.size()) || payload.len() > block.size() {
            self.drop_transfer(peer, key);
            return self.refuse(Refusal::BadBlock);
        }
        let i = match self.find(peer, key) {
            Some(i) if block.num() == 0 && self.slots[i].szx != block.szx() => {
                // A restart with another block size (after the server asked for smaller ones).
                self.slots.swap_remove(i);
                None
            }
            found => found,
        };
        let i = match i {
            Some(i) => i,
            None if block.num() == 0 => {
                let mine = self.slots.iter().filter(|t| t.peer == peer).count();
                if mine >= self.per_peer || self.slots.is_full() {
                    return self.refuse(Refusal::Busy);
                }
                let t = Transfer {
                    peer,
                    key,
                    szx: block.szx(),
                    received: [0; MAX_BLOCKS / 64],
                    done: false,
                    touched: now,
                    buf: [0; MAX],
                };
                if self.slots.push(t).is_err() {
                    return self.refuse(Refusal::Busy);
                }
                self.slots.len() - 1
            }
            None => return self.refuse(Refusal::Incomplete),
        };
        let t = &mut self.slots[i];
        if block.szx() < t.szx {
            // The server asked for smaller blocks (RFC 7959 §2.5): count in the new size.
            t.rescale(block.szx());
        } else if block.szx() > t.szx {
            self.slots.swap_remove(i);
            return self.refuse(Refusal::BadBlock);
        }
        t.touched = now;
        if t.has(block.num()) {
            self.stats.duplicate_blocks = self.stats.duplicate_blocks.wrapping_add(1);
        } else {
            if let Some(dst) = t.buf.get_mut(block.offset()..end) {
                dst.copy_from_slice(payload);
            }
            t.mark(block.num());
        }
        if block.more() {
            return Block1Step::Continue(block);
        }
        if !t.complete_up_to(block.num()) {
            self.slots.swap_remove(i);
            return self.refuse(Refusal::Incomplete);
        }
        // Complete: the slot is lent out until the next call, which frees it.
        t.done = true;
        self.stats.completed = self.stats.completed.wrapping_add(1);
        let body = self.slots[i].buf.get(..end).unwrap_or(&[]);
        Block1Step::Complete { block, body }
    }
}

/// The key of a Block1 transfer for [`Reassembler::block`]: FNV-1a over the request's method,
/// Uri-Path and Uri-Query options (RFC 7959 §2.3 matches the blocks of one body by endpoint
/// and request options; the endpoint is the reassembler's peer).
pub fn request_key(m: &Message<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&[m.code().raw()]);
    m.uri_path().for_each(&mut eat);
    m.uri_queries().for_each(&mut eat);
    h
}

/// What a server does with a request that may carry a Block1 option
/// ([`Reassembler::request`]).
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Block1Request<'b> {
    /// No Block1 option: the request's own payload is the body.
    Whole,
    /// The last block completed the body: process `body` as the request's payload and echo
    /// `block` (Block1) in the final response.
    Complete {
        /// The last block, to echo.
        block: Block,
        /// The whole body.
        body: &'b [u8],
    },
    /// Answer the request with this (a 2.31 Continue or a refusal) and do nothing else.
    Answer(Block1Answer),
}

/// The answer to a Block1 block that does not complete a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Block1Answer {
    /// Stored, more expected: 2.31 Continue echoing the block.
    Continue(Block),
    /// Refused ([`Refusal::code`]).
    Refused(Refusal),
    /// The Block1 option does not decode: 4.02 Bad Option.
    BadOption,
}

impl Block1Answer {
    /// The response code.
    pub const fn code(self) -> Code {
        match self {
            Block1Answer::Continue(_) => Code::CONTINUE,
            Block1Answer::Refused(r) => r.code(),
            Block1Answer::BadOption => Code::BAD_OPTION,
        }
    }

    /// Writes the options of the answer (Block1 for 2.31, Size1 for 4.13), in option order.
    pub fn write_options(self, w: &mut MessageWriter<'_>) -> Result<(), WriteError> {
        match self {
            Block1Answer::Continue(b) => w.block_option(option::BLOCK1, b),
            Block1Answer::Refused(r) => r.write_options(w),
            Block1Answer::BadOption => Ok(()),
        }
    }

    /// The diagnostic payload (empty for 2.31).
    pub const fn diagnostic(self) -> &'static [u8] {
        match self {
            Block1Answer::Continue(_) => b"",
            Block1Answer::Refused(Refusal::TooLarge { .. }) => b"body too large",
            Block1Answer::Refused(Refusal::Incomplete) => b"block missing",
            Block1Answer::Refused(Refusal::Busy) => b"too many block-wise transfers",
            Block1Answer::Refused(_) => b"bad block",
            Block1Answer::BadOption => b"bad Block1",
        }
    }

    /// Writes the whole answer: options and diagnostic payload.
    pub fn write(self, w: &mut MessageWriter<'_>) -> Result<(), WriteError> {
        self.write_options(w)?;
        w.payload(self.diagnostic())
    }
}

impl<A: Copy + Eq, const SLOTS: usize, const MAX: usize> Reassembler<A, SLOTS, MAX> {
    /// Block1 handling of a whole request from `peer` at `now`: its Block1 option (if any),
    /// Size1 and payload, keyed by [`request_key`]. What servers share; they count and answer.
    pub fn request(&mut self, now: u64, peer: A, m: &Message<'_>) -> Block1Request<'_> {
        let b = match block1_of(m) {
            Ok(None) => return Block1Request::Whole,
            Ok(Some(b)) => b,
            Err(()) => return Block1Request::Answer(Block1Answer::BadOption),
        };
        let size1 = m.uint_option(option::SIZE1);
        match self.block(now, peer, request_key(m), b, size1, m.payload()) {
            Block1Step::Continue(b) => Block1Request::Answer(Block1Answer::Continue(b)),
            Block1Step::Complete { block, body } => Block1Request::Complete { block, body },
            Block1Step::Refused(r) => Block1Request::Answer(Block1Answer::Refused(r)),
        }
    }
}

/// Block2 serving (RFC 7959 §2.4), stateless: the block of `body` a request asks for.
///
/// `requested` is the request's Block2 option (`None`: block 0), `max_szx` the largest block
/// size this server sends (6 for 1024 bytes). The block size is the smaller of the two; the
/// answer is the Block2 value to send (with `M` set when more follow) and the payload slice.
/// `None` when the block starts beyond the body (answer 4.02 Bad Option). A body that fits
/// in one block and was not asked for block-wise needs no Block2 option:
/// [`needs_blocks`] tells.
pub fn slice(body: &[u8], requested: Option<Block>, max_szx: u8) -> Option<(Block, &[u8])> {
    let (num, szx) = match requested {
        Some(b) if b.szx() <= max_szx => (b.num(), b.szx()),
        // A larger size asked for: the block at the same offset in the smaller size.
        Some(b) => {
            let smaller = Block::new(0, false, max_szx.min(Block::MAX_SZX))?;
            (
                u32::try_from(b.offset() / smaller.size()).ok()?,
                smaller.szx(),
            )
        }
        None => (0, max_szx.min(Block::MAX_SZX)),
    };
    let probe = Block::new(num, false, szx)?;
    let start = probe.offset();
    if start > body.len() || (start == body.len() && start != 0) {
        return None;
    }
    let end = (start + probe.size()).min(body.len());
    let more = end < body.len();
    Some((Block::new(num, more, szx)?, body.get(start..end)?))
}

/// Whether a response of `len` bytes to a request with Block2 option `requested` goes
/// block-wise: when it asked for blocks, or the body exceeds [`MAX_BLOCK`].
pub fn needs_blocks(len: usize, requested: Option<Block>) -> bool {
    requested.is_some() || len > MAX_BLOCK
}

/// Writes Block2 and Size2 (the whole length, with block 0) for a response slice, in option
/// order; call between options numbered below 23 and those above 28.
pub fn write_block2(
    w: &mut MessageWriter<'_>,
    block: Block,
    total: usize,
) -> Result<(), WriteError> {
    w.block_option(option::BLOCK2, block)?;
    if block.num() == 0 {
        w.uint_option(option::SIZE2, u32::try_from(total).unwrap_or(u32::MAX))?;
    }
    Ok(())
}

/// Client side of Block1 (RFC 7959 §2.5): sends `body` in blocks, one request per block,
/// following the server's preferred (smaller) block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block1Sender {
    len: usize,
    /// Offset of the next block to send.
    offset: usize,
    szx: u8,
    /// The block in flight, if any.
    sent: Option<Block>,
    /// The last block (`M` clear) was handed out.
    last_out: bool,
}

/// What a [`Block1Sender`] makes of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendStep {
    /// 2.31 Continue: send [`Block1Sender::next_block`].
    Next,
    /// The final response (whatever its code): the transfer is over.
    Done,
    /// The server answered 2.31 for the last block, or echoed a block that was not sent:
    /// the transfer failed.
    Failed,
}

impl Block1Sender {
    /// Sends a body of `len` bytes in blocks of at most `2^(szx+4)` bytes.
    pub fn new(len: usize, szx: u8) -> Block1Sender {
        Block1Sender {
            len,
            offset: 0,
            szx: szx.min(Block::MAX_SZX),
            sent: None,
            last_out: false,
        }
    }

    /// Whether a body of `len` bytes must go block-wise (more than [`MAX_BLOCK`]).
    pub fn needed(len: usize) -> bool {
        len > MAX_BLOCK
    }

    /// The next block to send and its payload slice of `body` (the same body every call),
    /// or `None` when everything was sent. Remembers it as in flight.
    pub fn next_block<'b>(&mut self, body: &'b [u8]) -> Option<(Block, &'b [u8])> {
        let (block, range) = self.next_range()?;
        Some((block, body.get(range)?))
    }

    /// Like [`Block1Sender::next_block`] for a body the caller does not hold whole (it
    /// regenerates the slice): the next block and the byte range of the body it carries.
    pub fn next_range(&mut self) -> Option<(Block, core::ops::Range<usize>)> {
        let size = 1usize << (self.szx + 4);
        if self.last_out {
            return None;
        }
        let num = u32::try_from(self.offset / size).ok()?;
        let end = (self.offset + size).min(self.len);
        let more = end < self.len;
        let block = Block::new(num, more, self.szx)?;
        self.sent = Some(block);
        self.last_out = !more;
        Some((block, self.offset..end))
    }

    /// The body length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block in flight (sent, not answered yet).
    pub fn in_flight(&self) -> Option<Block> {
        self.sent
    }

    /// The option values to write with a block: Block1, and Size1 with block 0.
    pub fn write_options(&self, w: &mut MessageWriter<'_>, block: Block) -> Result<(), WriteError> {
        w.block_option(option::BLOCK1, block)?;
        if block.num() == 0 {
            w.uint_option(option::SIZE1, u32::try_from(self.len).unwrap_or(u32::MAX))?;
        }
        Ok(())
    }

    /// The response to the block in flight: its code and Block1 option.
    pub fn on_response(&mut self, code: Code, block1: Option<Block>) -> SendStep {
        let Some(sent) = self.sent.take() else {
            return SendStep::Failed;
        };
        if code != Code::CONTINUE {
            return SendStep::Done;
        }
        if !sent.more() {
            return SendStep::Failed;
        }
        match block1 {
            Some(b) if b.szx() < self.szx => {
                // The server prefers smaller blocks: continue at the same offset in its size.
                self.offset = sent.offset() + sent.size();
                self.szx = b.szx();
                SendStep::Next
            }
            Some(b) if b.num() != sent.num() => SendStep::Failed,
            _ => {
                self.offset = sent.offset() + sent.size();
                SendStep::Next
            }
        }
    }
}

/// Client side of Block2 (RFC 7959 §2.4): fetches a representation block by block into a
/// caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block2Fetch {
    len: usize,
    szx: u8,
    next: u32,
}

/// What a [`Block2Fetch`] makes of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchStep {
    /// Ask for this block next (write it with [`MessageWriter::block_option`] as Block2).
    Next(Block),
    /// Complete: the body is the first `len` bytes of the buffer.
    Done(usize),
    /// The body does not fit the buffer.
    TooLarge,
    /// A block that was not asked for, or a block with a wrong size.
    Failed,
}

impl Block2Fetch {
    /// A fetch asking for blocks of `2^(szx+4)` bytes (the server may pick smaller ones).
    pub fn new(szx: u8) -> Block2Fetch {
        Block2Fetch {
            len: 0,
            szx: szx.min(Block::MAX_SZX),
            next: 0,
        }
    }

    /// The Block2 value for the first request (block 0 of the preferred size).
    pub fn first(&self) -> Block {
        Block::new(0, false, self.szx).unwrap_or(BLOCK_0)
    }

    /// A 2.05 response: its Block2 option (`None`: the whole body at once) and payload,
    /// copied into `buf` at its offset.
    pub fn on_response(
        &mut self,
        block2: Option<Block>,
        payload: &[u8],
        buf: &mut [u8],
    ) -> FetchStep {
        let Some(b) = block2 else {
            if self.next != 0 {
                return FetchStep::Failed;
            }
            return match buf.get_mut(..payload.len()) {
                Some(dst) => {
                    dst.copy_from_slice(payload);
                    FetchStep::Done(payload.len())
                }
                None => FetchStep::TooLarge,
            };
        };
        // The server may answer with a smaller size than asked: same offset, its numbering.
        let expected_offset = self.next as usize * (1usize << (self.szx + 4));
        if b.offset() != expected_offset || b.szx() > self.szx || payload.len() > b.size() {
            return FetchStep::Failed;
        }
        if b.more() && payload.len() != b.size() {
            return FetchStep::Failed;
        }
        let end = b.offset() + payload.len();
        match buf.get_mut(b.offset()..end) {
            Some(dst) => dst.copy_from_slice(payload),
            None => return FetchStep::TooLarge,
        }
        self.len = end;
        self.szx = b.szx();
        if !b.more() {
            return FetchStep::Done(self.len);
        }
        self.next = b.num() + 1;
        match Block::new(self.next, false, self.szx) {
            Some(n) => FetchStep::Next(n),
            None => FetchStep::TooLarge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    type R = Reassembler<u8, 4, 4096>;

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn blk(num: u32, more: bool, szx: u8) -> Block {
        Block::new(num, more, szx).unwrap()
    }

    /// Blocks of `data` in size `szx`: (block, payload).
    fn blocks(data: &[u8], szx: u8) -> Vec<(Block, Vec<u8>)> {
        let size = 1usize << (szx + 4);
        let n = data.len().div_ceil(size);
        (0..n)
            .map(|i| {
                let end = ((i + 1) * size).min(data.len());
                (
                    blk(i as u32, end < data.len(), szx),
                    data[i * size..end].to_vec(),
                )
            })
            .collect()
    }

    fn feed(
        r: &mut R,
        now: u64,
        peer: u8,
        b: &(Block, Vec<u8>),
    ) -> Result<Option<Vec<u8>>, Refusal> {
        match r.block(now, peer, 1, b.0, None, &b.1) {
            Block1Step::Continue(echo) => {
                assert_eq!(echo, b.0);
                Ok(None)
            }
            Block1Step::Complete { block, body } => {
                assert_eq!(block, b.0);
                Ok(Some(body.to_vec()))
            }
            Block1Step::Refused(why) => Err(why),
        }
    }

    #[test]
    fn in_order_blocks_reassemble_the_body() {
        let data = body(2500);
        let mut r = R::new(4096, 2, 10_000);
        let bs = blocks(&data, 6);
        assert_eq!(bs.len(), 3);
        assert_eq!(feed(&mut r, 0, 9, &bs[0]), Ok(None));
        assert_eq!(feed(&mut r, 1, 9, &bs[1]), Ok(None));
        assert_eq!(feed(&mut r, 2, 9, &bs[2]), Ok(Some(data.clone())));
        assert_eq!(r.stats().completed, 1);
        // The slot is free again: the next call starts clean.
        assert_eq!(feed(&mut r, 3, 9, &bs[1]), Err(Refusal::Incomplete));
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn out_of_order_blocks_reassemble_the_body() {
        let data = body(64 * 5 + 10);
        let mut r = R::new(4096, 2, 10_000);
        let bs = blocks(&data, 2);
        for i in [0, 3, 1, 4, 2] {
            assert_eq!(feed(&mut r, 0, 9, &bs[i]), Ok(None), "block {i}");
        }
        assert_eq!(feed(&mut r, 0, 9, &bs[5]), Ok(Some(data)));
    }

    #[test]
    fn a_duplicate_block_is_answered_again_and_changes_nothing() {
        let data = body(1500);
        let mut r = R::new(4096, 2, 10_000);
        let bs = blocks(&data, 6);
        assert_eq!(feed(&mut r, 0, 9, &bs[0]), Ok(None));
        // The same block again, its payload garbled: the first copy stays.
        let mut dup = bs[0].clone();
        dup.1.iter_mut().for_each(|b| *b = 0);
        assert_eq!(feed(&mut r, 1, 9, &dup), Ok(None));
        assert_eq!(r.stats().duplicate_blocks, 1);
        assert_eq!(feed(&mut r, 2, 9, &bs[1]), Ok(Some(data)));
    }

    #[test]
    fn a_gap_before_the_last_block_is_4_08_and_drops_the_transfer() {
        let data = body(64 * 4);
        let mut r = R::new(4096, 2, 10_000);
        let bs = blocks(&data, 2);
        assert_eq!(feed(&mut r, 0, 9, &bs[0]), Ok(None));
        assert_eq!(feed(&mut r, 0, 9, &bs[1]), Ok(None));
        let e = feed(&mut r, 0, 9, &bs[3]).unwrap_err();
        assert_eq!(e, Refusal::Incomplete);
        assert_eq!(e.code(), Code::REQUEST_ENTITY_INCOMPLETE);
        assert_eq!(r.in_progress(), 0);
        // The missing block arriving later finds no transfer.
        assert_eq!(feed(&mut r, 0, 9, &bs[2]), Err(Refusal::Incomplete));
        assert_eq!(r.stats().incomplete, 2);
    }

    #[test]
    fn too_large_by_size1_or_by_blocks_is_4_13_with_size1() {
        let mut r = R::new(2048, 2, 10_000);
        let data = body(1024);
        match r.block(0, 9, 1, blk(0, true, 6), Some(5000), &data) {
            Block1Step::Refused(why) => {
                assert_eq!(why, Refusal::TooLarge { limit: 2048 });
                let mut buf = [0u8; 32];
                let mut w = MessageWriter::new(
                    &mut buf,
                    crate::MessageType::Acknowledgement,
                    why.code(),
                    1,
                    &[],
                )
                .unwrap();
                why.write_options(&mut w).unwrap();
                let n = w.finish();
                let m = Message::parse(&buf[..n]).unwrap();
                assert_eq!(m.code(), Code::REQUEST_ENTITY_TOO_LARGE);
                assert_eq!(m.uint_option(option::SIZE1), Some(2048));
            }
            other => panic!("{other:?}"),
        }
        // Without Size1: the third block of 1024 passes the limit.
        assert!(matches!(
            r.block(0, 9, 1, blk(0, true, 6), None, &data),
            Block1Step::Continue(_)
        ));
        assert!(matches!(
            r.block(0, 9, 1, blk(1, true, 6), None, &data),
            Block1Step::Continue(_)
        ));
        assert_eq!(
            r.block(0, 9, 1, blk(2, false, 6), None, &data[..1]),
            Block1Step::Refused(Refusal::TooLarge { limit: 2048 })
        );
        assert_eq!(r.in_progress(), 0);
        assert_eq!(r.stats().too_large, 2);
    }

    #[test]
    fn an_idle_transfer_times_out() {
        let data = body(3000);
        let bs = blocks(&data, 6);
        let mut r = R::new(4096, 2, 1_000);
        assert_eq!(feed(&mut r, 0, 9, &bs[0]), Ok(None));
        assert_eq!(r.next_deadline(), Some(1_000));
        assert_eq!(feed(&mut r, 999, 9, &bs[1]), Ok(None), "within the timeout");
        assert_eq!(r.expire(1_998), 0);
        assert_eq!(r.expire(1_999), 1);
        assert_eq!(r.stats().timed_out, 1);
        assert_eq!(feed(&mut r, 2_000, 9, &bs[2]), Err(Refusal::Incomplete));
    }

    #[test]
    fn transfers_are_bounded_per_peer_and_in_all_and_kept_apart() {
        let a = body(2000);
        let b: Vec<u8> = a.iter().map(|x| x ^ 0xff).collect();
        let mut r = R::new(4096, 1, 10_000);
        let (ba, bb) = (blocks(&a, 6), blocks(&b, 6));
        assert_eq!(feed(&mut r, 0, 1, &ba[0]), Ok(None));
        // Same peer, another resource: over the per-peer bound.
        assert_eq!(
            r.block(0, 1, 2, bb[0].0, None, &bb[0].1),
            Block1Step::Refused(Refusal::Busy)
        );
        // Other peers interleave and get their own bodies.
        assert_eq!(feed(&mut r, 0, 2, &bb[0]), Ok(None));
        for p in [3, 4] {
            assert_eq!(feed(&mut r, 0, p, &bb[0]), Ok(None));
        }
        assert_eq!(
            feed(&mut r, 0, 5, &bb[0]),
            Err(Refusal::Busy),
            "all 4 slots used"
        );
        assert_eq!(feed(&mut r, 0, 2, &bb[1]), Ok(Some(b)));
        assert_eq!(feed(&mut r, 0, 1, &ba[1]), Ok(Some(a)));
        assert_eq!(r.stats().busy, 2);
    }

    #[test]
    fn a_short_middle_block_is_refused() {
        let mut r = R::new(4096, 1, 10_000);
        assert_eq!(
            r.block(0, 1, 1, blk(0, true, 6), None, &[1; 100]),
            Block1Step::Refused(Refusal::BadBlock)
        );
    }

    #[test]
    fn slices_cover_the_body_and_follow_a_smaller_size() {
        let data = body(2100);
        let (b0, p0) = slice(&data, None, 6).unwrap();
        assert_eq!(
            (b0.num(), b0.more(), b0.size(), p0),
            (0, true, 1024, &data[..1024])
        );
        let (b2, p2) = slice(&data, Some(blk(2, false, 6)), 6).unwrap();
        assert_eq!((b2.more(), p2), (false, &data[2048..]));
        // The client asks for 256-byte blocks.
        let (b, p) = slice(&data, Some(blk(3, false, 4)), 6).unwrap();
        assert_eq!(
            (b.num(), b.size(), b.more(), p),
            (3, 256, true, &data[768..1024])
        );
        // A server limited to 512 answers a request for 1024-byte block 1 at offset 1024.
        let (b, p) = slice(&data, Some(blk(1, false, 6)), 5).unwrap();
        assert_eq!((b.num(), b.size(), p), (2, 512, &data[1024..1536]));
        assert_eq!(
            slice(&data, Some(blk(3, false, 6)), 6),
            None,
            "beyond the end"
        );
        assert!(needs_blocks(1025, None));
        assert!(!needs_blocks(1024, None));
        assert!(needs_blocks(10, Some(blk(0, false, 6))));
    }

    #[test]
    fn sender_and_reassembler_agree_including_a_smaller_server_size() {
        let data = body(3333);
        let mut r = R::new(4096, 1, 10_000);
        let mut s = Block1Sender::new(data.len(), 6);
        assert!(Block1Sender::needed(data.len()));
        let mut got = None;
        let mut rounds = 0;
        while let Some((b, p)) = s.next_block(&data) {
            rounds += 1;
            // The server takes the first block but then asks for 512-byte blocks.
            let step = r.block(0, 1, 1, b, None, p);
            let (code, echo) = match step {
                Block1Step::Continue(e) if rounds == 1 => (Code::CONTINUE, blk(e.num(), true, 5)),
                Block1Step::Continue(e) => (Code::CONTINUE, e),
                Block1Step::Complete { block, body } => {
                    got = Some(body.to_vec());
                    (Code::CHANGED, block)
                }
                Block1Step::Refused(w) => panic!("{w:?}"),
            };
            match s.on_response(code, Some(echo)) {
                SendStep::Next => {}
                SendStep::Done => break,
                other => panic!("{other:?}"),
            }
        }
        // 1024 + 4 * 512 + 261 bytes.
        assert_eq!(rounds, 6);
        assert_eq!(got, Some(data));
        assert_eq!(s.next_block(&[]), None);
    }

    /// A request with Uri-Path `u`, and Block1 / Size1 when given.
    fn req(block1: Option<&[u8]>, size1: Option<u32>, payload: &[u8]) -> Vec<u8> {
        let mut buf = std::vec![0u8; 1200];
        let mut w = MessageWriter::new(
            &mut buf,
            crate::MessageType::Confirmable,
            Code::POST,
            1,
            b"t",
        )
        .unwrap();
        w.uri_path("u").unwrap();
        if let Some(b) = block1 {
            w.option(option::BLOCK1, b).unwrap();
        }
        if let Some(s) = size1 {
            w.uint_option(option::SIZE1, s).unwrap();
        }
        w.payload(payload).unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    #[test]
    fn whole_requests_reassemble_by_their_block1_option() {
        let mut r = R::new(2048, 1, 10_000);
        let plain = req(None, None, b"abc");
        assert_eq!(
            r.request(0, 1, &Message::parse(&plain).unwrap()),
            Block1Request::Whole
        );
        // A Block1 value of 4 bytes does not decode: 4.02.
        let bad = req(Some(&[1, 2, 3, 4]), None, b"abc");
        let Block1Request::Answer(a) = r.request(0, 1, &Message::parse(&bad).unwrap()) else {
            panic!("an answer");
        };
        assert_eq!((a, a.code()), (Block1Answer::BadOption, Code::BAD_OPTION));
        // Size1 over the limit: 4.13 with Size1 written.
        let enc = |b: Block| {
            let (v, n) = b.encode();
            v[3 - n..].to_vec()
        };
        let big = req(Some(&enc(blk(0, true, 6))), Some(4000), &[0; 1024]);
        let Block1Request::Answer(a) = r.request(0, 1, &Message::parse(&big).unwrap()) else {
            panic!("an answer");
        };
        let mut out = [0u8; 64];
        let mut w = MessageWriter::new(
            &mut out,
            crate::MessageType::Acknowledgement,
            a.code(),
            1,
            b"t",
        )
        .unwrap();
        a.write(&mut w).unwrap();
        let n = w.finish();
        let m = Message::parse(&out[..n]).unwrap();
        assert_eq!(m.code(), Code::REQUEST_ENTITY_TOO_LARGE);
        assert_eq!(m.uint_option(option::SIZE1), Some(2048));
        assert_eq!(m.payload(), b"body too large");
        // Two blocks: Continue echoing block 0, then the body.
        let data = body(1500);
        let b0 = req(Some(&enc(blk(0, true, 6))), None, &data[..1024]);
        assert_eq!(
            r.request(0, 1, &Message::parse(&b0).unwrap()),
            Block1Request::Answer(Block1Answer::Continue(blk(0, true, 6)))
        );
        let b1 = req(Some(&enc(blk(1, false, 6))), None, &data[1024..]);
        assert_eq!(
            r.request(0, 1, &Message::parse(&b1).unwrap()),
            Block1Request::Complete {
                block: blk(1, false, 6),
                body: &data[..]
            }
        );
        // The key names method and URI: another path is another transfer.
        let other = Message::parse(&plain).unwrap();
        assert_ne!(request_key(&other), 0);
    }

    #[test]
    fn fetch_collects_the_slices_into_the_buffer() {
        let data = body(2500);
        let mut f = Block2Fetch::new(6);
        let mut buf = [0u8; 4096];
        let mut ask = f.first();
        let mut rounds = 0;
        let n = loop {
            rounds += 1;
            // The server sends 512-byte blocks.
            let (b, p) = slice(&data, Some(ask), 5).unwrap();
            match f.on_response(Some(b), p, &mut buf) {
                FetchStep::Next(next) => ask = next,
                FetchStep::Done(n) => break n,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(rounds, 5);
        assert_eq!(&buf[..n], &data[..]);
        // Too small a buffer.
        let mut f = Block2Fetch::new(6);
        let mut small = [0u8; 1500];
        let (b, p) = slice(&data, None, 6).unwrap();
        assert!(matches!(
            f.on_response(Some(b), p, &mut small),
            FetchStep::Next(_)
        ));
        let (b, p) = slice(&data, Some(blk(1, false, 6)), 6).unwrap();
        assert_eq!(f.on_response(Some(b), p, &mut small), FetchStep::TooLarge);
        // A block that was not asked for.
        let mut f = Block2Fetch::new(6);
        let (b, p) = slice(&data, Some(blk(1, false, 6)), 6).unwrap();
        assert_eq!(f.on_response(Some(b), p, &mut buf), FetchStep::Failed);
    }
}
