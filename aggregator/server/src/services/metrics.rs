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
    if component.is_empty() || metric.is_empty() {
        return Err("empty component or metric".into());
    }
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
    let mut line = String::new();
    if reader.read_line(&mut line).map_err(read_err)? == 0
        || line.trim().replace(' ', "") != "time,component,metric,value"
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
    let (mut read, mut n, mut bad, mut lines) = (line.len() as u64, 0u64, 0u64, 1usize);
    let mut chunk = Vec::with_capacity(50_000);
    loop {
        line.clear();
        let k = reader.read_line(&mut line).map_err(read_err)?;
        if k == 0 {
            break;
        }
        read += k as u64;
        lines += 1;
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
    fn json_lines() {
        let p = parse("{\"time\":1,\"component\":\"db\",\"metric\":\"cpu\",\"value\":2}\n{\"at\":2,\"component\":\"db\",\"metric\":\"cpu\",\"value\":3}\n{\"time\":3}\nnot json\n");
        assert_eq!(p.points.len(), 2);
        assert_eq!(p.bad, 2);
    }
}
