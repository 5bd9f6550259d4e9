//! The security context (RFC 8613 §3): derivation of keys and common IV, and the message
//! transformation (§5, §8) for requests and responses.

use aes::Aes128;
use ccm::consts::{U13, U8};
use ccm::{AeadInOut, Ccm, KeyInit};
use heapless::Vec;
use qos_coap::{option as copt, Code, Message};
use sha2::{Digest, Sha256};

use crate::option::{Cursor, InnerOptions, OscoreOption, MAX_OPTION_VALUE_LEN, OSCORE};
use crate::{
    Error, ReplayWindow, ALG_AES_CCM_16_64_128, KEY_LEN, MAX_ID_CONTEXT_LEN, MAX_ID_LEN,
    MAX_PIV_LEN, MAX_SEQUENCE, NONCE_LEN, TAG_LEN,
};

type AesCcm = Ccm<Aes128, U8, U13>;

/// A sender or recipient id (at most 7 bytes for AES-CCM-16-64-128).
pub type Id = Vec<u8, MAX_ID_LEN>;
/// An id context.
pub type IdContext = Vec<u8, MAX_ID_CONTEXT_LEN>;
/// A Partial IV as sent (big-endian, minimal, 1 to 5 bytes).
pub type Piv = Vec<u8, MAX_PIV_LEN>;

/// What binds a response to its request: the request's kid and Partial IV. The client gets it
/// from [`Context::protect_request`], the server from [`Context::unprotect_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The requester's sender id.
    pub kid: Id,
    /// The request's Partial IV.
    pub piv: Piv,
}

impl RequestInfo {
    /// The request's sequence number.
    pub fn sequence(&self) -> u64 {
        self.piv.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
    }
}

/// An OSCORE security context between two endpoints: derived keys and common IV, the sender
/// sequence number and the replay window of the recipient.
#[derive(Clone)]
pub struct Context {
    sender_id: Id,
    recipient_id: Id,
    id_context: Option<IdContext>,
    sender_key: [u8; KEY_LEN],
    recipient_key: [u8; KEY_LEN],
    common_iv: [u8; NONCE_LEN],
    ssn: u64,
    window: ReplayWindow,
}

impl core::fmt::Debug for Context {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the keys.
        f.debug_struct("Context")
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .field("ssn", &self.ssn)
            .finish_non_exhaustive()
    }
}

fn bstr_head(len: usize) -> u8 {
    // Every byte string here is shorter than 24 bytes.
    0x40 | len as u8
}

/// SHA-256 of `first` followed by the concatenation of `rest`: the one instance of the hash's
/// code (not inlined; every use below goes through it).
#[inline(never)]
fn sha256(first: &[u8], rest: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(first);
    for p in rest {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-SHA256 (RFC 2104) of the concatenation of `parts` under `key`. HKDF (RFC 5869) needs
/// only this: one small function for the four uses of a derivation (flash of the firmware;
/// the `hkdf` crate's generic code was inlined at each use). Checked against the `hkdf` crate
/// in the tests and by the RFC 8613 vectors.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > k.len() {
        k[..32].copy_from_slice(&sha256(key, &[]));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = sha256(&k.map(|b| b ^ 0x36), parts);
    sha256(&k.map(|b| b ^ 0x5c), &[&inner])
}

/// HKDF-Extract (RFC 5869 §2.2): the pseudorandom key. An empty salt is the default salt
/// (HashLen zeros: a key is padded with zeros to the block size either way).
fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    hmac_sha256(salt, &[ikm])
}

/// HKDF-Expand (RFC 5869 §2.3) for one block: `out` is at most 32 bytes.
fn hkdf_expand(prk: &[u8; 32], info: &[u8], out: &mut [u8]) -> Result<(), Error> {
    let t = hmac_sha256(prk, &[info, &[1]]);
    out.copy_from_slice(t.get(..out.len()).ok_or(Error::InvalidParameter)?);
    Ok(())
}

