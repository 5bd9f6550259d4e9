//! Event trace, recorded when enabled with [`Net::set_trace`](crate::Net::set_trace),
//! to debug a failing seed or compare two runs.

use core::fmt;

use crate::link::Fault;

/// One thing that happened in the network, in the order it happened.
///
/// `id` numbers `send` calls from 0; `copy` is 0 for the original and 1 for
/// the duplicate. Payloads are not recorded, only their length.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<A> {
    /// `send` was called at `at`.
    Sent {
        /// Virtual time of the send.
        at: u64,
        /// Datagram id.
        id: u64,
        /// Sender.
        from: A,
        /// Destination.
        to: A,
        /// Payload length in bytes.
        len: usize,
    },
    /// The datagram was lost by the link's `loss` draw.
    DroppedLoss {
        /// Virtual time of the send.
        at: u64,
        /// Datagram id.
        id: u64,
        /// Sender.
        from: A,
        /// Destination.
        to: A,
    },
    /// The datagram (or one copy of it) was dropped because the link was blocked.
    DroppedPartition {
        /// Virtual time the drop took effect: the send, or the fault that cut
        /// the link while the copy was in flight.
        at: u64,
        /// Datagram id.
        id: u64,
        /// Copy number (0 or 1).
        copy: u8,
        /// Sender.
        from: A,
        /// Destination.
        to: A,
        /// `true` if the copy was already in flight when the link was cut.
        in_flight: bool,
    },
    /// The datagram will be delivered twice.
    Duplicated {
        /// Virtual time of the send.
        at: u64,
        /// Datagram id.
        id: u64,
        /// Sender.
        from: A,
        /// Destination.
        to: A,
    },
    /// A copy was put in flight.
    Queued {
        /// Virtual time of the send.
        at: u64,
        /// Datagram id.
        id: u64,
        /// Copy number (0 or 1).
        copy: u8,
        /// Sender.
        from: A,
        /// Destination.
        to: A,
        /// Virtual time at which it becomes deliverable.
        deliver_at: u64,
        /// `true` if it got the link's extra reordering delay.
        reordered: bool,
    },
    /// A copy was handed out by [`Net::deliver`](crate::Net::deliver).
    Delivered {
        /// Virtual time of arrival (`deliver_at`).
        at: u64,
        /// Datagram id.
        id: u64,
        /// Copy number (0 or 1).
        copy: u8,
        /// Sender.
        from: A,
        /// Destination.
        to: A,
        /// Virtual time of the send.
        sent_at: u64,
        /// Payload length in bytes.
        len: usize,
    },
    /// A fault took effect (scheduled or applied directly).
    FaultApplied {
        /// Virtual time the fault took effect.
        at: u64,
        /// The fault.
        fault: Fault<A>,
    },
}

impl<A> Event<A> {
    /// Virtual time of the event (for [`Event::Delivered`], the arrival time).
    pub fn at(&self) -> u64 {
        match *self {
            Event::Sent { at, .. }
            | Event::DroppedLoss { at, .. }
            | Event::DroppedPartition { at, .. }
            | Event::Duplicated { at, .. }
            | Event::Queued { at, .. }
            | Event::Delivered { at, .. }
            | Event::FaultApplied { at, .. } => at,
        }
    }
}

/// One line per event, e.g. `t=105 deliver #12.0 1 -> 3 (24 B, sent t=95)`.
impl<A: fmt::Debug> fmt::Display for Event<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Sent {
                at,
                id,
                from,
                to,
                len,
            } => write!(f, "t={at} send #{id} {from:?} -> {to:?} ({len} B)"),
            Event::DroppedLoss { at, id, from, to } => {
                write!(f, "t={at} drop-loss #{id} {from:?} -> {to:?}")
            }
            Event::DroppedPartition {
                at,
                id,
                copy,
                from,
                to,
                in_flight,
            } => write!(
                f,
                "t={at} drop-partition #{id}.{copy} {from:?} -> {to:?}{}",
                if *in_flight { " (in flight)" } else { "" }
            ),
            Event::Duplicated { at, id, from, to } => {
                write!(f, "t={at} duplicate #{id} {from:?} -> {to:?}")
            }
            Event::Queued {
                at,
                id,
                copy,
                from,
                to,
                deliver_at,
                reordered,
            } => write!(
                f,
                "t={at} queue #{id}.{copy} {from:?} -> {to:?} arrives t={deliver_at}{}",
                if *reordered { " (reordered)" } else { "" }
            ),
            Event::Delivered {
                at,
                id,
                copy,
                from,
                to,
                sent_at,
                len,
            } => write!(
                f,
                "t={at} deliver #{id}.{copy} {from:?} -> {to:?} ({len} B, sent t={sent_at})"
            ),
            Event::FaultApplied { at, fault } => write!(f, "t={at} fault {fault:?}"),
        }
    }
}

/// Formats the first `n` events of a trace, one per line, followed by a line
/// saying how many were left out. `Debug` prints the same text, so
/// `assert!(ok, "{:?}", TraceHead(net.trace(), 50))` works.
pub struct TraceHead<'a, A>(pub &'a [Event<A>], pub usize);

impl<A: fmt::Debug> fmt::Display for TraceHead<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TraceHead(events, n) = *self;
        for e in events.iter().take(n) {
            writeln!(f, "{e}")?;
        }
        if events.len() > n {
            writeln!(f, "... {} more events", events.len() - n)?;
        }
        Ok(())
    }
}

impl<A: fmt::Debug> fmt::Debug for TraceHead<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
