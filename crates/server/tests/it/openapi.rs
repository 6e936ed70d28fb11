//! The OpenAPI document (`/api/v1/openapi.json`), built from the handlers: complete and
//! self-consistent. (Real answers are checked against it in `e2e_openapi`.)

use std::collections::BTreeSet;

use serde_json::Value;

/// Every operation of the document: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

#[test]
fn every_operation_documents_its_parameters_answers_and_errors() {
    let doc = seatkeeper::openapi();
    let ops = operations(&doc);
    assert!(ops.len() >= 86, "only {} operations", ops.len());
    let mut ids = BTreeSet::new();
    for (method, path, op) in &ops {
        let what = format!("{method} {path}");
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: no summary"
        );
        assert!(
            ids.insert(op["operationId"].to_string()),
            "{what}: operationId repeats"
        );
        // Every `{name}` of the path is a documented path parameter.
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        let named: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, named, "{what}: path parameters");
        // A success answer; with a body schema unless it is 204.
        let answers = op["responses"].as_object().unwrap();
        let ok: Vec<_> = answers.keys().filter(|k| k.starts_with('2')).collect();
        assert_eq!(ok.len(), 1, "{what}: success answers {ok:?}");
        if ok[0] != "204" {
            let content = &answers[ok[0]]["content"];
            assert!(
                content
                    .as_object()
                    .is_some_and(|c| c.values().all(|m| m.get("schema").is_some())),
                "{what}: the {} answer has no schema",
                ok[0]
            );
        }
        // Errors in the error shape; 503 on every operation.
        for (status, answer) in answers.iter().filter(|(k, _)| !k.starts_with('2')) {
            let schema = answer.pointer("/content/application~1scim+json/schema/$ref");
            assert_eq!(
                schema.and_then(Value::as_str),
                Some("#/components/schemas/Error"),
                "{what}: the {status} answer"
            );
        }
        assert!(answers.contains_key("503"), "{what}: no 503");
        if op.get("requestBody").is_some() || op.get("parameters").is_some() {
            assert!(answers.contains_key("400"), "{what}: no 400");
        }
    }
}

#[test]
fn query_parameters_come_from_the_handlers_query_types() {
    let doc = seatkeeper::openapi();
    let names = |path: &str| -> Vec<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("/api/v1/events"), ["tenant", "after", "limit"]);
    assert_eq!(
        names("/api/v1/usage"),
        ["sort", "order", "limit", "cursor", "format", "q"]
    );
    assert!(names("/api/v1/tenants/{id}/audit").contains(&"request_id".to_string()));
    // Enumerations are spelled out.
    let step = doc["paths"]["/api/v1/tenants/{id}/usage/history"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "step")
        .unwrap()
        .clone();
    assert_eq!(step["schema"]["enum"], serde_json::json!(["hour", "day"]));
}

#[test]
fn every_admin_operation_but_the_test_clock_has_a_scope() {
    let doc = seatkeeper::openapi();
    let mut closed = Vec::new();
    for (method, path, op) in operations(&doc) {
        if op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("admin").is_some()))
        {
            let scope = op["x-scope"].as_str().unwrap_or_default();
            if scope == "bootstrap admin token only" {
                closed.push((method, path));
            } else {
                assert!(
                    scope.ends_with(":read") || scope.ends_with(":write"),
                    "{method} {path}: x-scope {scope:?}"
                );
            }
        }
    }
    assert_eq!(closed, [("post".to_string(), "/api/v1/clock".to_string())]);
}

#[test]
fn references_resolve() {
    let doc = seatkeeper::openapi();
    let text = doc.to_string();
    let mut refs = 0;
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap_or_default();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "no schema {name}"
        );
        refs += 1;
    }
    assert!(refs > 100, "{refs} references");
}

#[test]
fn the_webhooks_section_has_every_event_type() {
    let doc = seatkeeper::openapi();
    let hooks = doc["webhooks"].as_object().unwrap();
    // The event types the Event schema names (from the catalogue).
    let names: BTreeSet<&str> = doc["components"]["schemas"]["Event"]["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(names.len() >= 27, "{names:?}");
    let documented: BTreeSet<&str> = hooks.keys().map(String::as_str).collect();
    assert_eq!(documented, names);
    for (name, hook) in hooks {
        let body = &hook["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            body["allOf"][1]["properties"]["type"]["const"],
            name.as_str()
        );
        assert!(
            body["allOf"][1]["properties"]["data"]["properties"].is_object(),
            "{name}"
        );
    }
}