fn derive(
    prk: &[u8; 32],
    id: &[u8],
    id_context: Option<&[u8]>,
    iv: bool,
    out: &mut [u8],
) -> Result<(), Error> {
    // info = [ id: bstr, id_context: bstr / nil, alg_aead: 10, type: "Key" / "IV", L: uint ]
    let mut info = [0u8; 5 + MAX_ID_LEN + 1 + MAX_ID_CONTEXT_LEN + 1 + 4 + 1];
    let mut c = Cursor {
        buf: &mut info,
        pos: 0,
    };
    c.put(&[0x85, bstr_head(id.len())])?;
    c.put(id)?;
    match id_context {
        Some(ctx) => {
            c.put(&[bstr_head(ctx.len())])?;
            c.put(ctx)?;
        }
        None => c.put(&[0xf6])?,
    }
    c.put(&[ALG_AES_CCM_16_64_128])?;
    c.put(if iv { b"\x62IV" } else { b"\x63Key" })?;
    c.put(&[out.len() as u8])?;
    let n = c.pos;
    hkdf_expand(prk, &info[..n], out)
}

fn nonce(common_iv: &[u8; NONCE_LEN], id_piv: &[u8], piv: &[u8]) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[0] = id_piv.len() as u8;
    n[1 + MAX_ID_LEN - id_piv.len()..1 + MAX_ID_LEN].copy_from_slice(id_piv);
    n[NONCE_LEN - piv.len()..].copy_from_slice(piv);
    for (b, iv) in n.iter_mut().zip(common_iv) {
        *b ^= iv;
    }
    n
}

/// The COSE Enc_structure used as AAD (RFC 8613 §5.4); returns its length in `out`.
fn aad(kid: &[u8], piv: &[u8], out: &mut [u8; 40]) -> Result<usize, Error> {
    let ext_len = 4 + 1 + kid.len() + 1 + piv.len() + 1;
    let mut c = Cursor { buf: out, pos: 0 };
    c.put(&[0x83, 0x68])?;
    c.put(b"Encrypt0")?;
    c.put(&[0x40, bstr_head(ext_len)])?;
    // external_aad = [ oscore_version: 1, algorithms: [10], request_kid, request_piv, options: h'' ]
    c.put(&[
        0x85,
        0x01,
        0x81,
        ALG_AES_CCM_16_64_128,
        bstr_head(kid.len()),
    ])?;
    c.put(kid)?;
    c.put(&[bstr_head(piv.len())])?;
    c.put(piv)?;
    c.put(&[0x40])?;
    Ok(c.pos)
}

/// Class U options (outer only): Uri-Host, Uri-Port, OSCORE, Proxy-Uri, Proxy-Scheme. Every
/// other option is class E (encrypted). Observe is not supported (this system does not use it)
/// and is encrypted like any E option.
fn is_outer(number: u16) -> bool {
    matches!(
        number,
        copt::URI_HOST | copt::URI_PORT | OSCORE | copt::PROXY_URI | copt::PROXY_SCHEME
    )
}

fn sequence_piv(seq: u64) -> Piv {
    let bytes = seq.to_be_bytes();
    let skip = bytes.iter().take(7).take_while(|&&b| b == 0).count();
    let mut piv = Piv::new();
    // At most 5 bytes: the caller checked seq <= MAX_SEQUENCE.
    let _ = piv.extend_from_slice(&bytes[skip.max(8 - MAX_PIV_LEN)..]);
    piv
}

