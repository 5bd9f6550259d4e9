//! The service model: the example file, JSON, and validation errors naming the culprit.

use qos_model::model::{ComponentKind, ProbeTarget};
use qos_model::{Model, ModelError};

const EXAMPLE: &str = include_str!("../service-model.example.toml");

#[test]
fn example_parses_and_indexes() {
    let m = Model::from_toml(EXAMPLE).expect("example is valid");
    assert_eq!(m.services().len(), 2);
    assert_eq!(m.regions("shop"), ["ap", "eu", "us"]);
    assert_eq!(m.quorum("shop"), 2);
    // default quorum: majority of 2 regions = 2
    assert_eq!(m.quorum("payments-api"), 2);
    assert_eq!(m.burn_rules("shop").len(), 2);
    assert_eq!(m.burn_rules("payments-api").len(), 1);
    assert_eq!(
        m.locate(2, 1),
        Some(&ProbeTarget::Transaction {
            service: "shop".into(),
            transaction: "checkout".into(),
            region: "us".into()
        })
    );
    assert_eq!(
        m.locate_name("ping-gw-eu"),
        Some(&ProbeTarget::Component {
            component: "path-eu".into(),
            region: "eu".into()
        })
    );
    assert!(m.locate(9, 9).is_none());
    // transitive dependencies: shop → lb → web → app → db → host-1
    let deps: Vec<&str> = m.dependencies("shop").map(|c| c.name.as_str()).collect();
    for c in ["lb", "web", "app", "db", "host-1", "path-eu", "dns-us"] {
        assert!(deps.contains(&c), "{c} in {deps:?}");
    }
    let mut dependents = m.dependents("path-eu");
    dependents.sort();
    assert_eq!(dependents, ["payments-api", "shop"]);
    let path_eu = m.component("path-eu").unwrap();
    assert_eq!(path_eu.kind, ComponentKind::NetworkPath);
    assert!(m.applies("shop", path_eu, "eu"));
    assert!(!m.applies("shop", path_eu, "us"));
    assert!(m.applies("shop", m.component("db").unwrap(), "us"));
    let slo = m.service("shop").unwrap().slo.as_ref().unwrap();
    assert_eq!(slo.latency.as_ref().unwrap().threshold_us(), 800_000);
    assert_eq!(m.edges().len(), 5 + 3 + 1 + 1 + 2 + 1);
}

#[test]
fn the_same_structure_parses_from_json() {
    let json = r#"{
        "component": [{"name": "db", "kind": "database"},
                      {"name": "app", "kind": "app", "depends_on": ["db"]}],
        "service": [{"name": "s", "depends_on": ["app"],
                     "slo": {"availability": 0.99, "latency": {"threshold_ms": 250}},
                     "transaction": [{"name": "t", "probes": [{"edge": 1, "probe": 2, "region": "eu"}]}]}]
    }"#;
    let m = Model::from_json(json).unwrap();
    assert_eq!(m.quorum("s"), 1);
    assert_eq!(m.defaults().window_s, 60);
    assert_eq!(m.burn_rules("s").len(), 2, "default rules");
    let l = m
        .service("s")
        .unwrap()
        .slo
        .as_ref()
        .unwrap()
        .latency
        .clone()
        .unwrap();
    assert_eq!((l.phase.as_str(), l.quantile), ("total", 0.95));
    // and back: the model serialises to JSON that parses to the same thing
    let again = serde_json::to_string(m.spec()).unwrap();
    assert_eq!(Model::from_json(&again).unwrap().spec(), m.spec());
}

fn err(toml: &str) -> ModelError {
    Model::from_toml(toml).expect_err("invalid model accepted")
}

const SVC: &str = r#"
[[service]]
name = "s"
depends_on = ["a"]
[[service.transaction]]
name = "t"
probes = [{ edge = 1, probe = 1, region = "eu" }]
"#;

