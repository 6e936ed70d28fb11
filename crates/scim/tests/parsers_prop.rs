//! Property tests of the filter and PATCH-path parsers: no input panics, and every filter
//! prints to text that parses back to the same tree.

use proptest::prelude::*;
use scim::filter::{self, AttrPath, CompValue, CompareOp, Filter};
use scim::patch::PatchPath;
use scim::schema::{GROUP_TYPE, USER_TYPE};

fn name() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        Just("userName".to_string()),
        Just("emails".to_string()),
        Just("title".to_string()),
        Just("$ref".to_string()),
        "[a-zA-Z][a-zA-Z0-9_-]{0,8}",
    ]
    .prop_filter("not a keyword", |s| {
        !["not", "and", "or", "pr", "eq", "true", "false", "null"]
            .contains(&s.to_ascii_lowercase().as_str())
    })
}

fn path() -> impl Strategy<Value = AttrPath> + Clone {
    (
        prop::option::of(prop_oneof![
            Just("urn:ietf:params:scim:schemas:core:2.0:User".to_string()),
            Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_string()),
        ]),
        name(),
        prop::option::of(name()),
    )
        .prop_map(|(urn, name, sub)| AttrPath { urn, name, sub })
}

fn simple_path() -> impl Strategy<Value = AttrPath> + Clone {
    name().prop_map(|name| AttrPath {
        urn: None,
        name,
        sub: None,
    })
}

fn value() -> impl Strategy<Value = CompValue> + Clone {
    prop_oneof![
        Just(CompValue::Null),
        any::<bool>().prop_map(CompValue::Bool),
        any::<i64>().prop_map(|n| CompValue::Number(n.into())),
        // Literals are read in Normalization Form C, so that is the form that round-trips.
        ".{0,12}".prop_map(|s| CompValue::Str(scim::text::nfc(&s).into_owned())),
    ]
}

fn op() -> impl Strategy<Value = CompareOp> + Clone {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Co),
        Just(CompareOp::Sw),
        Just(CompareOp::Ew),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
    ]
}

fn leaf(p: impl Strategy<Value = AttrPath> + Clone) -> impl Strategy<Value = Filter> {
    prop_oneof![
        p.clone().prop_map(Filter::Present),
        (p, op(), value()).prop_map(|(p, o, v)| Filter::Compare(p, o, v)),
    ]
}

fn tree(
    p: impl Strategy<Value = AttrPath> + Clone + 'static,
    depth: u32,
) -> impl Strategy<Value = Filter> {
    leaf(p).prop_recursive(depth, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|f| Filter::Not(Box::new(f))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn full_filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        tree(path(), 4),
        (name(), tree(simple_path(), 2)).prop_map(|(n, f)| Filter::ValuePath(
            AttrPath {
                urn: None,
                name: n,
                sub: None
            },
            Box::new(f)
        )),
    ]
    .prop_recursive(2, 8, 2, |inner| {
        (inner.clone(), inner).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b)))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn print_then_parse_round_trips(f in full_filter()) {
        let text = f.to_string();
        let back = filter::parse(&text);
        prop_assert_eq!(back.as_ref().ok(), Some(&f), "{}", text);
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = filter::parse(&s);
        let _ = PatchPath::parse(&USER_TYPE, &s);
        let _ = PatchPath::parse(&GROUP_TYPE, &s);
    }

    #[test]
    fn filter_like_text_never_panics(s in r#"[a-zA-Z .\[\]()"\\:0-9-]{0,80}"#) {
        if let Ok(f) = filter::parse(&s) {
            // Whatever parses also validates and evaluates without panicking.
            let _ = f.validate(&USER_TYPE);
            let _ = f.matches(&USER_TYPE, &serde_json::json!({"userName": "x", "emails": [{"value": "a"}]}));
            prop_assert_eq!(filter::parse(&f.to_string()).ok(), Some(f));
        }
        let _ = PatchPath::parse(&USER_TYPE, &s);
    }

    #[test]
    fn patch_apply_never_panics(path in r#"(emails|name|members|active|userName|urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager)(\[(type|value) (eq|co) "[a-z]{0,3}"\])?(\.(value|type|givenName|primary))?"#,
                                 op in "(add|replace|remove|Replace)",
                                 v in prop_oneof![Just(serde_json::json!("x")), Just(serde_json::json!(true)), Just(serde_json::json!([{"value": "a"}])), Just(serde_json::json!({"value": "b"})), Just(serde_json::Value::Null)]) {
        let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": op, "path": path, "value": v}]});
        for rt in [&*USER_TYPE, &*GROUP_TYPE] {
            if let Ok(ops) = scim::patch::parse_request(rt, &body) {
                let mut doc = serde_json::json!({"userName": "u", "displayName": "d", "emails": [{"value": "a", "type": "work"}], "members": [{"value": "a"}]});
                let _ = scim::patch::apply(rt, &mut doc, &ops);
            }
        }
    }
}

/// Found by the filter fuzz target: a large integer literal parsed to a float that printed
/// and parsed back to a neighbouring float (JSON numbers must parse correctly rounded).
#[test]
fn large_number_literals_round_trip() {
    let f = scim::filter::parse("us eq 4444444444444444444444444444444444").unwrap();
    let again = scim::filter::parse(&f.to_string()).unwrap();
    assert_eq!(f, again);
}
