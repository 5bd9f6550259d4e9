//! CoAP over TCP/TLS (RFC 8323): a byte stream split into frames with `frame_len` and fed to a
//! `StreamEndpoint` (one connection, CSM first or not), answering requests, with one request
//! of its own in flight and time passing. Every frame parses alone; everything the endpoint
//! writes is a well-formed frame of the length it says.
//!
//! Input: repeated `[advance_ms: u8, len: u8, bytes: len]` chunks of the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_coap::msg::frame_len;
use qos_coap::{Code, Incoming, Message, Reliability, StreamConfig, StreamEndpoint};

type Ep = StreamEndpoint<u8, 4, 1152, 2>;

fn drain(ep: &mut Ep, now: u64, buf: &mut [u8]) {
    while let Some((_, n)) = ep.poll_transmit(now, buf) {
        assert_eq!(frame_len(&buf[..n]), Ok(Some(n)));
        Message::parse_frame(&buf[..n]).expect("the endpoint writes well-formed frames");
    }
    while ep.poll_event().is_some() {}
    while let Some(peer) = ep.poll_disconnect() {
        ep.disconnected(now, peer);
        ep.connected(now, peer);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ep = Ep::new(StreamConfig::default(), 7).expect("default config");
    let mut buf = [0u8; 1152];
    let mut now = 0u64;
    ep.connected(now, 1);
    let _ = ep.request(now, 1, Reliability::Confirmable, Code::POST, |w| {
        w.uri_path("u")?;
        w.payload(&[0x80])
    });
    drain(&mut ep, now, &mut buf);
    let mut stream: Vec<u8> = Vec::new();
    let mut rest = data;
    while let [advance, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        now += u64::from(*advance) * 997;
        stream.extend_from_slice(chunk);
        loop {
            match frame_len(&stream) {
                Ok(Some(n)) if n <= stream.len() => {
                    let frame: Vec<u8> = stream.drain(..n).collect();
                    let _ = Message::parse_frame(&frame);
                    if let Some(Incoming::Request(req)) = ep.handle_datagram(now, 1, &frame) {
                        let h = req.handle;
                        let _ = ep.respond(now, &h, Code::CONTENT, |w| w.payload(b"ok"));
                    }
                }
                Ok(_) => break,
                Err(_) => {
                    stream.clear();
                    break;
                }
            }
        }
        ep.handle_timeout(now);
        drain(&mut ep, now, &mut buf);
    }
});
