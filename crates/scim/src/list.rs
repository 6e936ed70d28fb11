//! List and search requests (RFC 7644 §3.4.2, §3.4.3) and cursor pagination (RFC 9865).
//!
//! Index pagination uses `startIndex` (1-based) and `count`; `count=0` asks only for
//! `totalResults`. Cursor pagination starts with `cursor` (empty) and follows `nextCursor`.
//! A cursor is opaque to clients; here it encodes the position after the last resource
//! returned (sort key and id), so pages stay consistent while resources are added or removed.

use std::cmp::Ordering;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::filter::{self, AttrPath, Filter, get_ci};
use crate::resource::Projection;
use crate::schema::{AttrType, LIST_RESPONSE_SCHEMA, ResourceType};

/// Page size used when `count` is not given.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// Largest page a client can ask for; larger `count`s are lowered to it (RFC 7644 §3.4.2.4).
pub const MAX_PAGE_SIZE: usize = 1000;

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Smallest first (the default).
    #[default]
    Ascending,
    /// Largest first.
    Descending,
}

/// How the client pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// `startIndex` (1-based).
    Index(usize),
    /// RFC 9865 cursor: `None` for the first page, else the position after which to continue.
    Cursor(Option<CursorPos>),
}

/// The position a cursor encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorPos {
    /// The sort key of the last resource returned (absent when sorting by id).
    pub key: Option<SortKey>,
    /// The id of the last resource returned.
    pub id: String,
}

/// A comparable sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortKey {
    /// Booleans sort false < true.
    Bool(bool),
    /// Numbers, as ordered bits of an f64.
    Number(i64),
    /// Text, folded when the attribute is not caseExact; date-times in UTC fixed-width form.
    Text(String),
}

impl CursorPos {
    /// Encodes the position as an opaque cursor string (URL-safe).
    pub fn encode(&self) -> String {
        let key = match &self.key {
            None => Value::Null,
            Some(SortKey::Bool(b)) => json!({"b": b}),
            Some(SortKey::Number(n)) => json!({"n": n}),
            Some(SortKey::Text(t)) => json!({"t": t}),
        };
        let raw = json!([key, self.id]).to_string();
        raw.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Decodes a cursor produced by [`CursorPos::encode`].
    pub fn decode(s: &str) -> Result<CursorPos> {
        let bad = || {
            Error::InvalidCursor(format!(
                "cursor '{}' is not valid",
                s.chars().take(40).collect::<String>()
            ))
        };
        if !s.len().is_multiple_of(2) || s.len() > 8192 {
            return Err(bad());
        }
        let bytes: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad())?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let arr = v.as_array().filter(|a| a.len() == 2).ok_or_else(bad)?;
        let id = arr[1].as_str().ok_or_else(bad)?.to_string();
        let key = match &arr[0] {
            Value::Null => None,
            Value::Object(o) => Some(if let Some(b) = o.get("b").and_then(Value::as_bool) {
                SortKey::Bool(b)
            } else if let Some(n) = o.get("n").and_then(Value::as_i64) {
                SortKey::Number(n)
            } else if let Some(t) = o.get("t").and_then(Value::as_str) {
                SortKey::Text(t.to_string())
            } else {
                return Err(bad());
            }),
            _ => return Err(bad()),
        };
        Ok(CursorPos { key, id })
    }
}

/// A parsed list or search request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// The filter, validated against the resource type.
    pub filter: Option<Filter>,
    /// The sort attribute.
    pub sort_by: Option<AttrPath>,
    /// The sort direction.
    pub sort_order: SortOrder,
    /// Paging mode and position.
    pub paging: Paging,
    /// Page size (0 = totals only).
    pub count: usize,
    /// Attribute projection.
    pub projection: Projection,
}

/// Raw parameters, from a query string or a SearchRequest body.
#[derive(Debug, Clone, Default)]
pub struct RawListParams {
    /// `filter`
    pub filter: Option<String>,
    /// `sortBy`
    pub sort_by: Option<String>,
    /// `sortOrder`
    pub sort_order: Option<String>,
    /// `startIndex`
    pub start_index: Option<String>,
    /// `count`
    pub count: Option<String>,
    /// `cursor`
    pub cursor: Option<String>,
    /// `attributes`
    pub attributes: Option<String>,
    /// `excludedAttributes`
    pub excluded_attributes: Option<String>,
}

