use sea_orm_migration::prelude::*;

use crate::m20261129_000001_create_profiles_table::Profiles;
use crate::{null_or_ein, null_or_one_of, one_of};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone)]
enum Opportunities {
    Table,
    Id,
    ProfileId,
    OrganizationName,
    Ein,
    CurrentStage,
    OverallScore,
    ConfidenceLevel,
    PriorityLevel,
    UserRating,
    Source,
    AwardFloor,
    AwardCeiling,
    CloseDate,
    Tags,
    Notes,
    DiscoveryDate,
    CreatedAt,
    UpdatedAt,
}

const STAGES: &[&str] = &[
    "discovery",
    "prospects",
    "qualified_prospects",
    "candidates",
    "targets",
    "opportunities",
];
const PRIORITIES: &[&str] = &["low", "medium", "high", "urgent"];
const SOURCES: &[&str] = &["commercial", "government", "state", "nonprofit"];

fn unit_interval(column: Opportunities) -> SimpleExpr {
    Expr::col(column.clone())
        .is_null()
        .or(Expr::col(column).between(0.0, 1.0))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use Opportunities as O;
        manager
            .create_table(
                Table::create()
                    .table(O::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(O::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(O::ProfileId).string().not_null())
                    .col(ColumnDef::new(O::OrganizationName).string().not_null())
                    .col(ColumnDef::new(O::Ein).string().null())
                    .col(
                        ColumnDef::new(O::CurrentStage)
                            .string()
                            .not_null()
                            .default("discovery"),
                    )
                    .col(
                        ColumnDef::new(O::OverallScore)
                            .double()
                            .not_null()
                            .default(0.0),
                    )
                    .col(ColumnDef::new(O::ConfidenceLevel).double().null())
                    .col(ColumnDef::new(O::PriorityLevel).string().null())
                    .col(ColumnDef::new(O::UserRating).small_integer().null())
                    .col(ColumnDef::new(O::Source).string().null())
                    .col(ColumnDef::new(O::AwardFloor).big_integer().null())
                    .col(ColumnDef::new(O::AwardCeiling).big_integer().null())
                    .col(ColumnDef::new(O::CloseDate).date().null())
                    .col(
                        ColumnDef::new(O::Tags)
                            .json_binary()
                            .not_null()
                            .default("[]"),
                    )
                    .col(ColumnDef::new(O::Notes).text().null())
                    .col(
                        ColumnDef::new(O::DiscoveryDate)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(O::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(O::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_opportunities_profile_id")
                            .from(O::Table, O::ProfileId)
                            .to(Profiles::Table, Profiles::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .check(one_of(O::CurrentStage, STAGES))
                    .check(Expr::col(O::OverallScore).between(0.0, 1.0))
                    .check(unit_interval(O::ConfidenceLevel))
                    .check(null_or_one_of(O::PriorityLevel, PRIORITIES))
                    .check(null_or_one_of(O::Source, SOURCES))
                    .check(
                        Expr::col(O::UserRating)
                            .is_null()
                            .or(Expr::col(O::UserRating).between(1, 5)),
                    )
                    .check(
                        Expr::col(O::AwardFloor)
                            .is_null()
                            .or(Expr::col(O::AwardCeiling).is_null())
                            .or(Expr::col(O::AwardFloor).lte(Expr::col(O::AwardCeiling))),
                    )
                    .check(null_or_ein(O::Ein))
                    .to_owned(),
            )
            .await?;

        // Per-profile lookups (counts, stage filters, the top-N by score that
        // nested pages walk) lead with profile_id; `id` closes each sort key so
        // keyset pages never need a temp B-tree.
        let indexes: &[(&str, &[(O, Option<IndexOrder>)])] = &[
            ("idx_opportunities_profile_id", &[(O::ProfileId, None)]),
            (
                "idx_opportunities_profile_stage",
                &[(O::ProfileId, None), (O::CurrentStage, None)],
            ),
            (
                "idx_opportunities_profile_score",
                &[
                    (O::ProfileId, None),
                    (O::OverallScore, Some(IndexOrder::Desc)),
                    (O::Id, None),
                ],
            ),
            ("idx_opportunities_close_date", &[(O::CloseDate, None)]),
            (
                "idx_opportunities_stage_score",
                &[
                    (O::CurrentStage, None),
                    (O::OverallScore, Some(IndexOrder::Desc)),
                ],
            ),
        ];
        for (name, columns) in indexes {
            let mut index = Index::create();
            index.name(*name).table(O::Table).if_not_exists();
            for (column, order) in columns.iter() {
                match order {
                    Some(order) => index.col((column.clone(), order.clone())),
                    None => index.col(column.clone()),
                };
            }
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(O::Table).if_exists().to_owned())
            .await
    }
}

use Opportunities as O;
