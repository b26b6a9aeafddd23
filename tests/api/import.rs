//! Imports (IRS EO BMF, Catalynx databases) and export, on real databases.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use catalynx::config::{ExportFormat, ImportOptions};
use catalynx::db::Db;
use catalynx::domain::MAX_AMOUNT;
use catalynx::import::{Counts, ImportReport, Position, bmf, catalynx as catalynx_import};
use entity::{opportunity, profile};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{Backend, TestDb, rows_in_a_copy};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/eo_bmf_sample.csv"
);
const NEWER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/eo_bmf_sample_newer.csv"
);

/// Runs `$body(backend)` as one test on SQLite and one on PostgreSQL.
macro_rules! on_sqlite_and_postgres {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(crate::helpers::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(crate::helpers::Backend::Postgres).await;
            }
        }
    };
}

/// Small batches, so that every test crosses batch boundaries.
fn options() -> ImportOptions {
    ImportOptions {
        batch_size: 3,
        show_rejects: 20,
        quiet: true,
    }
}

fn counts(read: u64, inserted: u64, updated: u64, unchanged: u64, rejected: u64) -> Counts {
    Counts {
        read,
        inserted,
        updated,
        unchanged,
        rejected,
    }
}

/// Every column of every row, in id order, hashed: equal digests, equal data.
async fn digest(db: &Db) -> String {
    let mut hasher = Sha256::new();
    let profiles = profile::Entity::find()
        .order_by_asc(profile::Column::Id)
        .all(&db.read)
        .await
        .unwrap();
    for row in &profiles {
        hasher.update(serde_json::to_vec(row).unwrap());
    }
    let opportunities = opportunity::Entity::find()
        .order_by_asc(opportunity::Column::Id)
        .all(&db.read)
        .await
        .unwrap();
    for row in &opportunities {
        hasher.update(serde_json::to_vec(row).unwrap());
    }
    hasher.update(format!("{} {}", profiles.len(), opportunities.len()));
    format!("{:x}", hasher.finalize())
}

async fn by_ein(db: &Db, ein: &str) -> profile::Model {
    profile::Entity::find()
        .filter(profile::Column::Ein.eq(ein))
        .one(&db.read)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no profile with EIN {ein}"))
}

/// `updated_at` of every profile, by EIN.
async fn updated_at_by_ein(db: &Db) -> BTreeMap<String, String> {
    profile::Entity::find()
        .all(&db.read)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.ein.unwrap(), p.updated_at.to_rfc3339()))
        .collect()
}

fn reject_lines(report: &ImportReport) -> Vec<(u64, String)> {
    report
        .rejects
        .iter()
        .map(|r| match r.position {
            Position::Line(line) => (line, r.reason.clone()),
            other => panic!("a BMF reject at {other}"),
        })
        .collect()
}

async fn bmf_rows_are_validated_and_bad_ones_reported(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = test_db.connect().await;

    let report = bmf::import(&db, &[PathBuf::from(SAMPLE)], &options())
        .await
        .unwrap();

    assert_eq!(report.profiles, counts(11, 7, 0, 0, 4));
    assert_eq!(
        reject_lines(&report),
        vec![
            (
                5,
                "invalid EIN \"01000000X\": expected 9 digits, e.g. 12-3456789".to_owned()
            ),
            (
                7,
                "invalid state \"ZZ\": expected a two-letter US state code, e.g. CA".to_owned()
            ),
            (8, "expected 28 fields, found 6".to_owned()),
            (9, "NAME is blank".to_owned()),
        ]
    );
    assert!(report.rejects[0].source.ends_with("eo_bmf_sample.csv"));
    let shown = report.to_string();
    assert!(
        shown.contains("profiles: 11 read, 7 inserted, 0 updated, 0 unchanged, 4 rejected"),
        "{shown}"
    );
    assert!(
        shown.contains("eo_bmf_sample.csv line 8: expected 28 fields"),
        "{shown}"
    );

    let food_bank = by_ein(&db, "010000001").await;
    assert!(food_bank.id.starts_with("profile_"));
    assert_eq!(
        json!({
            "name": food_bank.name,
            "organization_type": food_bank.organization_type,
            "status": food_bank.status,
            "city": food_bank.city,
            "state": food_bank.state,
            "annual_revenue": food_bank.annual_revenue,
            "ntee_codes": food_bank.ntee_codes.0,
            "focus_areas": food_bank.focus_areas.0,
            "mission_statement": food_bank.mission_statement,
        }),
        json!({
            "name": "RIVERBEND COMMUNITY FOOD BANK",
            "organization_type": "nonprofit",
            "status": "active",
            "city": "SPRINGFIELD",
            "state": "IL",
            "annual_revenue": 310000,
            "ntee_codes": ["K31"],
            "focus_areas": [],
            "mission_statement": null,
        })
    );
    assert_eq!(
        by_ein(&db, "010000002").await.name,
        "HARBOR LIGHTS YOUTH ALLIANCE, INC",
        "a quoted comma stays in the name"
    );
    // Blank or unusable optional values leave the field empty, keeping the row.
    assert_eq!(by_ein(&db, "010000003").await.annual_revenue, None);
    assert_eq!(by_ein(&db, "010000011").await.annual_revenue, None);
    assert!(by_ein(&db, "010000005").await.ntee_codes.0.is_empty());
    assert_eq!(by_ein(&db, "010000010").await.state, None);
    test_db.cleanup().await;
}
on_sqlite_and_postgres!(bmf_validation, bmf_rows_are_validated_and_bad_ones_reported);

/// A gzip copy of `source` under a name that does not say so.
fn gzip_copy(source: &str, dir: &Path) -> PathBuf {
    let path = dir.join("eo_bmf_sample.dat");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    encoder.write_all(&std::fs::read(source).unwrap()).unwrap();
    encoder.finish().unwrap();
    path
}

async fn reimporting_the_same_file_changes_nothing(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = test_db.connect().await;
    let epoch = || catalynx::store::data_epoch(&db.read);
    let empty = epoch().await.unwrap();
    bmf::import(&db, &[PathBuf::from(SAMPLE)], &options())
        .await
        .unwrap();
    let before = digest(&db).await;
    // Servers learn of the import through the data epoch.
    let imported = epoch().await.unwrap();
    assert!(imported > empty);

    let again = bmf::import(&db, &[PathBuf::from(SAMPLE)], &options())
        .await
        .unwrap();
    assert_eq!(again.profiles, counts(11, 0, 0, 7, 4));
    assert_eq!(digest(&db).await, before, "not even updated_at moved");
    assert_eq!(
        epoch().await.unwrap(),
        imported,
        "nothing for servers to drop"
    );

    // The same rows gzip-compressed (recognised by content, not by name).
    let dir = tempfile::tempdir().unwrap();
    let gz = gzip_copy(SAMPLE, dir.path());
    let compressed = bmf::import(&db, &[gz], &options()).await.unwrap();
    assert_eq!(compressed.profiles, counts(11, 0, 0, 7, 4));
    assert_eq!(reject_lines(&compressed), reject_lines(&again));
    assert_eq!(digest(&db).await, before);
    test_db.cleanup().await;
}
on_sqlite_and_postgres!(bmf_reimport, reimporting_the_same_file_changes_nothing);

