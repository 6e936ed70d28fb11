//! PATCH requests: parsing any JSON body, and applying what parses to a user and a group,
//! never panics; what it produces normalises or is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim::resource::{Source, normalize_resource};
use scim::schema::{GROUP_TYPE, USER_TYPE};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let docs = [
        (
            &*USER_TYPE,
            serde_json::json!({"userName": "a@example.com", "active": true,
                "emails": [{"value": "a@example.com", "type": "work", "primary": true}],
                "name": {"givenName": "A"}}),
        ),
        (
            &*GROUP_TYPE,
            serde_json::json!({"displayName": "Ops", "members": [{"value": "u1"}, {"value": "u2"}]}),
        ),
    ];
    for (rt, mut doc) in docs {
        if let Ok(ops) = scim::patch::parse_request(rt, &body)
            && scim::patch::apply(rt, &mut doc, &ops).is_ok()
        {
            let _ = normalize_resource(rt, &doc, Source::Patched);
        }
    }
});
