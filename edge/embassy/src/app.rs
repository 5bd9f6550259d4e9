//! The edge application: the probe loop (scheduler, probe, local thresholds, summariser) and
//! the uplink loop (the sans-IO `Uplink` over an embassy-net UDP socket), joined in one future.
//! Closed windows and threshold events go from the first to the second through a small channel.
//!
//! The uplink loop also holds the control conversation with the broker
//! (`qos_edge_core::centre`): registration (`Settings::name`, `region`, `lifetime_s`), the
//! configuration poll (`Settings::config_poll_s`) and reports. A board runs one probe of the
//! kind it was built with (TCP connect or CoAP ping), so a central configuration is accepted
//! when it has at most one probe of that kind with an `a.b.c.d:port` target and at most one
//! rule; it may change the probe's id, target, interval and timeout, the window and the rule.
//! It goes to the probe loop between two runs: the open window is flushed (closed early and
//! queued), the summariser starts over with the new window, the scheduler and the rule are
//! replaced. [`run_with_storage`] persists it in [`Slot::Config`] and starts with it at the
//! next boot; [`run`] keeps it in RAM only.

use embassy_futures::select::{select, select3, Either, Either3};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::channel::Channel;
use embassy_sync::signal::Signal;
use embassy_time::{Duration, Instant, Timer};
use qos_coap::Code;
use qos_edge_core::centre::{self, Centre, CentreConfig, CentreEvent, Identity, Limits};
use qos_edge_core::scheduler::{Cadence, Scheduler};
use qos_edge_core::storage::{Slot, Storage};
use qos_edge_core::thresholds::Thresholds;
use qos_edge_core::uplink::MSG;
use qos_edge_core::{Outbox, Received, Summariser, Uplink, UplinkConfig};
use qos_wire::config::EdgeConfig;
use qos_wire::event::Event;
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::outcome::ProbeResult;
use qos_wire::phase::Phase;
use qos_wire::probe::{ProbeKind, ProbeSpec};
use qos_wire::summary::Summary;
use qos_wire::threshold::ThresholdRule;

use crate::config::{parse_endpoint, ProbeTarget, Settings};
use crate::fmt::{debug, info, warn};
use crate::probe::{ProbeBuffers, Prober};

/// Sketch buckets of a window summary.
pub const SKETCH: usize = 64;
/// Records (summaries and events) the outbox holds while the super-manager does not answer.
pub const OUTBOX: usize = 16;
/// Largest encoded record, bytes.
pub const REC: usize = 256;
/// The id of the edge's one probe.
pub const PROBE: ProbeId = ProbeId(1);

/// Largest central configuration, bytes (one CoAP message).
pub const CONFIG_BYTES: usize = 1024;

type EdgeUplink = Uplink<IpEndpoint, 1, OUTBOX, REC>;

/// A board without persistent storage: nothing is read, writes are dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStorage;

impl Storage for NoStorage {
    type Error = core::convert::Infallible;
    fn read<'b>(&mut self, _: Slot, _: &'b mut [u8]) -> Result<Option<&'b [u8]>, Self::Error> {
        Ok(None)
    }
    fn write(&mut self, _: Slot, _: &[u8]) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The probe as a central configuration sets it, handed from the uplink loop to the probe loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    id: ProbeId,
    tcp: bool,
    to: IpEndpoint,
    interval_ms: u32,
    timeout_ms: u32,
    window_s: u16,
    threshold: Option<ThresholdRule>,
}

