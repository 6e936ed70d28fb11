//! The SCIM filter parser: never panics, and what it accepts prints to a filter that parses
//! back to the same tree; evaluating it against a user never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = scim::filter::parse(text) {
        let printed = f.to_string();
        let again = scim::filter::parse(&printed)
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which fails: {e}"));
        assert_eq!(f, again, "{text:?} printed as {printed:?}");
        let user = serde_json::json!({
            "userName": "Émile@example.com", "active": true, "name": {"givenName": "Émile"},
            "emails": [{"value": "e@example.com", "type": "work", "primary": true}],
            "meta": {"created": "2026-11-26T10:00:00Z"},
        });
        let _ = f.matches(&scim::schema::USER_TYPE, &user);
    }
    let _ = scim::filter::parse_value_filter(text);
});
