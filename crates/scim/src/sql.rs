//! Translation of filters to SQL over the columns a store indexes.
//!
//! The store says which attributes it keeps in columns ([`ColumnMap`]). Each filter node
//! translates to a condition that is either *exact* (the SQL decides the node) or
//! *a superset* (SQL narrows the candidates and the caller must evaluate the filter on them).
//! Nothing is ever silently ignored: a node the SQL cannot express is `TRUE` in SQL and the
//! result is marked inexact, so the caller re-checks every row with [`crate::filter::Filter::matches`].
//!
//! Conditions are written so they are never SQL `NULL` (`col IS NOT NULL AND col = $1`),
//! which keeps `NOT` faithful to the in-memory semantics where an absent attribute does not
//! equal anything. Placeholders are `$1, $2, …`, which both SQLite and PostgreSQL accept.

use crate::filter::{self, AttrPath, CompValue, CompareOp, Filter, Resolved};
use crate::schema::{AttrType, ResourceType};

/// How a column stores its attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text; `folded` columns hold the lower-cased value (for attributes that are not caseExact).
    Text {
        /// Whether the column holds `to_lowercase()` of the value.
        folded: bool,
    },
    /// A boolean stored as integer 0/1.
    Bool,
    /// A date-time stored as text in [`format_timestamp`] form, so text order is time order.
    Timestamp,
}

/// A column (or a correlated sub-query over a side table) holding one attribute.
#[derive(Debug, Clone)]
pub struct Column {
    /// The SQL expression of the column, e.g. `u.user_name_lc`.
    pub expr: String,
    /// How it stores the value.
    pub kind: ColumnKind,
    /// For multi-valued attributes kept in a side table: an `EXISTS (… AND {})` template
    /// whose `{}` receives the condition on `expr`.
    pub exists: Option<String>,
}

/// The columns a store offers for a resource type.
pub trait ColumnMap {
    /// The column for a resolved attribute path, if indexed.
    fn column(&self, path: &Resolved) -> Option<Column>;
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
}

/// A translated filter.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlWhere {
    /// The condition, `TRUE` (written `1=1`) if nothing could be translated.
    pub sql: String,
    /// Parameters for `$first…`.
    pub params: Vec<SqlParam>,
    /// Whether the SQL decides the filter exactly (no in-memory re-check needed).
    pub exact: bool,
}

/// The fixed-width UTC text form of timestamps in columns: text order equals time order.
pub fn format_timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Translates a validated filter. Parameters are numbered from `first_param`.
pub fn translate(
    f: &Filter,
    rt: &'static ResourceType,
    map: &dyn ColumnMap,
    first_param: usize,
) -> SqlWhere {
    let mut t = Translator {
        rt,
        map,
        params: Vec::new(),
        first: first_param,
    };
    match t.node(f) {
        Some((sql, exact)) => SqlWhere {
            sql,
            params: t.params,
            exact,
        },
        None => SqlWhere {
            sql: "1=1".into(),
            params: Vec::new(),
            exact: false,
        },
    }
}

struct Translator<'a> {
    rt: &'static ResourceType,
    map: &'a dyn ColumnMap,
    params: Vec<SqlParam>,
    first: usize,
}

