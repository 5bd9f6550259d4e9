//! What a broker tells its upstream about itself: CoAP `POST /b` (NON, Content-Format 60)
//! every `report_interval_ms`, and within a second of a new registration. The super-manager
//! shows it in `GET /api/v1/brokers` and takes the names and regions of the edges behind the
//! broker from it. CDDL (`common/wire/qos.cddl`):
//!
//! ```text
//! broker-report = [v: 1, stats: broker-stats, total_edges: uint, edges: [* broker-edge],
//!                  ? broker-id: tstr, ? protected_relayed: uint]
//! broker-stats = [received: uint, acked: uint, forwarded: uint, queued: uint,
//!                 queued_bytes: uint, dropped_quota: uint, relayed: uint, relay_timeouts: uint,
//!                 * rejected: uint]
//! broker-edge = [id: edge-id, name: tstr, region: tstr, registered: bool, seen_ago_ms: uint,
//!                ? cfg: uint / null, ? rtt_ms: uint / null, ? loss_permille: uint / null]
//! ```
//! `cfg` is the `cfg=` attribute of the edge's registration (the ETag of the central
//! configuration in force on it), `null` when it named none; older brokers leave it out.
//! `rtt_ms` and `loss_permille` are the link quality the broker measured
//! ([`crate::registry::LinkQuality`]), `null` before the first sample; older brokers leave
//! them out.
//!
//! The `rejected` counters after the eighth are the broker's refusals by reason, in the order
//! of [`REJECT_REASONS`] (an older broker sends none, a newer one may send more).
//!
//! `broker-id` is the broker's stable identity (`[broker] id`, or the one it made at its first
//! start, kept in its data directory; empty when it has none): the super-manager keys its
//! broker registry by it, so a restarted broker talking from a new address replaces its old
//! entry. `protected_relayed` counts the OSCORE-protected requests of edges the broker relayed
//! upstream unread. Older brokers leave both out.
//!
//! `edges` holds the most recently heard edges that fit in one CoAP message; `total_edges`
//! says how many the registry knows, so a cut list is visible. Decoding skips elements a newer
//! broker may add at the end of each array.

use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

/// URI path of the report on the upstream.
pub const REPORT_PATH: &str = "b";
/// Largest encoded report (leaves room for the CoAP header and options).
pub const MAX_REPORT_BYTES: usize = 1024;

/// Names of the refusal counters of [`ReportStats::rejected`], in wire order.
pub const REJECT_REASONS: [&str; 12] = [
    "malformed",
    "bad_batch",
    "bad_content_format",
    "bad_registration",
    "not_found",
    "method_not_allowed",
    "bad_request",
    "rate_limited",
    "unknown_edge",
    "too_large",
    "incomplete",
    "rate_limited_edge",
];

/// The counters in a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportStats {
    /// Batches received from edges.
    pub received: u64,
    /// Batches acknowledged to edges.
    pub acked: u64,
    /// Batches forwarded upstream.
    pub forwarded: u64,
    /// Batches waiting in the queue.
    pub queued: u64,
    /// Their payload bytes.
    pub queued_bytes: u64,
    /// Batches dropped by the queue's quota.
    pub dropped_quota: u64,
    /// Requests relayed both ways (`/c`, `/p`, `/r`) with an answer.
    pub relayed: u64,
    /// Relayed requests answered 5.04.
    pub relay_timeouts: u64,
    /// Refusals by reason, in the order of [`REJECT_REASONS`].
    pub rejected: [u64; REJECT_REASONS.len()],
}

/// One edge in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportEdge {
    /// Its id.
    pub id: u32,
    /// Its name (empty if it never registered).
    pub name: String,
    /// Its region.
    pub region: String,
    /// Whether its registration is current.
    pub registered: bool,
    /// Since when it was not heard from, ms.
    pub seen_ago_ms: u64,
    /// The `cfg=` attribute of its registration, if any.
    pub cfg: Option<u32>,
    /// Smoothed round-trip time to it, ms, once measured.
    pub rtt_ms: Option<u32>,
    /// Share of lost transmissions on its link, per mille, once measured.
    pub loss_permille: Option<u16>,
}

/// Longest broker id (bytes) a report carries.
pub const MAX_ID_BYTES: usize = 64;

/// A broker's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerReport {
    /// The broker's stable id (empty: none, the super-manager keys it by address).
    pub id: String,
    /// OSCORE-protected requests of edges relayed upstream unread.
    pub protected_relayed: u64,
    /// Counters.
    pub stats: ReportStats,
    /// Edges the registry knows.
    pub total_edges: u64,
    /// The most recently heard of them that fit.
    pub edges: Vec<ReportEdge>,
}