fn piv_value(piv: &[u8]) -> Result<u64, Error> {
    if piv.is_empty() || piv.len() > MAX_PIV_LEN {
        return Err(Error::Malformed);
    }
    Ok(piv.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
}

fn id_of(bytes: &[u8]) -> Result<Id, Error> {
    Id::from_slice(bytes).map_err(|_| Error::InvalidParameter)
}

impl Context {
    /// Derives a context (RFC 8613 §3.2) with HKDF-SHA256 and AES-CCM-16-64-128. An empty
    /// `master_salt` is the default salt. Ids are at most 7 bytes, an id context at most 16.
    #[inline(never)]
    pub fn derive(
        master_secret: &[u8],
        master_salt: &[u8],
        id_context: Option<&[u8]>,
        sender_id: &[u8],
        recipient_id: &[u8],
    ) -> Result<Context, Error> {
        if master_secret.is_empty() {
            return Err(Error::InvalidParameter);
        }
        let prk = hkdf_extract(master_salt, master_secret);
        let mut ctx = Context {
            sender_id: id_of(sender_id)?,
            recipient_id: id_of(recipient_id)?,
            id_context: match id_context {
                Some(c) => Some(IdContext::from_slice(c).map_err(|_| Error::InvalidParameter)?),
                None => None,
            },
            sender_key: [0; KEY_LEN],
            recipient_key: [0; KEY_LEN],
            common_iv: [0; NONCE_LEN],
            ssn: 0,
            window: ReplayWindow::new(),
        };
        derive(&prk, sender_id, id_context, false, &mut ctx.sender_key)?;
        derive(
            &prk,
            recipient_id,
            id_context,
            false,
            &mut ctx.recipient_key,
        )?;
        derive(&prk, &[], id_context, true, &mut ctx.common_iv)?;
        Ok(ctx)
    }

    /// The sender id (the kid of the requests this side protects).
    pub fn sender_id(&self) -> &[u8] {
        &self.sender_id
    }

    /// The recipient id (the kid expected on incoming requests).
    pub fn recipient_id(&self) -> &[u8] {
        &self.recipient_id
    }

    /// The sender key (for test vectors; never log it).
    pub fn sender_key(&self) -> &[u8; KEY_LEN] {
        &self.sender_key
    }

    /// The recipient key (for test vectors; never log it).
    pub fn recipient_key(&self) -> &[u8; KEY_LEN] {
        &self.recipient_key
    }

    /// The common IV.
    pub fn common_iv(&self) -> &[u8; NONCE_LEN] {
        &self.common_iv
    }

    /// The next sender sequence number.
    pub fn sender_sequence(&self) -> u64 {
        self.ssn
    }

    /// Sets the next sender sequence number, e.g. `epoch << 24` after a boot, so numbers are
    /// never reused across reboots. Never set it lower than a number already used.
    pub fn set_sender_sequence(&mut self, ssn: u64) {
        self.ssn = ssn;
    }

    /// The replay window of the recipient (persist its state after each accepted request).
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Replaces the replay window (restored from persisted state).
    pub fn set_replay_window(&mut self, window: ReplayWindow) {
        self.window = window;
    }

    /// Protects a CoAP request (`plain`, a whole datagram) into `out`, using and advancing the
    /// sender sequence number. Returns the length written and what binds the response.
    pub fn protect_request(
        &mut self,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, RequestInfo), Error> {
        if self.ssn > MAX_SEQUENCE {
            return Err(Error::SequenceExhausted);
        }
        let msg = Message::parse(plain).map_err(|_| Error::Malformed)?;
        if !msg.code().is_request() {
            return Err(Error::Malformed);
        }
        let piv = sequence_piv(self.ssn);
        let opt = OscoreOption {
            piv: &piv,
            kid_context: self.id_context.as_deref(),
            kid: Some(&self.sender_id),
        };
        let nonce = nonce(&self.common_iv, &self.sender_id, &piv);
        let n = seal(
            &msg,
            Code::POST,
            &opt,
            &self.sender_key,
            &nonce,
            &self.sender_id,
            &piv,
            out,
        )?;
        self.ssn += 1;
        let info = RequestInfo {
            kid: self.sender_id.clone(),
            piv,
        };
        Ok((n, info))
    }

    /// Protects a CoAP retransmission of a request already protected as `request`: the same
    /// Partial IV, so the same bytes go out again (the receiver recognises the duplicate at the
    /// message layer). `plain` MUST be byte-identical to what was protected then: a different
    /// plaintext under the same nonce would break AES-CCM.
    pub fn protect_request_again(
        &self,
        plain: &[u8],
        request: &RequestInfo,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let msg = Message::parse(plain).map_err(|_| Error::Malformed)?;
        if !msg.code().is_request() || request.kid.as_slice() != self.sender_id.as_slice() {
            return Err(Error::InvalidParameter);
        }
        let opt = OscoreOption {
            piv: &request.piv,
            kid_context: self.id_context.as_deref(),
            kid: Some(&self.sender_id),
        };
        let nonce = nonce(&self.common_iv, &self.sender_id, &request.piv);
        seal(
            &msg,
            Code::POST,
            &opt,
            &self.sender_key,
            &nonce,
            &self.sender_id,
            &request.piv,
            out,
        )
    }

    /// Unprotects a request: checks the kid against the recipient id ([`Error::UnknownKid`]),
    /// the sequence number against the replay window, verifies and decrypts, and only then
    /// marks the number seen. Writes the reconstructed CoAP request into `out` (which must
    /// hold about twice the datagram).
    pub fn unprotect_request(
        &mut self,
        protected: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, RequestInfo), Error> {
        let msg = Message::parse(protected).map_err(|_| Error::Malformed)?;
        if !msg.code().is_request() {
            return Err(Error::Malformed);
        }
        let value = oscore_option(&msg)?.ok_or(Error::NotProtected)?;
        let opt = OscoreOption::parse(value)?;
        let kid = opt.kid.ok_or(Error::Malformed)?;
        let seq = piv_value(opt.piv)?;
        if kid != self.recipient_id.as_slice() || opt.kid_context != self.id_context.as_deref() {
            return Err(Error::UnknownKid);
        }
        self.window.check(seq)?;
        let nonce = nonce(&self.common_iv, kid, opt.piv);
        let n = open(&msg, true, &self.recipient_key, &nonce, kid, opt.piv, out)?;
        self.window.accept(seq);
        let info = RequestInfo {
            kid: id_of(kid)?,
            piv: Piv::from_slice(opt.piv).map_err(|_| Error::Malformed)?,
        };
        Ok((n, info))
    }

    /// [`unprotect_request`](Self::unprotect_request) for small memories: the ciphertext is
    /// decrypted inside `protected` (which is overwritten), so `out` needs room for the
    /// reconstructed message only. The same checks, in the same order; nothing is marked seen
    /// unless the message verifies.
    pub fn unprotect_request_in_place(
        &mut self,
        protected: &mut [u8],
        out: &mut [u8],
    ) -> Result<(usize, RequestInfo), Error> {
        let (head_len, payload_len) = {
            let msg = Message::parse(protected).map_err(|_| Error::Malformed)?;
            (protected.len() - msg.payload().len(), msg.payload().len())
        };
        if payload_len == 0 {
            return Err(Error::Malformed);
        }
        let (head, sealed) = protected.split_at_mut(head_len);
        let msg = Message::parse(&head[..head_len - 1]).map_err(|_| Error::Malformed)?;
        if !msg.code().is_request() {
            return Err(Error::Malformed);
        }
        let value = oscore_option(&msg)?.ok_or(Error::NotProtected)?;
        let opt = OscoreOption::parse(value)?;
        let kid = opt.kid.ok_or(Error::Malformed)?;
        let seq = piv_value(opt.piv)?;
        if kid != self.recipient_id.as_slice() || opt.kid_context != self.id_context.as_deref() {
            return Err(Error::UnknownKid);
        }
        self.window.check(seq)?;
        let info = RequestInfo {
            kid: id_of(kid)?,
            piv: Piv::from_slice(opt.piv).map_err(|_| Error::Malformed)?,
        };
        let nonce = nonce(&self.common_iv, kid, opt.piv);
        let n = open_sealed(
            &msg,
            true,
            &self.recipient_key,
            &nonce,
            kid,
            opt.piv,
            sealed,
            out,
        )?;
        self.window.accept(seq);
        Ok((n, info))
    }

    /// Protects a response to the request described by `request` (no Partial IV of its own:
    /// the request's nonce is reused, RFC 8613 §8.3).
    pub fn protect_response(
        &self,
        plain: &[u8],
        request: &RequestInfo,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let msg = Message::parse(plain).map_err(|_| Error::Malformed)?;
        if !msg.code().is_response() {
            return Err(Error::Malformed);
        }
        let nonce = nonce(&self.common_iv, &request.kid, &request.piv);
        seal(
            &msg,
            Code::CHANGED,
            &OscoreOption::default(),
            &self.sender_key,
            &nonce,
            &request.kid,
            &request.piv,
            out,
        )
    }

    /// [`unprotect_response`](Self::unprotect_response) for small memories: the ciphertext is
    /// decrypted inside `protected` (which is overwritten), so `out` needs room for the
    /// reconstructed message only.
    pub fn unprotect_response_in_place(
        &self,
        protected: &mut [u8],
        request: &RequestInfo,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let (head_len, payload_len) = {
            let msg = Message::parse(protected).map_err(|_| Error::Malformed)?;
            (protected.len() - msg.payload().len(), msg.payload().len())
        };
        if payload_len == 0 {
            return Err(Error::Malformed);
        }
        let (head, sealed) = protected.split_at_mut(head_len);
        // The head without its payload marker is a message of outer options only.
        let msg = Message::parse(&head[..head_len - 1]).map_err(|_| Error::Malformed)?;
        if !msg.code().is_response() {
            return Err(Error::Malformed);
        }
        let value = oscore_option(&msg)?.ok_or(Error::NotProtected)?;
        let opt = OscoreOption::parse(value)?;
        let nonce = self.response_nonce(&opt, request)?;
        open_sealed(
            &msg,
            false,
            &self.recipient_key,
            &nonce,
            &request.kid,
            &request.piv,
            sealed,
            out,
        )
    }

    fn response_nonce(
        &self,
        opt: &OscoreOption<'_>,
        request: &RequestInfo,
    ) -> Result<[u8; NONCE_LEN], Error> {
        Ok(if opt.piv.is_empty() {
            nonce(&self.common_iv, &request.kid, &request.piv)
        } else {
            piv_value(opt.piv)?;
            nonce(&self.common_iv, &self.recipient_id, opt.piv)
        })
    }

    /// Unprotects a response to the request described by `request`; a response with its own
    /// Partial IV uses the recipient id in the nonce (RFC 8613 §8.4).
    pub fn unprotect_response(
        &self,
        protected: &[u8],
        request: &RequestInfo,
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let msg = Message::parse(protected).map_err(|_| Error::Malformed)?;
        if !msg.code().is_response() {
            return Err(Error::Malformed);
        }
        let value = oscore_option(&msg)?.ok_or(Error::NotProtected)?;
        let opt = OscoreOption::parse(value)?;
        let nonce = self.response_nonce(&opt, request)?;
        open(
            &msg,
            false,
            &self.recipient_key,
            &nonce,
            &request.kid,
            &request.piv,
            out,
        )
    }
}

/// The OSCORE option's value, if present exactly once.
fn oscore_option<'a>(msg: &Message<'a>) -> Result<Option<&'a [u8]>, Error> {
    let mut it = msg.options_numbered(OSCORE);
    let first = it.next();
    if it.next().is_some() {
        return Err(Error::Malformed);
    }
    Ok(first)
}

