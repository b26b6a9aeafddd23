//! The IRS Exempt Organizations Business Master File (EO BMF): CSV files,
//! plain or gzip-compressed, with the 28-column header in [`HEADER`].
//!
//! A row becomes a profile: `EIN` → ein, `NAME` → name, `CITY`, `STATE`,
//! `REVENUE_AMT` → annual_revenue, `NTEE_CD` → ntee_codes (a one-element
//! list); new profiles are active nonprofits. Profiles are matched by EIN:
//! those five fields follow the file (a blank value clears the field), every
//! other field (mission, keywords, status, ...) is the user's and is never
//! touched.
//!
//! Validation: a row is rejected when its EIN is not 9 digits, its NAME is
//! blank, its STATE is set but not a US state code, or it has the wrong
//! number of fields, or its NAME is longer than the API takes (300
//! characters). A blank STATE, a blank or malformed NTEE_CD, a CITY longer
//! than 300 characters, and a blank, non-numeric, negative or too large
//! REVENUE_AMT (past 2^53 - 1, which the API's `Dollars` cannot carry) only
//! leave that field empty: the organisation is still worth having. Bytes that are not UTF-8 are replaced
//! (U+FFFD) rather than rejected, for the same reason.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use entity::{StringList, profile};
use flate2::bufread::MultiGzDecoder;
use indicatif::ProgressBar;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::{Counts, CrlfToLf, ImportReport, Input, Position, Unit, progress_bar};
use crate::config::ImportOptions;
use crate::db::Db;
use crate::domain::{
    DbEnum, Ein, MAX_AMOUNT, MAX_NAME_CHARS, NteeCode, OrganizationType, ProfileStatus, StateCode,
    parse_text,
};
use crate::store::{IDS_PER_STATEMENT, bulk, in_ids, new_id, now};

/// The EO BMF header, exactly; a file with another header is refused whole.
pub const HEADER: [&str; 28] = [
    "EIN",
    "NAME",
    "ICO",
    "STREET",
    "CITY",
    "STATE",
    "ZIP",
    "GROUP",
    "SUBSECTION",
    "AFFILIATION",
    "CLASSIFICATION",
    "RULING",
    "DEDUCTIBILITY",
    "FOUNDATION",
    "ACTIVITY",
    "ORGANIZATION",
    "STATUS",
    "TAX_PERIOD",
    "ASSET_CD",
    "INCOME_CD",
    "FILING_REQ_CD",
    "PF_FILING_REQ_CD",
    "ACCT_PD",
    "ASSET_AMT",
    "INCOME_AMT",
    "REVENUE_AMT",
    "NTEE_CD",
    "SORT_NAME",
];
const EIN: usize = 0;
const NAME: usize = 1;
const CITY: usize = 4;
const STATE: usize = 5;
const REVENUE_AMT: usize = 25;
const NTEE_CD: usize = 26;

/// The first bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The profile fields one BMF row carries, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BmfRow {
    ein: String,
    name: String,
    city: Option<String>,
    state: Option<String>,
    annual_revenue: Option<i64>,
    ntee_codes: Vec<String>,
}

impl BmfRow {
    fn parse(record: &csv::ByteRecord) -> Result<Self, String> {
        if record.len() != HEADER.len() {
            return Err(format!(
                "expected {} fields, found {}",
                HEADER.len(),
                record.len()
            ));
        }
        if record.iter().any(|field| field.contains(&0)) {
            return Err("a field holds a NUL character".to_owned());
        }
        let field = |i: usize| String::from_utf8_lossy(&record[i]).trim().to_owned();
        let blank_to_none = |s: String| (!s.is_empty()).then_some(s);
        let ein = Ein::parse(&field(EIN))
            .map_err(|e| e.to_string())?
            .into_inner();
        let name = field(NAME);
        if name.is_empty() {
            return Err("NAME is blank".to_owned());
        }
        let name = parse_text("NAME", &name, MAX_NAME_CHARS).map_err(|e| e.to_string())?;
        let state = match blank_to_none(field(STATE)) {
            Some(state) => Some(
                StateCode::parse(&state)
                    .map_err(|e| e.to_string())?
                    .into_inner(),
            ),
            None => None,
        };
        let annual_revenue = field(REVENUE_AMT)
            .parse::<i64>()
            .ok()
            .filter(|v| (0..=MAX_AMOUNT).contains(v));
        let ntee_codes = NteeCode::parse(&field(NTEE_CD))
            .map(|code| vec![code.into_inner()])
            .unwrap_or_default();
        Ok(Self {
            ein,
            name,
            city: blank_to_none(field(CITY)).filter(|c| c.chars().count() <= MAX_NAME_CHARS),
            state,
            annual_revenue,
            ntee_codes,
        })
    }

