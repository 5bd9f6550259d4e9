//! Host metrics of the machine the edge runs on, read from `/proc` (and `statvfs` of the
//! storage directory) and reported upstream as a [`MetricsSample`] record (kind 3), so the
//! super-manager sees the edge's own machine as a component with CPU, memory, disk and network
//! metrics next to the probe results measured from it.
//!
//! | metric | source | kind |
//! |---|---|---|
//! | `cpu_busy_permille`, `cpu_iowait_permille` | `/proc/stat`, first `cpu` line (all cores) | share of the interval |
//! | `load1_centi` | `/proc/loadavg` | gauge |
//! | `mem_total_kib`, `mem_available_kib`, `swap_used_kib` | `/proc/meminfo` | gauge |
//! | `disk_total_kib`, `disk_available_kib` | `statvfs` of the storage directory | gauge |
//! | `disk_read_kib`, `disk_write_kib` | `/proc/diskstats`, whole disks only (sectors × 512) | increase over the interval |
//! | `net_rx_kib`, `net_tx_kib`, `net_rx_errors`, `net_tx_errors`, `net_drops` | `/proc/net/dev`, every interface but `lo` | increase over the interval |
//! | `tcp_retrans_segs` | `/proc/net/snmp`, `Tcp: RetransSegs` | increase over the interval |
//!
//! The parsers are pure functions over the files' text: a line they do not understand is
//! skipped, never a panic. A [`Sampler`] keeps the previous counters to compute the increases;
//! its first sample (and one taken less than a second after the previous) carries gauges only,
//! with `interval_s = 0`. Counters are compared per device, so a disk or interface that appears
//! or disappears between two samples, or a counter that restarts, does not produce a bogus
//! jump. "Whole disks" are the devices listed in `/sys/block` other than loop, RAM, zram,
//! device-mapper and md devices (which would count the same I/O twice); without `/sys/block`,
//! names are recognised (`sda`, `vda`, `xvda`, `hda`, `nvme0n1`, `mmcblk0`).
//!
//! A file that cannot be read or parsed (another OS, a restricted container) is logged once at
//! debug level and its metrics are left out: the sample carries what is available.

use std::path::{Path, PathBuf};

use qos_wire::metrics::{Metric, MetricsSample};

/// CPU time counters of all cores (`/proc/stat`, in USER_HZ ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Time neither idle nor waiting for I/O (user, nice, system, irq, softirq, steal).
    pub busy: u64,
    /// Time idle while I/O was outstanding.
    pub iowait: u64,
    /// All of it (guest time is already part of user time and not added again).
    pub total: u64,
}

/// Parse the aggregate `cpu` line of `/proc/stat`.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("cpu") {
            continue;
        }
        // user nice system idle iowait irq softirq steal [guest guest_nice]
        let mut v = [0u64; 8];
        let mut n = 0;
        for (slot, f) in v.iter_mut().zip(fields) {
            match f.parse() {
                Ok(x) => *slot = x,
                Err(_) => break,
            }
            n += 1;
        }
        if n < 4 {
            continue;
        }
        let total = v.iter().fold(0u64, |a, &x| a.saturating_add(x));
        let idle = v[3].saturating_add(v[4]);
        return Some(CpuTimes {
            busy: total.saturating_sub(idle),
            iowait: v[4],
            total,
        });
    }
    None
}

/// Parse the one-minute load average of `/proc/loadavg`, × 100.
pub fn parse_loadavg(text: &str) -> Option<u64> {
    let x: f64 = text.split_whitespace().next()?.parse().ok()?;
    (x.is_finite() && x >= 0.0).then(|| (x * 100.0).round().min(u64::MAX as f64) as u64)
}

/// What `/proc/meminfo` says, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_kib: Option<u64>,
    /// `MemAvailable` (before Linux 3.14: `MemFree + Buffers + Cached`).
    pub available_kib: Option<u64>,
    /// `SwapTotal - SwapFree`.
    pub swap_used_kib: Option<u64>,
}

