//! Opportunity queries: filtered keyset pages, per-profile pages and counts
//! batched across many profiles, lookups, writes.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use async_graphql::Enum;
use chrono::{DateTime, NaiveDate};
use entity::opportunity;
use sea_orm::sea_query::{Asterisk, Condition, Expr, ExprTrait, Func, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait,
    FromQueryResult, IntoActiveModel, QueryFilter, QueryResult, QuerySelect, QueryTrait, Statement,
    Value,
};
use serde::Serialize;

use crate::domain::{DbEnum, FundingSource, Priority, Stage};
use crate::error::AppError;
use crate::store::columns::Columns;
use crate::store::page::{self, Fetched, PageRequest, SortKey, SortKind, SortValue};
use crate::store::{IDS_PER_STATEMENT, in_ids, like_pattern, like_text};

/// A score bound in 0..=1; compared and hashed by its bits so filters can be map keys.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ScoreBound(pub f64);

impl Eq for ScoreBound {}

impl Hash for ScoreBound {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// A validated opportunity filter; the empty filter matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct OpportunityFilter {
    pub profile_ids: Vec<String>,
    pub stages: Vec<Stage>,
    pub priorities: Vec<Priority>,
    pub sources: Vec<FundingSource>,
    pub score_min: Option<ScoreBound>,
    pub score_max: Option<ScoreBound>,
    /// Deadline window, inclusive ("closing within N days" resolves to one).
    pub close_date_from: Option<NaiveDate>,
    pub close_date_to: Option<NaiveDate>,
    /// Award range that an opportunity's floor..ceiling must overlap.
    pub award_min: Option<i64>,
    pub award_max: Option<i64>,
    pub rating_min: Option<i16>,
    pub rating_max: Option<i16>,
    /// Case-insensitive text matched in funder name, notes and tags.
    pub search: Option<String>,
}

impl OpportunityFilter {
    pub fn condition(&self, backend: DatabaseBackend) -> Condition {
        use opportunity::Column as C;
        let mut cond = Condition::all();
        if !self.profile_ids.is_empty() {
            cond = cond.add(in_ids(
                backend,
                Expr::col((opportunity::Entity, C::ProfileId)),
                &self.profile_ids,
            ));
        }
        if !self.stages.is_empty() {
            cond = cond.add(C::CurrentStage.is_in(self.stages.iter().map(|s| s.as_str())));
        }
        if !self.priorities.is_empty() {
            cond = cond.add(C::PriorityLevel.is_in(self.priorities.iter().map(|s| s.as_str())));
        }
        if !self.sources.is_empty() {
            cond = cond.add(C::Source.is_in(self.sources.iter().map(|s| s.as_str())));
        }
        if let Some(min) = self.score_min {
            cond = cond.add(C::OverallScore.gte(min.0));
        }
        if let Some(max) = self.score_max {
            cond = cond.add(C::OverallScore.lte(max.0));
        }
        if let Some(from) = self.close_date_from {
            cond = cond.add(C::CloseDate.gte(from));
        }
        if let Some(to) = self.close_date_to {
            cond = cond.add(C::CloseDate.lte(to));
        }
        // Overlap of [floor, ceiling] with [min, max]; a missing end takes the other's value.
        let floor = || Expr::col(C::AwardFloor).if_null(Expr::col(C::AwardCeiling));
        let ceiling = || Expr::col(C::AwardCeiling).if_null(Expr::col(C::AwardFloor));
        if let Some(min) = self.award_min {
            cond = cond.add(ceiling().gte(min));
        }
        if let Some(max) = self.award_max {
            cond = cond.add(floor().lte(max));
        }
        if let Some(min) = self.rating_min {
            cond = cond.add(C::UserRating.gte(min));
        }
        if let Some(max) = self.rating_max {
            cond = cond.add(C::UserRating.lte(max));
        }
        if let Some(search) = &self.search {
            let pattern = like_pattern(backend, search);
            let lower = |e: SimpleExpr| Func::lower(e);
            cond = cond.add(
                Condition::any()
                    .add(
                        lower(Expr::col((opportunity::Entity, C::OrganizationName)))
                            .like(pattern.clone()),
                    )
                    .add(lower(Expr::col((opportunity::Entity, C::Notes))).like(pattern))
                    .add(tag_contains(backend, search)),
            );
        }
        cond
    }
}