async fn a_newer_file_updates_the_changed_rows_only(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = test_db.connect().await;
    bmf::import(&db, &[PathBuf::from(SAMPLE)], &options())
        .await
        .unwrap();
    // A field the BMF does not carry, edited by a user meanwhile.
    let mut food_bank = by_ein(&db, "010000001").await;
    food_bank.mission_statement = Some("Ending hunger in Sangamon County.".into());
    catalynx::store::profiles::update(&db.write, food_bank)
        .await
        .unwrap();
    let before = updated_at_by_ein(&db).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let report = bmf::import(&db, &[PathBuf::from(NEWER)], &options())
        .await
        .unwrap();

    assert_eq!(report.profiles, counts(8, 1, 3, 4, 0));
    let after = updated_at_by_ein(&db).await;
    let moved: Vec<&str> = before
        .iter()
        .filter(|(ein, at)| after[*ein] != **at)
        .map(|(ein, _)| ein.as_str())
        .collect();
    assert_eq!(moved, ["010000001", "010000002", "010000005"]);
    assert_eq!(after.len(), 8, "updated in place, never duplicated");
    let food_bank = by_ein(&db, "010000001").await;
    assert_eq!(food_bank.annual_revenue, Some(335_500));
    assert_eq!(
        food_bank.mission_statement.as_deref(),
        Some("Ending hunger in Sangamon County."),
        "fields the BMF does not carry are the user's"
    );
    assert_eq!(
        by_ein(&db, "010000002").await.name,
        "HARBOR LIGHTS YOUTH ALLIANCE"
    );
    assert_eq!(by_ein(&db, "010000005").await.ntee_codes.0, ["W30"]);
    assert_eq!(
        by_ein(&db, "010000012").await.name,
        "BLUE RIDGE LITERACY PROJECT"
    );
    test_db.cleanup().await;
}
on_sqlite_and_postgres!(bmf_newer_file, a_newer_file_updates_the_changed_rows_only);

fn bmf_file(dir: &Path, name: &str, rows: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut text = bmf::HEADER.join(",");
    for row in rows {
        text.push('\n');
        text.push_str(row);
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A BMF row with the given EIN and revenue.
fn bmf_row(ein: &str, revenue: u64) -> String {
    format!(
        "{ein},KEYSTONE LEGAL AID SOCIETY,,5 MARKET ST,HARRISBURG,PA,17101-0000,0000,03,3,1000,199002,1,15,000000000,1,01,202312,3,3,01,0,12,1000,{revenue},{revenue},I80,"
    )
}

/// A repeated EIN keeps its first row, within a batch and across batches
/// and files, so importing the same input again changes nothing (a later
/// row that updated the first made each import rewrite the profile twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_ein_keeps_its_first_row_and_a_second_import_changes_nothing() {
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let first = bmf_file(
        dir.path(),
        "eo_pa.csv",
        &[
            &bmf_row("230000001", 100),
            &bmf_row("230000002", 300),
            &bmf_row("230000001", 200),
        ],
    );
    let second = bmf_file(dir.path(), "eo_nj.csv", &[&bmf_row("230000002", 400)]);
    let files = [first, second];
    for batch_size in [100, 1] {
        let options = ImportOptions {
            batch_size,
            ..options()
        };
        let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
        let db = test_db.connect().await;

        let report = bmf::import(&db, &files, &options).await.unwrap();

        assert_eq!(
            report.profiles,
            counts(4, 2, 0, 0, 2),
            "batches of {batch_size}"
        );
        assert_eq!(
            reject_texts(&report),
            [
                "line 4: EIN 230000001 appears earlier in this import; its first row is kept",
                "line 2: EIN 230000002 appears earlier in this import; its first row is kept",
            ]
        );
        assert_eq!(by_ein(&db, "230000001").await.annual_revenue, Some(100));
        assert_eq!(by_ein(&db, "230000002").await.annual_revenue, Some(300));
    }

    bmf::import(&db, &files, &options()).await.unwrap();
    let before = digest(&db).await;
    let again = bmf::import(&db, &files, &options()).await.unwrap();
    assert_eq!(again.profiles, counts(4, 0, 0, 2, 2));
    assert_eq!(
        digest(&db).await,
        before,
        "the second import changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_another_header_is_refused_before_anything_is_written() {
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("grants.csv");
    std::fs::write(&other, "EIN,NAME,CITY\n230000001,X,Y\n").unwrap();

    let err = bmf::import(&db, &[PathBuf::from(SAMPLE), other], &options())
        .await
        .unwrap_err()
        .to_string();

    assert!(err.contains("grants.csv: not an EO BMF file"), "{err}");
    let written = profile::Entity::find().count(&db.read).await.unwrap();
    assert_eq!(
        written, 0,
        "the good file before it was not imported either"
    );
}

/// Seeds SQLite, exports in `format`, imports the file into an empty database
/// of `backend`: the data must be the same, and so must its export.
async fn round_trip(backend: Backend, format: ExportFormat) {
    let Some(target) = TestDb::new(backend).await else {
        return;
    };
    let source = TestDb::new(Backend::Sqlite).await.unwrap();
    let source_db = source.connect().await;
    let plan = catalynx::seed::SeedPlan {
        profiles: 40,
        opportunities_per_profile: 4,
        seed: 3,
    };
    catalynx::seed::seed(&source_db, plan, false).await.unwrap();
    let mut exported = Vec::new();
    let written = catalynx::export::export(&source_db, format, &mut exported)
        .await
        .unwrap();
    assert_eq!(written.profiles, 40);
    assert_eq!(written.opportunities, 160);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export");
    std::fs::write(&file, &exported).unwrap();

    let target_db = target.connect().await;
    let report = catalynx_import::import(&target_db, &file, &options())
        .await
        .unwrap();

    assert_eq!(report.profiles, counts(40, 40, 0, 0, 0));
    assert_eq!(report.opportunities, counts(160, 160, 0, 0, 0));
    assert_eq!(digest(&target_db).await, digest(&source_db).await);
    let mut again = Vec::new();
    catalynx::export::export(&target_db, format, &mut again)
        .await
        .unwrap();
    assert!(again == exported, "the export of the copy differs");
    // Importing the export again changes nothing.
    let twice = catalynx_import::import(&target_db, &file, &options())
        .await
        .unwrap();
    assert_eq!(twice.profiles, counts(40, 0, 0, 40, 0));
    assert_eq!(twice.opportunities, counts(160, 0, 0, 160, 0));
    target.cleanup().await;
}

async fn round_trip_jsonl(backend: Backend) {
    round_trip(backend, ExportFormat::Jsonl).await;
}
on_sqlite_and_postgres!(round_trip_through_jsonl, round_trip_jsonl);

async fn round_trip_csv(backend: Backend) {
    round_trip(backend, ExportFormat::Csv).await;
}
on_sqlite_and_postgres!(round_trip_through_csv, round_trip_csv);

/// The columns of the original platform's tables (DOMAIN.md) in its own
/// order, plus columns this schema does not have: a stored
/// `opportunities_count` and the JSON columns of its analysis pipeline.
const OLD_SCHEMA: &[&str] = &[
    "CREATE TABLE profiles (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, organization_type TEXT NOT NULL,
        ein TEXT, mission_statement TEXT, status TEXT NOT NULL DEFAULT 'active',
        keywords TEXT, focus_areas TEXT, ntee_codes TEXT, city TEXT, state TEXT,
        annual_revenue INTEGER, website_url TEXT, last_discovery_date TIMESTAMP,
        opportunities_count INTEGER DEFAULT 0, processing_history TEXT,
        created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP)",
    "CREATE TABLE opportunities (
        id TEXT PRIMARY KEY, profile_id TEXT NOT NULL REFERENCES profiles(id),
        organization_name TEXT NOT NULL, ein TEXT, current_stage TEXT DEFAULT 'discovery',
        overall_score REAL DEFAULT 0, confidence_level REAL, priority_level TEXT,
        user_rating INTEGER, source TEXT, award_floor INTEGER, award_ceiling INTEGER,
        close_date DATE, tags TEXT, notes TEXT, analysis_discovery TEXT, stage_history TEXT,
        discovery_date TIMESTAMP, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP)",
];

