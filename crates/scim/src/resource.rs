//! Resource input normalisation and output projection (RFC 7643 §2, §7; RFC 7644 §3.4.2.5).
//!
//! Input is normalised once at the edge: attribute names are rewritten to their canonical
//! case, values are checked against their type (with the coercions IdPs need), readOnly
//! attributes are dropped, and `null` means "unassigned" (RFC 7643 §2.5). Stored resources
//! are therefore always canonical, and the filter and PATCH engines can rely on that.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::filter::{AttrPath, get_ci, parse_datetime};
use crate::schema::{AttrType, AttributeDef, COMMON, Mutability, ResourceType, Returned};

/// What a normalisation is for: input from a client, or a stored document being re-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A client's request body: readOnly attributes are dropped.
    Client,
    /// The result of a PATCH: readOnly attributes were already guarded by the PATCH engine.
    Patched,
}

/// Normalises one attribute value under its definition. `Ok(None)` means unassigned.
///
/// Coercions, each for a real client:
/// - `"True"` / `"False"` for booleans (Entra ID sends booleans as strings in PATCH);
/// - a bare string for a complex attribute with a `value` sub-attribute (Entra ID sends
///   `manager` as the manager's id);
/// - a single value where a list is expected is wrapped in a list.
pub fn normalize_value(def: &AttributeDef, value: &Value, source: Source) -> Result<Option<Value>> {
    if value.is_null() {
        return Ok(None);
    }
    if def.multi_valued {
        let items: Vec<&Value> = match value {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = normalize_single(def, item, source)?
                && !out.contains(&v)
            {
                out.push(v);
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        if def.ty == AttrType::Complex {
            let primaries = out
                .iter()
                .filter(|v| v.get("primary") == Some(&Value::Bool(true)))
                .count();
            if primaries > 1 {
                return Err(Error::InvalidValue(format!(
                    "'{}' has {primaries} values marked primary; at most one may be",
                    def.name
                )));
            }
        }
        return Ok(Some(Value::Array(out)));
    }
    if value.is_array() {
        return Err(Error::InvalidValue(format!(
            "'{}' is single-valued but a list was given",
            def.name
        )));
    }
    normalize_single(def, value, source)
}

fn normalize_single(def: &AttributeDef, value: &Value, source: Source) -> Result<Option<Value>> {
    let wrong = |expected: &str| {
        Error::InvalidValue(format!(
            "'{}' must be {expected}, got {}",
            def.name,
            kind_of(value)
        ))
    };
    Ok(Some(match def.ty {
        AttrType::Complex => match value {
            Value::Object(obj) => {
                let mut out = Map::new();
                for (k, v) in obj {
                    let Some(sub) = def.sub(k) else { continue };
                    if source == Source::Client && sub.mutability == Mutability::ReadOnly {
                        continue;
                    }
                    if let Some(v) = normalize_value(sub, v, source)? {
                        out.insert(sub.name.to_string(), v);
                    }
                }
                if out.is_empty() {
                    return Ok(None);
                }
                Value::Object(out)
            }
            // A bare value where a complex one is expected is its `value`, normalised as
            // that sub-attribute is (found by the resource fuzz target: it skipped NFC).
            Value::String(s) if def.sub("value").is_some() => {
                if s.is_empty() {
                    return Ok(None);
                }
                let Some(sub) = def.sub("value") else {
                    return Ok(None);
                };
                let Some(v) = normalize_single(sub, value, source)? else {
                    return Ok(None);
                };
                let mut out = Map::new();
                out.insert("value".into(), v);
                Value::Object(out)
            }
            _ => return Err(wrong("an object")),
        },
        AttrType::Boolean => match value {
            Value::Bool(_) => value.clone(),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(wrong("true or false")),
        },
        AttrType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => value.clone(),
            Value::String(s) => s
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| wrong("an integer"))?,
            _ => return Err(wrong("an integer")),
        },
        AttrType::Decimal => match value {
            Value::Number(_) => value.clone(),
            _ => return Err(wrong("a number")),
        },
        AttrType::DateTime => match value {
            Value::String(s) if parse_datetime(s).is_some() => value.clone(),
            _ => return Err(wrong("an RFC 3339 date-time string")),
        },
        AttrType::String => match value {
            Value::String(s) => Value::String(crate::text::nfc(s).into_owned()),
            _ => return Err(wrong("a string")),
        },
        AttrType::Reference | AttrType::Binary => match value {
            Value::String(_) => value.clone(),
            _ => return Err(wrong("a string")),
        },
    }))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Normalises a whole resource body from a client (POST or PUT).
///
/// Returns the canonical document without `id` and `meta` (the server owns those), with a
/// `schemas` list naming exactly the core schema and the extensions present. Unknown
/// attributes and unknown extension URNs are dropped, because IdPs send vendor extensions
/// (Okta's custom attributes) that a service provider is expected to ignore.
pub fn normalize_resource(
    rt: &'static ResourceType,
    input: &Value,
    source: Source,
) -> Result<Value> {
    let Value::Object(obj) = input else {
        return Err(Error::InvalidSyntax(
            "the resource must be a JSON object".into(),
        ));
    };
    if let Some(schemas) = get_ci(input, "schemas") {
        let ok = schemas
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(Error::InvalidSyntax(
                "'schemas' must be a list of URNs".into(),
            ));
        }
        for urn in schemas
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !urn.eq_ignore_ascii_case(rt.schema.id) && rt.extension(urn).is_none() {
                return Err(Error::InvalidValue(format!(
                    "schemas: '{urn}' is not a schema of {} here (see /Schemas)",
                    rt.name
                )));
            }
        }
    }
    let mut core = Map::new();
    let mut extensions: Vec<(&'static str, Map<String, Value>)> = Vec::new();
    for (key, value) in obj {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(ext) = rt.extension(key) {
            let Value::Object(ext_obj) = value else {
                if value.is_null() {
                    continue;
                }
                return Err(Error::InvalidValue(format!(
                    "'{}' must be an object",
                    ext.id
                )));
            };
            let mut out = Map::new();
            for (k, v) in ext_obj {
                let Some(def) = ext.attr(k) else { continue };
                if skip_on_input(def, source) {
                    continue;
                }
                if let Some(v) = normalize_value(def, v, source)? {
                    out.insert(def.name.to_string(), v);
                }
            }
            // A read-only extension (all its attributes server-owned) keeps the empty
            // container a client sends, and loses it when the client removes it, so the
            // client reads back what it wrote; its values always come from the server.
            let read_only = ext
                .attributes
                .iter()
                .all(|a| a.mutability == Mutability::ReadOnly);
            if !out.is_empty() || read_only {
                extensions.push((ext.id, out));
            }
            continue;
        }
        let def = COMMON
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(key))
            .or_else(|| rt.schema.attr(key));
        let Some(def) = def else { continue };
        if skip_on_input(def, source) {
            continue;
        }
        if let Some(v) = normalize_value(def, value, source)? {
            core.insert(def.name.to_string(), v);
        }
    }
    for name in ["userName", "externalId", "displayName"] {
        if let Some(Value::String(v)) = core.get(name)
            && let Some(c) = crate::text::forbidden_in_name(v)
        {
            return Err(Error::InvalidValue(format!(
                "'{name}' must not contain control or invisible formatting characters (U+{:04X})",
                u32::from(c)
            )));
        }
    }
    for def in &rt.schema.attributes {
        if def.required {
            let present = core
                .get(def.name)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty());
            if !present {
                return Err(Error::InvalidValue(format!(
                    "'{}' is required and must be a non-empty string",
                    def.name
                )));
            }
        }
    }
    let mut out = Map::new();
    let mut schemas = vec![Value::String(rt.schema.id.to_string())];
    schemas.extend(
        extensions
            .iter()
            .map(|(urn, _)| Value::String(urn.to_string())),
    );
    out.insert("schemas".into(), Value::Array(schemas));
    out.extend(core);
    for (urn, ext) in extensions {
        out.insert(urn.to_string(), Value::Object(ext));
    }
    Ok(Value::Object(out))
}

