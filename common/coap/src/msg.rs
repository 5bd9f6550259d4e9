//! The CoAP message codec (RFC 7252 §3): a checked, zero-copy view ([`Message`]) and a writer
//! into a caller's buffer ([`MessageWriter`]).
//!
//! [`Message::parse`] validates the whole datagram up front; afterwards no accessor can panic or
//! fail. The writer never panics either: it returns a [`WriteError`] when the buffer is full or
//! options come out of order.

use core::fmt;

use crate::error::{ParseError, WriteError};
use crate::option;

/// Size of the fixed header.
pub const HEADER_LEN: usize = 4;
/// The payload marker.
pub const PAYLOAD_MARKER: u8 = 0xff;
/// Longest token (RFC 7252 §3).
pub const MAX_TOKEN_LEN: usize = 8;
/// Longest encodable option value: 65535 + 269.
pub const MAX_OPTION_LEN: usize = 65535 + 269;

/// The message type (RFC 7252 §3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MessageType {
    /// Confirmable (CON, 0): retransmitted until acknowledged.
    Confirmable,
    /// Non-confirmable (NON, 1).
    NonConfirmable,
    /// Acknowledgement (ACK, 2).
    Acknowledgement,
    /// Reset (RST, 3).
    Reset,
}

impl MessageType {
    /// The 2-bit wire value.
    pub const fn bits(self) -> u8 {
        match self {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        }
    }

    /// From the 2-bit wire value (only the low two bits are used).
    pub const fn from_bits(bits: u8) -> MessageType {
        match bits & 3 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }
}

/// A message code `c.dd`: a 3-bit class and a 5-bit detail (RFC 7252 §3, §12.1).
///
/// ```
/// use qos_coap::Code;
/// assert_eq!(Code::CONTENT, Code::new(2, 5));
/// assert!(Code::CONTENT.is_response());
/// assert!(Code::POST.is_request());
/// assert_eq!(format!("{}", Code::NOT_FOUND), "4.04");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Code(u8);

impl Code {
    /// 0.00, the empty message.
    pub const EMPTY: Code = Code::new(0, 0);
    /// 0.01 GET.
    pub const GET: Code = Code::new(0, 1);
    /// 0.02 POST.
    pub const POST: Code = Code::new(0, 2);
    /// 0.03 PUT.
    pub const PUT: Code = Code::new(0, 3);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code::new(0, 4);
    /// 0.05 FETCH (RFC 8132).
    pub const FETCH: Code = Code::new(0, 5);
    /// 0.06 PATCH (RFC 8132).
    pub const PATCH: Code = Code::new(0, 6);
    /// 0.07 iPATCH (RFC 8132).
    pub const IPATCH: Code = Code::new(0, 7);
    /// 2.01 Created.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: Code = Code::new(2, 2);
    /// 2.03 Valid.
    pub const VALID: Code = Code::new(2, 3);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 2.31 Continue (RFC 7959).
    pub const CONTINUE: Code = Code::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.02 Bad Option.
    pub const BAD_OPTION: Code = Code::new(4, 2);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Code = Code::new(4, 3);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    /// 4.08 Request Entity Incomplete (RFC 7959).
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    /// 4.09 Conflict (RFC 8132).
    pub const CONFLICT: Code = Code::new(4, 9);
    /// 4.12 Precondition Failed.
    pub const PRECONDITION_FAILED: Code = Code::new(4, 12);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    /// 4.29 Too Many Requests (RFC 8516).
    pub const TOO_MANY_REQUESTS: Code = Code::new(4, 29);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    /// 5.01 Not Implemented.
    pub const NOT_IMPLEMENTED: Code = Code::new(5, 1);
    /// 5.02 Bad Gateway.
    pub const BAD_GATEWAY: Code = Code::new(5, 2);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);
    /// 5.04 Gateway Timeout.
    pub const GATEWAY_TIMEOUT: Code = Code::new(5, 4);
    /// 5.05 Proxying Not Supported.
    pub const PROXYING_NOT_SUPPORTED: Code = Code::new(5, 5);

    /// The code `class.detail`; `class` is masked to 3 bits and `detail` to 5.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code(((class & 0x7) << 5) | (detail & 0x1f))
    }

    /// From the raw byte.
    pub const fn from_raw(raw: u8) -> Code {
        Code(raw)
    }

    /// The raw byte.
    pub const fn raw(self) -> u8 {
        self.0
    }

    /// The class (0 request, 2 success, 4 client error, 5 server error).
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail (0-31).
    pub const fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// 0.00.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A request method code: class 0, detail 1-31.
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }

    /// A response code: class 2, 4 or 5.
    pub const fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }

    /// The server refused *this message's content* — 4.00 Bad Request, 4.02 Bad Option,
    /// 4.13 Request Entity Too Large, 4.15 Unsupported Content-Format — so sending the same
    /// request again, here or elsewhere, cannot succeed. Other 4.xx codes (4.04 Not Found,
    /// 4.05 Method Not Allowed, 4.01/4.03) say the server is the wrong one for this request:
    /// a sender with another server to try should try it rather than give the message up.
    pub const fn rejects_content(self) -> bool {
        matches!(self.0, 0x80 | 0x82 | 0x8d | 0x8f)
    }

    /// Reserved classes 1, 3, 6 and 7 (3 is used by signalling over TCP, RFC 8323, never on UDP).
    pub const fn is_reserved(self) -> bool {
        matches!(self.class(), 1 | 3 | 6 | 7)
    }
}

