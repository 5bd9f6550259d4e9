use qos_wire::config::EdgeConfig;
use qos_wire::probe::ProbeKind;

use super::*;

const SET: &str = r#"
window_s = 30
[[probe]]
id = 1
kind = "http"
url = "http://shop.test/health"
interval_ms = 5000
[[probe]]
id = 2
kind = "transaction"
target = "db:5432"
steps = [{ send = 'PING\r\n', expect = "+PONG" }]
[[rule]]
probe = 1
metric = "first_byte"
raise_ms = 500
k = 2
n = 3
"#;

#[test]
fn a_set_compiles_to_an_edge_config() {
    let set = ProbeSet::parse(SET).unwrap();
    let bytes = set.edge_config(7).unwrap();
    let cfg = EdgeConfig::decode(&bytes).unwrap();
    assert_eq!((cfg.etag, cfg.window_s), (7, 30));
    assert_eq!(cfg.probes.len(), 2);
    assert_eq!(cfg.rules.len(), 1);
    let p1 = cfg.probe(ProbeId(1)).unwrap();
    assert_eq!((p1.interval_ms, p1.timeout_ms), (5000, default_timeout()));
    match cfg.probe(ProbeId(2)).unwrap().kind {
        ProbeKind::Transaction { steps, .. } => {
            assert_eq!(steps.iter().next().unwrap().send, b"PING\r\n")
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn bad_sets_are_refused_with_the_value_at_fault() {
    for (text, needle) in [
        ("window_s = 0\n", "window_s"),
        ("colour = 1\n", "colour"),
        ("[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"nohost\"\n", "nohost"),
        (
            "[[probe]]\nid = 3\nkind = \"tcp\"\ntarget = \"h:1\"\n[[probe]]\nid = 3\nkind = \"tcp\"\ntarget = \"h:2\"\n",
            "probe id 3",
        ),
        (
            "[[probe]]\nid = 1\nkind = \"tcp\"\ntarget = \"h:1\"\n[[rule]]\nprobe = 9\nmetric = \"total\"\nraise_ms = 1\nk = 1\nn = 1\n",
            "probe 9",
        ),
        (
            "[[probe]]\nid = 1\nkind = \"http\"\nurl = \"https://h/\"\nca_file = \"/x.pem\"\n",
            "ca_file",
        ),
        ("[[probe]]\nid = 1\nkind = \"gopher\"\n", "gopher"),
    ] {
        let err = ProbeSet::parse(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn escapes_and_addresses() {
    assert_eq!(unescape(r"a\r\n\x41").unwrap(), b"a\r\nA");
    assert!(unescape(r"\q").is_err());
    assert_eq!(split_host_port("[::1]:7"), Some(("::1", 7)));
    assert_eq!(split_host_port(":7"), None);
    assert_eq!(resolver_addr("10.0.0.1").unwrap().port(), 53);
    assert!(resolver_addr("dns.test").is_none());
}
