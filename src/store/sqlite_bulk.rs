//! SQLite bulk loads: one connection of the load's own, on the thread that
//! runs it, binding rows straight into prepared multi-row `INSERT`s.
//!
//! Through sea-orm every value becomes an owned sqlx argument, and each
//! statement is handed to sqlx's worker thread and awaited, so the loading
//! task and the worker take turns per statement; at 10k x 20 that hand-over
//! cost about a third of the load. Here rows arrive as SQLite values built on
//! another thread, and this thread only binds and steps.
//!
//! The connection skips CHECK constraints, which cost more than the inserts
//! themselves (`sqlite3` shell, 10k x 20: 1.0 s against 0.4 s without them):
//! the rows come from the domain enums and ranges, so they hold by
//! construction. It skips foreign-key checks too: every opportunity's
//! profile is generated and inserted before it (test
//! `foundation::seeded_rows_are_stored_as_sea_orm_stores_them` runs
//! `PRAGMA foreign_key_check` on a seed). With foreign keys off and
//! `INSERT OR FAIL`, a multi-row `INSERT` needs no statement journal: SQLite
//! keeps one only to undo a statement alone after an error, and any error
//! here undoes the whole load (the journal was about 5% of the loading
//! thread's time at 100k x 20). Unique indexes stay enforced.
//!
//! When nothing else has the file open the connection also writes under a
//! rollback journal instead of the WAL: rows appended to the file need no
//! journal, so each page is written once, where through the WAL it is
//! written twice and every page read searches a WAL of gigabytes (100k x 20:
//! 18% of the load in WAL lookups and copies). A crash still leaves all or
//! nothing: the journal undoes the load on the next open. These settings die
//! with the connection.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::SecondsFormat;
use rusqlite::types::Value as SqliteValue;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use sea_orm::{DatabaseBackend, EntityTrait, Iterable, ModelTrait, Value};

use super::bulk::{self, IndexDefinition};

/// Page cache of the load's connection while it inserts, in KiB: fewer of
/// its pages spill to the file before commit. It lives as long as the load.
const CACHE_KIB: i64 = 64 * 1024;
/// Page cache while the indexes are rebuilt, in KiB. SQLite's sorter sorts
/// runs of this size in memory and merges them from temporary files: runs
/// that fit the CPU's caches sort several times faster than one run of the
/// whole index, whose linked-list merge misses the cache at every step.
const SORT_CACHE_KIB: i64 = 4 * 1024;
/// Helper threads of SQLite's sorter: they sort and merge runs while the
/// connection's thread reads the table.
const SORT_THREADS: i64 = 2;
/// Rows per `INSERT`: enough to make the per-statement work vanish, few
/// enough that the statement's program stays small.
const ROWS_PER_STATEMENT: usize = 100;

/// The load's connection to an existing, migrated SQLite file.
pub struct BulkConnection {
    conn: Connection,
    rollback_journal: bool,
}

impl BulkConnection {
    pub fn open(path: &Path, busy_timeout: Duration) -> anyhow::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("bulk load: cannot open {:?}", path.display()))?;
        conn.busy_timeout(busy_timeout)?;
        conn.pragma_update(None, "foreign_keys", false)?;
        conn.pragma_update(None, "ignore_check_constraints", true)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        // Sorter runs go to temporary files (the operating system's cache,
        // in practice): with `temp_store = MEMORY` SQLite gives the sorter
        // no helper threads.
        conn.pragma_update(None, "temp_store", "FILE")?;
        conn.pragma_update(None, "threads", SORT_THREADS)?;
        // Leaving WAL mode needs the file to itself; with other connections
        // open it fails and the load goes through the WAL.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
            .unwrap_or_default();
        Ok(Self {
            conn,
            rollback_journal: mode == "delete",
        })
    }

    /// True when the load skips the WAL (nothing else had the file open).
    pub fn without_wal(&self) -> bool {
        self.rollback_journal
    }

    /// A write transaction, holding the write lock from its start.
    pub fn transaction(&mut self) -> rusqlite::Result<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
    }

    /// Returns the file to WAL mode; the connection closes when dropped.
    pub fn finish(self) -> rusqlite::Result<()> {
        if self.rollback_journal {
            let _mode: String = self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        }
        Ok(())
    }
}

/// Rows of one entity as SQLite values, row after row in column order.
pub struct Rows<E> {
    values: Vec<SqliteValue>,
    entity: std::marker::PhantomData<E>,
}

