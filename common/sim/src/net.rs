//! The simulated network: [`Net`], [`Datagram`], [`Stats`], [`SendFate`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;

use crate::link::{Fault, LinkConfig};
use crate::rng::Rng;
use crate::trace::{Event, TraceHead};

/// A datagram handed out by [`Net::deliver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram<A> {
    /// Sender address.
    pub from: A,
    /// Destination address.
    pub to: A,
    /// Payload, exactly as given to [`Net::send`].
    pub bytes: Vec<u8>,
    /// Virtual time (ms) of the `send` call.
    pub sent_at: u64,
    /// Virtual time (ms) at which the datagram arrived; `<=` the `now`
    /// passed to the `deliver` call that returned it.
    pub deliver_at: u64,
    /// Number of the `send` call that produced it, counting from 0 (for
    /// matching against the [trace](Net::trace); protocols under test should not
    /// look at it).
    pub id: u64,
    /// 0 for the original, 1 for the duplicate made by the link.
    pub copy: u8,
}

/// What [`Net::send`] decided for a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendFate {
    /// Dropped because the directed link was blocked by a partition or block.
    DroppedPartition,
    /// Dropped by the link's loss draw.
    DroppedLoss,
    /// In flight: `copies` is 1, or 2 if the link duplicated it.
    Queued {
        /// Number of copies that will arrive (unless a partition cuts the link first).
        copies: u8,
    },
}

/// Counters kept by a [`Net`] since it was created.
///
/// Every copy is accounted for:
/// `sent + duplicated == delivered + dropped_loss + dropped_partition + in_flight`
/// (with `in_flight` from [`Net::in_flight`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Calls to [`Net::send`].
    pub sent: u64,
    /// Copies handed out by [`Net::deliver`].
    pub delivered: u64,
    /// Datagrams dropped by the loss draw.
    pub dropped_loss: u64,
    /// Copies dropped because their link was blocked, at send or in flight.
    pub dropped_partition: u64,
    /// Datagrams the link duplicated (each adds one extra copy).
    pub duplicated: u64,
    /// Copies given the link's extra reordering delay.
    pub reordered: u64,
}

#[derive(Clone, Debug)]
struct InFlight<A> {
    id: u64,
    copy: u8,
    from: A,
    to: A,
    bytes: Vec<u8>,
    sent_at: u64,
}

/// Returns the earliest of the given deadlines, ignoring `None`s.
///
/// ```
/// assert_eq!(qos_sim::earliest([None, Some(30), Some(10)]), Some(10));
/// assert_eq!(qos_sim::earliest([None::<u64>]), None);
/// ```
pub fn earliest<I: IntoIterator<Item = Option<u64>>>(deadlines: I) -> Option<u64> {
    deadlines.into_iter().flatten().min()
}

/// A deterministic simulated datagram network between nodes addressed by `A`,
/// driven in virtual time (milliseconds).
///
/// Virtual time is whatever `now` the caller passes; it must never go
/// backwards (the methods taking `now` panic if it does). Everything random is
/// drawn from one generator seeded at construction, so the same seed and the
/// same sequence of calls give the same result.
///
/// Scheduled [`Fault`]s take effect when a call with `now >= at` is made, in
/// correct order relative to deliveries: a fault at time `t` only affects
/// datagrams that arrive at or after `t`; on a tie the fault comes first.
pub struct Net<A> {
    seed: u64,
    rng: Rng,
    now: u64,
    default_link: LinkConfig,
    links: HashMap<(A, A), LinkConfig>,
    blocked: BTreeSet<(A, A)>,
    /// In-flight copies keyed by (deliver_at, enqueue sequence).
    queue: BTreeMap<(u64, u64), InFlight<A>>,
    next_queue_seq: u64,
    /// Pending faults keyed by (at, schedule sequence).
    faults: BTreeMap<(u64, u64), Fault<A>>,
    next_fault_seq: u64,
    next_id: u64,
    stats: Stats,
    trace: Option<Vec<Event<A>>>,
}

