//! The seed platform's REST endpoints, so that its existing frontend works
//! unchanged: snake_case columns as in its tables, `profile_id`, counts
//! computed (never stored), offset paging.
//!
//! - `GET /api/profiles?limit=&offset=&status=` → `{ profiles, total_count }`
//! - `GET /api/profiles/database` → the same plus `"source": "database_optimized"`
//! - `GET /api/profiles/{id}` → the profile (404 when missing)
//! - `GET /api/profiles/{id}/opportunities?limit=&offset=&stage=` → `{ opportunities, total_count, profile_id }`
//!
//! Errors are `{ "detail": message, "code": CODE }` with a 4xx status.
//! Responses carry an ETag and answer 304 as GraphQL reads do.

use async_graphql::CacheControl;
use axum::Router;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::get;
use entity::{opportunity, profile};
use serde::{Deserialize, Serialize};

use crate::cache::Tag;
use crate::domain::{DbEnum, ProfileStatus, Stage};
use crate::error::{AppError, AppResult};
use crate::http::caching::{self, Cacheability};
use crate::server::AppState;
use crate::store::listings::{self, ProfileWithCount};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/profiles", get(list_profiles))
        .route("/api/profiles/database", get(list_profiles_database))
        .route("/api/profiles/{id}", get(get_profile))
        .route("/api/profiles/{id}/opportunities", get(list_opportunities))
}

/// Query parameters as text, validated one by one into clear 400s.
#[derive(Deserialize, Default)]
struct Params {
    limit: Option<String>,
    offset: Option<String>,
    status: Option<String>,
    stage: Option<String>,
}

impl Params {
    fn parse(raw: Option<String>) -> AppResult<Self> {
        serde_urlencoded::from_str(raw.as_deref().unwrap_or_default())
            .map_err(|e| AppError::bad_input(format!("invalid query string: {e}")))
    }

    fn limit(&self, state: &AppState) -> AppResult<u64> {
        let max = u64::from(state.api().max_page_size);
        match self.limit.as_deref() {
            None => Ok(u64::from(state.api().default_page_size).min(max)),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    AppError::bad_input(format!(
                        "limit must be a whole number from 1 to {max}, got {text:?}"
                    ))
                }),
        }
    }

    fn offset(&self) -> AppResult<u64> {
        match self.offset.as_deref() {
            None => Ok(0),
            // The databases take a signed 64-bit OFFSET.
            Some(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| i64::try_from(n).is_ok())
                .ok_or_else(|| {
                    AppError::bad_input(format!(
                        "offset must be a whole number from 0 to {}, got {text:?}",
                        i64::MAX
                    ))
                }),
        }
    }

    fn status(&self) -> AppResult<Option<ProfileStatus>> {
        self.status
            .as_deref()
            .map(known::<ProfileStatus>)
            .transpose()
    }

    fn stage(&self) -> AppResult<Option<Stage>> {
        self.stage.as_deref().map(known::<Stage>).transpose()
    }
}

/// One of an enumeration's stored values, or a 400 listing them.
fn known<T: DbEnum>(text: &str) -> AppResult<T> {
    T::from_db(text.trim()).ok_or_else(|| {
        let allowed: Vec<&str> = T::ALL.iter().map(|v| v.as_str()).collect();
        AppError::bad_input(format!(
            "unknown value {text:?}; expected one of {}",
            allowed.join(", ")
        ))
    })
}

/// A profile as the seed platform sent it: its columns plus `profile_id`
/// (the same as `id`) and the computed `opportunities_count`.
#[derive(Serialize)]
struct ProfileJson<'a> {
    profile_id: &'a str,
    #[serde(flatten)]
    profile: &'a profile::Model,
    opportunities_count: i64,
}

impl<'a> From<&'a ProfileWithCount> for ProfileJson<'a> {
    fn from(p: &'a ProfileWithCount) -> Self {
        Self {
            profile_id: &p.profile.id,
            profile: &p.profile,
            opportunities_count: p.opportunities_count,
        }
    }
}

/// An opportunity: its columns plus `opportunity_id` (the same as `id`).
#[derive(Serialize)]
struct OpportunityJson<'a> {
    opportunity_id: &'a str,
    #[serde(flatten)]
    opportunity: &'a opportunity::Model,
}

#[derive(Serialize)]
struct ProfileList<'a> {
    profiles: Vec<ProfileJson<'a>>,
    total_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'static str>,
}

#[derive(Serialize)]
struct OpportunityList<'a> {
    opportunities: Vec<OpportunityJson<'a>>,
    total_count: u64,
    profile_id: &'a str,
}

