//! Migrations, foreign keys, SQLite tuning, seeding and CLI configuration errors.

use sea_orm::{ConnectionTrait, Statement};
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, TestDb, seed};

async fn migrations_are_idempotent(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = test_db.connect().await;
    db.migrate().await.expect("second run is a no-op");
    let applied = db
        .read
        .query_one_raw(Statement::from_string(
            db.backend(),
            "SELECT COUNT(*) FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    use migration::MigratorTrait;
    assert_eq!(applied as usize, migration::Migrator::migrations().len());
    for table in ["profiles", "opportunities"] {
        db.read
            .execute_unprepared(&format!("SELECT COUNT(*) FROM {table}"))
            .await
            .unwrap_or_else(|e| panic!("{table} missing: {e}"));
    }
    test_db.cleanup().await;
}

#[tokio::test]
async fn migrations_run_twice_on_sqlite() {
    migrations_are_idempotent(Backend::Sqlite).await;
}

#[tokio::test]
async fn migrations_run_twice_on_postgres() {
    migrations_are_idempotent(Backend::Postgres).await;
}

async fn deleting_a_profile_deletes_its_opportunities(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = test_db.connect().await;
    let now = "'2026-01-01T00:00:00+00:00'";
    for sql in [
        format!(
            "INSERT INTO profiles (id, name, organization_type, status, focus_areas, ntee_codes, created_at, updated_at) VALUES ('p1', 'A', 'nonprofit', 'active', '[]', '[]', {now}, {now})"
        ),
        format!(
            "INSERT INTO profiles (id, name, organization_type, status, focus_areas, ntee_codes, created_at, updated_at) VALUES ('p2', 'B', 'nonprofit', 'active', '[]', '[]', {now}, {now})"
        ),
        format!(
            "INSERT INTO opportunities (id, profile_id, organization_name, current_stage, overall_score, tags, discovery_date, created_at, updated_at) VALUES ('o1', 'p1', 'F', 'discovery', 0.5, '[]', {now}, {now}, {now})"
        ),
        format!(
            "INSERT INTO opportunities (id, profile_id, organization_name, current_stage, overall_score, tags, discovery_date, created_at, updated_at) VALUES ('o2', 'p2', 'F', 'discovery', 0.5, '[]', {now}, {now}, {now})"
        ),
    ] {
        db.write.execute_unprepared(&sql).await.unwrap();
    }
    db.write
        .execute_unprepared("DELETE FROM profiles WHERE id = 'p1'")
        .await
        .unwrap();
    let left = db
        .read
        .query_all_raw(Statement::from_string(
            db.backend(),
            "SELECT id FROM opportunities",
        ))
        .await
        .unwrap();
    let ids: Vec<String> = left
        .iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect();
    assert_eq!(ids, vec!["o2".to_owned()]);
    // An orphan is refused.
    let orphan = db
        .write
        .execute_unprepared(&format!("INSERT INTO opportunities (id, profile_id, organization_name, current_stage, overall_score, tags, discovery_date, created_at, updated_at) VALUES ('o3', 'nope', 'F', 'discovery', 0.5, '[]', {now}, {now}, {now})"))
        .await;
    assert!(orphan.is_err(), "foreign key not enforced");
    // CHECK constraints hold on both databases.
    let bad_score = db
        .write
        .execute_unprepared(&format!("INSERT INTO opportunities (id, profile_id, organization_name, current_stage, overall_score, tags, discovery_date, created_at, updated_at) VALUES ('o4', 'p2', 'F', 'discovery', 1.5, '[]', {now}, {now}, {now})"))
        .await;
    assert!(bad_score.is_err(), "score CHECK not enforced");
    test_db.cleanup().await;
}

#[tokio::test]
async fn foreign_key_cascades_on_sqlite() {
    deleting_a_profile_deletes_its_opportunities(Backend::Sqlite).await;
}

#[tokio::test]
async fn foreign_key_cascades_on_postgres() {
    deleting_a_profile_deletes_its_opportunities(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pooled_sqlite_connection_is_tuned() {
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    // The default page-cache budget, 32 MiB, is shared by 8 readers and the writer.
    let cache_size = format!("-{}", 32 * 1024 / 9);
    let expected = [
        ("journal_mode", "wal"),
        ("synchronous", "1"),
        ("foreign_keys", "1"),
        ("busy_timeout", "5000"),
        ("cache_size", cache_size.as_str()),
        ("temp_store", "2"),
        ("mmap_size", "268435456"),
        // Set when the file was created (this one is new).
        ("page_size", "16384"),
    ];
    for pool in [
        db.read.get_sqlite_connection_pool(),
        db.write.get_sqlite_connection_pool(),
    ] {
        // Hold several connections at once so that each is a distinct one.
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections().min(6) {
            held.push(pool.acquire().await.unwrap());
        }
        for conn in held.iter_mut() {
            for (pragma, want) in expected {
                use sea_orm::sqlx::Row;
                let sql = sea_orm::sqlx::AssertSqlSafe(format!("PRAGMA {pragma}"));
                let row = sea_orm::sqlx::query(sql)
                    .fetch_one(&mut **conn)
                    .await
                    .unwrap();
                let got = row
                    .try_get::<String, _>(0)
                    .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                    .unwrap();
                assert_eq!(got, want, "PRAGMA {pragma}");
            }
        }
    }
}

/// SQLite's plan for `statement`, one line per step.
async fn sqlite_plan(db: &catalynx::db::Db, statement: Statement) -> String {
    let explain = Statement::from_sql_and_values(
        statement.db_backend,
        format!("EXPLAIN QUERY PLAN {}", statement.sql),
        statement.values.map(|values| values.0).unwrap_or_default(),
    );
    let rows = db.read.query_all_raw(explain).await.unwrap();
    rows.iter()
        .map(|row| row.try_get_by_index::<String>(3).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pipeline view across profiles: two stages, a three-month deadline
/// window, by score, 50 to a page.
fn pipeline_view() -> (
    catalynx::store::opportunities::OpportunityFilter,
    Vec<catalynx::store::page::SortKey>,
    catalynx::store::page::PageRequest,
) {
    use catalynx::domain::Stage;
    use catalynx::store::opportunities::{OpportunityFilter, OpportunityOrderField, sort_keys};
    use chrono::NaiveDate;

    let filter = OpportunityFilter {
        stages: vec![Stage::QualifiedProspects, Stage::Candidates],
        close_date_from: NaiveDate::from_ymd_opt(2026, 6, 1),
        close_date_to: NaiveDate::from_ymd_opt(2026, 8, 31),
        ..Default::default()
    };
    let keys = sort_keys(&[(OpportunityOrderField::OverallScore, true)]);
    let request = catalynx::store::page::PageRequest {
        limit: 50,
        backward: false,
        cursor: None,
    };
    (filter, keys, request)
}

/// The pipeline view searches one range per stage in the index the
/// migrations add for it, instead of every row of the stages or of the
/// window: its count reads the index alone, and its page neither scans the
/// table nor falls back to the stage-and-score index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_opportunity_lists_search_the_stage_window_index() {
    use catalynx::store::opportunities::{count_query, page_query};

    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    let backend = db.backend();
    let (filter, keys, request) = pipeline_view();
    let count = sqlite_plan(&db, count_query(backend, &filter)).await;
    assert_eq!(
        count,
        "SEARCH opportunities USING COVERING INDEX idx_opportunities_stage_close_score \
         (current_stage=? AND close_date>? AND close_date<?)"
    );
    let page = sqlite_plan(&db, page_query(backend, &filter, &keys, &request).unwrap()).await;
    assert!(
        page.starts_with(
            "SEARCH opportunities USING INDEX idx_opportunities_stage_close_score \
             (current_stage=? AND close_date>? AND close_date<?)"
        ),
        "{page}"
    );
}

/// A page of profiles by name walks the index on the folded name, from the
/// start and from a cursor, instead of sorting every profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_pages_walk_the_folded_name_index() {
    use catalynx::store::page::{PageRequest, SortValue, encode_cursor};
    use catalynx::store::profiles::{
        ProfileColumns, ProfileFilter, ProfileOrderField, page_query, sort_keys,
    };

    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    let keys = sort_keys(&[(ProfileOrderField::Name, false)]);
    let cursor = encode_cursor(
        &keys,
        vec![
            SortValue::Text("Harbor Food Bank".into()),
            SortValue::Text("profile_000000000001".into()),
        ],
    );
    for (cursor, want) in [
        (
            None,
            "SCAN profiles USING INDEX idx_profiles_folded_name_id",
        ),
        (
            Some(cursor),
            "SEARCH profiles USING INDEX idx_profiles_folded_name_id (<expr>>?)",
        ),
    ] {
        let request = PageRequest {
            limit: 50,
            backward: false,
            cursor,
        };
        let statement = page_query(
            db.backend(),
            &ProfileFilter::default(),
            &keys,
            &request,
            ProfileColumns::all(),
        )
        .unwrap();
        assert_eq!(sqlite_plan(&db, statement).await, want);
    }
}

/// On PostgreSQL the pipeline view's page ranks its matches from the index
/// alone and reads the rows of the page only, not those of every match,
/// and it is the page the plain query gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_opportunity_pages_read_only_their_rows_on_postgres() {
    use catalynx::store::opportunities::page_query;

    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let db = test_db.connect().await;
    let plan = catalynx::seed::SeedPlan {
        profiles: 1_000,
        opportunities_per_profile: 20,
        seed: 42,
    };
    catalynx::seed::seed(&db, plan, false).await.unwrap();
    let (filter, keys, request) = pipeline_view();
    let page = page_query(db.backend(), &filter, &keys, &request).unwrap();
    let explain = Statement::from_sql_and_values(
        db.backend(),
        format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", page.sql),
        page.values
            .clone()
            .map(|values| values.0)
            .unwrap_or_default(),
    );
    let plan: serde_json::Value = db
        .read
        .query_one_raw(explain)
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    let (mut rows_read, mut index_only) = (0.0, false);
    let mut nodes = vec![&plan[0]["Plan"]];
    while let Some(node) = nodes.pop() {
        let kind = node["Node Type"].as_str().unwrap();
        if node["Relation Name"] == "opportunities" {
            if kind == "Index Only Scan" {
                index_only = true;
            } else {
                rows_read +=
                    node["Actual Rows"].as_f64().unwrap() * node["Actual Loops"].as_f64().unwrap();
            }
        }
        nodes.extend(node["Plans"].as_array().into_iter().flatten());
    }
    assert!(index_only, "no index-only ranking: {plan:#}");
    assert!(rows_read <= 51.0, "{rows_read} rows read: {plan:#}");

    let paged = ids(&db, page).await;
    let plain = ids(
        &db,
        Statement::from_string(
            db.backend(),
            "SELECT id FROM opportunities WHERE current_stage IN ('qualified_prospects', 'candidates') \
             AND close_date BETWEEN '2026-06-01' AND '2026-08-31' \
             ORDER BY overall_score DESC, id LIMIT 51",
        ),
    )
    .await;
    assert_eq!(paged.len(), 51);
    assert_eq!(paged, plain);
    test_db.cleanup().await;
}

/// The `id` column of a statement's rows.
async fn ids(db: &catalynx::db::Db, statement: Statement) -> Vec<String> {
    db.read
        .query_all_raw(statement)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "id").unwrap())
        .collect()
}

async fn digest(url: &str) -> String {
    let db = catalynx::db::Db::connect(&catalynx::config::DbConfig::new(url))
        .await
        .unwrap();
    let mut hasher = Sha256::new();
    for table in ["profiles", "opportunities"] {
        let rows = db
            .read
            .query_all_raw(Statement::from_string(
                db.backend(),
                format!("SELECT * FROM {table} ORDER BY id"),
            ))
            .await
            .unwrap();
        for row in rows {
            let id: String = row.try_get("", "id").unwrap();
            let name: String = row
                .try_get(
                    "",
                    if table == "profiles" {
                        "name"
                    } else {
                        "organization_name"
                    },
                )
                .unwrap();
            let updated: String = row.try_get("", "updated_at").unwrap();
            hasher.update(format!("{id}|{name}|{updated}\n"));
        }
        hasher.update(format!("{table}: {}\n", rows_len(&db, table).await));
    }
    format!("{:x}", hasher.finalize())
}

/// Profiles per status, counted, and as the triggers keep them (one row per
/// status on SQLite, delta rows to sum on PostgreSQL).
async fn status_counts(db: &catalynx::db::Db) -> (Vec<(String, i64)>, Vec<(String, i64)>) {
    let read = |sql: &'static str| async move {
        db.read
            .query_all_raw(Statement::from_string(db.backend(), sql))
            .await
            .unwrap()
            .into_iter()
            .map(|row| {
                (
                    row.try_get_by_index::<String>(0).unwrap(),
                    row.try_get_by_index::<i64>(1).unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    (
        read(r#"SELECT "status", COUNT(*) FROM "profiles" GROUP BY "status" ORDER BY "status""#)
            .await,
        read(
            r#"SELECT "status", CAST(SUM("n") AS bigint) FROM "profile_status_counts" GROUP BY "status" HAVING SUM("n") > 0 ORDER BY "status""#,
        )
        .await,
    )
}

/// The per-status counts behind the default total follow inserts (the
/// seed's bulk load included), status changes and deletes, and are rebuilt
/// from the rows when their migrations run on an existing database.
async fn profile_status_counts_follow_every_write(backend: Backend) {
    use migration::MigratorTrait;
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = test_db.connect().await;
    let plan = catalynx::seed::SeedPlan {
        profiles: 200,
        opportunities_per_profile: 1,
        seed: 3,
    };
    catalynx::seed::seed(&db, plan, false).await.unwrap();
    let (counted, kept) = status_counts(&db).await;
    assert!(
        counted.len() >= 3,
        "the seed uses several statuses: {counted:?}"
    );
    assert_eq!(counted, kept, "after the seed");

    for sql in [
        r#"UPDATE "profiles" SET "status" = 'archived' WHERE "id" IN (SELECT "id" FROM "profiles" ORDER BY "id" LIMIT 17)"#,
        r#"UPDATE "profiles" SET "name" = "name" || '.' WHERE "id" IN (SELECT "id" FROM "profiles" ORDER BY "id" DESC LIMIT 5)"#,
        r#"DELETE FROM "profiles" WHERE "id" IN (SELECT "id" FROM "profiles" ORDER BY "id" DESC LIMIT 9)"#,
    ] {
        db.write.execute_unprepared(sql).await.unwrap();
        let (counted, kept) = status_counts(&db).await;
        assert_eq!(counted, kept, "after {sql}");
    }

    // Undo the counts' migrations (one per backend, the other a no-op
    // there) and apply them again over the rows.
    migration::Migrator::down(&db.write, Some(2)).await.unwrap();
    migration::Migrator::up(&db.write, None).await.unwrap();
    let (counted, kept) = status_counts(&db).await;
    assert_eq!(counted, kept, "rebuilt by the migration");
    db.close().await.unwrap();
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_status_counts_follow_every_write_sqlite() {
    profile_status_counts_follow_every_write(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_status_counts_follow_every_write_postgres() {
    profile_status_counts_follow_every_write(Backend::Postgres).await;
}

/// PostgreSQL keeps the counts as rows appended by each writing statement:
/// writers running side by side with readers (whose reads fold the rows)
/// neither block each other into a deadlock nor lose a change, and the
/// rows stay few.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profile_status_deltas_survive_concurrent_writers_and_folds() {
    use catalynx::store::profiles::{ProfileFilter, count};
    let Some(test_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let db = test_db.connect().await;
    let plan = catalynx::seed::SeedPlan {
        profiles: 50,
        opportunities_per_profile: 0,
        seed: 5,
    };
    catalynx::seed::seed(&db, plan, false).await.unwrap();

    const COLUMNS: &str = r#""id", "name", "organization_type", "ein", "mission_statement", "status", "keywords", "focus_areas", "ntee_codes", "city", "state", "annual_revenue", "website_url", "last_discovery_date", "created_at", "updated_at""#;
    // Each writer copies profiles under new ids and statuses, archives some
    // and deletes some, one statement at a time; readers count meanwhile.
    let writers = (0..4).map(|w| {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let sql = match i % 3 {
                    0 => format!(
                        r#"INSERT INTO "profiles" ({COLUMNS}) SELECT 'profile_w{w}x{i:03}' || substr("id", 9), "name", "organization_type", NULL, "mission_statement", CASE WHEN "status" = 'active' THEN 'draft' ELSE 'active' END, "keywords", "focus_areas", "ntee_codes", "city", "state", "annual_revenue", "website_url", "last_discovery_date", "created_at", "updated_at" FROM "profiles" WHERE "id" NOT LIKE 'profile_w%' ORDER BY "id" LIMIT 3"#
                    ),
                    1 => format!(
                        r#"UPDATE "profiles" SET "status" = 'archived' WHERE "id" LIKE 'profile_w{w}x{:03}%'"#,
                        i - 1
                    ),
                    _ => format!(
                        r#"DELETE FROM "profiles" WHERE "id" IN (SELECT "id" FROM "profiles" WHERE "id" LIKE 'profile_w{w}x{:03}%' LIMIT 1)"#,
                        i - 2
                    ),
                };
                db.write.execute_unprepared(&sql).await.unwrap();
            }
        })
    });
    let writers: Vec<_> = writers.collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    count(&db.read, &ProfileFilter::default()).await.unwrap();
                }
            })
        })
        .collect();
    for task in writers.into_iter().chain(readers) {
        task.await.unwrap();
    }

    let (counted, kept) = status_counts(&db).await;
    assert_eq!(counted, kept, "after the concurrent writes");
    let unarchived: i64 = counted
        .iter()
        .filter(|(status, _)| status != "archived")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        count(&db.read, &ProfileFilter::default()).await.unwrap(),
        unarchived as u64
    );
    // 4 x 60 statements appended up to 240 rows; the reads folded them.
    let rows = rows_len(&db, r#""profile_status_counts""#).await;
    assert!(rows <= 64 + 4, "{rows} delta rows left unfolded");
    db.close().await.unwrap();
    test_db.cleanup().await;
}

