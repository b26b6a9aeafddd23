//! Profile queries: filtered keyset pages, counts, lookups, writes.

use std::collections::HashMap;

use async_graphql::Enum;
use chrono::DateTime;
use entity::profile;
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryResult, QuerySelect, Statement,
};
use serde::Serialize;

use crate::domain::{DbEnum, OrganizationType, ProfileStatus};
use crate::store::columns::Columns;
use crate::store::page::{self, Fetched, PageRequest, SortKey, SortKind, SortValue};
use crate::store::{in_ids, like_pattern};

/// A validated profile filter; the empty filter lists every non-archived profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct ProfileFilter {
    /// Only these statuses; when empty, every status but archived (unless `include_archived`).
    pub statuses: Vec<ProfileStatus>,
    pub include_archived: bool,
    pub organization_types: Vec<OrganizationType>,
    pub states: Vec<String>,
    /// Exact NTEE codes, any of which a profile carries.
    pub ntee_codes: Vec<String>,
    /// NTEE major groups (first letters), any of which a profile's codes start with.
    pub ntee_major_groups: Vec<String>,
    pub revenue_min: Option<i64>,
    pub revenue_max: Option<i64>,
    /// Case-insensitive text matched in name, EIN and mission statement.
    pub search: Option<String>,
}

impl ProfileFilter {
    pub fn condition(&self, backend: DatabaseBackend) -> Condition {
        use profile::Column as C;
        let mut cond = Condition::all();
        if !self.statuses.is_empty() {
            cond = cond.add(C::Status.is_in(self.statuses.iter().map(|s| s.as_str())));
        } else if !self.include_archived {
            cond = cond.add(C::Status.ne(ProfileStatus::Archived.as_str()));
        }
        if !self.organization_types.is_empty() {
            cond = cond
                .add(C::OrganizationType.is_in(self.organization_types.iter().map(|s| s.as_str())));
        }
        if !self.states.is_empty() {
            cond = cond.add(C::State.is_in(self.states.clone()));
        }
        // Codes are validated to [A-Z0-9], so a LIKE over the JSON text is exact:
        // `"B20"` matches the list element B20 and nothing else.
        let codes_text = || Expr::col(C::NteeCodes).cast_as("TEXT");
        if !self.ntee_codes.is_empty() {
            let any = self.ntee_codes.iter().fold(Condition::any(), |any, code| {
                any.add(codes_text().like(format!("%\"{code}\"%")))
            });
            cond = cond.add(any);
        }
        if !self.ntee_major_groups.is_empty() {
            let any = self
                .ntee_major_groups
                .iter()
                .fold(Condition::any(), |any, group| {
                    any.add(codes_text().like(format!("%\"{group}%")))
                });
            cond = cond.add(any);
        }
        if let Some(min) = self.revenue_min {
            cond = cond.add(C::AnnualRevenue.gte(min));
        }
        if let Some(max) = self.revenue_max {
            cond = cond.add(C::AnnualRevenue.lte(max));
        }
        if let Some(search) = &self.search {
            let pattern = like_pattern(backend, search);
            let lower = |c: C| Func::lower(Expr::col((profile::Entity, c)));
            let mut any = Condition::any()
                .add(lower(C::Name).like(pattern.clone()))
                .add(lower(C::MissionStatement).like(pattern));
            // EINs are stored as nine digits and written `12-3456789`: a
            // search of digits and dashes alone is looked for among them
            // too. Digits inside other text ("Route 66") are not an EIN.
            let digits: String = search.chars().filter(|c| c.is_ascii_digit()).collect();
            if !digits.is_empty() && search.chars().all(|c| c.is_ascii_digit() || c == '-') {
                any = any.add(C::Ein.like(like_pattern(backend, &digits)));
            }
            cond = cond.add(any);
        }
        cond
    }
}

