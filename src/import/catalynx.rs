//! Catalynx data: a database of the original Catalynx platform (SQLite,
//! opened read-only), or a file written by `catalynx export` (JSONL or CSV).
//! The format is recognised by content, not by name.
//!
//! Rows keep their ids and are upserted by id. Columns are read by name:
//! columns this schema lacks (the original's extra JSON columns, a stored
//! `opportunities_count`, which is computed here instead) are ignored, and a
//! missing optional column reads as empty. List columns may hold JSON text
//! (as the original stores them) or JSON arrays (as JSONL exports do).
//! Timestamps may be RFC 3339, `YYYY-MM-DD HH:MM:SS[.ffffff]` (taken as
//! UTC), a date, or Unix seconds. A blank text value is taken as absent.
//!
//! Values go through the same domain parsers as the API's inputs: text is
//! trimmed, names are at most 300 characters and free text 10,000, list
//! items are neither blank nor more than 100. A row is rejected when a value
//! breaks a rule the API enforces (an unknown stage, a score outside 0..1,
//! an EIN that is not 9 digits, a blank tag, ...), when its
//! EIN belongs to another profile, or when an opportunity's profile is not
//! in the database (rejected, or later in the input: exports list profiles
//! first).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};
use entity::{StringList, opportunity, profile};
use indicatif::{ProgressBar, ProgressBarIter};
use sea_orm::sea_query::Expr;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sea_orm::sqlx::{self, Row, TypeInfo, ValueRef};
use sea_orm::{
    ConnectionTrait, DbErr, EntityTrait, IdenStatic, Iterable, QueryFilter, QuerySelect,
};
use serde_json::{Map, Value};

use super::{Counts, CrlfToLf, ImportReport, Input, Peeked, Position, Unit, progress_bar};
use crate::config::ImportOptions;
use crate::db::Db;
use crate::domain::{
    DbEnum, Ein, FundingSource, MAX_NAME_CHARS, MAX_TEXT_CHARS, NteeCode, OrganizationType,
    Priority, ProfileStatus, Stage, StateCode, parse_amount, parse_date, parse_rating, parse_text,
    parse_text_list, parse_time, parse_unit, parse_website, refuse_nul,
};
use crate::export::TABLE_COLUMN;
use crate::store::{IDS_PER_STATEMENT, bulk, in_ids, opportunities, profiles};

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
/// Rows read from a source database per query.
const PAGE_ROWS: i64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Table {
    Profiles,
    Opportunities,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Profiles => "profiles",
            Self::Opportunities => "opportunities",
        }
    }

    /// The columns this schema has, which are the ones read.
    fn columns(self) -> Vec<&'static str> {
        match self {
            Self::Profiles => profile::Column::iter().map(|c| c.as_str()).collect(),
            Self::Opportunities => opportunity::Column::iter().map(|c| c.as_str()).collect(),
        }
    }
}

/// One input row: its table and columns by name, or why it cannot be read.
type Item = (Position, Result<(Table, Map<String, Value>), String>);

/// A Catalynx database or export file, opened and recognised, ready to import.
pub struct Opened {
    source: Source,
    name: String,
    options: ImportOptions,
}

/// Opens the Catalynx database or export file at `path` and recognises its
/// format, before anything is written.
pub async fn open(path: &Path, options: &ImportOptions) -> anyhow::Result<Opened> {
    Ok(Opened {
        source: Source::open(path, options.quiet).await?,
        name: path.display().to_string(),
        options: options.clone(),
    })
}

/// Imports the Catalynx database or export file at `path`: [`open`], then
/// [`Opened::import`].
pub async fn import(db: &Db, path: &Path, options: &ImportOptions) -> anyhow::Result<ImportReport> {
    open(path, options).await?.import(db).await
}

