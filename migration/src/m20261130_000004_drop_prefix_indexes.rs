use sea_orm_migration::prelude::*;

/// Drops two indexes that are prefixes of wider ones: `(profile_id)` of
/// `(profile_id, current_stage)` and `(profile_id, overall_score DESC, id)`,
/// `(name)` of `(name, id)`. Every lookup, count and foreign-key check they
/// served walks the wider index as well, and each index costs on every
/// write and on every bulk load.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Profiles {
    Table,
    Name,
}

#[derive(DeriveIden)]
enum Opportunities {
    Table,
    ProfileId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_opportunities_profile_id")
                    .table(Opportunities::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_profiles_name")
                    .table(Profiles::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_opportunities_profile_id")
                    .table(Opportunities::Table)
                    .col(Opportunities::ProfileId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_profiles_name")
                    .table(Profiles::Table)
                    .col(Profiles::Name)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}