impl From<u8> for Code {
    fn from(raw: u8) -> Code {
        Code(raw)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

/// A token of 0 to 8 bytes, stored inline (`Copy`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Token {
    len: u8,
    bytes: [u8; MAX_TOKEN_LEN],
}

impl Token {
    /// A token from a slice of at most 8 bytes; `None` if longer.
    pub fn from_slice(token: &[u8]) -> Option<Token> {
        let mut bytes = [0u8; MAX_TOKEN_LEN];
        bytes.get_mut(..token.len())?.copy_from_slice(token);
        Some(Token {
            len: token.len() as u8,
            bytes,
        })
    }

    /// The token bytes.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(")?;
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// The type and message ID of a datagram whose first byte says version 1, without any other
/// validation. The endpoint uses it to reject (RST) a confirmable message it cannot parse
/// (RFC 7252 §4.2).
pub fn peek_header(bytes: &[u8]) -> Option<(MessageType, u16)> {
    let b0 = *bytes.first()?;
    let id = [*bytes.get(2)?, *bytes.get(3)?];
    if b0 >> 6 != 1 {
        return None;
    }
    Some((MessageType::from_bits(b0 >> 4), u16::from_be_bytes(id)))
}

/// One option decoded at `pos`: its number, the value range, and the position after it.
/// `Ok(None)` when `pos` is the end of the datagram or the payload marker.
struct RawOption {
    number: u16,
    start: usize,
    end: usize,
}

fn ext_field(buf: &[u8], pos: &mut usize, nibble: u8) -> Result<u32, ParseError> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let b = *buf.get(*pos).ok_or(ParseError::Truncated)?;
            *pos += 1;
            Ok(u32::from(b) + 13)
        }
        14 => {
            let hi = *buf.get(*pos).ok_or(ParseError::Truncated)?;
            let lo = *buf.get(*pos + 1).ok_or(ParseError::Truncated)?;
            *pos += 2;
            Ok(u32::from(u16::from_be_bytes([hi, lo])) + 269)
        }
        _ => Err(ParseError::ReservedNibble),
    }
}

/// Decodes the option whose header starts at `pos` (which must not be the end or the marker).
fn decode_option(buf: &[u8], pos: usize, prev: u16) -> Result<(RawOption, usize), ParseError> {
    let first = *buf.get(pos).ok_or(ParseError::Truncated)?;
    let mut p = pos + 1;
    let delta = ext_field(buf, &mut p, first >> 4)?;
    let len = ext_field(buf, &mut p, first & 0xf)? as usize;
    let number = u32::from(prev) + delta;
    let number = u16::try_from(number).map_err(|_| ParseError::OptionNumber)?;
    let end = p.checked_add(len).ok_or(ParseError::Truncated)?;
    if end > buf.len() {
        return Err(ParseError::Truncated);
    }
    Ok((
        RawOption {
            number,
            start: p,
            end,
        },
        end,
    ))
}

/// Checks the options and payload from `options_start` to the end of `buf` (the part shared by
/// datagrams and stream frames); returns where the options end and the payload starts.
fn parse_body(buf: &[u8], options_start: usize) -> Result<(usize, usize), ParseError> {
    let mut pos = options_start;
    let mut number = 0u16;
    loop {
        match buf.get(pos) {
            None => return Ok((pos, pos)),
            Some(&PAYLOAD_MARKER) => {
                if pos + 1 == buf.len() {
                    return Err(ParseError::EmptyPayload);
                }
                return Ok((pos, pos + 1));
            }
            Some(_) => {
                let (opt, next) = decode_option(buf, pos, number)?;
                number = opt.number;
                pos = next;
            }
        }
    }
}