type EncErr = minicbor::encode::Error<minicbor::encode::write::EndOfSlice>;

fn encode_with(r: &BrokerReport, edges: usize, buf: &mut [u8]) -> Result<usize, EncErr> {
    let total = buf.len();
    let mut e = Encoder::new(&mut buf[..]);
    let s = &r.stats;
    e.array(6)?.u8(1)?.array(8 + REJECT_REASONS.len() as u64)?;
    for v in [
        s.received,
        s.acked,
        s.forwarded,
        s.queued,
        s.queued_bytes,
        s.dropped_quota,
        s.relayed,
        s.relay_timeouts,
    ] {
        e.u64(v)?;
    }
    for v in s.rejected {
        e.u64(v)?;
    }
    e.u64(r.total_edges)?.array(edges as u64)?;
    for x in r.edges.iter().take(edges) {
        e.array(8)?
            .u32(x.id)?
            .str(&x.name)?
            .str(&x.region)?
            .bool(x.registered)?
            .u64(x.seen_ago_ms)?;
        for v in [x.cfg, x.rtt_ms, x.loss_permille.map(u32::from)] {
            match v {
                Some(c) => e.u32(c)?,
                None => e.null()?,
            };
        }
    }
    e.str(&r.id)?.u64(r.protected_relayed)?;
    Ok(total - e.writer().len())
}

impl BrokerReport {
    /// Encodes with as many edges as fit in [`MAX_REPORT_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_REPORT_BYTES];
        let mut edges = self.edges.len();
        loop {
            match encode_with(self, edges, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return buf;
                }
                Err(_) if edges > 0 => edges = edges.saturating_sub(1.max(edges / 8)),
                Err(_) => return Vec::new(),
            }
        }
    }

    /// Decodes CDDL `broker-report`; the error names what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<BrokerReport, String> {
        let bad = |e: minicbor::decode::Error| format!("bad broker-report: {e}");
        let mut d = Decoder::new(bytes);
        let outer = d
            .array()
            .map_err(bad)?
            .ok_or("bad broker-report: indefinite array")?;
        if outer < 4 {
            return Err("bad broker-report: expected [v, stats, total_edges, edges]".into());
        }
        let v = d.u8().map_err(bad)?;
        if v != 1 {
            return Err(format!("bad broker-report: version {v} (1 expected)"));
        }
        let n = d
            .array()
            .map_err(bad)?
            .ok_or("bad broker-report: indefinite array")?;
        if n < 8 {
            return Err("bad broker-report: stats has fewer than 8 counters".into());
        }
        let mut c = [0u64; 8];
        for v in c.iter_mut() {
            *v = d.u64().map_err(bad)?;
        }
        let mut rejected = [0u64; REJECT_REASONS.len()];
        let extra = (n - 8).min(REJECT_REASONS.len() as u64) as usize;
        for v in rejected.iter_mut().take(extra) {
            *v = d.u64().map_err(bad)?;
        }
        skip(&mut d, n - 8 - extra as u64).map_err(bad)?;
        let total_edges = d.u64().map_err(bad)?;
        let m = d
            .array()
            .map_err(bad)?
            .ok_or("bad broker-report: indefinite array")?;
        let mut edges = Vec::new();
        for _ in 0..m {
            let k = d
                .array()
                .map_err(bad)?
                .ok_or("bad broker-report: indefinite array")?;
            if k < 5 {
                return Err("bad broker-report: an edge has fewer than 5 fields".into());
            }
            let mut edge = ReportEdge {
                id: d.u32().map_err(bad)?,
                name: d.str().map_err(bad)?.to_string(),
                region: d.str().map_err(bad)?.to_string(),
                registered: d.bool().map_err(bad)?,
                seen_ago_ms: d.u64().map_err(bad)?,
                cfg: None,
                rtt_ms: None,
                loss_permille: None,
            };
            let opt = |d: &mut Decoder<'_>| -> Result<Option<u32>, String> {
                if d.datatype().map_err(bad)? == Type::Null {
                    d.skip().map_err(bad)?;
                    Ok(None)
                } else {
                    Ok(Some(d.u32().map_err(bad)?))
                }
            };
            if k >= 6 {
                edge.cfg = opt(&mut d)?;
            }
            if k >= 7 {
                edge.rtt_ms = opt(&mut d)?;
            }
            if k >= 8 {
                edge.loss_permille =
                    opt(&mut d)?.map(|v| u16::try_from(v.min(1000)).unwrap_or(1000));
            }
            edges.push(edge);
            skip(&mut d, k.saturating_sub(8)).map_err(bad)?;
        }
        let mut id = String::new();
        let mut protected_relayed = 0;
        if outer >= 5 {
            id = d.str().map_err(bad)?.to_string();
            if id.len() > MAX_ID_BYTES {
                return Err(format!(
                    "bad broker-report: broker id of {} bytes (at most {MAX_ID_BYTES})",
                    id.len()
                ));
            }
        }
        if outer >= 6 {
            protected_relayed = d.u64().map_err(bad)?;
        }
        skip(&mut d, outer.saturating_sub(6)).map_err(bad)?;
        if d.position() != bytes.len() || d.datatype().ok() == Some(Type::Break) {
            return Err("bad broker-report: trailing bytes".into());
        }
        Ok(BrokerReport {
            id,
            protected_relayed,
            stats: ReportStats {
                received: c[0],
                acked: c[1],
                forwarded: c[2],
                queued: c[3],
                queued_bytes: c[4],
                dropped_quota: c[5],
                relayed: c[6],
                relay_timeouts: c[7],
                rejected,
            },
            total_edges,
            edges,
        })
    }
}

