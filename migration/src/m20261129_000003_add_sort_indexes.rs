use sea_orm_migration::prelude::*;

/// Indexes that the default list orders can walk: without them a page of
/// profiles sorted by `updated_at` (the default) or by name scans and sorts
/// the whole table. `id` closes each key, as the keyset cursors do, so the
/// walk never needs a temporary B-tree.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Profiles {
    Table,
    Id,
    Name,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_profiles_updated_at_id")
                    .table(Profiles::Table)
                    .col((Profiles::UpdatedAt, IndexOrder::Desc))
                    .col(Profiles::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_profiles_name_id")
                    .table(Profiles::Table)
                    .col(Profiles::Name)
                    .col(Profiles::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["idx_profiles_updated_at_id", "idx_profiles_name_id"] {
            manager
                .drop_index(Index::drop().name(name).table(Profiles::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
