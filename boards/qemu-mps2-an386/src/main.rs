//! QoS edge sub-manager firmware for QEMU's mps2-an386 (Cortex-M4F, LAN9118 Ethernet).
//!
//! Board bring-up only: the SysTick time driver, the LAN9118, the embassy-net stack (the fixed
//! address QEMU's user network gives, 10.0.2.15/24 via 10.0.2.2; DHCP with feature `dhcp`);
//! then the edge application of `qos-edge-embassy` runs until its settings end it, and the
//! firmware exits QEMU with its verdict. Logging is defmt over semihosting (decode with
//! `defmt-print -e FIRMWARE`); the semihosting exit makes QEMU's exit status the firmware's.
#![no_std]
#![no_main]

mod config;
mod lan9118;
mod time_driver;

use defmt_semihosting as _;
use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_time::{with_timeout, Duration, Instant};
use qos_edge_embassy::Hooks;
use qos_wire::event::Event;
use static_cell::StaticCell;

use crate::lan9118::Lan9118;

/// The local action of a threshold crossing: a log line (QEMU has no LED).
struct LogHooks;

impl Hooks for LogHooks {
    fn on_event(&mut self, event: &Event) {
        defmt::warn!("threshold {=bool}: {}", event.raised, event);
    }
}

/// The network configuration: DHCP with feature `dhcp`, else the address QEMU's user network
/// always assigns to its first guest (saves the DHCP client's flash).
fn net_config() -> embassy_net::Config {
    #[cfg(feature = "dhcp")]
    {
        embassy_net::Config::dhcpv4(Default::default())
    }
    #[cfg(not(feature = "dhcp"))]
    {
        use embassy_net::{Ipv4Address, Ipv4Cidr, StaticConfigV4};
        embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
            gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
            dns_servers: Default::default(),
        })
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = cortex_m::Peripherals::take().unwrap();
    time_driver::init(p.SYST);
    let eth = match Lan9118::new() {
        Ok(eth) => eth,
        Err(e) => {
            defmt::error!("no Ethernet: {}", e);
            exit(1)
        }
    };
    let seed =
        (u64::from(config::EDGE_ID) << 32) ^ u64::from(config::EPOCH) ^ Instant::now().as_ticks();
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        eth,
        net_config(),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(net_task(runner).unwrap());
    if with_timeout(Duration::from_secs(10), stack.wait_config_up())
        .await
        .is_err()
    {
        defmt::error!("no IPv4 configuration within 10 s");
        exit(1);
    }
    if let Some(c) = stack.config_v4() {
        defmt::info!("ipv4: address {}, gateway {}", c.address, c.gateway);
    }
    match qos_edge_embassy::run(stack, &config::settings(seed), &mut LogHooks).await {
        Ok(report) => exit(if report.delivered() { 0 } else { 1 }),
        Err(e) => {
            defmt::error!("edge did not start: {}", e);
            exit(1)
        }
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
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
