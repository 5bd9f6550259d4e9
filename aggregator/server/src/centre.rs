//! The centre's side of the edge contract (DESIGN §3): central edge configurations and the
//! edges' reports on them, who reaches each edge through which broker, and requests from the
//! centre to an edge (on-demand probes, recent results).
//!
//! - [`ConfigStore`]: SQLite tables `edge_configs` and `config_reports` (schema migration 2),
//!   on a connection of its own (WAL: it does not block the ingest writer for long).
//! - [`compile`]: TOML in the edge's format (`window_s`, `[[probe]]`, `[[rule]]`) to the wire's
//!   `edge-config`, whose ETag is a hash of the content (the same configuration always has the
//!   same ETag, so storing it again does not make edges reload).
//! - [`decode_report`]: CDDL `config-report = [v: 1, etag: uint, accepted: bool, reason: tstr]`,
//!   decoded with the edge's own type ([`qos_wire::config::ConfigReport`]), strictly.
//! - [`Centre`]: what the CoAP thread and the HTTP workers share: the configuration store, the
//!   embedded directory ([`Registry`]), the address each edge's last batch came from, what each
//!   broker forwarded and last reported ([`BrokerReport`]), and the [`Order`]s the HTTP API
//!   hands to the CoAP thread.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::time::Instant;

use qos_broker::{BrokerReport, Registry, ReportEdge};
use qos_coap::Code;
use qos_probe_config::ProbeSet;
use qos_wire::ids::EdgeId;
use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{StoreError, BUSY_TIMEOUT};

/// Largest compiled configuration: it must fit in one CoAP message with its header and
/// options (block-wise transfer is not offered).
pub const MAX_CONFIG_BYTES: usize = 1024;
/// Longest `reason` of a report (the wire's bound; a longer one is refused with the report).
pub const MAX_REASON: usize = qos_wire::config::MAX_REASON;
/// Addresses [`CentreState::senders`] and [`CentreState::reports`] each hold at most; beyond,
/// the one heard from least recently is forgotten ([`make_room`]), so senders of spoofed
/// addresses cannot grow them without bound.
pub const MAX_PEERS: usize = 4096;

/// Makes room for `key` in `map` of at most `max` entries: when `key` is new and the map is
/// full, the entry with the smallest `heard` (the least recently heard) is removed.
pub fn make_room<K: Ord + Copy, V>(
    map: &mut BTreeMap<K, V>,
    key: K,
    max: usize,
    heard: impl Fn(&V) -> u64,
) {
    if map.len() < max || map.contains_key(&key) {
        return;
    }
    if let Some(oldest) = map.iter().min_by_key(|(_, v)| heard(v)).map(|(k, _)| *k) {
        map.remove(&oldest);
    }
}

/// A configuration compiled from TOML.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The ETag (a hash of the content, never 0).
    pub etag: u32,
    /// CDDL `edge-config`.
    pub cbor: Vec<u8>,
    /// The parsed set.
    pub set: ProbeSet,
}

/// FNV-1a, 32 bits.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Parses, validates and encodes `toml`; the error is one line naming the value at fault.
pub fn compile(toml: &str) -> Result<Compiled, String> {
    let set = ProbeSet::parse(toml)?;
    let unsigned = set.edge_config(0)?;
    let etag = fnv1a(&unsigned).max(1);
    let cbor = set.edge_config(etag)?;
    if cbor.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "the compiled configuration has {} bytes; at most {MAX_CONFIG_BYTES} fit in one CoAP message",
            cbor.len()
        ));
    }
    Ok(Compiled { etag, cbor, set })
}

/// An edge's report on applying a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReport {
    /// The ETag of the configuration it is about.
    pub etag: u32,
    /// Whether the edge applied it.
    pub accepted: bool,
    /// Why not (or a note), as the edge said it.
    pub reason: String,
}

