//! Host metrics of the machine an edge runs on (CPU, memory, disk, network), reported as the
//! metrics of a component next to the probe summaries: record kind
//! [`RecordKind::Metrics`](crate::uplink::RecordKind::Metrics).
//!
//! A [`MetricsSample`] is one reading: when it was taken, the interval its counters cover, and
//! up to [`MAX_METRICS`] `(metric, value)` pairs. Metrics are numeric ids ([`Metric`]), never
//! strings, and each appears at most once. Wire (CDDL `metrics`):
//!
//! ```text
//! metrics = [at_s, interval_s, [* (metric, value)]]
//! ```
//!
//! * `at_s`: when the sample was taken, Unix seconds.
//! * `interval_s`: how long the *interval metrics* (see [`Metric::is_interval`]) cover, ending
//!   at `at_s`; 0 when there is no previous reading to compare with (the first sample after a
//!   start), in which case the sample carries gauges only.
//! * Values are unsigned integers in the unit the metric's name says (`_kib`: KiB, `_permille`:
//!   thousandths, `_centi`: hundredths, otherwise a count).
//!
//! A sender includes only what it could measure; a receiver treats a missing metric as unknown,
//! not as zero. Decoding refuses unknown metric ids and duplicates.

use minicbor::decode::Decoder;

use crate::codec::{self, SliceEncoder, WireError};

/// Most `(metric, value)` pairs in one sample (room for metrics added later).
pub const MAX_METRICS: usize = 24;

/// What a value measures. The wire value is the discriminant; new metrics get new numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Metric {
    /// CPU time not idle (nor waiting for I/O), all cores, over the interval, in ‰.
    CpuBusyPermille = 0,
    /// CPU time idle while waiting for I/O, all cores, over the interval, in ‰.
    CpuIowaitPermille = 1,
    /// One-minute load average × 100 (a gauge).
    Load1Centi = 2,
    /// Memory installed (as the kernel sees it), KiB.
    MemTotalKib = 3,
    /// Memory available for new work without swapping, KiB.
    MemAvailableKib = 4,
    /// Swap in use, KiB.
    SwapUsedKib = 5,
    /// Size of the filesystem holding the edge's storage directory, KiB.
    DiskTotalKib = 6,
    /// Space available to the edge on that filesystem, KiB.
    DiskAvailableKib = 7,
    /// Read from whole disks over the interval, KiB.
    DiskReadKib = 8,
    /// Written to whole disks over the interval, KiB.
    DiskWriteKib = 9,
    /// Received on all interfaces but loopback over the interval, KiB.
    NetRxKib = 10,
    /// Sent on all interfaces but loopback over the interval, KiB.
    NetTxKib = 11,
    /// Receive errors on those interfaces over the interval.
    NetRxErrors = 12,
    /// Transmit errors on those interfaces over the interval.
    NetTxErrors = 13,
    /// Packets dropped (receive and transmit) on those interfaces over the interval.
    NetDrops = 14,
    /// TCP segments retransmitted over the interval.
    TcpRetransSegs = 15,
}

impl Metric {
    /// Number of metrics this build knows.
    pub const COUNT: usize = 16;

    /// Every metric, in wire order.
    pub const ALL: [Metric; Metric::COUNT] = [
        Metric::CpuBusyPermille,
        Metric::CpuIowaitPermille,
        Metric::Load1Centi,
        Metric::MemTotalKib,
        Metric::MemAvailableKib,
        Metric::SwapUsedKib,
        Metric::DiskTotalKib,
        Metric::DiskAvailableKib,
        Metric::DiskReadKib,
        Metric::DiskWriteKib,
        Metric::NetRxKib,
        Metric::NetTxKib,
        Metric::NetRxErrors,
        Metric::NetTxErrors,
        Metric::NetDrops,
        Metric::TcpRetransSegs,
    ];

    /// The metric with wire value `v`.
    pub fn from_u8(v: u8) -> Option<Metric> {
        Metric::ALL.get(usize::from(v)).copied()
    }

    /// The snake_case name (for logs, JSON and Prometheus labels).
    pub fn name(self) -> &'static str {
        match self {
            Metric::CpuBusyPermille => "cpu_busy_permille",
            Metric::CpuIowaitPermille => "cpu_iowait_permille",
            Metric::Load1Centi => "load1_centi",
            Metric::MemTotalKib => "mem_total_kib",
            Metric::MemAvailableKib => "mem_available_kib",
            Metric::SwapUsedKib => "swap_used_kib",
            Metric::DiskTotalKib => "disk_total_kib",
            Metric::DiskAvailableKib => "disk_available_kib",
            Metric::DiskReadKib => "disk_read_kib",
            Metric::DiskWriteKib => "disk_write_kib",
            Metric::NetRxKib => "net_rx_kib",
            Metric::NetTxKib => "net_tx_kib",
            Metric::NetRxErrors => "net_rx_errors",
            Metric::NetTxErrors => "net_tx_errors",
            Metric::NetDrops => "net_drops",
            Metric::TcpRetransSegs => "tcp_retrans_segs",
        }
    }

    /// The metric named `name` (as [`Metric::name`] writes it).
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// Whether the value describes the interval (a CPU share, or a counter's increase over it)
    /// rather than the moment of the sample (a gauge).
    pub fn is_interval(self) -> bool {
        !matches!(
            self,
            Metric::Load1Centi
                | Metric::MemTotalKib
                | Metric::MemAvailableKib
                | Metric::SwapUsedKib
                | Metric::DiskTotalKib
                | Metric::DiskAvailableKib
        )
    }
}