/// The start of a stream frame (RFC 8323 §3.2): `Len | TKL`, extended length, code, token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    /// Bytes of options and payload.
    body: usize,
    /// Where the token starts (the code is the byte before).
    token_at: usize,
    tkl: usize,
}

impl FrameHead {
    fn total(&self) -> usize {
        self.token_at + self.tkl + self.body
    }
}

/// Reads a frame's head; `Ok(None)` while `buf` is too short to hold it.
fn frame_head(buf: &[u8]) -> Result<Option<FrameHead>, ParseError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let tkl = usize::from(b0 & 0xf);
    if tkl > MAX_TOKEN_LEN {
        return Err(ParseError::TokenLength);
    }
    let ext = match b0 >> 4 {
        13 => 1,
        14 => 2,
        15 => 4,
        _ => 0,
    };
    let Some(len_bytes) = buf.get(1..1 + ext) else {
        return Ok(None);
    };
    let mut ext_value = 0usize;
    for b in len_bytes {
        ext_value = (ext_value << 8) | usize::from(*b);
    }
    let body = match b0 >> 4 {
        13 => ext_value + 13,
        14 => ext_value + 269,
        15 => ext_value
            .checked_add(65805)
            .ok_or(ParseError::FrameLength)?,
        n => usize::from(n),
    };
    Ok(Some(FrameHead {
        body,
        token_at: 1 + ext + 1,
        tkl,
    }))
}

/// The total length of the stream frame (RFC 8323 §3.2) at the start of `buf`, once enough of
/// it arrived to tell: `Ok(None)` while the length fields are incomplete. A driver reading a
/// TCP or TLS stream appends to a buffer, and hands each complete frame (`buf[..n]` once
/// `buf.len() >= n`) to [`Message::parse_frame`] or a stream endpoint.
///
/// ```
/// use qos_coap::msg::frame_len;
/// assert_eq!(frame_len(&[]), Ok(None));
/// assert_eq!(frame_len(&[0x21, 0x01]), Ok(Some(5)));
/// // Len nibble 13: one extended byte, body 13 + 2.
/// assert_eq!(frame_len(&[0xd0]), Ok(None));
/// assert_eq!(frame_len(&[0xd0, 2, 0x45]), Ok(Some(3 + 15)));
/// ```
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    Ok(frame_head(buf)?.map(|h| h.total()))
}

/// A validated, zero-copy view of a CoAP message.
///
/// ```
/// use qos_coap::{Code, Message, MessageType};
/// // CON GET, MID 0x1234, token 0xAB, Uri-Path "q"
/// let bytes = [0x41, 0x01, 0x12, 0x34, 0xab, 0xb1, b'q'];
/// let m = Message::parse(&bytes).unwrap();
/// assert_eq!(m.ty(), MessageType::Confirmable);
/// assert_eq!(m.code(), Code::GET);
/// assert_eq!(m.message_id(), 0x1234);
/// assert_eq!(m.token(), &[0xab]);
/// assert!(m.uri_path().eq([&b"q"[..]]));
/// assert!(m.payload().is_empty());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    buf: &'a [u8],
    /// Where the code byte is: 1 in a datagram, after the length fields in a stream frame.
    code_at: usize,
    /// A stream frame (RFC 8323 §3.2): no type, no message ID.
    stream: bool,
    /// Start of the options (after the token).
    options_start: usize,
    /// End of the options (the payload marker, or the end of the datagram).
    options_end: usize,
    /// Start of the payload (the end of the datagram when there is none).
    payload_start: usize,
}

