//! Keyset (cursor) pagination shared by every list.
//!
//! A page is ordered by a list of sort keys closed by `id`, so every row has
//! a unique position. A cursor carries the sort values of one row; the next
//! page starts strictly after it, so rows inserted meanwhile never shift or
//! repeat what a client has already seen (as OFFSET would).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func, SimpleExpr};
use sea_orm::{DatabaseBackend, EntityTrait, Order, QueryTrait, Select, Statement, Value};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// One sort value as it travels inside a cursor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortValue {
    Int(i64),
    Float(f64),
    Text(String),
}

impl SortValue {
    pub fn time(t: &DateTime<Utc>) -> Self {
        Self::Int(t.timestamp_micros())
    }

    pub fn date(d: &NaiveDate) -> Self {
        Self::Text(d.to_string())
    }
}

/// What a sort value is, so that a cursor's JSON turns back into a typed SQL value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKind {
    Int,
    Float,
    Text,
    /// Text in alphabetical order whatever its case ("acme" next to "ACME",
    /// as names typed by people and names imported in capitals sort
    /// together): the key's expression is [`fold`]ed, and a cursor keeps the
    /// text as stored and is folded in SQL too, so both sides of a comparison
    /// are folded by the same function.
    FoldedText,
    /// A UTC timestamp, carried as microseconds since the epoch.
    Time,
    Date,
}

/// One sort key: an SQL expression (never NULL: nullable columns are wrapped
/// in COALESCE so that NULLs sort last) and its direction.
#[derive(Clone, Debug)]
pub struct SortKey {
    pub name: &'static str,
    pub expr: SimpleExpr,
    pub kind: SortKind,
    pub descending: bool,
}

/// `expr` lowercased by the database: ASCII letters on SQLite, every letter
/// on PostgreSQL (by the database's locale).
pub fn fold(expr: impl Into<SimpleExpr>) -> SimpleExpr {
    Func::lower(expr.into()).into()
}

impl SortKey {
    /// A cursor's value, ready to compare with the key's expression.
    fn bound(&self, value: &Value) -> SimpleExpr {
        let value = Expr::val(value.clone());
        match self.kind {
            SortKind::FoldedText => fold(value),
            _ => value,
        }
    }

    fn order(&self, backward: bool) -> Order {
        if self.descending != backward {
            Order::Desc
        } else {
            Order::Asc
        }
    }
}

/// The requested slice of a list, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct PageRequest {
    /// Rows wanted (first or last).
    pub limit: u64,
    /// True for `last`/`before`: walk the order backwards, then reverse.
    pub backward: bool,
    /// The cursor to start after (forward) or before (backward).
    pub cursor: Option<String>,
}