impl Translator<'_> {
    fn bind(&mut self, p: SqlParam) -> String {
        self.params.push(p);
        format!("${}", self.first + self.params.len() - 1)
    }

    /// `None`: not expressible (TRUE, inexact). `Some((sql, exact))` otherwise.
    fn node(&mut self, f: &Filter) -> Option<(String, bool)> {
        match f {
            Filter::And(l, r) => {
                let mark = self.params.len();
                let l = self.node(l);
                let r = self.node(r);
                match (l, r) {
                    (Some((ls, le)), Some((rs, re))) => {
                        Some((format!("({ls} AND {rs})"), le && re))
                    }
                    (Some((s, _)), None) | (None, Some((s, _))) => Some((s, false)),
                    (None, None) => {
                        self.params.truncate(mark);
                        None
                    }
                }
            }
            Filter::Or(l, r) => {
                let mark = self.params.len();
                match (self.node(l), self.node(r)) {
                    (Some((ls, le)), Some((rs, re))) => Some((format!("({ls} OR {rs})"), le && re)),
                    _ => {
                        self.params.truncate(mark);
                        None
                    }
                }
            }
            Filter::Not(inner) => {
                let mark = self.params.len();
                match self.node(inner) {
                    Some((s, true)) => Some((format!("(NOT {s})"), true)),
                    _ => {
                        self.params.truncate(mark);
                        None
                    }
                }
            }
            Filter::ValuePath(p, inner) => {
                // `emails[value eq "x"]` is `emails.value eq "x"`; conjunctions over one value
                // cannot be split across side-table rows, so only single tests translate.
                let as_sub = |q: &AttrPath| AttrPath {
                    urn: p.urn.clone(),
                    name: p.name.clone(),
                    sub: Some(q.name.clone()),
                };
                match &**inner {
                    Filter::Compare(q, op, v) => {
                        self.node(&Filter::Compare(as_sub(q), *op, v.clone()))
                    }
                    Filter::Present(q) => self.node(&Filter::Present(as_sub(q))),
                    // One value with both properties implies some value with each: the
                    // conjunction of the parts is a superset, which memory then narrows.
                    // So `emails[type eq "work"].value eq "x"` is answered from the email index.
                    Filter::And(l, r) => {
                        let split = Filter::And(
                            Box::new(Filter::ValuePath(p.clone(), l.clone())),
                            Box::new(Filter::ValuePath(p.clone(), r.clone())),
                        );
                        self.node(&split).map(|(sql, _)| (sql, false))
                    }
                    // Some value matches either side exactly when some value matches one.
                    Filter::Or(l, r) => self.node(&Filter::Or(
                        Box::new(Filter::ValuePath(p.clone(), l.clone())),
                        Box::new(Filter::ValuePath(p.clone(), r.clone())),
                    )),
                    _ => None,
                }
            }
            Filter::Present(p) => {
                let col = self.column(p)?;
                let cond = match col.kind {
                    ColumnKind::Text { .. } => {
                        format!("({e} IS NOT NULL AND {e} <> '')", e = col.expr)
                    }
                    _ => format!("({} IS NOT NULL)", col.expr),
                };
                Some((wrap_exists(&col, cond, false), true))
            }
            Filter::Compare(p, op, v) => self.compare(p, *op, v),
        }
    }

    fn column(&self, p: &AttrPath) -> Option<Column> {
        let r = filter::resolve(self.rt, p).ok()?;
        self.map.column(&r)
    }

    fn compare(&mut self, p: &AttrPath, op: CompareOp, v: &CompValue) -> Option<(String, bool)> {
        let resolved = filter::resolve(self.rt, p).ok()?;
        let col = self.map.column(&resolved)?;
        let def = resolved.target();
        match (op, v) {
            (CompareOp::Eq, CompValue::Null) => {
                let present = self.node(&Filter::Present(p.clone()))?;
                return Some((format!("(NOT {})", present.0), true));
            }
            (CompareOp::Ne, CompValue::Null) => return self.node(&Filter::Present(p.clone())),
            (CompareOp::Ne, _) => {
                let eq = self.compare(p, CompareOp::Eq, v)?;
                return Some((format!("(NOT {})", eq.0), eq.1));
            }
            _ => {}
        }
        let e = &col.expr;
        let cond = match col.kind {
            ColumnKind::Bool => {
                let b = match v {
                    CompValue::Bool(b) => *b,
                    CompValue::Str(s) => s.eq_ignore_ascii_case("true"),
                    _ => return None,
                };
                let ph = self.bind(SqlParam::Int(i64::from(b)));
                format!("({e} IS NOT NULL AND {e} = {ph})")
            }
            ColumnKind::Timestamp => {
                let CompValue::Str(s) = v else { return None };
                if matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) {
                    return None;
                }
                let t = filter::parse_datetime(s)?;
                if t.nanosecond() % 1000 != 0 {
                    return None; // finer than the column keeps
                }
                let ph = self.bind(SqlParam::Text(format_timestamp(t)));
                format!("({e} IS NOT NULL AND {e} {} {ph})", sql_op(op)?)
            }
            ColumnKind::Text { folded } => {
                if def.ty != AttrType::String && def.ty != AttrType::Reference {
                    return None;
                }
                let CompValue::Str(s) = v else { return None };
                // A folded column only answers case-insensitive questions and vice versa.
                if folded == def.case_exact {
                    return None;
                }
                let s = filter::fold(def, s);
                match op {
                    CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
                        let esc = escape_like(&s);
                        let pattern = match op {
                            CompareOp::Co => format!("%{esc}%"),
                            CompareOp::Sw => format!("{esc}%"),
                            _ => format!("%{esc}"),
                        };
                        let ph = self.bind(SqlParam::Text(pattern));
                        format!("({e} IS NOT NULL AND {e} LIKE {ph} ESCAPE '\\')")
                    }
                    _ => {
                        let ph = self.bind(SqlParam::Text(s));
                        format!("({e} IS NOT NULL AND {e} {} {ph})", sql_op(op)?)
                    }
                }
            }
        };
        Some((wrap_exists(&col, cond, false), true))
    }
}

