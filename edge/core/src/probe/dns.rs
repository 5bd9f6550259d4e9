//! DNS over UDP (RFC 1035): the query an edge sends to a resolver and the checks on the answer.
//!
//! [`build_query`] writes a standard recursive query (one question, class IN) into a caller's
//! buffer. [`parse_response`] validates a datagram against that query (id, QR, opcode, the
//! echoed question) and extracts the A/AAAA records for the asked name, following CNAME
//! records inside the same answer. Names are decompressed with loop protection: a compression
//! pointer must point strictly backwards from where it stands, at most [`MAX_JUMPS`] pointers
//! are followed per name, and a decompressed name may not exceed 255 bytes. Every read is
//! bounds-checked: hostile input gives an error, never a panic.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use qos_wire::probe::DnsType;

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
/// Longest label.
pub const MAX_LABEL: usize = 63;
/// Addresses kept from one answer (more are counted, not kept).
pub const MAX_ANSWERS: usize = 8;
/// Compression pointers followed at most while reading one name.
pub const MAX_JUMPS: usize = 32;
/// Largest query [`build_query`] writes: header, name, type and class.
pub const MAX_QUERY: usize = HEADER_LEN + MAX_NAME + 4;

const CLASS_IN: u16 = 1;
const TYPE_CNAME: u16 = 5;

/// Why a query could not be built or an answer could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DnsError {
    /// The caller's buffer is too small for the query.
    BufferTooSmall,
    /// The name to ask for is not a valid DNS name (empty label, label over 63 bytes, over
    /// 255 bytes in all).
    BadName,
    /// The datagram's id is not the query's (a stray or late answer: keep waiting).
    IdMismatch,
    /// The datagram is not a standard query response (QR clear or another opcode).
    NotResponse,
    /// The echoed question is not the one asked.
    QuestionMismatch,
    /// A compression pointer points forwards, out of the message, or loops.
    BadPointer,
    /// The message ends inside a field or a record is otherwise malformed.
    Malformed,
}

/// A checked response: its rcode, flags and the addresses answering the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Answer {
    /// Response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// The TC (truncated) flag was set.
    pub truncated: bool,
    /// The AA (authoritative) flag was set.
    pub authoritative: bool,
    /// Matching records in the answer (may exceed the addresses kept).
    pub matching: u16,
    addrs: [IpAddr; MAX_ANSWERS],
    kept: usize,
}

impl Answer {
    /// The addresses kept (at most [`MAX_ANSWERS`]), in answer order.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs[..self.kept]
    }

    /// Whether `ip` is among the addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addrs().contains(&ip)
    }

    /// Judge the answer: NOERROR with at least one address, and `expect` among them if given.
    pub fn verdict(&self, expect: Option<IpAddr>) -> Verdict {
        if self.rcode != 0 {
            Verdict::Rcode(self.rcode)
        } else if self.matching == 0 {
            Verdict::NoAnswer
        } else if let Some(ip) = expect {
            if self.contains(ip) {
                Verdict::Ok
            } else {
                Verdict::Unexpected
            }
        } else {
            Verdict::Ok
        }
    }
}

/// The judgement of an [`Answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// The name resolved as expected.
    Ok,
    /// The resolver answered with this non-zero rcode.
    Rcode(u8),
    /// NOERROR but no record of the asked type.
    NoAnswer,
    /// The expected address is not in the answer.
    Unexpected,
}

/// A name in wire form (length-prefixed labels, lower-cased, ending with the root label).
#[derive(Clone, Copy)]
struct WireName {
    bytes: [u8; MAX_NAME],
    len: usize,
}

