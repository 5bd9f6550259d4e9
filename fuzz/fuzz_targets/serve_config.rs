//! `qos_aggregator::config::Config::parse`: serve's configuration file (TOML) on arbitrary
//! text. A configuration that parses validates again, its tokens build an `Auth` (enabled
//! exactly when some are configured), and a non-loopback HTTP listener without tokens was only
//! accepted with `allow_unauthenticated`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use qos_aggregator::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, Path::new("fuzz.toml")) {
        config
            .validate(Path::new("fuzz.toml"))
            .expect("a parsed configuration validates again");
        assert_eq!(config.http.auth().enabled(), !config.http.tokens.is_empty());
        assert!(
            !config.http.tokens.is_empty()
                || config.http.allow_unauthenticated
                || config.http.listen.ip().is_loopback()
        );
    }
});
