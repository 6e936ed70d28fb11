//! Resource normalisation of any JSON body: never panics, and a normalised resource
//! normalises to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim::resource::{Source, normalize_resource};
use scim::schema::{GROUP_TYPE, USER_TYPE};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for rt in [&*USER_TYPE, &*GROUP_TYPE] {
        if let Ok(doc) = normalize_resource(rt, &body, Source::Client) {
            let again = normalize_resource(rt, &doc, Source::Patched)
                .unwrap_or_else(|e| panic!("{doc} no longer normalises: {e}"));
            assert_eq!(doc, again, "normalising twice changed it");
        }
    }
});