/// Parse `/proc/meminfo` (`Key:  value kB` lines).
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut total = None;
    let mut available = None;
    let (mut free, mut buffers, mut cached) = (None, None, None);
    let (mut swap_total, mut swap_free) = (None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(Ok(v)) = rest.split_whitespace().next().map(str::parse::<u64>) else {
            continue;
        };
        let slot = match key.trim() {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "MemFree" => &mut free,
            "Buffers" => &mut buffers,
            "Cached" => &mut cached,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        *slot = Some(v);
    }
    let available = available.or_else(|| {
        let (f, b, c): (u64, u64, u64) = (free?, buffers?, cached?);
        Some(f.saturating_add(b).saturating_add(c))
    });
    MemInfo {
        total_kib: total,
        available_kib: available,
        swap_used_kib: swap_total.zip(swap_free).map(|(t, f)| t.saturating_sub(f)),
    }
}

/// Counters of one device (disk or interface), by name.
pub type DeviceCounters<const N: usize> = Vec<(String, [u64; N])>;

/// Parse `/proc/diskstats`: sectors read and written (`[read, written]`, 512-byte units) of
/// the devices `is_disk` accepts.
pub fn parse_diskstats(text: &str, is_disk: impl Fn(&str) -> bool) -> DeviceCounters<2> {
    let mut out = Vec::new();
    for line in text.lines() {
        // major minor name reads merged sectors_read ms writes merged sectors_written ...
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || !is_disk(f[2]) {
            continue;
        }
        if let (Ok(r), Ok(w)) = (f[5].parse(), f[9].parse()) {
            out.push((f[2].to_owned(), [r, w]));
        }
    }
    out
}

/// Whether `name` looks like a whole disk rather than a partition (used when `/sys/block`
/// cannot be listed): `sd*`, `hd*`, `vd*`, `xvd*` without a digit, `nvme<N>n<M>`,
/// `mmcblk<N>`.
pub fn is_whole_disk_name(name: &str) -> bool {
    let letters = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = name.strip_prefix("xvd") {
        return letters(rest);
    }
    for prefix in ["sd", "hd", "vd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return letters(rest);
        }
    }
    if let Some(rest) = name.strip_prefix("nvme") {
        return rest
            .split_once('n')
            .is_some_and(|(c, n)| digits(c) && digits(n));
    }
    name.strip_prefix("mmcblk").is_some_and(digits)
}

/// Whether a device listed in `/sys/block` is virtual or stacked on other disks (its I/O is
/// not disk I/O, or is counted already).
pub fn is_virtual_block(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Index of each counter in the arrays [`parse_net_dev`] returns.
pub mod net {
    /// Bytes received.
    pub const RX_BYTES: usize = 0;
    /// Bytes sent.
    pub const TX_BYTES: usize = 1;
    /// Receive errors.
    pub const RX_ERRORS: usize = 2;
    /// Transmit errors.
    pub const TX_ERRORS: usize = 3;
    /// Packets dropped, receive plus transmit.
    pub const DROPS: usize = 4;
}

/// Parse `/proc/net/dev`: the counters of [`net`] for every interface but `lo`.
pub fn parse_net_dev(text: &str) -> DeviceCounters<5> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name == "lo" {
            continue;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast
        // tx: bytes packets errs drop fifo colls carrier compressed
        let f: Result<Vec<u64>, _> = rest.split_whitespace().map(str::parse).collect();
        let Ok(f) = f else { continue };
        if f.len() < 12 {
            continue;
        }
        let mut c = [0u64; 5];
        c[net::RX_BYTES] = f[0];
        c[net::TX_BYTES] = f[8];
        c[net::RX_ERRORS] = f[2];
        c[net::TX_ERRORS] = f[10];
        c[net::DROPS] = f[3].saturating_add(f[11]);
        out.push((name.to_owned(), c));
    }
    out
}

