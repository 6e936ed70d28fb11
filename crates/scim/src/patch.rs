//! PATCH (RFC 7644 §3.5.2): parse operations and apply them to a canonical resource.
//!
//! Path grammar (RFC 7644 §3.5.2, figure 1):
//!
//! ```text
//! PATH = attrPath / valuePath [subAttr]
//! ```
//!
//! where `valuePath` is `attrPath "[" valFilter "]"` as in [`crate::filter`]. A path that is
//! exactly an extension URN addresses the whole extension object.
//!
//! Tolerances for what identity providers really send (each is named where it is handled):
//! - Entra ID capitalises ops: `"Replace"`, `"Add"`, `"Remove"`.
//! - Entra ID sends booleans as strings: `"value": "False"`.
//! - Entra ID removes group members with `{"op":"Remove","path":"members","value":[{"value":"id"}]}`.
//! - Entra ID sends `manager` as the manager's id, a plain string.
//! - Entra ID sends a no-path `replace` whose object keys are paths
//!   (`{"name.givenName": "x", "urn:…:enterprise:2.0:User:department": "y"}`).
//! - Entra ID and Okta `add`/`replace` through a filter that matches nothing
//!   (`emails[type eq "work"].value` on a user without a work email): when the filter is a
//!   conjunction of `eq` tests, the value is created with those sub-attributes, as the IdPs expect.
//! - Okta sends `id` inside a no-path replace; readOnly keys there are ignored.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::filter::{self, AttrPath, CompValue, CompareOp, Filter, Scope, get_ci};
use crate::resource::{Source, normalize_value};
use crate::schema::{AttrType, AttributeDef, Location, Mutability, ResourceType};

/// The three PATCH operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `add`
    Add,
    /// `replace`
    Replace,
    /// `remove`
    Remove,
}

/// A parsed PATCH path.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (and sub-attribute when there is no filter).
    pub attr: AttrPath,
    /// The value filter of a value path.
    pub filter: Option<Filter>,
    /// The sub-attribute after a value path (`emails[…].value`).
    pub sub: Option<String>,
    /// The extension URN when the path names a whole extension.
    pub extension: Option<&'static str>,
}

impl PatchPath {
    /// Parses and checks a path against the resource type.
    pub fn parse(rt: &'static ResourceType, text: &str) -> Result<PatchPath> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::InvalidPath("the path is empty".into()));
        }
        if text.len() > filter::MAX_FILTER_LEN {
            return Err(Error::InvalidPath("the path is too long".into()));
        }
        if let Some(ext) = rt.extension(text) {
            return Ok(PatchPath {
                attr: AttrPath {
                    urn: Some(ext.id.to_string()),
                    name: String::new(),
                    sub: None,
                },
                filter: None,
                sub: None,
                extension: Some(ext.id),
            });
        }
        let bad = || Error::InvalidPath(format!("invalid path '{text}'"));
        let (attr, filter, sub) = match text.find('[') {
            Some(open) => {
                let close = text.rfind(']').filter(|&c| c > open).ok_or_else(bad)?;
                let attr = AttrPath::parse(&text[..open]).map_err(|_| bad())?;
                if attr.sub.is_some() {
                    return Err(bad());
                }
                let inner = filter::parse_value_filter(&text[open + 1..close])?;
                let after = &text[close + 1..];
                let sub = match after.strip_prefix('.') {
                    Some(s)
                        if !s.is_empty()
                            && s.chars().all(|c| {
                                c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$'
                            }) =>
                    {
                        Some(s.to_string())
                    }
                    None if after.is_empty() => None,
                    _ => return Err(bad()),
                };
                (attr, Some(inner), sub)
            }
            None => (AttrPath::parse(text).map_err(|_| bad())?, None, None),
        };
        let (def, _) = rt
            .resolve(attr.urn.as_deref(), &attr.name)
            .ok_or_else(|| Error::InvalidPath(format!("unknown attribute '{text}'")))?;
        if let Some(f) = &filter {
            if def.ty != AttrType::Complex || !def.multi_valued {
                return Err(Error::InvalidPath(format!(
                    "'{}' is not a multi-valued complex attribute; it cannot take a filter",
                    def.name
                )));
            }
            f.validate_in(Scope::Complex(def))?;
        }
        if let Some(s) = attr.sub.as_ref().or(sub.as_ref())
            && def.sub(s).is_none()
        {
            return Err(Error::InvalidPath(format!(
                "unknown sub-attribute '{text}'"
            )));
        }
        Ok(PatchPath {
            attr,
            filter,
            sub,
            extension: None,
        })
    }
}

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    /// The operation.
    pub op: OpKind,
    /// The target, if any.
    pub path: Option<PatchPath>,
    /// The value, if any.
    pub value: Option<Value>,
}

