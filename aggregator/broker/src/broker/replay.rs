//! Paced replay: which queued batch goes upstream next when a backlog waits.
//!
//! After hours without the upstream, or a restart with a full queue, the queue holds a
//! backlog; plain append order would make every fresh batch wait until the whole backlog has
//! drained, so the super-manager would see nothing current for as long. Instead the broker
//! tells two kinds of batches apart by their age (the Unix time [`Queue::append`] recorded):
//!
//! - **backlog**: queued more than [`ReplayConfig::live_after_ms`] ago;
//! - **live**: queued more recently.
//!
//! While backlog waits and a live batch is *eligible* (see the order rule), at most
//! [`ReplayConfig::backlog_per_live`] backlog batches are started in a row before the oldest
//! eligible live batch goes; with nothing live waiting, the backlog goes at full speed, oldest
//! first. The backlog therefore keeps at least `backlog_per_live / (backlog_per_live + 1)` of
//! the upstream's exchanges while live data keeps flowing, and a live batch waits behind at
//! most `backlog_per_live` backlog batches started after it was queued (plus those that may
//! have been in flight then, `upstream_window` at most, and any older live batches).
//!
//! # The order rule
//! *In order* means per edge: every edge's batches reach the upstream in the order the edge
//! sent them (the order they were queued). Across edges there is no promised order: a live
//! batch of edge B may overtake the backlog of edge A. A live batch is eligible only when its
//! edge has no older batch in the queue, so it never overtakes its own edge's backlog: the
//! super-manager counts a forward jump of an edge's sequence numbers as a gap, and a late
//! record as neither gap nor duplicate, so overtaking within an edge would report false gaps.
//! An edge with backlog of its own therefore catches up first, then its data is live again.
//! Exactly once at the store is unaffected: a batch leaves the queue only on the upstream's
//! 2.xx, whichever lane it went in, and the store deduplicates by (edge, seq).
//!
//! `live_after_ms = 0` turns pacing off: plain append order.
//!
//! # The window
//! With `upstream_window` above 1 several batches are on their way at once, never two of one
//! edge: the pacer picks among the edges with nothing in flight, its head being the oldest
//! batch of such an edge among the [`LOOKAHEAD`] oldest of the queue.

use qos_wire::ids::EdgeId;

use crate::queue::{Queue, QueueError, QueuedBatch};

/// Batches looked at from the queue's head for one of an edge with nothing in flight: beyond,
/// the window is not filled further (one edge's long backlog at the head is sent one batch at
/// a time anyway, and scanning all of it for each pick would cost more than it gains).
pub const LOOKAHEAD: usize = 64;

/// How a backlog is replayed (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// A batch queued less than this many ms ago is live, older ones are backlog; 0: no
    /// pacing (append order).
    pub live_after_ms: u64,
    /// Backlog batches started in a row at most while an eligible live batch waits; 0: live
    /// batches always go first.
    pub backlog_per_live: u32,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            live_after_ms: 10_000,
            backlog_per_live: 4,
        }
    }
}

/// Which batch goes next; remembers how many backlog batches went in a row.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pacer {
    config: ReplayConfig,
    /// Backlog batches started since an eligible live batch began to wait.
    run: u32,
    /// Live batches sent ahead of older backlog.
    pub(crate) live_ahead: u64,
}

impl Pacer {
    pub(crate) fn new(config: ReplayConfig) -> Self {
        Pacer {
            config,
            ..Pacer::default()
        }
    }

    /// The batch to send next, at Unix time `unix_now` (`None` when the broker has not
    /// learnt the time yet: append order), and its lane; call [`Pacer::started`] with the lane
    /// once it is on its way.
    ///
    /// `busy`: edges with a batch in flight ([`crate::BrokerConfig::upstream_window`]). None of
    /// their batches is picked, so each edge's batches still go one at a time and in order;
    /// the head is then the oldest batch of another edge among the [`LOOKAHEAD`] oldest.
    pub(crate) fn pick(
        &self,
        queue: &mut dyn Queue,
        unix_now: Option<u64>,
        busy: &[EdgeId],
    ) -> Result<Option<(QueuedBatch, Lane)>, QueueError> {
        let head = if busy.is_empty() {
            queue.oldest()?
        } else {
            // The first batch of an edge in queue order is that edge's oldest.
            match queue
                .heads(LOOKAHEAD)?
                .into_iter()
                .find(|(_, e)| !busy.contains(e))
            {
                Some((id, _)) => queue.get(id)?,
                None => None,
            }
        };
        let Some(head) = head else {
            return Ok(None);
        };
        let since = match unix_now {
            Some(now) if self.config.live_after_ms > 0 => {
                now.saturating_sub(self.config.live_after_ms)
            }
            _ => return Ok(Some((head, Lane::Fifo))),
        };
        if head.queued_at_ms >= since {
            // No backlog: the oldest batch is live itself.
            return Ok(Some((head, Lane::Fifo)));
        }
        // A busy edge's oldest batch is the one in flight.
        let live = queue
            .oldest_live(since)?
            .filter(|l| !busy.contains(&l.edge));
        Ok(Some(match live {
            Some(live) if self.run >= self.config.backlog_per_live => (live, Lane::LiveFirst),
            Some(_) => (head, Lane::BacklogBeforeLive),
            None => (head, Lane::Fifo),
        }))
    }

    /// The batch picked in `lane` was sent.
    pub(crate) fn started(&mut self, lane: Lane) {
        match lane {
            Lane::Fifo => self.run = 0,
            Lane::BacklogBeforeLive => self.run += 1,
            Lane::LiveFirst => {
                self.run = 0;
                self.live_ahead += 1;
            }
        }
    }
}

/// Why a batch was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The oldest batch, nothing live waiting (or no backlog, or pacing off).
    Fifo,
    /// The oldest (backlog) batch while an eligible live batch waits.
    BacklogBeforeLive,
    /// A live batch ahead of older backlog.
    LiveFirst,
}
