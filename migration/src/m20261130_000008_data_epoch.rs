use sea_orm_migration::prelude::*;

/// One counter that every write made outside a server (an import, a seed)
/// raises in its own transaction. Servers invalidate precisely what their
/// own writes touch; of writes made elsewhere they learn only through this
/// counter, which each of them polls, dropping every cached result when it
/// moves.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DataEpoch {
    Table,
    Id,
    Epoch,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DataEpoch::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DataEpoch::Id)
                            .integer()
                            .not_null()
                            .primary_key()
                            // One row: the counter.
                            .check(Expr::col(DataEpoch::Id).eq(1)),
                    )
                    .col(
                        ColumnDef::new(DataEpoch::Epoch)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(DataEpoch::Table)
                    .columns([DataEpoch::Id, DataEpoch::Epoch])
                    .values_panic([1.into(), 0.into()])
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DataEpoch::Table).to_owned())
            .await
    }
}
