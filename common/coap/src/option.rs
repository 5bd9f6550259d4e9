//! Option numbers (RFC 7252 §5.10, RFC 7641, RFC 7959), option properties (§5.4.6), uint
//! option values (§3.2) and the Block1/Block2 value (RFC 7959 §2.2).

/// If-Match (RFC 7252 §5.10.8.1), critical, repeatable.
pub const IF_MATCH: u16 = 1;
/// Uri-Host (RFC 7252 §5.10.1), critical.
pub const URI_HOST: u16 = 3;
/// ETag (RFC 7252 §5.10.6), elective.
pub const ETAG: u16 = 4;
/// If-None-Match (RFC 7252 §5.10.8.2), critical, empty value.
pub const IF_NONE_MATCH: u16 = 5;
/// Observe (RFC 7641), elective, uint.
pub const OBSERVE: u16 = 6;
/// Uri-Port (RFC 7252 §5.10.1), critical, uint.
pub const URI_PORT: u16 = 7;
/// OSCORE (RFC 8613 §2): the endpoint carries it; `qos-oscore` reads it.
pub const OSCORE: u16 = 9;
/// Location-Path (RFC 7252 §5.10.7), elective, repeatable.
pub const LOCATION_PATH: u16 = 8;
/// Uri-Path (RFC 7252 §5.10.1), critical, repeatable: one segment per option.
pub const URI_PATH: u16 = 11;
/// Content-Format (RFC 7252 §5.10.3), elective, uint.
pub const CONTENT_FORMAT: u16 = 12;
/// Max-Age (RFC 7252 §5.10.5), elective, uint seconds.
pub const MAX_AGE: u16 = 14;
/// Uri-Query (RFC 7252 §5.10.1), critical, repeatable: one `key=value` per option.
pub const URI_QUERY: u16 = 15;
/// Accept (RFC 7252 §5.10.4), critical, uint.
pub const ACCEPT: u16 = 17;
/// Location-Query (RFC 7252 §5.10.7), elective, repeatable.
pub const LOCATION_QUERY: u16 = 20;
/// Block2 (RFC 7959 §2.1), critical: response payload block.
pub const BLOCK2: u16 = 23;
/// Block1 (RFC 7959 §2.1), critical: request payload block.
pub const BLOCK1: u16 = 27;
/// Size2 (RFC 7959 §4), elective, uint.
pub const SIZE2: u16 = 28;
/// Proxy-Uri (RFC 7252 §5.10.2), critical.
pub const PROXY_URI: u16 = 35;
/// Proxy-Scheme (RFC 7252 §5.10.2), critical.
pub const PROXY_SCHEME: u16 = 39;
/// Size1 (RFC 7252 §5.10.9), elective, uint.
pub const SIZE1: u16 = 60;

/// The option numbers this crate knows. An endpoint configured with
/// [`Config::reject_unknown_critical`](crate::Config::reject_unknown_critical) treats a
/// critical option outside this list as unrecognised (RFC 7252 §5.4.1).
pub const KNOWN: &[u16] = &[
    IF_MATCH,
    URI_HOST,
    ETAG,
    IF_NONE_MATCH,
    OBSERVE,
    URI_PORT,
    OSCORE,
    LOCATION_PATH,
    URI_PATH,
    CONTENT_FORMAT,
    MAX_AGE,
    URI_QUERY,
    ACCEPT,
    LOCATION_QUERY,
    BLOCK2,
    BLOCK1,
    SIZE2,
    PROXY_URI,
    PROXY_SCHEME,
    SIZE1,
];

/// Whether `number` is in [`KNOWN`].
pub fn is_known(number: u16) -> bool {
    KNOWN.contains(&number)
}

/// Critical options have odd numbers (RFC 7252 §5.4.6): an endpoint that does not recognise
/// one must reject the message.
pub const fn is_critical(number: u16) -> bool {
    number & 1 == 1
}

/// Unsafe-to-forward options have bit 1 set (RFC 7252 §5.4.6).
pub const fn is_unsafe(number: u16) -> bool {
    number & 2 == 2
}

/// NoCacheKey options have bits 2-4 equal to `111` (RFC 7252 §5.4.6).
pub const fn is_no_cache_key(number: u16) -> bool {
    number & 0x1e == 0x1c
}

/// Decodes a uint option value (RFC 7252 §3.2): big-endian, leading zeros allowed, at most 4
/// bytes. The empty value is 0. Returns `None` for longer values.
///
/// ```
/// assert_eq!(qos_coap::option::decode_uint(&[]), Some(0));
/// assert_eq!(qos_coap::option::decode_uint(&[0x01, 0x00]), Some(256));
/// assert_eq!(qos_coap::option::decode_uint(&[1, 2, 3, 4, 5]), None);
/// ```
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Encodes `value` as a minimal-length uint (RFC 7252 §3.2: no leading zero bytes, 0 is empty).
/// Returns the buffer and the number of bytes used at its end.
///
/// ```
/// let (buf, n) = qos_coap::option::encode_uint(300);
/// assert_eq!(&buf[4 - n..], &[0x01, 0x2c]);
/// assert_eq!(qos_coap::option::encode_uint(0).1, 0);
/// ```
pub fn encode_uint(value: u32) -> ([u8; 4], usize) {
    let bytes = value.to_be_bytes();
    let n = 4 - (value.leading_zeros() as usize / 8);
    (bytes, n)
}