impl Opened {
    /// Imports the rows in the order the input lists them.
    pub async fn import(self, db: &Db) -> anyhow::Result<ImportReport> {
        let Self {
            mut source,
            name: source_name,
            options,
        } = self;
        let mut report = ImportReport::new(options.show_rejects);
        let batch_size = usize::try_from(options.batch_size).unwrap_or(usize::MAX);
        let mut batch = Batch::default();
        while let Some((position, item)) = source.next().await? {
            // A line that names no table is counted with the profiles.
            let (table, parsed) = match item {
                Ok((table, fields)) => (table, Parsed::from_fields(table, &Fields(&fields))),
                Err(reason) => (Table::Profiles, Err(reason)),
            };
            counts(&mut report, table).read += 1;
            match parsed {
                Ok(row) => {
                    // A repeated id waits for the next batch, so the later row
                    // updates the earlier one as it would across batches.
                    if batch.ids.contains(&(table, row.id().to_owned())) {
                        batch.write(db, &mut report, &source_name).await?;
                    }
                    batch.push(position, row);
                    if batch.len() >= batch_size {
                        batch.write(db, &mut report, &source_name).await?;
                    }
                }
                Err(reason) => {
                    counts(&mut report, table).rejected += 1;
                    report.reject(&source_name, position, reason);
                }
            }
        }
        batch.write(db, &mut report, &source_name).await?;
        source.finish();
        Ok(report.finish())
    }
}

fn counts(report: &mut ImportReport, table: Table) -> &mut Counts {
    match table {
        Table::Profiles => &mut report.profiles,
        Table::Opportunities => &mut report.opportunities,
    }
}

/// The rows of a database, a JSONL file or a CSV file, in order.
enum Source {
    Database(Database),
    Jsonl {
        input: BufReader<ProgressBarIter<Peeked>>,
        bar: ProgressBar,
        line: u64,
        buffer: Vec<u8>,
    },
    Csv {
        reader: csv::Reader<CrlfToLf<ProgressBarIter<Peeked>>>,
        bar: ProgressBar,
        header: Vec<String>,
        record: csv::ByteRecord,
    },
}

impl Source {
    async fn open(path: &Path, quiet: bool) -> anyhow::Result<Self> {
        let name = path.display();
        // Opened once: a pipe would lose the bytes read to recognise it.
        let Input {
            head,
            reader,
            len,
            is_file,
        } = Input::open(path, SQLITE_MAGIC.len())?;
        if head.starts_with(SQLITE_MAGIC) {
            if !is_file {
                bail!("{name}: a SQLite database must be a file, not a pipe or device");
            }
            drop(reader);
            return Ok(Self::Database(Database::open(path, quiet).await?));
        }
        let bar = progress_bar(len, Unit::Bytes, quiet)?;
        let input = bar.wrap_read(reader);
        // JSONL, or nothing but blank space: an empty database's JSONL
        // export is an empty file, and reads as no rows.
        if matches!(
            head.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'{') | None
        ) {
            return Ok(Self::Jsonl {
                input: BufReader::new(input),
                bar,
                line: 0,
                buffer: Vec::new(),
            });
        }
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(CrlfToLf::new(input));
        let header: Vec<String> = reader
            .headers()
            .with_context(|| format!("{name}: cannot read the CSV header"))?
            .iter()
            .map(str::to_owned)
            .collect();
        if !header.iter().any(|h| h == TABLE_COLUMN) || !header.iter().any(|h| h == "id") {
            bail!(
                "{name}: not a Catalynx database or export: expected SQLite, JSONL, or CSV with `{TABLE_COLUMN}` and `id` columns"
            );
        }
        Ok(Self::Csv {
            reader,
            bar,
            header,
            record: csv::ByteRecord::new(),
        })
    }

    async fn next(&mut self) -> anyhow::Result<Option<Item>> {
        match self {
            Self::Database(database) => database.next().await,
            Self::Jsonl {
                input,
                line,
                buffer,
                ..
            } => loop {
                buffer.clear();
                if input.read_until(b'\n', buffer)? == 0 {
                    return Ok(None);
                }
                *line += 1;
                if buffer.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let fields = serde_json::from_slice::<Map<String, Value>>(buffer)
                    .map_err(|e| format!("not a JSON object: {e}"))
                    .and_then(split_table);
                return Ok(Some((Position::Line(*line), fields)));
            },
            Self::Csv {
                reader,
                header,
                record,
                ..
            } => {
                if !reader.read_byte_record(record)? {
                    return Ok(None);
                }
                let position = Position::Line(record.position().map_or(0, |p| p.line()));
                if record.len() != header.len() {
                    let reason =
                        format!("expected {} fields, found {}", header.len(), record.len());
                    return Ok(Some((position, Err(reason))));
                }
                // CSV cannot tell an empty text from none: both read as absent.
                let fields = header
                    .iter()
                    .zip(record.iter())
                    .map(|(name, cell)| {
                        let value = match cell {
                            b"" => Value::Null,
                            text => Value::String(String::from_utf8_lossy(text).into_owned()),
                        };
                        (name.clone(), value)
                    })
                    .collect();
                Ok(Some((position, split_table(fields))))
            }
        }
    }

    fn finish(self) {
        match self {
            Self::Database(Database { bar, .. })
            | Self::Jsonl { bar, .. }
            | Self::Csv { bar, .. } => bar.finish_and_clear(),
        }
    }
}

