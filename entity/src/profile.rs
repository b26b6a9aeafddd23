//! `profiles`: an organisation doing grant research.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::StringList;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "profiles")]
pub struct Model {
    /// `profile_` + 12 lowercase hex chars when generated.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    /// nonprofit, foundation, government, corporate
    pub organization_type: String,
    /// 9 digits without dash; unique when present.
    #[sea_orm(unique)]
    pub ein: Option<String>,
    pub mission_statement: Option<String>,
    /// active, draft, archived, template
    pub status: String,
    pub keywords: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub focus_areas: StringList,
    #[sea_orm(column_type = "JsonBinary")]
    pub ntee_codes: StringList,
    pub city: Option<String>,
    pub state: Option<String>,
    pub annual_revenue: Option<i64>,
    pub website_url: Option<String>,
    pub last_discovery_date: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::opportunity::Entity")]
    Opportunity,
}

impl Related<super::opportunity::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Opportunity.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