/// The kid of a protected request datagram (to choose its context), or `None` when it carries
/// no OSCORE option.
pub fn request_kid(datagram: &[u8]) -> Result<Option<&[u8]>, Error> {
    let msg = Message::parse(datagram).map_err(|_| Error::Malformed)?;
    match oscore_option(&msg)? {
        None => Ok(None),
        Some(v) => Ok(Some(OscoreOption::parse(v)?.kid.ok_or(Error::Malformed)?)),
    }
}

/// Writes the protected message: the plain header with `outer_code`, the class U options and
/// the OSCORE option, then the ciphertext of code, class E options and payload.
#[allow(clippy::too_many_arguments)]
fn seal(
    msg: &Message<'_>,
    outer_code: Code,
    opt: &OscoreOption<'_>,
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad_kid: &[u8],
    aad_piv: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    if msg.option(OSCORE).is_some() {
        return Err(Error::Malformed);
    }
    let head = msg
        .as_bytes()
        .get(..4 + msg.token().len())
        .ok_or(Error::Malformed)?;
    let mut value = [0u8; MAX_OPTION_VALUE_LEN];
    let vlen = opt.encode(&mut value)?;
    let mut c = Cursor { buf: out, pos: 0 };
    c.put(head)?;
    c.buf[1] = outer_code.raw();
    let mut last = 0u16;
    let mut oscore_written = false;
    for (number, v) in msg.options() {
        if !is_outer(number) {
            continue;
        }
        if number > OSCORE && !oscore_written {
            c.option(&mut last, OSCORE, &value[..vlen])?;
            oscore_written = true;
        }
        c.option(&mut last, number, v)?;
    }
    if !oscore_written {
        c.option(&mut last, OSCORE, &value[..vlen])?;
    }
    c.put(&[0xff])?;
    let pt_start = c.pos;
    c.put(&[msg.code().raw()])?;
    let mut last = 0u16;
    for (number, v) in msg.options() {
        if !is_outer(number) {
            c.option(&mut last, number, v)?;
        }
    }
    if !msg.payload().is_empty() {
        c.put(&[0xff])?;
        c.put(msg.payload())?;
    }
    let pt_end = c.pos;
    c.put(&[0u8; TAG_LEN])?;
    let mut aad_buf = [0u8; 40];
    let aad_len = aad(aad_kid, aad_piv, &mut aad_buf)?;
    let cipher = AesCcm::new(key.into());
    let tag = cipher
        .encrypt_inout_detached(
            nonce.into(),
            &aad_buf[..aad_len],
            (&mut out[pt_start..pt_end]).into(),
        )
        .map_err(|_| Error::BufferTooSmall)?;
    out[pt_end..pt_end + TAG_LEN].copy_from_slice(&tag);
    Ok(pt_end + TAG_LEN)
}