/// Parses a PatchOp request body (RFC 7644 §3.5.2).
pub fn parse_request(rt: &'static ResourceType, body: &Value) -> Result<Vec<PatchOperation>> {
    if !body.is_object() {
        return Err(Error::InvalidSyntax(
            "the PATCH body must be a JSON object".into(),
        ));
    }
    if let Some(schemas) = get_ci(body, "schemas") {
        let ok = schemas.as_array().is_some_and(|a| {
            a.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(crate::schema::PATCH_OP_SCHEMA))
            })
        });
        if !ok {
            return Err(Error::InvalidSyntax(format!(
                "'schemas' must contain {}",
                crate::schema::PATCH_OP_SCHEMA
            )));
        }
    } else {
        return Err(Error::InvalidSyntax(format!(
            "'schemas' is required and must contain {}",
            crate::schema::PATCH_OP_SCHEMA
        )));
    }
    let ops = get_ci(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::InvalidSyntax("'Operations' must be a list".into()))?;
    if ops.is_empty() {
        return Err(Error::InvalidSyntax("'Operations' is empty".into()));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let kind = get_ci(op, "op").and_then(Value::as_str).ok_or_else(|| {
            Error::InvalidSyntax(format!(
                "operation {i}: 'op' must be add, replace or remove"
            ))
        })?;
        // Entra ID capitalises the op ("Replace"); RFC 7644 names are lower case.
        let kind = match kind.to_ascii_lowercase().as_str() {
            "add" => OpKind::Add,
            "replace" => OpKind::Replace,
            "remove" => OpKind::Remove,
            other => {
                return Err(Error::InvalidSyntax(format!(
                    "operation {i}: unknown op '{other}'; expected add, replace or remove"
                )));
            }
        };
        let path = match get_ci(op, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(PatchPath::parse(rt, s)?),
            Some(_) => {
                return Err(Error::InvalidPath(format!(
                    "operation {i}: 'path' must be a string"
                )));
            }
        };
        let value = get_ci(op, "value").cloned();
        match (kind, &path, &value) {
            (OpKind::Remove, None, _) => {
                return Err(Error::NoTarget(format!(
                    "operation {i}: remove needs a path"
                )));
            }
            (OpKind::Add | OpKind::Replace, _, None) => {
                return Err(Error::InvalidValue(format!(
                    "operation {i}: {} needs a value",
                    if kind == OpKind::Add {
                        "add"
                    } else {
                        "replace"
                    }
                )));
            }
            (OpKind::Add | OpKind::Replace, None, Some(v)) if !v.is_object() => {
                return Err(Error::InvalidValue(format!(
                    "operation {i}: without a path, the value must be an object of attributes"
                )));
            }
            _ => {}
        }
        out.push(PatchOperation {
            op: kind,
            path,
            value,
        });
    }
    Ok(out)
}

/// Applies operations in order to a canonical resource document. The caller re-normalises
/// the result (required attributes, `schemas`) and treats "unchanged" as a no-op.
pub fn apply(rt: &'static ResourceType, doc: &mut Value, ops: &[PatchOperation]) -> Result<()> {
    let Value::Object(map) = doc else {
        return Err(Error::InvalidSyntax("resource is not an object".into()));
    };
    for op in ops {
        match &op.path {
            Some(path) => apply_path(rt, map, op.op, path, op.value.as_ref(), true)?,
            None => apply_no_path(rt, map, op.op, op.value.as_ref().unwrap_or(&Value::Null))?,
        }
    }
    Ok(())
}