impl<'a> Message<'a> {
    /// Validates a datagram and returns a view of it.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let (b0, code) = match buf {
            [b0, code, _, _, ..] => (*b0, *code),
            _ => return Err(ParseError::TooShort),
        };
        if b0 >> 6 != 1 {
            return Err(ParseError::Version);
        }
        let tkl = usize::from(b0 & 0xf);
        if tkl > MAX_TOKEN_LEN {
            return Err(ParseError::TokenLength);
        }
        let options_start = HEADER_LEN + tkl;
        if buf.len() < options_start {
            return Err(ParseError::Truncated);
        }
        if code == 0 && buf.len() != HEADER_LEN {
            return Err(ParseError::NonEmptyEmpty);
        }
        let (options_end, payload_start) = parse_body(buf, options_start)?;
        Ok(Message {
            buf,
            code_at: 1,
            stream: false,
            options_start,
            options_end,
            payload_start,
        })
    }

    /// Validates exactly one stream frame (CoAP over TCP or TLS, RFC 8323 §3.2) and returns a
    /// view of it: `buf` must hold the whole frame and nothing more (split a byte stream with
    /// [`frame_len`]). Options and payload are checked by the same code as a datagram's.
    ///
    /// ```
    /// use qos_coap::{Code, Message};
    /// // Len 2 (Uri-Path "q"), TKL 1, GET, token 0xAB.
    /// let bytes = [0x21, 0x01, 0xab, 0xb1, b'q'];
    /// let m = Message::parse_frame(&bytes).unwrap();
    /// assert_eq!(m.code(), Code::GET);
    /// assert_eq!(m.token(), &[0xab]);
    /// assert!(m.path_is("q"));
    /// assert!(m.is_stream());
    /// ```
    pub fn parse_frame(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let head = frame_head(buf)?.ok_or(ParseError::TooShort)?;
        if head.total() != buf.len() {
            return Err(ParseError::FrameLength);
        }
        let options_start = head.token_at + head.tkl;
        let (options_end, payload_start) = parse_body(buf, options_start)?;
        Ok(Message {
            buf,
            code_at: head.token_at - 1,
            stream: true,
            options_start,
            options_end,
            payload_start,
        })
    }

    /// Whether this is a stream frame (RFC 8323) rather than a datagram (RFC 7252).
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    fn byte(&self, i: usize) -> u8 {
        self.buf.get(i).copied().unwrap_or(0)
    }

    /// The message type. A stream frame has none (RFC 8323 §3.2): it reports
    /// [`MessageType::NonConfirmable`].
    pub fn ty(&self) -> MessageType {
        if self.stream {
            return MessageType::NonConfirmable;
        }
        MessageType::from_bits(self.byte(0) >> 4)
    }

    /// The code.
    pub fn code(&self) -> Code {
        Code(self.byte(self.code_at))
    }

    /// The message ID; 0 for a stream frame, which has none.
    pub fn message_id(&self) -> u16 {
        if self.stream {
            return 0;
        }
        u16::from_be_bytes([self.byte(2), self.byte(3)])
    }

    /// The token (0 to 8 bytes).
    pub fn token(&self) -> &'a [u8] {
        let start = if self.stream {
            self.code_at + 1
        } else {
            HEADER_LEN
        };
        self.buf.get(start..self.options_start).unwrap_or(&[])
    }

    /// An empty message: code 0.00 (which parse guarantees has nothing but the header).
    pub fn is_empty(&self) -> bool {
        self.code().is_empty()
    }

    /// The options in wire order (ascending number), as `(number, value)`.
    pub fn options(&self) -> Options<'a> {
        Options {
            buf: self.buf.get(..self.options_end).unwrap_or(&[]),
            pos: self.options_start,
            number: 0,
        }
    }

    /// The payload (empty when there is no payload marker).
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.payload_start..).unwrap_or(&[])
    }

    /// The first value of option `number`.
    pub fn option(&self, number: u16) -> Option<&'a [u8]> {
        self.options_numbered(number).next()
    }

    /// All values of option `number`, in order.
    pub fn options_numbered(&self, number: u16) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.options()
            .skip_while(move |(n, _)| *n < number)
            .take_while(move |(n, _)| *n == number)
            .map(|(_, v)| v)
    }

    /// The first value of option `number` as a uint; `None` if absent or longer than 4 bytes.
    pub fn uint_option(&self, number: u16) -> Option<u32> {
        self.option(number).and_then(option::decode_uint)
    }

    /// The Uri-Path segments.
    pub fn uri_path(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.options_numbered(option::URI_PATH)
    }

    /// Whether the Uri-Path equals `path` (segments separated by `/`, leading `/` optional).
    ///
    /// ```
    /// # use qos_coap::Message;
    /// let bytes = [0x40, 0x01, 0, 1, 0xb4, b'.', b'w', b'k', b'c', 0x04, b'c', b'o', b'r', b'e'];
    /// let m = Message::parse(&bytes).unwrap();
    /// assert!(m.path_is("/.wkc/core"));
    /// assert!(!m.path_is(".wkc"));
    /// ```
    pub fn path_is(&self, path: &str) -> bool {
        let want = path.split('/').filter(|s| !s.is_empty()).map(str::as_bytes);
        self.uri_path().eq(want)
    }

    /// The Uri-Query items.
    pub fn uri_queries(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.options_numbered(option::URI_QUERY)
    }

    /// The Content-Format; `None` if absent or not a 16-bit uint.
    pub fn content_format(&self) -> Option<u16> {
        self.uint_option(option::CONTENT_FORMAT)
            .and_then(|v| u16::try_from(v).ok())
    }

    /// The first critical option not in [`option::KNOWN`], if any (RFC 7252 §5.4.1).
    pub fn unknown_critical_option(&self) -> Option<u16> {
        self.options()
            .map(|(n, _)| n)
            .find(|n| option::is_critical(*n) && !option::is_known(*n))
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("ty", &self.ty())
            .field("code", &format_args!("{}", self.code()))
            .field("mid", &self.message_id())
            .field(
                "token",
                &Token::from_slice(self.token()).unwrap_or_default(),
            )
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Message<'_> {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(
            f,
            "Message {{ ty: {}, code: {}, mid: {}, token: {=[u8]}, payload_len: {} }}",
            self.ty(),
            self.code(),
            self.message_id(),
            self.token(),
            self.payload().len()
        )
    }
}