#[test]
fn errors_name_the_culprit() {
    let e = err(&format!(
        "{SVC}\n[[component]]\nname = \"b\"\nkind = \"web\""
    ));
    assert_eq!(
        e,
        ModelError::UnknownComponent {
            referrer: "service `s`".into(),
            component: "a".into()
        }
    );
    assert!(e.to_string().contains("service `s`") && e.to_string().contains("`a`"));

    let e = err(&format!(
        "{SVC}\n[[component]]\nname = \"a\"\nkind = \"app\"\ndepends_on = [\"zz\"]"
    ));
    assert!(
        matches!(&e, ModelError::UnknownComponent { referrer, component }
        if referrer == "component `a`" && component == "zz")
    );

    let e = err(&format!(
        "{SVC}\n[[component]]\nname = \"a\"\nkind = \"app\"\n[[component]]\nname = \"a\"\nkind = \"db\""
    ));
    // "db" is not a kind: a parse error naming the value
    assert!(
        matches!(&e, ModelError::Parse(m) if m.contains("db")),
        "{e}"
    );
    let e = err(&format!(
        "{SVC}\n[[component]]\nname = \"a\"\nkind = \"app\"\n[[component]]\nname = \"a\"\nkind = \"database\""
    ));
    assert_eq!(e, ModelError::DuplicateComponent("a".into()));

    let cyc = r#"
[[component]]
name = "a"
kind = "app"
depends_on = ["b"]
[[component]]
name = "b"
kind = "database"
depends_on = ["c"]
[[component]]
name = "c"
kind = "host"
depends_on = ["a"]
"#;
    let e = err(&format!("{SVC}{cyc}"));
    assert_eq!(
        e,
        ModelError::Cycle(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(e.to_string(), "dependency cycle: a -> b -> c -> a");

    let comp = "\n[[component]]\nname = \"a\"\nkind = \"app\"\n";
    let e = err(&format!("{SVC}{comp}{SVC}"));
    assert!(
        matches!(&e, ModelError::DuplicateService(s) if s == "s")
            || matches!(&e, ModelError::Probe { .. }),
        "{e}"
    );

    let e = err(&format!(
        "{comp}[[service]]\nname = \"s\"\n[[service.transaction]]\nname = \"t\"\nprobes = [{{ edge = 1, region = \"eu\" }}]"
    ));
    assert!(
        matches!(&e, ModelError::Probe { owner, .. } if owner == "service `s` transaction `t`"),
        "{e}"
    );

    let e = err(&format!(
        "{comp}[[service]]\nname = \"s\"\n[[service.transaction]]\nname = \"t\"\nprobes = [{{ edge = 1, probe = 1, region = \"eu\" }}]\n[[service.transaction]]\nname = \"t\"\n"
    ));
    assert_eq!(
        e,
        ModelError::DuplicateTransaction {
            service: "s".into(),
            transaction: "t".into()
        }
    );

    let e = err(&format!(
        "{comp}[[service]]\nname = \"s\"\nquorum = 2\n[[service.transaction]]\nname = \"t\"\nprobes = [{{ edge = 1, probe = 1, region = \"eu\" }}]"
    ));
    assert!(
        matches!(&e, ModelError::Invalid { owner, reason } if owner == "service `s`" && reason.contains("quorum")),
        "{e}"
    );

    let e = err(&format!(
        "{comp}[[service]]\nname = \"s\"\n[service.slo]\navailability = 0.99\nlatency = {{ phase = \"ttfb\", threshold_ms = 5 }}\n[[service.transaction]]\nname = \"t\"\nprobes = [{{ edge = 1, probe = 1, region = \"eu\" }}]"
    ));
    assert!(e.to_string().contains("ttfb"), "{e}");

    let e = err(&format!("{comp}[[service]]\nname = \"lonely\""));
    assert_eq!(e, ModelError::Unmeasured("lonely".into()));

    let e = err(&format!(
        "{SVC}{comp}[[burn_alert]]\nlong_s = 300\nshort_s = 3600\nfactor = 2.0\nseverity = \"page\""
    ));
    assert!(
        matches!(&e, ModelError::Invalid { owner, .. } if owner == "burn_alert"),
        "{e}"
    );

    let e = err("[[service]]\nname = \"s\"\nunknown_key = 1");
    assert!(matches!(e, ModelError::Parse(_)));
}
