//! The edge application: the probe loop (scheduler, probe, local thresholds, summariser) and
//! the uplink loop (the sans-IO `Uplink` over an embassy-net UDP socket), joined in one future.
//! Closed windows and threshold events go from the first to the second through a small channel.

use embassy_futures::select::{select, select3, Either, Either3};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{Duration, Instant, Timer};
use qos_coap::Code;
use qos_edge_core::scheduler::{Cadence, Scheduler};
use qos_edge_core::thresholds::Thresholds;
use qos_edge_core::uplink::MSG;
use qos_edge_core::{Outbox, Summariser, Uplink, UplinkConfig};
use qos_wire::event::Event;
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::outcome::ProbeResult;
use qos_wire::phase::Phase;
use qos_wire::summary::Summary;

use crate::config::Settings;
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

type EdgeUplink = Uplink<IpEndpoint, 1, OUTBOX, REC>;

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
    info!(
        "qos edge {} (epoch {}): probe {:?} every {} ms, super-manager {}",
        settings.edge_id,
        settings.epoch,
        settings.probe,
        settings.probe_interval_ms,
        settings.broker
    );
    let records: Records = Channel::new();
    let mut uplink = EdgeUplink::new(
        EdgeId(settings.edge_id),
        &[settings.broker],
        UplinkConfig::default(),
        Outbox::new(Seq::first_of_epoch(settings.epoch)),
        settings.seed,
    )
    .map_err(|_| StartError::Uplink)?;
    let mut thresholds: Thresholds<1> = Thresholds::new();
    thresholds
        .set(settings.threshold.map(|r| (PROBE, r)))
        .map_err(|_| StartError::Threshold)?;
    let unix_ms = || settings.unix_base_ms + uptime_ms();
    let mut scheduler: Scheduler<1> = Scheduler::new(1, settings.seed);
    scheduler
        .set(
            [Cadence {
                id: PROBE,
                interval_ms: settings.probe_interval_ms,
                confirm_ms: 0,
            }],
            unix_ms(),
        )
        .map_err(|_| StartError::Scheduler)?;
    let mut bufs = ProbeBuffers::new();
    let prober = Prober::new(
        stack,
        settings.probe,
        settings.local_port.wrapping_add(1),
        settings.seed,
        &mut bufs,
    );
    let probing = probe_loop(settings, scheduler, thresholds, prober, hooks, &records);
    let uplinking = uplink_loop(stack, settings, &mut uplink, &records);
    match select(probing, uplinking).await {
        Either::First(never) => match never {},
        Either::Second(report) => Ok(report),
    }
}

/// Runs the probe on the scheduler's grid, checks the thresholds and feeds the summariser.
async fn probe_loop<H: Hooks>(
    settings: &Settings,
    mut scheduler: Scheduler<1>,
    mut thresholds: Thresholds<1>,
    mut prober: Prober<'_>,
    hooks: &mut H,
    records: &Records,
) -> core::convert::Infallible {
    let base = settings.unix_base_ms;
    let unix_ms = || base + uptime_ms();
    let timeout = Duration::from_millis(u64::from(settings.probe_timeout_ms));
    let mut summariser: Summariser<1, SKETCH> = Summariser::new(settings.window_s);
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
        Timer::at(Instant::from_millis(next.saturating_sub(base))).await;
    }
}

/// Drives the uplink: queues records, moves datagrams, and ends the run.
async fn uplink_loop(
    stack: Stack<'_>,
    settings: &Settings,
    uplink: &mut EdgeUplink,
    records: &Records,
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
                if let Some(req) = uplink.handle_datagram(now, meta.endpoint, &inp[..n]) {
                    // The edge serves no resources (its configuration comes from the board).
                    let _ =
                        uplink
                            .endpoint()
                            .respond(now, &req.handle, Code::NOT_FOUND, |_| Ok(()));
                }
            }
            Either3::Second(Err(e)) => warn!("uplink receive failed: {:?}", e),
            Either3::Third(()) => {}
        }
    }
}
