//! The edge application: a TCP-connect probe of 10.0.2.2 every 200 ms, 1 s window summaries,
//! and the uplink of those summaries to the super-manager over CoAP/UDP.
//!
//! Three tasks: the network stack's runner, [`probe_task`] (scheduler, probe, summariser) and
//! [`uplink_task`] (the sans-IO `Uplink` driven over an embassy-net UDP socket). Closed windows
//! go from the first to the second through a small channel. All protocol decisions are in
//! `qos-edge-core`; this file owns the clock and the sockets.

use embassy_executor::Spawner;
use embassy_futures::select::{select3, Either3};
use embassy_net::tcp::{ConnectError, TcpSocket};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpEndpoint, Runner, Stack, StackResources};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_time::{with_timeout, Duration, Instant, Timer};
use qos_coap::Code;
use qos_edge_core::scheduler::{Cadence, Scheduler};
use qos_edge_core::uplink::MSG;
use qos_edge_core::{Outbox, Summariser, Uplink, UplinkConfig};
use qos_wire::ids::{EdgeId, ProbeId, Seq};
use qos_wire::outcome::{ErrorClass, PhaseTimings, ProbeResult};
use qos_wire::phase::Phase;
use qos_wire::summary::Summary;
use static_cell::StaticCell;

use crate::config::*;
use crate::lan9118::Lan9118;

/// Sketch buckets of a window summary.
const SKETCH: usize = 64;
/// Records the outbox holds while the super-manager does not answer.
const OUTBOX: usize = 16;
/// Largest encoded record.
const REC: usize = 256;
/// The one probe of this firmware.
const PROBE: ProbeId = ProbeId(1);

type EdgeUplink = Uplink<IpEndpoint, 1, OUTBOX, REC>;

/// Closed windows on their way from the probe task to the uplink task.
static SUMMARIES: Channel<CriticalSectionRawMutex, Summary<SKETCH>, 2> = Channel::new();

fn uptime_ms() -> u64 {
    Instant::now().as_millis()
}

fn unix_ms() -> u64 {
    u64::from(UNIX_BASE) * 1_000 + uptime_ms()
}

