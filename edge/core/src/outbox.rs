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
        Seq(self.first.0 + u64::from(self.count.saturating_sub(1)))
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
        Outbox {
            entries: Vec::new(),
            next_seq: first.0,
            stats: OutboxStats {
                queued: 0,
                dropped: 0,
                acked: 0,
                high_water: 0,
            },
        }
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
        let n =
            encode_into(&mut buf, |e| encode_record(e, kind, body)).map_err(PushError::Encode)?;
        let mut bytes = Vec::new();
        bytes
            .extend_from_slice(&buf[..n])
            .map_err(|_| PushError::Encode(WireError::BufferFull))?;
        if self.entries.is_full() {
            self.drop_oldest()?;
        }
        let entry = Entry {
            kind: kind as u8,
            seq: None,
            bytes,
        };
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
        self.stats.queued = self.stats.queued.saturating_add(1);
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
        self.stats.dropped = self.stats.dropped.saturating_add(1);
        Ok(())
    }

    /// The batch in flight, if any.
    pub fn in_flight(&self) -> Option<InFlight> {
        let first = self.entries.first()?.seq?;
        let count = self.entries.iter().take_while(|e| e.seq.is_some()).count() as u16;
        Some(InFlight {
            first: Seq(first),
            count,
        })
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
        for (count, e) in self.entries.iter_mut().enumerate() {
            let len = e.bytes.len();
            // A boot epoch has 2^32 - 1 numbers; the rest waits for the next epoch (boot).
            let exhausted = Seq(self.next_seq).counter() == u32::MAX;
            if exhausted || count >= usize::from(max_records) || (count > 0 && used + len > budget)
            {
                break;
            }
            e.seq = Some(self.next_seq);
            self.next_seq += 1;
            used += len;
        }
        self.in_flight()
    }

    /// Cumulative acknowledgement: forget every in-flight record numbered up to `acked`.
    /// Returns how many were released.
    pub fn ack(&mut self, acked: Seq) -> usize {
        let n = self
            .entries
            .iter()
            .take_while(|e| matches!(e.seq, Some(s) if s <= acked.0))
            .count();
        for _ in 0..n {
            self.entries.remove(0);
        }
        self.stats.acked = self.stats.acked.saturating_add(n as u64);
        n
    }

    /// Drop the batch in flight (the receiver refused it for good), counting its records as
    /// dropped. Returns how many.
    pub fn drop_in_flight(&mut self) -> usize {
        let n = self.entries.iter().take_while(|e| e.seq.is_some()).count();
        for _ in 0..n {
            self.entries.remove(0);
        }
        self.stats.dropped = self.stats.dropped.saturating_add(n as u64);
        n
    }

    /// Drop the records of the batch in flight numbered up to `last` (the receiver refused
    /// that part of it for good), counting them as dropped. Returns how many.
    pub fn drop_in_flight_up_to(&mut self, last: Seq) -> usize {
        let n = self
            .entries
            .iter()
            .take_while(|e| matches!(e.seq, Some(s) if s <= last.0))
            .count();
        for _ in 0..n {
            self.entries.remove(0);
        }
        self.stats.dropped = self.stats.dropped.saturating_add(n as u64);
        n
    }

    /// Serialise the whole outbox (records, numbers, counters) with postcard, for a board that
    /// persists it across a reboot.
    pub fn save<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
        postcard::to_slice(self, buf)
    }

    /// Restore an outbox saved with [`Outbox::save`]. Bytes that decode but describe an
    /// outbox `save` never writes (a corrupt file) are refused like undecodable ones: the
    /// records in flight must be a prefix numbered consecutively below `next_seq`, every record
    /// of a known kind. (Counters saturate and numbering stops at the end of an epoch, so no
    /// loaded value can overflow later.)
    pub fn load(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let o: Self = postcard::from_bytes(bytes)?;
        if o.is_plausible() {
            Ok(o)
        } else {
            Err(postcard::Error::DeserializeBadEncoding)
        }
    }

    fn is_plausible(&self) -> bool {
        let mut expect = None;
        let mut in_prefix = true;
        for e in &self.entries {
            if RecordKind::from_u8(e.kind).is_none() {
                return false;
            }
            match (e.seq, in_prefix) {
                (Some(seq), true) => {
                    if expect.is_some_and(|x| x != seq) || seq >= self.next_seq {
                        return false;
                    }
                    expect = Some(seq + 1);
                }
                (Some(_), false) => return false,
                (None, _) => in_prefix = false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minicbor::Decoder;

    type Box8 = Outbox<8, 64>;

    fn push_n(o: &mut Box8, kind: RecordKind, tag: u32) {
        o.push(kind, |e| {
            e.u32(tag)?;
            Ok(())
        })
        .unwrap();
    }

    fn tag(e: &Entry<64>) -> u32 {
        let mut d = Decoder::new(e.bytes());
        d.array().unwrap();
        d.u8().unwrap();
        d.u32().unwrap()
    }

    fn tags(o: &Box8) -> std::vec::Vec<u32> {
        o.entries.iter().map(tag).collect()
    }

    #[test]
    fn numbers_are_assigned_at_send_time_in_order() {
        let mut o = Box8::new(Seq::first_of_epoch(2));
        push_n(&mut o, RecordKind::Summary, 1);
        push_n(&mut o, RecordKind::Summary, 2);
        push_n(&mut o, RecordKind::Event, 100);
        assert_eq!(
            tags(&o),
            [100, 1, 2],
            "the event jumps ahead of unsent summaries"
        );
        let f = o.start_batch(1000, 2).unwrap();
        assert_eq!((f.first, f.count), (Seq::first_of_epoch(2), 2));
        // an event pushed now goes after the batch in flight, before the unsent summary
        push_n(&mut o, RecordKind::Event, 101);
        assert_eq!(tags(&o), [100, 1, 101, 2]);
        // the same batch is handed out again until acknowledged
        assert_eq!(o.start_batch(1000, 8), Some(f));
        assert_eq!(o.ack(f.last()), 2);
        let g = o.start_batch(1000, 8).unwrap();
        assert_eq!((g.first, g.count), (Seq(f.last().0 + 1), 2));
        assert_eq!(
            o.in_flight_records().map(tag).collect::<std::vec::Vec<_>>(),
            [101, 2]
        );
    }

    #[test]
    fn partial_and_stale_acks() {
        let mut o = Box8::new(Seq(10));
        for t in 0..4 {
            push_n(&mut o, RecordKind::Summary, t);
        }
        let f = o.start_batch(1000, 3).unwrap();
        assert_eq!(o.ack(Seq(9)), 0, "an ack below the batch releases nothing");
        assert_eq!(o.ack(Seq(10)), 1);
        assert_eq!(
            o.in_flight(),
            Some(InFlight {
                first: Seq(11),
                count: 2
            })
        );
        assert_eq!(
            o.ack(Seq(99)),
            2,
            "unsent records are never released by an ack"
        );
        assert_eq!(o.len(), 1);
        assert_eq!(o.stats().acked, 3);
        let _ = f;
    }

    #[test]
    fn overflow_drops_the_oldest_summary_first_and_counts_it() {
        let mut o = Box8::new(Seq(0));
        push_n(&mut o, RecordKind::Event, 1000);
        for t in 0..7 {
            push_n(&mut o, RecordKind::Summary, t);
        }
        o.start_batch(1000, 2).unwrap(); // event 1000 and summary 0 in flight
        push_n(&mut o, RecordKind::Summary, 7);
        assert_eq!(
            tags(&o),
            [1000, 0, 2, 3, 4, 5, 6, 7],
            "summary 1 (oldest unsent) dropped"
        );
        assert_eq!(o.stats().dropped, 1);
        // events survive while summaries remain to be dropped
        for t in 0..3 {
            push_n(&mut o, RecordKind::Event, 2000 + t);
        }
        assert_eq!(tags(&o), [1000, 0, 2000, 2001, 2002, 5, 6, 7]);
        assert_eq!(o.stats().dropped, 4);
        assert_eq!(o.stats().queued, 12);
        assert_eq!(o.stats().high_water, 8);
    }

    #[test]
    fn all_in_flight_refuses_rather_than_dropping_sent_records() {
        let mut o: Outbox<2, 64> = Outbox::new(Seq(0));
        for t in 0..2 {
            o.push(RecordKind::Summary, |e| {
                e.u32(t)?;
                Ok(())
            })
            .unwrap();
        }
        o.start_batch(1000, 8).unwrap();
        let r = o.push(RecordKind::Summary, |e| {
            e.u32(9)?;
            Ok(())
        });
        assert_eq!(r, Err(PushError::AllInFlight));
    }

    #[test]
    fn budget_limits_a_batch_but_never_below_one_record() {
        let mut o = Box8::new(Seq(0));
        for t in 0..4 {
            push_n(&mut o, RecordKind::Summary, 1_000_000 + t); // 8 bytes per record
        }
        assert_eq!(o.start_batch(17, 8).unwrap().count, 2);
        o.ack(Seq(1));
        assert_eq!(o.start_batch(1, 8).unwrap().count, 1);
    }

    #[test]
    fn too_large_record_is_an_error_not_a_panic() {
        let mut o: Outbox<2, 8> = Outbox::new(Seq(0));
        let r = o.push(RecordKind::Summary, |e| {
            e.bytes(&[0u8; 32])?;
            Ok(())
        });
        assert!(matches!(r, Err(PushError::Encode(_))));
        assert!(o.is_empty());
    }

    #[test]
    fn save_and_load_keep_everything_and_a_new_epoch_numbers_after() {
        let mut o = Box8::new(Seq::first_of_epoch(1));
        for t in 0..5 {
            push_n(&mut o, RecordKind::Summary, t);
        }
        let f = o.start_batch(1000, 2).unwrap();
        let mut buf = [0u8; 1024];
        let bytes = o.save(&mut buf).unwrap();
        let mut back = Box8::load(bytes).unwrap();
        assert_eq!(back, o);
        back.start_epoch(2);
        assert_eq!(
            back.in_flight(),
            Some(f),
            "the batch in flight keeps its old numbers"
        );
        back.ack(f.last());
        let g = back.start_batch(1000, 8).unwrap();
        assert_eq!(g.first, Seq::first_of_epoch(2));
        assert!(Box8::load(&bytes_garbage()).is_err());
        // decodable but inconsistent: a record in flight behind an unsent one
        let mut odd = o.clone();
        odd.entries.swap(0, 3);
        let bytes = odd.save(&mut buf).unwrap();
        assert!(Box8::load(bytes).is_err());
        // extreme counters load and keep working: they saturate
        let mut odd = o.clone();
        odd.stats.queued = u64::MAX;
        let bytes = odd.save(&mut buf).unwrap();
        let mut odd = Box8::load(bytes).unwrap();
        push_n(&mut odd, RecordKind::Summary, 1);
        assert_eq!(odd.stats().queued, u64::MAX);
    }

    fn bytes_garbage() -> [u8; 4] {
        [0xff, 0xff, 0xff, 0xff]
    }

    #[test]
    fn numbering_stops_at_the_end_of_an_epoch() {
        let mut o = Box8::new(Seq(u64::from(u32::MAX) - 2));
        for t in 0..4 {
            push_n(&mut o, RecordKind::Summary, t);
        }
        let f = o.start_batch(1000, 8).unwrap();
        assert_eq!(
            f.count,
            2,
            "numbers {:#x} and {:#x} only",
            f.first.0,
            f.last().0
        );
        o.ack(f.last());
        assert_eq!(
            o.start_batch(1000, 8),
            None,
            "the rest waits for the next epoch"
        );
        o.start_epoch(1);
        assert_eq!(
            o.start_batch(1000, 8).unwrap().first,
            Seq::first_of_epoch(1)
        );
        let mut buf = [0u8; 1024];
        let bytes = o.save(&mut buf).unwrap();
        assert_eq!(Box8::load(bytes).unwrap(), o);
    }

    #[test]
    fn dropping_in_flight_counts() {
        let mut o = Box8::new(Seq(0));
        for t in 0..3 {
            push_n(&mut o, RecordKind::Summary, t);
        }
        o.start_batch(1000, 2).unwrap();
        assert_eq!(o.drop_in_flight(), 2);
        assert_eq!(o.stats().dropped, 2);
        assert_eq!(
            o.start_batch(1000, 8).unwrap().first,
            Seq(2),
            "numbers are never reused"
        );
    }
}
