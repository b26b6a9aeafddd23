//! Database connections: the embedded SQLite default and PostgreSQL, chosen by URL.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly
//! one connection (they queue in-process instead of spinning on the file lock)
//! while reads use a pool of many: in WAL mode readers never block each other
//! or the writer. On PostgreSQL both handles share one pool.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::Connection;
use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sea_orm::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, SqlxPostgresConnector, SqlxSqliteConnector, Statement,
    TransactionOptions, TransactionTrait,
};

use crate::config::DbConfig;

/// Page size of a new SQLite file (an existing file keeps its own). Against
/// SQLite's default of 4 KiB, 16 KiB pages halve the B-tree depth and the
/// per-page work of bulk loads and index builds.
const SQLITE_PAGE_SIZE: u32 = 16 * 1024;
/// Default read pool on SQLite: readers are cheap in WAL mode.
const SQLITE_READERS: u32 = 8;
/// Rows sqlx's SQLite thread may queue for a statement's reader: a page of
/// 500 profiles' first opportunities fits without the thread waiting.
const SQLITE_ROW_BUFFER: usize = 1024;
/// Default pool per replica on PostgreSQL; keep replicas x this under `max_connections`.
const POSTGRES_CONNECTIONS: u32 = 10;
/// Key of the PostgreSQL advisory lock that serialises migrations across replicas.
const MIGRATION_LOCK_KEY: i64 = 0x0ca7_a1e5;

/// A cheap-to-clone handle to the database pools and the statement counter.
#[derive(Clone)]
pub struct Db {
    /// For reads: many connections.
    pub read: DatabaseConnection,
    /// For writes: one connection on SQLite, the shared pool on PostgreSQL.
    pub write: DatabaseConnection,
    statements: Arc<AtomicU64>,
    /// SQLite: how long a writer waits for the file's lock.
    busy_timeout: Duration,
}

/// How busy one connection pool is.
#[derive(Clone, Copy, Debug)]
pub struct PoolUsage {
    pub pool: &'static str,
    pub open: u32,
    pub in_use: u32,
}