fn probe_target(spec: &ProbeSpec<'_>) -> Result<(bool, IpEndpoint), &'static str> {
    let (tcp, target) = match spec.kind {
        ProbeKind::Tcp { target } => (true, target),
        ProbeKind::CoapPing { target } => (false, target),
        _ => return Err("only tcp and coap-ping probes run here"),
    };
    let to = parse_endpoint(target).ok_or("target must be a.b.c.d:port")?;
    Ok((tcp, to))
}

fn probe_ok(spec: &ProbeSpec<'_>) -> Result<(), &'static str> {
    probe_target(spec).map(|_| ())
}

/// What a board runs of a central configuration.
const LIMITS: Limits = Limits {
    max_probes: 1,
    max_rules: 1,
    probe: probe_ok,
};

fn plan_of(c: &EdgeConfig<'_>, tcp_board: bool) -> Result<Plan, &'static str> {
    let spec = c.probes.iter().next().ok_or("no probe")?;
    let (tcp, to) = probe_target(&spec)?;
    if tcp != tcp_board {
        return Err("probe kind differs from this board's");
    }
    Ok(Plan {
        id: spec.id,
        tcp,
        to,
        interval_ms: spec.interval_ms,
        timeout_ms: spec.timeout_ms,
        window_s: c.window_s,
        threshold: c.rules.iter().next().map(|r| r.rule),
    })
}

type Plans = Signal<NoopRawMutex, Plan>;

/// The board-specific parts of the application.
pub trait Hooks {
    /// The local action of a threshold crossing (an LED, a log line); called at once, with or
    /// without a reachable super-manager. The event is also queued for the uplink.
    fn on_event(&mut self, event: &Event) {
        let _ = event;
    }

    /// Every probe result, as it finishes (e.g. to blink an LED).
    fn on_result(&mut self, result: &ProbeResult) {
        let _ = result;
    }
}

/// No local actions.
impl Hooks for () {}

/// What [`run`] returns when the run ends ([`Settings::run_for_ms`] or [`Settings::ack_target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Report {
    /// Uptime at the end, ms.
    pub uptime_ms: u64,
    /// Records queued into the outbox.
    pub queued: u64,
    /// Records acknowledged by the super-manager.
    pub acked: u64,
    /// Records dropped (outbox full).
    pub dropped: u64,
    /// Batches sent.
    pub batches: u32,
    /// Batches acknowledged.
    pub acked_batches: u32,
    /// Batches that failed (no answer after the retransmissions, or an error response).
    pub failures: u32,
}

impl Report {
    /// Whether anything reached the super-manager.
    pub fn delivered(&self) -> bool {
        self.acked > 0
    }
}

/// Why [`run`] could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StartError {
    /// The uplink refused the settings (e.g. a broker it cannot use).
    Uplink,
    /// The scheduler refused the probe interval.
    Scheduler,
    /// The threshold rule is invalid.
    Threshold,
    /// Name or region unusable for the registration, or a lifetime below 60 s.
    Registration,
}

/// A record on its way from the probe loop to the uplink loop. No heap to box the summary in,
/// and the channel holds two at most.
#[allow(clippy::large_enum_variant)]
enum Record {
    Summary(Summary<SKETCH>),
    Event(Event),
}

type Records = Channel<NoopRawMutex, Record, 2>;

fn uptime_ms() -> u64 {
    Instant::now().as_millis()
}

/// Run the edge over `stack` (which must already be configured: wait for DHCP first) until
/// the run ends ([`Settings::run_for_ms`], [`Settings::ack_target`]); without an end it runs
/// for ever. The future holds all of the application's state (about 16 KiB with the default
/// sizes): spawn it in a task whose storage is static, not on a small stack.
pub async fn run<H: Hooks>(
    stack: Stack<'_>,
    settings: &Settings,
    hooks: &mut H,
) -> Result<Report, StartError> {
    run_with_storage(stack, settings, hooks, &mut NoStorage).await
}

/// [`run`] with persistent storage: a central configuration is saved in [`Slot::Config`] and
/// used from the start at the next boot (the boot epoch is the board's business, before this).
pub async fn run_with_storage<H: Hooks, S: Storage>(
    stack: Stack<'_>,
    settings: &Settings,
    hooks: &mut H,
    storage: &mut S,
) -> Result<Report, StartError> {
    info!(
        "qos edge {} (epoch {}): probe {:?} every {} ms, super-manager {}",
        settings.edge_id,
        settings.epoch,
        settings.probe,
        settings.probe_interval_ms,
        settings.broker
    );
    let records: Records = Channel::new();
    #[cfg_attr(feature = "oscore", allow(unused_mut))]
    let mut uplink = EdgeUplink::new(
        EdgeId(settings.edge_id),
        &[settings.broker],
        UplinkConfig::default(),
        Outbox::new(Seq::first_of_epoch(settings.epoch)),
        settings.seed,
    )
    .map_err(|_| StartError::Uplink)?;
    #[cfg(feature = "oscore")]
    let mut uplink = match settings.oscore {
        Some(k) => {
            let ctx = qos_oscore::Context::derive(k.secret, k.salt, None, k.kid, k.serve_id)
                .map_err(|_| StartError::Uplink)?;
            info!("OSCORE with the super-manager");
            uplink.with_oscore(ctx, settings.epoch, k.counter_bits)
        }
        None => uplink,
    };
    let (tcp_board, to) = match settings.probe {
        ProbeTarget::TcpConnect(to) => (true, to),
        ProbeTarget::CoapPing(to) => (false, to),
    };
    let mut plan = Plan {
        id: PROBE,
        tcp: tcp_board,
        to,
        interval_ms: settings.probe_interval_ms,
        timeout_ms: settings.probe_timeout_ms,
        window_s: settings.window_s,
        threshold: settings.threshold,
    };
    // A central configuration saved at an earlier boot replaces the built-in probe.
    let mut cfg_buf = [0u8; CONFIG_BYTES];
    let mut applied = None;
    if let Some((c, _)) = centre::load_config(storage, &mut cfg_buf, &LIMITS) {
        match plan_of(&c, tcp_board) {
            Ok(p) => {
                info!("central configuration {} from storage", c.etag);
                plan = p;
                applied = Some(c.etag);
            }
            Err(why) => warn!("stored configuration unusable: {}", why),
        }
    }
    let centre = Centre::new(
        Identity {
            name: settings.name,
            region: settings.region,
            id: EdgeId(settings.edge_id),
            fw: env!("CARGO_PKG_VERSION"),
        },
        CentreConfig {
            lifetime_s: settings.lifetime_s,
            config_poll_ms: u64::from(settings.config_poll_s) * 1_000,
            ..CentreConfig::default()
        },
        applied,
    )
    .map_err(|_| StartError::Registration)?;
    let mut thresholds: Thresholds<1> = Thresholds::new();
    thresholds
        .set(plan.threshold.map(|r| (plan.id, r)))
        .map_err(|_| StartError::Threshold)?;
    let unix_ms = || settings.unix_base_ms + uptime_ms();
    let mut scheduler: Scheduler<1> = Scheduler::new(1, settings.seed);
    scheduler
        .set(
            [Cadence {
                id: plan.id,
                interval_ms: plan.interval_ms,
                confirm_ms: 0,
            }],
            unix_ms(),
        )
        .map_err(|_| StartError::Scheduler)?;
    let mut bufs = ProbeBuffers::new();
    let mut prober = Prober::new(
        stack,
        settings.probe,
        settings.local_port.wrapping_add(1),
        settings.seed,
        &mut bufs,
    );
    prober.retarget(plan.tcp, plan.to);
    let plans: Plans = Signal::new();
    let probing = probe_loop(
        settings, plan, scheduler, thresholds, prober, hooks, &records, &plans,
    );
    let mut control = Control {
        centre,
        storage,
        cfg_buf,
        plans: &plans,
        tcp_board,
    };
    let uplinking = uplink_loop(stack, settings, &mut uplink, &records, &mut control);
    match select(probing, uplinking).await {
        Either::First(never) => match never {},
        Either::Second(report) => Ok(report),
    }
}

/// Runs the probe on the scheduler's grid, checks the thresholds and feeds the summariser;
/// takes a new [`Plan`] between runs.
#[allow(clippy::too_many_arguments)]
async fn probe_loop<H: Hooks>(
    settings: &Settings,
    plan: Plan,
    mut scheduler: Scheduler<1>,
    mut thresholds: Thresholds<1>,
    mut prober: Prober<'_>,
    hooks: &mut H,
    records: &Records,
    plans: &Plans,
) -> core::convert::Infallible {
    let base = settings.unix_base_ms;
    let unix_ms = || base + uptime_ms();
    let mut probe = plan.id;
    let mut timeout = Duration::from_millis(u64::from(plan.timeout_ms));
    let mut summariser: Summariser<1, SKETCH> = Summariser::new(plan.window_s);
    loop {
        let now = unix_ms();
        while let Some((id, at_ms)) = scheduler.next_due(now) {
            let result = prober.run(id, at_ms, timeout).await;
            let done = unix_ms();
            scheduler.finished(id, result.ok(), done);
            debug!("probe: {:?}", result);
            hooks.on_result(&result);
            for event in thresholds.observe::<1>(&result, done) {
                info!("threshold event: {:?}", event);
                hooks.on_event(&event);
                records.send(Record::Event(event)).await;
            }
            if let Ok(Some(closed)) = summariser.record((at_ms / 1_000) as u32, &result) {
                records.send(Record::Summary(closed)).await;
            }
        }
        while let Some(closed) = summariser.poll((unix_ms() / 1_000) as u32) {
            records.send(Record::Summary(closed)).await;
        }
        let next = [
            scheduler.next_deadline(),
            summariser.next_deadline().map(|s| u64::from(s) * 1_000),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + 1_000);
        let wait = Timer::at(Instant::from_millis(next.saturating_sub(base)));
        if let Either::Second(plan) = select(wait, plans.wait()).await {
            // Flush the open window: no summary mixes two configurations.
            if let Some(open) = summariser.remove(probe) {
                records.send(Record::Summary(open)).await;
            }
            summariser = Summariser::new(plan.window_s);
            probe = plan.id;
            timeout = Duration::from_millis(u64::from(plan.timeout_ms));
            let cadence = Cadence {
                id: plan.id,
                interval_ms: plan.interval_ms,
                confirm_ms: 0,
            };
            // Capacity 1 and one probe, one rule (checked by the limits): cannot fail.
            let _ = scheduler.set([cadence], unix_ms());
            let _ = thresholds.set(plan.threshold.map(|r| (plan.id, r)));
            prober.retarget(plan.tcp, plan.to);
            info!(
                "configuration applied: probe {} every {} ms",
                plan.id.0, plan.interval_ms
            );
        }
    }
}

/// The control conversation's state in the uplink loop.
struct Control<'p, S> {
    centre: Centre<IpEndpoint>,
    storage: &'p mut S,
    cfg_buf: [u8; CONFIG_BYTES],
    plans: &'p Plans,
    tcp_board: bool,
}

