//! The sans-IO CoAP endpoint fed a sequence of datagrams from several peers, with time passing,
//! answering requests (piggybacked, deferred or separate) and with one client request of its
//! own in flight. Everything it transmits must parse as a CoAP message.
//!
//! Input: repeated `[peer: u8, advance_ms: u8, len: u8, datagram: len bytes]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_coap::{Code, Config, Endpoint, Incoming, Message, Reliability};

type Ep = Endpoint<u8, 4, 8, 1152, 64>;

fn drain(ep: &mut Ep, now: u64, buf: &mut [u8]) {
    while let Some((_, n)) = ep.poll_transmit(now, buf) {
        assert!(n <= buf.len());
        Message::parse(&buf[..n]).expect("the endpoint sends well-formed messages");
    }
    while ep.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let mut ep = Ep::new(Config::default(), 7).expect("default config");
    let mut buf = [0u8; 1152];
    let mut now = 0u64;
    let _ = ep.request(now, 1, Reliability::Confirmable, Code::POST, |w| {
        w.uri_path("u")?;
        w.payload(&[0x80])
    });
    drain(&mut ep, now, &mut buf);
    let mut rest = data;
    let mut i = 0u32;
    while let [peer, advance, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += u64::from(*advance) * 37;
        i += 1;
        if let Some(Incoming::Request(mut req)) = ep.handle_datagram(now, *peer % 4, datagram) {
            match i % 3 {
                0 => {
                    let _ = ep.respond(now, &req.handle, Code::CHANGED, |w| w.payload(b"ok"));
                }
                1 => {
                    if ep.defer(now, &mut req.handle).is_ok() {
                        let _ = ep.respond_separate(now, &mut req.handle, Code::CONTENT, |w| {
                            w.payload(b"later")
                        });
                    }
                }
                _ => {
                    let _ = ep.respond(now, &req.handle, Code::NOT_FOUND, |_| Ok(()));
                }
            }
        }
        drain(&mut ep, now, &mut buf);
        ep.handle_timeout(now);
        drain(&mut ep, now, &mut buf);
    }
    // Let every timer run out.
    for _ in 0..64 {
        match ep.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                ep.handle_timeout(now);
                drain(&mut ep, now, &mut buf);
            }
            None => break,
        }
    }
    let _ = ep.stats();
});
