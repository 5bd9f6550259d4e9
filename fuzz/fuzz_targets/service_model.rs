//! The service-model file (`[model] file`, `PUT /api/v1/model`): `qos_model::Model::from_toml`
//! and `from_json` on arbitrary text. A model that validates from TOML validates again from
//! its own parsed specification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_model::{Model, ServiceModel};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Model::from_json(text);
    if let Ok(spec) = ServiceModel::from_toml_str(text) {
        let first = spec.clone().validate().is_ok();
        assert_eq!(Model::from_toml(text).is_ok(), first);
    }
});
