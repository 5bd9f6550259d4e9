//! The no_std QoS edge (`qos-edge-embassy`) as a host process: embassy's std platform
//! (`embassy-executor` `platform-std`, embassy-time's std driver), its network an
//! `embassy-net-driver-channel` device bridged to host UDP sockets on 127.0.0.1 ([`bridge`]).
//!
//! Settings from the environment (all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `QOS_EDGE_ID` | 201 | edge id |
//! | `QOS_COAP_PORT` | 5683 | the super-manager's CoAP port on 127.0.0.1 |
//! | `QOS_PROBE_PORT` | `QOS_COAP_PORT` | UDP port on 127.0.0.1 of the CoAP ping probe |
//! | `QOS_RUN_SECS` | 0 | stop after this long (0: never) |
//! | `QOS_ACK_TARGET` | 0 | stop once this many records are acknowledged (0: never) |
//! | `QOS_EPOCH` | now (Unix s) | boot epoch |
//! | `QOS_LOG` | `info` | log level (`error` … `trace`) |
//!
//! The exit status is 0 if at least one record was acknowledged, 1 otherwise.

mod bridge;

use std::time::{SystemTime, UNIX_EPOCH};

use embassy_executor::Spawner;
use embassy_net::{IpEndpoint, Ipv4Cidr, Runner, StackResources, StaticConfigV4};
use embassy_net_driver_channel as ch;
use embassy_net_driver_channel::driver::HardwareAddress;
use embassy_time::Instant;
use qos_edge_embassy::{Hooks, ProbeTarget, Settings};
use qos_wire::event::Event;
use static_cell::StaticCell;

type Device = ch::Device<'static, { bridge::MTU }>;

/// The local action of a threshold crossing: a log line.
struct LogHooks;

impl Hooks for LogHooks {
    fn on_event(&mut self, event: &Event) {
        log::warn!(
            "threshold {}: {event:?}",
            if event.raised { "raised" } else { "cleared" }
        );
    }
}

fn env_u32(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}: a number expected, got {v:?}");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let t = Instant::now().as_micros();
            eprintln!(
                "{:>6}.{:06} {:<5} {}",
                t / 1_000_000,
                t % 1_000_000,
                r.level(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn settings() -> Settings {
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let host = bridge::HOST.into();
    let coap_port = env_u32("QOS_COAP_PORT", 5683) as u16;
    let probe_port = env_u32("QOS_PROBE_PORT", u32::from(coap_port)) as u16;
    let mut s = Settings::new(
        env_u32("QOS_EDGE_ID", 201),
        env_u32("QOS_EPOCH", unix_now.as_secs() as u32),
        // Unix time at embassy-time's zero (the std driver starts it with the process).
        (unix_now.as_millis() as u64).saturating_sub(Instant::now().as_millis()),
        IpEndpoint::new(host, coap_port),
        ProbeTarget::CoapPing(IpEndpoint::new(host, probe_port)),
    );
    s.seed ^= u64::from(unix_now.subsec_nanos()) ^ u64::from(std::process::id());
    s.run_for_ms = match env_u32("QOS_RUN_SECS", 0) {
        0 => None,
        n => Some(u64::from(n) * 1_000),
    };
    s.ack_target = match env_u32("QOS_ACK_TARGET", 0) {
        0 => None,
        n => Some(u64::from(n)),
    };
    s
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let level = std::env::var("QOS_LOG").ok().and_then(|l| l.parse().ok());
    log::set_logger(&StderrLog).expect("one logger");
    log::set_max_level(level.unwrap_or(log::LevelFilter::Info));

    let settings = settings();
    static STATE: StaticCell<ch::State<{ bridge::MTU }, 4, 4>> = StaticCell::new();
    let (bridge_runner, device) = ch::new(STATE.init(ch::State::new()), HardwareAddress::Ip);
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(bridge::GUEST, 24),
        gateway: Some(bridge::HOST),
        dns_servers: Default::default(),
    });
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        config,
        RESOURCES.init(StackResources::new()),
        settings.seed,
    );
    spawner.spawn(bridge_task(bridge_runner).unwrap());
    spawner.spawn(net_task(runner).unwrap());
    stack.wait_config_up().await;
    log::info!(
        "host-sim: {} bridged to 127.0.0.1 (as {})",
        bridge::GUEST,
        bridge::HOST
    );
    let code = match qos_edge_embassy::run(stack, &settings, &mut LogHooks).await {
        Ok(report) => {
            log::info!("report: {report:?}");
            i32::from(!report.delivered())
        }
        Err(e) => {
            log::error!("edge did not start: {e:?}");
            1
        }
    };
    std::process::exit(code)
}

#[embassy_executor::task]
async fn bridge_task(runner: ch::Runner<'static, { bridge::MTU }>) -> ! {
    bridge::run(runner).await
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Device>) -> ! {
    runner.run().await
}
