//! The uplink: batches of records from an edge, and the cumulative acknowledgement.
//!
//! An edge sends a batch as the payload of a CON `POST /u` (Content-Format 60) to its broker or
//! to the super-manager. The records of a batch carry consecutive sequence numbers starting at
//! `first_seq`; the edge assigns them when a record is first sent, so events that jump the
//! queue still go out in sequence order. The answer (2.04 Changed) carries an [`Ack`]: every
//! record of this edge up to and including `acked` is stored, and the edge may forget it.
//!
//! `dropped` is the edge's cumulative count of records it had to drop (outbox full, oldest
//! first): loss is visible end to end.
//!
//! ```text
//! batch  = [v: 1, edge: uint, first_seq: uint, dropped: uint, records: [+ record]]
//! record = [kind: uint, body]      ; body = summary / event / probe-result / metrics
//! ack    = [v: 1, acked: uint]
//! ```

use minicbor::decode::Decoder;

use crate::codec::{self, SliceEncoder, WireError};
use crate::ids::{EdgeId, Seq};

/// URI path of the uplink resource.
pub const UPLINK_PATH: &str = "u";
/// Most records in one batch.
pub const MAX_RECORDS: u16 = 64;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
#[non_exhaustive]
pub enum RecordKind {
    /// A window [`Summary`](crate::summary::Summary).
    Summary = 0,
    /// A threshold crossing [`Event`](crate::event::Event).
    Event = 1,
    /// One raw [`ProbeResult`](crate::outcome::ProbeResult).
    Result = 2,
    /// Host metrics of the edge's machine, a [`MetricsSample`](crate::metrics::MetricsSample).
    Metrics = 3,
}

impl RecordKind {
    /// The kind with wire value `v`.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(RecordKind::Summary),
            1 => Some(RecordKind::Event),
            2 => Some(RecordKind::Result),
            3 => Some(RecordKind::Metrics),
            _ => None,
        }
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Summary => "summary",
            RecordKind::Event => "event",
            RecordKind::Result => "result",
            RecordKind::Metrics => "metrics",
        }
    }
}

/// Write a record `[kind, body]` where `body` writes the body.
pub fn encode_record(
    e: &mut SliceEncoder<'_>,
    kind: RecordKind,
    body: impl FnOnce(&mut SliceEncoder<'_>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    e.array(2)?.u8(kind as u8)?;
    body(e)
}

/// Write the head of a batch; exactly `count` encoded records must follow.
pub fn encode_batch_head(
    e: &mut SliceEncoder<'_>,
    edge: EdgeId,
    first_seq: Seq,
    dropped: u64,
    count: u16,
) -> Result<(), WireError> {
    e.array(5)?
        .u8(codec::VERSION)?
        .u32(edge.0)?
        .u64(first_seq.0)?
        .u64(dropped)?;
    e.array(u64::from(count))?;
    Ok(())
}

/// One record of a received batch, body not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its sequence number.
    pub seq: Seq,
    /// What it holds.
    pub kind: RecordKind,
    /// The encoded record (`[kind, body]`), as received.
    pub raw: &'a [u8],
    /// The encoded body alone.
    pub body: &'a [u8],
}

/// A received batch, structurally validated (zero-copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// The sending edge.
    pub edge: EdgeId,
    /// Sequence number of the first record.
    pub first_seq: Seq,
    /// The edge's cumulative count of dropped records.
    pub dropped: u64,
    count: u16,
    records: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Decode and check a batch: version, header, record kinds and that every body is one
    /// well-formed CBOR item, sequence numbers not overflowing the epoch. Bodies are decoded by
    /// the consumer ([`RecordRef::body`]).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut d = Decoder::new(bytes);
        codec::array(&mut d, 5, 5)?;
        codec::version(&mut d)?;
        let edge = EdgeId(d.u32()?);
        let first_seq = Seq(d.u64()?);
        let dropped = d.u64()?;
        let n = codec::array(&mut d, 1, u64::from(MAX_RECORDS))?;
        if u64::from(first_seq.counter()) + n - 1 > u64::from(u32::MAX) {
            return Err(WireError::Invalid("sequence number overflows its epoch"));
        }
        let start = d.position();
        for _ in 0..n {
            record(&mut d)?;
        }
        let records = d
            .input()
            .get(start..d.position())
            .ok_or(WireError::Malformed)?;
        codec::finish(&d)?;
        Ok(Batch {
            edge,
            first_seq,
            dropped,
            count: n as u16,
            records,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there is no record (never true for a decoded batch).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sequence number of the last record.
    pub fn last_seq(&self) -> Seq {
        Seq(self.first_seq.0 + (u64::from(self.count) - 1))
    }

    /// The records with their sequence numbers.
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'a>> + 'a {
        let mut d = Decoder::new(self.records);
        let first = self.first_seq.0;
        (0..u64::from(self.count)).map_while(move |i| {
            let (kind, raw, body) = record(&mut d).ok()?;
            Some(RecordRef {
                seq: Seq(first + i),
                kind,
                raw,
                body,
            })
        })
    }
}

fn record<'a>(d: &mut Decoder<'a>) -> Result<(RecordKind, &'a [u8], &'a [u8]), WireError> {
    let start = d.position();
    codec::array(d, 2, 2)?;
    let kind = RecordKind::from_u8(d.u8()?).ok_or(WireError::Invalid("record kind"))?;
    let body = codec::raw_item(d)?;
    let raw = d
        .input()
        .get(start..d.position())
        .ok_or(WireError::Malformed)?;
    Ok((kind, raw, body))
}

/// The cumulative acknowledgement in the answer to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack {
    /// Every record up to and including this sequence number is stored.
    pub acked: Seq,
}

impl Ack {
    /// Encode as CDDL `ack`.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        codec::encode_into(buf, |e| {
            e.array(2)?.u8(codec::VERSION)?.u64(self.acked.0)?;
            Ok(())
        })
    }

    /// Decode CDDL `ack`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut d = Decoder::new(bytes);
        codec::array(&mut d, 2, 2)?;
        codec::version(&mut d)?;
        let acked = Seq(d.u64()?);
        codec::finish(&d)?;
        Ok(Ack { acked })
    }
}
