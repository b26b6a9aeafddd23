//! sea-orm entities for the two tables of the grant-research domain.
//!
//! Column names follow the original Catalynx platform so that its data maps
//! one to one (see DOMAIN.md).

pub mod opportunity;
pub mod profile;

use sea_orm::FromJsonQueryResult;
use serde::{Deserialize, Serialize};

/// A JSON list of strings (`focus_areas`, `ntee_codes`, `tags`).
///
/// Stored as JSON text on SQLite and `jsonb` on PostgreSQL.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, FromJsonQueryResult,
)]
pub struct StringList(pub Vec<String>);

impl From<Vec<String>> for StringList {
    fn from(v: Vec<String>) -> Self {
        Self(v)
    }
}