/// Decodes CDDL `config-report` with the edge's own type,
/// [`qos_wire::config::ConfigReport`]: strictly (exactly four elements, version 1, a reason of
/// at most 96 bytes), like every other record on the wire; a newer edge says so with a new
/// version, which is refused with its number rather than half-read.
pub fn decode_report(bytes: &[u8]) -> Result<ConfigReport, String> {
    let r = qos_wire::config::ConfigReport::decode(bytes)
        .map_err(|e| format!("bad config-report: {e}"))?;
    Ok(ConfigReport {
        etag: r.etag,
        accepted: r.accepted,
        reason: r.reason.to_string(),
    })
}

/// A stored central configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentralConfig {
    /// The edge.
    pub edge_id: u32,
    /// Its ETag.
    pub etag: u32,
    /// CDDL `edge-config`.
    pub cbor: Vec<u8>,
    /// The TOML it came from.
    pub toml: String,
    /// `api` or `config-file`.
    pub source: String,
    /// When it was stored, unix ms.
    pub updated_at_ms: u64,
}

/// The last report of an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// The report.
    pub report: ConfigReport,
    /// When it arrived, unix ms.
    pub at_ms: u64,
    /// The last ETag the edge said it applied.
    pub applied_etag: Option<u32>,
    /// The last ETag the edge said it rejected, and why.
    pub rejected: Option<(u32, String)>,
}