/// True where one of the tags contains `search` (case-insensitively). Each
/// tag's text is matched, not the JSON list holding them, whose brackets,
/// quotes and commas matched every row. The JSON text contains whatever a
/// tag contains unless JSON escaped it (quotes, backslashes, control
/// characters), so without those the plain `LIKE` over it runs first: a
/// search scans every row, and the tags of most rows are then never parsed.
fn tag_contains(backend: DatabaseBackend, search: &str) -> SimpleExpr {
    let tags = r#""opportunities"."tags""#;
    // Placeholders of custom SQL are `$N` for PostgreSQL (sea-query renumbers
    // them within the statement) and `?` for SQLite.
    let sql = match backend {
        DatabaseBackend::Postgres => format!(
            r#"EXISTS (SELECT 1 FROM jsonb_array_elements_text({tags}) AS "tag"("value") WHERE LOWER("value") LIKE $1 ESCAPE $2)"#
        ),
        _ => format!(
            r#"EXISTS (SELECT 1 FROM json_each({tags}) WHERE LOWER("value") LIKE ? ESCAPE ?)"#
        ),
    };
    let exact = Expr::cust_with_values(sql, [like_text(backend, search), "\\".to_owned()]);
    if search
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return exact;
    }
    Func::lower(Expr::col((opportunity::Entity, opportunity::Column::Tags)).cast_as("TEXT"))
        .like(like_pattern(backend, search))
        .and(exact)
}

/// What opportunity lists can be sorted by.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum OpportunityOrderField {
    /// Overall score, highest first by default (the default order).
    OverallScore,
    /// Application deadline, soonest first by default; those without one come last.
    CloseDate,
    /// When the opportunity was found, newest first by default.
    DiscoveryDate,
    /// Largest possible award, largest first by default; those without one come last.
    AwardCeiling,
    /// Funder name, A to Z by default, whatever its case (`acme` next to
    /// `ACME`; SQLite folds ASCII letters only).
    OrganizationName,
}

impl OpportunityOrderField {
    pub fn descending_by_default(self) -> bool {
        matches!(
            self,
            Self::OverallScore | Self::DiscoveryDate | Self::AwardCeiling
        )
    }
}

const LAST_DATE: &str = "9999-12-31";
const FIRST_DATE: &str = "0001-01-01";

fn date_sentinel(descending: bool) -> NaiveDate {
    (if descending { FIRST_DATE } else { LAST_DATE })
        .parse()
        .expect("valid date")
}

