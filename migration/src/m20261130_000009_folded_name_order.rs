use sea_orm_migration::prelude::*;

/// Profiles sort by name whatever its case, as `lower(name)` then `id`, so
/// that names imported in capitals (the IRS master file's) and names typed by
/// people sort together; the index on `(name, id)` gave byte order, where
/// every capital comes before every small letter. The page query orders by
/// the same expression, which both databases then walk in this index.
#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD: &str = "idx_profiles_name_id";
const NEW: &str = "idx_profiles_folded_name_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        reorder(manager, NEW, r#"lower("name"), "id""#, OLD).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        reorder(manager, OLD, r#""name", "id""#, NEW).await
    }
}

/// Creates the index `name` on profiles' `columns` in place of `old`, and
/// raises the data epoch: pages cached in the other order (on disk, in
/// Redis) must not outlive the change, and a new epoch leaves every cached
/// result behind.
async fn reorder(
    manager: &SchemaManager<'_>,
    name: &str,
    columns: &str,
    old: &str,
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    db.execute_unprepared(&format!(
        r#"CREATE INDEX IF NOT EXISTS "{name}" ON "profiles" ({columns})"#
    ))
    .await?;
    db.execute_unprepared(&format!(r#"DROP INDEX IF EXISTS "{old}""#))
        .await?;
    db.execute_unprepared(r#"UPDATE "data_epoch" SET "epoch" = "epoch" + 1"#)
        .await?;
    Ok(())
}