/// What profile lists can be sorted by.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum ProfileOrderField {
    /// Organisation name, A to Z by default, whatever its case (`acme` next to
    /// `ACME`; SQLite folds ASCII letters only).
    Name,
    /// Last change, newest first by default (the default order).
    UpdatedAt,
    /// Creation time, newest first by default.
    CreatedAt,
    /// Annual revenue, largest first by default; profiles without one come last.
    AnnualRevenue,
    /// Number of opportunities, most first by default.
    OpportunitiesCount,
}

impl ProfileOrderField {
    pub fn descending_by_default(self) -> bool {
        !matches!(self, Self::Name)
    }
}

/// The sort keys for an ordering, closed by `id`.
pub fn sort_keys(order: &[(ProfileOrderField, bool)]) -> Vec<SortKey> {
    use profile::Column as C;
    let col = |c: C| -> SimpleExpr { Expr::col((profile::Entity, c)) };
    let mut keys: Vec<SortKey> = order
        .iter()
        .map(|&(field, descending)| {
            let (name, expr, kind) = match field {
                ProfileOrderField::Name => ("name", page::fold(col(C::Name)), SortKind::FoldedText),
                ProfileOrderField::UpdatedAt => ("updated_at", col(C::UpdatedAt), SortKind::Time),
                ProfileOrderField::CreatedAt => ("created_at", col(C::CreatedAt), SortKind::Time),
                ProfileOrderField::AnnualRevenue => (
                    "annual_revenue",
                    // NULLs last in either direction.
                    col(C::AnnualRevenue).if_null(if descending { -1 } else { i64::MAX }),
                    SortKind::Int,
                ),
                ProfileOrderField::OpportunitiesCount => (
                    "opportunities_count",
                    opportunities_count_expr(),
                    SortKind::Int,
                ),
            };
            SortKey {
                name,
                expr,
                kind,
                descending,
            }
        })
        .collect();
    keys.push(SortKey {
        name: "id",
        expr: col(C::Id),
        kind: SortKind::Text,
        descending: false,
    });
    keys
}

fn opportunities_count_expr() -> SimpleExpr {
    Expr::cust(
        r#"(SELECT COUNT(*) FROM "opportunities" WHERE "opportunities"."profile_id" = "profiles"."id")"#,
    )
}

/// The cursor values of `model` under `keys`; `counts` holds opportunity
/// counts when the ordering uses them.
pub fn sort_values(
    model: &profile::Model,
    keys: &[SortKey],
    counts: &HashMap<String, u64>,
) -> Vec<SortValue> {
    keys.iter()
        .map(|key| match key.name {
            "name" => SortValue::Text(model.name.clone()),
            "updated_at" => SortValue::time(&model.updated_at),
            "created_at" => SortValue::time(&model.created_at),
            "annual_revenue" => SortValue::Int(model.annual_revenue.unwrap_or(if key.descending {
                -1
            } else {
                i64::MAX
            })),
            "opportunities_count" => {
                SortValue::Int(counts.get(&model.id).copied().unwrap_or(0) as i64)
            }
            _ => SortValue::Text(model.id.clone()),
        })
        .collect()
}

/// The profile columns a page selects (see [`Columns`]).
pub type ProfileColumns = Columns<profile::Column>;