/// Takes the `table` field out of an export row.
fn split_table(mut fields: Map<String, Value>) -> Result<(Table, Map<String, Value>), String> {
    let table = match fields.remove(TABLE_COLUMN) {
        Some(Value::String(name)) if name == "profiles" => Table::Profiles,
        Some(Value::String(name)) if name == "opportunities" => Table::Opportunities,
        other => {
            return Err(format!(
                "`{TABLE_COLUMN}` must be \"profiles\" or \"opportunities\", found {}",
                other.unwrap_or(Value::Null)
            ));
        }
    };
    Ok((table, fields))
}

/// A Catalynx SQLite database, read table by table in `rowid` pages.
struct Database {
    pool: SqlitePool,
    bar: ProgressBar,
    /// Tables still to read, each with its SELECT and the columns it reads.
    pending: VecDeque<(Table, String, Vec<String>)>,
    after: i64,
    rows: VecDeque<Item>,
}

impl Database {
    async fn open(path: &Path, quiet: bool) -> anyhow::Result<Self> {
        let name = path.display();
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("{name}: cannot open the SQLite database"))?;
        let mut pending = VecDeque::new();
        let mut total = 0;
        for table in [Table::Profiles, Table::Opportunities] {
            let present: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                .bind(table.name())
                .fetch_all(&pool)
                .await
                .with_context(|| format!("{name}: cannot read the schema"))?;
            if present.is_empty() {
                bail!("{name}: not a Catalynx database: no table {}", table.name());
            }
            let columns: Vec<String> = table
                .columns()
                .into_iter()
                .filter(|c| present.iter().any(|p| p == c))
                .map(str::to_owned)
                .collect();
            let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
            let select = format!(
                "SELECT rowid, {} FROM \"{}\" WHERE rowid > ? ORDER BY rowid LIMIT {PAGE_ROWS}",
                quoted.join(", "),
                table.name()
            );
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM \"{}\"",
                table.name()
            )))
            .fetch_one(&pool)
            .await
            .with_context(|| format!("{name}: cannot count {}", table.name()))?;
            total += count as u64;
            pending.push_back((table, select, columns));
        }
        Ok(Self {
            pool,
            bar: progress_bar(total, Unit::Rows, quiet)?,
            pending,
            after: i64::MIN,
            rows: VecDeque::new(),
        })
    }

    async fn next(&mut self) -> anyhow::Result<Option<Item>> {
        loop {
            if let Some(item) = self.rows.pop_front() {
                self.bar.inc(1);
                return Ok(Some(item));
            }
            let Some((table, select, columns)) = self.pending.front() else {
                return Ok(None);
            };
            let page = sqlx::query(sqlx::AssertSqlSafe(select.as_str()))
                .bind(self.after)
                .fetch_all(&self.pool)
                .await
                .with_context(|| format!("cannot read {}", table.name()))?;
            if page.is_empty() {
                self.pending.pop_front();
                self.after = i64::MIN;
                continue;
            }
            for row in page {
                let rowid: i64 = row.try_get(0)?;
                let fields = columns
                    .iter()
                    .enumerate()
                    .map(|(i, column)| Ok((column.clone(), cell(&row, i + 1)?)))
                    .collect::<Result<Map<_, _>, sqlx::Error>>()?;
                let position = Position::Row {
                    table: table.name(),
                    rowid,
                };
                self.rows.push_back((position, Ok((*table, fields))));
                self.after = rowid;
            }
        }
    }
}

