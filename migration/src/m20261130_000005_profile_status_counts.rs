use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// SQLite: profiles per status, kept by triggers, so that the default
/// list's total (every profile but the archived) is read, not counted.
/// SQLite counts rows by walking a whole index: at a million profiles that
/// is thousands of pages per uncached page of results, and it needs a page
/// cache big enough to hold them. With one writer at a time the counter
/// rows cost nothing in contention. PostgreSQL is left as it is: there
/// every concurrent writer would queue on the same counter row.
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    r#"CREATE TABLE IF NOT EXISTS "profile_status_counts" (
        "status" varchar NOT NULL PRIMARY KEY,
        "n" integer NOT NULL
    ) WITHOUT ROWID"#,
    r#"DELETE FROM "profile_status_counts""#,
    r#"INSERT INTO "profile_status_counts" ("status", "n")
        SELECT "status", COUNT(*) FROM "profiles" GROUP BY "status""#,
    r#"CREATE TRIGGER IF NOT EXISTS "profiles_count_insert" AFTER INSERT ON "profiles" BEGIN
        INSERT INTO "profile_status_counts" ("status", "n") VALUES (NEW."status", 1)
            ON CONFLICT ("status") DO UPDATE SET "n" = "n" + 1;
    END"#,
    r#"CREATE TRIGGER IF NOT EXISTS "profiles_count_delete" AFTER DELETE ON "profiles" BEGIN
        UPDATE "profile_status_counts" SET "n" = "n" - 1 WHERE "status" = OLD."status";
    END"#,
    r#"CREATE TRIGGER IF NOT EXISTS "profiles_count_status" AFTER UPDATE OF "status" ON "profiles"
        WHEN OLD."status" IS NOT NEW."status" BEGIN
        UPDATE "profile_status_counts" SET "n" = "n" - 1 WHERE "status" = OLD."status";
        INSERT INTO "profile_status_counts" ("status", "n") VALUES (NEW."status", 1)
            ON CONFLICT ("status") DO UPDATE SET "n" = "n" + 1;
    END"#,
];

const DOWN: &[&str] = &[
    r#"DROP TRIGGER IF EXISTS "profiles_count_status""#,
    r#"DROP TRIGGER IF EXISTS "profiles_count_delete""#,
    r#"DROP TRIGGER IF EXISTS "profiles_count_insert""#,
    r#"DROP TABLE IF EXISTS "profile_status_counts""#,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on(manager, DatabaseBackend::Sqlite, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on(manager, DatabaseBackend::Sqlite, DOWN).await
    }
}
