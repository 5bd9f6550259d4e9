//! The OSCORE option's value (RFC 8613 §6.1): flags, Partial IV, kid context, kid; and the
//! CoAP option encoding the transformation writes (header-less, for the plaintext).

use crate::{Error, MAX_ID_CONTEXT_LEN, MAX_ID_LEN, MAX_PIV_LEN};

/// The CoAP option number of OSCORE (RFC 8613 §2).
pub const OSCORE: u16 = 9;

/// Largest encoded OSCORE option value this crate writes or reads.
pub const MAX_OPTION_VALUE_LEN: usize = 1 + MAX_PIV_LEN + 1 + MAX_ID_CONTEXT_LEN + MAX_ID_LEN;

/// A checked view of an OSCORE option value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OscoreOption<'a> {
    /// The Partial IV (sender sequence number, big-endian, minimal); empty if absent.
    pub piv: &'a [u8],
    /// The kid context (flag `h`).
    pub kid_context: Option<&'a [u8]>,
    /// The key id (flag `k`).
    pub kid: Option<&'a [u8]>,
}

impl<'a> OscoreOption<'a> {
    /// Parses an option value; [`Error::Malformed`] for reserved flags, a Partial IV longer
    /// than 5 bytes, lengths past the end, or ids longer than this crate supports.
    pub fn parse(value: &'a [u8]) -> Result<OscoreOption<'a>, Error> {
        let Some((&flags, rest)) = value.split_first() else {
            return Ok(OscoreOption::default());
        };
        if flags & 0xe0 != 0 || flags == 0 {
            return Err(Error::Malformed);
        }
        let n = usize::from(flags & 0x07);
        if n > MAX_PIV_LEN {
            return Err(Error::Malformed);
        }
        let (piv, mut rest) = rest.split_at_checked(n).ok_or(Error::Malformed)?;
        let mut kid_context = None;
        if flags & 0x10 != 0 {
            let (&s, r) = rest.split_first().ok_or(Error::Malformed)?;
            let (ctx, r) = r.split_at_checked(usize::from(s)).ok_or(Error::Malformed)?;
            if ctx.len() > MAX_ID_CONTEXT_LEN {
                return Err(Error::Malformed);
            }
            kid_context = Some(ctx);
            rest = r;
        }
        let kid = if flags & 0x08 != 0 {
            if rest.len() > MAX_ID_LEN {
                return Err(Error::Malformed);
            }
            Some(rest)
        } else if rest.is_empty() {
            None
        } else {
            return Err(Error::Malformed);
        };
        Ok(OscoreOption {
            piv,
            kid_context,
            kid,
        })
    }

    /// Encodes the value into `out`; returns its length (0 when nothing is set).
    pub fn encode(&self, out: &mut [u8; MAX_OPTION_VALUE_LEN]) -> Result<usize, Error> {
        if self.piv.len() > MAX_PIV_LEN
            || self.kid.is_some_and(|k| k.len() > MAX_ID_LEN)
            || self
                .kid_context
                .is_some_and(|c| c.len() > MAX_ID_CONTEXT_LEN)
        {
            return Err(Error::InvalidParameter);
        }
        let mut flags = self.piv.len() as u8;
        if self.kid.is_some() {
            flags |= 0x08;
        }
        if self.kid_context.is_some() {
            flags |= 0x10;
        }
        if flags == 0 {
            return Ok(0);
        }
        let mut w = Cursor { buf: out, pos: 0 };
        w.put(&[flags])?;
        w.put(self.piv)?;
        if let Some(c) = self.kid_context {
            w.put(&[c.len() as u8])?;
            w.put(c)?;
        }
        if let Some(k) = self.kid {
            w.put(k)?;
        }
        Ok(w.pos)
    }
}

/// Writes bytes and CoAP options (delta-encoded) into a slice, up to a limit.
pub(crate) struct Cursor<'b> {
    pub(crate) buf: &'b mut [u8],
    pub(crate) pos: usize,
}