fn apply_no_path(
    rt: &'static ResourceType,
    map: &mut Map<String, Value>,
    op: OpKind,
    value: &Value,
) -> Result<()> {
    let Value::Object(obj) = value else {
        return Err(Error::InvalidValue(
            "without a path, the value must be an object".into(),
        ));
    };
    for (key, v) in obj {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(ext) = rt.extension(key) {
            let Value::Object(ext_obj) = v else {
                return Err(Error::InvalidValue(format!(
                    "'{}' must be an object",
                    ext.id
                )));
            };
            for (k, ev) in ext_obj {
                let Some(def) = ext.attr(k) else { continue };
                let path = PatchPath {
                    attr: AttrPath {
                        urn: Some(ext.id.to_string()),
                        name: def.name.to_string(),
                        sub: None,
                    },
                    filter: None,
                    sub: None,
                    extension: None,
                };
                apply_path(rt, map, op, &path, Some(ev), false)?;
            }
            continue;
        }
        // Entra ID: keys may themselves be paths ("name.givenName", URN-qualified names).
        let path = match PatchPath::parse(rt, key) {
            Ok(p) => p,
            Err(Error::InvalidPath(_)) => continue, // unknown attributes are ignored, as on POST
            Err(e) => return Err(e),
        };
        apply_path(rt, map, op, &path, Some(v), false)?;
    }
    Ok(())
}

fn container(
    map: &mut Map<String, Value>,
    loc: Location,
    create: bool,
) -> Option<&mut Map<String, Value>> {
    match loc {
        Location::Core => Some(map),
        Location::Extension(urn) => {
            if !map.contains_key(urn) {
                if !create {
                    return None;
                }
                map.insert(urn.to_string(), Value::Object(Map::new()));
            }
            map.get_mut(urn).and_then(Value::as_object_mut)
        }
    }
}

fn apply_path(
    rt: &'static ResourceType,
    map: &mut Map<String, Value>,
    op: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
    explicit: bool,
) -> Result<()> {
    if let Some(urn) = path.extension {
        return match op {
            OpKind::Remove => {
                map.remove(urn);
                Ok(())
            }
            _ => {
                let mut obj = Map::new();
                obj.insert(urn.to_string(), value.cloned().unwrap_or(Value::Null));
                apply_no_path(rt, map, op, &Value::Object(obj))?;
                // A read-only extension keeps the (empty) container the client wrote, as
                // normalisation does; its values stay the server's.
                let read_only = rt.extension(urn).is_some_and(|e| {
                    e.attributes
                        .iter()
                        .all(|a| a.mutability == Mutability::ReadOnly)
                });
                if read_only && value.is_some_and(Value::is_object) && !map.contains_key(urn) {
                    map.insert(urn.to_string(), Value::Object(Map::new()));
                }
                Ok(())
            }
        };
    }
    let (def, loc) = rt
        .resolve(path.attr.urn.as_deref(), &path.attr.name)
        .ok_or_else(|| Error::InvalidPath(format!("unknown attribute '{}'", path.attr)))?;
    if def.mutability == Mutability::ReadOnly {
        if explicit {
            return Err(Error::Mutability(format!("'{}' is readOnly", def.name)));
        }
        return Ok(()); // Okta sends `id` in no-path replaces.
    }
    let sub_name = path.attr.sub.as_ref().or(path.sub.as_ref());
    let sub_def = sub_name.and_then(|s| def.sub(s));
    if let Some(sd) = sub_def {
        if sd.mutability == Mutability::ReadOnly {
            if explicit {
                return Err(Error::Mutability(format!(
                    "'{}.{}' is readOnly",
                    def.name, sd.name
                )));
            }
            return Ok(());
        }
        if sd.mutability == Mutability::Immutable && op != OpKind::Add && path.filter.is_some() {
            return Err(Error::Mutability(format!(
                "'{}.{}' is immutable",
                def.name, sd.name
            )));
        }
    }
    if def.required && op == OpKind::Remove && sub_def.is_none() {
        return Err(Error::Mutability(format!(
            "'{}' is required and cannot be removed",
            def.name
        )));
    }
    let create = op != OpKind::Remove;
    let Some(target) = container(map, loc, create) else {
        return Ok(()); // removing from an absent extension
    };
    let result = match (&path.filter, sub_def) {
        (None, None) => apply_whole(target, def, op, value),
        (None, Some(sd)) => apply_sub_everywhere(target, def, sd, op, value),
        (Some(f), sd) => apply_filtered(target, def, f, sd, op, value),
    };
    // Drop an extension left empty.
    if let Location::Extension(urn) = loc
        && map
            .get(urn)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        map.remove(urn);
    }
    result
}