/// Iterator over the options of a [`Message`], yielding `(number, value)`.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    buf: &'a [u8],
    pos: usize,
    number: u16,
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        // The message was validated, so this cannot fail; stop rather than panic if it did.
        let (opt, next) = decode_option(self.buf, self.pos, self.number).ok()?;
        self.pos = next;
        self.number = opt.number;
        Some((opt.number, self.buf.get(opt.start..opt.end)?))
    }
}

/// Writes a message into a caller's buffer: header and token first ([`MessageWriter::new`]),
/// then options in ascending number order, then the payload.
///
/// ```
/// use qos_coap::{option, Code, Message, MessageType, MessageWriter};
/// let mut buf = [0u8; 64];
/// let mut w = MessageWriter::new(&mut buf, MessageType::Confirmable, Code::POST, 7, &[1, 2]).unwrap();
/// w.uri_path("s/1").unwrap();
/// w.uint_option(option::CONTENT_FORMAT, u32::from(option::content_format::CBOR)).unwrap();
/// w.payload(&[0xa0]).unwrap();
/// let n = w.finish();
/// let m = Message::parse(&buf[..n]).unwrap();
/// assert!(m.path_is("s/1"));
/// assert_eq!(m.content_format(), Some(60));
/// assert_eq!(m.payload(), &[0xa0]);
/// ```
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    last_option: u16,
    in_payload: bool,
    /// Where the code byte is.
    code_at: usize,
    /// A stream frame: the token length, and where the options start (the head is written,
    /// and the body moved up against it, by `finish`).
    stream: Option<(usize, usize)>,
}

/// Room reserved for a stream frame's head: `Len | TKL`, 4 extended length bytes, code.
const FRAME_HEAD_ROOM: usize = 1 + 4 + 1;

fn ext_parts(v: usize) -> (u8, [u8; 2], usize) {
    if v < 13 {
        (v as u8, [0, 0], 0)
    } else if v < 269 {
        (13, [(v - 13) as u8, 0], 1)
    } else {
        let x = ((v - 269) as u16).to_be_bytes();
        (14, x, 2)
    }
}