/// A SQLite value as JSON, by the type it is stored as (SQLite columns
/// hold any type, whatever they were declared as).
fn cell(row: &SqliteRow, index: usize) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().name().to_owned();
    Ok(match kind.as_str() {
        "INTEGER" => Value::from(row.try_get_unchecked::<i64, _>(index)?),
        "REAL" => serde_json::Number::from_f64(row.try_get_unchecked::<f64, _>(index)?)
            .map_or(Value::Null, Value::Number),
        "TEXT" => Value::String(row.try_get_unchecked::<String, _>(index)?),
        _ => Value::String(
            String::from_utf8_lossy(&row.try_get_unchecked::<Vec<u8>, _>(index)?).into_owned(),
        ),
    })
}

/// A row's columns by name, read leniently: numbers may be text and text
/// may be numbers, as they often are in SQLite and always are in CSV.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        match self.0.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.trim().is_empty() => None,
            Some(value) => Some(value),
        }
    }

    fn text(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => {
                refuse_nul(name, text).map_err(message)?;
                Ok(Some(text.clone()))
            }
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!("{name}: expected text, found {other}")),
        }
    }

    fn required(&self, name: &str) -> Result<String, String> {
        self.text(name)?.ok_or_else(|| format!("{name} is missing"))
    }

    /// Text the API takes from users: trimmed, at most `max` characters.
    fn user_text(&self, name: &str, max: usize) -> Result<Option<String>, String> {
        self.text(name)?
            .map(|text| parse_text(name, &text, max))
            .transpose()
            .map_err(message)
    }

    fn required_user_text(&self, name: &str, max: usize) -> Result<String, String> {
        self.user_text(name, max)?
            .ok_or_else(|| format!("{name} is missing"))
    }

    /// A list the API takes from users (focus areas, tags).
    fn user_list(&self, name: &str) -> Result<Vec<String>, String> {
        parse_text_list(name, &self.list(name)?).map_err(message)
    }

    fn number(&self, name: &str) -> Result<Option<f64>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(text)) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}: not a number: {text:?}")),
            Some(other) => Err(format!("{name}: not a number: {other}")),
        }
    }

    /// A whole number; `12.0` is accepted, `12.5` is not. Digits are read
    /// as an integer first: through a float, whole numbers near and past
    /// 2^53 would come back changed (the domain's rules then bound them). Errors
    /// quote the input's own text.
    fn integer(&self, name: &str) -> Result<Option<i64>, String> {
        // `shown` is the value as the input has it: text quoted, numbers bare.
        let (shown, float) = match self.get(name) {
            None => return Ok(None),
            Some(Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    return Ok(Some(i));
                }
                (n.to_string(), n.as_f64())
            }
            Some(Value::String(text)) => {
                let trimmed = text.trim();
                if let Ok(i) = trimmed.parse::<i64>() {
                    return Ok(Some(i));
                }
                (format!("{text:?}"), trimmed.parse::<f64>().ok())
            }
            Some(other) => return Err(format!("{name}: not a number: {other}")),
        };
        const EXACT: f64 = 9.0e15; // below 2^53 a float holds every whole number
        const RANGE: f64 = 9_223_372_036_854_775_808.0; // 2^63
        match float {
            None => Err(format!("{name}: not a number: {shown}")),
            Some(f) if f.is_nan() => Err(format!("{name}: not a number: {shown}")),
            Some(f) if f.fract() != 0.0 && f.is_finite() => {
                Err(format!("{name}: not a whole number: {shown}"))
            }
            Some(f) if f.abs() < EXACT => Ok(Some(f as i64)),
            Some(f) if f.abs() < RANGE => Err(format!(
                "{name}: {shown} cannot be read exactly with a fraction or exponent; write it in digits only"
            )),
            Some(_) => Err(format!(
                "{name}: out of range: {shown}, expected a whole number from {} to {}",
                i64::MIN,
                i64::MAX
            )),
        }
    }

    fn list(&self, name: &str) -> Result<Vec<String>, String> {
        let parsed;
        let items = match self.get(name) {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(Value::String(text)) => match serde_json::from_str(text) {
                Ok(Value::Array(items)) => {
                    parsed = items;
                    &parsed
                }
                _ => return Err(format!("{name}: not a JSON list: {text:?}")),
            },
            Some(other) => return Err(format!("{name}: not a list: {other}")),
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(text) => {
                    refuse_nul(name, text).map_err(message)?;
                    Ok(text.clone())
                }
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("{name}: not a list of text: {other}")),
            })
            .collect()
    }

    fn timestamp(&self, name: &str) -> Result<Option<DateTime<Utc>>, String> {
        let Some(time) = self.any_timestamp(name)? else {
            return Ok(None);
        };
        parse_time(name, time).map(Some).map_err(message)
    }

    fn any_timestamp(&self, name: &str) -> Result<Option<DateTime<Utc>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .and_then(|secs| DateTime::from_timestamp(secs, 0))
                .map(Some)
                .ok_or_else(|| format!("{name}: not a timestamp: {n}")),
            Some(Value::String(text)) => parse_timestamp(text)
                .map(Some)
                .ok_or_else(|| format!("{name}: not a timestamp: {text:?}")),
            Some(other) => Err(format!("{name}: not a timestamp: {other}")),
        }
    }

    fn date(&self, name: &str) -> Result<Option<NaiveDate>, String> {
        match self.get(name) {
            Some(Value::String(text)) => {
                if let Ok(date) = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
                    return parse_date(name, date).map(Some).map_err(message);
                }
            }
            None => return Ok(None),
            Some(_) => {}
        }
        Ok(self.timestamp(name)?.map(|t| t.date_naive()))
    }

    /// One of an enumeration's stored values, in any case.
    fn choice<T: DbEnum>(&self, name: &str) -> Result<Option<T>, String> {
        let Some(text) = self.text(name)? else {
            return Ok(None);
        };
        T::from_db(&text.trim().to_lowercase())
            .map(Some)
            .ok_or_else(|| {
                let allowed: Vec<&str> = T::ALL.iter().map(|v| v.as_str()).collect();
                format!(
                    "{name}: unknown value {text:?}, expected one of {}",
                    allowed.join(", ")
                )
            })
    }
}