impl<A> Net<A>
where
    A: Copy + Eq + Ord + Hash + fmt::Debug,
{
    /// Creates a network whose links default to [`LinkConfig::default`]
    /// (perfect, 1 ms), at virtual time 0, with tracing off.
    pub fn new(seed: u64) -> Self {
        Self::with_default_link(seed, LinkConfig::default())
    }

    /// Creates a network whose links default to `default_link`.
    ///
    /// # Panics
    /// Panics if `default_link` is invalid (see [`LinkConfig::validate`]).
    pub fn with_default_link(seed: u64, default_link: LinkConfig) -> Self {
        check_config(&default_link);
        Net {
            seed,
            rng: Rng::new(seed),
            now: 0,
            default_link,
            links: HashMap::new(),
            blocked: BTreeSet::new(),
            queue: BTreeMap::new(),
            next_queue_seq: 0,
            faults: BTreeMap::new(),
            next_fault_seq: 0,
            next_id: 0,
            stats: Stats::default(),
            trace: None,
        }
    }

    /// The seed this network was created with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The latest virtual time seen in a call (0 initially).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Number of copies in flight (queued, not yet delivered or dropped).
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    // ----- configuration and faults ------------------------------------------------

    /// The default configuration used by links without an override.
    pub fn default_link(&self) -> LinkConfig {
        self.default_link
    }

    /// Replaces the default link configuration, from now on.
    ///
    /// # Panics
    /// Panics if `cfg` is invalid.
    pub fn set_default_link(&mut self, cfg: LinkConfig) {
        self.apply_now(Fault::SetDefault(cfg));
    }

    /// The effective configuration of the directed link `from → to`.
    pub fn link(&self, from: A, to: A) -> LinkConfig {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Overrides the configuration of the directed link `from → to` for
    /// datagrams sent from now on (the reverse direction is unaffected).
    ///
    /// # Panics
    /// Panics if `cfg` is invalid.
    pub fn set_link(&mut self, from: A, to: A, cfg: LinkConfig) {
        self.apply_now(Fault::SetLink(from, to, cfg));
    }

    /// Overrides both directions between `a` and `b`.
    ///
    /// # Panics
    /// Panics if `cfg` is invalid.
    pub fn set_link_both(&mut self, a: A, b: A, cfg: LinkConfig) {
        self.set_link(a, b, cfg);
        self.set_link(b, a, cfg);
    }

    /// Removes the override of `from → to`; it uses the default again.
    pub fn clear_link(&mut self, from: A, to: A) {
        self.apply_now(Fault::ClearLink(from, to));
    }

    /// Blocks both directions between every node in `side_a` and every node
    /// in `side_b` until healed; in-flight datagrams across it are dropped.
    pub fn partition(&mut self, side_a: &[A], side_b: &[A]) {
        self.apply_now(Fault::Partition(side_a.to_vec(), side_b.to_vec()));
    }

    /// Removes every partition and one-way block.
    pub fn heal_all(&mut self) {
        self.apply_now(Fault::HealAll);
    }

    /// Blocks the directed link `from → to` only; in-flight datagrams on it are dropped.
    pub fn block(&mut self, from: A, to: A) {
        self.apply_now(Fault::Block(from, to));
    }

    /// Unblocks the directed link `from → to` (whether blocked by
    /// [`block`](Self::block) or by a [`partition`](Self::partition)).
    pub fn unblock(&mut self, from: A, to: A) {
        self.apply_now(Fault::Unblock(from, to));
    }

    /// Whether the directed link `from → to` is currently blocked.
    pub fn is_blocked(&self, from: A, to: A) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Schedules `fault` to take effect at virtual time `at_ms`.
    ///
    /// A fault scheduled at or before the current time takes effect
    /// immediately. Faults scheduled for the same time apply in the order
    /// they were scheduled.
    ///
    /// # Panics
    /// Panics if the fault carries an invalid [`LinkConfig`].
    pub fn schedule(&mut self, at_ms: u64, fault: Fault<A>) {
        if let Fault::SetLink(_, _, cfg) | Fault::SetDefault(cfg) = &fault {
            check_config(cfg);
        }
        if at_ms <= self.now {
            self.apply_now(fault);
        } else {
            self.faults.insert((at_ms, self.next_fault_seq), fault);
            self.next_fault_seq += 1;
        }
    }

    /// Time of the earliest pending scheduled fault, if any.
    pub fn next_fault(&self) -> Option<u64> {
        self.faults.keys().next().map(|&(at, _)| at)
    }

    // ----- time, sending and delivering ---------------------------------------------

    /// Moves virtual time to `now`, applying every scheduled fault due by then.
    ///
    /// Called implicitly by [`send`](Self::send) and [`deliver`](Self::deliver).
    ///
    /// # Panics
    /// Panics if `now` is earlier than [`now()`](Self::now).
    pub fn advance(&mut self, now: u64) {
        self.set_now(now);
        while let Some(entry) = self.faults.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, _), fault) = entry.remove_entry();
            self.apply(at, fault);
        }
    }

    /// Sends `bytes` from `from` to `to` at virtual time `now`; the link's
    /// fate (block, loss, duplication, delays, reordering) is decided here.
    ///
    /// # Panics
    /// Panics if `now` is earlier than [`now()`](Self::now).
    pub fn send(&mut self, now: u64, from: A, to: A, bytes: &[u8]) -> SendFate {
        self.advance(now);
        let id = self.next_id;
        self.next_id += 1;
        self.stats.sent += 1;
        self.record(|| Event::Sent {
            at: now,
            id,
            from,
            to,
            len: bytes.len(),
        });

        if self.is_blocked(from, to) {
            self.stats.dropped_partition += 1;
            self.record(|| Event::DroppedPartition {
                at: now,
                id,
                copy: 0,
                from,
                to,
                in_flight: false,
            });
            return SendFate::DroppedPartition;
        }

        let cfg = self.link(from, to);
        if self.rng.chance(cfg.loss) {
            self.stats.dropped_loss += 1;
            self.record(|| Event::DroppedLoss {
                at: now,
                id,
                from,
                to,
            });
            return SendFate::DroppedLoss;
        }

        let copies: u8 = if self.rng.chance(cfg.duplicate) {
            self.stats.duplicated += 1;
            self.record(|| Event::Duplicated {
                at: now,
                id,
                from,
                to,
            });
            2
        } else {
            1
        };

        for copy in 0..copies {
            let mut delay = self.rng.range_inclusive(cfg.delay_min_ms, cfg.delay_max_ms);
            let reordered = self.rng.chance(cfg.reorder);
            if reordered {
                self.stats.reordered += 1;
                delay = delay.saturating_add(cfg.reorder_extra_ms);
            }
            let deliver_at = now.saturating_add(delay);
            self.queue.insert(
                (deliver_at, self.next_queue_seq),
                InFlight {
                    id,
                    copy,
                    from,
                    to,
                    bytes: bytes.to_vec(),
                    sent_at: now,
                },
            );
            self.next_queue_seq += 1;
            self.record(|| Event::Queued {
                at: now,
                id,
                copy,
                from,
                to,
                deliver_at,
                reordered,
            });
        }
        SendFate::Queued { copies }
    }

    /// Arrival time of the earliest in-flight datagram, if any.
    ///
    /// It can be earlier than [`now()`](Self::now) if due datagrams have not
    /// been taken with [`deliver`](Self::deliver) yet. A fault scheduled
    /// before it may still drop it.
    pub fn next_delivery(&self) -> Option<u64> {
        self.queue.keys().next().map(|&(at, _)| at)
    }

    /// Pops the earliest datagram that has arrived by `now`, in
    /// (arrival time, enqueue order) order, applying scheduled faults that
    /// come before it. Returns `None` when nothing more is due.
    ///
    /// # Panics
    /// Panics if `now` is earlier than [`now()`](Self::now).
    pub fn deliver(&mut self, now: u64) -> Option<Datagram<A>> {
        self.set_now(now);
        loop {
            let next_dg = self.next_delivery().filter(|&t| t <= now);
            match self.next_fault().filter(|&t| t <= now) {
                Some(tf) if next_dg.is_none_or(|td| tf <= td) => {
                    let ((at, _), fault) = self.faults.pop_first().expect("fault exists");
                    self.apply(at, fault);
                }
                _ => break,
            }
        }
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let ((deliver_at, _), dg) = entry.remove_entry();
        self.stats.delivered += 1;
        self.record(|| Event::Delivered {
            at: deliver_at,
            id: dg.id,
            copy: dg.copy,
            from: dg.from,
            to: dg.to,
            sent_at: dg.sent_at,
            len: dg.bytes.len(),
        });
        Some(Datagram {
            from: dg.from,
            to: dg.to,
            bytes: dg.bytes,
            sent_at: dg.sent_at,
            deliver_at,
            id: dg.id,
            copy: dg.copy,
        })
    }

    /// Pops every datagram that has arrived by `now` (repeated [`deliver`](Self::deliver)).
    ///
    /// # Panics
    /// Panics if `now` is earlier than [`now()`](Self::now).
    pub fn deliver_due(&mut self, now: u64) -> Vec<Datagram<A>> {
        let mut out = Vec::new();
        while let Some(d) = self.deliver(now) {
            out.push(d);
        }
        out
    }

    /// The next virtual time a driver loop should advance to: the earliest of
    /// the nodes' `deadlines` (`None` = no timer), the next delivery and the
    /// next scheduled fault, but never earlier than [`now()`](Self::now).
    /// `None` means nothing will ever happen again: the simulation is quiescent.
    ///
    /// ```
    /// let mut net = qos_sim::Net::<u16>::new(1);
    /// net.send(0, 1, 2, b"x"); // arrives at t=1 on the default link
    /// assert_eq!(net.next_event_time(&[Some(50), None]), Some(1));
    /// assert_eq!(net.deliver_due(1).len(), 1);
    /// assert_eq!(net.next_event_time(&[Some(50), None]), Some(50));
    /// assert_eq!(net.next_event_time(&[None]), None);
    /// ```
    pub fn next_event_time(&self, deadlines: &[Option<u64>]) -> Option<u64> {
        earliest(
            deadlines
                .iter()
                .copied()
                .chain([self.next_delivery(), self.next_fault()]),
        )
        .map(|t| t.max(self.now))
    }

    // ----- tracing ------------------------------------------------------------------

    /// Turns event recording on or off. Turning it off discards the events
    /// recorded so far; turning it on when already on keeps them.
    pub fn set_trace(&mut self, on: bool) {
        match (on, self.trace.is_some()) {
            (true, false) => self.trace = Some(Vec::new()),
            (false, true) => self.trace = None,
            _ => {}
        }
    }

    /// Builder-style [`set_trace(true)`](Self::set_trace).
    pub fn traced(mut self) -> Self {
        self.set_trace(true);
        self
    }

    /// The events recorded so far (empty when tracing is off).
    pub fn trace(&self) -> &[Event<A>] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// Takes the recorded events, leaving tracing on with an empty log if it was on.
    pub fn take_trace(&mut self) -> Vec<Event<A>> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A printable view of the first `n` recorded events (`{}` or `{:?}`).
    pub fn trace_head(&self, n: usize) -> TraceHead<'_, A> {
        TraceHead(self.trace(), n)
    }

    // ----- internals ----------------------------------------------------------------

    fn set_now(&mut self, now: u64) {
        assert!(
            now >= self.now,
            "virtual time went backwards: now={now} < {}",
            self.now
        );
        self.now = now;
    }

    fn record(&mut self, event: impl FnOnce() -> Event<A>) {
        if let Some(t) = self.trace.as_mut() {
            t.push(event());
        }
    }

    /// Applies `fault` at the current time (without consulting the schedule).
    fn apply_now(&mut self, fault: Fault<A>) {
        let now = self.now;
        self.apply(now, fault);
    }

    fn apply(&mut self, at: u64, fault: Fault<A>) {
        if let Fault::SetLink(_, _, cfg) | Fault::SetDefault(cfg) = &fault {
            check_config(cfg);
        }
        if let Some(t) = self.trace.as_mut() {
            t.push(Event::FaultApplied {
                at,
                fault: fault.clone(),
            });
        }
        match fault {
            Fault::Partition(side_a, side_b) => {
                for &a in &side_a {
                    for &b in &side_b {
                        if a != b {
                            self.blocked.insert((a, b));
                            self.blocked.insert((b, a));
                        }
                    }
                }
                self.purge_blocked(at);
            }
            Fault::HealAll => self.blocked.clear(),
            Fault::Block(from, to) => {
                self.blocked.insert((from, to));
                self.purge_blocked(at);
            }
            Fault::Unblock(from, to) => {
                self.blocked.remove(&(from, to));
            }
            Fault::SetLink(from, to, cfg) => {
                self.links.insert((from, to), cfg);
            }
            Fault::ClearLink(from, to) => {
                self.links.remove(&(from, to));
            }
            Fault::SetDefault(cfg) => self.default_link = cfg,
        }
    }

    /// Drops in-flight copies on blocked links that arrive at or after `at`.
    fn purge_blocked(&mut self, at: u64) {
        let blocked = &self.blocked;
        let stats = &mut self.stats;
        let trace = &mut self.trace;
        self.queue.retain(|&(deliver_at, _), dg| {
            let cut = deliver_at >= at && blocked.contains(&(dg.from, dg.to));
            if cut {
                stats.dropped_partition += 1;
                if let Some(t) = trace.as_mut() {
                    t.push(Event::DroppedPartition {
                        at,
                        id: dg.id,
                        copy: dg.copy,
                        from: dg.from,
                        to: dg.to,
                        in_flight: true,
                    });
                }
            }
            !cut
        });
    }
}

fn check_config(cfg: &LinkConfig) {
    if let Err(e) = cfg.validate() {
        panic!("{e}: {cfg:?}");
    }
}

impl<A: fmt::Debug> fmt::Debug for Net<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("stats", &self.stats)
            .field("in_flight", &self.queue.len())
            .field("pending_faults", &self.faults.len())
            .field("blocked", &self.blocked)
            .field("default_link", &self.default_link)
            .field("trace_len", &self.trace.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}