/// Why a configuration was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The TOML is not a valid configuration (the message names the value at fault).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Central configurations and reports, on their own connection.
pub struct ConfigStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore").finish_non_exhaustive()
    }
}

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConfigStore {
    /// Opens the database at `path`, already migrated by [`crate::store::SqliteStore::open`].
    pub fn open(path: &Path) -> Result<ConfigStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // The broker events of `crate::silence` (table `broker_events`; the services' events
        // are in `events`): created here, outside the numbered migrations, as the table only
        // grows and nothing else reads it.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS broker_events (
                 id     INTEGER PRIMARY KEY,
                 at     INTEGER NOT NULL,   -- unix ms
                 kind   TEXT NOT NULL,      -- broker_silent | broker_back | region_silent | region_back
                 broker TEXT NOT NULL,      -- a region event: its brokers, comma-separated
                 edges  TEXT NOT NULL,      -- JSON array of edge ids
                 detail TEXT NOT NULL,
                 region TEXT NOT NULL DEFAULT ''  -- a region event's region
             );",
        )
        .map_err(open_err)?;
        // A table created before region events has no `region` column yet.
        let has_region = conn
            .prepare("SELECT 1 FROM pragma_table_info('broker_events') WHERE name = 'region'")
            .and_then(|mut st| st.exists([]))
            .map_err(open_err)?;
        if !has_region {
            conn.execute_batch(
                "ALTER TABLE broker_events ADD COLUMN region TEXT NOT NULL DEFAULT ''",
            )
            .map_err(open_err)?;
        }
        Ok(ConfigStore {
            conn: Mutex::new(conn),
        })
    }

    /// Stores event `e`.
    pub fn record_event(&self, e: &crate::silence::Event) -> Result<(), StoreError> {
        let edges = serde_json::to_string(&e.edges).unwrap_or_else(|_| "[]".into());
        lock(&self.conn).execute(
            "INSERT INTO broker_events (at, kind, broker, edges, detail, region)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![e.at_ms as i64, e.kind, e.broker, edges, e.detail, e.region],
        )?;
        Ok(())
    }

    /// The last `limit` events, newest first, as JSON objects
    /// `{"id","at","kind","broker","edges","detail","region"}` (`region` null for a broker
    /// event).
    pub fn events(&self, limit: u32) -> Result<Vec<serde_json::Value>, StoreError> {
        let conn = lock(&self.conn);
        let mut st = conn.prepare(
            "SELECT id, at, kind, broker, edges, detail, region FROM broker_events
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit], |r| {
            let edges: String = r.get(4)?;
            Ok(serde_json::json!({
                "id": r.get::<_, i64>(0)?,
                "at": r.get::<_, i64>(1)?,
                "kind": r.get::<_, String>(2)?,
                "broker": r.get::<_, String>(3)?,
                "edges": serde_json::from_str::<serde_json::Value>(&edges)
                    .unwrap_or(serde_json::Value::Null),
                "detail": r.get::<_, String>(5)?,
                "region": Some(r.get::<_, String>(6)?).filter(|r| !r.is_empty()),
            }))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Compiles `toml` and stores it as edge `edge`'s configuration (replacing any), from
    /// `source`, at `now_ms`. Nothing is stored when it does not compile.
    pub fn put(
        &self,
        edge: u32,
        toml: &str,
        source: &str,
        now_ms: u64,
    ) -> Result<CentralConfig, PutError> {
        let compiled = compile(toml).map_err(PutError::Invalid)?;
        let row = CentralConfig {
            edge_id: edge,
            etag: compiled.etag,
            cbor: compiled.cbor,
            toml: toml.to_string(),
            source: source.to_string(),
            updated_at_ms: now_ms,
        };
        lock(&self.conn)
            .execute(
                "INSERT OR REPLACE INTO edge_configs (edge_id, etag, config, toml, source, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    edge,
                    row.etag,
                    row.cbor,
                    row.toml,
                    row.source,
                    now_ms as i64
                ],
            )
            .map_err(StoreError::from)?;
        Ok(row)
    }

    /// Edge `edge`'s configuration.
    pub fn get(&self, edge: u32) -> Result<Option<CentralConfig>, StoreError> {
        Ok(lock(&self.conn)
            .query_row(
                "SELECT etag, config, toml, source, updated_at FROM edge_configs WHERE edge_id = ?1",
                [edge],
                |r| {
                    Ok(CentralConfig {
                        edge_id: edge,
                        etag: r.get(0)?,
                        cbor: r.get(1)?,
                        toml: r.get(2)?,
                        source: r.get(3)?,
                        updated_at_ms: r.get::<_, i64>(4)? as u64,
                    })
                },
            )
            .optional()?)
    }

    /// Removes edge `edge`'s configuration; whether there was one.
    pub fn delete(&self, edge: u32) -> Result<bool, StoreError> {
        Ok(lock(&self.conn).execute("DELETE FROM edge_configs WHERE edge_id = ?1", [edge])? > 0)
    }

    /// Records edge `edge`'s report received at `now_ms`.
    pub fn record_report(
        &self,
        edge: u32,
        r: &ConfigReport,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT INTO config_reports (edge_id, etag, accepted, reason, at, applied_etag,
                                         rejected_etag, rejected_reason)
             VALUES (?1, ?2, ?3, ?4, ?5,
                     CASE WHEN ?3 THEN ?2 END, CASE WHEN ?3 THEN NULL ELSE ?2 END,
                     CASE WHEN ?3 THEN NULL ELSE ?4 END)
             ON CONFLICT (edge_id) DO UPDATE SET
                 etag = excluded.etag, accepted = excluded.accepted, reason = excluded.reason,
                 at = excluded.at,
                 applied_etag = coalesce(excluded.applied_etag, applied_etag),
                 rejected_etag = CASE WHEN excluded.accepted THEN rejected_etag
                                      ELSE excluded.rejected_etag END,
                 rejected_reason = CASE WHEN excluded.accepted THEN rejected_reason
                                        ELSE excluded.rejected_reason END",
            params![edge, r.etag, r.accepted, r.reason, now_ms as i64],
        )?;
        Ok(())
    }

    /// Edge `edge`'s last report.
    pub fn report(&self, edge: u32) -> Result<Option<ReportRow>, StoreError> {
        Ok(lock(&self.conn)
            .query_row(
                "SELECT etag, accepted, reason, at, applied_etag, rejected_etag, rejected_reason
                 FROM config_reports WHERE edge_id = ?1",
                [edge],
                |r| {
                    let rejected: Option<u32> = r.get(5)?;
                    let why: Option<String> = r.get(6)?;
                    Ok(ReportRow {
                        report: ConfigReport {
                            etag: r.get(0)?,
                            accepted: r.get(1)?,
                            reason: r.get(2)?,
                        },
                        at_ms: r.get::<_, i64>(3)? as u64,
                        applied_etag: r.get(4)?,
                        rejected: rejected.map(|e| (e, why.unwrap_or_default())),
                    })
                },
            )
            .optional()?)
    }
}

