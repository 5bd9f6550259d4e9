//! A small driver for the SMSC LAN9118 Ethernet controller (as QEMU's mps2-an385/an386 model it
//! at `0x4020_0000`, interrupt line 13), implementing `embassy-net-driver`.
//!
//! Programmed I/O: frames are copied word by word through the RX/TX data FIFOs. Reception is
//! interrupt driven: the "RX status FIFO level" interrupt (RSFL) is enabled only while the
//! network stack waits for a frame; the interrupt handler masks it again and wakes the stack.
//! The controller's interrupt output is configured active-high push-pull, which is what the
//! NVIC of the FPGA image (and QEMU) expects.

use core::ptr::{read_volatile, write_volatile};
use core::task::Context;

use cortex_m::peripheral::NVIC;
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

/// Base address of the controller on mps2-an385/an386.
pub const BASE: usize = 0x4020_0000;
/// Its interrupt number (IRQ 13 of the NVIC).
pub const IRQ: u16 = 13;

const RX_DATA: usize = 0x00;
const TX_DATA: usize = 0x20;
const RX_STATUS: usize = 0x40;
const TX_STATUS: usize = 0x48;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

const MAC_CR: u8 = 1;
const MAC_ADDRH: u8 = 2;
const MAC_ADDRL: u8 = 3;
const MAC_MII_ACC: u8 = 6;
const MAC_MII_DATA: u8 = 7;

const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;
const IRQ_EN: u32 = 1 << 8;
const IRQ_POL_HIGH: u32 = 1 << 4;
const IRQ_PUSH_PULL: u32 = 1 << 0;
const INT_RSFL: u32 = 1 << 3;
const TX_ON: u32 = 1 << 1;
const CSR_BUSY: u32 = 1 << 31;
const CSR_READ: u32 = 1 << 30;

/// Largest Ethernet frame handled (without FCS).
pub const FRAME: usize = 1514;

static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// Why the controller could not be brought up.
#[derive(Debug, Clone, Copy, defmt::Format)]
pub enum InitError {
    /// BYTE_TEST did not read 0x87654321: nothing (or a big-endian bus) at the address.
    NoDevice(u32),
    /// The soft reset did not complete.
    ResetTimeout,
}

fn rd(off: usize) -> u32 {
    // SAFETY: the controller's register window; reads have side effects only on FIFOs, which
    // the driver owns.
    unsafe { read_volatile((BASE + off) as *const u32) }
}

fn wr(off: usize, v: u32) {
    // SAFETY: as `rd`.
    unsafe { write_volatile((BASE + off) as *mut u32, v) }
}

fn mac_read(reg: u8) -> u32 {
    wr(MAC_CSR_CMD, CSR_BUSY | CSR_READ | u32::from(reg));
    while rd(MAC_CSR_CMD) & CSR_BUSY != 0 {}
    rd(MAC_CSR_DATA)
}

fn mac_write(reg: u8, v: u32) {
    wr(MAC_CSR_DATA, v);
    wr(MAC_CSR_CMD, CSR_BUSY | u32::from(reg));
    while rd(MAC_CSR_CMD) & CSR_BUSY != 0 {}
}

fn phy_read(reg: u8) -> u16 {
    // PHY address 1, read.
    mac_write(MAC_MII_ACC, (1 << 11) | (u32::from(reg) << 6) | 1);
    while mac_read(MAC_MII_ACC) & 1 != 0 {}
    mac_read(MAC_MII_DATA) as u16
}

/// The controller, with one frame buffer each way.
pub struct Lan9118 {
    mac: [u8; 6],
    rx: [u8; FRAME + 4],
    tx: [u8; FRAME],
}