impl<S: Storage> Control<'_, S> {
    fn on_answer(&mut self, now: u64, exchange: qos_coap::ExchangeId, m: &qos_coap::Message<'_>) {
        let event = self
            .centre
            .handle_answer(now, exchange, m, &mut self.cfg_buf, &LIMITS);
        match event {
            Some(CentreEvent::Apply { config, bytes }) => {
                let etag = config.etag;
                match plan_of(&config, self.tcp_board) {
                    Ok(plan) => {
                        if self.storage.write(Slot::Config, bytes).is_err() {
                            warn!("configuration {} not saved", etag);
                        }
                        self.plans.signal(plan);
                        self.centre.applied(etag, Ok(()));
                    }
                    Err(why) => self.centre.applied(etag, Err(why)),
                }
            }
            Some(CentreEvent::Rejected { etag, reason }) => {
                warn!("configuration {} refused: {}", etag, reason.as_str())
            }
            Some(CentreEvent::Registered) => info!("registered with the broker"),
            _ => {}
        }
    }
}

/// Drives the uplink: queues records, moves datagrams, and ends the run.
async fn uplink_loop<S: Storage>(
    stack: Stack<'_>,
    settings: &Settings,
    uplink: &mut EdgeUplink,
    records: &Records,
    control: &mut Control<'_, S>,
) -> Report {
    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx_buf = [0u8; 2 * MSG];
    let mut tx_buf = [0u8; 2 * MSG];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    // Only fails if already bound.
    let _ = socket.bind(settings.local_port);
    let end_ms = settings.run_for_ms.unwrap_or(u64::MAX);
    let mut out = [0u8; MSG];
    let mut inp = [0u8; MSG];
    let mut acked_seen = 0;
    loop {
        let now = uptime_ms();
        uplink.poll(now);
        control.centre.poll(now, uplink);
        while let Some((to, n)) = uplink.poll_transmit(now, &mut out) {
            if let Err(e) = socket.send_to(&out[..n], to).await {
                warn!("uplink send failed: {:?}", e);
            }
        }
        let stats = uplink.outbox().stats();
        if stats.acked != acked_seen {
            acked_seen = stats.acked;
            info!(
                "acked: {} records in {} batches, next seq {:#x}",
                stats.acked,
                uplink.stats().acked_batches,
                uplink.next_seq().0
            );
        }
        if settings.ack_target.is_some_and(|n| stats.acked >= n) || now >= end_ms {
            let u = uplink.stats();
            let report = Report {
                uptime_ms: now,
                queued: stats.queued,
                acked: stats.acked,
                dropped: stats.dropped,
                batches: u.batches,
                acked_batches: u.acked_batches,
                failures: u.failures,
            };
            info!("run over: {:?}", report);
            return report;
        }
        let wake = uplink
            .poll_timeout()
            .unwrap_or(u64::MAX)
            .min(control.centre.poll_timeout().unwrap_or(u64::MAX))
            .min(now + 1_000)
            .min(end_ms);
        match select3(
            records.receive(),
            socket.recv_from(&mut inp),
            Timer::at(Instant::from_millis(wake)),
        )
        .await
        {
            Either3::First(Record::Summary(summary)) => {
                info!(
                    "window {}: ok {}, failed {}, connect mean {:?} us",
                    summary.start_s,
                    summary.ok,
                    summary.failed,
                    summary.phase(Phase::Connect).mean()
                );
                if let Err(e) = uplink.push_summary(&summary) {
                    warn!("summary not queued: {:?}", e);
                }
            }
            Either3::First(Record::Event(event)) => {
                if let Err(e) = uplink.push_event(&event) {
                    warn!("event not queued: {:?}", e);
                }
            }
            Either3::Second(Ok((n, meta))) => {
                let now = uptime_ms();
                // An OSCORE answer is opened in place; one that does not verify is dropped.
                let n = uplink.open_datagram(&mut inp, n).unwrap_or(0);
                match uplink.handle(now, meta.endpoint, &inp[..n]) {
                    // The firmware serves no resources yet.
                    Some(Received::Request(req)) => {
                        let _ = uplink.endpoint().respond(
                            now,
                            &req.handle,
                            Code::NOT_FOUND,
                            |_| Ok(()),
                        );
                    }
                    Some(Received::Control { exchange, message }) => {
                        control.on_answer(now, exchange, &message)
                    }
                    None => {}
                }
            }
            Either3::Second(Err(e)) => warn!("uplink receive failed: {:?}", e),
            Either3::Third(()) => {}
        }
    }
}