/// A row of `columns` (selected in that order), decoded by position: by
/// name, each field was a lookup, 5% of the CPU of an uncached nested page
/// on PostgreSQL. The other fields hold placeholders that no resolver reads.
fn decode(row: &QueryResult, columns: ProfileColumns) -> Result<profile::Model, DbErr> {
    use profile::Column as C;
    let mut m = profile::Model {
        id: String::new(),
        name: String::new(),
        organization_type: String::new(),
        ein: None,
        mission_statement: None,
        status: String::new(),
        keywords: None,
        focus_areas: Default::default(),
        ntee_codes: Default::default(),
        city: None,
        state: None,
        annual_revenue: None,
        website_url: None,
        last_discovery_date: None,
        created_at: DateTime::UNIX_EPOCH,
        updated_at: DateTime::UNIX_EPOCH,
    };
    for (i, column) in columns.columns().enumerate() {
        match column {
            C::Id => m.id = row.try_get_by_index(i)?,
            C::Name => m.name = row.try_get_by_index(i)?,
            C::OrganizationType => m.organization_type = row.try_get_by_index(i)?,
            C::Ein => m.ein = row.try_get_by_index(i)?,
            C::MissionStatement => m.mission_statement = row.try_get_by_index(i)?,
            C::Status => m.status = row.try_get_by_index(i)?,
            C::Keywords => m.keywords = row.try_get_by_index(i)?,
            C::FocusAreas => m.focus_areas = row.try_get_by_index(i)?,
            C::NteeCodes => m.ntee_codes = row.try_get_by_index(i)?,
            C::City => m.city = row.try_get_by_index(i)?,
            C::State => m.state = row.try_get_by_index(i)?,
            C::AnnualRevenue => m.annual_revenue = row.try_get_by_index(i)?,
            C::WebsiteUrl => m.website_url = row.try_get_by_index(i)?,
            C::LastDiscoveryDate => m.last_discovery_date = row.try_get_by_index(i)?,
            C::CreatedAt => m.created_at = row.try_get_by_index(i)?,
            C::UpdatedAt => m.updated_at = row.try_get_by_index(i)?,
        }
    }
    Ok(m)
}

/// One page of profiles, selecting `columns` (the id always).
pub async fn page(
    conn: &impl ConnectionTrait,
    filter: &ProfileFilter,
    keys: &[SortKey],
    request: &PageRequest,
    columns: ProfileColumns,
) -> Result<Fetched<profile::Model>, crate::error::AppError> {
    let columns = columns.with(profile::Column::Id);
    let query = page_query(conn.get_database_backend(), filter, keys, request, columns)?;
    Ok(Fetched::new(
        conn.query_all_raw(query)
            .await?
            .iter()
            .map(|row| decode(row, columns))
            .collect::<Result<_, _>>()?,
        request,
    ))
}

/// The statement of one page of profiles, `columns` as given.
// SELECT <columns> FROM profiles WHERE <filter> [AND <after cursor>] ORDER BY <keys>, id LIMIT n + 1
pub fn page_query(
    backend: DatabaseBackend,
    filter: &ProfileFilter,
    keys: &[SortKey],
    request: &PageRequest,
    columns: ProfileColumns,
) -> Result<Statement, crate::error::AppError> {
    let mut query = profile::Entity::find()
        .select_only()
        .columns(columns.columns())
        .filter(filter.condition(backend));
    if let Some(cursor) = &request.cursor {
        let values = page::decode_cursor(keys, cursor)?;
        query = query.filter(page::after_condition(keys, &values, request.backward));
    }
    Ok(page::limited(
        page::order_by(query, keys, request.backward),
        backend,
        request.limit + 1,
    ))
}

/// Profiles matching `filter`.
pub async fn count(conn: &impl ConnectionTrait, filter: &ProfileFilter) -> Result<u64, DbErr> {
    if *filter == ProfileFilter::default() {
        return default_count(conn).await;
    }
    profile::Entity::find()
        .filter(filter.condition(conn.get_database_backend()))
        .count(conn)
        .await
}

/// Delta rows a PostgreSQL reader lets pile up before folding them.
const MAX_STATUS_COUNT_ROWS: i64 = 64;

/// The default list's total, every profile but the archived, read from the
/// per-status counts the triggers keep (migrations m20261130_000005 for
/// SQLite, m20261130_000006 for PostgreSQL): counting it walks an index of
/// every profile, which made an uncached page's cost grow with the table.
async fn default_count(conn: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!(
        r#"SELECT CAST(COALESCE(SUM(CASE WHEN "status" <> '{}' THEN "n" END), 0) AS bigint) AS "n", COUNT(*) AS "rows" FROM "profile_status_counts""#,
        ProfileStatus::Archived.as_str()
    );
    let row = conn
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("a count".into()))?;
    let (n, rows): (i64, i64) = (row.try_get("", "n")?, row.try_get("", "rows")?);
    if backend == DatabaseBackend::Postgres
        && rows > MAX_STATUS_COUNT_ROWS
        && let Err(e) = fold_status_counts(conn).await
    {
        // The count read is right either way; the next reader folds.
        tracing::warn!(error = %e, "folding profile_status_counts failed");
    }
    Ok(n as u64)
}

