//! Identities and sequence numbers.

/// An edge (sub-manager). Numeric on the hot path; its name travels in the registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EdgeId(pub u32);

/// A region (RFC 9176 sector `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RegionId(pub u16);

/// A probe, unique within one edge's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProbeId(pub u16);

/// A per-edge sequence number of an uplink record.
///
/// The high 32 bits are the edge's boot epoch (persisted and incremented at every start), the
/// low 32 bits a counter from zero within that boot. Numbers therefore increase monotonically
/// across reboots while the edge persists only one counter per boot. A jump to a new epoch is
/// not a gap; a jump of the counter within an epoch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Seq(pub u64);

impl Seq {
    /// The first number of boot `epoch`.
    pub const fn first_of_epoch(epoch: u32) -> Seq {
        Seq((epoch as u64) << 32)
    }
    /// The boot epoch.
    pub const fn epoch(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The counter within the epoch.
    pub const fn counter(self) -> u32 {
        self.0 as u32
    }
    /// The next number (saturates at the end of an epoch's range, which at one record per
    /// second takes 136 years).
    pub const fn next(self) -> Seq {
        if self.counter() == u32::MAX {
            self
        } else {
            Seq(self.0 + 1)
        }
    }
    /// Number of records missing between `self` (last seen) and `next` (just received):
    /// zero for the next number, for a new epoch, or for anything not after `self`.
    pub const fn gap_to(self, next: Seq) -> u64 {
        if next.epoch() != self.epoch() || next.0 <= self.0 {
            0
        } else {
            next.0 - self.0 - 1
        }
    }
}
