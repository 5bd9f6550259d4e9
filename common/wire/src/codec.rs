//! Shared codec helpers: the error type of every decoder and small CBOR utilities.
//!
//! Every top-level message starts with a version number ([`VERSION`]); decoders accept only
//! definite-length arrays and reject unknown versions with [`WireError::UnsupportedVersion`].

use minicbor::decode::Decoder;
use minicbor::encode::write::Cursor;
use minicbor::Encoder;

/// The wire version this crate writes and reads.
pub const VERSION: u8 = 1;

/// Why bytes could not be decoded (or a value could not be encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WireError {
    /// The input ended in the middle of an item.
    Truncated,
    /// The input is not the CBOR structure the schema describes.
    Malformed,
    /// The message carries a version this build does not understand.
    UnsupportedVersion(u8),
    /// A value is out of its allowed range (the name says which).
    Invalid(&'static str),
    /// More items than the receiver's fixed capacity.
    TooMany,
    /// The output buffer is too small.
    BufferFull,
    /// Bytes follow the end of the message.
    TrailingBytes,
}

impl WireError {
    /// A short snake_case reason, used as a counter label.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::Malformed => "malformed",
            WireError::UnsupportedVersion(_) => "unsupported_version",
            WireError::Invalid(_) => "invalid_value",
            WireError::TooMany => "too_many_items",
            WireError::BufferFull => "buffer_full",
            WireError::TrailingBytes => "trailing_bytes",
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Truncated => f.write_str("message truncated"),
            WireError::Malformed => f.write_str("malformed CBOR for this message"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported wire version {v}"),
            WireError::Invalid(what) => write!(f, "invalid value: {what}"),
            WireError::TooMany => f.write_str("more items than capacity"),
            WireError::BufferFull => f.write_str("output buffer too small"),
            WireError::TrailingBytes => f.write_str("bytes after the end of the message"),
        }
    }
}

impl From<minicbor::decode::Error> for WireError {
    fn from(e: minicbor::decode::Error) -> Self {
        if e.is_end_of_input() {
            WireError::Truncated
        } else {
            WireError::Malformed
        }
    }
}

impl<E> From<minicbor::encode::Error<E>> for WireError {
    fn from(_: minicbor::encode::Error<E>) -> Self {
        WireError::BufferFull
    }
}

/// An encoder writing into a caller's buffer.
pub type SliceEncoder<'b> = Encoder<Cursor<&'b mut [u8]>>;

/// Encode with `f` into `buf`, returning the number of bytes written.
pub fn encode_into<F>(buf: &mut [u8], f: F) -> Result<usize, WireError>
where
    F: FnOnce(&mut SliceEncoder<'_>) -> Result<(), WireError>,
{
    let mut e = Encoder::new(Cursor::new(buf));
    f(&mut e)?;
    Ok(e.writer().position())
}

/// Read a definite-length array header and check its length is within `min..=max`.
pub(crate) fn array(d: &mut Decoder<'_>, min: u64, max: u64) -> Result<u64, WireError> {
    match d.array()? {
        Some(n) if n >= min && n <= max => Ok(n),
        Some(_) => Err(WireError::Malformed),
        None => Err(WireError::Malformed),
    }
}

/// Read the version field and check it.
pub(crate) fn version(d: &mut Decoder<'_>) -> Result<(), WireError> {
    let v = d.u8()?;
    if v == VERSION {
        Ok(())
    } else {
        Err(WireError::UnsupportedVersion(v))
    }
}

/// Check that the decoder consumed all input.
pub(crate) fn finish(d: &Decoder<'_>) -> Result<(), WireError> {
    if d.position() == d.input().len() {
        Ok(())
    } else {
        Err(WireError::TrailingBytes)
    }
}

/// Skip one item and return the bytes it spans (zero-copy).
pub(crate) fn raw_item<'b>(d: &mut Decoder<'b>) -> Result<&'b [u8], WireError> {
    let start = d.position();
    d.skip()?;
    let end = d.position();
    d.input().get(start..end).ok_or(WireError::Malformed)
}

/// An element type of a [`List`]: decodable from borrowed bytes.
pub trait Element<'b>: Sized + Copy {
    /// Decode and validate one element.
    fn decode_element(d: &mut Decoder<'b>) -> Result<Self, WireError>;
    /// Encode one element.
    fn encode_element(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError>;
}

/// A zero-copy list of items of one type: either a pre-validated CBOR array borrowed from a
/// received message, or a slice the sender built.
///
/// Decoders check every element once; iterating decodes each element again from the borrowed
/// bytes, so no allocation is needed anywhere.
#[derive(Clone, Copy)]
pub struct List<'b, T: 'b> {
    repr: Repr<'b, T>,
}

#[derive(Clone, Copy)]
enum Repr<'b, T: 'b> {
    Cbor { bytes: &'b [u8], len: u16 },
    Slice(&'b [T]),
}

impl<'b, T: Element<'b>> core::fmt::Debug for List<'b, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("List").field("len", &self.len()).finish()
    }
}

impl<'b, T: Element<'b> + PartialEq> PartialEq for List<'b, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl<'b, T: Element<'b>> List<'b, T> {
    /// A list of the given items (for senders).
    pub const fn from_slice(items: &'b [T]) -> Self {
        List {
            repr: Repr::Slice(items),
        }
    }

    /// Decode an array of at most `max` elements, validating each.
    pub(crate) fn decode(d: &mut Decoder<'b>, max: u16) -> Result<Self, WireError> {
        let n = match d.array()? {
            Some(n) => n,
            None => return Err(WireError::Malformed),
        };
        if n > u64::from(max) {
            return Err(WireError::TooMany);
        }
        let start = d.position();
        for _ in 0..n {
            T::decode_element(d)?;
        }
        let bytes = d
            .input()
            .get(start..d.position())
            .ok_or(WireError::Malformed)?;
        Ok(List {
            repr: Repr::Cbor {
                bytes,
                len: n as u16,
            },
        })
    }

    /// Encode as a CBOR array (received lists are copied verbatim).
    pub(crate) fn encode(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        e.array(self.len() as u64)?;
        match self.repr {
            Repr::Cbor { bytes, .. } => {
                use minicbor::encode::Write;
                e.writer_mut()
                    .write_all(bytes)
                    .map_err(|_| WireError::BufferFull)
            }
            Repr::Slice(items) => items.iter().try_for_each(|i| i.encode_element(e)),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Cbor { len, .. } => usize::from(len),
            Repr::Slice(s) => s.len(),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterate over the elements.
    pub fn iter(&self) -> ListIter<'b, T> {
        match self.repr {
            Repr::Cbor { bytes, len } => ListIter {
                inner: IterRepr::Cbor {
                    d: Decoder::new(bytes),
                    left: len,
                },
            },
            Repr::Slice(s) => ListIter {
                inner: IterRepr::Slice(s.iter()),
            },
        }
    }
}

/// Iterator over a [`List`].
pub struct ListIter<'b, T: 'b> {
    inner: IterRepr<'b, T>,
}

enum IterRepr<'b, T: 'b> {
    Cbor { d: Decoder<'b>, left: u16 },
    Slice(core::slice::Iter<'b, T>),
}

impl<'b, T: Element<'b>> Iterator for ListIter<'b, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match &mut self.inner {
            IterRepr::Slice(it) => it.next().copied(),
            IterRepr::Cbor { d, left } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                // Validated when the list was decoded, so this cannot fail; stop if it did.
                match T::decode_element(d) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        *left = 0;
                        None
                    }
                }
            }
        }
    }
}