/// Creates a SQLite database at `path` the way the original platform left
/// it: Python timestamps without offset, JSON as text, loosely typed values.
async fn old_catalynx_db(path: &Path, rows: &[&str]) {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    for sql in OLD_SCHEMA.iter().chain(rows) {
        sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(*sql))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;
}

const OLD_ROWS: &[&str] = &[
    "INSERT INTO profiles VALUES ('profile_a1b2c3d4e5f6', 'Riverbend Community Food Bank',
        'nonprofit', '01-0000001', 'Ending hunger in Springfield.', 'active', 'food, hunger',
        '[\"food security\", \"nutrition\"]', '[\"K31\"]', 'Springfield', 'IL', 1250000.0,
        'https://riverbend.example.org', '2024-05-02 09:30:00', 2, '{\"runs\": [1, 2]}',
        '2024-03-01 10:15:00.123456', '2024-05-02 09:30:00.5')",
    "INSERT INTO profiles VALUES ('profile_0f0e0d0c0b0a', 'Prairie Arts Council', 'Nonprofit',
        NULL, NULL, 'draft', NULL, NULL, '[\"A20\", \"A50\"]', 'Lincoln', 'ne', NULL, NULL,
        NULL, 7, NULL, '2023-11-20T08:00:00Z', '2024-01-15T12:00:00+00:00')",
    "INSERT INTO profiles VALUES ('profile_123456abcdef', 'Keystone Family Foundation',
        'foundation', '230000009', NULL, 'archived', NULL, '[]', '[]', 'Harrisburg', 'PA',
        '4800000', NULL, NULL, 0, NULL, '2022-06-30 00:00:00', NULL)",
    "INSERT INTO opportunities VALUES ('opp_000000000001', 'profile_a1b2c3d4e5f6',
        'Kellogg Foundation', '380000001', 'qualified_prospects', 0.82, 0.7, 'high', '4',
        'nonprofit', 10000, 50000, '2026-09-30', '[\"capacity-building\", \"multi-year\"]',
        'Letter of inquiry first.', '{\"score\": 0.82}', '[\"discovery\", \"prospects\"]',
        '2024-04-01 00:00:00', '2024-04-01 00:00:00', '2024-04-10 16:45:12.250000')",
    "INSERT INTO opportunities VALUES ('opp_000000000002', 'profile_a1b2c3d4e5f6',
        'Department of Agriculture', NULL, 'discovery', 0.4, NULL, NULL, NULL, 'government',
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2024-04-02 08:00:00', NULL)",
    "INSERT INTO opportunities VALUES ('opp_000000000003', 'profile_0f0e0d0c0b0a',
        'Nebraska Arts Board', NULL, 'targets', 0.91, 0.95, 'urgent', 5, 'state', 2500, 2500,
        '2026-07-01', '[\"renewal\"]', NULL, NULL, NULL, '2024-02-01 00:00:00',
        '2024-02-01 00:00:00', '2024-02-03 00:00:00')",
];