/// RFC 3339, or the forms Python and SQLite write, taken as UTC when they
/// carry no offset. Cut to microseconds, the precision both databases keep,
/// so that a value read back compares equal.
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                .or_else(|| {
                    NaiveDate::parse_from_str(text, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                })
                .map(|t| t.and_utc())
        })?;
    Some(parsed.trunc_subsecs(6))
}

/// A validated row of either table.
enum Parsed {
    Profile(profile::Model),
    Opportunity(opportunity::Model),
}

fn message(err: crate::error::AppError) -> String {
    err.to_string()
}

impl Parsed {
    fn from_fields(table: Table, fields: &Fields) -> Result<Self, String> {
        match table {
            Table::Profiles => Self::profile(fields).map(Self::Profile),
            Table::Opportunities => Self::opportunity(fields).map(Self::Opportunity),
        }
    }

    fn id(&self) -> &str {
        match self {
            Self::Profile(p) => &p.id,
            Self::Opportunity(o) => &o.id,
        }
    }

    fn profile(f: &Fields) -> Result<profile::Model, String> {
        let created_at = f.timestamp("created_at")?.ok_or("created_at is missing")?;
        let ntee_codes = f
            .list("ntee_codes")?
            .iter()
            .map(|code| NteeCode::parse(code).map(NteeCode::into_inner))
            .collect::<Result<_, _>>()
            .map_err(message)?;
        Ok(profile::Model {
            id: f.required("id")?,
            name: f.required_user_text("name", MAX_NAME_CHARS)?,
            organization_type: f
                .choice("organization_type")?
                .unwrap_or(OrganizationType::Nonprofit)
                .as_str()
                .to_owned(),
            ein: f
                .text("ein")?
                .map(|ein| Ein::parse(&ein).map(Ein::into_inner))
                .transpose()
                .map_err(message)?,
            mission_statement: f.user_text("mission_statement", MAX_TEXT_CHARS)?,
            status: f
                .choice("status")?
                .unwrap_or(ProfileStatus::Active)
                .as_str()
                .to_owned(),
            keywords: f.user_text("keywords", MAX_TEXT_CHARS)?,
            focus_areas: StringList(f.user_list("focus_areas")?),
            ntee_codes: StringList(ntee_codes),
            city: f.user_text("city", MAX_NAME_CHARS)?,
            state: f
                .text("state")?
                .map(|state| StateCode::parse(&state).map(StateCode::into_inner))
                .transpose()
                .map_err(message)?,
            annual_revenue: f
                .integer("annual_revenue")?
                .map(|v| parse_amount("annual_revenue", v))
                .transpose()
                .map_err(message)?,
            website_url: f
                .text("website_url")?
                .filter(|v| !v.trim().is_empty())
                .map(|v| parse_website("website_url", &v, MAX_NAME_CHARS))
                .transpose()
                .map_err(message)?,
            last_discovery_date: f.timestamp("last_discovery_date")?,
            created_at,
            updated_at: f.timestamp("updated_at")?.unwrap_or(created_at),
        })
    }