impl Cursor<'_> {
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self.pos + bytes.len();
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Error::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Writes one option, `last` being the number of the previous one (updated).
    pub(crate) fn option(
        &mut self,
        last: &mut u16,
        number: u16,
        value: &[u8],
    ) -> Result<(), Error> {
        let delta = number.checked_sub(*last).ok_or(Error::Malformed)?;
        let (dn, dx, dl) = ext(usize::from(delta));
        let (ln, lx, ll) = ext(value.len());
        if value.len() > 65535 + 269 {
            return Err(Error::Malformed);
        }
        self.put(&[(dn << 4) | ln])?;
        self.put(&dx[..dl])?;
        self.put(&lx[..ll])?;
        self.put(value)?;
        *last = number;
        Ok(())
    }
}

fn ext(v: usize) -> (u8, [u8; 2], usize) {
    if v < 13 {
        (v as u8, [0, 0], 0)
    } else if v < 269 {
        (13, [(v - 13) as u8, 0], 1)
    } else {
        (14, ((v - 269) as u16).to_be_bytes(), 2)
    }
}

/// Iterates the options of a header-less option sequence (the OSCORE plaintext), stopping at
/// the payload marker; yields [`Error::Malformed`] on a bad encoding.
pub(crate) struct InnerOptions<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) number: u16,
}

impl<'a> InnerOptions<'a> {
    /// The payload after the options (valid once the iterator returned `None`).
    pub(crate) fn payload(&self) -> Result<&'a [u8], Error> {
        match self.buf.get(self.pos..) {
            None | Some([]) => Ok(&[]),
            Some([0xff]) => Err(Error::Malformed),
            Some([0xff, rest @ ..]) => Ok(rest),
            Some(_) => Err(Error::Malformed),
        }
    }

    fn read_ext(&mut self, nibble: u8) -> Result<usize, Error> {
        match nibble {
            13 => {
                let b = *self.buf.get(self.pos).ok_or(Error::Malformed)?;
                self.pos += 1;
                Ok(usize::from(b) + 13)
            }
            14 => {
                let b = self
                    .buf
                    .get(self.pos..self.pos + 2)
                    .ok_or(Error::Malformed)?;
                self.pos += 2;
                Ok(usize::from(u16::from_be_bytes([b[0], b[1]])) + 269)
            }
            15 => Err(Error::Malformed),
            n => Ok(usize::from(n)),
        }
    }

    pub(crate) fn next_option(&mut self) -> Result<Option<(u16, &'a [u8])>, Error> {
        let Some(&first) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        if first == 0xff {
            return Ok(None);
        }
        self.pos += 1;
        let delta = self.read_ext(first >> 4)?;
        let len = self.read_ext(first & 0x0f)?;
        let number = usize::from(self.number) + delta;
        self.number = u16::try_from(number).map_err(|_| Error::Malformed)?;
        let value = self
            .buf
            .get(self.pos..self.pos + len)
            .ok_or(Error::Malformed)?;
        self.pos += len;
        Ok(Some((self.number, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_of_rfc8613_appendix_c() {
        // C.4: n = 1 (PIV 0x14), k = 1, empty kid.
        let o = OscoreOption::parse(&[0x09, 0x14]).unwrap();
        assert_eq!(
            (o.piv, o.kid, o.kid_context),
            (&[0x14][..], Some(&[][..]), None)
        );
        // C.6: h = 1 with an 8-byte kid context.
        let v = [
            0x19, 0x14, 0x08, 0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3,
        ];
        let o = OscoreOption::parse(&v).unwrap();
        assert_eq!(o.kid_context, Some(&v[3..]));
        let mut out = [0; MAX_OPTION_VALUE_LEN];
        let n = o.encode(&mut out).unwrap();
        assert_eq!(&out[..n], &v);
        assert_eq!(OscoreOption::parse(&[]).unwrap(), OscoreOption::default());
    }

    #[test]
    fn bad_option_values_are_malformed() {
        for v in [
            &[0x06, 1, 2, 3, 4, 5, 6][..],       // n = 6 is reserved
            &[0x20][..],                         // reserved flag
            &[0x03, 1][..],                      // PIV past the end
            &[0x11, 1, 9, 1][..],                // kid context past the end
            &[0x01, 1, 7][..],                   // bytes left without the k flag
            &[0x00][..],                         // all flags zero but not empty
            &[0x08, 1, 2, 3, 4, 5, 6, 7, 8][..], // kid longer than 7
        ] {
            assert_eq!(OscoreOption::parse(v), Err(Error::Malformed), "{v:?}");
        }
    }
}
