//! QoS edge sub-manager firmware for the ST Nucleo-F429ZI (STM32F429ZI, LAN8742A PHY on RMII).
//!
//! Board bring-up only: clocks (168 MHz from the ST-LINK's 8 MHz), the RNG (seed), Ethernet
//! through embassy-stm32 with the Nucleo's RMII pin map, embassy-net with DHCP; then the edge
//! application of `qos-edge-embassy` runs for ever. LEDs: blue (LD2, PB7) toggles at every
//! good probe result, red (LD3, PB14) is on while the threshold rule is raised. Logging is
//! defmt over RTT (`probe-rs run` prints it).
//!
//! Persistence: the last two flash sectors hold the core's record log ([`flash`]): the boot
//! epoch advances at every boot before anything is sent (never below the build time, so a
//! board flashed before it persisted its epoch keeps its numbering growing), and a central
//! configuration applied at run time is used from the next boot on.
#![no_std]
#![no_main]

mod config;
mod flash;

use defmt::{error, info, warn};
use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::rng::Rng;
use embassy_stm32::time::Hertz;
use embassy_stm32::{bind_interrupts, eth, peripherals, rng, Config};
use qos_edge_embassy::flashlog::FlashLog;
use qos_edge_embassy::storage::next_boot_from;
use qos_edge_embassy::Hooks;
use qos_wire::event::Event;
use qos_wire::outcome::ProbeResult;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    HASH_RNG => rng::InterruptHandler<peripherals::RNG>;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// The local actions: LEDs.
struct Leds {
    alive: Output<'static>,
    alarm: Output<'static>,
}

impl Hooks for Leds {
    fn on_event(&mut self, event: &Event) {
        warn!("threshold {=bool}: {}", event.raised, event);
        if event.raised {
            self.alarm.set_high();
        } else {
            self.alarm.set_low();
        }
    }

    fn on_result(&mut self, result: &ProbeResult) {
        if result.ok() {
            self.alive.toggle();
        } else {
            self.alive.set_low();
        }
    }
}

fn clocks() -> Config {
    use embassy_stm32::rcc::*;
    let mut config = embassy_stm32::Config::default();
    // 8 MHz from the ST-LINK's MCO (HSE bypass); PLL: 8 / 4 * 168 / 2 = 168 MHz, Q = 48 MHz
    // (RNG). Ethernet needs HCLK of at least 25 MHz.
    config.rcc.hse = Some(Hse {
        freq: Hertz(8_000_000),
        mode: HseMode::Bypass,
    });
    config.rcc.pll_src = PllSource::HSE;
    config.rcc.pll = Some(Pll {
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL168,
        divp: Some(PllPDiv::DIV2),
        divq: Some(PllQDiv::DIV7),
        divr: None,
    });
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV4;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.sys = Sysclk::PLL1_P;
    config
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(clocks());
    let mut leds = Leds {
        alive: Output::new(p.PB7, Level::Low, Speed::Low),
        alarm: Output::new(p.PB14, Level::Low, Speed::Low),
    };
    let mut storage = match FlashLog::open(flash::Sectors(
        embassy_stm32::flash::Flash::new_blocking(p.FLASH),
    )) {
        Ok(s) => s,
        Err(e) => {
            error!("flash storage unusable: {}", e);
            loop {
                embassy_time::Timer::after_secs(3600).await;
            }
        }
    };
    // Before anything is sent: a reboot never reuses a sequence number.
    let epoch = match next_boot_from(&mut storage, config::EPOCH) {
        Ok(b) => b.epoch,
        Err(e) => {
            error!("boot epoch not advanced: {}", e);
            loop {
                embassy_time::Timer::after_secs(3600).await;
            }
        }
    };
    let mut rng = Rng::new(p.RNG, Irqs);
    let seed = rng.next_u64();
    // Locally administered unicast address, fixed per edge id (stable DHCP leases).
    let id = config::EDGE_ID.to_be_bytes();
    let mac = [0x02, 0x51, id[0], id[1], id[2], id[3]];
    info!(
        "qos edge {=u32} on nucleo-f429zi, mac {=[u8]:02x}",
        config::EDGE_ID,
        mac
    );

    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::<4, 4>::new()),
        p.ETH,
        Irqs,
        p.PA1,  // REF_CLK
        p.PA7,  // CRS_DV
        p.PC4,  // RXD0
        p.PC5,  // RXD1
        p.PG13, // TXD0
        p.PB13, // TXD1
        p.PG11, // TX_EN
        mac,
        p.ETH_SMA,
        p.PA2, // MDIO
        p.PC1, // MDC
    );
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(net_task(runner).unwrap());
    info!("waiting for the link and a DHCP lease");
    stack.wait_config_up().await;
    if let Some(c) = stack.config_v4() {
        info!("dhcp: address {}, gateway {}", c.address, c.gateway);
    }
    // Without an end in the settings, run() only returns if it cannot start.
    let mut settings = config::settings(seed);
    settings.epoch = epoch;
    info!("boot epoch {=u32}", epoch);
    if let Err(e) =
        qos_edge_embassy::run_with_storage(stack, &settings, &mut leds, &mut storage).await
    {
        error!("edge did not start: {}", e);
    }
    leds.alarm.set_high();
    loop {
        embassy_time::Timer::after_secs(3600).await;
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Device>) -> ! {
    runner.run().await
}