    fn opportunity(f: &Fields) -> Result<opportunity::Model, String> {
        let created_at = f.timestamp("created_at")?.ok_or("created_at is missing")?;
        let unit = |name: &str| -> Result<Option<f64>, String> {
            f.number(name)?
                .map(|v| parse_unit(name, v))
                .transpose()
                .map_err(message)
        };
        let amount = |name: &str| -> Result<Option<i64>, String> {
            f.integer(name)?
                .map(|v| parse_amount(name, v))
                .transpose()
                .map_err(message)
        };
        let (award_floor, award_ceiling) = (amount("award_floor")?, amount("award_ceiling")?);
        if let (Some(floor), Some(ceiling)) = (award_floor, award_ceiling)
            && floor > ceiling
        {
            return Err(format!(
                "award_floor {floor} is above award_ceiling {ceiling}"
            ));
        }
        let user_rating = f
            .integer("user_rating")?
            .map(|v| parse_rating("user_rating", i32::try_from(v).unwrap_or(i32::MAX)))
            .transpose()
            .map_err(message)?;
        Ok(opportunity::Model {
            id: f.required("id")?,
            profile_id: f.required("profile_id")?,
            organization_name: f.required_user_text("organization_name", MAX_NAME_CHARS)?,
            ein: f
                .text("ein")?
                .map(|ein| Ein::parse(&ein).map(Ein::into_inner))
                .transpose()
                .map_err(message)?,
            current_stage: f
                .choice("current_stage")?
                .unwrap_or(Stage::Discovery)
                .as_str()
                .to_owned(),
            overall_score: unit("overall_score")?.unwrap_or(0.0),
            confidence_level: unit("confidence_level")?,
            priority_level: f
                .choice::<Priority>("priority_level")?
                .map(|p| p.as_str().to_owned()),
            user_rating,
            source: f
                .choice::<FundingSource>("source")?
                .map(|s| s.as_str().to_owned()),
            award_floor,
            award_ceiling,
            close_date: f.date("close_date")?,
            tags: StringList(f.user_list("tags")?),
            notes: f.user_text("notes", MAX_TEXT_CHARS)?,
            discovery_date: f.timestamp("discovery_date")?.unwrap_or(created_at),
            created_at,
            updated_at: f.timestamp("updated_at")?.unwrap_or(created_at),
        })
    }
}

