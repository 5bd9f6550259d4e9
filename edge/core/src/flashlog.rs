//! [`Storage`] over NOR flash as an append-only record log: hardware-independent, so a board
//! only implements the small [`NorFlash`] trait over its flash driver (e.g. two sectors of the
//! STM32F429's internal flash), and the log logic is unit-tested on the host against an
//! in-memory fake that enforces NOR rules (writes only clear bits, erase sets a page to 0xFF) and
//! can tear a write. The fake stands in for the real flash here; the real flash is exercised on
//! the hardware.
//!
//! # Layout
//! Two pages of equal size (each erased as one). A page starts with an 8-byte header
//! `magic u32 LE ("QOSL"), generation u32 LE`; the *active* page is the valid one with the
//! highest generation. Records follow, each aligned to 8 bytes:
//!
//! ```text
//! slot u8, 0x00, len u16 LE, crc32 u32 LE (IEEE, over slot, len and data), data, 0xFF padding
//! ```
//! Erased flash (0xFF) after the last record ends the log.
//!
//! # Rules
//! - Read: the newest record with a valid CRC for the slot wins (the log is scanned in order).
//! - Write: the record is appended to the active page. A write torn by a reset leaves a record
//!   whose CRC does not match: it is skipped by its length (a torn header, with an impossible
//!   length, ends the usable part of the page), and the previous value of the slot stays, which
//!   is what [`Storage::write`] promises.
//! - Full page: compaction copies the newest valid record of every other slot and the new
//!   record into the other page (erased first) and writes that page's header *last*, with the
//!   next generation: until the header is written the old page stays active, so a reset during
//!   compaction loses nothing. The old page is erased at the next compaction.

use crate::storage::{Slot, Storage};

/// Page header magic ("QOSL").
pub const MAGIC: u32 = 0x4C53_4F51;
/// Record and header alignment, bytes (a multiple of the flash's write size).
pub const ALIGN: usize = 8;
/// Record header, bytes.
pub const HEADER: usize = 8;
/// Slots kept (`Slot::Boot`, `Slot::Config`, `Slot::Outbox`).
const SLOTS: u8 = 3;

/// A NOR flash region of two pages, as the log needs it. Offsets are relative to the region.
pub trait NorFlash {
    /// The driver's error.
    type Error: core::fmt::Debug;
    /// Bytes per page (a multiple of [`ALIGN`]); the region holds two.
    fn page_size(&self) -> u32;
    /// Read `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Program `bytes` at `offset` (both aligned to [`ALIGN`]; programming only clears bits).
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error>;
    /// Erase page `page` (0 or 1) to 0xFF.
    fn erase(&mut self, page: u32) -> Result<(), Self::Error>;
}

/// Errors of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum LogError<E> {
    /// The flash driver failed.
    Flash(E),
    /// The value does not fit in a page (with the other slots' values), or in the read buffer.
    TooLarge,
}

