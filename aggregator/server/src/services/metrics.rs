//! Component metrics in: `POST /api/v1/metrics` bodies and `qos-aggregator import --csv`.
//!
//! Two layouts: CSV with the header `time,component,metric,value` (the data sets' layout,
//! `datasets/README.md`: `time` in Unix seconds, `value` possibly empty or `NaN`), or JSON
//! lines `{"time":..,"component":"..","metric":"..","value":..}` (`at` is accepted for `time`).
//! A bad row (wrong column count, unparsable or non-finite number, empty name) is skipped and
//! counted with its line number; the good rows are written in one transaction.

use std::io::BufRead;
use std::path::Path;

use serde_json::{json, Value};

use crate::services::db::{self, Point};
use crate::store::{SqliteStore, Synchronous};

/// Most bad rows listed (all are counted).
pub const MAX_LISTED: usize = 20;
/// Longest component or metric name, bytes; a row with a longer one is bad.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest line `import --csv` reads; a longer one is skipped to its end as a bad row.
pub const MAX_LINE_BYTES: usize = 4096;

/// A row's names: not empty, at most [`MAX_NAME_BYTES`].
fn check_names(component: &str, metric: &str) -> Result<(), String> {
    if component.is_empty() || metric.is_empty() {
        return Err("empty component or metric".into());
    }
    if component.len() > MAX_NAME_BYTES || metric.len() > MAX_NAME_BYTES {
        return Err(format!(
            "component or metric name longer than {MAX_NAME_BYTES} bytes"
        ));
    }
    Ok(())
}

/// What a body held.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed {
    /// Good points.
    pub points: Vec<Point>,
    /// Bad rows.
    pub bad: u64,
    /// The first [`MAX_LISTED`] bad rows: (line, reason).
    pub errors: Vec<(usize, String)>,
}

impl Parsed {
    fn bad_row(&mut self, line: usize, reason: String) {
        self.bad += 1;
        if self.errors.len() < MAX_LISTED {
            self.errors.push((line, reason));
        }
    }

    /// The JSON answer.
    pub fn to_json(&self, written: bool) -> Value {
        json!({
            "accepted": if written { self.points.len() } else { 0 },
            "rejected": self.bad,
            "errors": self.errors.iter().map(|(l, r)| json!({"line": l, "reason": r})).collect::<Vec<_>>(),
        })
    }
}

/// Whether the text is JSON lines (its first non-blank character is `{`).
fn is_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// One CSV data row (`line` 1-based).
pub fn csv_row(row: &str) -> Result<Option<Point>, String> {
    let cols: Vec<&str> = row.trim_end_matches('\r').split(',').collect();
    if cols.len() != 4 {
        return Err(format!("expected 4 columns, found {}", cols.len()));
    }
    let time: f64 = cols[0]
        .trim()
        .parse()
        .map_err(|_| format!("time `{}` is not a number", cols[0]))?;
    let (component, metric) = (cols[1].trim(), cols[2].trim());
    check_names(component, metric)?;
    let v = cols[3].trim();
    if v.is_empty() {
        return Err("empty value".into());
    }
    let value: f64 = v
        .parse()
        .map_err(|_| format!("value `{v}` is not a number"))?;
    if !time.is_finite() || !value.is_finite() {
        return Err("not a finite number".into());
    }
    Ok(Some(Point {
        component: component.into(),
        metric: metric.into(),
        at: time,
        value,
    }))
}

fn json_row(row: &str) -> Result<Point, String> {
    let v: Value = serde_json::from_str(row).map_err(|e| format!("invalid JSON: {e}"))?;
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    let time = num("time")
        .or_else(|| num("at"))
        .ok_or("missing number `time`")?;
    let value = num("value").ok_or("missing number `value`")?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let component = s("component").ok_or("missing string `component`")?;
    let metric = s("metric").ok_or("missing string `metric`")?;
    check_names(component, metric)?;
    if !time.is_finite() || !value.is_finite() {
        return Err("not a finite number".into());
    }
    Ok(Point {
        component: component.into(),
        metric: metric.into(),
        at: time,
        value,
    })
}

