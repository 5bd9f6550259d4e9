//! What the demo tells serve: the service model of the demo's services (written to
//! `config/model.toml` in the data directory) and serve's configuration (`config/serve.toml`,
//! whose `[model] file` names the model). serve's engine then opens, ranks and resolves the
//! incidents the demo prints; the demo itself decides nothing.
//!
//! Two services, both probed from every edge:
//! - `shop`: the application's `checkout` page (HTTP probe [`PROBE_HTTP`]), through the
//!   region's network path to the application and its database;
//! - `lookup`: the name `app.demo` (DNS probe [`PROBE_DNS`]), through the region's network
//!   path to the region's DNS responder.
//!
//! The timings are the demo's, not production defaults: 2 s windows judged 3 s after they end,
//! incidents resolved after 3 good windows, a 6 s short burn window, and a flapping detector
//! that tolerates the script's repeated faults. A window is bad under 70 % successful runs, and
//! the latency objectives (p75 under [`LATENCY_THRESHOLD_MS`]) burn only when a quarter of all
//! runs are slow — one region of two entirely slow is enough — so a loaded machine's occasional
//! slow or lost probe does not open incidents.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use super::{PROBE_DNS, PROBE_HTTP, REGIONS};

/// The latency objective of both services: the median total time under this.
pub const LATENCY_THRESHOLD_MS: u32 = 60;
/// The services of the model.
pub const SERVICES: [&str; 2] = ["shop", "lookup"];
/// The model's window, seconds.
pub const WINDOW_S: u64 = 2;

/// The demo's service model (TOML) for `edges`: (edge id, region).
pub fn model_toml(edges: &[(usize, &str)]) -> String {
    let mut t = String::from(
        "# Written by qos-aggregator demo: the service model of the demo's services.\n\n",
    );
    let _ = write!(
        t,
        "[defaults]\nwindow_s = {WINDOW_S}\ngood_ratio = 0.7\ngrace_s = 3\nflap_window_s = 30\n\
         flap_threshold = 12\nstable_windows = 2\nresolve_after = 3\nlookback_s = 300\n\n\
         [[burn_alert]]\nlong_s = 60\nshort_s = 6\nfactor = 14.4\nseverity = \"page\"\n\n"
    );
    t.push_str("[[component]]\nname = \"db\"\nkind = \"database\"\n\n");
    t.push_str("[[component]]\nname = \"app\"\nkind = \"app\"\ndepends_on = [\"db\"]\n\n");
    for r in REGIONS {
        let _ = write!(
            t,
            "[[component]]\nname = \"dns-{r}\"\nkind = \"dns\"\nregion = \"{r}\"\n\n\
             [[component]]\nname = \"path-{r}\"\nkind = \"network_path\"\nregion = \"{r}\"\n\n"
        );
    }
    let paths: Vec<String> = REGIONS.iter().map(|r| format!("\"path-{r}\"")).collect();
    let dns: Vec<String> = REGIONS.iter().map(|r| format!("\"dns-{r}\"")).collect();
    let probes = |probe: u16| {
        let list: Vec<String> = edges
            .iter()
            .map(|(id, r)| format!("{{ edge = {id}, probe = {probe}, region = \"{r}\" }}"))
            .collect();
        list.join(", ")
    };
    let slo = format!(
        "[service.slo]\navailability = 0.99\nperiod_s = 86400\n\
         latency = {{ phase = \"total\", quantile = 0.75, threshold_ms = {LATENCY_THRESHOLD_MS}.0 }}\n\n"
    );
    let _ = write!(
        t,
        "[[service]]\nname = \"shop\"\ndescription = \"The demo's application: its checkout page\"\n\
         depends_on = [{}, \"app\"]\n\n{slo}\
         [[service.transaction]]\nname = \"checkout\"\nprobes = [{}]\n\n",
        paths.join(", "),
        probes(PROBE_HTTP)
    );
    let _ = write!(
        t,
        "[[service]]\nname = \"lookup\"\ndescription = \"Name resolution of app.demo by each region's DNS\"\n\
         depends_on = [{}, {}]\n\n{slo}\
         [[service.transaction]]\nname = \"resolve\"\nprobes = [{}]\n",
        paths.join(", "),
        dns.join(", "),
        probes(PROBE_DNS)
    );
    t
}

/// serve's configuration for the demo (TOML): its listeners, its store in `data/serve`, the
/// model file, a quick engine, and a broker silent for 5 s raising its event.
pub fn serve_toml(http: SocketAddr, coap: SocketAddr, store: &Path, model: &Path) -> String {
    format!(
        "# Written by qos-aggregator demo: the super-manager's configuration.\n\
         [http]\nlisten = \"{http}\"\n\n[coap]\nlisten = \"{coap}\"\n\n\
         [store]\ndata_dir = \"{}\"\nsynchronous = \"normal\"\n\n\
         [watch]\nbroker_silent_after_ms = 5000\n\n\
         [model]\nfile = \"{}\"\nevaluate_s = 1\npoll_ms = 250\n",
        toml_path(store),
        toml_path(model)
    )
}

/// A path as a TOML basic string's content.
fn toml_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_and_serve_configuration_parse_with_the_real_parsers() {
        let edges = [(1, "east"), (2, "east"), (3, "west"), (4, "west")];
        let model = qos_model::Model::from_toml(&model_toml(&edges)).unwrap();
        for s in SERVICES {
            assert!(model.service(s).is_some(), "{s}");
            assert_eq!(model.regions(s).len(), 2, "{s}");
        }
        let deps: Vec<String> = model.dependencies("shop").map(|c| c.name.clone()).collect();
        assert!(deps.contains(&"db".to_string()), "{deps:?}");
        let text = serve_toml(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            Path::new("d/serve"),
            Path::new("d/config/model \"x\".toml"),
        );
        let c = crate::config::Config::parse(&text, Path::new("serve.toml")).unwrap();
        assert_eq!(
            c.model.file.as_deref(),
            Some(Path::new("d/config/model \"x\".toml"))
        );
        assert_eq!(c.watch.broker_silent_after_ms, 5000);
    }
}