impl WireName {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Encode a dotted name (`example.com`, an optional trailing dot; `.` or empty is root).
    fn from_dotted(name: &str) -> Result<WireName, DnsError> {
        let mut w = WireName {
            bytes: [0; MAX_NAME],
            len: 0,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if !name.is_empty() {
            for label in name.split('.') {
                let l = label.as_bytes();
                if l.is_empty() || l.len() > MAX_LABEL {
                    return Err(DnsError::BadName);
                }
                w.push_label(l).ok_or(DnsError::BadName)?;
            }
        }
        w.push_root().ok_or(DnsError::BadName)?;
        Ok(w)
    }

    fn push_label(&mut self, label: &[u8]) -> Option<()> {
        // Room for this label and the root label after it.
        let end = self.len + 1 + label.len();
        if end + 1 > MAX_NAME {
            return None;
        }
        self.bytes[self.len] = label.len() as u8;
        for (d, s) in self.bytes[self.len + 1..end].iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        self.len = end;
        Some(())
    }

    fn push_root(&mut self) -> Option<()> {
        *self.bytes.get_mut(self.len)? = 0;
        self.len += 1;
        Some(())
    }
}

/// Write a recursive query (RD set) for `name` and `qtype`, class IN, with `id`. Returns the
/// length written.
pub fn build_query(buf: &mut [u8], id: u16, name: &str, qtype: DnsType) -> Result<usize, DnsError> {
    let wire = WireName::from_dotted(name)?;
    let n = HEADER_LEN + wire.len + 4;
    let out = buf.get_mut(..n).ok_or(DnsError::BufferTooSmall)?;
    let id = id.to_be_bytes();
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    // id, flags (RD), QDCOUNT 1, AN/NS/AR 0.
    head.copy_from_slice(&[id[0], id[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let (qname, tail) = rest.split_at_mut(wire.len);
    qname.copy_from_slice(wire.as_slice());
    let t = qtype.qtype().to_be_bytes();
    let c = CLASS_IN.to_be_bytes();
    tail.copy_from_slice(&[t[0], t[1], c[0], c[1]]);
    Ok(n)
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, DnsError> {
    let b = msg.get(pos..pos + 2).ok_or(DnsError::Malformed)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// Read the (possibly compressed) name at `pos`. Returns it and the position after it where
/// it stands (after the first pointer, if any).
fn read_name(msg: &[u8], pos: usize) -> Result<(WireName, usize), DnsError> {
    let mut name = WireName {
        bytes: [0; MAX_NAME],
        len: 0,
    };
    let mut p = pos;
    let mut after = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(p).ok_or(DnsError::Malformed)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                name.push_root().ok_or(DnsError::Malformed)?;
                return Ok((name, after.unwrap_or(p + 1)));
            }
            0x00 => {
                let l = usize::from(len);
                let label = msg.get(p + 1..p + 1 + l).ok_or(DnsError::Malformed)?;
                name.push_label(label).ok_or(DnsError::Malformed)?;
                p += 1 + l;
            }
            0xC0 => {
                let lo = *msg.get(p + 1).ok_or(DnsError::Malformed)?;
                let target = usize::from(len & 0x3F) << 8 | usize::from(lo);
                jumps += 1;
                if target >= p || jumps > MAX_JUMPS {
                    return Err(DnsError::BadPointer);
                }
                if after.is_none() {
                    after = Some(p + 2);
                }
                p = target;
            }
            // 0x40 and 0x80: extended label types (RFC 6891), not used in answers.
            _ => return Err(DnsError::Malformed),
        }
    }
}

/// Check `msg` as the answer to the query [`build_query`] made with `id`, `name`, `qtype`,
/// and extract the addresses of that name (following CNAMEs within the answer).
pub fn parse_response(msg: &[u8], id: u16, name: &str, qtype: DnsType) -> Result<Answer, DnsError> {
    if msg.len() < HEADER_LEN {
        return Err(DnsError::Malformed);
    }
    if u16_at(msg, 0)? != id {
        return Err(DnsError::IdMismatch);
    }
    let flags = u16_at(msg, 2)?;
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xF;
    if !qr || opcode != 0 {
        return Err(DnsError::NotResponse);
    }
    let rcode = (flags & 0xF) as u8;
    let qdcount = u16_at(msg, 4)?;
    let ancount = u16_at(msg, 6)?;
    let asked = WireName::from_dotted(name)?;

    let mut pos = HEADER_LEN;
    match qdcount {
        1 => {
            let (q, next) = read_name(msg, pos)?;
            if q.as_slice() != asked.as_slice()
                || u16_at(msg, next)? != qtype.qtype()
                || u16_at(msg, next + 2)? != CLASS_IN
            {
                return Err(DnsError::QuestionMismatch);
            }
            pos = next + 4;
        }
        // Some servers drop the question from error answers (FORMERR, REFUSED).
        0 if rcode != 0 => {}
        _ => return Err(DnsError::QuestionMismatch),
    }

    let mut answer = Answer {
        rcode,
        truncated: flags & 0x0200 != 0,
        authoritative: flags & 0x0400 != 0,
        matching: 0,
        addrs: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); MAX_ANSWERS],
        kept: 0,
    };
    let mut current = asked;
    for _ in 0..ancount {
        let (owner, next) = read_name(msg, pos)?;
        let rtype = u16_at(msg, next)?;
        let class = u16_at(msg, next + 2)?;
        let rdlen = usize::from(u16_at(msg, next + 8)?);
        let rdata_at = next + 10;
        let rdata = msg
            .get(rdata_at..rdata_at + rdlen)
            .ok_or(DnsError::Malformed)?;
        pos = rdata_at + rdlen;
        if class != CLASS_IN || owner.as_slice() != current.as_slice() {
            continue;
        }
        if rtype == TYPE_CNAME {
            let (target, end) = read_name(msg, rdata_at)?;
            if end > pos {
                return Err(DnsError::Malformed);
            }
            current = target;
            continue;
        }
        if rtype != qtype.qtype() {
            continue;
        }
        let ip = match (qtype, rdata.len()) {
            (DnsType::A, 4) => IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
            (DnsType::Aaaa, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return Err(DnsError::Malformed),
        };
        if answer.kept < MAX_ANSWERS {
            answer.addrs[answer.kept] = ip;
            answer.kept += 1;
        }
        answer.matching = answer.matching.saturating_add(1);
    }
    Ok(answer)
}

/// Test and tooling helper: write a response to a query (`query` as built by
/// [`build_query`]) with the given rcode and addresses, as a resolver would, using a
/// compression pointer to the question for each answer's owner. Returns the length written.
pub fn build_response(
    buf: &mut [u8],
    query: &[u8],
    rcode: u8,
    addrs: &[IpAddr],
) -> Result<usize, DnsError> {
    if query.len() < HEADER_LEN + 5 {
        return Err(DnsError::Malformed);
    }
    let qlen = query.len();
    let qtype = u16_at(query, qlen - 4)?;
    let mut n = qlen;
    buf.get_mut(..qlen)
        .ok_or(DnsError::BufferTooSmall)?
        .copy_from_slice(query);
    buf[2] = 0x81; // QR, RD
    buf[3] = 0x80 | (rcode & 0xF); // RA, rcode
    let mut count: u16 = 0;
    for ip in addrs {
        let t: u16 = match ip {
            IpAddr::V4(_) => 1,
            IpAddr::V6(_) => 28,
        };
        if t != qtype {
            continue;
        }
        let mut rr = [0u8; 12 + 16];
        rr[..2].copy_from_slice(&[0xC0, HEADER_LEN as u8]);
        rr[2..4].copy_from_slice(&t.to_be_bytes());
        rr[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
        rr[6..10].copy_from_slice(&60u32.to_be_bytes());
        let len = match ip {
            IpAddr::V4(a) => {
                rr[12..16].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                rr[12..28].copy_from_slice(&a.octets());
                16
            }
        };
        rr[10..12].copy_from_slice(&(len as u16).to_be_bytes());
        let end = n + 12 + len;
        buf.get_mut(n..end)
            .ok_or(DnsError::BufferTooSmall)?
            .copy_from_slice(&rr[..12 + len]);
        n = end;
        count += 1;
    }
    buf[6..8].copy_from_slice(&count.to_be_bytes());
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn query(name: &str, t: DnsType) -> Vec<u8> {
        let mut buf = [0u8; MAX_QUERY];
        let n = build_query(&mut buf, 0xBEEF, name, t).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn query_layout() {
        let q = query("Example.COM.", DnsType::Aaaa);
        assert_eq!(&q[..12], &[0xBE, 0xEF, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..25], b"\x07example\x03com\x00");
        assert_eq!(&q[25..], &[0, 28, 0, 1]);
        assert_eq!(query(".", DnsType::A).len(), 12 + 1 + 4);
    }

    #[test]
    fn bad_names_and_small_buffers() {
        let mut buf = [0u8; MAX_QUERY];
        for bad in ["a..b", ".a", &"x".repeat(64), &["abcdefghi"; 26].join(".")] {
            assert_eq!(
                build_query(&mut buf, 1, bad, DnsType::A),
                Err(DnsError::BadName),
                "{bad}"
            );
        }
        let longest = ["abcdefghi"; 25].join("."); // 250 bytes on the wire + root
        assert!(build_query(&mut buf, 1, &longest, DnsType::A).is_ok());
        assert_eq!(
            build_query(&mut [0u8; 20], 1, "example.com", DnsType::A),
            Err(DnsError::BufferTooSmall)
        );
    }

    #[test]
    fn answers_are_extracted_and_judged() {
        let q = query("svc.test", DnsType::A);
        let a1: IpAddr = "10.0.0.1".parse().unwrap();
        let a2: IpAddr = "10.0.0.2".parse().unwrap();
        let mut buf = [0u8; 512];
        let n = build_response(&mut buf, &q, 0, &[a1, a2]).unwrap();
        let ans = parse_response(&buf[..n], 0xBEEF, "SVC.test", DnsType::A).unwrap();
        assert_eq!(ans.addrs(), &[a1, a2]);
        assert_eq!(ans.verdict(None), Verdict::Ok);
        assert_eq!(ans.verdict(Some(a2)), Verdict::Ok);
        assert_eq!(
            ans.verdict(Some("10.9.9.9".parse().unwrap())),
            Verdict::Unexpected
        );
        assert_eq!(
            parse_response(&buf[..n], 0xBEEE, "svc.test", DnsType::A),
            Err(DnsError::IdMismatch)
        );
        assert_eq!(
            parse_response(&buf[..n], 0xBEEF, "other.test", DnsType::A),
            Err(DnsError::QuestionMismatch)
        );
        // Our own query is not a response.
        assert_eq!(
            parse_response(&q, 0xBEEF, "svc.test", DnsType::A),
            Err(DnsError::NotResponse)
        );
        // Every truncation is an error, never a panic, never a false answer.
        for cut in 0..n {
            assert!(
                parse_response(&buf[..cut], 0xBEEF, "svc.test", DnsType::A).is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn rcodes_and_empty_answers() {
        let q = query("gone.test", DnsType::Aaaa);
        let mut buf = [0u8; 512];
        let n = build_response(&mut buf, &q, 3, &[]).unwrap();
        let ans = parse_response(&buf[..n], 0xBEEF, "gone.test", DnsType::Aaaa).unwrap();
        assert_eq!(ans.verdict(None), Verdict::Rcode(3));
        let n = build_response(&mut buf, &q, 0, &["10.0.0.1".parse().unwrap()]).unwrap();
        let ans = parse_response(&buf[..n], 0xBEEF, "gone.test", DnsType::Aaaa).unwrap();
        assert_eq!(
            ans.verdict(None),
            Verdict::NoAnswer,
            "an A record does not answer AAAA"
        );
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let n = build_response(&mut buf, &q, 0, &[v6]).unwrap();
        let ans = parse_response(&buf[..n], 0xBEEF, "gone.test", DnsType::Aaaa).unwrap();
        assert_eq!(ans.addrs(), &[v6]);
    }

    #[test]
    fn cname_chain_is_followed() {
        // www.test CNAME edge.cdn.test (name compressed against "test"), edge.cdn.test A 1.2.3.4
        let mut m = query("www.test", DnsType::A);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2;
        m.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 11]);
        let cname_at = m.len();
        m.extend_from_slice(b"\x04edge\x03cdn\xC0\x10"); // 0x10 = "test" in the question
        m.extend_from_slice(&[
            0xC0,
            cname_at as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            60,
            0,
            4,
            1,
            2,
            3,
            4,
        ]);
        let ans = parse_response(&m, 0xBEEF, "www.test", DnsType::A).unwrap();
        assert_eq!(ans.addrs(), &["1.2.3.4".parse::<IpAddr>().unwrap()]);
        // An A record for another name is ignored.
        let mut other = query("www.test", DnsType::A);
        other[2] = 0x81;
        other[7] = 1;
        other.extend_from_slice(
            b"\x05other\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04",
        );
        let ans = parse_response(&other, 0xBEEF, "www.test", DnsType::A).unwrap();
        assert_eq!(ans.verdict(None), Verdict::NoAnswer);
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_rejected() {
        let mut m = query("a.test", DnsType::A);
        m[2] = 0x81;
        m[7] = 1;
        let at = m.len();
        // Owner is a pointer to itself.
        m.extend_from_slice(&[0xC0, at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        assert_eq!(
            parse_response(&m, 0xBEEF, "a.test", DnsType::A),
            Err(DnsError::BadPointer)
        );
        // A label followed by a pointer back to the label: a loop through labels.
        let mut m = query("a.test", DnsType::A);
        m[2] = 0x81;
        m[7] = 1;
        let at = m.len();
        m.extend_from_slice(&[
            1, b'x', 0xC0, at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4,
        ]);
        assert!(parse_response(&m, 0xBEEF, "a.test", DnsType::A).is_err());
        // A forward pointer.
        let mut m = query("a.test", DnsType::A);
        m[2] = 0x81;
        m[7] = 1;
        m.extend_from_slice(&[0xC0, 0xFF, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        assert_eq!(
            parse_response(&m, 0xBEEF, "a.test", DnsType::A),
            Err(DnsError::BadPointer)
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_response(&bytes, u16::from_be_bytes([bytes.first().copied().unwrap_or(0), bytes.get(1).copied().unwrap_or(0)]), "a.test", DnsType::A);
        }

        #[test]
        fn mutated_answers_never_panic(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8),
            extra in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let q = query("svc.example.test", DnsType::A);
            let mut buf = [0u8; 512];
            let n = build_response(&mut buf, &q, 0, &["10.1.2.3".parse().unwrap(), "10.1.2.4".parse().unwrap()]).unwrap();
            let mut m = buf[..n].to_vec();
            m.extend_from_slice(&extra);
            for (i, v) in flips {
                let len = m.len();
                m[i % len] = v;
            }
            let _ = parse_response(&m, 0xBEEF, "svc.example.test", DnsType::A);
        }

        #[test]
        fn built_responses_round_trip(
            labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..5),
            v4 in proptest::collection::vec(any::<[u8; 4]>(), 0..12),
            id in any::<u16>(),
        ) {
            let name = labels.join(".");
            let mut qb = [0u8; MAX_QUERY];
            let qn = build_query(&mut qb, id, &name, DnsType::A).unwrap();
            let addrs: Vec<IpAddr> = v4.iter().map(|o| IpAddr::from(*o)).collect();
            let mut buf = [0u8; 1024];
            let n = build_response(&mut buf, &qb[..qn], 0, &addrs).unwrap();
            let ans = parse_response(&buf[..n], id, &name, DnsType::A).unwrap();
            prop_assert_eq!(usize::from(ans.matching), addrs.len());
            let kept = addrs.len().min(MAX_ANSWERS);
            prop_assert_eq!(ans.addrs(), &addrs[..kept]);
        }
    }
}
