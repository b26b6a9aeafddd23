//! `catalynx export`: every profile, then every opportunity, so a user can
//! leave with their data or move it to another database.
//!
//! Rows are read in keyset pages over `id` inside one read transaction: the
//! export is a consistent snapshot, and memory stays flat whatever the table
//! size. Profiles come first so that `catalynx import catalynx FILE` finds
//! each opportunity's profile already imported; that import takes both
//! formats back.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use entity::{opportunity, profile};
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, IdenStatic,
    IsolationLevel, Iterable, ModelTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde::Serialize;
use serde_json::Value;

use crate::config::ExportFormat;
use crate::db::Db;

/// Rows per keyset page.
const PAGE_ROWS: u64 = 1000;

/// The CSV column that says which table a row belongs to (the `table` key in JSONL).
pub const TABLE_COLUMN: &str = "table";

/// Rows written per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub profiles: u64,
    pub opportunities: u64,
}

/// Exports to `output`, or to standard output when `None`. A file is written
/// under a temporary name and renamed when complete, so a failed export
/// never leaves a truncated file that looks whole; the temporary file is
/// removed on any failure. A pipe or device (a FIFO, `/dev/null`) is written
/// in place: a rename would replace it with a regular file.
pub async fn export_to(
    db: &Db,
    format: ExportFormat,
    output: Option<&Path>,
) -> anyhow::Result<ExportReport> {
    let Some(path) = output else {
        return export(db, format, BufWriter::new(std::io::stdout())).await;
    };
    let database = db.sqlite_file().map(|(file, _)| file);
    let target = match Destination::of(path, database.as_deref())? {
        Destination::Stream => {
            let stream = OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("--output: cannot open {}", path.display()))?;
            return export(db, format, BufWriter::new(stream)).await;
        }
        Destination::File(target) => target,
    };
    let partial = partial_name(&target);
    let file = File::create(&partial)
        .with_context(|| format!("--output: cannot create {}", partial.display()))?;
    let written = async {
        let report = export(db, format, BufWriter::new(file)).await?;
        std::fs::rename(&partial, &target)
            .with_context(|| format!("--output: cannot rename to {}", target.display()))?;
        Ok(report)
    }
    .await;
    if written.is_err() {
        // Best effort: the export's own error is the one to report.
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Checks `--output` against `database`, the SQLite file being exported
/// (`None` on PostgreSQL); the CLI asks before opening the database.
pub fn check_output(output: &Path, database: Option<&Path>) -> anyhow::Result<()> {
    Destination::of(output, database).map(drop)
}

/// Where `--output` is written.
enum Destination {
    /// A pipe or device, written in place.
    Stream,
    /// A regular file, new or replaced, written under a `.partial` name beside
    /// it and renamed onto it. For a symlink this is the link's target, so
    /// that the link stays a link.
    File(PathBuf),
}

impl Destination {
    fn of(output: &Path, database: Option<&Path>) -> anyhow::Result<Self> {
        let name = output.display();
        match std::fs::metadata(output) {
            // The finished file could never be renamed onto it.
            Ok(meta) if meta.is_dir() => {
                anyhow::bail!("--output: {name} is a directory; name a file")
            }
            Ok(meta) if !meta.is_file() => return Ok(Self::Stream),
            _ => {}
        }
        let resolved = resolve(output).with_context(|| format!("--output: cannot write {name}"))?;
        if let Some(database) = database {
            refuse_database(output, &resolved, database)?;
        }
        let is_link = std::fs::symlink_metadata(output).is_ok_and(|m| m.is_symlink());
        Ok(Self::File(if is_link {
            resolved
        } else {
            output.to_path_buf()
        }))
    }
}

fn partial_name(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    PathBuf::from(partial)
}

/// Refuses an output that is, once symlinks are followed, the database being
/// exported or one of the files SQLite keeps beside it, or whose `.partial`
/// file would be: the export would be renamed over the database (or over its
/// WAL, losing its latest writes), and a failure would delete it.
fn refuse_database(output: &Path, resolved: &Path, database: &Path) -> anyhow::Result<()> {
    let database = resolve(database).with_context(|| {
        format!(
            "DATABASE_URL / --database-url: cannot find {}",
            database.display()
        )
    })?;
    let partial = partial_name(resolved);
    let files = [
        ("", "the database being exported"),
        ("-wal", "the write-ahead log of the database being exported"),
        ("-shm", "the WAL index of the database being exported"),
        (
            "-journal",
            "the rollback journal of the database being exported",
        ),
    ];
    for (suffix, what) in files {
        let mut file = database.as_os_str().to_owned();
        file.push(suffix);
        let file = PathBuf::from(file);
        let name = output.display();
        if resolved == file {
            anyhow::bail!("--output: {name} is {what}; name another file");
        }
        if partial == file {
            anyhow::bail!(
                "--output: {name} would be written as {}, which is {what}; name another file",
                partial.display()
            );
        }
    }
    Ok(())
}

/// The file `path` names once every symlink is followed, as an absolute path,
/// whether or not it exists yet (a symlink may point to a file still to be
/// written).
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        resolved => return resolved,
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) {
        // A dangling link: follow it by hand (a loop fails the canonicalize above).
        return resolve(&parent.join(std::fs::read_link(path)?));
    }
    let Some(name) = path.file_name() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "names no file"));
    };
    Ok(std::fs::canonicalize(parent)?.join(name))
}