impl<E: EntityTrait> Rows<E> {
    /// Encodes `models` as sqlx stores them, so that rows loaded here read
    /// back, sort and compare exactly as rows written through sea-orm.
    pub fn encode(models: &[E::Model]) -> anyhow::Result<Self> {
        let columns: Vec<E::Column> = E::Column::iter().collect();
        let mut values = Vec::with_capacity(models.len() * columns.len());
        for model in models {
            for column in &columns {
                values.push(sqlite_value(model.get(*column))?);
            }
        }
        Ok(Self {
            values,
            entity: std::marker::PhantomData,
        })
    }

    /// Inserts the rows, `ROWS_PER_STATEMENT` per statement.
    pub fn insert(&self, txn: &Transaction<'_>) -> anyhow::Result<()> {
        let columns: Vec<E::Column> = E::Column::iter().collect();
        let width = columns.len();
        // Taken from the connection's cache once per row count: every full
        // chunk steps the same statement, rebinding every parameter (a
        // statement going back to the cache has its bindings cleared).
        let mut prepared: Option<(usize, rusqlite::CachedStatement<'_>)> = None;
        for chunk in self.values.chunks(width * ROWS_PER_STATEMENT) {
            let rows = chunk.len() / width;
            if prepared.as_ref().is_none_or(|(built, _)| *built != rows) {
                // Not `OR ABORT`: see the module's comment on statement journals.
                let text = bulk::insert_sql::<E>(DatabaseBackend::Sqlite, &columns, rows).replacen(
                    "INSERT INTO",
                    "INSERT OR FAIL INTO",
                    1,
                );
                prepared = Some((rows, txn.prepare_cached(&text)?));
            }
            let (_, statement) = prepared.as_mut().expect("prepared above");
            for (i, value) in chunk.iter().enumerate() {
                statement.raw_bind_parameter(i + 1, value)?;
            }
            statement.raw_execute()?;
        }
        Ok(())
    }
}

/// A sea-orm value as sqlx's SQLite driver encodes it.
fn sqlite_value(value: Value) -> anyhow::Result<SqliteValue> {
    let value = match value {
        Value::Bool(v) => v.map(|b| SqliteValue::Integer(b.into())),
        Value::TinyInt(v) => v.map(|i| SqliteValue::Integer(i.into())),
        Value::SmallInt(v) => v.map(|i| SqliteValue::Integer(i.into())),
        Value::Int(v) => v.map(|i| SqliteValue::Integer(i.into())),
        Value::BigInt(v) => v.map(SqliteValue::Integer),
        Value::Float(v) => v.map(|f| SqliteValue::Real(f.into())),
        Value::Double(v) => v.map(SqliteValue::Real),
        Value::String(v) => v.map(SqliteValue::Text),
        Value::Json(v) => v.map(|json| SqliteValue::Text(json.to_string())),
        Value::ChronoDate(v) => v.map(|date| SqliteValue::Text(date.format("%F").to_string())),
        Value::ChronoDateTimeUtc(v) => {
            v.map(|time| SqliteValue::Text(time.to_rfc3339_opts(SecondsFormat::AutoSi, false)))
        }
        other => bail!("bulk load: no SQLite encoding for {other:?}"),
    };
    Ok(value.unwrap_or(SqliteValue::Null))
}

/// Drops the non-unique secondary indexes of `tables` and returns how to
/// recreate them (see [`bulk::drop_secondary_indexes`]).
pub fn drop_secondary_indexes(
    txn: &Transaction<'_>,
    tables: &[&str],
) -> anyhow::Result<Vec<IndexDefinition>> {
    let sql = bulk::secondary_indexes_query(DatabaseBackend::Sqlite, tables);
    let indexes = txn
        .prepare(&sql)?
        .query_map([], |row| {
            Ok(IndexDefinition {
                name: row.get(0)?,
                sql: row.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for index in &indexes {
        txn.execute_batch(&format!("DROP INDEX \"{}\"", index.name))?;
    }
    Ok(indexes)
}

/// Recreates indexes dropped by `drop_secondary_indexes`, sorting in runs
/// of `SORT_CACHE_KIB` (100k x 20, `sqlite3` shell: the four opportunity
/// indexes in 2.7 s instead of 6.8 s with one 64 MiB run each).
pub fn create_indexes(txn: &Transaction<'_>, indexes: &[IndexDefinition]) -> anyhow::Result<()> {
    txn.pragma_update(None, "cache_size", -SORT_CACHE_KIB)?;
    for index in indexes {
        tracing::debug!(index = %index.name, "rebuilding index");
        txn.execute_batch(&index.sql)?;
    }
    Ok(())
}
