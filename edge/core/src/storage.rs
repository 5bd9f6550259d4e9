//! What an edge persists, behind a small storage trait.
//!
//! A board implements [`Storage`] over its flash (or a file on Linux). Three slots exist: the
//! boot state (epoch and counters, written once per boot), the configuration (the CBOR bytes
//! received from the centre, so a reboot starts with the last good configuration) and the
//! outbox (records across a reboot, where the board has room). Values are encoded with postcard.

use serde::{Deserialize, Serialize};

/// The persistent slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Slot {
    /// [`BootState`].
    Boot,
    /// The configuration, as received (CBOR).
    Config,
    /// The outbox (postcard).
    Outbox,
}

/// Persistent storage of a board.
pub trait Storage {
    /// The board's error.
    type Error: core::fmt::Debug;
    /// Read `slot` into `buf`; `Ok(None)` when it was never written.
    fn read<'b>(&mut self, slot: Slot, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, Self::Error>;
    /// Replace `slot` with `bytes` atomically (the old value stays if this fails).
    fn write(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// The state written once per boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BootState {
    /// Boot epoch: the high half of every sequence number of this boot.
    pub epoch: u32,
}

/// Why the boot state could not be advanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BootError<E> {
    /// The storage failed.
    Storage(E),
    /// The stored bytes do not decode (the slot is then rewritten from epoch 1).
    Corrupt,
    /// The epoch counter is exhausted.
    Exhausted,
}

/// Read the boot state, advance the epoch and write it back before anything is sent, so a
/// reboot never reuses a sequence number. Returns the new state. A corrupt slot is an error:
/// starting again from epoch 1 could reuse numbers the store has seen.
pub fn next_boot<S: Storage>(storage: &mut S) -> Result<BootState, BootError<S::Error>> {
    next_boot_from(storage, 0)
}

/// [`next_boot`], never below `floor`: a board that used to take its epoch from the build time
/// (a Unix time) keeps its numbering growing when it starts persisting the epoch.
pub fn next_boot_from<S: Storage>(
    storage: &mut S,
    floor: u32,
) -> Result<BootState, BootError<S::Error>> {
    let mut buf = [0u8; 16];
    let prev = match storage
        .read(Slot::Boot, &mut buf)
        .map_err(BootError::Storage)?
    {
        None => BootState::default(),
        Some(bytes) => postcard::from_bytes(bytes).map_err(|_| BootError::Corrupt)?,
    };
    let next = BootState {
        epoch: prev
            .epoch
            .checked_add(1)
            .ok_or(BootError::Exhausted)?
            .max(floor),
    };
    let bytes = postcard::to_slice(&next, &mut buf).map_err(|_| BootError::Corrupt)?;
    storage
        .write(Slot::Boot, bytes)
        .map_err(BootError::Storage)?;
    Ok(next)
}

/// A storage in RAM, for tests and the simulator. A board without persistent memory must not
/// use it for the boot state: it would restart at epoch 1 and its records would be taken for
/// duplicates; such a board derives the epoch from a clock instead (see its README).
#[derive(Debug, Default, Clone)]
pub struct RamStorage<const CAP: usize> {
    slots: [heapless::Vec<u8, CAP>; 3],
    written: [bool; 3],
}

impl<const CAP: usize> RamStorage<CAP> {
    /// Empty storage.
    pub fn new() -> Self {
        RamStorage {
            slots: Default::default(),
            written: [false; 3],
        }
    }
}

fn index(slot: Slot) -> usize {
    match slot {
        Slot::Boot => 0,
        Slot::Config => 1,
        Slot::Outbox => 2,
    }
}

/// Errors of [`RamStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RamError {
    /// Value larger than the slot.
    TooLarge,
}

impl<const CAP: usize> Storage for RamStorage<CAP> {
    type Error = RamError;
    fn read<'b>(&mut self, slot: Slot, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, RamError> {
        let i = index(slot);
        if !self.written[i] {
            return Ok(None);
        }
        let v = &self.slots[i];
        let out = buf.get_mut(..v.len()).ok_or(RamError::TooLarge)?;
        out.copy_from_slice(v);
        Ok(Some(out))
    }
    fn write(&mut self, slot: Slot, bytes: &[u8]) -> Result<(), RamError> {
        let i = index(slot);
        let mut v = heapless::Vec::new();
        v.extend_from_slice(bytes).map_err(|_| RamError::TooLarge)?;
        self.slots[i] = v;
        self.written[i] = true;
        Ok(())
    }
}