/// What the centre saw of one broker (an address batches of edges came from).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerSeen {
    /// Edges whose batches it forwarded.
    pub edges: BTreeSet<u32>,
    /// When its last batch arrived, unix ms.
    pub last_batch_ms: u64,
    /// Batches it forwarded.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
}

/// How the centre reaches an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<A = SocketAddr> {
    /// The edge talks to the centre itself, from this address.
    Direct(A),
    /// Through the broker at this address (requests carry `id=`).
    Broker(A),
}

/// The shared mutable part of [`Centre`].
#[derive(Debug)]
pub struct CentreState<A = SocketAddr> {
    /// The embedded directory: edges registered with the centre itself.
    pub registry: Registry<A>,
    /// The address each edge's last batch came from.
    pub via: BTreeMap<u32, A>,
    /// Addresses that forwarded batches, with what they forwarded.
    pub senders: BTreeMap<A, BrokerSeen>,
    /// The last report (`POST /b`) of each broker, with when it arrived (unix ms).
    pub reports: BTreeMap<A, (u64, BrokerReport)>,
    /// Brokers gone silent ([`crate::silence`]), with since when (unix ms).
    pub silent: BTreeMap<A, u64>,
    /// Regions gone silent as a whole ([`crate::silence`]), with since when (unix ms).
    pub silent_regions: BTreeMap<String, u64>,
    /// Events of [`crate::silence`] raised since start, by kind.
    pub silence_events: BTreeMap<&'static str, u64>,
    /// Each broker's stable id (its reports' `broker-id`) with the address it reports from
    /// now: the broker registry is keyed by identity, the address only says where it is.
    pub broker_ids: BTreeMap<String, A>,
    /// Brokers that came back from a new address (old, new) since [`crate::silence`] last
    /// looked ([`CentreState::record_broker_report`]).
    pub moved: Vec<(A, A)>,
}

impl<A> Default for CentreState<A> {
    fn default() -> Self {
        CentreState {
            registry: Registry::default(),
            via: BTreeMap::new(),
            senders: BTreeMap::new(),
            reports: BTreeMap::new(),
            silent: BTreeMap::new(),
            silent_regions: BTreeMap::new(),
            silence_events: BTreeMap::new(),
            broker_ids: BTreeMap::new(),
            moved: Vec::new(),
        }
    }
}

impl<A: Copy + Ord> CentreState<A> {
    /// Records broker report `report` received from `from` at `at_ms` (unix ms). A report
    /// naming a broker id already known at another address is that broker restarted (or
    /// moved): its old entry is folded into the new address — what it forwarded, its edges'
    /// routes, its silence (so the watch closes the episode with `broker_back` instead of
    /// leaving a stale silent broker behind) — and the old address is forgotten. A report
    /// without an id (an older broker) keys the broker by address, as before.
    pub fn record_broker_report(&mut self, from: A, at_ms: u64, report: BrokerReport) {
        if !report.id.is_empty() {
            // An address now used by another broker no longer names the one it named.
            self.broker_ids
                .retain(|id, addr| *addr != from || *id == report.id);
            match self.broker_ids.insert(report.id.clone(), from) {
                Some(old) if old != from => self.move_broker(old, from),
                _ => {}
            }
        }
        make_room(&mut self.reports, from, MAX_PEERS, |r| r.0);
        self.reports.insert(from, (at_ms, report));
        // Ids of addresses forgotten above go too: the ids stay bounded by the reports.
        if self.broker_ids.len() > self.reports.len() {
            let reports = &self.reports;
            self.broker_ids.retain(|_, addr| reports.contains_key(addr));
        }
    }

    /// The stable id of the broker at `addr`, if it reported one.
    pub fn broker_id(&self, addr: A) -> Option<&str> {
        self.reports
            .get(&addr)
            .map(|(_, r)| r.id.as_str())
            .filter(|id| !id.is_empty())
    }