/// The sort keys for an ordering, closed by `id`.
pub fn sort_keys(order: &[(OpportunityOrderField, bool)]) -> Vec<SortKey> {
    use opportunity::Column as C;
    let col = |c: C| -> SimpleExpr { Expr::col((opportunity::Entity, c)) };
    let mut keys: Vec<SortKey> = order
        .iter()
        .map(|&(field, descending)| {
            let (name, expr, kind) = match field {
                OpportunityOrderField::OverallScore => {
                    ("overall_score", col(C::OverallScore), SortKind::Float)
                }
                OpportunityOrderField::CloseDate => (
                    "close_date",
                    col(C::CloseDate).if_null(date_sentinel(descending)),
                    SortKind::Date,
                ),
                OpportunityOrderField::DiscoveryDate => {
                    ("discovery_date", col(C::DiscoveryDate), SortKind::Time)
                }
                OpportunityOrderField::AwardCeiling => (
                    "award_ceiling",
                    col(C::AwardCeiling).if_null(if descending { -1 } else { i64::MAX }),
                    SortKind::Int,
                ),
                OpportunityOrderField::OrganizationName => (
                    "organization_name",
                    page::fold(col(C::OrganizationName)),
                    SortKind::FoldedText,
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

/// The cursor values of `model` under `keys`.
pub fn sort_values(model: &opportunity::Model, keys: &[SortKey]) -> Vec<SortValue> {
    keys.iter()
        .map(|key| match key.name {
            "overall_score" => SortValue::Float(model.overall_score),
            "close_date" => SortValue::date(
                &model
                    .close_date
                    .unwrap_or_else(|| date_sentinel(key.descending)),
            ),
            "discovery_date" => SortValue::time(&model.discovery_date),
            "award_ceiling" => SortValue::Int(model.award_ceiling.unwrap_or(if key.descending {
                -1
            } else {
                i64::MAX
            })),
            "organization_name" => SortValue::Text(model.organization_name.clone()),
            _ => SortValue::Text(model.id.clone()),
        })
        .collect()
}

/// The opportunity columns a page selects (see [`Columns`]).
pub type ColumnSet = Columns<opportunity::Column>;

impl ColumnSet {
    /// The columns every page needs: the row's identity and its parent.
    pub fn keys() -> Self {
        Self::none()
            .with(opportunity::Column::Id)
            .with(opportunity::Column::ProfileId)
    }
}

/// A row of `columns` (selected in that order); the other fields hold
/// placeholders that no resolver reads (see [`ColumnSet`]). Decoding by
/// position skips the name lookups of whole-model decoding.
fn decode(row: &QueryResult, columns: ColumnSet) -> Result<opportunity::Model, DbErr> {
    use opportunity::Column as C;
    let mut m = opportunity::Model {
        id: String::new(),
        profile_id: String::new(),
        organization_name: String::new(),
        ein: None,
        current_stage: String::new(),
        overall_score: 0.0,
        confidence_level: None,
        priority_level: None,
        user_rating: None,
        source: None,
        award_floor: None,
        award_ceiling: None,
        close_date: None,
        tags: Default::default(),
        notes: None,
        discovery_date: DateTime::UNIX_EPOCH,
        created_at: DateTime::UNIX_EPOCH,
        updated_at: DateTime::UNIX_EPOCH,
    };
    for (i, column) in columns.columns().enumerate() {
        match column {
            C::Id => m.id = row.try_get_by_index(i)?,
            C::ProfileId => m.profile_id = row.try_get_by_index(i)?,
            C::OrganizationName => m.organization_name = row.try_get_by_index(i)?,
            C::Ein => m.ein = row.try_get_by_index(i)?,
            C::CurrentStage => m.current_stage = row.try_get_by_index(i)?,
            C::OverallScore => m.overall_score = row.try_get_by_index(i)?,
            C::ConfidenceLevel => m.confidence_level = row.try_get_by_index(i)?,
            C::PriorityLevel => m.priority_level = row.try_get_by_index(i)?,
            C::UserRating => m.user_rating = row.try_get_by_index(i)?,
            C::Source => m.source = row.try_get_by_index(i)?,
            C::AwardFloor => m.award_floor = row.try_get_by_index(i)?,
            C::AwardCeiling => m.award_ceiling = row.try_get_by_index(i)?,
            C::CloseDate => m.close_date = row.try_get_by_index(i)?,
            C::Tags => m.tags = row.try_get_by_index(i)?,
            C::Notes => m.notes = row.try_get_by_index(i)?,
            C::DiscoveryDate => m.discovery_date = row.try_get_by_index(i)?,
            C::CreatedAt => m.created_at = row.try_get_by_index(i)?,
            C::UpdatedAt => m.updated_at = row.try_get_by_index(i)?,
        }
    }
    Ok(m)
}

/// Runs a page statement selecting `columns`.
async fn fetch_rows(
    conn: &impl ConnectionTrait,
    statement: Statement,
    columns: ColumnSet,
) -> Result<Vec<opportunity::Model>, DbErr> {
    conn.query_all_raw(statement)
        .await?
        .iter()
        .map(|row| decode(row, columns))
        .collect()
}

/// The statement of one root page: every column, no parent.
pub fn page_query(
    backend: DatabaseBackend,
    filter: &OpportunityFilter,
    keys: &[SortKey],
    request: &PageRequest,
) -> Result<Statement, AppError> {
    if backend != DatabaseBackend::Postgres {
        return page_query_where(
            backend,
            filter,
            keys,
            request,
            Condition::all(),
            ColumnSet::all(),
        );
    }
    // PostgreSQL reads the whole row of every match before it ranks them:
    // two stages in a three-month window at 10k x 20 are 11,492 rows on
    // 5,217 pages (a bitmap heap scan and a top-N sort, 22.7 ms). Ranked
    // by their ids alone the matches come from an index holding the
    // filter's and the order's columns, without touching a row, and only
    // the page's rows are read (6.2 ms). `ARRAY(...)` keeps the ranking's
    // order, `WITH ORDINALITY` numbers it for the outer ORDER BY.
    let ranked = page_query_where(
        backend,
        filter,
        keys,
        request,
        Condition::all(),
        ColumnSet::none().with(opportunity::Column::Id),
    )?;
    let rows = opportunity::Entity::find().build(backend).sql;
    Ok(Statement::from_sql_and_values(
        backend,
        format!(
            r#"{rows} JOIN unnest(ARRAY({})) WITH ORDINALITY AS "page"("id", "place") ON "opportunities"."id" = "page"."id" ORDER BY "page"."place""#,
            ranked.sql
        ),
        ranked.values.map(|v| v.0).unwrap_or_default(),
    ))
}

/// `page_query` with one more condition (the parent of a nested page),
/// selecting `columns`.
fn page_query_where(
    backend: DatabaseBackend,
    filter: &OpportunityFilter,
    keys: &[SortKey],
    request: &PageRequest,
    parent: Condition,
    columns: ColumnSet,
) -> Result<Statement, AppError> {
    let mut query = opportunity::Entity::find()
        .select_only()
        .columns(columns.columns())
        .filter(filter.condition(backend))
        .filter(parent);
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

/// One page of opportunities.
// SELECT ... FROM opportunities WHERE <filter> [AND <after cursor>] ORDER BY <keys>, id LIMIT n + 1
// (on PostgreSQL the ids of that page first, then their rows: see `page_query`)
pub async fn page(
    conn: &impl ConnectionTrait,
    filter: &OpportunityFilter,
    keys: &[SortKey],
    request: &PageRequest,
) -> Result<Fetched<opportunity::Model>, AppError> {
    let query = page_query(conn.get_database_backend(), filter, keys, request)?;
    Ok(Fetched::new(
        opportunity::Model::find_by_statement(query)
            .all(conn)
            .await?,
        request,
    ))
}

/// Opportunities matching `filter`.
pub async fn count(conn: &impl ConnectionTrait, filter: &OpportunityFilter) -> Result<u64, DbErr> {
    let row = conn
        .query_one_raw(count_query(conn.get_database_backend(), filter))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("COUNT(*) returned no row".into()))?;
    Ok(row.try_get_by_index::<i64>(0)? as u64)
}

/// The statement counting the rows of `filter`.
// SELECT COUNT(*) FROM opportunities WHERE <filter>
pub fn count_query(backend: DatabaseBackend, filter: &OpportunityFilter) -> Statement {
    opportunity::Entity::find()
        .select_only()
        .column_as(Expr::col(Asterisk).count(), "n")
        .filter(filter.condition(backend))
        .build(backend)
}

/// Per-profile counts for many profiles in one statement; every id gets an answer.
// SELECT profile_id, COUNT(*) FROM opportunities
// WHERE profile_id IN (...) AND <filter> GROUP BY profile_id
pub async fn counts_by_profile(
    conn: &impl ConnectionTrait,
    profile_ids: &[String],
    filter: &OpportunityFilter,
) -> Result<HashMap<String, u64>, DbErr> {
    let backend = conn.get_database_backend();
    let mut counts: HashMap<String, u64> = profile_ids.iter().map(|id| (id.clone(), 0)).collect();
    for chunk in profile_ids.chunks(IDS_PER_STATEMENT) {
        let rows: Vec<(String, i64)> = opportunity::Entity::find()
            .select_only()
            .column(opportunity::Column::ProfileId)
            // COUNT(*), not COUNT(id): with no column to read, PostgreSQL
            // counts from the narrowest index that leads with profile_id,
            // (profile_id, current_stage): 0.38 ms against 0.93 ms through
            // (profile_id, overall_score, id) for a page of 50 profiles.
            .column_as(Expr::col(Asterisk).count(), "n")
            .filter(filter.condition(backend))
            .filter(in_ids(
                backend,
                Expr::col((opportunity::Entity, opportunity::Column::ProfileId)),
                chunk,
            ))
            .group_by(opportunity::Column::ProfileId)
            .into_tuple()
            .all(conn)
            .await?;
        for (id, n) in rows {
            counts.insert(id, n as u64);
        }
    }
    Ok(counts)
}

/// SQLite refuses compound SELECTs of more than 500 parts.
const SQLITE_ARMS_PER_STATEMENT: usize = 500;
/// Stands in for the profile id while one arm's SQL is built, then is
/// replaced by each real id; ids are never this string.
const PROFILE_PLACEHOLDER: &str = "\u{0}profile";

/// The first page of opportunities of each profile, for many profiles in
/// one statement. Every id gets an answer (possibly an empty page).
///
/// SQLite: `SELECT * FROM (<page of p1>) UNION ALL SELECT * FROM (<page of p2>) ...`,
/// each arm walking the `(profile_id, <sort>, id)` index and stopping at its
/// LIMIT; this is about 5x faster than ROW_NUMBER() over all their rows.
/// PostgreSQL: `SELECT o.* FROM unnest($n::text[]) p(pid) CROSS JOIN LATERAL (<page of p.pid>) o`,
/// one array parameter whatever the count.
pub async fn pages_by_profile(
    conn: &impl ConnectionTrait,
    profile_ids: &[String],
    filter: &OpportunityFilter,
    keys: &[SortKey],
    request: &PageRequest,
    columns: ColumnSet,
) -> Result<HashMap<String, Fetched<opportunity::Model>>, AppError> {
    let backend = conn.get_database_backend();
    let mut grouped: HashMap<String, Vec<opportunity::Model>> = profile_ids
        .iter()
        .map(|id| (id.clone(), Vec::new()))
        .collect();
    let rows = match backend {
        DatabaseBackend::Postgres => {
            let inner = page_query_where(
                backend,
                filter,
                keys,
                request,
                Condition::all().add(Expr::cust(r#""opportunities"."profile_id" = "p"."pid""#)),
                columns,
            )?;
            let mut values = inner.values.map(|v| v.0).unwrap_or_default();
            values.push(Value::from(profile_ids.to_vec()));
            // A LATERAL subquery with LIMIT runs as a nested loop, which keeps
            // each profile's rows in the subquery's order.
            let sql = format!(
                r#"SELECT "o".* FROM unnest(${}::text[]) AS "p"("pid") CROSS JOIN LATERAL ({}) AS "o""#,
                values.len(),
                inner.sql
            );
            fetch_rows(
                conn,
                Statement::from_sql_and_values(backend, sql, values),
                columns,
            )
            .await?
        }
        _ => {
            let arm = page_query_where(
                backend,
                filter,
                keys,
                request,
                Condition::all().add(opportunity::Column::ProfileId.eq(PROFILE_PLACEHOLDER)),
                columns,
            )?;
            let arm_values = arm.values.map(|v| v.0).unwrap_or_default();
            let slot = arm_values
                .iter()
                .position(|v| matches!(v, Value::String(Some(s)) if s == PROFILE_PLACEHOLDER))
                .expect("the placeholder is bound");
            let mut rows = Vec::new();
            for chunk in profile_ids.chunks(SQLITE_ARMS_PER_STATEMENT) {
                let sql =
                    vec![format!("SELECT * FROM ({})", arm.sql); chunk.len()].join(" UNION ALL ");
                let mut values = Vec::with_capacity(arm_values.len() * chunk.len());
                for id in chunk {
                    let mut own = arm_values.clone();
                    own[slot] = Value::String(Some(id.clone()));
                    values.extend(own);
                }
                rows.extend(
                    fetch_rows(
                        conn,
                        Statement::from_sql_and_values(backend, sql, values),
                        columns,
                    )
                    .await?,
                );
            }
            rows
        }
    };
    for row in rows {
        if let Some(group) = grouped.get_mut(&row.profile_id) {
            group.push(row);
        }
    }
    Ok(grouped
        .into_iter()
        .map(|(id, rows)| (id, Fetched::new(rows, request)))
        .collect())
}

pub async fn by_id(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<opportunity::Model>, DbErr> {
    opportunity::Entity::find_by_id(id).one(conn).await
}

pub async fn insert(
    conn: &impl ConnectionTrait,
    model: opportunity::Model,
) -> Result<opportunity::Model, DbErr> {
    opportunity::Entity::insert(model.clone().into_active_model())
        .exec_without_returning(conn)
        .await?;
    Ok(model)
}

/// Writes every column of `model` over the stored row.
pub async fn update(
    conn: &impl ConnectionTrait,
    model: opportunity::Model,
) -> Result<opportunity::Model, DbErr> {
    model.into_active_model().reset_all().update(conn).await
}

/// Deletes an opportunity; false when there was none.
pub async fn delete(conn: &impl ConnectionTrait, id: &str) -> Result<bool, DbErr> {
    Ok(opportunity::Entity::delete_by_id(id)
        .exec(conn)
        .await?
        .rows_affected
        > 0)
}