async fn a_catalynx_database_imports_completely_and_twice_changes_nothing(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = test_db.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("catalynx-old.db");
    old_catalynx_db(&old, OLD_ROWS).await;
    let old_bytes = std::fs::read(&old).unwrap();

    let report = catalynx_import::import(&db, &old, &options())
        .await
        .unwrap();

    assert_eq!(report.profiles, counts(3, 3, 0, 0, 0));
    assert_eq!(report.opportunities, counts(3, 3, 0, 0, 0));
    let food_bank = profile::Entity::find_by_id("profile_a1b2c3d4e5f6")
        .one(&db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_value(&food_bank).unwrap(),
        json!({
            "id": "profile_a1b2c3d4e5f6",
            "name": "Riverbend Community Food Bank",
            "organization_type": "nonprofit",
            "ein": "010000001",
            "mission_statement": "Ending hunger in Springfield.",
            "status": "active",
            "keywords": "food, hunger",
            "focus_areas": ["food security", "nutrition"],
            "ntee_codes": ["K31"],
            "city": "Springfield",
            "state": "IL",
            "annual_revenue": 1250000,
            "website_url": "https://riverbend.example.org",
            "last_discovery_date": "2024-05-02T09:30:00Z",
            "created_at": "2024-03-01T10:15:00.123456Z",
            "updated_at": "2024-05-02T09:30:00.500Z",
        })
    );
    let arts = profile::Entity::find_by_id("profile_0f0e0d0c0b0a")
        .one(&db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (arts.organization_type.as_str(), arts.state.as_deref()),
        ("nonprofit", Some("NE"))
    );
    assert_eq!(arts.updated_at.to_rfc3339(), "2024-01-15T12:00:00+00:00");
    let foundation = profile::Entity::find_by_id("profile_123456abcdef")
        .one(&db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(foundation.annual_revenue, Some(4_800_000));
    assert_eq!(foundation.updated_at, foundation.created_at);
    let kellogg = opportunity::Entity::find_by_id("opp_000000000001")
        .one(&db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_value(&kellogg).unwrap(),
        json!({
            "id": "opp_000000000001",
            "profile_id": "profile_a1b2c3d4e5f6",
            "organization_name": "Kellogg Foundation",
            "ein": "380000001",
            "current_stage": "qualified_prospects",
            "overall_score": 0.82,
            "confidence_level": 0.7,
            "priority_level": "high",
            "user_rating": 4,
            "source": "nonprofit",
            "award_floor": 10000,
            "award_ceiling": 50000,
            "close_date": "2026-09-30",
            "tags": ["capacity-building", "multi-year"],
            "notes": "Letter of inquiry first.",
            "discovery_date": "2024-04-01T00:00:00Z",
            "created_at": "2024-04-01T00:00:00Z",
            "updated_at": "2024-04-10T16:45:12.250Z",
        })
    );
    let agriculture = opportunity::Entity::find_by_id("opp_000000000002")
        .one(&db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(agriculture.discovery_date, agriculture.created_at);
    assert!(agriculture.tags.0.is_empty());
    let before = digest(&db).await;

    let twice = catalynx_import::import(&db, &old, &options())
        .await
        .unwrap();

    assert_eq!(twice.profiles, counts(3, 0, 0, 3, 0));
    assert_eq!(twice.opportunities, counts(3, 0, 0, 3, 0));
    assert_eq!(digest(&db).await, before);
    assert!(
        std::fs::read(&old).unwrap() == old_bytes,
        "the source database was written to"
    );
    test_db.cleanup().await;
}
on_sqlite_and_postgres!(
    catalynx_database,
    a_catalynx_database_imports_completely_and_twice_changes_nothing
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_catalynx_rows_are_reported_and_the_rest_imported() {
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("catalynx-old.db");
    let p = |id: &str, ein: &str, status: &str, created: &str| {
        format!(
            "INSERT INTO profiles (id, name, organization_type, ein, status, created_at) VALUES ('{id}', 'Org {id}', 'nonprofit', {ein}, '{status}', {created})"
        )
    };
    let o = |id: &str, profile: &str, score: &str, floor: &str, ceiling: &str| {
        format!(
            "INSERT INTO opportunities (id, profile_id, organization_name, overall_score, award_floor, award_ceiling, created_at) VALUES ('{id}', '{profile}', 'Funder', {score}, {floor}, {ceiling}, '2024-01-01')"
        )
    };
    let rows = [
        p("p1", "'010000001'", "active", "'2024-01-01'"),
        p("p2", "NULL", "deleted", "'2024-01-01'"),
        p("p3", "'010000001'", "active", "'2024-01-01'"),
        p("p4", "NULL", "active", "'last spring'"),
        p("p5", "'12345'", "active", "'2024-01-01'"),
        p("p6", "NULL", "active", "'0000-12-31 23:00:00'"),
        "INSERT INTO profiles (id, name, organization_type, status, created_at) \
         VALUES ('p7', 'Org' || char(0) || 'p7', 'nonprofit', 'active', '2024-01-01')"
            .to_owned(),
        o("o1", "p1", "0.5", "NULL", "NULL"),
        o("o2", "p2", "0.5", "NULL", "NULL"),
        o("o3", "p1", "1.5", "NULL", "NULL"),
        o("o4", "p1", "0.5", "5000", "1000"),
        o("o5", "p1", "0.5", "1000", "5000"),
    ];
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    old_catalynx_db(&old, &rows).await;

    let report = catalynx_import::import(&db, &old, &options())
        .await
        .unwrap();

    assert_eq!(report.profiles, counts(7, 1, 0, 0, 6));
    assert_eq!(report.opportunities, counts(5, 2, 0, 0, 3));
    let mut rejects: Vec<String> = report
        .rejects
        .iter()
        .map(|r| format!("{} {}", r.position, r.reason))
        .collect();
    rejects.sort();
    assert_eq!(
        rejects,
        [
            "opportunities rowid 2 profile p2 does not exist",
            "opportunities rowid 3 overall_score must be between 0 and 1, got 1.5",
            "opportunities rowid 4 award_floor 5000 is above award_ceiling 1000",
            "profiles rowid 2 status: unknown value \"deleted\", expected one of active, draft, archived, template",
            "profiles rowid 3 EIN 010000001 belongs to profile p1",
            "profiles rowid 4 created_at: not a timestamp: \"last spring\"",
            "profiles rowid 5 invalid EIN \"12345\": expected 9 digits, e.g. 12-3456789",
            "profiles rowid 6 created_at must be in the years 1 to 9999, got 0000-12-31 23:00:00 UTC",
            "profiles rowid 7 name must not contain NUL characters",
        ]
    );
    assert!(
        report
            .rejects
            .iter()
            .all(|r| r.source.ends_with("catalynx-old.db"))
    );
}

/// A reader that stops early (`| head`) ends the command with one error
/// line, not a panic.
#[test]
fn output_to_a_closed_pipe_is_an_error_not_a_panic() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_catalynx"))
        .args([
            "--database-url",
            "sqlite://x.db",
            "import",
            "bmf",
            SAMPLE,
            "--quiet",
        ])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("CATALYNX_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with("error: cannot write to standard output"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs the real binary in `dir`; returns (success, stdout, stderr).
fn catalynx_cli(args: &[&str], dir: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_catalynx"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("CATALYNX_LOG", "error")
        .output()
        .expect("run catalynx");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_commands_import_export_and_import_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = ["--database-url", "sqlite://first.db"];
    let second = ["--database-url", "sqlite://second.db"];

    let (ok, stdout, stderr) = catalynx_cli(
        &[&first[..], &["import", "bmf", SAMPLE, "--quiet"]].concat(),
        dir.path(),
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("profiles: 11 read, 7 inserted, 0 updated, 0 unchanged, 4 rejected\n"),
        "{stdout}"
    );
    assert!(stdout.contains("rejected rows (first 4 of 4):"), "{stdout}");
    assert!(
        stdout.contains("eo_bmf_sample.csv line 5: invalid EIN"),
        "{stdout}"
    );

    let (ok, csv, stderr) = catalynx_cli(
        &[&first[..], &["export", "--format", "csv"]].concat(),
        dir.path(),
    );
    assert!(ok, "{stderr}");
    assert_eq!(csv.lines().count(), 8, "a header and 7 profiles: {csv}");
    assert!(csv.lines().next().unwrap().starts_with("table,id,name,"));
    assert!(csv.contains("profiles,profile_"));

    let (ok, _, stderr) = catalynx_cli(
        &[&first[..], &["export", "--output", "all.jsonl"]].concat(),
        dir.path(),
    );
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = catalynx_cli(
        &[&second[..], &["import", "catalynx", "all.jsonl", "--quiet"]].concat(),
        dir.path(),
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("profiles: 7 read, 7 inserted, 0 updated, 0 unchanged, 0 rejected\n"),
        "{stdout}"
    );

    let (ok, _, stderr) = catalynx_cli(
        &[&second[..], &["import", "catalynx", "missing.db"]].concat(),
        dir.path(),
    );
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: missing.db: cannot open: No such file or directory (os error 2)"
    );
}

/// An import leaves its rows in the database file itself, not in its WAL:
/// a copy of the file alone (`cp catalynx.db backup.db`) was empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_leaves_its_rows_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();

    let (ok, _, stderr) = catalynx_cli(&["import", "bmf", SAMPLE, "--quiet"], dir.path());

    assert!(ok, "{stderr}");
    let database = dir.path().join("catalynx.db");
    assert_eq!(rows_in_a_copy(&database, "profiles").await, Some(7));
    assert_eq!(
        names_in(dir.path()),
        ["catalynx.db"],
        "no WAL left beside it"
    );
}

/// `CATALYNX_QUIET` takes the usual boolean spellings (only `true` and
/// `false` were taken), and a bad value is refused naming the variable.
#[test]
fn catalynx_quiet_takes_the_usual_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let import = |quiet: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_catalynx"))
            .args([
                "--database-url",
                "sqlite://quiet.db",
                "import",
                "bmf",
                SAMPLE,
            ])
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("CATALYNX_LOG", "error")
            .env("CATALYNX_QUIET", quiet)
            .output()
            .unwrap()
    };

    for quiet in ["1", "yes", "on", "0", "no", "off", "true", "false"] {
        let out = import(quiet);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{quiet}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("profiles: 11 read,"),
            "{quiet}"
        );
    }

    let out = import("maybe");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(
            "error: invalid value \"maybe\" for CATALYNX_QUIET / --quiet: use true or false"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An input that is missing or not of its format fails the import before
/// the database is opened: the SQLite file was created first and left
/// behind.
#[test]
fn a_bad_input_leaves_no_database_behind() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let other = inputs.path().join("other.csv");
    std::fs::write(&other, "a,b\n1,2\n").unwrap();
    let other = other.to_str().unwrap();

    for (args, error) in [
        (
            &["import", "bmf", "missing.csv"][..],
            "missing.csv: cannot open",
        ),
        (
            &["import", "bmf", SAMPLE, "missing.csv"],
            "missing.csv: cannot open",
        ),
        (
            &["import", "catalynx", "missing.jsonl"],
            "missing.jsonl: cannot open",
        ),
        (&["import", "bmf", other], "other.csv: not an EO BMF file"),
        (
            &["import", "catalynx", other],
            "other.csv: not a Catalynx database or export",
        ),
    ] {
        let (ok, _, stderr) = catalynx_cli(args, dir.path());

        assert!(!ok, "{args:?}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(error),
            "{args:?}: {stderr}"
        );
        assert_eq!(names_in(dir.path()), Vec::<String>::new(), "{args:?}");
    }
}