async fn rows_len(db: &catalynx::db::Db, table: &str) -> i64 {
    db.read
        .query_one_raw(Statement::from_string(
            db.backend(),
            format!("SELECT COUNT(*) FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
}

/// The SQLite seed binds values itself instead of through sea-orm and sqlx:
/// its rows must be stored exactly as sea-orm stores the same models (text
/// of timestamps, dates and JSON, storage classes), or sorting, cursors and
/// reads would tell the two apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_rows_are_stored_as_sea_orm_stores_them() {
    use entity::{opportunity, profile};
    use sea_orm::EntityTrait;
    let seeded_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let seeded = seeded_db.connect().await;
    let plan = catalynx::seed::SeedPlan {
        profiles: 160,
        opportunities_per_profile: 4,
        seed: 11,
    };
    catalynx::seed::seed(&seeded, plan, false).await.unwrap();
    let profiles = profile::Entity::find().all(&seeded.read).await.unwrap();
    let opportunities = opportunity::Entity::find().all(&seeded.read).await.unwrap();
    assert_eq!((profiles.len(), opportunities.len()), (160, 640));
    assert!(
        opportunities
            .iter()
            .any(|o| o.close_date.is_some() && !o.tags.0.is_empty()),
        "the seed fills dates and tags"
    );
    // The load skips foreign-key checks: every opportunity must still
    // name a profile of the seed.
    let orphans = seeded
        .read
        .query_all_raw(Statement::from_string(
            seeded.backend(),
            "PRAGMA foreign_key_check",
        ))
        .await
        .unwrap();
    assert!(
        orphans.is_empty(),
        "{} rows break a foreign key",
        orphans.len()
    );
    seeded.close().await.unwrap();

    let written_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let written = written_db.connect().await;
    let txn = written.begin_write().await.unwrap();
    catalynx::store::bulk::insert_many::<profile::Entity, _>(&txn, &profiles)
        .await
        .unwrap();
    catalynx::store::bulk::insert_many::<opportunity::Entity, _>(&txn, &opportunities)
        .await
        .unwrap();
    txn.commit().await.unwrap();

    // One connection (the writer) holds the attachment and runs the comparisons.
    let path = seeded_db.url.trim_start_matches("sqlite://");
    written
        .write
        .execute_unprepared(&format!("ATTACH DATABASE '{path}' AS seeded"))
        .await
        .unwrap();
    for table in ["profiles", "opportunities"] {
        for (a, b) in [("main", "seeded"), ("seeded", "main")] {
            let differing: i64 = written
                .write
                .query_one_raw(Statement::from_string(
                    written.backend(),
                    format!(
                        r#"SELECT COUNT(*) FROM (SELECT * FROM {a}."{table}" EXCEPT SELECT * FROM {b}."{table}")"#
                    ),
                ))
                .await
                .unwrap()
                .unwrap()
                .try_get_by_index(0)
                .unwrap();
            assert_eq!(differing, 0, "{table}: rows of {a} missing from {b}");
        }
    }
    written.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_is_deterministic() {
    let mut digests = Vec::new();
    for run_seed in [1, 1, 2] {
        let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
        let db = test_db.connect().await;
        let plan = catalynx::seed::SeedPlan {
            profiles: 120,
            opportunities_per_profile: 5,
            seed: run_seed,
        };
        let report = catalynx::seed::seed(&db, plan, false).await.unwrap();
        assert_eq!(report.profiles, 120);
        assert_eq!(
            report.opportunities,
            120 * 5,
            "the planned average holds exactly"
        );
        assert_eq!(rows_len(&db, "opportunities").await, 600);
        digests.push(digest(&test_db.url).await);
    }
    assert_eq!(digests[0], digests[1], "same seed, same rows");
    assert_ne!(digests[0], digests[2], "another seed, other rows");
}

/// `catalynx seed` on each database: on SQLite it loads with the file to
/// itself (no WAL) and leaves the file in WAL mode for the server; on
/// PostgreSQL it leaves the tables vacuumed and analysed.
async fn the_seed_command_loads(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let mut seed = crate::helpers::Binary::start(
        &[
            "seed",
            "--profiles",
            "40",
            "--opportunities-per-profile",
            "3",
            "--quiet",
        ],
        &[("DATABASE_URL", &test_db.url)],
        None,
    );
    assert!(seed.child.wait().unwrap().success(), "seed failed");
    let db = test_db.connect().await;
    // Per 20 profiles the planned average holds exactly.
    assert_eq!(rows_len(&db, "profiles").await, 40);
    assert_eq!(rows_len(&db, "opportunities").await, 120);
    if backend == Backend::Sqlite {
        let mode = db
            .read
            .query_one_raw(Statement::from_string(db.backend(), "PRAGMA journal_mode"))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<String>(0)
            .unwrap();
        assert_eq!(mode, "wal");
    }
    if backend == Backend::Postgres {
        // The load ends with VACUUM (ANALYZE): column statistics for the
        // planner, and pages marked all-visible for index-only scans.
        for table in ["profiles", "opportunities"] {
            let row = db
                .read
                .query_one_raw(Statement::from_sql_and_values(
                    db.backend(),
                    "SELECT c.relallvisible::bigint, \
                            (SELECT COUNT(*) FROM pg_stats s WHERE s.tablename = c.relname) \
                     FROM pg_class c WHERE c.oid = $1::text::regclass",
                    [table.into()],
                ))
                .await
                .unwrap()
                .unwrap();
            let all_visible: i64 = row.try_get_by_index(0).unwrap();
            let statistics: i64 = row.try_get_by_index(1).unwrap();
            assert!(all_visible > 0, "{table}: no page marked all-visible");
            assert!(statistics > 0, "{table}: no column statistics");
        }
    }
    db.close().await.unwrap();
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_command_loads_sqlite() {
    the_seed_command_loads(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_command_loads_postgres() {
    the_seed_command_loads(Backend::Postgres).await;
}

/// `migrate` and `seed` leave their writes in the database file itself, not
/// in its WAL, so that a copy of the file alone is whole. Another process
/// holds the file open meanwhile, as a running server would: SQLite then
/// does not checkpoint when the command's connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_seed_leave_their_writes_in_the_database_file() {
    use crate::helpers::{Binary, rows_in_a_copy};
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let path = catalynx::db::sqlite_path(&test_db.url).unwrap();
    let other = catalynx::db::Db::connect(&test_db.config()).await.unwrap();
    let run = |args: &[&str]| {
        let mut command = Binary::start(args, &[("DATABASE_URL", &test_db.url)], None);
        assert!(command.child.wait().unwrap().success(), "{args:?} failed");
    };

    run(&["migrate"]);
    let migrations = rows_in_a_copy(&path, "seaql_migrations").await;
    run(&[
        "seed",
        "--profiles",
        "40",
        "--opportunities-per-profile",
        "3",
        "--quiet",
    ]);

    assert!(migrations.is_some_and(|n| n > 0), "{migrations:?}");
    assert_eq!(rows_in_a_copy(&path, "profiles").await, Some(40));
    assert_eq!(rows_in_a_copy(&path, "opportunities").await, Some(120));
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_refuses_a_non_empty_database() {
    let app = crate::helpers::spawn_app().await;
    seed(&app, 10, 2).await;
    let plan = catalynx::seed::SeedPlan {
        profiles: 10,
        opportunities_per_profile: 2,
        seed: 1,
    };
    let err = catalynx::seed::seed(&app.db, plan, false)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already holds 10 profiles"),
        "{err}"
    );
    app.finish().await;
}

/// Runs the real binary; returns (exit success, stderr).
fn catalynx(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_catalynx"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("CATALYNX_LOG", "error")
        .output()
        .expect("run catalynx");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_ends_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--database-url", "mysql://localhost/x", "migrate"],
            "unsupported URL",
        ),
        (
            &[
                "--database-url",
                "sqlite:///nonexistent-dir/x.db",
                "migrate",
            ],
            "cannot open SQLite database",
        ),
        (
            &[
                "--database-url",
                "postgres://postgres@127.0.0.1:1/x",
                "--db-acquire-timeout",
                "1",
                "migrate",
            ],
            "Connection refused",
        ),
        (&["--database-url", "sqlite://", "migrate"], "names no file"),
        (&["serve", "--listen", &busy_addr], "cannot listen on"),
    ];
    for (args, expected) in cases {
        let (ok, stderr) = catalynx(args, dir.path());
        assert!(!ok, "{args:?} succeeded");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(expected),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A default page size above the maximum, by flag or by variable, is
/// refused at start with both settings named, before the database is
/// created: the server started and served the maximum.
#[test]
fn a_default_page_size_above_the_maximum_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            vec!["--default-page-size", "600"],
            vec![],
            "600 is larger than",
        ),
        (
            vec![],
            vec![("CATALYNX_MAX_PAGE_SIZE", "50")],
            "100 is larger than",
        ),
    ];
    for (args, env, expected) in cases {
        let out = crate::helpers::refused_output(
            std::process::Command::new(env!("CARGO_BIN_EXE_catalynx"))
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(&args)
                .envs(env.iter().copied())
                .current_dir(dir.path())
                .env_remove("DATABASE_URL"),
            &format!("{args:?} {env:?}"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!(
                "error: CATALYNX_DEFAULT_PAGE_SIZE / --default-page-size: {expected} \
                 CATALYNX_MAX_PAGE_SIZE / --max-page-size"
            )),
            "{stderr}"
        );
        assert!(!dir.path().join("catalynx.db").exists());
    }
}

/// The server's boolean variables take the usual spellings (only `true`
/// and `false` were taken, so each of these stopped the server at start),
/// with the meaning they spell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boolean_variables_take_the_usual_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bool.db").display());
    let server = crate::helpers::Binary::start(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", &url),
            ("CATALYNX_DEMO", "1"),
            ("CATALYNX_DISABLE_INTROSPECTION", "yes"),
            ("CATALYNX_DISABLE_LOADERS", "off"),
            ("CATALYNX_READS_NEED_KEY", "0"),
            ("CATALYNX_CACHE", "no"),
        ],
        None,
    );
    let client = reqwest::Client::new();
    let query = |query: &'static str| {
        client
            .post(server.url("/graphql"))
            .json(&serde_json::json!({ "query": query }))
            .send()
    };

    let counted: serde_json::Value =
        query("{ profiles(filter: { includeArchived: true }) { totalCount } }")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let introspected: serde_json::Value = query("{ __schema { queryType { name } } }")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // The demo's 60 profiles, read without a key.
    assert_eq!(counted["data"]["profiles"]["totalCount"], 60, "{counted}");
    assert_eq!(
        introspected["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{introspected}"
    );
}

#[test]
fn default_database_is_created_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stderr) = catalynx(&["migrate"], dir.path());
    assert!(ok, "{stderr}");
    assert!(dir.path().join("catalynx.db").exists());
}
