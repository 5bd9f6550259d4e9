//! Persistent storage on the STM32F429ZI's internal flash: the last two 128 KiB sectors (22 and
//! 23, at 0x081C_0000 and 0x081E_0000, far above the firmware) hold the core's record log
//! (`qos_edge_core::flashlog`: CRC, newest wins, compaction that survives a reset). This file
//! only maps the log's two pages onto the sectors with embassy-stm32's blocking flash API; the
//! log itself is tested on the host.

use embassy_stm32::flash::{Blocking, Error, Flash};
use qos_edge_embassy::flashlog::NorFlash;

/// Offset of sector 22 from the start of flash.
const REGION: u32 = 0x1C_0000;
/// Bytes of each sector (one page of the log).
const SECTOR: u32 = 128 * 1024;

/// The two sectors as the log's pages.
pub struct Sectors<'d>(pub Flash<'d, Blocking>);

impl NorFlash for Sectors<'_> {
    type Error = Error;
    fn page_size(&self) -> u32 {
        SECTOR
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Error> {
        self.0.blocking_read(REGION + offset, buf)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Error> {
        self.0.blocking_write(REGION + offset, bytes)
    }
    fn erase(&mut self, page: u32) -> Result<(), Error> {
        let from = REGION + page * SECTOR;
        self.0.blocking_erase(from, from + SECTOR)
    }
}
