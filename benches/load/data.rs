//! Benchmark databases: seeded SQLite files reused across runs, and a fresh
//! PostgreSQL database per run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use catalynx::config::DbConfig;
use catalynx::db::Db;
use catalynx::seed::{self, SeedPlan};
use sea_orm::{ConnectionTrait, Statement};
use serde::{Deserialize, Serialize};

/// Opportunities per profile on average (see `seed`).
pub const OPPORTUNITIES_PER_PROFILE: u64 = 20;
/// The seed of every benchmark data set: the same rows on every machine.
pub const SEED: u64 = 42;

/// How a data set was loaded; kept beside a reused SQLite file so later runs
/// still report the bulk-load speed measured when it was created.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedRecord {
    pub backend: String,
    pub profiles: u64,
    pub opportunities: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
    /// Unix seconds when the load ran.
    pub loaded_at: u64,
    /// False when this run reused a file seeded earlier.
    pub this_run: bool,
}

fn plan(profiles: u64) -> SeedPlan {
    SeedPlan {
        profiles,
        opportunities_per_profile: OPPORTUNITIES_PER_PROFILE,
        seed: SEED,
    }
}

/// Seeds a migrated database.
async fn load(db: &Db, backend: &str, profiles: u64) -> anyhow::Result<SeedRecord> {
    eprintln!("seeding {profiles} profiles x {OPPORTUNITIES_PER_PROFILE} into {backend}...");
    let report = seed::seed(db, plan(profiles), true).await?;
    eprintln!(
        "seeded {} rows in {:.1} s: {:.0} rows/s",
        report.profiles + report.opportunities,
        report.seconds,
        report.rows_per_second()
    );
    Ok(SeedRecord {
        backend: backend.to_owned(),
        profiles: report.profiles,
        opportunities: report.opportunities,
        seconds: report.seconds,
        rows_per_second: report.rows_per_second(),
        loaded_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        this_run: true,
    })
}

/// The SQLite file holding `profiles` x 20 of seed 42 under `dir`, seeded
/// first when missing (into a temporary name, so an interrupted load is
/// never reused).
pub async fn sqlite_file(dir: &Path, profiles: u64) -> anyhow::Result<(PathBuf, SeedRecord)> {
    let name = format!("catalynx-{profiles}x{OPPORTUNITIES_PER_PROFILE}-seed{SEED}.db");
    let path = dir.join(&name);
    let record_path = dir.join(format!("{name}.seed.json"));
    if path.exists() {
        let record = std::fs::read(&record_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SeedRecord>(&bytes).ok())
            .map(|r| SeedRecord {
                this_run: false,
                ..r
            })
            .with_context(|| {
                format!(
                    "{} has no readable seed record; delete the file to reseed",
                    path.display()
                )
            })?;
        // A file seeded by an older build gets this build's schema, as the
        // server's own start would give it.
        let db = Db::connect(&DbConfig::new(sqlite_url(&path))).await?;
        db.migrate().await?;
        db.close().await?;
        return Ok((path, record));
    }
    let partial = dir.join(format!("{name}.partial"));
    remove_sqlite(&partial);
    let db = Db::connect(&DbConfig::new(sqlite_url(&partial))).await?;
    db.migrate().await?;
    // As `catalynx seed` does: with the file to itself the load skips the WAL.
    db.close().await?;
    let record = load(&db, "sqlite", profiles).await?;
    std::fs::rename(&partial, &path)?;
    std::fs::write(&record_path, serde_json::to_vec_pretty(&record)?)?;
    Ok((path, record))
}

/// A scratch copy of `source` for scenarios that write, so the reused file
/// keeps exactly the seeded rows.
pub fn scratch_copy(source: &Path) -> anyhow::Result<PathBuf> {
    let copy = source.with_extension("scratch.db");
    remove_sqlite(&copy);
    std::fs::copy(source, &copy)?;
    Ok(copy)
}

/// Removes a SQLite file and its WAL and shared-memory companions.
pub fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A database created for this run on a PostgreSQL server, dropped by `drop_db`.
pub struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

static PG_COUNTER: AtomicU64 = AtomicU64::new(0);

impl PgDatabase {
    pub async fn create(admin: &str) -> anyhow::Result<Self> {
        let name = format!(
            "catalynx_bench_{}_{}",
            std::process::id(),
            PG_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let conn = sea_orm::Database::connect(admin)
            .await
            .context("--postgres: cannot connect")?;
        conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        conn.close().await?;
        let url = replace_db_name(admin, &name)?;
        Ok(Self {
            admin: admin.to_owned(),
            name,
            url,
        })
    }

    /// Seeds `profiles` x 20 and returns how fast that went.
    pub async fn seed(&self, profiles: u64) -> anyhow::Result<SeedRecord> {
        let db = Db::connect(&DbConfig::new(self.url.clone())).await?;
        db.migrate().await?;
        let record = load(&db, "postgres", profiles).await?;
        db.close().await?;
        Ok(record)
    }

    pub async fn drop_db(self) -> anyhow::Result<()> {
        let conn = sea_orm::Database::connect(&self.admin).await?;
        conn.execute_unprepared(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .await?;
        conn.close().await?;
        Ok(())
    }
}

fn replace_db_name(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let cut = base
        .rfind('/')
        .filter(|&i| i > base.find("://").map_or(0, |s| s + 2))
        .context("--postgres: expected a URL with a database name, e.g. postgres://postgres@127.0.0.1:5432/postgres")?;
    Ok(match query {
        Some(q) => format!("{}/{name}?{q}", &base[..cut]),
        None => format!("{}/{name}", &base[..cut]),
    })
}

/// Ids for workloads that pick rows at random: every profile id, and up to
/// `opportunities` opportunity ids (ids are random hex, so the first ones by
/// id are a random sample).
pub async fn ids(db: &Db, opportunities: u64) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let column = |sql: String| async move {
        db.read
            .query_all_raw(Statement::from_string(db.backend(), sql))
            .await?
            .iter()
            .map(|row| row.try_get_by_index::<String>(0))
            .collect::<Result<Vec<_>, _>>()
    };
    let profiles = column("SELECT id FROM profiles".to_owned()).await?;
    let opportunities = column(format!(
        "SELECT id FROM opportunities ORDER BY id LIMIT {opportunities}"
    ))
    .await?;
    anyhow::ensure!(
        !profiles.is_empty() && !opportunities.is_empty(),
        "empty benchmark database"
    );
    Ok((profiles, opportunities))
}