/// PostgreSQL: replaces the delta rows this transaction sees with one row
/// per status. Rows appended meanwhile by other transactions are not seen,
/// so not deleted, and still count; the advisory lock keeps two folds from
/// deleting the same rows in different orders (a deadlock). Its key,
/// 0x0ca7c0a7, is not the migrations' (`db::MIGRATION_LOCK_KEY`).
async fn fold_status_counts(conn: &impl ConnectionTrait) -> Result<(), DbErr> {
    const FOLD: &str = r#"WITH "locked" AS (SELECT pg_try_advisory_xact_lock(212320423) AS "ok"),
        "gone" AS (DELETE FROM "profile_status_counts" WHERE (SELECT "ok" FROM "locked") RETURNING "status", "n")
        INSERT INTO "profile_status_counts" ("status", "n") SELECT "status", SUM("n") FROM "gone" GROUP BY "status""#;
    conn.execute_unprepared(FOLD).await.map(drop)
}

pub async fn by_id(conn: &impl ConnectionTrait, id: &str) -> Result<Option<profile::Model>, DbErr> {
    profile::Entity::find_by_id(id).one(conn).await
}

pub async fn by_ein(
    conn: &impl ConnectionTrait,
    ein: &str,
) -> Result<Option<profile::Model>, DbErr> {
    profile::Entity::find()
        .filter(profile::Column::Ein.eq(ein))
        .one(conn)
        .await
}

/// Profiles with the given ids, in no particular order.
// SELECT ... FROM profiles WHERE id IN (...)   -- id = ANY($1) on PostgreSQL
pub async fn by_ids(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> Result<Vec<profile::Model>, DbErr> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(crate::store::IDS_PER_STATEMENT) {
        let cond = in_ids(
            conn.get_database_backend(),
            Expr::col((profile::Entity, profile::Column::Id)),
            chunk,
        );
        rows.extend(profile::Entity::find().filter(cond).all(conn).await?);
    }
    Ok(rows)
}

/// Which of `eins` are taken already.
pub async fn existing_eins(
    conn: &impl ConnectionTrait,
    eins: &[String],
) -> Result<Vec<String>, DbErr> {
    let mut taken = Vec::new();
    for chunk in eins.chunks(crate::store::IDS_PER_STATEMENT) {
        let cond = in_ids(
            conn.get_database_backend(),
            Expr::col((profile::Entity, profile::Column::Ein)),
            chunk,
        );
        let rows: Vec<Option<String>> = profile::Entity::find()
            .select_only()
            .column(profile::Column::Ein)
            .filter(cond)
            .into_tuple()
            .all(conn)
            .await?;
        taken.extend(rows.into_iter().flatten());
    }
    Ok(taken)
}

pub async fn insert(
    conn: &impl ConnectionTrait,
    model: profile::Model,
) -> Result<profile::Model, DbErr> {
    profile::Entity::insert(model.clone().into_active_model())
        .exec_without_returning(conn)
        .await?;
    Ok(model)
}

/// Writes every column of `model` over the stored row.
pub async fn update(
    conn: &impl ConnectionTrait,
    model: profile::Model,
) -> Result<profile::Model, DbErr> {
    model.into_active_model().reset_all().update(conn).await
}

/// Deletes a profile (its opportunities go with it); false when there was none.
pub async fn delete(conn: &impl ConnectionTrait, id: &str) -> Result<bool, DbErr> {
    Ok(profile::Entity::delete_by_id(id)
        .exec(conn)
        .await?
        .rows_affected
        > 0)
}

/// True when a profile with this id exists.
pub async fn exists(conn: &impl ConnectionTrait, id: &str) -> Result<bool, DbErr> {
    Ok(profile::Entity::find_by_id(id).count(conn).await? > 0)
}