    /// Folds what is known of the broker at `old` into `new`.
    fn move_broker(&mut self, old: A, new: A) {
        if let Some(seen) = self.senders.remove(&old) {
            let to = self.senders.entry(new).or_default();
            to.edges.extend(seen.edges);
            to.last_batch_ms = to.last_batch_ms.max(seen.last_batch_ms);
            to.batches += seen.batches;
            to.records += seen.records;
        }
        self.reports.remove(&old);
        if let Some(since) = self.silent.remove(&old) {
            self.silent.entry(new).or_insert(since);
        }
        for via in self.via.values_mut() {
            if *via == old {
                *via = new;
            }
        }
        self.moved.push((old, new));
    }

    /// How to reach edge `edge`: straight to it when it registered with the centre from the
    /// address its last batch came from (or only registered), or when that address is not a
    /// broker ([`CentreState::is_broker`]: an edge that sends straight to the centre without
    /// registering); else through the broker its last batch came from.
    pub fn route(&self, edge: u32) -> Option<Route<A>> {
        let registered = self.registry.get(EdgeId(edge)).map(|e| e.address);
        match (registered, self.via.get(&edge)) {
            (Some(r), Some(v)) if r == *v => Some(Route::Direct(r)),
            (Some(r), None) => Some(Route::Direct(r)),
            (_, Some(v)) if self.is_broker(*v) => Some(Route::Broker(*v)),
            (_, Some(v)) => Some(Route::Direct(*v)),
            (None, None) => None,
        }
    }

    /// Whether `addr` is a broker: it reported itself (`POST /b`), or it forwarded batches of
    /// several edges, or of an edge registered with the centre from another address. (A broker
    /// with reports turned off that forwards for one unregistered edge looks like that edge.)
    pub fn is_broker(&self, addr: A) -> bool {
        self.reports.contains_key(&addr)
            || self.senders.get(&addr).is_some_and(|s| {
                s.edges.len() > 1
                    || s.edges.iter().any(|e| {
                        self.registry
                            .get(EdgeId(*e))
                            .is_some_and(|r| r.address != addr)
                    })
            })
    }

    /// Whether a request about edge `edge` coming from `from` concerns an edge this process
    /// knows: registered here (now or before), sent batches, listed by a broker's report, or
    /// relayed by a broker (which holds the edge's registration itself).
    pub fn knows(&self, edge: u32, from: A) -> bool {
        self.registry.get(EdgeId(edge)).is_some()
            || self.via.contains_key(&edge)
            || self.is_broker(from)
            || self
                .reports
                .values()
                .any(|(_, r)| r.edges.iter().any(|e| e.id == edge))
    }

    /// What the broker at `addr` last reported about edge `edge`.
    pub fn reported(&self, addr: A, edge: u32) -> Option<&ReportEdge> {
        self.reports
            .get(&addr)
            .and_then(|(_, r)| r.edges.iter().find(|e| e.id == edge))
    }
}

/// A request of the HTTP API for an edge, carried out by the CoAP thread.
#[derive(Debug)]
pub struct Order<A = SocketAddr> {
    /// The edge.
    pub edge: u32,
    /// `POST` (`/p`) or `GET` (`/r`).
    pub code: Code,
    /// `p` or `r`.
    pub path: &'static str,
    /// Further Uri-Query items (`p=<probe>`).
    pub queries: Vec<String>,
    /// CBOR body (Content-Format 60 when not empty).
    pub payload: Vec<u8>,
    /// Where the answer goes.
    pub reply: Sender<OrderAnswer<A>>,
}

/// The outcome of an [`Order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderAnswer<A = SocketAddr> {
    /// The edge (or its broker) answered.
    Answer {
        /// CoAP code.
        code: Code,
        /// Content-Format.
        cf: Option<u16>,
        /// Payload.
        payload: Vec<u8>,
        /// How it was reached.
        route: Route<A>,
    },
    /// No route to the edge: it never registered with the centre nor sent a batch.
    UnknownEdge,
    /// No answer (the CoAP exchange failed).
    NoAnswer,
}

/// What the CoAP thread and the HTTP workers share.
#[derive(Debug)]
pub struct Centre<A = SocketAddr> {
    /// Central configurations and reports.
    pub configs: ConfigStore,
    state: Mutex<CentreState<A>>,
    orders: Mutex<Vec<Order<A>>>,
    start: Instant,
}

