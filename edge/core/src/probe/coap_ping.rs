//! CoAP ping (RFC 7252 §4.3): an empty confirmable message, answered by a reset with the same
//! message ID. Built and checked with `qos-coap`'s codec.

use qos_coap::msg::peek_header;
use qos_coap::{Code, MessageType, MessageWriter, WriteError};

/// Length of a ping on the wire (a bare header).
pub const PING_LEN: usize = qos_coap::msg::HEADER_LEN;

/// What a received datagram means for a ping with a given message ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PingReply {
    /// The RST with our message ID: the peer is a CoAP endpoint and it is up.
    Pong,
    /// Something else with our message ID (e.g. an ACK): the peer does not answer pings as
    /// RFC 7252 says.
    Unexpected,
    /// Not about our ping (another message ID, or not CoAP): keep waiting.
    NotOurs,
}

/// Write the ping (empty CON, no token) with `message_id` into `buf`. Returns its length.
pub fn build_ping(buf: &mut [u8], message_id: u16) -> Result<usize, WriteError> {
    let w = MessageWriter::new(buf, MessageType::Confirmable, Code::EMPTY, message_id, &[])?;
    Ok(w.finish())
}

/// Judge `datagram` as the answer to the ping with `message_id`.
pub fn check_reply(datagram: &[u8], message_id: u16) -> PingReply {
    match peek_header(datagram) {
        Some((_, mid)) if mid != message_id => PingReply::NotOurs,
        Some((MessageType::Reset, _)) => PingReply::Pong,
        Some(_) => PingReply::Unexpected,
        None => PingReply::NotOurs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qos_coap::Message;

    #[test]
    fn ping_is_an_empty_con() {
        let mut buf = [0u8; 16];
        let n = build_ping(&mut buf, 0x1234).unwrap();
        assert_eq!(n, PING_LEN);
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!(m.ty(), MessageType::Confirmable);
        assert!(m.is_empty());
        assert_eq!(m.message_id(), 0x1234);
        assert!(build_ping(&mut [0u8; 3], 1).is_err());
    }

    #[test]
    fn replies_are_recognised() {
        let mut buf = [0u8; 16];
        let n = MessageWriter::new(&mut buf, MessageType::Reset, Code::EMPTY, 7, &[])
            .unwrap()
            .finish();
        assert_eq!(check_reply(&buf[..n], 7), PingReply::Pong);
        assert_eq!(check_reply(&buf[..n], 8), PingReply::NotOurs);
        let n = MessageWriter::new(&mut buf, MessageType::Acknowledgement, Code::EMPTY, 7, &[])
            .unwrap()
            .finish();
        assert_eq!(check_reply(&buf[..n], 7), PingReply::Unexpected);
        assert_eq!(check_reply(b"", 7), PingReply::NotOurs);
        assert_eq!(check_reply(b"\xff\x00\x00\x07", 7), PingReply::NotOurs);
    }

    #[test]
    fn a_real_endpoint_answers_the_ping_with_rst() {
        let mut ep: qos_coap::Endpoint<u8, 4, 8, 256> =
            qos_coap::Endpoint::new(qos_coap::Config::default(), 3).unwrap();
        let mut buf = [0u8; 64];
        let n = build_ping(&mut buf, 42).unwrap();
        let ping = buf[..n].to_vec();
        let _ = ep.handle_datagram(0, 1, &ping);
        let (to, n) = ep.poll_transmit(0, &mut buf).expect("an answer");
        assert_eq!(to, 1);
        assert_eq!(check_reply(&buf[..n], 42), PingReply::Pong);
    }
}
