//! QoS edge sub-manager firmware for QEMU's mps2-an386 (Cortex-M4F, LAN9118 Ethernet).
//!
//! `main` starts the SysTick time driver and hands over to [`app`]. Logging is defmt over
//! semihosting (decode with `defmt-print -e FIRMWARE`); the run ends with a semihosting exit, so
//! QEMU's exit status is the firmware's verdict.
#![no_std]
#![no_main]

mod app;
mod config;
mod lan9118;
mod time_driver;

use defmt_semihosting as _;
use embassy_executor::Spawner;

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = cortex_m::Peripherals::take().unwrap();
    time_driver::init(p.SYST);
    app::start(spawner).await;
}

/// End the QEMU run with `code` (0: success).
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

#[cortex_m_rt::exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == lan9118::IRQ as i16 {
        lan9118::on_interrupt();
    } else {
        defmt::error!("unexpected exception or interrupt {=i16}", irqn);
        exit(1);
    }
}

#[cortex_m_rt::exception]
unsafe fn HardFault(ef: &cortex_m_rt::ExceptionFrame) -> ! {
    defmt::error!("hard fault at pc {=u32:#x}", ef.pc());
    exit(1)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(l) => defmt::error!("panic at {=str}:{=u32}", l.file(), l.line()),
        None => defmt::error!("panic"),
    }
    exit(1)
}

#[defmt::panic_handler]
fn defmt_panic() -> ! {
    exit(1)
}
