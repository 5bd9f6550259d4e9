//! The services part of `serve`'s configuration: `[model]`, `[[webhook]]`, `[[scrape]]` and
//! `[retention]` (every key optional, defaults below and in `qos-aggregator.example.toml`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};

/// `[model]`: the service model and the engine judging it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `file`: the service model (format of `aggregator/model/service-model.example.toml`;
    /// JSON when the name ends in `.json`). Relative to the working directory. Without it the
    /// last model stored with `PUT /api/v1/model` is used, or none (services endpoints answer
    /// with empty lists). With it, the file wins at start over a model stored by the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// `evaluate_s`: seconds between evaluations of the engine (states, SLOs, incidents,
    /// webhook deliveries). Default 5.
    pub evaluate_s: u64,
    /// `poll_ms`: how often new records in the store are handed to the engine, ms. Default 1000.
    pub poll_ms: u64,
    /// `replay_s`: at start (and when the model is replaced), summaries and component metrics
    /// of this many seconds before now are replayed into the engine, so a restart keeps
    /// states, SLO windows and incidents. Default 21600 (6 h).
    pub replay_s: u64,
    /// `[[model.host]]`: the component of the model an edge's host metrics belong to.
    #[serde(rename = "host", skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostEntry>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            file: None,
            evaluate_s: 5,
            poll_ms: 1000,
            replay_s: 21_600,
            hosts: Vec::new(),
        }
    }
}

/// `[[model.host]]`: edge `edge`'s host metrics (CPU, memory, network) are the metrics of
/// component `component` (`cpu_busy_permille`, … as named by the edge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// The edge's id.
    pub edge: u32,
    /// The component's name in the model.
    pub component: String,
}

/// `[[webhook]]`: a receiver of notifications (JSON `POST`, retried with back-off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    /// `url`: `http://host:port/path` (plain HTTP).
    pub url: String,
}

/// `[[scrape]]`: a Prometheus text exposition endpoint read as metrics of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeEntry {
    /// `url`: `http://host:port/path` (plain HTTP).
    pub url: String,
    /// `component`: the component the metrics belong to.
    pub component: String,
    /// `interval_s`: seconds between scrapes, at least 1. Default 15.
    #[serde(default = "default_interval")]
    pub interval_s: u64,
}

fn default_interval() -> u64 {
    15
}

/// `[retention]`: raw summaries are kept `raw_days`, then rolled up into hourly rows kept
/// `hourly_days`. Component metrics are kept `raw_days`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// `raw_days`: days raw summaries (and component metrics) are kept, at least 1. Default 14.
    pub raw_days: u64,
    /// `hourly_days`: days hourly rollups are kept, at least `raw_days`. Default 400.
    pub hourly_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            raw_days: 14,
            hourly_days: 400,
        }
    }
}

/// Checks the ranges of the services' options.
pub fn validate(config: &Config, origin: &Path) -> Result<(), ConfigError> {
    let invalid = |field, value: &dyn fmt::Display, reason| ConfigError::Invalid {
        path: origin.to_path_buf(),
        field,
        value: value.to_string(),
        reason,
    };
    let m = &config.model;
    if m.evaluate_s == 0 {
        return Err(invalid(
            "model.evaluate_s",
            &0,
            "expected at least 1 second",
        ));
    }
    if m.poll_ms == 0 {
        return Err(invalid("model.poll_ms", &0, "expected at least 1 ms"));
    }
    let r = &config.retention;
    if r.raw_days == 0 {
        return Err(invalid("retention.raw_days", &0, "expected at least 1 day"));
    }
    if r.hourly_days < r.raw_days {
        return Err(invalid(
            "retention.hourly_days",
            &r.hourly_days,
            "expected at least retention.raw_days",
        ));
    }
    for w in &config.webhooks {
        if let Err(e) = qos_model::notify::http::Webhook::parse(&w.url) {
            let _ = e;
            return Err(invalid(
                "webhook.url",
                &w.url,
                "expected http://host:port/path",
            ));
        }
    }
    for s in &config.scrapes {
        if crate::services::scrape::Target::parse(&s.url).is_err() {
            return Err(invalid(
                "scrape.url",
                &s.url,
                "expected http://host:port/path",
            ));
        }
        if s.interval_s == 0 {
            return Err(invalid(
                "scrape.interval_s",
                &s.interval_s,
                "expected at least 1 second",
            ));
        }
        if s.component.is_empty() {
            return Err(invalid(
                "scrape.component",
                &"\"\"",
                "expected a component name",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    #[test]
    fn services_options_parse_and_bad_values_name_the_field() {
        let c = parse(
            "[model]\nfile = \"s.toml\"\n[[model.host]]\nedge = 1\ncomponent = \"h\"\n\
             [[webhook]]\nurl = \"http://127.0.0.1:9/x\"\n\
             [[scrape]]\nurl = \"http://127.0.0.1:9100/metrics\"\ncomponent = \"db\"\n",
        )
        .unwrap();
        assert_eq!(c.model.hosts[0].component, "h");
        assert_eq!(c.scrapes[0].interval_s, 15);
        assert_eq!(c.retention, RetentionConfig::default());
        for (text, field) in [
            ("[model]\nevaluate_s = 0\n", "model.evaluate_s"),
            ("[retention]\nraw_days = 0\n", "retention.raw_days"),
            (
                "[retention]\nraw_days = 30\nhourly_days = 7\n",
                "retention.hourly_days",
            ),
            ("[[webhook]]\nurl = \"https://x/\"\n", "webhook.url"),
            (
                "[[scrape]]\nurl = \"x\"\ncomponent = \"db\"\n",
                "scrape.url",
            ),
            (
                "[[scrape]]\nurl = \"http://a:1/\"\ncomponent = \"db\"\ninterval_s = 0\n",
                "scrape.interval_s",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