fn wrap_exists(col: &Column, cond: String, _negate: bool) -> String {
    match &col.exists {
        Some(template) => template.replacen("{}", &cond, 1),
        None => cond,
    }
}

fn sql_op(op: CompareOp) -> Option<&'static str> {
    Some(match op {
        CompareOp::Eq => "=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        _ => return None,
    })
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::parse;
    use crate::schema::USER_TYPE;

    struct Users;
    impl ColumnMap for Users {
        fn column(&self, r: &Resolved) -> Option<Column> {
            let t = r.target();
            let (expr, kind, exists) = match (r.top.name, r.sub.map(|s| s.name)) {
                ("userName", None) => ("u.user_name_lc", ColumnKind::Text { folded: true }, None),
                ("externalId", None) => ("u.external_id", ColumnKind::Text { folded: false }, None),
                ("active", None) => ("u.active", ColumnKind::Bool, None),
                ("meta", Some("lastModified")) => ("u.last_modified", ColumnKind::Timestamp, None),
                ("emails", Some("value")) => (
                    "e.value_lc",
                    ColumnKind::Text { folded: true },
                    Some("EXISTS (SELECT 1 FROM emails e WHERE e.user_id = u.id AND {})"),
                ),
                _ => return None,
            };
            let _ = t;
            Some(Column {
                expr: expr.into(),
                kind,
                exists: exists.map(str::to_string),
            })
        }
    }

    fn tr(s: &str) -> SqlWhere {
        let f = parse(s).unwrap();
        f.validate(&USER_TYPE).unwrap();
        translate(&f, &USER_TYPE, &Users, 2)
    }

    #[test]
    fn exact_translations() {
        let w = tr(r#"userName eq "Alice""#);
        assert_eq!(
            w.sql,
            "(u.user_name_lc IS NOT NULL AND u.user_name_lc = $2)"
        );
        assert_eq!(w.params, vec![SqlParam::Text("alice".into())]);
        assert!(w.exact);
        let w = tr(r#"emails[value sw "a_"] or active eq false"#);
        assert!(w.exact);
        assert!(w.sql.contains("EXISTS"), "{}", w.sql);
        assert_eq!(
            w.params,
            vec![SqlParam::Text("a\\_%".into()), SqlParam::Int(0)]
        );
        let w = tr(r#"meta.lastModified gt "2026-01-01T01:00:00+01:00""#);
        assert_eq!(
            w.params,
            vec![SqlParam::Text("2026-01-01T00:00:00.000000Z".into())]
        );
        assert!(tr(r#"not (externalId eq "x")"#).exact);
    }

    #[test]
    fn inexact_is_never_ignored() {
        let w = tr(r#"userName eq "a" and title co "x""#);
        assert!(!w.exact);
        assert_eq!(w.params.len(), 1);
        let w = tr(r#"userName eq "a" or title co "x""#);
        assert!(!w.exact);
        assert_eq!(w.sql, "1=1");
        assert!(w.params.is_empty());
        let w = tr(r#"not (userName eq "a" and title co "x")"#);
        assert_eq!(w.sql, "1=1");
        assert!(!w.exact);
    }

    #[test]
    fn a_value_path_conjunction_narrows_by_its_indexed_part() {
        // Entra ID's email lookup: the index finds the candidates, memory checks the type.
        let w = tr(r#"emails[type eq "work"].value eq "A@b.c""#);
        assert!(!w.exact);
        assert!(w.sql.contains("EXISTS"), "{}", w.sql);
        assert_eq!(w.params, vec![SqlParam::Text("a@b.c".into())]);
        // Two parts that each translate still may hold on different values: not exact.
        let w = tr(r#"emails[value sw "a" and value ew ".c"]"#);
        assert!(!w.exact);
        assert_eq!(w.params.len(), 2);
        let w = tr(r#"emails[value eq "a@b.c" or value eq "d@e.f"]"#);
        assert!(w.exact);
        assert_eq!(w.params.len(), 2);
        let w = tr(r#"emails[value eq "a@b.c" or type eq "work"]"#);
        assert_eq!(w.sql, "1=1");
        assert!(w.params.is_empty());
    }
}