impl RawListParams {
    /// Collects parameters from query pairs; names are case-insensitive.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> RawListParams {
        let mut p = RawListParams::default();
        for (k, v) in pairs {
            let slot = match k.to_ascii_lowercase().as_str() {
                "filter" => &mut p.filter,
                "sortby" => &mut p.sort_by,
                "sortorder" => &mut p.sort_order,
                "startindex" => &mut p.start_index,
                "count" => &mut p.count,
                "cursor" => &mut p.cursor,
                "attributes" => &mut p.attributes,
                "excludedattributes" => &mut p.excluded_attributes,
                _ => continue,
            };
            *slot = Some(v.to_string());
        }
        p
    }

    /// Collects parameters from a SearchRequest body (RFC 7644 §3.4.3).
    pub fn from_search_body(body: &Value) -> Result<RawListParams> {
        if !body.is_object() {
            return Err(Error::InvalidSyntax(
                "the search request must be a JSON object".into(),
            ));
        }
        let text = |name: &str| -> Result<Option<String>> {
            match get_ci(body, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(Some(
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                )),
                Some(_) => Err(Error::InvalidSyntax(format!("'{name}' has the wrong type"))),
            }
        };
        Ok(RawListParams {
            filter: text("filter")?,
            sort_by: text("sortBy")?,
            sort_order: text("sortOrder")?,
            start_index: text("startIndex")?,
            count: text("count")?,
            cursor: text("cursor")?,
            attributes: text("attributes")?,
            excluded_attributes: text("excludedAttributes")?,
        })
    }

    /// Validates the parameters against a resource type.
    pub fn parse(&self, rt: &'static ResourceType) -> Result<ListQuery> {
        let filter = match self.filter.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                let f = filter::parse(s)?;
                f.validate(rt)?;
                Some(f)
            }
        };
        let sort_by = match self.sort_by.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                let p = AttrPath::parse(s)
                    .map_err(|_| Error::InvalidParameter(format!("invalid sortBy '{s}'")))?;
                let r = filter::resolve(rt, &p).map_err(|_| {
                    Error::InvalidParameter(format!("unknown sortBy attribute '{s}'"))
                })?;
                if r.target().ty == AttrType::Complex {
                    return Err(Error::InvalidParameter(format!(
                        "cannot sort by complex attribute '{s}'"
                    )));
                }
                Some(p)
            }
        };
        let sort_order = match self
            .sort_order
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("ascending") => SortOrder::Ascending,
            Some("descending") => SortOrder::Descending,
            Some(other) => {
                return Err(Error::InvalidParameter(format!(
                    "sortOrder '{other}' must be ascending or descending"
                )));
            }
        };
        let number = |name: &str, v: &Option<String>| -> Result<Option<i64>> {
            v.as_deref()
                .map(|s| {
                    s.trim().parse::<i64>().map_err(|_| {
                        Error::InvalidParameter(format!("{name} must be an integer, got '{s}'"))
                    })
                })
                .transpose()
        };
        // RFC 7644 §3.4.2.4: values below 1 are read as 1 (startIndex) and 0 (count).
        let start = number("startIndex", &self.start_index)?.unwrap_or(1).max(1) as usize;
        let count = number("count", &self.count)?
            .map(|c| c.clamp(0, MAX_PAGE_SIZE as i64) as usize)
            .unwrap_or(DEFAULT_PAGE_SIZE);
        let paging = match &self.cursor {
            Some(c) => {
                if self.start_index.is_some() {
                    return Err(Error::InvalidParameter(
                        "cursor and startIndex cannot be used together".into(),
                    ));
                }
                if c.is_empty() {
                    Paging::Cursor(None)
                } else {
                    Paging::Cursor(Some(CursorPos::decode(c)?))
                }
            }
            None => Paging::Index(start),
        };
        let projection = Projection::parse(
            rt,
            self.attributes.as_deref(),
            self.excluded_attributes.as_deref(),
        )?;
        Ok(ListQuery {
            filter,
            sort_by,
            sort_order,
            paging,
            count,
            projection,
        })
    }
}