/// Runs the real binary in `dir` with `input` on its standard input (a
/// pipe); returns (success, stdout, stderr).
fn catalynx_piped(args: &[&str], dir: &Path, input: &[u8]) -> (bool, String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_catalynx"))
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("CATALYNX_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run catalynx");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A thread writes, so that a child that answers early never blocks it.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The SQLite database at `dir/name`, migrated.
async fn sqlite_at(dir: &Path, name: &str) -> Db {
    let url = format!("sqlite://{}", dir.join(name).display());
    let db = Db::connect(&catalynx::config::DbConfig::new(url))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    db
}

/// `catalynx export | catalynx import catalynx /dev/stdin`: the bytes read
/// to recognise the format must not be lost on a pipe, which cannot be
/// opened twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_piped_into_an_import_arrives_whole() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = catalynx_cli(
        &[
            "--database-url",
            "sqlite://source.db",
            "seed",
            "--profiles",
            "30",
            "--opportunities-per-profile",
            "3",
            "--quiet",
        ],
        dir.path(),
    );
    assert!(ok, "{stderr}");
    let source = digest(&sqlite_at(dir.path(), "source.db").await).await;

    for format in ["jsonl", "csv"] {
        let target = format!("sqlite://copy-{format}.db");
        let mut export = Command::new(env!("CARGO_BIN_EXE_catalynx"))
            .args(["--database-url", "sqlite://source.db", "export"])
            .args(["--format", format])
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("CATALYNX_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let import = Command::new(env!("CARGO_BIN_EXE_catalynx"))
            .args([
                "--database-url",
                &target,
                "import",
                "catalynx",
                "/dev/stdin",
            ])
            .arg("--quiet")
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env("CATALYNX_LOG", "error")
            .stdin(Stdio::from(export.stdout.take().unwrap()))
            .output()
            .unwrap();
        assert!(export.wait().unwrap().success());
        let stdout = String::from_utf8_lossy(&import.stdout);
        assert!(
            import.status.success(),
            "{}",
            String::from_utf8_lossy(&import.stderr)
        );
        assert!(
            stdout.starts_with(
                "profiles: 30 read, 30 inserted, 0 updated, 0 unchanged, 0 rejected\n"
            ),
            "{format}: {stdout}"
        );
        assert!(!stdout.contains("rejected rows"), "{format}: {stdout}");
        let copy = sqlite_at(dir.path(), &format!("copy-{format}.db")).await;
        assert_eq!(digest(&copy).await, source, "{format}: the copy differs");
    }
}

/// `cat eo.csv | catalynx import bmf /dev/stdin`, plain and gzip.
#[test]
fn a_bmf_file_imports_from_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let gz = gzip_copy(SAMPLE, dir.path());
    let db = ["--database-url", "sqlite://bmf.db"];
    let args = [&db[..], &["import", "bmf", "/dev/stdin", "--quiet"]].concat();

    let (ok, stdout, stderr) = catalynx_piped(&args, dir.path(), &std::fs::read(SAMPLE).unwrap());
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("profiles: 11 read, 7 inserted, 0 updated, 0 unchanged, 4 rejected\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/dev/stdin line 5: invalid EIN"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = catalynx_piped(&args, dir.path(), &std::fs::read(gz).unwrap());
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("profiles: 11 read, 0 inserted, 0 updated, 7 unchanged, 4 rejected\n"),
        "{stdout}"
    );
}

/// `catalynx import catalynx catalynx.db` in the original platform's
/// directory, where the default --database-url names the same file: the
/// import would first migrate its own source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_from_the_target_database_itself_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("catalynx.db");
    old_catalynx_db(&original, OLD_ROWS).await;
    let bytes = std::fs::read(&original).unwrap();
    let absolute = original.display().to_string();

    for args in [
        &["import", "catalynx", "catalynx.db"][..],
        &[
            "--database-url",
            "sqlite://./catalynx.db",
            "import",
            "catalynx",
            &absolute,
        ],
        &["import", "bmf", "catalynx.db"],
    ] {
        let (ok, stdout, stderr) = catalynx_cli(args, dir.path());

        assert!(!ok, "{args:?}: {stdout}");
        let source = args.last().unwrap();
        assert_eq!(
            stderr.trim(),
            format!(
                "error: {source}: this is the database being imported into; give a different --database-url"
            ),
            "{args:?}"
        );
        assert!(
            std::fs::read(&original).unwrap() == bytes,
            "{args:?}: the file changed"
        );
    }
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "no WAL or other file beside it: {files:?}");
}