/// CRC-32 (IEEE 802.3, reflected), bitwise: small code, and records are few.
pub fn crc32(mut crc: u32, bytes: &[u8]) -> u32 {
    crc = !crc;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn padded(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

fn slot_id(slot: Slot) -> u8 {
    match slot {
        Slot::Boot => 0,
        Slot::Config => 1,
        Slot::Outbox => 2,
    }
}

/// A record found by a scan: where its data is, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    at: u32,
    len: u16,
}

/// The record log over a two-page flash region.
#[derive(Debug)]
pub struct FlashLog<F> {
    flash: F,
    /// Active page and its generation.
    page: u32,
    generation: u32,
    /// Offset (in the active page) where the next record goes; `page_size` when unusable.
    end: u32,
}

impl<F: NorFlash> FlashLog<F> {
    /// Open the log: find the active page (formatting the region if neither page is valid)
    /// and the end of its records.
    pub fn open(mut flash: F) -> Result<Self, LogError<F::Error>> {
        let mut best: Option<(u32, u32)> = None;
        for page in 0..2 {
            let mut h = [0u8; 8];
            flash
                .read(page * flash.page_size(), &mut h)
                .map_err(LogError::Flash)?;
            let (magic, generation) = split(&h);
            if magic == MAGIC && generation != u32::MAX && best.is_none_or(|b| generation > b.1) {
                best = Some((page, generation));
            }
        }
        let mut log = FlashLog {
            flash,
            page: 0,
            generation: 0,
            end: HEADER as u32,
        };
        match best {
            Some((page, generation)) => {
                log.page = page;
                log.generation = generation;
                log.end = log.scan(|_, _, _| {})?;
            }
            None => {
                log.flash.erase(0).map_err(LogError::Flash)?;
                log.write_page_header(0, 1)?;
                log.generation = 1;
            }
        }
        Ok(log)
    }

    /// The flash (for a board's other uses).
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Generation of the active page (grows at each compaction).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn base(&self, page: u32) -> u32 {
        page * self.flash.page_size()
    }

    fn write_page_header(&mut self, page: u32, generation: u32) -> Result<(), LogError<F::Error>> {
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..].copy_from_slice(&generation.to_le_bytes());
        let at = self.base(page);
        self.flash.write(at, &h).map_err(LogError::Flash)
    }

    /// Walk the active page's records in order, calling `each(slot, found, crc_ok)`; returns
    /// where the next record goes.
    fn scan(&mut self, mut each: impl FnMut(u8, Found, bool)) -> Result<u32, LogError<F::Error>> {
        let size = self.flash.page_size();
        let base = self.base(self.page);
        let mut at = HEADER as u32;
        while at + HEADER as u32 <= size {
            let mut h = [0u8; HEADER];
            self.flash
                .read(base + at, &mut h)
                .map_err(LogError::Flash)?;
            if h == [0xFF; HEADER] {
                return Ok(at);
            }
            let (slot, len) = (h[0], u16::from_le_bytes([h[2], h[3]]));
            let next = at + (HEADER + padded(usize::from(len))) as u32;
            if h[1] != 0 || slot >= SLOTS || next > size {
                // A torn header: nothing after it can be trusted or appended to.
                return Ok(size);
            }
            let want = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let mut crc = crc32(0, &[slot, 0, h[2], h[3]]);
            let mut chunk = [0u8; 32];
            let mut pos = 0usize;
            while pos < usize::from(len) {
                let n = (usize::from(len) - pos).min(chunk.len());
                self.flash
                    .read(base + at + (HEADER + pos) as u32, &mut chunk[..n])
                    .map_err(LogError::Flash)?;
                crc = crc32_continue(crc, &chunk[..n]);
                pos += n;
            }
            each(
                slot,
                Found {
                    at: at + HEADER as u32,
                    len,
                },
                crc == want,
            );
            at = next;
        }
        Ok(size)
    }

    fn newest(&mut self, slot: u8) -> Result<Option<Found>, LogError<F::Error>> {
        let mut newest = None;
        self.scan(|s, found, ok| {
            if ok && s == slot {
                newest = Some(found);
            }
        })?;
        Ok(newest)
    }

    /// Append a record to `page` at `at`; returns the offset after it.
    fn append(
        &mut self,
        page: u32,
        at: u32,
        slot: u8,
        bytes: &[u8],
    ) -> Result<u32, LogError<F::Error>> {
        let len = u16::try_from(bytes.len()).map_err(|_| LogError::TooLarge)?;
        let lb = len.to_le_bytes();
        let crc = crc32_continue(crc32(0, &[slot, 0, lb[0], lb[1]]), bytes);
        let mut h = [0u8; HEADER];
        h[0] = slot;
        h[2..4].copy_from_slice(&lb);
        h[4..].copy_from_slice(&crc.to_le_bytes());
        let base = self.base(page) + at;
        self.flash.write(base, &h).map_err(LogError::Flash)?;
        let whole = bytes.len() / ALIGN * ALIGN;
        if whole > 0 {
            self.flash
                .write(base + HEADER as u32, &bytes[..whole])
                .map_err(LogError::Flash)?;
        }
        if whole < bytes.len() {
            let mut tail = [0xFFu8; ALIGN];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.flash
                .write(base + (HEADER + whole) as u32, &tail)
                .map_err(LogError::Flash)?;
        }
        Ok(at + (HEADER + padded(bytes.len())) as u32)
    }

    /// Copy a record's data from the active page to `to` in the other page (in chunks).
    fn copy(
        &mut self,
        other: u32,
        to: u32,
        slot: u8,
        found: Found,
    ) -> Result<u32, LogError<F::Error>> {
        // Header: recompute (same bytes), then the data in aligned chunks.
        let from = self.base(self.page) + found.at - HEADER as u32;
        let mut h = [0u8; HEADER];
        self.flash.read(from, &mut h).map_err(LogError::Flash)?;
        debug_assert_eq!(h[0], slot);
        let dst = self.base(other) + to;
        self.flash.write(dst, &h).map_err(LogError::Flash)?;
        let total = padded(usize::from(found.len));
        let mut chunk = [0u8; 32];
        let mut pos = 0;
        while pos < total {
            let n = (total - pos).min(chunk.len());
            self.flash
                .read(from + (HEADER + pos) as u32, &mut chunk[..n])
                .map_err(LogError::Flash)?;
            self.flash
                .write(dst + (HEADER + pos) as u32, &chunk[..n])
                .map_err(LogError::Flash)?;
            pos += n;
        }
        Ok(to + (HEADER + total) as u32)
    }

    fn compact_with(&mut self, slot: u8, bytes: &[u8]) -> Result<(), LogError<F::Error>> {
        let other = 1 - self.page;
        let size = self.flash.page_size();
        // Room check first: the newest of every other slot plus the new record.
        let mut keep: [Option<Found>; SLOTS as usize] = [None; SLOTS as usize];
        self.scan(|s, found, ok| {
            if ok {
                keep[usize::from(s)] = Some(found);
            }
        })?;
        let mut need = HEADER + HEADER + padded(bytes.len());
        for (s, k) in keep.iter().enumerate() {
            if let (true, Some(f)) = (s != usize::from(slot), k) {
                need += HEADER + padded(usize::from(f.len));
            }
        }
        if need > size as usize {
            return Err(LogError::TooLarge);
        }
        self.flash.erase(other).map_err(LogError::Flash)?;
        let mut at = HEADER as u32;
        for (s, k) in keep.iter().enumerate() {
            if let (true, Some(f)) = (s != usize::from(slot), k) {
                at = self.copy(other, at, s as u8, *f)?;
            }
        }
        at = self.append(other, at, slot, bytes)?;
        // The commit point: the other page becomes the active one.
        let generation = self.generation + 1;
        self.write_page_header(other, generation)?;
        self.page = other;
        self.generation = generation;
        self.end = at;
        Ok(())
    }
}