impl<A> Centre<A> {
    /// A centre over `configs`.
    pub fn new(configs: ConfigStore) -> Centre<A> {
        Centre {
            configs,
            state: Mutex::new(CentreState::default()),
            orders: Mutex::new(Vec::new()),
            start: Instant::now(),
        }
    }

    /// Monotonic milliseconds since the centre started (the registry's clock).
    pub fn mono_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The shared state, locked.
    pub fn state(&self) -> std::sync::MutexGuard<'_, CentreState<A>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `order` to the CoAP thread.
    pub fn order(&self, order: Order<A>) {
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(order);
    }

    /// The orders waiting for the CoAP thread.
    pub fn take_orders(&self) -> Vec<Order<A>> {
        std::mem::take(&mut *self.orders.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_tables_are_bounded_and_forget_the_least_recently_heard() {
        let mut map: BTreeMap<u32, u64> = BTreeMap::new();
        for (k, heard) in [(1, 50), (2, 10), (3, 30)] {
            make_room(&mut map, k, 3, |v| *v);
            map.insert(k, heard);
        }
        // Known keys take no room.
        make_room(&mut map, 1, 3, |v| *v);
        assert_eq!(map.len(), 3);
        // A new one pushes out 2, heard at 10.
        make_room(&mut map, 4, 3, |v| *v);
        map.insert(4, 60);
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), [1, 3, 4]);
        for k in 100..10_000 {
            make_room(&mut map, k, 3, |v| *v);
            map.insert(k, u64::from(k));
            assert!(map.len() <= 3);
        }
    }

    const GOOD: &str = "window_s = 30\n[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"h:1\"\n";

    #[test]
    fn the_etag_is_a_content_hash_inside_the_config() {
        let a = compile(GOOD).unwrap();
        let b = compile(&format!("# a comment\n{GOOD}")).unwrap();
        assert_eq!(a.etag, b.etag, "same content, same etag");
        let c = compile(&GOOD.replace("h:1", "h:2")).unwrap();
        assert_ne!(a.etag, c.etag);
        let cfg = qos_wire::config::EdgeConfig::decode(&a.cbor).unwrap();
        assert_eq!((cfg.etag, cfg.window_s), (a.etag, 30));
    }

    #[test]
    fn reports_decode_strictly() {
        // [1, 7, true, ""]
        let r = decode_report(&[0x84, 0x01, 0x07, 0xf5, 0x60]).unwrap();
        assert_eq!((r.etag, r.accepted, r.reason.as_str()), (7, true, ""));
        // what the edge encodes decodes
        let mut buf = [0u8; 128];
        let wire = qos_wire::config::ConfigReport {
            etag: 9,
            accepted: false,
            reason: "too many rules",
        };
        let n = wire.encode(&mut buf).unwrap();
        let r = decode_report(&buf[..n]).unwrap();
        assert_eq!(
            (r.etag, r.accepted, r.reason.as_str()),
            (9, false, "too many rules")
        );
        // a fifth element, a short array, another version, trailing bytes: refused
        assert!(decode_report(&[0x85, 0x01, 0x07, 0xf4, 0x60, 0x01]).is_err());
        assert!(decode_report(&[0x83, 0x01, 0x07, 0xf5]).is_err());
        assert!(decode_report(&[0x84, 0x02, 0x07, 0xf5, 0x60])
            .unwrap_err()
            .starts_with("bad config-report"));
        assert!(decode_report(&[0x84, 0x01, 0x07, 0xf5, 0x60, 0x00]).is_err());
    }