fn skip_on_input(def: &AttributeDef, source: Source) -> bool {
    match source {
        Source::Client => {
            def.mutability == Mutability::ReadOnly || def.mutability == Mutability::WriteOnly
        }
        // `id` and `meta` are the server's and never stored in the document.
        Source::Patched => {
            def.mutability == Mutability::WriteOnly
                || def.name == "id"
                || def.name == "meta"
                || def.name == "groups"
        }
    }
}

/// The `attributes` / `excludedAttributes` request (RFC 7644 §3.4.2.5).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    /// Return only these (plus `returned: always`).
    pub attributes: Vec<AttrPath>,
    /// Return all default attributes except these.
    pub excluded: Vec<AttrPath>,
}

impl Projection {
    /// Parses the comma-separated query parameters. Unknown attributes are rejected with
    /// `invalidValue`, so a typo does not silently return everything.
    pub fn parse(
        rt: &'static ResourceType,
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Result<Projection> {
        let parse_list = |s: Option<&str>| -> Result<Vec<AttrPath>> {
            let mut out = Vec::new();
            for part in s.unwrap_or("").split(',') {
                let part = part.trim();
                if part.is_empty() {
                    continue;
                }
                if rt.extension(part).is_some() || part.eq_ignore_ascii_case(rt.schema.id) {
                    out.push(AttrPath {
                        urn: Some(part.to_string()),
                        name: String::new(),
                        sub: None,
                    });
                    continue;
                }
                let path = AttrPath::parse(part).map_err(|_| {
                    Error::InvalidParameter(format!("invalid attribute name '{part}'"))
                })?;
                let (def, _) = rt.resolve(path.urn.as_deref(), &path.name).ok_or_else(|| {
                    Error::InvalidParameter(format!("unknown attribute '{part}'"))
                })?;
                if let Some(sub) = &path.sub
                    && def.sub(sub).is_none()
                {
                    return Err(Error::InvalidParameter(format!(
                        "unknown attribute '{part}'"
                    )));
                }
                out.push(path);
            }
            Ok(out)
        };
        Ok(Projection {
            attributes: parse_list(attributes)?,
            excluded: parse_list(excluded)?,
        })
    }

    /// Whether this projection asks for nothing special.
    pub fn is_default(&self) -> bool {
        self.attributes.is_empty() && self.excluded.is_empty()
    }

    /// Whether the response will contain this top-level attribute (used to skip work, such as
    /// loading group members when `excludedAttributes=members`).
    pub fn wants(&self, rt: &'static ResourceType, name: &str) -> bool {
        let Some((def, loc)) = rt.resolve(None, name) else {
            return false;
        };
        include_attr(rt, self, def, loc_urn(loc, rt)).is_some()
    }

    /// Applies the projection and the `returned` characteristic to a full resource.
    pub fn apply(&self, rt: &'static ResourceType, resource: &Value) -> Value {
        let Value::Object(obj) = resource else {
            return resource.clone();
        };
        let mut out = Map::new();
        for (key, value) in obj {
            if key == "schemas" {
                out.insert(key.clone(), value.clone());
                continue;
            }
            if let Some(ext) = rt.extension(key) {
                let whole_named = |list: &[AttrPath]| {
                    list.iter().any(|p| {
                        p.name.is_empty()
                            && p.urn
                                .as_deref()
                                .is_some_and(|u| u.eq_ignore_ascii_case(ext.id))
                    })
                };
                if whole_named(&self.excluded) {
                    continue;
                }
                let Value::Object(ext_obj) = value else {
                    continue;
                };
                let whole = whole_named(&self.attributes);
                let mut ext_out = Map::new();
                for (k, v) in ext_obj {
                    let Some(def) = ext.attr(k) else { continue };
                    let filtered = if whole && def.returned != Returned::Never {
                        Some(v.clone())
                    } else {
                        include_attr(rt, self, def, Some(ext.id))
                            .and_then(|subs| select_subs(def, v, &subs))
                    };
                    if let Some(v) = filtered {
                        ext_out.insert(k.clone(), v);
                    }
                }
                // An extension the server sends empty on purpose stays, unless the
                // client named only other attributes.
                let keep_empty = ext_obj.is_empty() && (self.attributes.is_empty() || whole);
                if !ext_out.is_empty() || keep_empty {
                    out.insert(key.clone(), Value::Object(ext_out));
                }
                continue;
            }
            let Some((def, _)) = rt.resolve(Some(rt.schema.id), key) else {
                continue;
            };
            if let Some(subs) = include_attr(rt, self, def, None)
                && let Some(v) = select_subs(def, value, &subs)
            {
                out.insert(key.clone(), v);
            }
        }
        // Keep `schemas` honest: only name extensions still present.
        if let Some(Value::Array(schemas)) = out.get("schemas").cloned() {
            let kept: Vec<Value> = schemas
                .into_iter()
                .filter(|s| {
                    s.as_str().is_some_and(|u| {
                        u.eq_ignore_ascii_case(rt.schema.id) || out.contains_key(u)
                    })
                })
                .collect();
            out.insert("schemas".into(), Value::Array(kept));
        }
        Value::Object(out)
    }
}

fn loc_urn(loc: crate::schema::Location, _rt: &ResourceType) -> Option<&'static str> {
    match loc {
        crate::schema::Location::Core => None,
        crate::schema::Location::Extension(u) => Some(u),
    }
}