impl Lan9118 {
    /// Reset and configure the controller; the MAC address is the one QEMU loaded (EEPROM).
    pub fn new() -> Result<Self, InitError> {
        let test = rd(BYTE_TEST);
        if test != 0x8765_4321 {
            return Err(InitError::NoDevice(test));
        }
        wr(HW_CFG, 1); // SRST
        let mut n = 0u32;
        while rd(HW_CFG) & 1 != 0 || rd(PMT_CTRL) & 1 == 0 {
            n += 1;
            if n > 1_000_000 {
                return Err(InitError::ResetTimeout);
            }
        }
        let lo = mac_read(MAC_ADDRL).to_le_bytes();
        let hi = mac_read(MAC_ADDRH).to_le_bytes();
        let mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        defmt::info!("lan9118 id {=u32:#x}, mac {=[u8]:02x}", rd(ID_REV), mac);
        // Exact unicast and broadcast filtering (clears the reset default, promiscuous).
        mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN);
        wr(TX_CFG, TX_ON);
        wr(INT_STS, u32::MAX);
        wr(INT_EN, 0);
        wr(IRQ_CFG, IRQ_EN | IRQ_POL_HIGH | IRQ_PUSH_PULL);
        // SAFETY: the handler below only masks the controller's interrupt and wakes a waker.
        unsafe { NVIC::unmask(Irq) };
        Ok(Lan9118 {
            mac,
            rx: [0; FRAME + 4],
            tx: [0; FRAME],
        })
    }

    fn rx_pending() -> bool {
        (rd(RX_FIFO_INF) >> 16) & 0xff != 0
    }

    /// Pop one frame into `self.rx`; its length without FCS, or `None` if it was bad.
    fn pop_frame(&mut self) -> Option<usize> {
        let status = rd(RX_STATUS);
        let len = ((status >> 16) & 0x3fff) as usize; // with the 4-byte FCS
        let words = len.div_ceil(4);
        let good = status & (1 << 15) == 0 && (4..=self.rx.len()).contains(&len);
        for i in 0..words {
            let w = rd(RX_DATA);
            if good {
                let b = w.to_le_bytes();
                let at = i * 4;
                let n = (len - at).min(4);
                self.rx[at..at + n].copy_from_slice(&b[..n]);
            }
        }
        good.then_some(len - 4)
    }

    fn push_frame(frame: &[u8]) {
        // Drain the TX status FIFO (one word per sent frame) so it never fills.
        while (rd(TX_FIFO_INF) >> 16) & 0xff != 0 {
            let _ = rd(TX_STATUS);
        }
        let len = frame.len() as u32;
        // Command A: first and last segment, buffer size; command B: tag = length, length.
        wr(TX_DATA, (1 << 13) | (1 << 12) | len);
        wr(TX_DATA, (len << 16) | len);
        for chunk in frame.chunks(4) {
            let mut b = [0u8; 4];
            b[..chunk.len()].copy_from_slice(chunk);
            wr(TX_DATA, u32::from_le_bytes(b));
        }
    }
}

/// The interrupt line of the controller, for the NVIC.
#[derive(Clone, Copy)]
struct Irq;

// SAFETY: 13 is the controller's line on mps2-an385/an386.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        IRQ
    }
}

/// Called from the interrupt vector of line [`IRQ`]: mask the (level) interrupt and wake the stack.
pub fn on_interrupt() {
    wr(INT_EN, 0);
    RX_WAKER.wake();
}

/// A received frame.
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for a frame to send.
pub struct TxToken<'a> {
    buf: &'a mut [u8; FRAME],
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(FRAME);
        let r = f(&mut self.buf[..len]);
        Lan9118::push_frame(&self.buf[..len]);
        r
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(RxToken<'_>, TxToken<'_>)> {
        loop {
            wr(INT_STS, INT_RSFL);
            if !Self::rx_pending() {
                RX_WAKER.register(cx.waker());
                // Level interrupt: a frame that arrived since the check raises it at once.
                wr(INT_EN, INT_RSFL);
                return None;
            }
            if let Some(len) = self.pop_frame() {
                return Some((
                    RxToken {
                        frame: &mut self.rx[..len],
                    },
                    TxToken { buf: &mut self.tx },
                ));
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<TxToken<'_>> {
        // Room for a whole frame and its two command words in the TX data FIFO (QEMU sends a
        // frame as soon as its last word is written, so this only waits on real hardware,
        // where it polls: the TX interrupts are not used).
        if (rd(TX_FIFO_INF) & 0xffff) < (FRAME + 8) as u32 {
            cx.waker().wake_by_ref();
            return None;
        }
        Some(TxToken { buf: &mut self.tx })
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        // Basic status register, bit 2: link up (QEMU's user network is always up).
        if phy_read(1) & (1 << 2) != 0 {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = FRAME;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