/// Parse `Tcp: ... RetransSegs ...` (header line, then the values line) of `/proc/net/snmp`.
pub fn parse_tcp_retrans(text: &str) -> Option<u64> {
    let mut header: Option<usize> = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("Tcp:") else {
            header = None;
            continue;
        };
        let mut fields = rest.split_whitespace();
        match header {
            None => header = fields.position(|f| f == "RetransSegs"),
            Some(i) => return fields.nth(i)?.parse().ok(),
        }
    }
    None
}

/// Size and free space of a filesystem, KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Size.
    pub total_kib: u64,
    /// Available to unprivileged users.
    pub available_kib: u64,
}

/// `statvfs(2)` of the filesystem holding `path`.
#[cfg(unix)]
#[allow(unsafe_code)]
#[allow(clippy::useless_conversion)] // the libc types are u32 on some targets, u64 on others
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated string that outlives the call and `st` points to
    // writable memory of the size and alignment of `struct statvfs`; statvfs(2) only reads the
    // former and writes the latter, which is read only when the call succeeded.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st` (and it was zeroed before anyway).
    let st = unsafe { st.assume_init() };
    let unit = u64::from(st.f_frsize).max(1);
    let kib = |blocks: u64| (u128::from(blocks) * u128::from(unit) / 1024) as u64;
    Ok(DiskSpace {
        total_kib: kib(u64::from(st.f_blocks)),
        available_kib: kib(u64::from(st.f_bavail)),
    })
}

/// `statvfs` is not available here.
#[cfg(not(unix))]
pub fn disk_space(_path: &Path) -> std::io::Result<DiskSpace> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// The raw inputs of one sample; `None` where a source could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings {
    /// `/proc/stat`.
    pub stat: Option<String>,
    /// `/proc/loadavg`.
    pub loadavg: Option<String>,
    /// `/proc/meminfo`.
    pub meminfo: Option<String>,
    /// `/proc/diskstats`.
    pub diskstats: Option<String>,
    /// The entries of `/sys/block` (whole disks and virtual block devices).
    pub block_devices: Option<Vec<String>>,
    /// `/proc/net/dev`.
    pub net_dev: Option<String>,
    /// `/proc/net/snmp`.
    pub net_snmp: Option<String>,
    /// `statvfs` of the storage directory.
    pub space: Option<DiskSpace>,
}

/// The sources, one bit each in [`Sampler`]'s "already logged" mask.
#[derive(Debug, Clone, Copy)]
enum Source {
    Stat = 0,
    Loadavg,
    Meminfo,
    Diskstats,
    BlockDevices,
    NetDev,
    NetSnmp,
    Space,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Stat => "/proc/stat",
            Source::Loadavg => "/proc/loadavg",
            Source::Meminfo => "/proc/meminfo",
            Source::Diskstats => "/proc/diskstats",
            Source::BlockDevices => "/sys/block",
            Source::NetDev => "/proc/net/dev",
            Source::NetSnmp => "/proc/net/snmp",
            Source::Space => "statvfs of the storage directory",
        }
    }
}

/// The counters of one sample, kept to compute the next sample's increases.
#[derive(Debug, Clone, Default)]
struct Counters {
    at_ms: u64,
    cpu: Option<CpuTimes>,
    disks: Option<DeviceCounters<2>>,
    nets: Option<DeviceCounters<5>>,
    retrans: Option<u64>,
}

/// Takes samples of the host metrics, keeping the previous counters.
#[derive(Debug)]
pub struct Sampler {
    proc: PathBuf,
    sys_block: PathBuf,
    storage: PathBuf,
    prev: Option<Counters>,
    /// Sources whose failure was logged already.
    logged: u16,
}

impl Sampler {
    /// A sampler of this machine; disk space is that of `storage_dir`'s filesystem.
    pub fn new(storage_dir: &Path) -> Self {
        Sampler::with_roots(Path::new("/proc"), Path::new("/sys/block"), storage_dir)
    }

    /// A sampler reading `proc` instead of `/proc` and `sys_block` instead of `/sys/block`.
    pub fn with_roots(proc: &Path, sys_block: &Path, storage_dir: &Path) -> Self {
        Sampler {
            proc: proc.to_owned(),
            sys_block: sys_block.to_owned(),
            storage: storage_dir.to_owned(),
            prev: None,
            logged: 0,
        }
    }

