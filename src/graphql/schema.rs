//! Builds `AppSchema` from the per-type roots.

use async_graphql::{EmptySubscription, MergedObject, Schema};

use super::ApiContext;
use super::cache_stats::CacheStatsQuery;
use super::limits::{RECURSION_DEPTH, RequestLimits};
use super::opportunity::{OpportunityMutation, OpportunityQuery};
use super::profile::{ProfileMutation, ProfileQuery};
use crate::config::ApiConfig;

/// Every query of the API: profiles and opportunities, one by one or as Relay connections.
#[derive(MergedObject, Default)]
pub struct QueryRoot(ProfileQuery, OpportunityQuery, CacheStatsQuery);

/// Every mutation of the API: create, change and delete profiles and
/// opportunities. Each is null when it fails, with its error in `errors`,
/// so that the others of one document, which run in order, keep their
/// answers.
#[derive(MergedObject, Default)]
pub struct MutationRoot(ProfileMutation, OpportunityMutation);

pub type AppSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// The schema with its limits; `context` is absent only when printing the SDL.
pub fn build(config: &ApiConfig, context: Option<ApiContext>) -> AppSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .limit_depth(config.max_depth)
    .limit_complexity(config.max_complexity)
    .limit_recursive_depth(RECURSION_DEPTH);
    if config.disable_introspection {
        builder = builder.disable_introspection();
    }
    if let Some(context) = context {
        builder = builder.data(context);
    }
    builder.finish()
}

/// What [`RequestLimits::check`] measures a document against before the
/// schema runs it.
pub fn limits(config: &ApiConfig) -> RequestLimits {
    RequestLimits {
        max_root_fields: config.max_root_fields,
        // Every field costs at least 1: a document over this would fail the
        // complexity check anyway, after far more work.
        max_expanded_fields: config.max_complexity,
        introspection: !config.disable_introspection,
    }
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build(&ApiConfig::default(), None).sdl()
}