fn crc32_continue(crc: u32, bytes: &[u8]) -> u32 {
    crc32(crc, bytes)
}

fn split(h: &[u8; 8]) -> (u32, u32) {
    (
        u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
        u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
    )
}

impl<F: NorFlash> Storage for FlashLog<F> {
    type Error = LogError<F::Error>;

    fn read<'b>(&mut self, slot: Slot, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Self::Error> {
        let Some(found) = self.newest(slot_id(slot))? else {
            return Ok(None);
        };
        let out = buf
            .get_mut(..usize::from(found.len))
            .ok_or(LogError::TooLarge)?;
        let at = self.base(self.page) + found.at;
        self.flash.read(at, out).map_err(LogError::Flash)?;
        Ok(Some(out))
    }

    fn write(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), Self::Error> {
        let need = (HEADER + padded(bytes.len())) as u32;
        if self.end + need <= self.flash.page_size() {
            let page = self.page;
            let end = self.end;
            // Past the end whatever happens: a torn record is skipped by the next scan.
            self.end = self.flash.page_size();
            self.end = self.append(page, end, slot_id(slot), bytes)?;
            Ok(())
        } else {
            self.compact_with(slot_id(slot), bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::next_boot;
    use std::vec::Vec;

    /// NOR flash in RAM: programming can only clear bits; an optional budget of bytes after
    /// which a write is torn (partly programmed, then an error: a reset mid-write).
    struct Fake {
        mem: Vec<u8>,
        page: u32,
        budget: Option<usize>,
        erases: u32,
    }

    #[derive(Debug)]
    struct Torn;

    impl Fake {
        fn new(page: u32) -> Self {
            Fake {
                mem: std::vec![0x5A; 2 * page as usize],
                page,
                budget: None,
                erases: 0,
            }
        }
    }

    impl NorFlash for &mut Fake {
        type Error = Torn;
        fn page_size(&self) -> u32 {
            self.page
        }
        fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Torn> {
            let o = offset as usize;
            buf.copy_from_slice(&self.mem[o..o + buf.len()]);
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Torn> {
            assert_eq!(offset as usize % ALIGN, 0, "aligned offset");
            assert_eq!(bytes.len() % ALIGN, 0, "aligned length");
            for (i, &b) in bytes.iter().enumerate() {
                if let Some(left) = self.budget.as_mut() {
                    if *left == 0 {
                        return Err(Torn);
                    }
                    *left -= 1;
                }
                let cell = &mut self.mem[offset as usize + i];
                assert_eq!(*cell & b, b, "NOR: programming cannot set bits");
                *cell &= b;
            }
            Ok(())
        }
        fn erase(&mut self, page: u32) -> Result<(), Torn> {
            if self.budget == Some(0) {
                return Err(Torn);
            }
            self.erases += 1;
            let p = self.page as usize;
            self.mem[page as usize * p..(page as usize + 1) * p].fill(0xFF);
            Ok(())
        }
    }

    fn read(log: &mut FlashLog<&mut Fake>, slot: Slot) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        log.read(slot, &mut buf).unwrap().map(|b| b.to_vec())
    }

    #[test]
    fn newest_wins_and_survives_reopen() {
        let mut fake = Fake::new(1024);
        {
            let mut log = FlashLog::open(&mut fake).unwrap();
            assert_eq!(read(&mut log, Slot::Config), None);
            log.write(Slot::Config, b"first").unwrap();
            log.write(Slot::Boot, &[1, 2, 3]).unwrap();
            log.write(Slot::Config, b"second config").unwrap();
            assert_eq!(read(&mut log, Slot::Config).unwrap(), b"second config");
        }
        let mut log = FlashLog::open(&mut fake).unwrap();
        assert_eq!(read(&mut log, Slot::Config).unwrap(), b"second config");
        assert_eq!(read(&mut log, Slot::Boot).unwrap(), [1, 2, 3]);
        assert_eq!(read(&mut log, Slot::Outbox), None);
    }

    #[test]
    fn boot_epochs_advance_across_reopen_and_compaction() {
        let mut fake = Fake::new(256);
        let mut last = 0;
        for _ in 0..100 {
            let mut log = FlashLog::open(&mut fake).unwrap();
            let b = next_boot(&mut log).unwrap();
            assert_eq!(b.epoch, last + 1);
            last = b.epoch;
        }
        assert!(fake.erases > 5, "compacted many times: {}", fake.erases);
    }

    #[test]
    fn compaction_keeps_every_slot() {
        let mut fake = Fake::new(512);
        let mut log = FlashLog::open(&mut fake).unwrap();
        log.write(Slot::Config, &[7u8; 200]).unwrap();
        for i in 0..50u8 {
            log.write(Slot::Boot, &[i]).unwrap();
        }
        assert!(log.generation() > 1);
        assert_eq!(read(&mut log, Slot::Config).unwrap(), [7u8; 200]);
        assert_eq!(read(&mut log, Slot::Boot).unwrap(), [49]);
        assert!(matches!(
            log.write(Slot::Outbox, &[0u8; 400]),
            Err(LogError::TooLarge)
        ));
        assert_eq!(read(&mut log, Slot::Config).unwrap(), [7u8; 200], "kept");
    }

    #[test]
    fn a_torn_write_keeps_the_old_value_at_every_cut() {
        // Cut the last write after every possible number of bytes, in the append path and in
        // the compaction path: the slot holds the old or the new value, never garbage, and the
        // log stays usable.
        for page in [256u32, 1024] {
            let mut compacting = false;
            for cut in 0..400 {
                let mut fake = Fake::new(page);
                {
                    let mut log = FlashLog::open(&mut fake).unwrap();
                    for i in 0..(page / 40) as u8 {
                        log.write(Slot::Boot, &[i; 20]).unwrap();
                    }
                    log.write(Slot::Config, b"old").unwrap();
                }
                fake.budget = Some(cut);
                let erases = fake.erases;
                {
                    let mut log = FlashLog::open(&mut fake).unwrap();
                    let _ = log.write(Slot::Config, &[9u8; 60]);
                }
                compacting |= fake.erases != erases;
                fake.budget = None;
                {
                    let mut log = FlashLog::open(&mut fake).unwrap();
                    let v = read(&mut log, Slot::Config).unwrap();
                    assert!(
                        v == b"old" || v == [9u8; 60],
                        "page {page} cut {cut}: {v:?}"
                    );
                    assert_eq!(read(&mut log, Slot::Boot).unwrap().len(), 20);
                    log.write(Slot::Config, b"after").unwrap();
                    assert_eq!(read(&mut log, Slot::Config).unwrap(), b"after");
                }
                let mut log = FlashLog::open(&mut fake).unwrap();
                assert_eq!(read(&mut log, Slot::Config).unwrap(), b"after");
            }
            assert_eq!(compacting, page == 256, "page {page}: compaction or append");
        }
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        let split = crc32(crc32(0, b"1234"), b"56789");
        assert_eq!(split, 0xCBF4_3926);
    }
}