/// Content-Format numbers (RFC 7252 §12.3 and the IANA registry).
pub mod content_format {
    /// `text/plain; charset=utf-8`.
    pub const TEXT: u16 = 0;
    /// `application/link-format` (RFC 6690).
    pub const LINK_FORMAT: u16 = 40;
    /// `application/xml`.
    pub const XML: u16 = 41;
    /// `application/octet-stream`.
    pub const OCTET: u16 = 42;
    /// `application/exi`.
    pub const EXI: u16 = 47;
    /// `application/json`.
    pub const JSON: u16 = 50;
    /// `application/cbor` (RFC 8949).
    pub const CBOR: u16 = 60;
}

/// The value of a Block1 or Block2 option (RFC 7959 §2.2): block number `num`, the `more` flag
/// and the size exponent `szx` (block size `2^(szx+4)`, 16 to 1024 bytes).
///
/// ```
/// use qos_coap::option::Block;
/// let b = Block::new(5, true, 6).unwrap(); // block 5 of 1024 bytes, more follow
/// assert_eq!(b.size(), 1024);
/// assert_eq!(b.offset(), 5 * 1024);
/// let (buf, n) = b.encode();
/// assert_eq!(Block::decode(&buf[3 - n..]), Some(b));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Block {
    num: u32,
    more: bool,
    szx: u8,
}

impl Block {
    /// The largest block number (20 bits, RFC 7959 §2.2).
    pub const MAX_NUM: u32 = (1 << 20) - 1;
    /// The largest size exponent for UDP (7 is reserved for BERT over TCP, RFC 8323).
    pub const MAX_SZX: u8 = 6;

    /// A block value; `None` if `num` exceeds 20 bits or `szx` exceeds 6.
    pub const fn new(num: u32, more: bool, szx: u8) -> Option<Block> {
        if num > Self::MAX_NUM || szx > Self::MAX_SZX {
            None
        } else {
            Some(Block { num, more, szx })
        }
    }

    /// The size exponent for a block size (16, 32, ..., 1024); `None` for other sizes.
    pub const fn szx_for_size(size: usize) -> Option<u8> {
        match size {
            16 => Some(0),
            32 => Some(1),
            64 => Some(2),
            128 => Some(3),
            256 => Some(4),
            512 => Some(5),
            1024 => Some(6),
            _ => None,
        }
    }

    /// Block number.
    pub const fn num(&self) -> u32 {
        self.num
    }

    /// Whether more blocks follow (M bit).
    pub const fn more(&self) -> bool {
        self.more
    }

    /// Size exponent.
    pub const fn szx(&self) -> u8 {
        self.szx
    }

    /// Block size in bytes: `2^(szx+4)`.
    pub const fn size(&self) -> usize {
        1 << (self.szx as usize + 4)
    }

    /// Byte offset of this block in the whole body: `num * size`.
    pub const fn offset(&self) -> usize {
        self.num as usize * self.size()
    }

    /// The option value as an integer: `num << 4 | more << 3 | szx`.
    pub const fn to_uint(&self) -> u32 {
        (self.num << 4) | ((self.more as u32) << 3) | self.szx as u32
    }

    /// Decodes an option value of 0 to 3 bytes. `None` for longer values or `szx == 7`.
    pub fn decode(value: &[u8]) -> Option<Block> {
        if value.len() > 3 {
            return None;
        }
        let v = decode_uint(value)?;
        Block::new(v >> 4, v & 0x8 != 0, (v & 0x7) as u8)
    }

    /// Encodes the value minimally; returns a buffer and the number of bytes used at its end.
    pub fn encode(&self) -> ([u8; 3], usize) {
        let (b, n) = encode_uint(self.to_uint());
        ([b[1], b[2], b[3]], n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_round_trip_and_minimal() {
        for v in [
            0u32,
            1,
            255,
            256,
            65535,
            65536,
            0xff_ffff,
            0x100_0000,
            u32::MAX,
        ] {
            let (b, n) = encode_uint(v);
            let enc = &b[4 - n..];
            assert_eq!(decode_uint(enc), Some(v));
            if v != 0 {
                assert_ne!(enc[0], 0, "minimal encoding has no leading zero");
            } else {
                assert!(enc.is_empty());
            }
        }
        assert_eq!(decode_uint(&[0, 0, 0, 7]), Some(7));
    }

    #[test]
    fn option_properties() {
        assert!(is_critical(URI_PATH));
        assert!(!is_critical(CONTENT_FORMAT));
        assert!(is_unsafe(URI_HOST));
        assert!(!is_unsafe(ETAG));
        assert!(is_no_cache_key(SIZE1));
        assert!(!is_no_cache_key(URI_PATH));
        assert!(is_known(BLOCK1));
        assert!(is_known(OSCORE));
        assert!(!is_known(13));
    }

    #[test]
    fn block_values() {
        let b = Block::new(0, false, 0).unwrap();
        assert_eq!(b.encode().1, 0, "block 0/16 bytes/no more encodes as empty");
        assert_eq!(Block::decode(&[]), Some(b));
        let b = Block::new(Block::MAX_NUM, true, 6).unwrap();
        let (buf, n) = b.encode();
        assert_eq!(n, 3);
        assert_eq!(Block::decode(&buf), Some(b));
        assert_eq!(Block::decode(&[0x17]), None, "szx 7 is reserved on UDP");
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None);
        assert_eq!(Block::new(Block::MAX_NUM + 1, false, 0), None);
        assert_eq!(Block::new(0, false, 7), None);
        assert_eq!(Block::decode(&[0x2e]), Block::new(2, true, 6));
        assert_eq!(Block::szx_for_size(1024), Some(6));
        assert_eq!(Block::szx_for_size(1000), None);
    }
}