fn norm(def: &AttributeDef, value: Option<&Value>) -> Result<Option<Value>> {
    normalize_value(def, value.unwrap_or(&Value::Null), Source::Client)
}

/// Clears `primary` on every element but `keep` (RFC 7643 §2.4: at most one primary).
fn enforce_primary(items: &mut [Value], keep: usize) {
    for (i, item) in items.iter_mut().enumerate() {
        if i != keep
            && let Some(obj) = item.as_object_mut()
            && obj.get("primary") == Some(&Value::Bool(true))
        {
            obj.remove("primary");
        }
    }
}

fn last_primary(items: &[Value], touched: &[usize]) -> Option<usize> {
    touched
        .iter()
        .rev()
        .copied()
        .find(|&i| items.get(i).and_then(|v| v.get("primary")) == Some(&Value::Bool(true)))
}

fn merge_into(dst: &mut Map<String, Value>, src: Value) {
    if let Value::Object(src) = src {
        for (k, v) in src {
            dst.insert(k, v);
        }
    }
}

fn apply_whole(
    target: &mut Map<String, Value>,
    def: &AttributeDef,
    op: OpKind,
    value: Option<&Value>,
) -> Result<()> {
    match op {
        OpKind::Remove => {
            let Some(value) = value.filter(|v| !v.is_null()) else {
                target.remove(def.name);
                return Ok(());
            };
            if !def.multi_valued {
                target.remove(def.name);
                return Ok(());
            }
            // Entra ID: remove listed values ({"op":"Remove","path":"members","value":[{"value":"id"}]}).
            let Some(remove) = norm(def, Some(value))? else {
                return Ok(());
            };
            let remove = remove.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = target.get_mut(def.name) {
                items.retain(|item| !remove.iter().any(|r| same_value(def, item, r)));
                if items.is_empty() {
                    target.remove(def.name);
                }
            }
            Ok(())
        }
        OpKind::Add | OpKind::Replace => {
            let Some(v) = norm(def, value)? else {
                if op == OpKind::Replace {
                    target.remove(def.name);
                }
                return Ok(());
            };
            if def.multi_valued {
                let new_items = v.as_array().cloned().unwrap_or_default();
                let items = if op == OpKind::Add {
                    let mut items = match target.remove(def.name) {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    let mut touched = Vec::new();
                    for n in new_items {
                        match items.iter().position(|i| same_value(def, i, &n)) {
                            Some(pos) if def.ty == AttrType::Complex => {
                                if let Some(obj) = items[pos].as_object_mut() {
                                    merge_into(obj, n);
                                }
                                touched.push(pos);
                            }
                            Some(pos) => touched.push(pos),
                            None => {
                                items.push(n);
                                touched.push(items.len() - 1);
                            }
                        }
                    }
                    if let Some(keep) = last_primary(&items, &touched) {
                        enforce_primary(&mut items, keep);
                    }
                    items
                } else {
                    new_items
                };
                target.insert(def.name.to_string(), Value::Array(items));
            } else if def.ty == AttrType::Complex {
                // RFC 7644 §3.5.2.3: sub-attributes not given are left unchanged.
                match target.get_mut(def.name).and_then(Value::as_object_mut) {
                    Some(existing) => merge_into(existing, v),
                    None => {
                        target.insert(def.name.to_string(), v);
                    }
                }
            } else {
                target.insert(def.name.to_string(), v);
            }
            Ok(())
        }
    }
}

/// Two values of a multi-valued attribute are "the same" when their `value` sub-attributes
/// match (complex), or when they are equal (simple).
fn same_value(def: &AttributeDef, a: &Value, b: &Value) -> bool {
    if def.ty != AttrType::Complex {
        return a == b;
    }
    match (a.get("value"), b.get("value"), def.sub("value")) {
        (Some(x), Some(y), Some(vd)) => match (x.as_str(), y.as_str()) {
            (Some(x), Some(y)) => filter::fold(vd, x) == filter::fold(vd, y),
            _ => x == y,
        },
        _ => a == b,
    }
}

fn apply_sub_everywhere(
    target: &mut Map<String, Value>,
    def: &AttributeDef,
    sd: &AttributeDef,
    op: OpKind,
    value: Option<&Value>,
) -> Result<()> {
    let new = if op == OpKind::Remove {
        None
    } else {
        norm(sd, value)?
    };
    if def.multi_valued {
        let mut touched = Vec::new();
        match target.get_mut(def.name) {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Some(obj) = item.as_object_mut() {
                        set_or_remove(obj, sd.name, new.clone());
                        touched.push(i);
                    }
                }
                items.retain(|i| i.as_object().is_none_or(|o| !o.is_empty()));
                if sd.name == "primary"
                    && let Some(keep) = last_primary(items, &touched)
                {
                    enforce_primary(items, keep);
                }
            }
            _ => {
                if let Some(v) = new {
                    let mut obj = Map::new();
                    obj.insert(sd.name.to_string(), v);
                    target.insert(def.name.to_string(), Value::Array(vec![Value::Object(obj)]));
                }
            }
        }
        if target
            .get(def.name)
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            target.remove(def.name);
        }
        return Ok(());
    }
    match target.get_mut(def.name).and_then(Value::as_object_mut) {
        Some(obj) => {
            set_or_remove(obj, sd.name, new);
            if obj.is_empty() {
                target.remove(def.name);
            }
        }
        None => {
            if let Some(v) = new {
                let mut obj = Map::new();
                obj.insert(sd.name.to_string(), v);
                target.insert(def.name.to_string(), Value::Object(obj));
            }
        }
    }
    Ok(())
}