/// What to keep of one attribute: `None` drops it; `Some(SubSel)` keeps it, maybe partly.
#[derive(Debug, Clone)]
enum SubSel {
    All,
    Only(Vec<String>),
    AllBut(Vec<String>),
}

fn path_names(p: &AttrPath, rt: &ResourceType, def: &AttributeDef, urn: Option<&str>) -> bool {
    if p.name.is_empty() || !p.name.eq_ignore_ascii_case(def.name) {
        return false;
    }
    match (&p.urn, urn) {
        (None, _) => true,
        (Some(pu), None) => pu.eq_ignore_ascii_case(rt.schema.id),
        (Some(pu), Some(u)) => pu.eq_ignore_ascii_case(u),
    }
}

fn include_attr(
    rt: &ResourceType,
    proj: &Projection,
    def: &AttributeDef,
    urn: Option<&str>,
) -> Option<SubSel> {
    match def.returned {
        Returned::Never => return None,
        Returned::Always => return Some(SubSel::All),
        _ => {}
    }
    if !proj.attributes.is_empty() {
        let named: Vec<&AttrPath> = proj
            .attributes
            .iter()
            .filter(|p| path_names(p, rt, def, urn))
            .collect();
        if named.is_empty() {
            return None;
        }
        if named.iter().any(|p| p.sub.is_none()) {
            return Some(SubSel::All);
        }
        return Some(SubSel::Only(
            named.iter().filter_map(|p| p.sub.clone()).collect(),
        ));
    }
    if def.returned == Returned::Request {
        return None;
    }
    let excluded: Vec<&AttrPath> = proj
        .excluded
        .iter()
        .filter(|p| path_names(p, rt, def, urn))
        .collect();
    if excluded.iter().any(|p| p.sub.is_none()) {
        return None;
    }
    if excluded.is_empty() {
        Some(SubSel::All)
    } else {
        Some(SubSel::AllBut(
            excluded.iter().filter_map(|p| p.sub.clone()).collect(),
        ))
    }
}