    #[test]
    fn routes_go_direct_or_through_the_broker() {
        use qos_wire::registration::Registration;
        let mut st: CentreState<u8> = CentreState::default();
        let reg = |id| Registration {
            ep: "e",
            d: "r",
            lt: 300,
            id: EdgeId(id),
            fw: "",
            pd: 0,
        };
        let batch = |st: &mut CentreState<u8>, edge: u32, from: u8| {
            st.via.insert(edge, from);
            st.senders.entry(from).or_default().edges.insert(edge);
        };
        assert_eq!(st.route(1), None);
        // Registered here, batches from the same address: direct.
        st.registry.register(0, 10, &reg(1));
        assert_eq!(st.route(1), Some(Route::Direct(10)));
        batch(&mut st, 1, 10);
        assert_eq!(st.route(1), Some(Route::Direct(10)));
        // Its batches now come from elsewhere: that is its broker.
        batch(&mut st, 1, 50);
        assert_eq!(st.route(1), Some(Route::Broker(50)));
        assert!(st.is_broker(50) && !st.is_broker(10));
        // An unregistered edge sending alone from its address: direct.
        batch(&mut st, 2, 20);
        assert_eq!(st.route(2), Some(Route::Direct(20)));
        // ... unless that address reported itself as a broker, or forwards for several.
        st.reports.insert(20, (0, BrokerReport::default()));
        assert_eq!(st.route(2), Some(Route::Broker(20)));
        batch(&mut st, 3, 30);
        batch(&mut st, 4, 30);
        assert_eq!(st.route(3), Some(Route::Broker(30)));
    }

    #[test]
    fn a_broker_reporting_its_id_from_a_new_address_replaces_its_old_entry() {
        let mut st: CentreState<u8> = CentreState::default();
        let report = |id: &str| BrokerReport {
            id: id.into(),
            ..BrokerReport::default()
        };
        st.record_broker_report(10, 1_000, report("site-a"));
        let seen = st.senders.entry(10).or_default();
        seen.edges.extend([1, 2]);
        (seen.batches, seen.last_batch_ms) = (5, 1_500);
        st.via.insert(1, 10);
        st.via.insert(2, 10);
        st.silent.insert(10, 2_000);
        // Another broker, and a report without id, stay keyed by address.
        st.record_broker_report(20, 1_000, report("site-b"));
        st.record_broker_report(30, 1_000, report(""));
        // site-a restarts and talks from address 11.
        st.record_broker_report(11, 3_000, report("site-a"));
        assert_eq!(st.reports.keys().copied().collect::<Vec<_>>(), [11, 20, 30]);
        assert!(!st.senders.contains_key(&10));
        let seen = &st.senders[&11];
        assert_eq!(seen.edges.iter().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!((seen.batches, seen.last_batch_ms), (5, 1_500));
        assert_eq!(st.route(1), Some(Route::Broker(11)));
        assert_eq!(st.silent.keys().copied().collect::<Vec<_>>(), [11]);
        assert_eq!(st.moved, [(10, 11)]);
        assert_eq!(st.broker_id(11), Some("site-a"));
        assert_eq!(st.broker_id(30), None);
        // The same address taken over by another broker id: the old id is forgotten.
        st.record_broker_report(11, 4_000, report("site-c"));
        assert!(!st.broker_ids.contains_key("site-a"));
        assert_eq!(st.broker_ids["site-c"], 11);
    }

    #[test]
    fn configs_and_reports_are_stored() {
        let dir = std::env::temp_dir().join(format!("qos-centre-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("q.sqlite");
        let _writer =
            crate::store::SqliteStore::open(&db, crate::config::Synchronous::Full).unwrap();
        let s = ConfigStore::open(&db).unwrap();
        assert!(s.get(3).unwrap().is_none());
        assert!(matches!(
            s.put(3, "window_s = 0\n", "api", 5),
            Err(PutError::Invalid(m)) if m.contains("window_s")
        ));
        assert!(s.get(3).unwrap().is_none(), "nothing stored on error");
        let c = s.put(3, GOOD, "api", 5).unwrap();
        assert_eq!(s.get(3).unwrap().unwrap(), c);
        let report = |etag, accepted, reason: &str| ConfigReport {
            etag,
            accepted,
            reason: reason.into(),
        };
        s.record_report(3, &report(c.etag, true, ""), 6).unwrap();
        s.record_report(3, &report(99, false, "probe 1: no TLS"), 7)
            .unwrap();
        let r = s.report(3).unwrap().unwrap();
        assert_eq!(r.applied_etag, Some(c.etag));
        assert_eq!(r.rejected, Some((99, "probe 1: no TLS".into())));
        assert_eq!((r.report.etag, r.at_ms), (99, 7));
        assert!(s.delete(3).unwrap());
        assert!(!s.delete(3).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