/// Parses a body in either layout.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let json = is_json(text);
    for (i, row) in text.lines().enumerate() {
        let line = i + 1;
        if row.trim().is_empty() {
            continue;
        }
        if json {
            match json_row(row) {
                Ok(p) => out.points.push(p),
                Err(e) => out.bad_row(line, e),
            }
        } else {
            if line == 1 && row.trim().starts_with("time,") {
                continue;
            }
            match csv_row(row) {
                Ok(Some(p)) => out.points.push(p),
                Ok(None) => {}
                Err(e) => out.bad_row(line, e),
            }
        }
    }
    out
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The header is not the data sets' layout.
    #[error("{}: expected the header `time,component,metric,value`", path.display())]
    Header {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Imports a CSV file of the data sets' layout into the store at `database`, in transactions
/// of 50 000 points; progress on stderr every 500 000 lines. Returns (points, bad rows).
pub fn import_csv(database: &Path, file: &Path) -> Result<(u64, u64), ImportError> {
    let read_err = |source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(file).map_err(read_err)?.len().max(1);
    let f = std::fs::File::open(file).map_err(read_err)?;
    let mut reader = std::io::BufReader::new(f);
    let mut bytes = Vec::with_capacity(MAX_LINE_BYTES);
    let (k, long) = read_line_bounded(&mut reader, &mut bytes, MAX_LINE_BYTES).map_err(read_err)?;
    if k == 0
        || long
        || String::from_utf8_lossy(&bytes).trim().replace(' ', "") != "time,component,metric,value"
    {
        return Err(ImportError::Header {
            path: file.to_path_buf(),
        });
    }
    // The file is checked before the store is opened (and created, and migrated).
    let store = SqliteStore::open(database, Synchronous::Normal)?;
    drop(store);
    let mut conn = rusqlite::Connection::open(database).map_err(crate::store::StoreError::from)?;
    conn.busy_timeout(crate::store::BUSY_TIMEOUT)
        .map_err(crate::store::StoreError::from)?;
    let (mut read, mut n, mut bad, mut lines) = (k as u64, 0u64, 0u64, 1usize);
    let mut chunk = Vec::with_capacity(50_000);
    loop {
        let (k, long) =
            read_line_bounded(&mut reader, &mut bytes, MAX_LINE_BYTES).map_err(read_err)?;
        if k == 0 {
            break;
        }
        read += k as u64;
        lines += 1;
        let Ok(line) = std::str::from_utf8(&bytes) else {
            bad += 1; // not UTF-8
            continue;
        };
        if long {
            bad += 1;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        match csv_row(line.trim_end_matches('\n')) {
            Ok(Some(p)) => chunk.push(p),
            Ok(None) => {}
            Err(_) => bad += 1,
        }
        if chunk.len() >= 50_000 {
            db::insert_points(&mut conn, &chunk)?;
            n += chunk.len() as u64;
            chunk.clear();
        }
        if lines % 500_000 == 0 {
            eprintln!(
                "import: {lines} lines, {:.0} %, {n} points stored, {bad} bad rows",
                read as f64 * 100.0 / size as f64
            );
        }
    }
    db::insert_points(&mut conn, &chunk)?;
    n += chunk.len() as u64;
    eprintln!("import: done: {lines} lines, {n} points stored, {bad} bad rows skipped");
    Ok((n, bad))
}

/// Reads the next line (with its newline) into `line`, keeping at most `max` bytes of it: the
/// bytes consumed (0 at the end of the input) and whether the line was longer than `max`.
fn read_line_bounded(
    r: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    line.clear();
    let (mut consumed, mut long) = (0, false);
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((consumed, long));
        }
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = max - line.len().min(max);
        long |= take > room;
        line.extend_from_slice(&buf[..take.min(room)]);
        r.consume(take);
        consumed += take;
        if end {
            return Ok((consumed, long));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_bad_rows_counts_them_and_keeps_the_good_ones() {
        let p = parse("time,component,metric,value\n1,db,cpu,0.5\n2,db,cpu,NaN\n3,db,cpu,\nx,db,cpu,1\n4,db,cpu\n5,db,lat,7\n");
        assert_eq!(p.points.len(), 2);
        assert_eq!(p.bad, 4);
        assert_eq!(p.errors[0].0, 3);
        assert_eq!(p.points[1].metric, "lat");
    }

    #[test]
    fn names_are_bounded() {
        let long = "m".repeat(MAX_NAME_BYTES + 1);
        let ok = "m".repeat(MAX_NAME_BYTES);
        let p = parse(&format!(
            "time,component,metric,value\n1,db,{long},1\n2,{long},cpu,1\n3,db,{ok},1\n"
        ));
        assert_eq!((p.points.len(), p.bad), (1, 2));
        assert!(
            p.errors[0].1.contains("longer than 256 bytes"),
            "{:?}",
            p.errors
        );
        let p = parse(&format!(
            "{{\"time\":1,\"component\":\"db\",\"metric\":\"{long}\",\"value\":2}}\n"
        ));
        assert_eq!((p.points.len(), p.bad), (0, 1));
    }

    #[test]
    fn import_skips_an_overlong_line_without_reading_it_whole() {
        let dir = std::env::temp_dir().join(format!("qos-import-long-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("m.csv");
        // A 1 MiB line with no newline before the next row, then good rows.
        let huge = "9".repeat(1 << 20);
        let mut content =
            format!("time,component,metric,value\n1,db,cpu,1\n{huge}\n2,db,cpu,2\n").into_bytes();
        // Not UTF-8: a bad row too.
        content.extend_from_slice(b"\xff\xfe,db,cpu,3\n");
        std::fs::write(&csv, content).unwrap();
        let (points, bad) = import_csv(&dir.join("qos.sqlite"), &csv).unwrap();
        assert_eq!((points, bad), (2, 2));
        let mut r = std::io::Cursor::new(b"abcdef\nxy".to_vec());
        let mut line = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut line, 4).unwrap(), (7, true));
        assert_eq!(line, b"abcd");
        assert_eq!(read_line_bounded(&mut r, &mut line, 4).unwrap(), (2, false));
        assert_eq!(line, b"xy");
        assert_eq!(read_line_bounded(&mut r, &mut line, 4).unwrap(), (0, false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_lines() {
        let p = parse("{\"time\":1,\"component\":\"db\",\"metric\":\"cpu\",\"value\":2}\n{\"at\":2,\"component\":\"db\",\"metric\":\"cpu\",\"value\":3}\n{\"time\":3}\nnot json\n");
        assert_eq!(p.points.len(), 2);
        assert_eq!(p.bad, 2);
    }
}