/// The sort key of a resource for a sort attribute (RFC 7644 §3.4.2.3: multi-valued
/// attributes sort by their primary value, else the first).
pub fn sort_key(rt: &'static ResourceType, resource: &Value, path: &AttrPath) -> Option<SortKey> {
    let r = filter::resolve(rt, path).ok()?;
    let top = match r.location {
        crate::schema::Location::Extension(urn) => {
            get_ci(resource, urn).and_then(|e| get_ci(e, r.top.name))
        }
        crate::schema::Location::Core => get_ci(resource, r.top.name),
    }?;
    let item = match top {
        Value::Array(items) => items
            .iter()
            .find(|i| i.get("primary") == Some(&Value::Bool(true)))
            .or_else(|| items.first())?,
        other => other,
    };
    let value = match r.sub {
        Some(sub) if item.is_object() => get_ci(item, sub.name)?,
        _ => item,
    };
    let def = r.target();
    Some(match value {
        Value::Bool(b) => SortKey::Bool(*b),
        Value::Number(n) => SortKey::Number(order_f64(n.as_f64()?)),
        Value::String(s) if def.ty == AttrType::DateTime => SortKey::Text(
            filter::parse_datetime(s)
                .map(crate::sql::format_timestamp)
                .unwrap_or_else(|| s.clone()),
        ),
        Value::String(s) => SortKey::Text(filter::fold(def, s)),
        _ => return None,
    })
}

fn order_f64(f: f64) -> i64 {
    let bits = f.to_bits() as i64;
    if bits < 0 { bits ^ i64::MAX } else { bits }
}

/// Orders two resources: by key, then by id. RFC 7644 §3.4.2.3: resources without a value
/// are ordered last when ascending and first when descending.
pub fn compare_keys(
    a: (&Option<SortKey>, &str),
    b: (&Option<SortKey>, &str),
    order: SortOrder,
) -> Ordering {
    let by_key = match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let by_key = if order == SortOrder::Descending {
        by_key.reverse()
    } else {
        by_key
    };
    by_key.then_with(|| a.1.cmp(b.1))
}

/// Builds a ListResponse body.
pub fn list_response(
    total: usize,
    start_index: Option<usize>,
    resources: Vec<Value>,
    next_cursor: Option<String>,
    previous_cursor: Option<String>,
) -> Value {
    let mut body = json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "itemsPerPage": resources.len(),
    });
    if let Some(s) = start_index {
        body["startIndex"] = json!(s);
    }
    if let Some(c) = next_cursor {
        body["nextCursor"] = json!(c);
    }
    if let Some(c) = previous_cursor {
        body["previousCursor"] = json!(c);
    }
    body["Resources"] = Value::Array(resources);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::USER_TYPE;

    #[test]
    fn cursor_round_trip_and_garbage() {
        for key in [
            None,
            Some(SortKey::Text("a\"b".into())),
            Some(SortKey::Number(-3)),
            Some(SortKey::Bool(true)),
        ] {
            let c = CursorPos {
                key,
                id: "0190-x".into(),
            };
            assert_eq!(CursorPos::decode(&c.encode()).unwrap(), c);
        }
        for bad in ["zz", "abc", "00", "5b5d"] {
            assert!(
                matches!(CursorPos::decode(bad), Err(Error::InvalidCursor(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn params() {
        let q = RawListParams::from_pairs([
            ("Count", "5000"),
            ("startIndex", "-3"),
            ("sortBy", "name.familyName"),
        ])
        .parse(&USER_TYPE)
        .unwrap();
        assert_eq!(q.count, MAX_PAGE_SIZE);
        assert_eq!(q.paging, Paging::Index(1));
        assert!(
            RawListParams::from_pairs([("sortBy", "nosuch")])
                .parse(&USER_TYPE)
                .is_err()
        );
        assert!(
            RawListParams::from_pairs([("count", "x")])
                .parse(&USER_TYPE)
                .is_err()
        );
        assert!(
            RawListParams::from_pairs([("filter", "userName eq")])
                .parse(&USER_TYPE)
                .is_err()
        );
        let q = RawListParams::from_pairs([("cursor", "")])
            .parse(&USER_TYPE)
            .unwrap();
        assert_eq!(q.paging, Paging::Cursor(None));
    }

    #[test]
    fn number_order_is_preserved() {
        let xs = [-10.5, -1.0, 0.0, 0.5, 3.0, 1e9];
        for w in xs.windows(2) {
            assert!(order_f64(w[0]) < order_f64(w[1]));
        }
    }
}