/// Valid rows waiting to be written, with their ids for duplicate checks.
#[derive(Default)]
struct Batch {
    profiles: Vec<(Position, profile::Model)>,
    opportunities: Vec<(Position, opportunity::Model)>,
    ids: HashSet<(Table, String)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.profiles.len() + self.opportunities.len()
    }

    fn push(&mut self, position: Position, row: Parsed) {
        match row {
            Parsed::Profile(p) => {
                self.ids.insert((Table::Profiles, p.id.clone()));
                self.profiles.push((position, p));
            }
            Parsed::Opportunity(o) => {
                self.ids.insert((Table::Opportunities, o.id.clone()));
                self.opportunities.push((position, o));
            }
        }
    }

    /// Writes the batch in one transaction and empties it: profiles first,
    /// so that opportunities find them; new rows in bulk, changed rows one
    /// statement each, unchanged rows not at all.
    async fn write(
        &mut self,
        db: &Db,
        report: &mut ImportReport,
        source: &str,
    ) -> Result<(), DbErr> {
        if self.len() == 0 {
            return Ok(());
        }
        self.ids.clear();
        let written = report.profiles.written() + report.opportunities.written();
        let txn = crate::db::begin_profiles_write(db).await?;

        let ids: Vec<String> = self.profiles.iter().map(|(_, p)| p.id.clone()).collect();
        let existing: HashMap<String, profile::Model> = profiles::by_ids(&txn, &ids)
            .await?
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let eins: Vec<String> = self
            .profiles
            .iter()
            .filter_map(|(_, p)| p.ein.clone())
            .collect();
        let mut ein_owners = ein_owners(&txn, &eins).await?;
        let mut inserts = Vec::new();
        for (position, p) in self.profiles.drain(..) {
            if let Some(ein) = &p.ein {
                if let Some(owner) = ein_owners.get(ein)
                    && *owner != p.id
                {
                    report.profiles.rejected += 1;
                    report.reject(
                        source,
                        position,
                        format!("EIN {ein} belongs to profile {owner}"),
                    );
                    continue;
                }
                ein_owners.insert(ein.clone(), p.id.clone());
            }
            match existing.get(&p.id) {
                None => inserts.push(p),
                Some(current) if *current == p => report.profiles.unchanged += 1,
                Some(_) => {
                    profiles::update(&txn, p).await?;
                    report.profiles.updated += 1;
                }
            }
        }
        bulk::insert_many::<profile::Entity, _>(&txn, &inserts).await?;
        report.profiles.inserted += inserts.len() as u64;

        let ids: Vec<String> = self
            .opportunities
            .iter()
            .map(|(_, o)| o.id.clone())
            .collect();
        let existing: HashMap<String, opportunity::Model> = opportunities_by_ids(&txn, &ids)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        let parents: Vec<String> = self
            .opportunities
            .iter()
            .map(|(_, o)| o.profile_id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let present = present_profiles(&txn, &parents).await?;
        let mut inserts = Vec::new();
        for (position, o) in self.opportunities.drain(..) {
            if !present.contains(&o.profile_id) {
                report.opportunities.rejected += 1;
                report.reject(
                    source,
                    position,
                    format!("profile {} does not exist", o.profile_id),
                );
                continue;
            }
            match existing.get(&o.id) {
                None => inserts.push(o),
                Some(current) if *current == o => report.opportunities.unchanged += 1,
                Some(_) => {
                    opportunities::update(&txn, o).await?;
                    report.opportunities.updated += 1;
                }
            }
        }
        bulk::insert_many::<opportunity::Entity, _>(&txn, &inserts).await?;
        report.opportunities.inserted += inserts.len() as u64;
        if report.profiles.written() + report.opportunities.written() > written {
            crate::store::raise_data_epoch(&txn).await?;
        }
        txn.commit().await
    }
}

