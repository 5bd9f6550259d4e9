//! `qos_aggregator::broker_config::BrokerFile::parse`: the broker's configuration file (TOML)
//! on arbitrary text. A configuration that parses validates again and yields its derived
//! paths and addresses without panicking.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qos_aggregator::broker_config::BrokerFile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = BrokerFile::parse(text, Path::new("fuzz.toml")) {
        config
            .validate(Path::new("fuzz.toml"))
            .expect("a parsed configuration validates again");
        let _ = config.broker.queue_path();
        let _ = config.upstream_address();
    }
});