/// Bring up the network, then start the probe and the uplink.
pub async fn start(spawner: Spawner) {
    defmt::info!(
        "qos edge {=u32} on mps2-an386: epoch {=u32}, probe 10.0.2.2:{=u16} every {=u32} ms, super-manager 10.0.2.2:{=u16}",
        EDGE_ID,
        EPOCH,
        PROBE_PORT,
        PROBE_INTERVAL_MS,
        COAP_PORT
    );
    let eth = match Lan9118::new() {
        Ok(eth) => eth,
        Err(e) => {
            defmt::error!("no Ethernet: {}", e);
            crate::exit(1)
        }
    };
    let seed = (u64::from(EDGE_ID) << 32) ^ u64::from(EPOCH) ^ Instant::now().as_ticks();
    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        eth,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(net_task(runner).unwrap());
    if with_timeout(Duration::from_secs(10), stack.wait_config_up())
        .await
        .is_err()
    {
        defmt::error!("no DHCP lease within 10 s");
        crate::exit(1);
    }
    if let Some(c) = stack.config_v4() {
        defmt::info!("dhcp: address {}, gateway {}", c.address, c.gateway);
    }
    spawner.spawn(uplink_task(stack, seed).unwrap());
    spawner.spawn(probe_task(stack).unwrap());
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

/// Runs the probe on the scheduler's grid and feeds the summariser; closed windows go to the
/// uplink task.
#[embassy_executor::task]
async fn probe_task(stack: Stack<'static>) -> ! {
    let mut scheduler: Scheduler<1> = Scheduler::new(1, u64::from(EDGE_ID));
    let cadence = Cadence {
        id: PROBE,
        interval_ms: PROBE_INTERVAL_MS,
        confirm_ms: 0,
    };
    scheduler.set([cadence], unix_ms()).unwrap();
    let mut summariser: Summariser<1, SKETCH> = Summariser::new(WINDOW_S);
    let mut rx = [0u8; 64];
    let mut tx = [0u8; 64];
    loop {
        let now = unix_ms();
        while let Some((id, at_ms)) = scheduler.next_due(now) {
            let result = tcp_connect(stack, id, at_ms, &mut rx, &mut tx).await;
            scheduler.finished(id, result.ok(), unix_ms());
            defmt::debug!("probe: {}", result);
            if let Ok(Some(closed)) = summariser.record((at_ms / 1_000) as u32, &result) {
                SUMMARIES.send(closed).await;
            }
        }
        while let Some(closed) = summariser.poll((unix_ms() / 1_000) as u32) {
            SUMMARIES.send(closed).await;
        }
        let next = [
            scheduler.next_deadline(),
            summariser.next_deadline().map(|s| u64::from(s) * 1_000),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + 1_000);
        let at = next.saturating_sub(u64::from(UNIX_BASE) * 1_000);
        Timer::at(Instant::from_millis(at)).await;
    }
}

/// One TCP connect to 10.0.2.2:`PROBE_PORT`, timed with the µs clock; the connection is reset
/// at once.
async fn tcp_connect(
    stack: Stack<'static>,
    probe: ProbeId,
    at_ms: u64,
    rx: &mut [u8],
    tx: &mut [u8],
) -> ProbeResult {
    let mut socket = TcpSocket::new(stack, rx, tx);
    let timeout = Duration::from_millis(PROBE_TIMEOUT_MS);
    socket.set_timeout(Some(timeout));
    let started = Instant::now();
    let outcome = with_timeout(
        timeout,
        socket.connect(IpEndpoint::new(HOST.into(), PROBE_PORT)),
    )
    .await;
    let us = started.elapsed().as_micros().min(u64::from(u32::MAX)) as u32;
    socket.abort();
    let _ = with_timeout(Duration::from_millis(50), socket.flush()).await;
    let mut phases = PhaseTimings::new();
    let error = match outcome {
        Ok(Ok(())) => {
            phases.set(Phase::Connect, us);
            phases.set(Phase::Total, us);
            None
        }
        Ok(Err(ConnectError::ConnectionReset)) => Some(ErrorClass::Refused),
        Ok(Err(ConnectError::TimedOut)) | Err(_) => Some(ErrorClass::Timeout),
        Ok(Err(ConnectError::NoRoute)) => Some(ErrorClass::Unreachable),
        Ok(Err(ConnectError::InvalidState)) => Some(ErrorClass::Other),
    };
    ProbeResult {
        probe,
        at_ms,
        phases,
        error,
        error_after_us: error.map(|_| us),
        detail: 0,
        redirects: 0,
    }
}

/// Drives the uplink: queues closed windows, moves datagrams, and ends the run.
#[embassy_executor::task]
async fn uplink_task(stack: Stack<'static>, seed: u64) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx_buf = [0u8; 2 * MSG];
    let mut tx_buf = [0u8; 2 * MSG];
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    socket.bind(LOCAL_COAP_PORT).unwrap();
    let broker = IpEndpoint::new(HOST.into(), COAP_PORT);
    let mut uplink = match EdgeUplink::new(
        EdgeId(EDGE_ID),
        &[broker],
        UplinkConfig::default(),
        Outbox::new(Seq::first_of_epoch(EPOCH)),
        seed,
    ) {
        Ok(u) => u,
        Err(_) => {
            defmt::error!("uplink settings refused");
            crate::exit(1)
        }
    };
    let end_ms = u64::from(RUN_SECS) * 1_000;
    let mut out = [0u8; MSG];
    let mut inp = [0u8; MSG];
    let mut acked_seen = 0;
    loop {
        let now = uptime_ms();
        uplink.poll(now);
        while let Some((to, n)) = uplink.poll_transmit(now, &mut out) {
            if let Err(e) = socket.send_to(&out[..n], to).await {
                defmt::warn!("uplink send failed: {}", e);
            }
        }
        let stats = uplink.outbox().stats();
        if stats.acked != acked_seen {
            acked_seen = stats.acked;
            defmt::info!(
                "acked: {=u64} summaries in {=u32} batches, next seq {=u64:#x}",
                stats.acked,
                uplink.stats().acked_batches,
                uplink.next_seq().0
            );
        }
        if ACK_TARGET.is_some_and(|n| stats.acked >= n) || now >= end_ms {
            finish(&uplink, now);
        }
        let wake = uplink
            .poll_timeout()
            .unwrap_or(u64::MAX)
            .min(now + 1_000)
            .min(end_ms);
        match select3(
            SUMMARIES.receive(),
            socket.recv_from(&mut inp),
            Timer::at(Instant::from_millis(wake)),
        )
        .await
        {
            Either3::First(summary) => {
                defmt::info!(
                    "window {=u32}: ok {=u32}, failed {=u32}, connect mean {=?} us",
                    summary.start_s,
                    summary.ok,
                    summary.failed,
                    summary.phase(Phase::Connect).mean()
                );
                if let Err(e) = uplink.push_summary(&summary) {
                    defmt::warn!("summary not queued: {}", e);
                }
            }
            Either3::Second(Ok((n, meta))) => {
                let now = uptime_ms();
                if let Some(req) = uplink.handle_datagram(now, meta.endpoint, &inp[..n]) {
                    // This firmware serves no resources (configuration is compiled in).
                    let _ =
                        uplink
                            .endpoint()
                            .respond(now, &req.handle, Code::NOT_FOUND, |_| Ok(()));
                }
            }
            Either3::Second(Err(e)) => defmt::warn!("uplink receive failed: {}", e),
            Either3::Third(()) => {}
        }
    }
}

fn finish(uplink: &EdgeUplink, now: u64) -> ! {
    let o = uplink.outbox().stats();
    let u = uplink.stats();
    defmt::info!(
        "run over after {=u64} ms: {=u64} summaries queued, {=u64} acked, {=u64} dropped, {=u32} batches ({=u32} acked, {=u32} failed)",
        now,
        o.queued,
        o.acked,
        o.dropped,
        u.batches,
        u.acked_batches,
        u.failures
    );
    crate::exit(if o.acked > 0 { 0 } else { 1 })
}
