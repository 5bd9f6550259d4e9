//! `docs/configuration.md` stays honest about this edge's configuration: every key of
//! `qos-edge.example.toml` (commented-out optional ones included) appears in the reference's
//! Linux sub-manager section, and every TOML block of that section is accepted by
//! [`Config::parse`]. (serve's, the broker's and the model's sections are checked by
//! `cargo test -p qos-aggregator --test config_docs`.)

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::Config;

fn read(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Every key of an example file as `table.key`, also those of commented-out lines.
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

#[test]
fn config_docs_name_every_key_and_their_examples_parse() {
    let doc = read("../../docs/configuration.md");
    let start = doc
        .find("\n## Linux sub-manager")
        .expect("a Linux sub-manager section");
    let rest = &doc[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3)];
    let keys = example_keys(&read("qos-edge.example.toml"));
    assert!(keys.len() > 40, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| {
            ![format!("`{k}`"), format!("`[{k}]`"), format!("`[[{k}]]`")]
                .iter()
                .any(|n| section.contains(n.as_str()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
    let blocks: Vec<&str> = section
        .split("```toml edge\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap_or(""))
        .collect();
    assert!(!blocks.is_empty());
    for b in blocks {
        let c =
            Config::parse(b, Path::new("configuration.md")).unwrap_or_else(|e| panic!("{e}\n{b}"));
        assert!(!c.probes.is_empty(), "{b}");
    }
}