impl<'b> MessageWriter<'b> {
    /// Starts a message: writes the header and the token.
    pub fn new(
        buf: &'b mut [u8],
        ty: MessageType,
        code: Code,
        message_id: u16,
        token: &[u8],
    ) -> Result<MessageWriter<'b>, WriteError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(WriteError::TokenTooLong);
        }
        let end = HEADER_LEN + token.len();
        let out = buf.get_mut(..end).ok_or(WriteError::BufferTooSmall)?;
        let mid = message_id.to_be_bytes();
        let (head, tok) = out.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&[
            0x40 | (ty.bits() << 4) | token.len() as u8,
            code.raw(),
            mid[0],
            mid[1],
        ]);
        tok.copy_from_slice(token);
        Ok(MessageWriter {
            buf,
            len: end,
            last_option: 0,
            in_payload: false,
            code_at: 1,
            stream: None,
        })
    }

    /// Starts a stream frame (CoAP over TCP or TLS, RFC 8323 §3.2): no type, no message ID.
    /// Options and payload are written as for a datagram; [`finish`](Self::finish) writes the
    /// length fields and returns the frame's length (the frame starts at `buf[0]`).
    ///
    /// ```
    /// use qos_coap::{Code, Message, MessageWriter};
    /// let mut buf = [0u8; 64];
    /// let mut w = MessageWriter::new_frame(&mut buf, Code::GET, &[0xab]).unwrap();
    /// w.uri_path("q").unwrap();
    /// let n = w.finish();
    /// assert_eq!(&buf[..n], &[0x21, 0x01, 0xab, 0xb1, b'q']);
    /// assert!(Message::parse_frame(&buf[..n]).unwrap().path_is("q"));
    /// ```
    pub fn new_frame(
        buf: &'b mut [u8],
        code: Code,
        token: &[u8],
    ) -> Result<MessageWriter<'b>, WriteError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(WriteError::TokenTooLong);
        }
        let end = FRAME_HEAD_ROOM + token.len();
        let out = buf.get_mut(..end).ok_or(WriteError::BufferTooSmall)?;
        let (head, tok) = out.split_at_mut(FRAME_HEAD_ROOM);
        head[FRAME_HEAD_ROOM - 1] = code.raw();
        tok.copy_from_slice(token);
        Ok(MessageWriter {
            buf,
            len: end,
            last_option: 0,
            in_payload: false,
            code_at: FRAME_HEAD_ROOM - 1,
            stream: Some((token.len(), end)),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(WriteError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Changes the code in the header already written.
    pub fn set_code(&mut self, code: Code) {
        if let Some(b) = self.buf.get_mut(self.code_at) {
            *b = code.raw();
        }
    }

    /// Appends an option. Numbers must not decrease (repeating a number is allowed).
    /// Nothing is written on error.
    pub fn option(&mut self, number: u16, value: &[u8]) -> Result<(), WriteError> {
        if self.in_payload {
            return Err(WriteError::AfterPayload);
        }
        if number < self.last_option {
            return Err(WriteError::OptionOrder);
        }
        if value.len() > MAX_OPTION_LEN {
            return Err(WriteError::ValueTooLong);
        }
        let (dn, dx, dl) = ext_parts(usize::from(number - self.last_option));
        let (ln, lx, ll) = ext_parts(value.len());
        let total = 1 + dl + ll + value.len();
        if self.len + total > self.buf.len() {
            return Err(WriteError::BufferTooSmall);
        }
        self.put(&[(dn << 4) | ln])?;
        self.put(dx.get(..dl).unwrap_or(&[]))?;
        self.put(lx.get(..ll).unwrap_or(&[]))?;
        self.put(value)?;
        self.last_option = number;
        Ok(())
    }

    /// Appends a uint option, minimally encoded (RFC 7252 §3.2).
    pub fn uint_option(&mut self, number: u16, value: u32) -> Result<(), WriteError> {
        let (b, n) = option::encode_uint(value);
        self.option(number, b.get(4 - n..).unwrap_or(&[]))
    }

    /// Appends a Block1/Block2 option.
    pub fn block_option(&mut self, number: u16, block: option::Block) -> Result<(), WriteError> {
        self.uint_option(number, block.to_uint())
    }

    /// Appends one Uri-Path option per non-empty `/`-separated segment of `path`.
    pub fn uri_path(&mut self, path: &str) -> Result<(), WriteError> {
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            self.option(option::URI_PATH, seg.as_bytes())?;
        }
        Ok(())
    }

    /// Appends payload bytes. The first non-empty call writes the payload marker; later calls
    /// append. An empty payload writes nothing. Nothing is written on error.
    pub fn payload(&mut self, data: &[u8]) -> Result<(), WriteError> {
        if data.is_empty() {
            return Ok(());
        }
        let marker = usize::from(!self.in_payload);
        if self.len + marker + data.len() > self.buf.len() {
            return Err(WriteError::BufferTooSmall);
        }
        if !self.in_payload {
            self.put(&[PAYLOAD_MARKER])?;
            self.in_payload = true;
        }
        self.put(data)
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.len
    }

    /// Finishes the message; returns its length. A stream frame gets its length fields here
    /// and its body is moved up against them, so it starts at `buf[0]` too.
    pub fn finish(self) -> usize {
        let Some((tkl, body_at)) = self.stream else {
            return self.len;
        };
        let body = self.len - body_at;
        let (nibble, ext): (u8, &[u8]) = match body {
            0..=12 => (body as u8, &[]),
            13..=268 => (13, &[(body - 13) as u8]),
            269..=65804 => (14, &((body - 269) as u16).to_be_bytes()),
            _ => (15, &((body - 65805) as u32).to_be_bytes()),
        };
        let token_at = 1 + ext.len() + 1;
        let code = self.buf.get(self.code_at).copied().unwrap_or(0);
        // The head shrinks from its reserved room: move token and body down.
        self.buf.copy_within(FRAME_HEAD_ROOM..self.len, token_at);
        if let Some(b) = self.buf.get_mut(0) {
            *b = (nibble << 4) | tkl as u8;
        }
        if let Some(dst) = self.buf.get_mut(1..1 + ext.len()) {
            dst.copy_from_slice(ext);
        }
        if let Some(b) = self.buf.get_mut(token_at - 1) {
            *b = code;
        }
        token_at + tkl + body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        ty: MessageType,
        code: Code,
        mid: u16,
        token: &[u8],
        options: &[(u16, &[u8])],
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, WriteError> {
        let mut w = MessageWriter::new(buf, ty, code, mid, token)?;
        for (n, v) in options {
            w.option(*n, v)?;
        }
        w.payload(payload)?;
        Ok(w.finish())
    }

    #[test]
    fn round_trip_every_type() {
        let long = [0x5au8; 300];
        let opts: &[(u16, &[u8])] = &[
            (option::URI_HOST, b"h"),
            (option::URI_PATH, b"a"),
            (option::URI_PATH, b""),
            (option::URI_PATH, &long[..13]),
            (option::CONTENT_FORMAT, &[60]),
            (option::URI_QUERY, b"k=v"),
            (option::SIZE1, &long[..269]),
            (2000, &long[..300]),
        ];
        for ty in [
            MessageType::Confirmable,
            MessageType::NonConfirmable,
            MessageType::Acknowledgement,
            MessageType::Reset,
        ] {
            let mut buf = [0u8; 1024];
            let n = write(
                ty,
                Code::CONTENT,
                0xbeef,
                &[1, 2, 3],
                opts,
                b"body",
                &mut buf,
            )
            .unwrap();
            let m = Message::parse(&buf[..n]).unwrap();
            assert_eq!(m.ty(), ty);
            assert_eq!(m.code(), Code::CONTENT);
            assert_eq!(m.message_id(), 0xbeef);
            assert_eq!(m.token(), &[1, 2, 3]);
            assert!(m.options().eq(opts.iter().copied()));
            assert_eq!(m.payload(), b"body");
            assert_eq!(m.content_format(), Some(60));
            assert_eq!(m.uri_path().count(), 3);
            assert!(m.uri_queries().eq([&b"k=v"[..]]));
            assert_eq!(m.option(2000), Some(&long[..300]));
            assert_eq!(m.option(5), None);
            assert_eq!(m.unknown_critical_option(), None);

            // Empty message of every type: exactly the header.
            let mut buf = [0u8; 4];
            let n = write(ty, Code::EMPTY, 9, &[], &[], &[], &mut buf).unwrap();
            assert_eq!(n, 4);
            let m = Message::parse(&buf[..n]).unwrap();
            assert!(m.is_empty());
            assert_eq!(m.ty(), ty);
            assert_eq!(m.message_id(), 9);
        }
    }

    #[test]
    fn rejects_malformed() {
        // TKL 9.
        assert_eq!(
            Message::parse(&[0x49, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            Err(ParseError::TokenLength)
        );
        // TKL 15.
        assert_eq!(
            Message::parse(&[0x4f, 1, 0, 0]),
            Err(ParseError::TokenLength)
        );
        // Short header.
        assert_eq!(Message::parse(&[0x40, 1, 0]), Err(ParseError::TooShort));
        assert_eq!(Message::parse(&[]), Err(ParseError::TooShort));
        // Version 0 and 2.
        assert_eq!(Message::parse(&[0x00, 1, 0, 0]), Err(ParseError::Version));
        assert_eq!(Message::parse(&[0x80, 1, 0, 0]), Err(ParseError::Version));
        // Truncated token.
        assert_eq!(
            Message::parse(&[0x42, 1, 0, 0, 1]),
            Err(ParseError::Truncated)
        );
        // Truncated option value: Uri-Path of length 3 with 2 bytes.
        assert_eq!(
            Message::parse(&[0x40, 1, 0, 0, 0xb3, b'a', b'b']),
            Err(ParseError::Truncated)
        );
        // Truncated extended delta (13 needs one more byte, 14 needs two).
        assert_eq!(
            Message::parse(&[0x40, 1, 0, 0, 0xd0]),
            Err(ParseError::Truncated)
        );
        assert_eq!(
            Message::parse(&[0x40, 1, 0, 0, 0xe0, 0]),
            Err(ParseError::Truncated)
        );
        // Truncated extended length.
        assert_eq!(
            Message::parse(&[0x40, 1, 0, 0, 0x1d]),
            Err(ParseError::Truncated)
        );
        // Payload marker and no payload.
        assert_eq!(
            Message::parse(&[0x40, 1, 0, 0, 0xff]),
            Err(ParseError::EmptyPayload)
        );
        // Option delta 15 (not the marker) and length 15.
        assert_eq!(
            Message::parse(&[0x40, 1, 0, 0, 0xf0]),
            Err(ParseError::ReservedNibble)
        );
        assert_eq!(
            Message::parse(&[0x40, 1, 0, 0, 0x1f]),
            Err(ParseError::ReservedNibble)
        );
        // Option number overflow: 65535 + 269 via two options.
        assert_eq!(
            Message::parse(&[0x40, 1, 0, 0, 0xe0, 0xfe, 0xf2, 0xe0, 0x00, 0x00]),
            Err(ParseError::OptionNumber)
        );
        // Empty message with a token or a payload.
        assert_eq!(
            Message::parse(&[0x41, 0, 0, 0, 7]),
            Err(ParseError::NonEmptyEmpty)
        );
        assert_eq!(
            Message::parse(&[0x40, 0, 0, 0, 0xff, 1]),
            Err(ParseError::NonEmptyEmpty)
        );
        // Option number 65535 exactly is fine.
        let ok = [0x40, 1, 0, 0, 0xe0, 0xfe, 0xf2];
        assert_eq!(
            Message::parse(&ok).unwrap().options().next(),
            Some((65535, &[][..]))
        );
    }

    #[test]
    fn writer_errors_never_panic() {
        let mut buf = [0u8; 3];
        assert_eq!(
            MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 1, &[]).unwrap_err(),
            WriteError::BufferTooSmall
        );
        let mut buf = [0u8; 16];
        assert_eq!(
            MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 1, &[0; 9])
                .unwrap_err(),
            WriteError::TokenTooLong
        );
        let mut w =
            MessageWriter::new(&mut buf, MessageType::Confirmable, Code::GET, 1, &[]).unwrap();
        w.option(11, b"abc").unwrap();
        assert_eq!(w.option(3, b"x"), Err(WriteError::OptionOrder));
        assert_eq!(w.option(12, &[0; 20]), Err(WriteError::BufferTooSmall));
        let before = w.written();
        assert_eq!(w.payload(&[0; 20]), Err(WriteError::BufferTooSmall));
        assert_eq!(w.written(), before, "nothing written on error");
        w.payload(b"p").unwrap();
        w.payload(b"q").unwrap();
        assert_eq!(w.option(60, b""), Err(WriteError::AfterPayload));
        let n = w.finish();
        assert_eq!(Message::parse(&buf[..n]).unwrap().payload(), b"pq");
    }

    #[test]
    fn uint_options_are_minimal() {
        let mut buf = [0u8; 32];
        let mut w =
            MessageWriter::new(&mut buf, MessageType::NonConfirmable, Code::GET, 1, &[]).unwrap();
        w.uint_option(option::OBSERVE, 0).unwrap();
        w.uint_option(option::CONTENT_FORMAT, 60).unwrap();
        w.uint_option(option::MAX_AGE, 0x1_0000).unwrap();
        let n = w.finish();
        let m = Message::parse(&buf[..n]).unwrap();
        let lens: [usize; 3] = [0, 1, 3];
        assert!(m.options().map(|(_, v)| v.len()).eq(lens));
        assert_eq!(m.uint_option(option::MAX_AGE), Some(0x1_0000));
        assert_eq!(m.uint_option(option::OBSERVE), Some(0));
    }

    #[test]
    fn peek_header_reads_type_and_mid() {
        assert_eq!(
            peek_header(&[0x40, 0, 0x12, 0x34, 0xff]),
            Some((MessageType::Confirmable, 0x1234))
        );
        assert_eq!(peek_header(&[0x80, 0, 0x12, 0x34]), None);
        assert_eq!(peek_header(&[0x40, 0, 0x12]), None);
    }

    #[test]
    fn code_classes() {
        assert!(Code::EMPTY.is_empty() && !Code::EMPTY.is_request());
        assert!(Code::new(1, 0).is_reserved());
        assert!(Code::new(7, 31).is_reserved());
        assert!(Code::INTERNAL_SERVER_ERROR.is_response());
        for c in [
            Code::BAD_REQUEST,
            Code::BAD_OPTION,
            Code::REQUEST_ENTITY_TOO_LARGE,
            Code::UNSUPPORTED_CONTENT_FORMAT,
        ] {
            assert!(c.rejects_content(), "{c:?}");
        }
        for c in [
            Code::NOT_FOUND,
            Code::METHOD_NOT_ALLOWED,
            Code::CHANGED,
            Code::SERVICE_UNAVAILABLE,
        ] {
            assert!(!c.rejects_content(), "{c:?}");
        }
        assert_eq!(Code::REQUEST_ENTITY_TOO_LARGE.raw(), 0x8d);
        assert_eq!(Code::UNSUPPORTED_CONTENT_FORMAT.raw(), 0x8f);
        assert_eq!(Code::SERVICE_UNAVAILABLE.raw(), 0xa3);
        assert_eq!(Code::METHOD_NOT_ALLOWED.raw(), 0x85);
        extern crate std;
        assert_eq!(std::format!("{}", Code::CONTENT), "2.05");
    }
}