/// Which profile holds each of `eins`.
// SELECT id, ein FROM profiles WHERE ein IN (...)   -- ein = ANY($1) on PostgreSQL
async fn ein_owners(
    conn: &impl ConnectionTrait,
    eins: &[String],
) -> Result<HashMap<String, String>, DbErr> {
    let mut owners = HashMap::with_capacity(eins.len());
    for chunk in eins.chunks(IDS_PER_STATEMENT) {
        let cond = in_ids(
            conn.get_database_backend(),
            Expr::col((profile::Entity, profile::Column::Ein)),
            chunk,
        );
        let rows: Vec<(String, Option<String>)> = profile::Entity::find()
            .select_only()
            .column(profile::Column::Id)
            .column(profile::Column::Ein)
            .filter(cond)
            .into_tuple()
            .all(conn)
            .await?;
        owners.extend(rows.into_iter().filter_map(|(id, ein)| Some((ein?, id))));
    }
    Ok(owners)
}

/// Which of `ids` are profiles in the database.
// SELECT id FROM profiles WHERE id IN (...)   -- id = ANY($1) on PostgreSQL
async fn present_profiles(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> Result<HashSet<String>, DbErr> {
    let mut present = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let cond = in_ids(
            conn.get_database_backend(),
            Expr::col((profile::Entity, profile::Column::Id)),
            chunk,
        );
        let rows: Vec<String> = profile::Entity::find()
            .select_only()
            .column(profile::Column::Id)
            .filter(cond)
            .into_tuple()
            .all(conn)
            .await?;
        present.extend(rows);
    }
    Ok(present)
}

/// Opportunities with the given ids, in no particular order.
// SELECT ... FROM opportunities WHERE id IN (...)   -- id = ANY($1) on PostgreSQL
async fn opportunities_by_ids(
    conn: &impl ConnectionTrait,
    ids: &[String],
) -> Result<Vec<opportunity::Model>, DbErr> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let cond = in_ids(
            conn.get_database_backend(),
            Expr::col((opportunity::Entity, opportunity::Column::Id)),
            chunk,
        );
        rows.extend(opportunity::Entity::find().filter(cond).all(conn).await?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_the_forms_old_data_uses() {
        let want = "2024-03-01T10:15:00.123456Z";
        for text in [
            "2024-03-01T10:15:00.123456Z",
            "2024-03-01T11:15:00.123456+01:00",
            "2024-03-01 10:15:00.123456",
            "2024-03-01T10:15:00.1234567",
            "2024-03-01 10:15:00.123456+00:00",
        ] {
            let parsed = parse_timestamp(text).unwrap_or_else(|| panic!("{text:?}"));
            assert_eq!(
                parsed.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                want
            );
        }
        assert_eq!(
            parse_timestamp("2024-03-01").unwrap().to_rfc3339(),
            "2024-03-01T00:00:00+00:00"
        );
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn lenient_fields() {
        let map: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "a": "12", "b": 12.0, "c": 12.5, "d": "  ", "e": "[\"x\", 2]", "f": ["y"], "g": "x",
            "stage": "Targets"
        }))
        .unwrap();
        let f = Fields(&map);
        assert_eq!(f.integer("a"), Ok(Some(12)));
        assert_eq!(f.integer("b"), Ok(Some(12)));
        assert!(f.integer("c").is_err());
        assert_eq!(f.text("d"), Ok(None));
        assert_eq!(f.list("e"), Ok(vec!["x".into(), "2".into()]));
        assert_eq!(f.list("f"), Ok(vec!["y".into()]));
        assert!(f.list("g").is_err());
        assert_eq!(f.list("missing"), Ok(vec![]));
        assert_eq!(f.choice::<Stage>("stage"), Ok(Some(Stage::Targets)));
        assert!(f.choice::<Priority>("g").is_err());
    }
}