fn skip(d: &mut Decoder<'_>, n: u64) -> Result<(), minicbor::decode::Error> {
    for _ in 0..n {
        d.skip()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(i: u32) -> ReportEdge {
        ReportEdge {
            id: i,
            name: format!("edge-{i}"),
            region: "eu-west".into(),
            registered: i % 2 == 0,
            seen_ago_ms: u64::from(i) * 1000,
            cfg: (i % 3 == 0).then_some(i + 7),
            rtt_ms: (i % 2 == 0).then_some(i * 3),
            loss_permille: (i % 4 == 1).then_some(i as u16 % 1000),
        }
    }

    #[test]
    fn round_trip_and_cut_to_one_message() {
        let mut r = BrokerReport {
            id: "region-b1".into(),
            protected_relayed: 20,
            stats: ReportStats {
                received: 1,
                acked: 2,
                forwarded: 3,
                queued: 4,
                queued_bytes: 5,
                dropped_quota: 6,
                relayed: 7,
                relay_timeouts: 8,
                rejected: [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
            },
            total_edges: 3,
            edges: (0..3).map(edge).collect(),
        };
        assert_eq!(BrokerReport::decode(&r.encode()).unwrap(), r);
        r.edges = (0..200).map(edge).collect();
        r.total_edges = 200;
        let bytes = r.encode();
        assert!(bytes.len() <= MAX_REPORT_BYTES);
        let back = BrokerReport::decode(&bytes).unwrap();
        assert_eq!(back.total_edges, 200);
        assert!(back.edges.len() > 10 && back.edges.len() < 200);
        assert_eq!(back.edges[..], r.edges[..back.edges.len()]);
        assert!(BrokerReport::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(BrokerReport::decode(&[0x84, 0x02])
            .unwrap_err()
            .contains("version 2"));
    }

    #[test]
    fn an_older_report_without_id_still_decodes_and_a_newer_one_is_skipped() {
        // [1, [8 counters], 0, []]: an older broker's report.
        let old = [0x84, 0x01, 0x88, 0, 0, 0, 0, 0, 0, 0, 7, 0x00, 0x80];
        let r = BrokerReport::decode(&old).unwrap();
        assert_eq!((r.id.as_str(), r.protected_relayed), ("", 0));
        assert_eq!(r.stats.relay_timeouts, 7);
        // A newer one with one more element at the end.
        let mut newer = BrokerReport {
            id: "b".into(),
            protected_relayed: 3,
            ..BrokerReport::default()
        }
        .encode();
        newer[0] = 0x87;
        newer.push(0xf6);
        let r = BrokerReport::decode(&newer).unwrap();
        assert_eq!((r.id.as_str(), r.protected_relayed), ("b", 3));
        // An over-long id is refused with its length.
        let long = BrokerReport {
            id: "x".repeat(MAX_ID_BYTES + 1),
            ..BrokerReport::default()
        }
        .encode();
        assert!(BrokerReport::decode(&long)
            .unwrap_err()
            .contains("65 bytes"));
    }

    #[test]
    fn matches_the_cddl_when_a_validator_is_at_hand() {
        let Ok(out) = std::process::Command::new("cddl-verify")
            .arg("--help")
            .output()
        else {
            return; // the wire crate's external tests require it; here it is optional
        };
        if !out.status.success() {
            return;
        }
        let r = BrokerReport {
            id: "site-7".into(),
            protected_relayed: 4,
            total_edges: 2,
            edges: (0..2).map(edge).collect(),
            ..BrokerReport::default()
        };
        let dir = std::env::temp_dir().join(format!("qos-broker-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("report.cbor");
        std::fs::write(&file, r.encode()).unwrap();
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../common/wire/qos.cddl");
        let out = std::process::Command::new("cddl-verify")
            .args(["-t", "broker-report", schema])
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