/// A database this server did not create (the original platform's) is
/// refused by every command that would migrate it, and left byte for byte
/// as it was: migrating it would take its tables as this schema's and leave
/// a file whose every read fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_original_platform_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.db");
    old_catalynx_db(&original, OLD_ROWS).await;
    let bytes = std::fs::read(&original).unwrap();
    let url = ["--database-url", "sqlite://original.db"];
    let want = "error: DATABASE_URL / --database-url: \"original.db\" has profiles and opportunities tables \
         but was not created by this server (e.g. a database of the original Catalynx platform); \
         it was left untouched: import it into a new database with \
         `catalynx --database-url sqlite://NEW.db import catalynx original.db`";

    for command in [
        &["migrate"][..],
        &["serve", "--listen", "127.0.0.1:0"],
        &["import", "bmf", SAMPLE, "--quiet"],
        &["seed", "--profiles", "1", "--quiet"],
    ] {
        let out = crate::helpers::refused_output(
            std::process::Command::new(env!("CARGO_BIN_EXE_catalynx"))
                .args([&url[..], command].concat())
                .current_dir(dir.path())
                .env_remove("DATABASE_URL"),
            &format!("{command:?}"),
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            want,
            "{command:?}"
        );
        assert!(
            std::fs::read(&original).unwrap() == bytes,
            "{command:?}: the file changed"
        );
    }
    let url = format!("sqlite://{}", original.display());
    let refused = Db::connect(&catalynx::config::DbConfig::new(url)).await;
    assert!(refused.is_err());
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "no WAL or other file beside it: {files:?}");
    assert!(std::fs::read(&original).unwrap() == bytes);
}

/// A Catalynx CSV export holding `rows` (columns by name, the others
/// empty), each line ended with CRLF when `crlf`, as Excel and Python's
/// csv module end them.
fn catalynx_csv(rows: &[Vec<(&str, &str)>], crlf: bool) -> Vec<u8> {
    let header = catalynx::export::csv_header();
    let terminator = if crlf {
        csv::Terminator::CRLF
    } else {
        csv::Terminator::Any(b'\n')
    };
    let mut writer = csv::WriterBuilder::new()
        .terminator(terminator)
        .from_writer(Vec::new());
    writer.write_record(&header).unwrap();
    for row in rows {
        for (name, _) in row {
            assert!(header.iter().any(|h| h == name), "no column {name}");
        }
        writer
            .write_record(header.iter().map(|h| {
                row.iter()
                    .find(|(name, _)| name == h)
                    .map_or("", |(_, value)| *value)
            }))
            .unwrap();
    }
    writer.into_inner().unwrap()
}

fn csv_profile<'a>(id: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut row = vec![
        ("table", "profiles"),
        ("id", id),
        ("name", "Org"),
        ("created_at", "2024-01-01T00:00:00Z"),
    ];
    for (name, value) in more {
        row.retain(|(n, _)| n != name);
        row.push((name, value));
    }
    row
}

fn csv_opportunity<'a>(
    id: &'a str,
    profile: &'a str,
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut row = vec![
        ("table", "opportunities"),
        ("id", id),
        ("profile_id", profile),
        ("organization_name", "Funder"),
        ("created_at", "2024-01-01T00:00:00Z"),
    ];
    for (name, value) in more {
        row.retain(|(n, _)| n != name);
        row.push((name, value));
    }
    row
}

/// Every reject as "line N: reason".
fn reject_texts(report: &ImportReport) -> Vec<String> {
    report
        .rejects
        .iter()
        .map(|r| format!("{}: {}", r.position, r.reason))
        .collect()
}

/// Amounts up to the largest the API takes (2^53 - 1) round-trip exactly
/// through both formats; larger ones are refused, quoting the file. (Read
/// through a float, amounts near 2^53 came back changed or refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_up_to_the_largest_round_trip_through_csv_and_jsonl() {
    use sea_orm::sea_query::Expr;
    let source = TestDb::new(Backend::Sqlite).await.unwrap();
    let source_db = source.connect().await;
    let plan = catalynx::seed::SeedPlan {
        profiles: 4,
        opportunities_per_profile: 3,
        seed: 5,
    };
    catalynx::seed::seed(&source_db, plan, false).await.unwrap();
    profile::Entity::update_many()
        .col_expr(profile::Column::AnnualRevenue, Expr::value(MAX_AMOUNT))
        .exec(&source_db.write)
        .await
        .unwrap();
    opportunity::Entity::update_many()
        .col_expr(opportunity::Column::AwardFloor, Expr::value(MAX_AMOUNT - 2))
        .col_expr(opportunity::Column::AwardCeiling, Expr::value(MAX_AMOUNT))
        .exec(&source_db.write)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    for format in [ExportFormat::Csv, ExportFormat::Jsonl] {
        let file = dir.path().join(format!("export-{format:?}"));
        let mut exported = Vec::new();
        catalynx::export::export(&source_db, format, &mut exported)
            .await
            .unwrap();
        std::fs::write(&file, &exported).unwrap();
        let target = TestDb::new(Backend::Sqlite).await.unwrap();
        let target_db = target.connect().await;

        let report = catalynx_import::import(&target_db, &file, &options())
            .await
            .unwrap();

        assert_eq!(reject_texts(&report), Vec::<String>::new(), "{format:?}");
        assert_eq!(report.profiles.inserted, 4, "{format:?}");
        assert_eq!(digest(&target_db).await, digest(&source_db).await);
        let o = opportunity::Entity::find().one(&target_db.read).await;
        let o = o.unwrap().unwrap();
        assert_eq!(
            (o.award_floor, o.award_ceiling),
            (Some(MAX_AMOUNT - 2), Some(MAX_AMOUNT))
        );
    }

    // Values the API cannot hold are refused, quoting the file's own text.
    let file = dir.path().join("bad-amounts.csv");
    let csv = catalynx_csv(
        &[
            csv_profile("p1", &[("annual_revenue", "9223372036854775808")]),
            csv_profile("p2", &[("annual_revenue", "12.5")]),
            csv_profile("p3", &[("annual_revenue", "9.3e15")]),
            csv_profile("p4", &[("annual_revenue", "1250000.0")]),
            csv_profile("p5", &[("annual_revenue", "9007199254740992")]),
            csv_opportunity(
                "o1",
                "p4",
                &[
                    ("award_floor", "9007199254740989"),
                    ("award_ceiling", "9007199254740991"),
                ],
            ),
        ],
        false,
    );
    std::fs::write(&file, csv).unwrap();
    let target = TestDb::new(Backend::Sqlite).await.unwrap();
    let report = catalynx_import::import(&target.connect().await, &file, &options())
        .await
        .unwrap();
    assert_eq!(
        reject_texts(&report),
        [
            "line 2: annual_revenue: out of range: \"9223372036854775808\", expected a whole number from -9223372036854775808 to 9223372036854775807",
            "line 3: annual_revenue: not a whole number: \"12.5\"",
            "line 4: annual_revenue: \"9.3e15\" cannot be read exactly with a fraction or exponent; write it in digits only",
            "line 6: annual_revenue must be between 0 and 9007199254740991, got 9007199254740992",
        ]
    );
    assert_eq!(report.profiles.inserted, 1, "1250000.0 is a whole number");
    assert_eq!(report.opportunities.inserted, 1);
}

