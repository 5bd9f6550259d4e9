//! Example: a toy stop-and-wait protocol (written here, sans-IO style: `now`
//! and datagrams in, datagrams and a deadline out) driven through a lossy,
//! duplicating, reordering simulated network in virtual time.

use qos_sim::{LinkConfig, Net};

const SENDER: u16 = 1;
const RECEIVER: u16 = 2;
const ITEMS: u32 = 500;
const RTO_MS: u64 = 100;

const DATA: u8 = b'D';
const ACK: u8 = b'A';

fn item(seq: u32) -> Vec<u8> {
    format!("item-{seq}-{}", seq.wrapping_mul(2_654_435_761)).into_bytes()
}

fn frame(kind: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn parse(bytes: &[u8]) -> (u8, u32, &[u8]) {
    let seq = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    (bytes[0], seq, &bytes[5..])
}

/// Sends items 0.. one at a time, retransmitting on a timer until acked.
struct Sender {
    next: u32,
    deadline: Option<u64>,
    transmissions: u32,
}

impl Sender {
    fn new() -> Self {
        Sender {
            next: 0,
            deadline: Some(0),
            transmissions: 0,
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.deadline
    }

    fn done(&self) -> bool {
        self.next == ITEMS
    }

    fn transmit(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        out.push(frame(DATA, self.next, &item(self.next)));
        self.transmissions += 1;
        self.deadline = Some(now + RTO_MS);
    }

    /// Timer expiry: (re)send the current item.
    fn on_timeout(&mut self, now: u64, out: &mut Vec<Vec<u8>>) {
        if self.deadline.is_some_and(|d| d <= now) && !self.done() {
            self.transmit(now, out);
        }
    }

    fn on_datagram(&mut self, now: u64, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        let (kind, seq, _) = parse(bytes);
        assert_eq!(kind, ACK);
        // Stale or duplicated acks are ignored.
        if seq == self.next {
            self.next += 1;
            if self.done() {
                self.deadline = None;
            } else {
                self.transmit(now, out);
            }
        }
    }
}

/// Hands items to the application exactly once and in order; acks everything
/// it has (so a lost ack is repaired by the retransmission).
struct Receiver {
    expected: u32,
    items: Vec<Vec<u8>>,
    stale_data: u32,
}

impl Receiver {
    fn on_datagram(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let (kind, seq, payload) = parse(bytes);
        assert_eq!(kind, DATA);
        assert!(seq <= self.expected, "sender ran ahead: {seq}");
        if seq == self.expected {
            self.items.push(payload.to_vec());
            self.expected += 1;
        } else {
            self.stale_data += 1;
        }
        Some(frame(ACK, seq, &[]))
    }
}

fn run(seed: u64) {
    let link = LinkConfig::perfect(0)
        .with_delay(5, 20)
        .with_loss(0.3)
        .with_duplicate(0.1)
        .with_reorder(0.2, 60);
    let mut net = Net::with_default_link(seed, link).traced();
    let mut sender = Sender::new();
    let mut receiver = Receiver {
        expected: 0,
        items: Vec::new(),
        stale_data: 0,
    };
    let mut out = Vec::new();
    let mut steps = 0u32;

    while let Some(now) = net.next_event_time(&[sender.poll_timeout()]) {
        steps += 1;
        assert!(
            steps < 1_000_000 && now < 100_000_000,
            "seed {seed}: no progress\n{}",
            net.trace_head(200)
        );
        while let Some(d) = net.deliver(now) {
            match d.to {
                RECEIVER => {
                    if let Some(ack) = receiver.on_datagram(&d.bytes) {
                        net.send(now, RECEIVER, SENDER, &ack);
                    }
                }
                SENDER => {
                    sender.on_datagram(now, &d.bytes, &mut out);
                    for f in out.drain(..) {
                        net.send(now, SENDER, RECEIVER, &f);
                    }
                }
                other => panic!("datagram to unknown node {other}"),
            }
        }
        sender.on_timeout(now, &mut out);
        for f in out.drain(..) {
            net.send(now, SENDER, RECEIVER, &f);
        }
    }

    assert!(
        sender.done(),
        "seed {seed}: sender stuck at {}",
        sender.next
    );
    let expected: Vec<Vec<u8>> = (0..ITEMS).map(item).collect();
    assert!(
        receiver.items == expected,
        "seed {seed}: receiver got {} items, not exactly-once in order\n{}",
        receiver.items.len(),
        net.trace_head(200)
    );

    // The run really went through loss, duplication and reordering, and the
    // receiver really had to discard repeats.
    let s = net.stats();
    assert!(s.dropped_loss > 100, "{s:?}");
    assert!(s.duplicated > 20, "{s:?}");
    assert!(s.reordered > 20, "{s:?}");
    assert!(receiver.stale_data > 50, "{}", receiver.stale_data);
    assert!(sender.transmissions > ITEMS + 100);
    assert_eq!(net.in_flight(), 0);
}

#[test]
fn stop_and_wait_delivers_every_item_exactly_once_in_order() {
    for seed in [1, 2, 3, 0xDEAD_BEEF, 42] {
        run(seed);
    }
}
