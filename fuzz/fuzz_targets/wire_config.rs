//! `qos_wire::config::EdgeConfig::decode` on arbitrary bytes, then every probe (with the steps
//! of transaction probes) and rule; a configuration that decodes is encoded again and must
//! decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_wire::config::EdgeConfig;
use qos_wire::probe::ProbeKind;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = EdgeConfig::decode(data) else {
        return;
    };
    assert!(cfg.window_s >= 1);
    for p in cfg.probes.iter() {
        assert!(p.validate().is_ok());
        let _ = (p.kind.code(), p.kind.name());
        if let ProbeKind::Transaction { target, steps } = p.kind {
            let _ = target.len();
            for s in steps.iter() {
                let _ = (s.send.len(), s.expect.len());
            }
        }
        assert_eq!(cfg.probe(p.id).map(|q| q.id), Some(p.id));
    }
    for r in cfg.rules.iter() {
        assert!(cfg.probe(r.probe).is_some());
    }
    let mut buf = vec![0u8; data.len() + 64];
    let n = cfg.encode(&mut buf).expect("re-encode");
    let again = EdgeConfig::decode(&buf[..n]).expect("round trip");
    assert_eq!(again, cfg);
});
