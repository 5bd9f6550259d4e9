//! The monitor thread: new records to the engine every `model.poll_ms`, evaluation and
//! webhook deliveries every `model.evaluate_s`, scrapes when due, retention every hour (and
//! once a minute after start). Stops within 100 ms of the shutdown flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qos_model::notify::http::Webhook;
use qos_model::notify::Outcome;
use qos_model::Notifier;

use crate::services::db::{self, Delivery};
use crate::services::scrape::Scraper;
use crate::services::{now_s, retention, Services};

const TICK: Duration = Duration::from_millis(100);
const RETENTION_EVERY_S: u64 = 3600;

struct Hook {
    url: String,
    webhook: Webhook,
    notifier: Notifier,
    kinds: std::collections::HashMap<u64, String>,
}

/// Runs the monitor loop until `shutdown` is set.
pub fn run(services: Arc<Services>, shutdown: Arc<AtomicBool>) {
    let config = services.config().clone();
    let mut hooks: Vec<Hook> = config
        .webhooks
        .iter()
        .filter_map(|w| {
            Some(Hook {
                url: w.url.clone(),
                webhook: Webhook::parse(&w.url).ok()?,
                notifier: Notifier::default(),
                kinds: Default::default(),
            })
        })
        .collect();
    let mut scrapers: Vec<Scraper> = config
        .scrapes
        .iter()
        .filter_map(|s| Scraper::new(&s.url, &s.component, s.interval_s).ok())
        .collect();
    let poll = Duration::from_millis(config.model.poll_ms);
    let mut last_poll: Option<Instant> = None;
    let mut next_eval = 0u64;
    let mut next_retention = now_s() + 60;
    while !shutdown.load(Ordering::Relaxed) {
        if last_poll.is_none_or(|t| t.elapsed() >= poll) {
            last_poll = Some(Instant::now());
            loop {
                match services.ingest_new() {
                    Ok(n) if n >= 10_000 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "services: reading new records failed");
                        break;
                    }
                }
            }
        }
        let now = now_s();
        let now_f = crate::http::now_ms() as f64 / 1000.0;
        for s in &mut scrapers {
            match s.poll(now_f) {
                Some(Ok(points)) => {
                    if let Err(e) = services.add_points(&points) {
                        tracing::warn!(error = %e, "scrape: storing points failed");
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(component = %s.component, error = %e, "scrape failed")
                }
                None => {}
            }
        }
        if now >= next_eval {
            next_eval = now + config.model.evaluate_s;
            match services.evaluate(now) {
                Ok(notes) => {
                    for h in &mut hooks {
                        for n in &notes {
                            let id = h.notifier.push(now, n);
                            h.kinds
                                .insert(id, n["type"].as_str().unwrap_or("").to_string());
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "services: evaluation failed"),
            }
            for h in &mut hooks {
                deliver(&services, h, now);
            }
        }
        if now >= next_retention {
            next_retention = now + RETENTION_EVERY_S;
            let ratio = services
                .engine()
                .monitor
                .as_ref()
                .map_or(0.9, |m| m.model().defaults().good_ratio);
            match retention::run(&mut services.db(), now, &config.retention, ratio) {
                Ok(o) => tracing::info!(?o, "retention applied"),
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            }
        }
        std::thread::sleep(TICK);
    }
}

fn deliver(services: &Services, h: &mut Hook, now: u64) {
    while let Some(a) = h.notifier.poll_attempt(now) {
        let r = h.webhook.post(&a.body).map_err(|e| e.to_string());
        h.notifier.on_result(a.id, now, r);
        if let Some(entry) = h.notifier.log().last().filter(|e| e.id == a.id) {
            let (delivered, status, reason) = match &entry.outcome {
                Outcome::Delivered { status } => (true, Some(*status), None),
                Outcome::Failed { status, reason } => (false, *status, Some(reason.clone())),
                #[allow(unreachable_patterns)]
                _ => (false, None, None),
            };
            let d = Delivery {
                webhook: h.url.clone(),
                notification: a.id,
                kind: h.kinds.get(&a.id).cloned().unwrap_or_default(),
                attempt: entry.attempt,
                at: entry.at,
                delivered,
                status,
                reason,
                next_attempt: entry.next_attempt,
                gave_up: entry.gave_up,
            };
            if delivered || entry.gave_up {
                h.kinds.remove(&a.id);
            }
            if let Err(e) = db::insert_delivery(&services.db(), &d) {
                tracing::warn!(error = %e, "storing a delivery failed");
            }
        }
    }
}