/// Excel and Python's csv module end lines with CRLF: rejects must name
/// the same lines as in an LF file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_files_report_the_lines_of_their_rejects() {
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let crlf = dir.path().join("eo_bmf_sample_crlf.csv");
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    assert!(!sample.contains('\r'));
    std::fs::write(&crlf, sample.replace('\n', "\r\n")).unwrap();

    let report = bmf::import(&db, &[crlf], &options()).await.unwrap();

    assert_eq!(report.profiles, counts(11, 7, 0, 0, 4));
    let lines: Vec<u64> = reject_lines(&report).iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [5, 7, 8, 9]);

    let csv = catalynx_csv(
        &[
            csv_profile("p1", &[]),
            csv_opportunity("o1", "p1", &[("notes", "first line\r\nsecond line")]),
            csv_profile("p2", &[("created_at", "last spring")]),
            csv_opportunity("o2", "p1", &[("overall_score", "1.5")]),
        ],
        true,
    );
    let file = dir.path().join("export_crlf.csv");
    std::fs::write(&file, csv).unwrap();

    let report = catalynx_import::import(&db, &file, &options())
        .await
        .unwrap();

    assert_eq!(
        reject_texts(&report),
        [
            "line 5: created_at: not a timestamp: \"last spring\"",
            "line 6: overall_score must be between 0 and 1, got 1.5",
        ]
    );
    let o1 = opportunity::Entity::find_by_id("o1")
        .one(&db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        o1.notes.as_deref(),
        Some("first line\r\nsecond line"),
        "a CRLF inside a quoted value is data"
    );
}

/// Lists the names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A mistyped database path must not export nothing, succeed, and leave an
/// empty database behind; a bad --output leaves no partial file.
#[test]
fn export_refuses_a_missing_database_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();

    let (ok, _, stderr) = catalynx_cli(
        &[
            "--database-url",
            "sqlite://typo.db",
            "export",
            "--output",
            "x.jsonl",
        ],
        dir.path(),
    );

    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: DATABASE_URL / --database-url: SQLite database \"typo.db\" does not exist; nothing to export"
    );
    assert_eq!(names_in(dir.path()), Vec::<String>::new());

    let (ok, _, stderr) = catalynx_cli(
        &[
            "--database-url",
            "sqlite://source.db",
            "seed",
            "--profiles",
            "3",
            "--quiet",
        ],
        dir.path(),
    );
    assert!(ok, "{stderr}");
    let before = std::fs::read(dir.path().join("source.db")).unwrap();
    std::fs::create_dir(dir.path().join("somedir")).unwrap();

    let (ok, _, stderr) = catalynx_cli(
        &[
            "--database-url",
            "sqlite://source.db",
            "export",
            "--output",
            "somedir",
        ],
        dir.path(),
    );

    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "error: --output: somedir is a directory; name a file"
    );
    assert!(!dir.path().join("somedir.partial").exists());

    let (ok, _, stderr) = catalynx_cli(
        &[
            "--database-url",
            "sqlite://source.db",
            "export",
            "--output",
            "all.jsonl",
        ],
        dir.path(),
    );
    assert!(ok, "{stderr}");
    let mut names = names_in(dir.path());
    // SQLite may keep its WAL files beside the database.
    names.retain(|n| !n.ends_with("-wal") && !n.ends_with("-shm"));
    assert_eq!(names, ["all.jsonl", "somedir", "source.db"]);
    assert!(
        std::fs::read(dir.path().join("source.db")).unwrap() == before,
        "reading changed the database"
    );
}

/// An export that fails half-way removes its partial file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_removes_its_partial_file() {
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    let plan = catalynx::seed::SeedPlan {
        profiles: 3,
        opportunities_per_profile: 2,
        seed: 1,
    };
    catalynx::seed::seed(&db, plan, false).await.unwrap();
    // A value that cannot be decoded fails the export after the profiles.
    sea_orm::ConnectionTrait::execute_unprepared(
        &db.write,
        "UPDATE opportunities SET created_at = 'not a time'",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("all.jsonl");

    let failed = catalynx::export::export_to(&db, ExportFormat::Jsonl, Some(&output)).await;

    assert!(failed.is_err());
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
}

/// Seeds `name` in `dir` through the CLI with three profiles.
fn seeded(dir: &Path, name: &str) {
    let url = format!("sqlite://{name}");
    let (ok, _, stderr) = catalynx_cli(
        &["--database-url", &url, "seed", "--profiles", "3", "--quiet"],
        dir,
    );
    assert!(ok, "{stderr}");
}

/// An `--output` that is the database being exported, one of the files
/// SQLite keeps beside it, or a symlink to either, is refused before
/// anything is written: the export was renamed over it.
#[test]
fn export_refuses_to_write_over_its_own_database() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    seeded(dir.path(), "source.db");
    let before = std::fs::read(dir.path().join("source.db")).unwrap();
    symlink("source.db", dir.path().join("link.jsonl")).unwrap();
    // Dangling until SQLite next writes its WAL.
    symlink("source.db-wal", dir.path().join("wal-link.jsonl")).unwrap();
    let absolute = dir.path().join("source.db").display().to_string();
    let database = "the database being exported";

    for (output, is) in [
        ("source.db", database.to_owned()),
        (&absolute, database.to_owned()),
        ("link.jsonl", database.to_owned()),
        (
            "source.db-wal",
            format!("the write-ahead log of {database}"),
        ),
        (
            "wal-link.jsonl",
            format!("the write-ahead log of {database}"),
        ),
        ("source.db-shm", format!("the WAL index of {database}")),
        (
            "source.db-journal",
            format!("the rollback journal of {database}"),
        ),
    ] {
        let (ok, _, stderr) = catalynx_cli(
            &[
                "--database-url",
                "sqlite://source.db",
                "export",
                "--output",
                output,
            ],
            dir.path(),
        );

        assert!(!ok, "{output}");
        assert_eq!(
            stderr.trim(),
            format!("error: --output: {output} is {is}; name another file")
        );
    }
    assert!(
        std::fs::read(dir.path().join("source.db")).unwrap() == before,
        "the database changed"
    );
    assert_eq!(
        names_in(dir.path()),
        ["link.jsonl", "source.db", "wal-link.jsonl"]
    );
    assert!(dir.path().join("link.jsonl").is_symlink());
}

/// A FIFO given as `--output` is written in place (a rename replaced it
/// with a regular file), and a symlink's target is replaced while the link
/// stays a link.
#[test]
fn export_writes_into_a_fifo_and_through_a_symlink() {
    use std::os::unix::fs::{FileTypeExt, symlink};
    let dir = tempfile::tempdir().unwrap();
    seeded(dir.path(), "source.db");
    let export = ["--database-url", "sqlite://source.db", "export"];
    let (ok, expected, stderr) = catalynx_cli(&export, dir.path());
    assert!(ok, "{stderr}");
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };

    let (ok, _, stderr) = catalynx_cli(&[&export[..], &["--output", "fifo"]].concat(), dir.path());

    assert!(ok, "{stderr}");
    let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo(), "the FIFO was replaced: {kind:?}");
    assert_eq!(reader.join().unwrap(), expected);

    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/old.jsonl"), "old").unwrap();
    symlink("real/old.jsonl", dir.path().join("old-link.jsonl")).unwrap();
    symlink("real/new.jsonl", dir.path().join("new-link.jsonl")).unwrap();
    for (link, target) in [
        ("old-link.jsonl", "old.jsonl"),
        ("new-link.jsonl", "new.jsonl"),
    ] {
        let (ok, _, stderr) =
            catalynx_cli(&[&export[..], &["--output", link]].concat(), dir.path());

        assert!(ok, "{link}: {stderr}");
        assert!(
            dir.path().join(link).is_symlink(),
            "{link} is no longer a link"
        );
        let written = std::fs::read_to_string(dir.path().join("real").join(target)).unwrap();
        assert_eq!(written, expected, "{link}");
    }
    assert_eq!(
        names_in(&dir.path().join("real")),
        ["new.jsonl", "old.jsonl"]
    );
    let mut names = names_in(dir.path());
    names.retain(|n| !n.starts_with("source.db"));
    assert_eq!(names, ["fifo", "new-link.jsonl", "old-link.jsonl", "real"]);
}

