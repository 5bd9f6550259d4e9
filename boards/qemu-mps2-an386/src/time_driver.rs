//! embassy-time driver on SysTick: a 1 kHz interrupt counts milliseconds and fires alarms; the
//! counter's current value adds the microseconds, so `now()` has µs resolution
//! (`tick-hz-1_000_000`) while alarms have 1 ms granularity.
//!
//! SysTick runs from the processor clock, 25 MHz on QEMU's mps2-an386 ([`CPU_HZ`]).

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Processor clock of the mps2-an386 FPGA image (and of QEMU's model of it).
pub const CPU_HZ: u32 = 25_000_000;
const TICKS_PER_US: u32 = CPU_HZ / 1_000_000;
const RELOAD: u32 = CPU_HZ / 1_000 - 1;

struct SysTickDriver {
    /// Milliseconds since `init`.
    ms: Mutex<Cell<u64>>,
    /// Earliest alarm, in µs.
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ms: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

/// Start SysTick at 1 kHz.
pub fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| {
            let ms = self.ms.borrow(cs).get();
            let val = SYST::get_current();
            // A wrap whose interrupt is still pending (we run with interrupts masked here):
            // the counter restarted from RELOAD, so a high value belongs to the next millisecond.
            let wrapped = SCB::is_pendst_pending() && val > RELOAD / 2;
            let us_in_ms = u64::from((RELOAD - val) / TICKS_PER_US);
            (ms + u64::from(wrapped)) * 1_000 + us_in_ms
        })
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            if self.queue.borrow_ref_mut(cs).schedule_wake(at, waker) {
                let next = self.queue.borrow_ref_mut(cs).next_expiration(self.now());
                self.alarm.borrow(cs).set(next);
            }
        })
    }
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ms = DRIVER.ms.borrow(cs);
        ms.set(ms.get() + 1);
        let now = ms.get() * 1_000;
        if now >= DRIVER.alarm.borrow(cs).get() {
            let next = DRIVER.queue.borrow_ref_mut(cs).next_expiration(now);
            DRIVER.alarm.borrow(cs).set(next);
        }
    });
}