impl Db {
    /// Opens (and on SQLite creates) the database named by the configuration.
    /// Errors name the setting and say what went wrong in one line.
    pub async fn connect(config: &DbConfig) -> anyhow::Result<Self> {
        let url = config.database_url.as_str();
        let (mut read, mut write) = if url.starts_with("sqlite:") {
            connect_sqlite(config).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = connect_postgres(config).await?;
            (pool.clone(), pool)
        } else {
            bail!(
                "DATABASE_URL / --database-url: unsupported URL {:?}; use sqlite://PATH or postgres://USER@HOST/DB",
                redact(url)
            );
        };
        let statements = Arc::new(AtomicU64::new(0));
        for conn in [&mut read, &mut write] {
            let counter = statements.clone();
            conn.set_metric_callback(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
        Ok(Self {
            read,
            write,
            statements,
            busy_timeout: Duration::from_millis(config.sqlite_busy_timeout_ms),
        })
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.write.get_database_backend()
    }

    /// SQL statements sent since start (both pools), for tests, metrics and the benchmark.
    pub fn statement_count(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Connections in use and open, per pool (`read`, `write`; one `shared`
    /// pool on PostgreSQL), for metrics.
    pub fn pool_usage(&self) -> Vec<PoolUsage> {
        let usage = |pool: &'static str, conn: &DatabaseConnection| {
            let (open, idle) = match self.backend() {
                DatabaseBackend::Postgres => {
                    let p = conn.get_postgres_connection_pool();
                    (p.size(), p.num_idle())
                }
                _ => {
                    let p = conn.get_sqlite_connection_pool();
                    (p.size(), p.num_idle())
                }
            };
            PoolUsage {
                pool,
                open,
                in_use: open.saturating_sub(idle as u32),
            }
        };
        match self.backend() {
            DatabaseBackend::Postgres => vec![usage("shared", &self.write)],
            _ => vec![usage("read", &self.read), usage("write", &self.write)],
        }
    }

    /// Applies pending migrations. On PostgreSQL an advisory lock makes
    /// replicas that start together run them one after another, so the
    /// second finds nothing left to do.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        if self.backend() != DatabaseBackend::Postgres {
            return Migrator::up(&self.write, None).await;
        }
        let pool = self.write.get_postgres_connection_pool();
        let mut lock = pool
            .acquire()
            .await
            .map_err(|e| DbErr::Custom(format!("migration lock: {e}")))?;
        let lock_sql = "SELECT pg_advisory_lock($1)";
        sea_orm::sqlx::query(lock_sql)
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *lock)
            .await
            .map_err(|e| DbErr::Custom(format!("migration lock: {e}")))?;
        let result = Migrator::up(&self.write, None).await;
        let unlock = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *lock)
            .await;
        if let Err(e) = unlock {
            // The lock is session-scoped: dropping the connection releases it.
            tracing::warn!(error = %e, "could not release the migration lock");
            lock.close_on_drop();
        }
        result
    }

    /// Applies pending migrations when there are any, and otherwise writes
    /// nothing: for commands that only read (export), where
    /// [`Db::migrate`] would still create the migration table in a
    /// database without it.
    pub async fn migrate_if_pending(&self) -> Result<(), DbErr> {
        if Migrator::get_pending_migrations_read_only(&self.read)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        self.migrate().await
    }

    /// A write transaction on the writer; see [`begin_write`].
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        begin_write(&self.write).await
    }

    /// A connection of its own for a bulk load on PostgreSQL (the seed). It
    /// works after [`Db::close`]. SQLite loads go through
    /// [`crate::store::sqlite_bulk`] on [`Db::sqlite_file`] instead.
    pub async fn postgres_bulk_connection(&self) -> Result<DatabaseConnection, DbErr> {
        let options = (*self.write.get_postgres_connection_pool().connect_options()).clone();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| DbErr::Custom(format!("bulk-load connection: {e}")))?;
        Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
    }

    /// On SQLite, the database file and how long a writer waits for its lock.
    pub fn sqlite_file(&self) -> Option<(PathBuf, Duration)> {
        (self.backend() == DatabaseBackend::Sqlite).then(|| {
            let options = self.write.get_sqlite_connection_pool().connect_options();
            (options.get_filename().to_path_buf(), self.busy_timeout)
        })
    }

    /// Closes both pools (they are shared by every clone of this handle).
    pub async fn close(&self) -> Result<(), DbErr> {
        self.read.clone().close().await?;
        self.write.clone().close().await
    }

    /// Ends a command that wrote. On SQLite it first moves what the WAL holds
    /// into the database file and empties the WAL
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`): until a checkpoint the latest
    /// writes live only in the `-wal` file, so a copy of the database file
    /// alone missed them. Then it closes both pools. The server leaves
    /// checkpoints to SQLite.
    pub async fn close_after_writes(&self) -> anyhow::Result<()> {
        if self.backend() == DatabaseBackend::Sqlite {
            let pool = self.write.get_sqlite_connection_pool();
            let checkpoint =
                sea_orm::sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
                    .fetch_one(pool)
                    .await;
            match checkpoint {
                // A reader in another process kept the WAL busy past the busy
                // timeout; the writes are committed all the same.
                Ok((busy, _, _)) if busy != 0 => tracing::warn!(
                    "another process is reading the database: the latest writes stay in its -wal \
                     file until SQLite checkpoints it"
                ),
                Ok(_) => {}
                // Opened read-only (see `OpenMode`): it wrote nothing.
                Err(e) if is_read_only(&e) => {}
                Err(e) => return Err(e).context("cannot checkpoint the SQLite WAL"),
            }
        }
        self.close().await?;
        Ok(())
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        self.read
            .execute_raw(Statement::from_string(self.backend(), "SELECT 1"))
            .await
            .is_ok()
    }
}

/// A write transaction. On SQLite it takes the write lock at `BEGIN`
/// (`IMMEDIATE`), waiting up to the busy timeout for it: a deferred one
/// that reads first and writes later fails at once with `database is
/// locked` when another connection wrote in between, whatever the timeout.
/// A write transaction that first holds off every other writer of
/// `profiles` until it ends, for writes that read which EINs are taken and
/// then write (imports): on PostgreSQL a profile inserted by another writer
/// between the two failed the whole import on the unique EIN. SQLite's write
/// transactions exclude each other already.
pub async fn begin_profiles_write(db: &Db) -> Result<DatabaseTransaction, DbErr> {
    let txn = db.begin_write().await?;
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_unprepared("LOCK TABLE profiles IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    Ok(txn)
}

pub async fn begin_write(conn: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    match conn.get_database_backend() {
        DatabaseBackend::Sqlite => {
            conn.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
        }
        _ => conn.begin().await,
    }
}

/// The file a `sqlite:` URL names; `None` for any other URL.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// Refuses an existing SQLite file that holds this schema's tables without
/// `seaql_migrations`: a database this server did not create, such as one of
/// the original Catalynx platform. Migrating it would take its tables as
/// already created (`CREATE TABLE IF NOT EXISTS`), add this schema's
/// indexes, triggers and migration records to it, and leave a file whose
/// every read fails. The file is looked at read-only, before anything else
/// opens it: even switching it to WAL would write to it. A file that cannot
/// be read this way is left to the normal open to report.
async fn refuse_foreign_sqlite(path: &Path) -> anyhow::Result<()> {
    use sea_orm::sqlx::ConnectOptions;
    if !path.is_file() {
        return Ok(());
    }
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    let Ok(mut conn) = options.connect().await else {
        return Ok(());
    };
    let tables: Result<Vec<String>, _> = sea_orm::sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name IN ('profiles', 'opportunities', 'seaql_migrations')",
    )
    .fetch_all(&mut conn)
    .await;
    conn.close().await.ok();
    let Ok(tables) = tables else {
        return Ok(());
    };
    let ours: Vec<&str> = ["profiles", "opportunities"]
        .into_iter()
        .filter(|name| tables.iter().any(|t| t == name))
        .collect();
    if ours.is_empty() || tables.iter().any(|t| t == "seaql_migrations") {
        return Ok(());
    }
    bail!(
        "DATABASE_URL / --database-url: {:?} has {} tables but was not created by this server \
         (e.g. a database of the original Catalynx platform); it was left untouched: import it \
         into a new database with `catalynx --database-url sqlite://NEW.db import catalynx {}`",
        path.display().to_string(),
        ours.join(" and "),
        path.display()
    );
}