/// Verifies and decrypts, then writes the reconstructed message into `out`: the decrypted
/// plaintext is kept at the end of `out` while the message is written from the front.
fn open(
    msg: &Message<'_>,
    request: bool,
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad_kid: &[u8],
    aad_piv: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    let ct = msg.payload();
    if ct.len() < TAG_LEN + 1 {
        return Err(Error::Malformed);
    }
    let tail = out
        .len()
        .checked_sub(ct.len())
        .ok_or(Error::BufferTooSmall)?;
    let (front, sealed) = out.split_at_mut(tail);
    sealed.copy_from_slice(ct);
    open_sealed(msg, request, key, nonce, aad_kid, aad_piv, sealed, front)
}

/// [`open`] with the ciphertext and tag in `sealed` (decrypted there, in place) and the outer
/// options from `msg`; the reconstructed message goes to `front`.
#[allow(clippy::too_many_arguments)]
fn open_sealed(
    msg: &Message<'_>,
    request: bool,
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad_kid: &[u8],
    aad_piv: &[u8],
    sealed: &mut [u8],
    front: &mut [u8],
) -> Result<usize, Error> {
    if sealed.len() < TAG_LEN + 1 {
        return Err(Error::Malformed);
    }
    let pt_len = sealed.len() - TAG_LEN;
    let (pt, tag) = sealed.split_at_mut(pt_len);
    let mut aad_buf = [0u8; 40];
    let aad_len = aad(aad_kid, aad_piv, &mut aad_buf)?;
    let cipher = AesCcm::new(key.into());
    let tag = ccm::aead::Tag::<AesCcm>::try_from(&*tag).map_err(|_| Error::Malformed)?;
    cipher
        .decrypt_inout_detached(nonce.into(), &aad_buf[..aad_len], (&mut *pt).into(), &tag)
        .map_err(|_| Error::Decrypt)?;
    let pt: &[u8] = pt;
    let (&code, inner) = pt.split_first().ok_or(Error::Malformed)?;
    let code = Code::from_raw(code);
    if (request && !code.is_request()) || (!request && !code.is_response()) {
        return Err(Error::Malformed);
    }
    let head = msg
        .as_bytes()
        .get(..4 + msg.token().len())
        .ok_or(Error::Malformed)?;
    let mut c = Cursor { buf: front, pos: 0 };
    c.put(head)?;
    c.buf[1] = code.raw();
    // Merge the outer class U options (not OSCORE) with the inner ones, by number.
    let mut outer = msg
        .options()
        .filter(|&(n, _)| is_outer(n) && n != OSCORE)
        .peekable();
    let mut inner_it = InnerOptions {
        buf: inner,
        pos: 0,
        number: 0,
    };
    let mut last = 0u16;
    let mut next_inner = inner_it.next_option()?;
    loop {
        let take_outer = match (outer.peek(), next_inner) {
            (Some(&(on, _)), Some((inn, _))) => on <= inn,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_outer {
            if let Some((n, v)) = outer.next() {
                c.option(&mut last, n, v)?;
            }
        } else if let Some((n, v)) = next_inner {
            // Class U options must not be inside; a protected OSCORE option is malformed.
            if n == OSCORE {
                return Err(Error::Malformed);
            }
            if !is_outer(n) {
                c.option(&mut last, n, v)?;
            }
            next_inner = inner_it.next_option()?;
        }
    }
    let payload = inner_it.payload()?;
    if !payload.is_empty() {
        c.put(&[0xff])?;
        c.put(payload)?;
    }
    Ok(c.pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hkdf::Hkdf;

    /// The HKDF here against the `hkdf` crate: salts around the block size (a longer key is
    /// hashed), empty and long inputs, every output length a derivation asks for.
    #[test]
    fn hkdf_matches_the_hkdf_crate() {
        let bytes: [u8; 200] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        for salt_len in [0, 1, 8, 32, 63, 64, 65, 100, 200] {
            for ikm_len in [1, 16, 64, 150] {
                let (salt, ikm) = (&bytes[..salt_len], &bytes[50..50 + ikm_len]);
                let prk = hkdf_extract(salt, ikm);
                let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
                for (info_len, out_len) in [(0, 13), (9, 16), (40, 32), (70, 1)] {
                    let info = &bytes[100..100 + info_len];
                    let (mut ours, mut theirs) = ([0u8; 32], [0u8; 32]);
                    hkdf_expand(&prk, info, &mut ours[..out_len]).unwrap();
                    hk.expand(info, &mut theirs[..out_len]).unwrap();
                    assert_eq!(
                        ours, theirs,
                        "salt {salt_len}, ikm {ikm_len}, info {info_len}"
                    );
                }
            }
        }
        // No salt at all is the empty salt.
        assert_eq!(
            hkdf_extract(&[], &bytes[..16]),
            hkdf_extract(&[0; 32], &bytes[..16])
        );
        let mut too_long = [0u8; 33];
        assert_eq!(
            hkdf_expand(&[0; 32], &[], &mut too_long),
            Err(Error::InvalidParameter)
        );
    }
}