/// One reading of the host metrics.
#[derive(Clone, Copy)]
pub struct MetricsSample {
    /// When it was taken, Unix seconds.
    pub at_s: u32,
    /// Seconds the interval metrics cover, ending at `at_s`; 0: gauges only.
    pub interval_s: u32,
    len: u8,
    values: [(Metric, u64); MAX_METRICS],
}

impl PartialEq for MetricsSample {
    fn eq(&self, o: &Self) -> bool {
        self.at_s == o.at_s && self.interval_s == o.interval_s && self.values() == o.values()
    }
}

impl Eq for MetricsSample {}

impl core::fmt::Debug for MetricsSample {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MetricsSample")
            .field("at_s", &self.at_s)
            .field("interval_s", &self.interval_s)
            .field("values", &self.values())
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for MetricsSample {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "MetricsSample {{ at_s: {}, interval_s: {}, values: {} }}",
            self.at_s,
            self.interval_s,
            self.values()
        )
    }
}

impl MetricsSample {
    /// An empty sample taken at `at_s` whose interval metrics cover `interval_s` seconds.
    pub const fn new(at_s: u32, interval_s: u32) -> Self {
        MetricsSample {
            at_s,
            interval_s,
            len: 0,
            values: [(Metric::CpuBusyPermille, 0); MAX_METRICS],
        }
    }

    /// Set `metric` to `value` (replacing an earlier value of the same metric).
    pub fn set(&mut self, metric: Metric, value: u64) -> Result<(), WireError> {
        if let Some(slot) = self.values[..usize::from(self.len)]
            .iter_mut()
            .find(|(m, _)| *m == metric)
        {
            slot.1 = value;
            return Ok(());
        }
        let slot = self
            .values
            .get_mut(usize::from(self.len))
            .ok_or(WireError::TooMany)?;
        *slot = (metric, value);
        self.len += 1;
        Ok(())
    }

    /// The value of `metric`, if present.
    pub fn get(&self, metric: Metric) -> Option<u64> {
        self.values()
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|&(_, v)| v)
    }

    /// The pairs, in the order they were set (or received).
    pub fn values(&self) -> &[(Metric, u64)] {
        &self.values[..usize::from(self.len)]
    }

    /// Number of metrics present.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no metric is present.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Encode as CDDL `metrics`.
    pub fn encode(&self, e: &mut SliceEncoder<'_>) -> Result<(), WireError> {
        e.array(3)?.u32(self.at_s)?.u32(self.interval_s)?;
        e.array(2 * self.len() as u64)?;
        for &(m, v) in self.values() {
            e.u8(m as u8)?.u64(v)?;
        }
        Ok(())
    }

    /// Decode and validate CDDL `metrics`: known metric ids, each at most once.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        codec::array(d, 3, 3)?;
        let at_s = d.u32()?;
        let interval_s = d.u32()?;
        let mut s = MetricsSample::new(at_s, interval_s);
        let n = match d.array()? {
            Some(n) => n,
            None => return Err(WireError::Malformed),
        };
        if n % 2 != 0 {
            return Err(WireError::Malformed);
        }
        if n > 2 * MAX_METRICS as u64 {
            return Err(WireError::TooMany);
        }
        for _ in 0..n / 2 {
            let m = Metric::from_u8(d.u8()?).ok_or(WireError::Invalid("metric id"))?;
            let v = d.u64()?;
            if s.get(m).is_some() {
                return Err(WireError::Invalid("duplicate metric"));
            }
            s.set(m, v)?;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_into;

    #[test]
    fn ids_names_and_kinds() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
            assert_eq!(Metric::from_u8(i as u8), Some(*m));
            assert_eq!(Metric::from_name(m.name()), Some(*m));
            assert!(m
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
        assert_eq!(Metric::from_u8(Metric::COUNT as u8), None);
        assert!(Metric::DiskReadKib.is_interval() && !Metric::MemTotalKib.is_interval());
    }

    #[test]
    fn set_replaces_and_capacity_is_bounded() {
        let mut s = MetricsSample::new(1, 60);
        s.set(Metric::NetRxKib, 1).unwrap();
        s.set(Metric::NetRxKib, 2).unwrap();
        assert_eq!((s.len(), s.get(Metric::NetRxKib)), (1, Some(2)));
        for m in Metric::ALL {
            s.set(m, 7).unwrap();
        }
        assert_eq!(s.len(), Metric::COUNT);
        let mut buf = [0u8; 256];
        let n = encode_into(&mut buf, |e| s.encode(e)).unwrap();
        assert_eq!(
            MetricsSample::decode(&mut Decoder::new(&buf[..n])).unwrap(),
            s
        );
    }
}