async fn connect_sqlite(
    config: &DbConfig,
) -> anyhow::Result<(DatabaseConnection, DatabaseConnection)> {
    if let Some(path) = sqlite_path(&config.database_url) {
        refuse_foreign_sqlite(&path).await?;
    }
    let acquire = Duration::from_secs(config.db_acquire_timeout);
    let mut mode = OpenMode::ReadWrite;
    // The writer opens first: it creates the file and switches it to WAL.
    let (writer, options) = loop {
        let options = sqlite_options(config, mode)?;
        let opened = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire)
            .connect_with(options.clone())
            .await;
        match (opened, mode.fallback()) {
            (Ok(writer), _) => break (writer, options),
            // A file or directory that cannot be written (a read-only copy
            // or mount): serve reads; writes then fail with READ_ONLY.
            (Err(e), Some(next)) if is_read_only(&e) => {
                tracing::warn!(
                    path = %options.get_filename().display(),
                    "the database cannot be written: {}",
                    next.explain()
                );
                mode = next;
            }
            (Err(e), _) => {
                return Err(e).with_context(|| {
                    format!(
                        "DATABASE_URL / --database-url: cannot open SQLite database {:?}",
                        options.get_filename().display().to_string()
                    )
                });
            }
        }
    };
    let path = options.get_filename().display().to_string();
    let readers = SqlitePoolOptions::new()
        .max_connections(sqlite_readers(config))
        .min_connections(1)
        .acquire_timeout(acquire)
        .connect_with(options)
        .await
        .with_context(|| {
            format!("DATABASE_URL / --database-url: cannot open SQLite database {path:?}")
        })?;
    Ok((
        SqlxSqliteConnector::from_sqlx_sqlite_pool(readers),
        SqlxSqliteConnector::from_sqlx_sqlite_pool(writer),
    ))
}

/// How a SQLite file is opened; each mode is the fallback of the one before
/// when the file cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenMode {
    ReadWrite,
    /// Read-only: needs the WAL's shared-memory file, or a directory to create it in.
    ReadOnly,
    /// Read-only, and trusted not to change: needs nothing else, but misses
    /// changes other processes make.
    Immutable,
}

impl OpenMode {
    fn fallback(self) -> Option<Self> {
        match self {
            Self::ReadWrite => Some(Self::ReadOnly),
            Self::ReadOnly => Some(Self::Immutable),
            Self::Immutable => None,
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Self::ReadWrite => "opened for reading and writing",
            Self::ReadOnly => "serving it read-only (writes fail with READ_ONLY)",
            Self::Immutable => {
                "serving it read-only and as immutable (its directory is read-only too; \
                 changes other processes make are not seen)"
            }
        }
    }
}

fn sqlite_readers(config: &DbConfig) -> u32 {
    config.db_max_connections.unwrap_or(SQLITE_READERS)
}

/// Each connection's share of the page-cache budget, in KiB (a negative
/// `cache_size` counts KiB): random reads over a large file fill every
/// connection's cache, so the budget bounds them together.
fn sqlite_cache_kib(config: &DbConfig) -> u64 {
    let connections = u64::from(sqlite_readers(config)) + 1;
    (config.sqlite_cache_mib * 1024 / connections).max(256)
}