    /// True when `profile` already holds this row's data.
    fn matches(&self, profile: &profile::Model) -> bool {
        profile.name == self.name
            && profile.city == self.city
            && profile.state == self.state
            && profile.annual_revenue == self.annual_revenue
            && profile.ntee_codes.0 == self.ntee_codes
    }

    fn into_profile(self, now: DateTime<Utc>) -> profile::Model {
        profile::Model {
            id: new_id("profile_", &mut rand::rng()),
            name: self.name,
            organization_type: OrganizationType::Nonprofit.as_str().to_owned(),
            ein: Some(self.ein),
            mission_statement: None,
            status: ProfileStatus::Active.as_str().to_owned(),
            keywords: None,
            focus_areas: StringList::default(),
            ntee_codes: StringList(self.ntee_codes),
            city: self.city,
            state: self.state,
            annual_revenue: self.annual_revenue,
            website_url: None,
            last_discovery_date: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Only the fields the BMF owns, and `updated_at`.
    fn into_update(self, now: DateTime<Utc>) -> profile::ActiveModel {
        profile::ActiveModel {
            name: Set(self.name),
            city: Set(self.city),
            state: Set(self.state),
            annual_revenue: Set(self.annual_revenue),
            ntee_codes: Set(StringList(self.ntee_codes)),
            updated_at: Set(now),
            ..Default::default()
        }
    }
}

/// EO BMF files, opened and their headers checked, ready to import.
pub struct Opened {
    files: Vec<(String, csv::Reader<Box<dyn Read>>)>,
    bar: ProgressBar,
    options: ImportOptions,
}

/// Opens `files` and checks their headers, so a wrong or missing file in the
/// list fails the command before anything is written. Each is opened only
/// once, which lets a file be a pipe.
pub fn open(files: &[PathBuf], options: &ImportOptions) -> anyhow::Result<Opened> {
    let total_bytes = files
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let bar = progress_bar(total_bytes, Unit::Bytes, options.quiet)?;
    let opened: anyhow::Result<Vec<_>> = files
        .iter()
        .map(|path| Ok((path.display().to_string(), open_file(path, &bar)?)))
        .collect();
    match opened {
        Ok(files) => Ok(Opened {
            files,
            bar,
            options: options.clone(),
        }),
        Err(e) => {
            bar.finish_and_clear();
            Err(e)
        }
    }
}

/// Imports `files` in order: [`open`], then [`Opened::import`].
pub async fn import(
    db: &Db,
    files: &[PathBuf],
    options: &ImportOptions,
) -> anyhow::Result<ImportReport> {
    open(files, options)?.import(db).await
}

impl Opened {
    /// Imports the files in order.
    pub async fn import(self, db: &Db) -> anyhow::Result<ImportReport> {
        let Self {
            files,
            bar,
            options,
        } = self;
        let mut report = ImportReport::new(options.show_rejects);
        let batch_size = usize::try_from(options.batch_size).unwrap_or(usize::MAX);
        // Every EIN imported so far, as a number (4 bytes; about 20 MB for the
        // whole master file). The first row of an EIN is kept and later ones
        // rejected: were a later one to update it, importing the same files
        // again would rewrite the profile twice, where it must change nothing.
        let mut seen: HashSet<u32> = HashSet::new();
        for (source, mut reader) in files {
            let mut record = csv::ByteRecord::new();
            let mut batch = Batch::default();
            let mut line = 1;
            while reader
                .read_byte_record(&mut record)
                .with_context(|| format!("{source}: cannot read after line {line}"))?
            {
                line = record.position().map_or(line + 1, |p| p.line());
                report.profiles.read += 1;
                let parsed = BmfRow::parse(&record).and_then(|row| {
                    // Nine digits, checked by the parse: they fit a u32.
                    let ein = row.ein.parse::<u32>().map_err(|e| e.to_string())?;
                    if seen.insert(ein) {
                        Ok(row)
                    } else {
                        Err(format!(
                            "EIN {} appears earlier in this import; its first row is kept",
                            row.ein
                        ))
                    }
                });
                match parsed {
                    Ok(row) => {
                        batch.push(row);
                        if batch.rows.len() >= batch_size {
                            batch.write(db, &mut report.profiles).await?;
                            bar.set_message(format!("{} rows", report.profiles.read));
                        }
                    }
                    Err(reason) => {
                        report.profiles.rejected += 1;
                        report.reject(&source, Position::Line(line), reason);
                    }
                }
            }
            batch.write(db, &mut report.profiles).await?;
        }
        bar.finish_and_clear();
        Ok(report.finish())
    }
}

/// A CSV reader over `path`, gunzipping when the file starts with the gzip
/// magic bytes (whatever its name), with the header checked.
fn open_file(path: &Path, bar: &ProgressBar) -> anyhow::Result<csv::Reader<Box<dyn Read>>> {
    let source = path.display();
    let Input { head, reader, .. } = Input::open(path, GZIP_MAGIC.len())?;
    let buffered = BufReader::new(bar.wrap_read(reader));
    let input: Box<dyn Read> = if head.starts_with(&GZIP_MAGIC) {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(Box::new(CrlfToLf::new(input)) as Box<dyn Read>);
    let header = reader
        .byte_headers()
        .with_context(|| format!("{source}: cannot read the header"))?;
    if header.iter().ne(HEADER.iter().map(|h| h.as_bytes())) {
        anyhow::bail!(
            "{source}: not an EO BMF file: the header must be {}",
            HEADER.join(",")
        );
    }
    Ok(reader)
}

/// Valid rows waiting to be written, with their EINs for duplicate checks.
#[derive(Default)]
struct Batch {
    rows: Vec<BmfRow>,
    eins: HashSet<String>,
}

impl Batch {
    fn push(&mut self, row: BmfRow) {
        self.eins.insert(row.ein.clone());
        self.rows.push(row);
    }

    /// Writes the batch in one transaction and empties it: new EINs are
    /// inserted in bulk, changed profiles updated one statement each (a newer
    /// file changes few rows), unchanged ones skipped.
    async fn write(&mut self, db: &Db, counts: &mut Counts) -> Result<(), DbErr> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let txn = crate::db::begin_profiles_write(db).await?;
        let eins: Vec<String> = self.eins.drain().collect();
        let existing = by_ein(&txn, &eins).await?;
        let now = now();
        let mut inserts = Vec::new();
        let (mut updated, mut unchanged) = (0, 0);
        for row in self.rows.drain(..) {
            match existing.get(&row.ein) {
                None => inserts.push(row.into_profile(now)),
                Some(current) if row.matches(current) => unchanged += 1,
                Some(current) => {
                    profile::Entity::update_many()
                        .set(row.into_update(now))
                        .filter(profile::Column::Id.eq(current.id.as_str()))
                        .exec(&txn)
                        .await?;
                    updated += 1;
                }
            }
        }
        bulk::insert_many::<profile::Entity, _>(&txn, &inserts).await?;
        if !inserts.is_empty() || updated > 0 {
            crate::store::raise_data_epoch(&txn).await?;
        }
        txn.commit().await?;
        counts.inserted += inserts.len() as u64;
        counts.updated += updated;
        counts.unchanged += unchanged;
        Ok(())
    }
}

/// The profiles holding `eins`, by EIN.
// SELECT ... FROM profiles WHERE ein IN (...)   -- ein = ANY($1) on PostgreSQL
async fn by_ein(
    conn: &impl ConnectionTrait,
    eins: &[String],
) -> Result<HashMap<String, profile::Model>, DbErr> {
    let mut found = HashMap::with_capacity(eins.len());
    for chunk in eins.chunks(IDS_PER_STATEMENT) {
        let cond = in_ids(
            conn.get_database_backend(),
            Expr::col((profile::Entity, profile::Column::Ein)),
            chunk,
        );
        for model in profile::Entity::find().filter(cond).all(conn).await? {
            if let Some(ein) = model.ein.clone() {
                found.insert(ein, model);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[(usize, &str)]) -> csv::ByteRecord {
        let mut values = vec![""; HEADER.len()];
        for (i, v) in fields {
            values[*i] = v;
        }
        csv::ByteRecord::from(values)
    }

    #[test]
    fn a_row_maps_to_the_profile_fields() {
        let row = BmfRow::parse(&record(&[
            (EIN, "010000001"),
            (NAME, "RIVERBEND FOOD BANK"),
            (CITY, "SPRINGFIELD"),
            (STATE, "il"),
            (REVENUE_AMT, "120500"),
            (NTEE_CD, "K31"),
        ]))
        .unwrap();
        assert_eq!(
            row,
            BmfRow {
                ein: "010000001".into(),
                name: "RIVERBEND FOOD BANK".into(),
                city: Some("SPRINGFIELD".into()),
                state: Some("IL".into()),
                annual_revenue: Some(120_500),
                ntee_codes: vec!["K31".into()],
            }
        );
    }

    #[test]
    fn bad_optional_fields_are_left_empty_and_bad_keys_reject() {
        let row = BmfRow::parse(&record(&[
            (EIN, "010000001"),
            (NAME, "X"),
            (REVENUE_AMT, "-5"),
            (NTEE_CD, "Z9"),
        ]))
        .unwrap();
        assert_eq!(
            (row.state, row.annual_revenue, row.ntee_codes),
            (None, None, vec![])
        );
        // Past what the API's amounts and texts carry: a row exported from
        // here must import again through the API's own rules.
        let long = "C".repeat(301);
        let row = BmfRow::parse(&record(&[
            (EIN, "010000001"),
            (NAME, "X"),
            (CITY, &long),
            (REVENUE_AMT, "9007199254740992"),
        ]))
        .unwrap();
        assert_eq!((row.city, row.annual_revenue), (None, None));
        let at_most = BmfRow::parse(&record(&[
            (EIN, "010000001"),
            (NAME, "X"),
            (REVENUE_AMT, "9007199254740991"),
        ]))
        .unwrap();
        assert_eq!(at_most.annual_revenue, Some(9_007_199_254_740_991));
        let reason = |fields: &[(usize, &str)]| BmfRow::parse(&record(fields)).unwrap_err();
        assert!(reason(&[(EIN, "1234"), (NAME, "X")]).contains("invalid EIN"));
        assert!(reason(&[(EIN, "010000001"), (NAME, " ")]).contains("NAME is blank"));
        assert!(
            reason(&[(EIN, "010000001"), (NAME, "X"), (STATE, "ZZ")]).contains("invalid state")
        );
        assert!(reason(&[(EIN, "010000001"), (NAME, "X\0Y")]).contains("NUL"));
        assert!(
            reason(&[(EIN, "010000001"), (NAME, &"N".repeat(301))])
                .contains("longer than 300 characters")
        );
        let short = csv::ByteRecord::from(vec!["010000001", "X"]);
        assert_eq!(
            BmfRow::parse(&short).unwrap_err(),
            "expected 28 fields, found 2"
        );
    }
}