/// Stored but revalidated on every use (a cheap 304 through the ETag): the
/// seed frontend re-reads a list right after changing it and must see the change.
const REVALIDATE: CacheControl = CacheControl {
    public: true,
    max_age: 0,
};

/// A JSON read, with an ETag as for GraphQL queries.
fn respond(headers: &HeaderMap, body: &impl Serialize) -> AppResult<Response> {
    let body = serde_json::to_vec(body).map_err(anyhow::Error::new)?;
    Ok(caching::respond(
        headers,
        "application/json",
        body.into(),
        Cacheability::Read(REVALIDATE),
    ))
}

async fn profiles(
    state: &AppState,
    headers: &HeaderMap,
    raw: Option<String>,
    source: Option<&'static str>,
) -> AppResult<Response> {
    let params = Params::parse(raw)?;
    let (limit, offset, status) = (params.limit(state)?, params.offset()?, params.status()?);
    let (conn, cache) = (&state.db().read, state.cache());
    cache.sync().await;
    // Counts make the page depend on opportunities too.
    let page: Vec<ProfileWithCount> = cache
        .get_or_load(
            "rest.profiles",
            &(status, limit, offset),
            &[Tag::Profiles, Tag::Opportunities],
            || async { Ok(listings::profiles_page(conn, status, limit, offset).await?) },
        )
        .await?;
    // The same entry as GraphQL's `profiles { totalCount }` with that filter.
    let filter = listings::status_filter(status);
    let total_count = cache
        .get_or_load("profiles.totalCount", &filter, &[Tag::Profiles], || async {
            Ok(listings::profiles_total(conn, status).await?)
        })
        .await?;
    let list = ProfileList {
        profiles: page.iter().map(ProfileJson::from).collect(),
        total_count,
        source,
    };
    respond(headers, &list)
}

async fn list_profiles(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> AppResult<Response> {
    profiles(&state, &headers, raw, None).await
}

/// The seed platform's "straight from the database" variant; here every
/// listing is, so it differs only by its `source` marker.
async fn list_profiles_database(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> AppResult<Response> {
    profiles(&state, &headers, raw, Some("database_optimized")).await
}

/// The id in the path. axum answers a path it cannot decode (`%FF`) in
/// plain text; this answers it as every other bad request here.
struct IdPath(String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Self(id))
            .map_err(|e| AppError::bad_input(e.body_text()))
    }
}

async fn get_profile(
    State(state): State<AppState>,
    headers: HeaderMap,
    IdPath(id): IdPath,
) -> AppResult<Response> {
    let cache = state.cache();
    cache.sync().await;
    let found: Option<ProfileWithCount> = cache
        .get_or_load(
            "rest.profile",
            &id,
            &[Tag::Profile(&id), Tag::ProfileOpportunities(&id)],
            || async { Ok(listings::profile(&state.db().read, &id).await?) },
        )
        .await?;
    let found = found.ok_or_else(|| AppError::not_found("profile", &id))?;
    respond(&headers, &ProfileJson::from(&found))
}

async fn list_opportunities(
    State(state): State<AppState>,
    headers: HeaderMap,
    IdPath(id): IdPath,
    RawQuery(raw): RawQuery,
) -> AppResult<Response> {
    let params = Params::parse(raw)?;
    let (limit, offset, stage) = (params.limit(&state)?, params.offset()?, params.stage()?);
    let (conn, cache) = (&state.db().read, state.cache());
    cache.sync().await;
    let tags = [Tag::ProfileOpportunities(&id), Tag::Profile(&id)];
    let (page, total_count, exists): (Vec<entity::opportunity::Model>, u64, bool) = cache
        .get_or_load(
            "rest.opportunities",
            &(&id, stage, limit, offset),
            &tags,
            || async {
                let page = listings::opportunities_page(conn, &id, stage, limit, offset).await?;
                let total = listings::opportunities_total(conn, &id, stage).await?;
                // Only an empty answer needs to ask whether the profile exists at all.
                let exists = total > 0 || crate::store::profiles::exists(conn, &id).await?;
                Ok((page, total, exists))
            },
        )
        .await?;
    if !exists {
        return Err(AppError::not_found("profile", &id));
    }
    let list = OpportunityList {
        opportunities: page
            .iter()
            .map(|o| OpportunityJson {
                opportunity_id: &o.id,
                opportunity: o,
            })
            .collect(),
        total_count,
        profile_id: &id,
    };
    respond(&headers, &list)
}