impl PageRequest {
    /// Validates Relay arguments against the configured sizes.
    pub fn new(
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        default_size: u32,
        max_size: u32,
    ) -> Result<Self, AppError> {
        let check = |name: &str, n: i32| -> Result<u64, AppError> {
            if n < 0 {
                Err(AppError::bad_input(format!(
                    "{name} must not be negative, got {n}"
                )))
            } else if n as u32 > max_size {
                Err(AppError::bad_input(format!(
                    "{name} must be at most {max_size}, got {n}; page through the rest with cursors"
                )))
            } else {
                Ok(n as u64)
            }
        };
        match (first, last) {
            (Some(_), Some(_)) => Err(AppError::bad_input("give either first or last, not both")),
            (_, Some(n)) => {
                if after.is_some() {
                    return Err(AppError::bad_input("last goes with before, not after"));
                }
                Ok(Self {
                    limit: check("last", n)?,
                    backward: true,
                    cursor: before,
                })
            }
            (first, None) if before.is_some() && first.is_none() => Ok(Self {
                limit: std::cmp::min(default_size, max_size) as u64,
                backward: true,
                cursor: before,
            }),
            (first, None) => {
                if before.is_some() {
                    return Err(AppError::bad_input("first goes with after, not before"));
                }
                let limit = match first {
                    Some(n) => check("first", n)?,
                    None => std::cmp::min(default_size, max_size) as u64,
                };
                Ok(Self {
                    limit,
                    backward: false,
                    cursor: after,
                })
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CursorBody {
    /// The ordering the cursor belongs to, e.g. `name:asc,id:asc`.
    o: String,
    v: Vec<SortValue>,
}

/// The signature of an ordering, stored in cursors so that a cursor from one
/// ordering is refused by another.
pub fn signature(keys: &[SortKey]) -> String {
    keys.iter()
        .map(|k| format!("{}:{}", k.name, if k.descending { "desc" } else { "asc" }))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn encode_cursor(keys: &[SortKey], values: Vec<SortValue>) -> String {
    let body = CursorBody {
        o: signature(keys),
        v: values,
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).expect("cursor serialises"))
}

fn invalid_cursor() -> AppError {
    AppError::bad_input("invalid cursor: use a cursor returned by this list with the same orderBy")
}

/// Decodes a cursor into SQL values for `keys`, refusing cursors made for
/// another ordering or tampered with.
pub fn decode_cursor(keys: &[SortKey], cursor: &str) -> Result<Vec<Value>, AppError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| invalid_cursor())?;
    let body: CursorBody = serde_json::from_slice(&bytes).map_err(|_| invalid_cursor())?;
    if body.o != signature(keys) || body.v.len() != keys.len() {
        return Err(invalid_cursor());
    }
    keys.iter()
        .zip(body.v)
        .map(|(key, value)| to_sql_value(key.kind, value).ok_or_else(invalid_cursor))
        .collect()
}

fn to_sql_value(kind: SortKind, value: SortValue) -> Option<Value> {
    Some(match (kind, value) {
        (SortKind::Int, SortValue::Int(i)) => Value::BigInt(Some(i)),
        (SortKind::Float, SortValue::Float(f)) => Value::Double(Some(f)),
        (SortKind::Float, SortValue::Int(i)) => Value::Double(Some(i as f64)),
        (SortKind::Text | SortKind::FoldedText, SortValue::Text(s)) => Value::String(Some(s)),
        (SortKind::Time, SortValue::Int(us)) => {
            Value::ChronoDateTimeUtc(Some(DateTime::<Utc>::from_timestamp_micros(us)?))
        }
        (SortKind::Date, SortValue::Text(s)) => Value::ChronoDate(Some(s.parse().ok()?)),
        _ => return None,
    })
}

/// The condition "strictly after the cursor row" in the walking direction:
/// `k1 > c1 OR (k1 = c1 AND (k2 > c2 OR (k2 = c2 AND ...)))`, with `<` for
/// descending keys. A leading `k1 >= c1` lets the planner range-scan an index.
pub fn after_condition(keys: &[SortKey], values: &[Value], backward: bool) -> Condition {
    fn nested(keys: &[SortKey], values: &[Value], backward: bool) -> SimpleExpr {
        let key = &keys[0];
        let value = key.bound(&values[0]);
        let forward_greater = key.descending == backward;
        let strict = if forward_greater {
            key.expr.clone().gt(value.clone())
        } else {
            key.expr.clone().lt(value.clone())
        };
        if keys.len() == 1 {
            return strict;
        }
        let rest = nested(&keys[1..], &values[1..], backward);
        strict.or(key.expr.clone().eq(value).and(rest))
    }
    let first = &keys[0];
    let bound = first.bound(&values[0]);
    let loose = if first.descending == backward {
        first.expr.clone().gte(bound)
    } else {
        first.expr.clone().lte(bound)
    };
    Condition::all()
        .add(loose)
        .add(nested(keys, values, backward))
}

/// Applies ORDER BY for `keys` in the walking direction.
pub fn order_by<Q: sea_orm::QueryOrder>(mut query: Q, keys: &[SortKey], backward: bool) -> Q {
    for key in keys {
        query = query.order_by(key.expr.clone(), key.order(backward));
    }
    query
}

/// `query` with `LIMIT n` written into its SQL rather than bound. SQLite
/// plans a bound LIMIT by its value, so every new binding makes it prepare
/// the statement again: a 50-profile nested page spent a fifth of its CPU
/// re-preparing its 50-arm UNION. A literal keeps the prepared statement;
/// the few page sizes in use give few distinct statements to cache.
pub fn limited<E: EntityTrait>(
    query: Select<E>,
    backend: DatabaseBackend,
    limit: u64,
) -> Statement {
    let mut statement = query.build(backend);
    statement.sql.push_str(&format!(" LIMIT {limit}"));
    statement
}

/// Rows fetched for a page: `limit + 1`, the extra one only telling whether
/// there is more.
#[derive(Serialize, Deserialize)]
pub struct Fetched<T> {
    pub rows: Vec<T>,
    pub has_more: bool,
}

impl<T> Default for Fetched<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            has_more: false,
        }
    }
}

impl<T> Fetched<T> {
    /// Trims the look-ahead row and restores the list order for backward pages.
    pub fn new(mut rows: Vec<T>, page: &PageRequest) -> Self {
        let has_more = rows.len() as u64 > page.limit;
        rows.truncate(page.limit as usize);
        if page.backward {
            rows.reverse();
        }
        Self { rows, has_more }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<SortKey> {
        vec![
            SortKey {
                name: "name",
                expr: Expr::col("name"),
                kind: SortKind::Text,
                descending: false,
            },
            SortKey {
                name: "id",
                expr: Expr::col("id"),
                kind: SortKind::Text,
                descending: false,
            },
        ]
    }

    #[test]
    fn cursor_round_trips_and_refuses_other_orderings() {
        let cursor = encode_cursor(
            &keys(),
            vec![SortValue::Text("a".into()), SortValue::Text("p1".into())],
        );
        let values = decode_cursor(&keys(), &cursor).unwrap();
        assert_eq!(
            values,
            vec![
                Value::String(Some("a".into())),
                Value::String(Some("p1".into()))
            ]
        );
        let mut other = keys();
        other[0].descending = true;
        assert!(decode_cursor(&other, &cursor).is_err());
        assert!(decode_cursor(&keys(), "not a cursor").is_err());
        assert!(decode_cursor(&keys(), "").is_err());
    }

    #[test]
    fn page_request_limits() {
        assert!(PageRequest::new(Some(501), None, None, None, 100, 500).is_err());
        assert!(PageRequest::new(Some(-1), None, None, None, 100, 500).is_err());
        assert!(PageRequest::new(Some(1), None, Some(1), None, 100, 500).is_err());
        let p = PageRequest::new(None, None, Some(5), Some("c".into()), 100, 500).unwrap();
        assert!(p.backward);
        assert_eq!(p.limit, 5);
        assert_eq!(
            PageRequest::new(None, None, None, None, 100, 500)
                .unwrap()
                .limit,
            100
        );
    }
}