fn set_or_remove(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            obj.remove(key);
        }
    }
}

/// The sub-attributes an `eq` conjunction pins down, used to create the value a filter names.
fn eq_seed(f: &Filter, def: &AttributeDef, out: &mut Map<String, Value>) -> bool {
    match f {
        Filter::Compare(p, CompareOp::Eq, v) => {
            let Some(sd) = def.sub(&p.name) else {
                return false;
            };
            let json = match v {
                CompValue::Str(s) => Value::String(s.clone()),
                CompValue::Bool(b) => Value::Bool(*b),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Null => return false,
            };
            out.insert(sd.name.to_string(), json);
            true
        }
        Filter::And(l, r) => eq_seed(l, def, out) && eq_seed(r, def, out),
        _ => false,
    }
}

fn apply_filtered(
    target: &mut Map<String, Value>,
    def: &'static AttributeDef,
    f: &Filter,
    sd: Option<&AttributeDef>,
    op: OpKind,
    value: Option<&Value>,
) -> Result<()> {
    let new_sub = match (op, sd) {
        (OpKind::Remove, _) => None,
        (_, Some(sd)) => Some(norm(sd, value)?),
        (_, None) => None,
    };
    let new_whole = match (op, sd) {
        (OpKind::Add | OpKind::Replace, None) => {
            let single = AttributeDef {
                multi_valued: false,
                ..def.clone()
            };
            Some(norm(&single, value)?)
        }
        _ => None,
    };
    let mut items = match target.remove(def.name) {
        Some(Value::Array(a)) => a,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    let matched: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| f.matches_in(Scope::Complex(def), item))
        .map(|(i, _)| i)
        .collect();
    let mut touched = Vec::new();
    if matched.is_empty() {
        if op != OpKind::Remove {
            let mut seed = Map::new();
            if !eq_seed(f, def, &mut seed) {
                target.insert(def.name.to_string(), Value::Array(items));
                return Err(Error::NoTarget(format!(
                    "no value of '{}' matches the filter '{f}'",
                    def.name
                )));
            }
            match (sd, new_sub, new_whole) {
                (Some(sd), Some(Some(v)), _) => {
                    seed.insert(sd.name.to_string(), v);
                }
                (None, _, Some(Some(Value::Object(obj)))) => seed.extend(obj),
                _ => {}
            }
            items.push(Value::Object(seed));
            touched.push(items.len() - 1);
        }
    } else {
        for &i in matched.iter().rev() {
            match (op, sd) {
                (OpKind::Remove, None) => {
                    items.remove(i);
                }
                (OpKind::Remove, Some(sd)) => {
                    if let Some(obj) = items[i].as_object_mut() {
                        obj.remove(sd.name);
                        if obj.is_empty() {
                            items.remove(i);
                        }
                    }
                }
                (_, Some(sd)) => {
                    if let Some(obj) = items[i].as_object_mut() {
                        set_or_remove(obj, sd.name, new_sub.clone().flatten());
                    }
                    touched.push(i);
                }
                (_, None) => {
                    if let (Some(obj), Some(Some(v))) =
                        (items[i].as_object_mut(), new_whole.clone())
                    {
                        merge_into(obj, v);
                    }
                    touched.push(i);
                }
            }
        }
    }
    if let Some(keep) = last_primary(&items, &touched) {
        enforce_primary(&mut items, keep);
    }
    if !items.is_empty() {
        target.insert(def.name.to_string(), Value::Array(items));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{GROUP_TYPE, USER_TYPE};
    use serde_json::json;

    fn run(rt: &'static ResourceType, doc: Value, ops: Value) -> Result<Value> {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        let ops = parse_request(rt, &body)?;
        let mut doc = doc;
        apply(rt, &mut doc, &ops)?;
        Ok(doc)
    }

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "alice", "active": true,
            "name": {"givenName": "Alice", "familyName": "A"},
            "emails": [{"value": "a@work", "type": "work", "primary": true}, {"value": "a@home", "type": "home"}]
        })
    }

    #[test]
    fn entra_deactivate_with_string_boolean() {
        let out = run(
            &USER_TYPE,
            user(),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .unwrap();
        assert_eq!(out["active"], json!(false));
        let out = run(
            &USER_TYPE,
            user(),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .unwrap();
        assert_eq!(out["active"], json!(false));
    }

    #[test]
    fn entra_no_path_replace_with_path_keys() {
        let out = run(
            &USER_TYPE,
            user(),
            json!([{"op": "Replace", "value": {
                "name.givenName": "Alicia",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D",
                "emails[type eq \"work\"].value": "alicia@work",
                "id": "ignored"
            }}]),
        )
        .unwrap();
        assert_eq!(
            out["name"],
            json!({"givenName": "Alicia", "familyName": "A"})
        );
        assert_eq!(
            out["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            json!("R&D")
        );
        assert_eq!(out["emails"][0]["value"], json!("alicia@work"));
    }

    #[test]
    fn manager_as_plain_string() {
        let out = run(&USER_TYPE, user(), json!([{"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "boss-id"}])).unwrap();
        assert_eq!(
            out["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["manager"],
            json!({"value": "boss-id"})
        );
    }

    #[test]
    fn filtered_paths() {
        let out = run(&USER_TYPE, user(), json!([{"op": "replace", "path": "emails[type eq \"home\"].value", "value": "new@home"}])).unwrap();
        assert_eq!(out["emails"][1]["value"], json!("new@home"));
        let out = run(
            &USER_TYPE,
            user(),
            json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
        )
        .unwrap();
        assert_eq!(out["emails"].as_array().unwrap().len(), 1);
        let out = run(
            &USER_TYPE,
            user(),
            json!([{"op": "add", "path": "emails[type eq \"other\"].value", "value": "o@x"}]),
        )
        .unwrap();
        assert_eq!(out["emails"][2], json!({"type": "other", "value": "o@x"}));
        let e = run(
            &USER_TYPE,
            user(),
            json!([{"op": "replace", "path": "emails[value co \"zzz\"].type", "value": "x"}]),
        )
        .unwrap_err();
        assert!(matches!(e, Error::NoTarget(_)));
        let out = run(
            &USER_TYPE,
            user(),
            json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
        )
        .unwrap();
        assert_eq!(out["emails"][0].get("primary"), None);
        assert_eq!(out["emails"][1]["primary"], json!(true));
    }

    #[test]
    fn group_members_add_and_entra_remove_list() {
        let g = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "G", "members": [{"value": "u1"}, {"value": "u2"}]});
        let out = run(
            &GROUP_TYPE,
            g.clone(),
            json!([{"op": "Add", "path": "members", "value": [{"value": "u3"}, {"value": "u1"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"].as_array().unwrap().len(), 3);
        let out = run(
            &GROUP_TYPE,
            g.clone(),
            json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u2"}]));
        let out = run(
            &GROUP_TYPE,
            g.clone(),
            json!([{"op": "remove", "path": "members[value eq \"u2\"]"}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "u1"}]));
        let out = run(&GROUP_TYPE, g, json!([{"op": "remove", "path": "members"}])).unwrap();
        assert!(out.get("members").is_none());
    }

    #[test]
    fn errors() {
        assert!(matches!(
            run(&USER_TYPE, user(), json!([{"op": "remove"}])),
            Err(Error::NoTarget(_))
        ));
        assert!(matches!(
            run(
                &USER_TYPE,
                user(),
                json!([{"op": "replace", "path": "groups", "value": []}])
            ),
            Err(Error::Mutability(_))
        ));
        assert!(matches!(
            run(
                &USER_TYPE,
                user(),
                json!([{"op": "replace", "path": "nosuch", "value": 1}])
            ),
            Err(Error::InvalidPath(_))
        ));
        assert!(matches!(
            run(
                &USER_TYPE,
                user(),
                json!([{"op": "replace", "path": "emails[type eq", "value": 1}])
            ),
            Err(Error::InvalidPath(_) | Error::InvalidFilter(_))
        ));
        assert!(matches!(
            run(
                &USER_TYPE,
                user(),
                json!([{"op": "jump", "path": "active"}])
            ),
            Err(Error::InvalidSyntax(_))
        ));
        assert!(matches!(
            run(
                &USER_TYPE,
                user(),
                json!([{"op": "replace", "path": "active", "value": "maybe"}])
            ),
            Err(Error::InvalidValue(_))
        ));
        assert!(matches!(
            run(
                &USER_TYPE,
                user(),
                json!([{"op": "remove", "path": "userName"}])
            ),
            Err(Error::Mutability(_))
        ));
    }

    #[test]
    fn immutable_member_values_cannot_be_rewritten() {
        let g = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "G", "members": [{"value": "u1"}]});
        let e = run(
            &GROUP_TYPE,
            g.clone(),
            json!([{"op": "replace", "path": "members[value eq \"u1\"].value", "value": "u2"}]),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Mutability(_)), "{e:?}");
        // Adding and removing members is not a rewrite.
        assert!(
            run(
                &GROUP_TYPE,
                g,
                json!([{"op": "add", "path": "members", "value": [{"value": "u2"}]}])
            )
            .is_ok()
        );
    }

    #[test]
    fn noop_patch_leaves_document_equal() {
        let out = run(
            &USER_TYPE,
            user(),
            json!([{"op": "replace", "path": "active", "value": true}]),
        )
        .unwrap();
        assert_eq!(out, user());
    }
}