    /// Log a source's failure once (debug), and nothing the next times.
    fn unavailable(&mut self, source: Source, why: &dyn std::fmt::Display) {
        let bit = 1u16 << source as u16;
        if self.logged & bit == 0 {
            self.logged |= bit;
            tracing::debug!(source = source.name(), reason = %why, "host metric source unavailable; its metrics are left out");
        }
    }

    fn read_text(&mut self, source: Source, rel: &str) -> Option<String> {
        match std::fs::read_to_string(self.proc.join(rel)) {
            Ok(t) => Some(t),
            Err(e) => {
                self.unavailable(source, &e);
                None
            }
        }
    }

    /// Read every source now.
    pub fn read(&mut self) -> Readings {
        let block_devices = match std::fs::read_dir(&self.sys_block) {
            Ok(dir) => Some(
                dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect(),
            ),
            Err(e) => {
                self.unavailable(Source::BlockDevices, &e);
                None
            }
        };
        let space = match disk_space(&self.storage) {
            Ok(s) => Some(s),
            Err(e) => {
                self.unavailable(Source::Space, &e);
                None
            }
        };
        Readings {
            stat: self.read_text(Source::Stat, "stat"),
            loadavg: self.read_text(Source::Loadavg, "loadavg"),
            meminfo: self.read_text(Source::Meminfo, "meminfo"),
            diskstats: self.read_text(Source::Diskstats, "diskstats"),
            block_devices,
            net_dev: self.read_text(Source::NetDev, "net/dev"),
            net_snmp: self.read_text(Source::NetSnmp, "net/snmp"),
            space,
        }
    }

    /// Read every source and make the sample for `at_ms` (Unix ms).
    pub fn sample(&mut self, at_ms: u64) -> MetricsSample {
        let r = self.read();
        self.sample_from(&r, at_ms)
    }

