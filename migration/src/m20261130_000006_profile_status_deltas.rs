use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// PostgreSQL: the default list's total (every profile but the archived),
/// read from `profile_status_counts` as on SQLite (m20261130_000005) instead
/// of counted: `count(*)` walks an index of every profile, 2.2 ms at 10,000
/// profiles and growing with the table, on every uncached page.
///
/// Here the table holds deltas, not one row per status: each statement
/// that inserts, deletes or changes the status of profiles appends its net
/// change per status (statement triggers over transition tables), and a
/// status's count is the sum of its rows. One counter row per status would
/// make every concurrent writer queue on it, and two writers touching two
/// statuses in opposite orders deadlock; appended rows never conflict. The
/// reader that finds too many rows folds them into one per status
/// (`store::profiles::count`).
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    r#"CREATE TABLE IF NOT EXISTS "profile_status_counts" (
        "status" varchar NOT NULL,
        "n" bigint NOT NULL
    )"#,
    r#"DELETE FROM "profile_status_counts""#,
    r#"INSERT INTO "profile_status_counts" ("status", "n")
        SELECT "status", COUNT(*) FROM "profiles" GROUP BY "status""#,
    r#"CREATE OR REPLACE FUNCTION "profile_status_deltas"() RETURNS trigger
        LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO "profile_status_counts" ("status", "n")
                SELECT "status", COUNT(*) FROM "new_rows" GROUP BY "status";
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO "profile_status_counts" ("status", "n")
                SELECT "status", -COUNT(*) FROM "old_rows" GROUP BY "status";
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO "profile_status_counts" ("status", "n")
                SELECT "status", SUM("d") FROM (
                    SELECT "status", 1 AS "d" FROM "new_rows"
                    UNION ALL SELECT "status", -1 FROM "old_rows"
                ) AS "changed" GROUP BY "status" HAVING SUM("d") <> 0;
        ELSE
            DELETE FROM "profile_status_counts";
        END IF;
        RETURN NULL;
    END $$"#,
    r#"DROP TRIGGER IF EXISTS "profiles_count_insert" ON "profiles""#,
    r#"CREATE TRIGGER "profiles_count_insert" AFTER INSERT ON "profiles"
        REFERENCING NEW TABLE AS "new_rows"
        FOR EACH STATEMENT EXECUTE FUNCTION "profile_status_deltas"()"#,
    r#"DROP TRIGGER IF EXISTS "profiles_count_delete" ON "profiles""#,
    r#"CREATE TRIGGER "profiles_count_delete" AFTER DELETE ON "profiles"
        REFERENCING OLD TABLE AS "old_rows"
        FOR EACH STATEMENT EXECUTE FUNCTION "profile_status_deltas"()"#,
    // Transition tables rule out `UPDATE OF "status"`: every update
    // statement runs it, and appends a row only when a status changed.
    r#"DROP TRIGGER IF EXISTS "profiles_count_update" ON "profiles""#,
    r#"CREATE TRIGGER "profiles_count_update" AFTER UPDATE ON "profiles"
        REFERENCING OLD TABLE AS "old_rows" NEW TABLE AS "new_rows"
        FOR EACH STATEMENT EXECUTE FUNCTION "profile_status_deltas"()"#,
    r#"DROP TRIGGER IF EXISTS "profiles_count_truncate" ON "profiles""#,
    r#"CREATE TRIGGER "profiles_count_truncate" AFTER TRUNCATE ON "profiles"
        FOR EACH STATEMENT EXECUTE FUNCTION "profile_status_deltas"()"#,
];

const DOWN: &[&str] = &[
    r#"DROP TRIGGER IF EXISTS "profiles_count_truncate" ON "profiles""#,
    r#"DROP TRIGGER IF EXISTS "profiles_count_update" ON "profiles""#,
    r#"DROP TRIGGER IF EXISTS "profiles_count_delete" ON "profiles""#,
    r#"DROP TRIGGER IF EXISTS "profiles_count_insert" ON "profiles""#,
    r#"DROP FUNCTION IF EXISTS "profile_status_deltas"()"#,
    r#"DROP TABLE IF EXISTS "profile_status_counts""#,
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on(manager, DatabaseBackend::Postgres, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on(manager, DatabaseBackend::Postgres, DOWN).await
    }
}
