//! Offset-paged listings with opportunity counts, in the shapes the seed
//! platform's REST endpoints return.
//!
//! The count is a correlated subquery over a page chosen first in a derived
//! table, so only the page's rows are counted: the seed platform's
//! `LEFT JOIN ... GROUP BY` counted every opportunity before cutting the page.

use entity::{opportunity, profile};
use sea_orm::sea_query::{Alias, Asterisk, Expr, Order, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::domain::{DbEnum, ProfileStatus, Stage};
use crate::store::profiles::{self, ProfileFilter};

/// A profile and the number of its opportunities.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ProfileWithCount {
    pub profile: profile::Model,
    pub opportunities_count: i64,
}

/// Profiles with `status`; without one, every status but archived.
pub fn status_filter(status: Option<ProfileStatus>) -> ProfileFilter {
    ProfileFilter {
        statuses: status.into_iter().collect(),
        ..ProfileFilter::default()
    }
}

/// `SELECT p.*, (count of p's opportunities) FROM (<page>) AS p ORDER BY <order>`.
fn with_counts(page: SelectStatement) -> SelectStatement {
    let p = Alias::new("p");
    Query::select()
        .column((p.clone(), Asterisk))
        .expr_as(
            Expr::cust(
                r#"(SELECT COUNT(*) FROM "opportunities" WHERE "opportunities"."profile_id" = "p"."id")"#,
            ),
            Alias::new("opportunities_count"),
        )
        .from_subquery(page, p.clone())
        .order_by((p.clone(), profile::Column::UpdatedAt), Order::Desc)
        .order_by((p, profile::Column::Id), Order::Asc)
        .to_owned()
}

async fn fetch(
    conn: &impl ConnectionTrait,
    query: &SelectStatement,
) -> Result<Vec<ProfileWithCount>, DbErr> {
    conn.query_all(query)
        .await?
        .iter()
        .map(|row| {
            Ok(ProfileWithCount {
                profile: profile::Model::from_query_result(row, "")?,
                opportunities_count: row.try_get("", "opportunities_count")?,
            })
        })
        .collect()
}

/// One page of profiles, newest change first, each with its opportunity count.
// SELECT p.*, (SELECT COUNT(*) FROM opportunities WHERE profile_id = p.id) AS opportunities_count
// FROM (SELECT * FROM profiles WHERE <status> ORDER BY updated_at DESC, id LIMIT ? OFFSET ?) AS p
// ORDER BY p.updated_at DESC, p.id
pub async fn profiles_page(
    conn: &impl ConnectionTrait,
    status: Option<ProfileStatus>,
    limit: u64,
    offset: u64,
) -> Result<Vec<ProfileWithCount>, DbErr> {
    let page = Query::select()
        .column(Asterisk)
        .from(profile::Entity)
        .cond_where(status_filter(status).condition(conn.get_database_backend()))
        .order_by(profile::Column::UpdatedAt, Order::Desc)
        .order_by(profile::Column::Id, Order::Asc)
        .limit(limit)
        .offset(offset)
        .to_owned();
    fetch(conn, &with_counts(page)).await
}

/// Profiles that `profiles_page` pages through.
pub async fn profiles_total(
    conn: &impl ConnectionTrait,
    status: Option<ProfileStatus>,
) -> Result<u64, DbErr> {
    profiles::count(conn, &status_filter(status)).await
}

/// One profile with its opportunity count, in one statement.
pub async fn profile(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<ProfileWithCount>, DbErr> {
    let page = Query::select()
        .column(Asterisk)
        .from(profile::Entity)
        .and_where(profile::Column::Id.eq(id))
        .to_owned();
    Ok(fetch(conn, &with_counts(page)).await?.into_iter().next())
}

fn opportunities_of(
    profile_id: &str,
    stage: Option<Stage>,
) -> sea_orm::Select<opportunity::Entity> {
    let mut query =
        opportunity::Entity::find().filter(opportunity::Column::ProfileId.eq(profile_id));
    if let Some(stage) = stage {
        query = query.filter(opportunity::Column::CurrentStage.eq(stage.as_str()));
    }
    query
}

/// A profile's opportunities, best score first, optionally in one stage.
// SELECT * FROM opportunities WHERE profile_id = ? [AND current_stage = ?]
// ORDER BY overall_score DESC, id LIMIT ?
pub async fn opportunities_page(
    conn: &impl ConnectionTrait,
    profile_id: &str,
    stage: Option<Stage>,
    limit: u64,
    offset: u64,
) -> Result<Vec<opportunity::Model>, DbErr> {
    opportunities_of(profile_id, stage)
        .order_by_desc(opportunity::Column::OverallScore)
        .order_by_asc(opportunity::Column::Id)
        .limit(limit)
        .offset(offset)
        .all(conn)
        .await
}

/// How many opportunities `opportunities_page` pages through.
pub async fn opportunities_total(
    conn: &impl ConnectionTrait,
    profile_id: &str,
    stage: Option<Stage>,
) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    opportunities_of(profile_id, stage).count(conn).await
}