/// The memory-mapped window, or 0 for a file larger than it. A file that
/// fits is read without copies (10k profiles, 90 MB: the nested page 257-260
/// against 217 req/s with a 64 MiB window). Over a larger file most random
/// reads fall outside the window, while the pages inside it count as the
/// server's memory once for every connection that touched them (1M profiles,
/// 9 GB: 105 MB of a 280 MB peak RSS), so it stays off. Decided when the
/// pool opens: a file that outgrows the window later keeps it.
fn sqlite_mmap_bytes(config: &DbConfig, path: &std::path::Path) -> u64 {
    let window = config.sqlite_mmap_mib << 20;
    match std::fs::metadata(path) {
        Ok(file) if file.len() > window => 0,
        _ => window,
    }
}

/// Every pooled connection's settings (sqlx applies them to each new
/// connection, not only the first). Read-only modes neither create the file
/// nor switch its journal mode: both write.
fn sqlite_options(config: &DbConfig, mode: OpenMode) -> anyhow::Result<SqliteConnectOptions> {
    let url = config.database_url.as_str();
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("DATABASE_URL / --database-url: invalid SQLite URL {url:?}"))?;
    // SQLite gives each connection a temporary database of its own for an
    // empty name: the pool's connections would not share their tables.
    if options.get_filename().as_os_str().is_empty() {
        bail!(
            "DATABASE_URL / --database-url: {url:?} names no file; use sqlite://PATH, e.g. sqlite://catalynx.db"
        );
    }
    let options = options
        .foreign_keys(true)
        .busy_timeout(Duration::from_millis(config.sqlite_busy_timeout_ms))
        .pragma("cache_size", format!("-{}", sqlite_cache_kib(config)))
        .pragma("temp_store", "MEMORY")
        // sqlx's SQLite thread hands each row to the async side through a
        // channel of this many slots and sleeps when it is full: at its
        // default of 50, a nested page of 50 x 5 rows put the thread to
        // sleep and woke it again several times per statement.
        .row_buffer_size(SQLITE_ROW_BUFFER);
    let mmap = sqlite_mmap_bytes(config, options.get_filename());
    let options = options.pragma("mmap_size", mmap.to_string());
    Ok(match mode {
        OpenMode::ReadWrite => options
            .create_if_missing(true)
            .page_size(SQLITE_PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal),
        OpenMode::ReadOnly => options.read_only(true),
        OpenMode::Immutable => options.read_only(true).immutable(true),
    })
}

/// SQLite's `SQLITE_READONLY` family (the primary code is the low byte).
fn is_read_only(error: &sea_orm::sqlx::Error) -> bool {
    match error {
        sea_orm::sqlx::Error::Database(e) => e
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == 8),
        _ => false,
    }
}

async fn connect_postgres(config: &DbConfig) -> anyhow::Result<DatabaseConnection> {
    let url = config.database_url.as_str();
    let mut options = PgConnectOptions::from_str(url).with_context(|| {
        format!(
            "DATABASE_URL / --database-url: invalid PostgreSQL URL {:?}",
            redact(url)
        )
    })?;
    if config.pg_statement_timeout_ms > 0 {
        options = options.options([(
            "statement_timeout",
            config.pg_statement_timeout_ms.to_string(),
        )]);
    }
    let context = || {
        format!(
            "DATABASE_URL / --database-url: cannot connect to PostgreSQL at {:?}",
            redact(url)
        )
    };
    // The pool retries a failed first connection until its acquire timeout
    // and then reports only the timeout; one connection made directly says
    // why (connection refused, no such database, authentication failed).
    let probe = PgConnection::connect_with(&options)
        .await
        .with_context(context)?;
    // Closing politely only spares the server a log line; the probe has
    // done its work either way.
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(config.db_max_connections.unwrap_or(POSTGRES_CONNECTIONS))
        .acquire_timeout(Duration::from_secs(config.db_acquire_timeout))
        .connect_with(options)
        .await
        .with_context(context)?;
    Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
}

/// The URL without its password, for messages: the one after the user name
/// and any `password` or `sslpassword` parameter.
fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut redacted = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &base[..scheme + 3], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _))
                    if key.eq_ignore_ascii_case("password")
                        || key.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{key}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        redacted = format!("{redacted}?{}", params.join("&"));
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::{Db, redact};
    use crate::config::DbConfig;

    #[tokio::test]
    async fn sqlite_urls_without_a_file_are_refused() {
        for url in ["sqlite://", "sqlite:"] {
            let refused = Db::connect(&DbConfig::new(url)).await.err();
            let message = refused.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("names no file"), "{url}: {message:?}");
        }
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=p@ss&SSLPASSWORD=k"),
            "postgres://u@h/db?sslmode=require&password=***&SSLPASSWORD=***"
        );
        assert_eq!(
            redact("postgres://u:pw@h/db?application_name=a"),
            "postgres://u:***@h/db?application_name=a"
        );
    }
}
