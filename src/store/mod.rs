//! Database access as plain `async fn`s over a connection, usable without GraphQL.

pub mod bulk;
pub mod columns;
pub mod listings;
pub mod opportunities;
pub mod page;
pub mod profiles;
pub mod sqlite_bulk;

use chrono::{DateTime, SubsecRound, Utc};
use rand::Rng;
use sea_orm::DatabaseBackend;
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr, PgFunc, SimpleExpr};

/// Ids per `IN (...)` list on SQLite, well below its 32,766 bind parameters
/// (PostgreSQL gets one array parameter whatever the count).
pub const IDS_PER_STATEMENT: usize = 10_000;

/// The current time at the precision both databases keep (microseconds), so
/// a value read back equals the value written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new id: `prefix` + 12 lowercase hex chars (48 random bits).
pub fn new_id(prefix: &str, rng: &mut impl Rng) -> String {
    format!("{prefix}{:012x}", rng.random::<u64>() >> 16)
}

/// `expr IN (ids)`; on PostgreSQL `expr = ANY($1)` with one array parameter,
/// so the statement text does not change with the number of ids.
pub fn in_ids(backend: DatabaseBackend, expr: impl Into<SimpleExpr>, ids: &[String]) -> SimpleExpr {
    let expr: SimpleExpr = expr.into();
    match backend {
        DatabaseBackend::Postgres => expr.eq(PgFunc::any(Expr::val(ids.to_vec()))),
        _ => expr.is_in(ids.iter().cloned()),
    }
}

/// A case-insensitive "contains" pattern for `LOWER(column) LIKE`, with the
/// user's `%`, `_` and `\` taken literally. Lowercased as the backend's
/// `LOWER` lowercases the column: SQLite's folds ASCII letters only, so a
/// pattern with `é` for `É` would match no stored `École`.
pub fn like_pattern(backend: DatabaseBackend, text: &str) -> LikeExpr {
    LikeExpr::new(like_text(backend, text)).escape('\\')
}

/// The text of [`like_pattern`], for SQL written by hand: its escape character is `\`.
pub fn like_text(backend: DatabaseBackend, text: &str) -> String {
    let text = text.trim();
    let lower = match backend {
        DatabaseBackend::Sqlite => text.to_ascii_lowercase(),
        _ => text.to_lowercase(),
    };
    let mut escaped = String::with_capacity(text.len() + 2);
    escaped.push('%');
    for c in lower.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

/// Raises the counter of writes made outside a server (an import, a seed),
/// inside the writing transaction: servers poll it ([`data_epoch`]) and drop
/// their cached results when it moves.
pub const RAISE_DATA_EPOCH: &str = "UPDATE data_epoch SET epoch = epoch + 1";

/// Runs [`RAISE_DATA_EPOCH`] on a sea-orm connection or transaction.
pub async fn raise_data_epoch(conn: &impl sea_orm::ConnectionTrait) -> Result<(), sea_orm::DbErr> {
    conn.execute_unprepared(RAISE_DATA_EPOCH).await.map(drop)
}

/// The counter [`RAISE_DATA_EPOCH`] raises. Read from the pool itself, past
/// sea-orm: the statement count a server reports is of what its requests
/// send, and this poll runs whether or not any request comes.
pub async fn data_epoch(conn: &sea_orm::DatabaseConnection) -> Result<i64, sea_orm::sqlx::Error> {
    const SQL: &str = "SELECT epoch FROM data_epoch";
    match conn.get_database_backend() {
        DatabaseBackend::Postgres => {
            sea_orm::sqlx::query_scalar(SQL)
                .fetch_one(conn.get_postgres_connection_pool())
                .await
        }
        _ => {
            sea_orm::sqlx::query_scalar(SQL)
                .fetch_one(conn.get_sqlite_connection_pool())
                .await
        }
    }
}

/// A description of the data that changes with any insert, update or delete
/// made through this API (row counts and latest `updated_at` of each table),
/// so that cached results kept across a restart are not trusted after changes
/// made meanwhile.
pub async fn fingerprint(conn: &impl sea_orm::ConnectionTrait) -> Result<String, sea_orm::DbErr> {
    use sea_orm::{EntityTrait, PaginatorTrait, QueryOrder, QuerySelect};
    let profiles = entity::profile::Entity::find().count(conn).await?;
    let opportunities = entity::opportunity::Entity::find().count(conn).await?;
    let latest_profile: Option<DateTime<Utc>> = entity::profile::Entity::find()
        .select_only()
        .column(entity::profile::Column::UpdatedAt)
        .order_by_desc(entity::profile::Column::UpdatedAt)
        .into_tuple()
        .one(conn)
        .await?;
    let latest_opportunity: Option<DateTime<Utc>> = entity::opportunity::Entity::find()
        .select_only()
        .column(entity::opportunity::Column::UpdatedAt)
        .order_by_desc(entity::opportunity::Column::UpdatedAt)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(format!(
        "profiles={profiles};opportunities={opportunities};profile_updated={latest_profile:?};opportunity_updated={latest_opportunity:?}"
    ))
}