/// Writes every profile and then every opportunity to `out` in `format`.
pub async fn export(
    db: &Db,
    format: ExportFormat,
    mut out: impl Write,
) -> anyhow::Result<ExportReport> {
    let txn = match db.backend() {
        DatabaseBackend::Postgres => {
            db.read
                .begin_with_config(
                    Some(IsolationLevel::RepeatableRead),
                    Some(AccessMode::ReadOnly),
                )
                .await?
        }
        // A SQLite read transaction sees one snapshot from its first read.
        _ => db.read.begin().await?,
    };
    let mut sink = match format {
        ExportFormat::Jsonl => Sink::Jsonl(&mut out),
        ExportFormat::Csv => {
            let header = csv_header();
            let mut writer = csv::Writer::from_writer(&mut out);
            writer.write_record(&header)?;
            Sink::Csv(Box::new(writer), header)
        }
    };
    let report = ExportReport {
        profiles: each::<profile::Entity>(&txn, profile::Column::Id, &mut sink).await?,
        opportunities: each::<opportunity::Entity>(&txn, opportunity::Column::Id, &mut sink)
            .await?,
    };
    sink.flush().context("cannot write the export")?;
    txn.commit().await?;
    Ok(report)
}

/// `table`, the profile columns, then the opportunity columns profiles lack.
pub fn csv_header() -> Vec<String> {
    let mut header = vec![TABLE_COLUMN.to_owned()];
    let names = profile::Column::iter()
        .map(|c| c.as_str())
        .chain(opportunity::Column::iter().map(|c| c.as_str()));
    for name in names {
        if !header.iter().any(|h| h == name) {
            header.push(name.to_owned());
        }
    }
    header
}

enum Sink<'a, W: Write> {
    Jsonl(&'a mut W),
    /// The writer and the header, whose order every row follows.
    Csv(Box<csv::Writer<&'a mut W>>, Vec<String>),
}

/// One JSONL line: the table name, then the row's columns.
#[derive(Serialize)]
struct Line<'a, M> {
    table: &'a str,
    #[serde(flatten)]
    row: &'a M,
}

impl<W: Write> Sink<'_, W> {
    fn flush(self) -> std::io::Result<()> {
        match self {
            Self::Jsonl(out) => out.flush(),
            // Flushes the writer underneath too.
            Self::Csv(mut writer, _) => writer.flush(),
        }
    }

    fn write<M: Serialize>(&mut self, table: &str, row: &M) -> anyhow::Result<()> {
        match self {
            Self::Jsonl(out) => {
                serde_json::to_writer(&mut **out, &Line { table, row })?;
                out.write_all(b"\n")?;
            }
            Self::Csv(writer, header) => {
                let Value::Object(fields) = serde_json::to_value(row)? else {
                    anyhow::bail!("a {table} row did not serialise to an object");
                };
                let cells = header.iter().map(|column| match column.as_str() {
                    TABLE_COLUMN => table.to_owned(),
                    _ => match fields.get(column) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::String(text)) => text.clone(),
                        // Numbers print their shortest exact form; lists stay JSON.
                        Some(other) => other.to_string(),
                    },
                });
                writer.write_record(cells)?;
            }
        }
        Ok(())
    }
}

/// Writes every row of `E` in `id` order, one keyset page at a time.
// SELECT * FROM t WHERE id > $last ORDER BY id LIMIT 1000
async fn each<E>(
    conn: &impl ConnectionTrait,
    id: E::Column,
    sink: &mut Sink<'_, impl Write>,
) -> anyhow::Result<u64>
where
    E: EntityTrait,
    E::Model: Serialize,
{
    let table = E::default().table_name().to_owned();
    let mut after: Option<String> = None;
    let mut written = 0;
    loop {
        let mut query = E::find().order_by_asc(id).limit(PAGE_ROWS);
        if let Some(last) = &after {
            query = query.filter(id.gt(last.as_str()));
        }
        let rows = query.all(conn).await?;
        let Some(last) = rows.last() else {
            return Ok(written);
        };
        after = match last.get(id) {
            sea_orm::Value::String(Some(last)) => Some(last),
            other => anyhow::bail!("{table}.id is not text: {other:?}"),
        };
        for row in &rows {
            sink.write(&table, row)?;
        }
        written += rows.len() as u64;
    }
}