fn select_subs(def: &AttributeDef, value: &Value, sel: &SubSel) -> Option<Value> {
    let keep = |name: &str| -> bool {
        let sub_def = def.sub(name);
        if sub_def.is_some_and(|s| s.returned == Returned::Never) {
            return false;
        }
        if sub_def.is_some_and(|s| s.returned == Returned::Always) {
            return true;
        }
        match sel {
            SubSel::All => true,
            SubSel::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
            SubSel::AllBut(names) => !names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    };
    let filter_obj = |v: &Value| -> Option<Value> {
        match v {
            Value::Object(o) => {
                let m: Map<String, Value> = o
                    .iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (!m.is_empty()).then_some(Value::Object(m))
            }
            other => Some(other.clone()),
        }
    };
    if def.ty != AttrType::Complex || matches!(sel, SubSel::All) {
        return Some(value.clone());
    }
    match value {
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(filter_obj).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => filter_obj(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{GROUP_TYPE, USER_TYPE};
    use serde_json::json;

    #[test]
    fn canonical_names_coercions_and_readonly() {
        let input = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "USERNAME": "alice",
            "id": "client-chosen",
            "groups": [{"value": "g"}],
            "active": "False",
            "password": "secret",
            "Name": {"GivenName": "Alice"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": "m-1"},
            "unknownThing": 1
        });
        let out = normalize_resource(&USER_TYPE, &input, Source::Client).unwrap();
        assert_eq!(
            out,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                "userName": "alice",
                "active": false,
                "name": {"givenName": "Alice"},
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "m-1"}}
            })
        );
    }

    #[test]
    fn a_bare_value_is_normalised_as_its_value() {
        let input = json!({"userName": "a", "phoneNumbers": "mi\u{301}mile"});
        let once = normalize_resource(&USER_TYPE, &input, Source::Client).unwrap();
        assert_eq!(once["phoneNumbers"][0]["value"], "m\u{ed}mile");
        let twice = normalize_resource(&USER_TYPE, &once, Source::Patched).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn errors() {
        let cases = [
            json!({"schemas": [], "name": {"givenName": "x"}}),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:okta:custom"], "userName": "a"}),
            json!({"userName": "a\tb"}),
            json!({"userName": ""}),
            json!({"userName": 5}),
            json!({"userName": "a", "active": "maybe"}),
            json!({"userName": "a", "emails": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]}),
            json!({"userName": "a", "displayName": ["x"]}),
        ];
        for c in cases {
            assert!(
                normalize_resource(&USER_TYPE, &c, Source::Client).is_err(),
                "{c}"
            );
        }
        assert!(matches!(
            normalize_resource(&USER_TYPE, &json!([]), Source::Client),
            Err(Error::InvalidSyntax(_))
        ));
    }

    #[test]
    fn projection() {
        let user = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "id": "1", "userName": "a", "displayName": "A",
            "name": {"givenName": "G", "familyName": "F"},
            "emails": [{"value": "a@x", "type": "work"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "D"},
            "meta": {"resourceType": "User"}
        });
        let p = Projection::parse(&USER_TYPE, Some("userName,name.givenName"), None).unwrap();
        assert_eq!(
            p.apply(&USER_TYPE, &user),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "1", "userName": "a", "name": {"givenName": "G"}})
        );
        let p = Projection::parse(
            &USER_TYPE,
            None,
            Some(
                "emails,name.familyName,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            ),
        )
        .unwrap();
        let out = p.apply(&USER_TYPE, &user);
        assert!(out.get("emails").is_none());
        assert_eq!(out["name"], json!({"givenName": "G"}));
        assert!(
            out.get("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
                .is_none()
        );
        let p = Projection::parse(&USER_TYPE, Some("department"), None).unwrap();
        assert_eq!(
            p.apply(&USER_TYPE, &user)["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            json!({"department": "D"})
        );
        assert!(Projection::parse(&USER_TYPE, Some("nosuch"), None).is_err());
        let p = Projection::parse(&GROUP_TYPE, None, Some("members")).unwrap();
        assert!(!p.wants(&GROUP_TYPE, "members"));
        assert!(p.wants(&GROUP_TYPE, "displayName"));
    }
}
