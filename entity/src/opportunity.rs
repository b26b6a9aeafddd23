//! `opportunities`: a prospective funder of one profile.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::StringList;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "opportunities")]
pub struct Model {
    /// `opp_` + 12 lowercase hex chars when generated.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub profile_id: String,
    pub organization_name: String,
    pub ein: Option<String>,
    /// discovery, prospects, qualified_prospects, candidates, targets, opportunities
    pub current_stage: String,
    /// 0..1
    pub overall_score: f64,
    pub confidence_level: Option<f64>,
    /// low, medium, high, urgent
    pub priority_level: Option<String>,
    /// 1..5
    pub user_rating: Option<i16>,
    /// commercial, government, state, nonprofit
    pub source: Option<String>,
    pub award_floor: Option<i64>,
    pub award_ceiling: Option<i64>,
    pub close_date: Option<Date>,
    #[sea_orm(column_type = "JsonBinary")]
    pub tags: StringList,
    pub notes: Option<String>,
    pub discovery_date: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::profile::Entity",
        from = "Column::ProfileId",
        to = "super::profile::Column::Id",
        on_delete = "Cascade"
    )]
    Profile,
}

impl Related<super::profile::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Profile.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