    /// Make the sample for `at_ms` (Unix ms) from `r`, against the previous counters.
    pub fn sample_from(&mut self, r: &Readings, at_ms: u64) -> MetricsSample {
        let cur = self.counters(r, at_ms);
        // Increases need a previous reading at least a second old. Closer than that the
        // previous counters are kept (so nothing is lost); before it (the clock went back)
        // they are replaced.
        let elapsed = self
            .prev
            .as_ref()
            .map(|p| at_ms.checked_sub(p.at_ms).ok_or(()));
        let interval_s = match elapsed {
            Some(Ok(ms)) if ms >= 1000 => {
                u32::try_from(ms.saturating_add(500) / 1000).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        let mut m = MetricsSample::new((at_ms / 1000).min(u64::from(u32::MAX)) as u32, interval_s);
        let mut set = |metric, value: Option<u64>| {
            if let Some(v) = value {
                // Cannot fail: each metric is set once and all of them fit.
                let _ = m.set(metric, v);
            }
        };

        if let (true, Some(p)) = (interval_s > 0, &self.prev) {
            if let (Some(a), Some(b)) = (p.cpu, cur.cpu) {
                let total = b.total.saturating_sub(a.total);
                let share = |x: u64, y: u64| {
                    (total > 0).then(|| {
                        (u128::from(y.saturating_sub(x)) * 1000 / u128::from(total)).min(1000)
                            as u64
                    })
                };
                set(Metric::CpuBusyPermille, share(a.busy, b.busy));
                set(Metric::CpuIowaitPermille, share(a.iowait, b.iowait));
            }
        }
        let mem = r.meminfo.as_deref().map(parse_meminfo).unwrap_or_default();
        set(
            Metric::Load1Centi,
            r.loadavg.as_deref().and_then(parse_loadavg),
        );
        set(Metric::MemTotalKib, mem.total_kib);
        set(Metric::MemAvailableKib, mem.available_kib);
        set(Metric::SwapUsedKib, mem.swap_used_kib);
        set(Metric::DiskTotalKib, r.space.map(|s| s.total_kib));
        set(Metric::DiskAvailableKib, r.space.map(|s| s.available_kib));
        if let (true, Some(p)) = (interval_s > 0, &self.prev) {
            if let (Some(a), Some(b)) = (&p.disks, &cur.disks) {
                let d = increase(a, b);
                set(Metric::DiskReadKib, Some(d[0] / 2));
                set(Metric::DiskWriteKib, Some(d[1] / 2));
            }
            if let (Some(a), Some(b)) = (&p.nets, &cur.nets) {
                let d = increase(a, b);
                set(Metric::NetRxKib, Some(d[net::RX_BYTES] / 1024));
                set(Metric::NetTxKib, Some(d[net::TX_BYTES] / 1024));
                set(Metric::NetRxErrors, Some(d[net::RX_ERRORS]));
                set(Metric::NetTxErrors, Some(d[net::TX_ERRORS]));
                set(Metric::NetDrops, Some(d[net::DROPS]));
            }
            if let (Some(a), Some(b)) = (p.retrans, cur.retrans) {
                set(Metric::TcpRetransSegs, Some(counter_increase(a, b)));
            }
        }
        if interval_s > 0 || !matches!(elapsed, Some(Ok(_))) {
            self.prev = Some(cur);
        }
        m
    }

    /// Parse the counters of `r`, logging (once) sources that do not parse.
    fn counters(&mut self, r: &Readings, at_ms: u64) -> Counters {
        let cpu = r.stat.as_deref().and_then(|t| {
            let c = parse_stat(t);
            if c.is_none() {
                self.unavailable(Source::Stat, &"no cpu line");
            }
            c
        });
        if let Some(t) = &r.loadavg {
            if parse_loadavg(t).is_none() {
                self.unavailable(Source::Loadavg, &"unparseable");
            }
        }
        if let Some(t) = &r.meminfo {
            if parse_meminfo(t).total_kib.is_none() {
                self.unavailable(Source::Meminfo, &"no MemTotal");
            }
        }
        let disks = r.diskstats.as_deref().map(|t| match &r.block_devices {
            Some(list) => parse_diskstats(t, |name| {
                !is_virtual_block(name) && list.iter().any(|d| d == name)
            }),
            None => parse_diskstats(t, is_whole_disk_name),
        });
        let retrans = r.net_snmp.as_deref().and_then(|t| {
            let v = parse_tcp_retrans(t);
            if v.is_none() {
                self.unavailable(Source::NetSnmp, &"no Tcp RetransSegs");
            }
            v
        });
        Counters {
            at_ms,
            cpu,
            disks,
            nets: r.net_dev.as_deref().map(parse_net_dev),
            retrans,
        }
    }
}

/// Increase of a counter; a smaller value means it restarted from zero.
fn counter_increase(before: u64, now: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

/// Sum over devices of their counters' increases. A device missing before appeared during
/// the interval: all of its counts are new. A device gone now contributes nothing.
fn increase<const N: usize>(before: &DeviceCounters<N>, now: &DeviceCounters<N>) -> [u64; N] {
    let mut sum = [0u64; N];
    for (name, c) in now {
        let prev = before.iter().find(|(n, _)| n == name).map(|(_, p)| p);
        for i in 0..N {
            let inc = match prev {
                Some(p) => counter_increase(p[i], c[i]),
                None => c[i],
            };
            sum[i] = sum[i].saturating_add(inc);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  1000 10 300 8000 100 20 30 40 5 0\n\
                        cpu0 500 5 150 4000 50 10 15 20 0 0\n\
                        intr 12345 0 1\nctxt 999\n";
    const STAT_LATER: &str = "cpu  1500 10 400 8350 150 20 30 40 5 0\ncpu0 1 2 3 4\n";
    const MEMINFO: &str = "MemTotal:        2002124 kB\n\
                           MemFree:          300000 kB\n\
                           MemAvailable:    1433600 kB\n\
                           Buffers:           20000 kB\n\
                           Cached:           600000 kB\n\
                           SwapTotal:        102396 kB\n\
                           SwapFree:          92396 kB\n\
                           HugePages_Total:       0\n";
    const DISKSTATS: &str = "   7       0 loop0 100 0 800 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n \
                            8       0 sda 1000 10 20000 500 400 20 8000 300 0 700 800 0 0 0 0 0 0\n \
                            8       1 sda1 990 10 19900 500 400 20 8000 300 0 700 800 0 0 0 0 0 0\n \
                          253       0 dm-0 900 0 19000 400 390 0 7900 300 0 700 700 0 0 0 0 0 0\n \
                          259       0 nvme0n1 50 0 1000 20 10 0 200 5 0 25 25\n";
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo: 65056775   48654    0    0    0     0          0         0 65056775   48654    0    0    0     0       0          0\n\
  eth0: 1048576   16015    2    1    0     0          0         0   524288    9856    1    4    0     0       0          0\n\
 wlan0:2048 10 0 0 0 0 0 0 1024 5 0 0 0 0 0 0\n";
    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                        Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens RetransSegs InErrs\n\
                        Tcp: 1 200 120000 -1 3915 17 0\n\
                        Udp: InDatagrams\nUdp: 5\n";

    fn readings(stat: &str, diskstats: &str, net: &str, snmp: &str) -> Readings {
        Readings {
            stat: Some(stat.into()),
            loadavg: Some("0.37 0.50 0.61 2/100 4242\n".into()),
            meminfo: Some(MEMINFO.into()),
            diskstats: Some(diskstats.into()),
            block_devices: Some(
                ["loop0", "sda", "dm-0", "nvme0n1"]
                    .map(String::from)
                    .to_vec(),
            ),
            net_dev: Some(net.into()),
            net_snmp: Some(snmp.into()),
            space: Some(DiskSpace {
                total_kib: 15_000_000,
                available_kib: 9_000_000,
            }),
        }
    }

    #[test]
    fn stat() {
        let c = parse_stat(STAT).unwrap();
        assert_eq!(c.total, 1000 + 10 + 300 + 8000 + 100 + 20 + 30 + 40);
        assert_eq!(c.busy, c.total - 8100);
        assert_eq!(c.iowait, 100);
        // an old kernel with four fields
        assert_eq!(
            parse_stat("cpu 1 2 3 4\n"),
            Some(CpuTimes {
                busy: 6,
                iowait: 0,
                total: 10
            })
        );
        // malformed aggregate lines are skipped; the per-core lines never count
        assert_eq!(parse_stat("cpu x y z\ncpu0 1 2 3 4\n"), None);
        assert_eq!(parse_stat("cpu 1 2\ncpu 1 2 3 4 5\n").unwrap().total, 15);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn loadavg() {
        assert_eq!(parse_loadavg("0.37 0.50 0.61 2/100 4242\n"), Some(37));
        assert_eq!(parse_loadavg("12.345 1 1 1/1 1"), Some(1235));
        for bad in ["", "x 1 2", "-1 0 0", "NaN 1 1", "inf"] {
            assert_eq!(parse_loadavg(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn meminfo() {
        let m = parse_meminfo(MEMINFO);
        assert_eq!(
            m,
            MemInfo {
                total_kib: Some(2_002_124),
                available_kib: Some(1_433_600),
                swap_used_kib: Some(10_000)
            }
        );
        // before MemAvailable existed; garbage lines skipped
        let old = parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: x kB\nBuffers: 5 kB\nnonsense\nCached: 20 kB\n:\n");
        assert_eq!(
            (old.total_kib, old.available_kib, old.swap_used_kib),
            (Some(100), Some(35), None)
        );
        assert_eq!(parse_meminfo("garbage"), MemInfo::default());
    }

    #[test]
    fn diskstats_whole_disks_only() {
        let by_name = parse_diskstats(DISKSTATS, is_whole_disk_name);
        assert_eq!(
            by_name,
            vec![
                ("sda".to_string(), [20000, 8000]),
                ("nvme0n1".to_string(), [1000, 200])
            ]
        );
        let listed = ["sda".to_string()];
        let only_sda = parse_diskstats(DISKSTATS, |n| listed.iter().any(|d| d == n));
        assert_eq!(only_sda.len(), 1);
        // short and non-numeric lines are skipped
        assert!(parse_diskstats("8 0 sda 1 2 3\n8 0 sdb a b c d e f g h\n", |_| true).is_empty());
        for (name, whole) in [
            ("sda", true),
            ("sdab", true),
            ("sda1", false),
            ("vda", true),
            ("xvdb", true),
            ("xvdb2", false),
            ("hdc", true),
            ("nvme0n1", true),
            ("nvme0n1p2", false),
            ("nvme0c0n1", false),
            ("mmcblk0", true),
            ("mmcblk0p1", false),
            ("mmcblk0boot0", false),
            ("loop0", false),
            ("dm-0", false),
            ("sd", false),
            ("", false),
        ] {
            assert_eq!(is_whole_disk_name(name), whole, "{name}");
        }
        assert!(is_virtual_block("zram0") && is_virtual_block("md127") && !is_virtual_block("sda"));
    }

    #[test]
    fn net_dev_without_loopback() {
        let n = parse_net_dev(NET_DEV);
        assert_eq!(
            n,
            vec![
                ("eth0".to_string(), [1_048_576, 524_288, 2, 1, 5]),
                ("wlan0".to_string(), [2048, 1024, 0, 0, 0]),
            ]
        );
        assert!(parse_net_dev("eth0: 1 2 3\neth1: a b c d e f g h i j k l\n: 1\n").is_empty());
    }

    #[test]
    fn snmp() {
        assert_eq!(parse_tcp_retrans(SNMP), Some(17));
        assert_eq!(parse_tcp_retrans("Tcp: RetransSegs\n"), None);
        assert_eq!(parse_tcp_retrans("Tcp: RetransSegs\nTcp: x\n"), None);
        assert_eq!(
            parse_tcp_retrans("Tcp: A RetransSegs\nUdp: 1 2\nTcp: 1 2\n"),
            None,
            "the values must follow the header"
        );
        assert_eq!(parse_tcp_retrans(""), None);
    }

    #[test]
    fn first_sample_has_gauges_then_increases() {
        let mut s = Sampler::with_roots(
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
            Path::new("."),
        );
        let t0 = 1_764_000_000_000;
        let first = s.sample_from(&readings(STAT, DISKSTATS, NET_DEV, SNMP), t0);
        assert_eq!((first.at_s, first.interval_s), (1_764_000_000, 0));
        assert_eq!(first.get(Metric::MemTotalKib), Some(2_002_124));
        assert_eq!(first.get(Metric::Load1Centi), Some(37));
        assert_eq!(first.get(Metric::DiskAvailableKib), Some(9_000_000));
        assert!(
            first.values().iter().all(|(m, _)| !m.is_interval()),
            "{first:?}"
        );

        // 60 s later: sda read 2 MiB more and wrote 512 KiB, eth0 got 1 MiB, a new interface
        // appeared, and the TCP retransmissions counter went up by 3
        let disks = DISKSTATS.replace(
            "sda 1000 10 20000 500 400 20 8000",
            "sda 1000 10 24096 500 400 20 9024",
        );
        let net = NET_DEV.replace("eth0: 1048576", "eth0: 2097152")
            + "docker0: 10240 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let snmp = SNMP.replace("3915 17 0", "3915 20 0");
        let m = s.sample_from(&readings(STAT_LATER, &disks, &net, &snmp), t0 + 60_200);
        assert_eq!((m.at_s, m.interval_s), (1_764_000_060, 60));
        // total grew by 1000 ticks: busy 600, iowait 50
        assert_eq!(m.get(Metric::CpuBusyPermille), Some(600));
        assert_eq!(m.get(Metric::CpuIowaitPermille), Some(50));
        assert_eq!(m.get(Metric::DiskReadKib), Some(2048));
        assert_eq!(m.get(Metric::DiskWriteKib), Some(512));
        assert_eq!(m.get(Metric::NetRxKib), Some(1024 + 10));
        assert_eq!(m.get(Metric::NetTxKib), Some(0));
        assert_eq!(m.get(Metric::NetDrops), Some(0));
        assert_eq!(m.get(Metric::TcpRetransSegs), Some(3));
        assert_eq!(m.len(), Metric::COUNT);

        // a sample 0.3 s later carries gauges only and keeps the baseline
        let soon = s.sample_from(&readings(STAT_LATER, &disks, &net, &snmp), t0 + 60_500);
        assert_eq!(soon.interval_s, 0);
        assert_eq!(soon.get(Metric::DiskReadKib), None);
        let next = s.sample_from(&readings(STAT_LATER, &disks, &net, &snmp), t0 + 120_200);
        assert_eq!(next.interval_s, 60);
        assert_eq!(next.get(Metric::DiskReadKib), Some(0));
        // the clock went back: gauges only, and a new baseline
        let back = s.sample_from(&readings(STAT, DISKSTATS, NET_DEV, SNMP), t0);
        assert_eq!(back.interval_s, 0);
        let again = s.sample_from(&readings(STAT_LATER, &disks, &net, &snmp), t0 + 60_200);
        assert_eq!(again.get(Metric::DiskReadKib), Some(2048));
    }

    #[test]
    fn counters_that_restart_or_vanish_do_not_jump() {
        let mut s = Sampler::with_roots(Path::new("/x"), Path::new("/x"), Path::new("."));
        s.sample_from(&readings(STAT, DISKSTATS, NET_DEV, SNMP), 0);
        // eth0 was recreated (counters from zero), wlan0 vanished; the CPU counters went back
        let net = " eth0: 4096 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let m = s.sample_from(&readings("cpu 1 1 1 1\n", DISKSTATS, net, SNMP), 10_000);
        assert_eq!(m.get(Metric::NetRxKib), Some(4));
        assert_eq!(m.get(Metric::CpuBusyPermille), None, "no CPU time passed");
        assert_eq!(m.get(Metric::TcpRetransSegs), Some(0));
    }

    #[test]
    fn missing_sources_are_left_out() {
        let mut s = Sampler::with_roots(Path::new("/x"), Path::new("/x"), Path::new("."));
        let none = Readings::default();
        assert!(s.sample_from(&none, 0).is_empty());
        assert!(s.sample_from(&none, 60_000).is_empty());
        let garbage = Readings {
            stat: Some("\u{0}\u{ff}cpu".into()),
            loadavg: Some("".into()),
            meminfo: Some("::::".into()),
            diskstats: Some("1 2".into()),
            block_devices: None,
            net_dev: Some("lo: 1 2 3".into()),
            net_snmp: Some("Tcp:".into()),
            space: None,
        };
        s.sample_from(&garbage, 120_000);
        let m = s.sample_from(&garbage, 180_000);
        // only the sums over no device at all
        assert!(m.values().iter().all(|&(_, v)| v == 0), "{m:?}");
        // files that are not there: nothing but the disk space of the storage directory
        let mut s = Sampler::with_roots(
            Path::new("/nonexistent/proc"),
            Path::new("/nonexistent/sys"),
            Path::new("."),
        );
        let m = s.sample(1000);
        let space: Vec<Metric> = m.values().iter().map(|p| p.0).collect();
        assert!(
            space.is_empty() || space == [Metric::DiskTotalKib, Metric::DiskAvailableKib],
            "{m:?}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine() {
        let mut s = Sampler::new(Path::new("."));
        let first = s.sample(1_000_000);
        // let CPU time pass (the kernel counts it in ticks of 10 ms or so)
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(first.get(Metric::MemTotalKib).unwrap() > 0, "{first:?}");
        assert!(first.get(Metric::DiskTotalKib).unwrap() > 0, "{first:?}");
        let m = s.sample(1_002_000);
        assert_eq!(m.interval_s, 2);
        assert!(m.get(Metric::CpuBusyPermille).is_some(), "{m:?}");
        assert!(m.get(Metric::NetRxKib).is_some(), "{m:?}");
    }
}
