//! The licensing model as code, TOML and JSON: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = licensing::spec::Spec::from_toml(text);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = licensing::spec::Spec::from_json(&v);
    }
});
