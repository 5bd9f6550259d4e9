//! `docs/configuration.md` stays honest: every key of serve's, the broker's and the service
//! model's example files — commented-out optional ones included — and every key the parsers'
//! defaults serialise appears in its section of the reference, and every TOML block of a
//! section is accepted by the real parser of that file. (The Linux edge's section is checked
//! the same way by `cargo test -p qos-edge config_docs`.) A key added to a configuration later
//! fails this test until it is documented.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use qos_aggregator::broker_config::BrokerFile;
use qos_aggregator::config::Config;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text of the `## ` section whose heading starts with `heading`, up to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("no section ## {heading}"));
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

/// The ```` ```toml KIND ```` blocks of `text`.
fn toml_blocks(text: &str, kind: &str) -> Vec<String> {
    let fence = format!("```toml {kind}\n");
    text.split(&fence)
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap_or("").to_string())
        .collect()
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Every key of an example file as `table.key`, also those of commented-out lines
/// (`# [table]`, `# key = value`); array-of-tables keys without an index.
fn example_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let l = line.trim().trim_start_matches('#').trim();
        let header = l
            .strip_prefix("[[")
            .and_then(|h| h.strip_suffix("]]"))
            .or_else(|| l.strip_prefix('[').and_then(|h| h.strip_suffix(']')));
        if let Some(name) = header.filter(|n| is_name(n)) {
            table = name.to_string();
            keys.insert(table.clone());
            continue;
        }
        if let Some((k, _)) = l.split_once(" = ") {
            let k = k.trim();
            if is_name(k) && !k.contains('.') {
                keys.insert(if table.is_empty() {
                    k.to_string()
                } else {
                    format!("{table}.{k}")
                });
            }
        }
    }
    keys
}

/// Every key of a serialised value (tables recursively, arrays of tables by their elements).
fn value_keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                value_keys(v, &path, out);
            }
        }
        toml::Value::Array(a) => {
            for v in a.iter().filter(|v| v.is_table()) {
                value_keys(v, prefix, out);
            }
        }
        _ => {}
    }
}

fn serialised_keys<T: serde::Serialize>(value: &T) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    value_keys(&toml::Value::try_from(value).unwrap(), "", &mut keys);
    keys
}

/// The keys of `keys` that `section` does not name as `` `key` `` (tables as `` `[key]` `` or
/// `` `[[key]]` `` count too).
fn undocumented(section: &str, keys: &BTreeSet<String>) -> Vec<String> {
    keys.iter()
        .filter(|k| {
            ![format!("`{k}`"), format!("`[{k}]`"), format!("`[[{k}]]`")]
                .iter()
                .any(|n| section.contains(n.as_str()))
        })
        .cloned()
        .collect()
}

#[test]
fn every_serve_key_is_documented_and_its_examples_parse() {
    let doc = read("docs/configuration.md");
    let s = section(&doc, "serve");
    let mut keys = example_keys(&read("aggregator/server/qos-aggregator.example.toml"));
    keys.extend(serialised_keys(&Config::default()));
    assert!(keys.len() > 30, "{keys:?}");
    assert_eq!(undocumented(s, &keys), Vec::<String>::new());
    let blocks = toml_blocks(s, "serve");
    assert!(!blocks.is_empty());
    for b in blocks {
        let c =
            Config::parse(&b, Path::new("configuration.md")).unwrap_or_else(|e| panic!("{e}\n{b}"));
        assert_ne!(c, Config::default(), "{b}");
    }
}

#[test]
fn every_broker_key_is_documented_and_its_examples_parse() {
    let doc = read("docs/configuration.md");
    let s = section(&doc, "broker");
    let mut keys = example_keys(&read("aggregator/server/qos-broker.example.toml"));
    keys.extend(serialised_keys(&BrokerFile::default()));
    assert!(keys.len() > 20, "{keys:?}");
    assert_eq!(undocumented(s, &keys), Vec::<String>::new());
    let blocks = toml_blocks(s, "broker");
    assert!(!blocks.is_empty());
    for b in blocks {
        let f = BrokerFile::parse(&b, Path::new("configuration.md"))
            .unwrap_or_else(|e| panic!("{e}\n{b}"));
        assert_ne!(f, BrokerFile::default(), "{b}");
    }
}

#[test]
fn every_service_model_key_is_documented_and_its_examples_parse() {
    let doc = read("docs/configuration.md");
    let s = section(&doc, "Service model");
    let keys = example_keys(&read("aggregator/model/service-model.example.toml"));
    assert!(keys.len() > 25, "{keys:?}");
    assert_eq!(undocumented(s, &keys), Vec::<String>::new());
    let blocks = toml_blocks(s, "model");
    assert!(!blocks.is_empty());
    for b in blocks {
        let m = qos_model::Model::from_toml(&b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        assert!(!m.services().is_empty(), "{b}");
    }
}

#[test]
fn every_demo_flag_is_documented() {
    let doc = read("docs/configuration.md");
    let s = section(&doc, "Demo");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qos-aggregator"))
        .args(["demo", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: BTreeSet<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches([',', '.', ';', ':']))
        .filter(|w| *w != "--help" && *w != "--version")
        .collect();
    assert!(flags.contains("--duration"), "{help}");
    for f in flags {
        assert!(
            s.contains(&format!("`{f} ")),
            "{f} is not in the Demo section"
        );
    }
}

#[test]
fn the_key_extraction_sees_commented_out_tables_and_keys() {
    let keys = example_keys(
        "[a]\nx = 1 # c\n# Prose with a [b] and y = 2 inside.\n# [[c.d]]\n# z = \"q\"\n\
         probes = [\n  { edge = 1 },\n]\n",
    );
    let want: BTreeSet<String> = ["a", "a.x", "c.d", "c.d.z", "c.d.probes"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(keys, want);
}
