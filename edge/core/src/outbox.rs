//! The store-and-forward outbox: a fixed-capacity queue of encoded records with per-edge
//! sequence numbers and cumulative acknowledgement.
//!
//! Loss rules (the promise to users):
//! - A record gets its sequence number when it is first put into a batch, so what goes out is
//!   always in sequence order even though events jump ahead of summaries.
//! - A batch in flight keeps its records and numbers until acknowledged; after a timeout or a
//!   broker change the very same batch is sent again (the store deduplicates by edge and
//!   sequence number), so nothing acknowledged is lost and nothing is stored twice.
//! - When the outbox is full, the oldest record not yet in flight is dropped — the oldest
//!   summary first, an event only when no summary is left to drop — and the cumulative
//!   `dropped` counter, which travels in every batch, goes up by one: loss is never silent.

use heapless::Vec;
use qos_wire::codec::{encode_into, SliceEncoder, WireError};
use qos_wire::ids::Seq;
use qos_wire::uplink::{encode_record, RecordKind};
use serde::{Deserialize, Serialize};

/// One record waiting in the outbox: its kind, its encoded form `[kind, body]`, and its
/// sequence number once it has been put into a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<const REC: usize> {
    kind: u8,
    seq: Option<u64>,
    bytes: Vec<u8, REC>,
}

impl<const REC: usize> Entry<REC> {
    /// Kind of the record.
    pub fn kind(&self) -> Option<RecordKind> {
        RecordKind::from_u8(self.kind)
    }
    /// The encoded record.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Its sequence number, once in flight.
    pub fn seq(&self) -> Option<Seq> {
        self.seq.map(Seq)
    }
}

/// Why a record could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PushError {
    /// The record does not fit in `REC` bytes (or failed to encode).
    Encode(WireError),
    /// Every slot holds a record in flight; nothing may be dropped.
    AllInFlight,
}

/// What a batch in flight covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InFlight {
    /// First sequence number.
    pub first: Seq,
    /// Number of records.
    pub count: u16,
}

impl InFlight {
    /// Last sequence number.
    pub fn last(&self) -> Seq {
        Seq(self.first.0 + u64::from(self.count) - 1)
    }
}

/// Counters of an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutboxStats {
    /// Records queued.
    pub queued: u64,
    /// Records dropped because the outbox was full (travels upstream).
    pub dropped: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Most records held at once.
    pub high_water: u16,
}

/// The outbox with room for `N` records of at most `REC` encoded bytes each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox<const N: usize, const REC: usize> {
    /// In flight first (ascending seq), then unsent events, then unsent summaries and results.
    entries: Vec<Entry<REC>, N>,
    next_seq: u64,
    stats: OutboxStats,
}

impl<const N: usize, const REC: usize> Outbox<N, REC> {
    /// An empty outbox whose first record will get `first`.
    pub const fn new(first: Seq) -> Self {
        Outbox { entries: Vec::new(), next_seq: first.0, stats: OutboxStats { queued: 0, dropped: 0, acked: 0, high_water: 0 } }
    }

    /// Start a new boot epoch: records not yet in flight will be numbered from
    /// `Seq::first_of_epoch(epoch)`; a batch restored in flight keeps its old numbers.
    pub fn start_epoch(&mut self, epoch: u32) {
        self.next_seq = self.next_seq.max(Seq::first_of_epoch(epoch).0);
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }

    /// The sequence number the next new batch will start at.
    pub fn next_seq(&self) -> Seq {
        Seq(self.next_seq)
    }

    /// Queue a record whose body `body` encodes; events go ahead of summaries and results.
    pub fn push(
        &mut self,
        kind: RecordKind,
        body: impl FnOnce(&mut SliceEncoder<'_>) -> Result<(), WireError>,
    ) -> Result<(), PushError> {
        let mut buf = [0u8; REC];
        let n = encode_into(&mut buf, |e| encode_record(e, kind, body)).map_err(PushError::Encode)?;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&buf[..n]).map_err(|_| PushError::Encode(WireError::BufferFull))?;
        if self.entries.is_full() {
            self.drop_oldest()?;
        }
        let entry = Entry { kind: kind as u8, seq: None, bytes };
        let at = if kind == RecordKind::Event {
            self.entries
                .iter()
                .position(|e| e.seq.is_none() && e.kind != RecordKind::Event as u8)
                .unwrap_or(self.entries.len())
        } else {
            self.entries.len()
        };
        // Cannot fail: a slot was freed above.
        let _ = self.entries.insert(at, entry);
        self.stats.queued += 1;
        self.stats.high_water = self.stats.high_water.max(self.entries.len() as u16);
        Ok(())
    }

    fn drop_oldest(&mut self) -> Result<(), PushError> {
        let unsent = |e: &Entry<REC>| e.seq.is_none();
        let victim = self
            .entries
            .iter()
            .position(|e| unsent(e) && e.kind != RecordKind::Event as u8)
            .or_else(|| self.entries.iter().position(unsent))
            .ok_or(PushError::AllInFlight)?;
        self.entries.remove(victim);
        self.stats.dropped += 1;
        Ok(())
    }

    /// The batch in flight, if any.
    pub fn in_flight(&self) -> Option<InFlight> {
        let first = self.entries.first()?.seq?;
        let count = self.entries.iter().take_while(|e| e.seq.is_some()).count() as u16;
        Some(InFlight { first: Seq(first), count })
    }

    /// Records of the batch in flight, in sequence order.
    pub fn in_flight_records(&self) -> impl Iterator<Item = &Entry<REC>> {
        self.entries.iter().take_while(|e| e.seq.is_some())
    }

    /// Put the next records into flight, as many as fit in `budget` encoded bytes and at most
    /// `max_records`, numbering them. Returns the batch in flight (the existing one if a batch
    /// is already in flight), or `None` when there is nothing to send.
    pub fn start_batch(&mut self, budget: usize, max_records: u16) -> Option<InFlight> {
        if let Some(f) = self.in_flight() {
            return Some(f);
        }
        let mut used = 0;
        let mut count = 0u16;
        for e in self.entries.iter_mut() {
            let len = e.bytes.len();
            if count >= max_records || (count > 0 && used + len > budget) {
                break;
            }
            e.seq = Some(self.next_seq);
            self.next_seq += 1;
            used += len;
            count += 1;
        }
        self.in_flight()
    }

    /// Cumulative acknowledgement: forget every in-flight record numbered up to `acked`.
    /// Returns how many were released.
    pub fn ack(&mut self, acked: Seq) -> usize {
        let n = self.entries.iter().take_while(|e| matches!(e.seq, Some(s) if s <= acked.0)).count();
        for _ in 0..n {
            self.entries.remove(0);
        }
        self.stats.acked += n as u64;
        n
    }

    /// Drop the batch in flight (the receiver refused it for good), counting its records as
    /// dropped. Returns how many.
    pub fn drop_in_flight(&mut self) -> usize {
        let n = self.entries.iter().take_while(|e| e.seq.is_some()).count();
        for _ in 0..n {
            self.entries.remove(0);
        }
        self.stats.dropped += n as u64;
        n
    }

    /// Serialise the whole outbox (records, numbers, counters) with postcard, for a board that
    /// persists it across a reboot.
    pub fn save<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
        postcard::to_slice(self, buf)
    }

    /// Restore an outbox saved with [`Outbox::save`].
    pub fn load(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}