/// An import takes what the API takes: text trimmed, names up to 300
/// characters, free text up to 10,000, list items neither empty nor blank.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_rows_follow_the_api_rules_for_text() {
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = test_db.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let long_name = "x".repeat(1000);
    let long_notes = "n".repeat(20_000);
    let long_url = format!("https://example.org/{}", "a".repeat(300));
    let many: Vec<String> = (0..101).map(|i| format!("area {i}")).collect();
    let many = serde_json::to_string(&many).unwrap();
    let csv = catalynx_csv(
        &[
            csv_profile("p1", &[("name", &long_name)]),
            csv_profile("p2", &[("name", "  Padded Name  "), ("keywords", " food ")]),
            csv_profile("p3", &[("focus_areas", r#"["", "  "]"#)]),
            csv_profile("p4", &[("focus_areas", r#"[" arts ", "music"]"#)]),
            csv_profile("p5", &[("website_url", &long_url)]),
            csv_profile("p6", &[("focus_areas", &many)]),
            csv_opportunity("o1", "p2", &[("notes", &long_notes)]),
            csv_opportunity("o2", "p2", &[("tags", r#"["ok", " "]"#)]),
            csv_opportunity(
                "o3",
                "p2",
                &[("organization_name", "  Funder  "), ("tags", r#"[" a "]"#)],
            ),
        ],
        false,
    );
    let file = dir.path().join("export.csv");
    std::fs::write(&file, csv).unwrap();

    let report = catalynx_import::import(&db, &file, &options())
        .await
        .unwrap();

    assert_eq!(
        reject_texts(&report),
        [
            "line 2: name is longer than 300 characters",
            "line 4: focus_areas[0] must not be empty",
            "line 6: website_url is longer than 300 characters",
            "line 7: focus_areas holds more than 100 items",
            "line 8: notes is longer than 10000 characters",
            "line 9: tags[1] must not be empty",
        ]
    );
    assert_eq!(report.profiles, counts(6, 2, 0, 0, 4));
    assert_eq!(report.opportunities, counts(3, 1, 0, 0, 2));
    let p2 = profile::Entity::find_by_id("p2").one(&db.read).await;
    let p2 = p2.unwrap().unwrap();
    assert_eq!(
        (p2.name.as_str(), p2.keywords.as_deref()),
        ("Padded Name", Some("food"))
    );
    let p4 = profile::Entity::find_by_id("p4").one(&db.read).await;
    assert_eq!(p4.unwrap().unwrap().focus_areas.0, ["arts", "music"]);
    let o3 = opportunity::Entity::find_by_id("o3").one(&db.read).await;
    let o3 = o3.unwrap().unwrap();
    assert_eq!(
        (o3.organization_name.as_str(), o3.tags.0.as_slice()),
        ("Funder", &["a".to_owned()][..])
    );
    // Trimmed on the first import, the same file then changes nothing.
    let again = catalynx_import::import(&db, &file, &options())
        .await
        .unwrap();
    assert_eq!(again.profiles, counts(6, 0, 0, 2, 4));
    assert_eq!(again.opportunities, counts(3, 0, 0, 1, 2));
}

/// An empty database exports an empty JSONL file, which imports as no
/// rows; files saved by Windows tools start with a UTF-8 byte-order mark,
/// which is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_files_import_nothing_and_byte_order_marks_are_skipped() {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let dir = tempfile::tempdir().unwrap();
    let source = TestDb::new(Backend::Sqlite).await.unwrap();
    let source_db = source.connect().await;
    let mut empty = Vec::new();
    catalynx::export::export(&source_db, ExportFormat::Jsonl, &mut empty)
        .await
        .unwrap();
    assert!(empty.is_empty());
    let target = TestDb::new(Backend::Sqlite).await.unwrap();
    let db = target.connect().await;

    for (name, bytes) in [("empty.jsonl", &b""[..]), ("blank.jsonl", b"\n \r\n")] {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let report = catalynx_import::import(&db, &file, &options())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.profiles, Counts::default(), "{name}");
        assert_eq!(report.opportunities, Counts::default(), "{name}");
    }

    let plan = catalynx::seed::SeedPlan {
        profiles: 5,
        opportunities_per_profile: 2,
        seed: 9,
    };
    catalynx::seed::seed(&source_db, plan, false).await.unwrap();
    for format in [ExportFormat::Jsonl, ExportFormat::Csv] {
        let mut exported = BOM.to_vec();
        catalynx::export::export(&source_db, format, &mut exported)
            .await
            .unwrap();
        let file = dir.path().join(format!("bom-{format:?}"));
        std::fs::write(&file, &exported).unwrap();
        let target = TestDb::new(Backend::Sqlite).await.unwrap();
        let target_db = target.connect().await;

        let report = catalynx_import::import(&target_db, &file, &options())
            .await
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));

        assert_eq!(reject_texts(&report), Vec::<String>::new(), "{format:?}");
        assert_eq!(report.profiles, counts(5, 5, 0, 0, 0), "{format:?}");
        assert_eq!(digest(&target_db).await, digest(&source_db).await);
    }

    let bmf_bom = dir.path().join("eo_bom.csv");
    std::fs::write(&bmf_bom, [BOM, &std::fs::read(SAMPLE).unwrap()].concat()).unwrap();
    let report = bmf::import(&db, &[bmf_bom], &options()).await.unwrap();
    assert_eq!(report.profiles, counts(11, 7, 0, 0, 4));
}

/// Imports running at once, of the same rows, both finish: each batch holds
/// the other writers of profiles off between reading which EINs are taken
/// and writing (on PostgreSQL a profile inserted in between failed the
/// whole import on the unique EIN).
async fn imports_running_at_once_both_finish(backend: Backend) {
    let Some(test_db) = TestDb::new(backend).await else {
        return;
    };
    let db = test_db.connect().await;
    let files = [PathBuf::from(SAMPLE)];
    let options = ImportOptions {
        batch_size: 1,
        ..options()
    };
    for _ in 0..5 {
        let (a, b) = tokio::join!(
            bmf::import(&db, &files, &options),
            bmf::import(&db, &files, &options)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.profiles.rejected, 4);
        assert_eq!(b.profiles.rejected, 4);
    }
    assert_eq!(
        profile::Entity::find().count(&db.read).await.unwrap(),
        7,
        "each EIN once"
    );
    test_db.cleanup().await;
}
on_sqlite_and_postgres!(concurrent_imports, imports_running_at_once_both_finish);
