//! Reading a case directory (the neutral CSV layout of the labelled data sets):
//!
//! | file | header | required |
//! |---|---|---|
//! | `metrics.csv` | `time,component,metric,value` | yes |
//! | `slis.csv` | `time,service,metric,value` | no |
//! | `topology.csv` | `source,target` | no |
//!
//! Real data is dirty: rows with an empty, `NaN` or unparseable value or time, the wrong number
//! of fields, or a time outside the window the engine looks at (`[at - lookback, at + horizon]`,
//! which also drops timestamps that are wildly off, e.g. years in the future) are skipped and
//! counted in [`Skipped`], never fatal. A missing required file or a wrong header is an error
//! naming the file (and the line).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::{Config, Edge, Incident, Series};

/// Why a case could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's first line is not the expected header.
    #[error("{path}:{line}: expected header `{expected}`, found `{found}`")]
    Header {
        /// The file.
        path: PathBuf,
        /// The line (1).
        line: usize,
        /// The header the layout requires.
        expected: &'static str,
        /// What the file has.
        found: String,
    },
    /// The moment `at` is not a finite number.
    #[error("`at` must be a finite Unix time, got {0}")]
    BadAt(f64),
}

/// Rows skipped while reading, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Rows with the wrong number of fields.
    pub malformed: usize,
    /// Rows whose time or value is empty, not a number, NaN or infinite.
    pub bad_value: usize,
    /// Rows whose time is outside the window around `at`.
    pub out_of_window: usize,
}

impl Skipped {
    /// All skipped rows.
    pub fn total(&self) -> usize {
        self.malformed + self.bad_value + self.out_of_window
    }
}

/// A case read from disk, with what was skipped.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the engine needs.
    pub incident: Incident,
    /// Rows kept (metrics and SLIs).
    pub rows: usize,
    /// Rows skipped (metrics and SLIs).
    pub skipped: Skipped,
}

const METRICS_HEADER: &str = "time,component,metric,value";
const SLIS_HEADER: &str = "time,service,metric,value";
const TOPOLOGY_HEADER: &str = "source,target";

/// Reads the case in `dir` for an incident at `at`, keeping the samples inside the window
/// `config` looks at.
pub fn load(dir: &Path, at: f64, config: &Config) -> Result<Case, CaseError> {
    if !at.is_finite() {
        return Err(CaseError::BadAt(at));
    }
    let window = (at - config.lookback, at + config.horizon);
    let mut skipped = Skipped::default();
    let mut rows = 0;
    let metrics_path = dir.join("metrics.csv");
    let metrics = read_series(
        &metrics_path,
        METRICS_HEADER,
        window,
        &mut skipped,
        &mut rows,
    )?;
    let slis_path = dir.join("slis.csv");
    let slis = if slis_path.exists() {
        read_series(&slis_path, SLIS_HEADER, window, &mut skipped, &mut rows)?
    } else {
        Vec::new()
    };
    let topo_path = dir.join("topology.csv");
    let edges = if topo_path.exists() {
        read_edges(&topo_path)?
    } else {
        Vec::new()
    };
    Ok(Case {
        incident: Incident {
            metrics,
            slis,
            edges,
            at,
        },
        rows,
        skipped,
    })
}

fn open(path: &Path) -> Result<BufReader<File>, CaseError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| CaseError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Lines of `path` after checking the header; yields (line number, line).
fn lines(
    path: &Path,
    expected: &'static str,
) -> Result<impl Iterator<Item = Result<(usize, String), CaseError>>, CaseError> {
    let mut reader = open(path)?.lines();
    let io = |source| CaseError::Io {
        path: path.to_path_buf(),
        source,
    };
    let header = reader.next().transpose().map_err(io)?.unwrap_or_default();
    let fields: Vec<String> = split(header.trim_start_matches('\u{feff}'))
        .into_iter()
        .map(|f| f.trim().to_string())
        .collect();
    if fields.join(",") != expected {
        return Err(CaseError::Header {
            path: path.to_path_buf(),
            line: 1,
            expected,
            found: header.trim().chars().take(80).collect(),
        });
    }
    let path = path.to_path_buf();
    Ok(reader.enumerate().map(move |(i, l)| {
        l.map(|l| (i + 2, l)).map_err(|source| CaseError::Io {
            path: path.clone(),
            source,
        })
    }))
}

fn read_series(
    path: &Path,
    header: &'static str,
    (lo, hi): (f64, f64),
    skipped: &mut Skipped,
    rows: &mut usize,
) -> Result<Vec<Series>, CaseError> {
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    for line in lines(path, header)? {
        let (_, line) = line?;
        if line.trim().is_empty() {
            continue;
        }
        let f = split(&line);
        let [t, comp, metric, v] = f.as_slice() else {
            skipped.malformed += 1;
            continue;
        };
        let (Some(t), Some(v)) = (number(t), number(v)) else {
            skipped.bad_value += 1;
            continue;
        };
        if !(lo..=hi).contains(&t) {
            skipped.out_of_window += 1;
            continue;
        }
        *rows += 1;
        let key = (comp.to_string(), metric.to_string());
        let i = *index.entry(key).or_insert_with(|| {
            out.push(Series {
                component: comp.to_string(),
                metric: metric.to_string(),
                points: Vec::new(),
            });
            out.len() - 1
        });
        out[i].points.push((t, v));
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(out)
}

fn read_edges(path: &Path) -> Result<Vec<Edge>, CaseError> {
    let mut edges = Vec::new();
    for line in lines(path, TOPOLOGY_HEADER)? {
        let (_, line) = line?;
        if let [source, target] = split(&line).as_slice() {
            let (source, target) = (source.trim(), target.trim());
            if !source.is_empty() && !target.is_empty() {
                edges.push(Edge {
                    source: source.to_string(),
                    target: target.to_string(),
                });
            }
        }
    }
    Ok(edges)
}

/// A finite number, or `None` for empty, NaN, infinite or unparseable text.
fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Splits one CSV line into fields (RFC 4180 quoting: `"a,b"` and `""` inside quotes).
fn split(line: &str) -> Vec<String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_honour_quotes() {
        assert_eq!(split("1,a,b,2"), ["1", "a", "b", "2"]);
        assert_eq!(
            split("1,\"a,x\",\"b \"\"q\"\"\",2\r"),
            ["1", "a,x", "b \"q\"", "2"]
        );
        assert_eq!(split(""), [""]);
    }

    #[test]
    fn numbers_reject_nan_empty_and_text() {
        assert_eq!(number(" 1.5 "), Some(1.5));
        assert_eq!(number("NaN"), None);
        assert_eq!(number(""), None);
        assert_eq!(number("inf"), None);
        assert_eq!(number("x"), None);
    }
}
