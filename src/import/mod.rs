//! Imports: IRS EO BMF files ([`bmf`]) and Catalynx data ([`catalynx`]).
//!
//! Both stream their input and write it in batches, one transaction per
//! batch: memory stays flat whatever the input size (but for the BMF
//! import's set of EINs seen, 4 bytes each), a failure loses at most
//! the batch in flight, and a batch is never half-written. Rows are validated
//! whole before a batch is written, so a bad row is counted, listed in the
//! report and skipped; it never stops the import.
//!
//! Both upsert (BMF by EIN, Catalynx by id) and compare before writing: an
//! unchanged row is not rewritten, so importing the same input twice changes
//! nothing, not even `updated_at`.

pub mod bmf;
pub mod catalynx;

use std::fmt;
use std::fs::File;
use std::io::{self, Chain, Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::ImportCommand;
use crate::db::Db;

/// What happened to the rows of one table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rows in the input, good or bad.
    pub read: u64,
    /// New rows written.
    pub inserted: u64,
    /// Existing rows that differed and were rewritten.
    pub updated: u64,
    /// Existing rows that already held the same data and were left alone.
    pub unchanged: u64,
    /// Rows skipped as invalid.
    pub rejected: u64,
}

impl Counts {
    /// Rows written: inserted or rewritten.
    pub fn written(&self) -> u64 {
        self.inserted + self.updated
    }
}

/// Where an input row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// A line of a text file, counted from 1 (the header is line 1).
    Line(u64),
    /// A row of a database table.
    Row { table: &'static str, rowid: i64 },
}

impl Position {
    /// Where the row comes in its source: lines in order; a database's
    /// profiles, read first, before its opportunities.
    fn order(&self) -> (u8, i64) {
        match *self {
            Self::Line(line) => (0, line as i64),
            Self::Row { table, rowid } => (u8::from(table != "profiles"), rowid),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(line) => write!(f, "line {line}"),
            Self::Row { table, rowid } => write!(f, "{table} rowid {rowid}"),
        }
    }
}

/// One skipped input row and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// The file the row came from.
    pub source: String,
    pub position: Position,
    pub reason: String,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.source, self.position, self.reason)
    }
}

/// The outcome of one import, printed when it ends.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub profiles: Counts,
    pub opportunities: Counts,
    /// The first rejected rows in input order, up to the configured number.
    pub rejects: Vec<Reject>,
    pub seconds: f64,
    shown: usize,
    /// Sources in the order they were read, so rejects sort by file first.
    sources: Vec<String>,
    started: Instant,
}

impl ImportReport {
    fn new(shown: usize) -> Self {
        Self {
            profiles: Counts::default(),
            opportunities: Counts::default(),
            rejects: Vec::new(),
            seconds: 0.0,
            shown,
            sources: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Keeps the details of the first rejects only: a file of bad rows must
    /// not fill memory. The count in [`Counts::rejected`] is kept by the caller.
    /// "First" is by place in the input, not by when a row was refused: a
    /// conflict shows only when its batch is written, after rows read later
    /// were refused on sight.
    fn reject(&mut self, source: &str, position: Position, reason: impl Into<String>) {
        let index = match self.sources.iter().position(|s| s == source) {
            Some(index) => index,
            None => {
                self.sources.push(source.to_owned());
                self.sources.len() - 1
            }
        };
        // Full: the new reject takes the place of the last kept one if it
        // comes before it, and costs nothing otherwise (a file of bad rows
        // makes millions of them).
        let slot = if self.rejects.len() < self.shown {
            None
        } else {
            let Some(last) = (0..self.rejects.len()).max_by_key(|&i| self.place(&self.rejects[i]))
            else {
                return;
            };
            if (index, position.order()) >= self.place(&self.rejects[last]) {
                return;
            }
            Some(last)
        };
        let reject = Reject {
            source: source.to_owned(),
            position,
            reason: reason.into(),
        };
        match slot {
            Some(last) => self.rejects[last] = reject,
            None => self.rejects.push(reject),
        }
    }

    fn place(&self, reject: &Reject) -> (usize, (u8, i64)) {
        let source = self.sources.iter().position(|s| *s == reject.source);
        (source.unwrap_or(usize::MAX), reject.position.order())
    }

    fn finish(mut self) -> Self {
        let mut rejects = std::mem::take(&mut self.rejects);
        rejects.sort_by_key(|r| self.place(r));
        self.rejects = rejects;
        self.seconds = self.started.elapsed().as_secs_f64();
        self
    }

    /// Input rows per second, good and bad.
    pub fn rows_per_second(&self) -> f64 {
        (self.profiles.read + self.opportunities.read) as f64 / self.seconds.max(1e-9)
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, c) in [
            ("profiles", self.profiles),
            ("opportunities", self.opportunities),
        ] {
            if table == "opportunities" && c == Counts::default() {
                continue;
            }
            writeln!(
                f,
                "{table}: {} read, {} inserted, {} updated, {} unchanged, {} rejected",
                c.read, c.inserted, c.updated, c.unchanged, c.rejected
            )?;
        }
        writeln!(
            f,
            "{:.2} s, {:.0} rows/s",
            self.seconds,
            self.rows_per_second()
        )?;
        let rejected = self.profiles.rejected + self.opportunities.rejected;
        if rejected > 0 {
            writeln!(
                f,
                "rejected rows (first {} of {rejected}):",
                self.rejects.len()
            )?;
            for reject in &self.rejects {
                writeln!(f, "  {reject}")?;
            }
        }
        Ok(())
    }
}

/// What a progress bar counts.
#[derive(Clone, Copy)]
enum Unit {
    /// Input bytes (compressed bytes for gzip files): known up front where rows are not.
    Bytes,
    /// Rows of a database, counted first.
    Rows,
}

fn progress_bar(len: u64, unit: Unit, quiet: bool) -> anyhow::Result<ProgressBar> {
    if quiet {
        return Ok(ProgressBar::hidden());
    }
    let template = match unit {
        Unit::Bytes => {
            "{spinner} importing [{bar:40}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta}) {msg}"
        }
        Unit::Rows => "{spinner} importing [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})",
    };
    Ok(ProgressBar::new(len)
        .with_style(ProgressStyle::with_template(template)?.progress_chars("=> ")))
}

/// The inputs of an import command, opened and their format recognised.
pub enum Opened {
    Bmf(bmf::Opened),
    Catalynx(Box<catalynx::Opened>),
}

/// Opens the inputs of `command`. The CLI does this before it opens the
/// database, so that an input that is missing, unreadable or not of its
/// format fails the command before it has created an empty database.
pub async fn open(command: &ImportCommand) -> anyhow::Result<Opened> {
    Ok(match command {
        ImportCommand::Bmf(config) => Opened::Bmf(bmf::open(&config.files, &config.options)?),
        ImportCommand::Catalynx(config) => Opened::Catalynx(Box::new(
            catalynx::open(&config.path, &config.options).await?,
        )),
    })
}

impl Opened {
    /// Writes the inputs' rows to `db`.
    pub async fn import(self, db: &Db) -> anyhow::Result<ImportReport> {
        match self {
            Self::Bmf(files) => files.import(db).await,
            Self::Catalynx(source) => source.import(db).await,
        }
    }
}

/// Refuses an import whose source is the SQLite file it would write to,
/// before anything opens that file for writing: the target is migrated
/// first, which would write this schema into the source and then fail to
/// read it back.
pub fn refuse_source_as_target(database_url: &str, sources: &[PathBuf]) -> anyhow::Result<()> {
    let Some(target) = crate::db::sqlite_path(database_url) else {
        return Ok(());
    };
    // A target that does not exist yet cannot be a source.
    let Ok(target) = std::fs::canonicalize(&target) else {
        return Ok(());
    };
    for source in sources {
        if std::fs::canonicalize(source).is_ok_and(|s| s == target) || same_inode(source, &target) {
            anyhow::bail!(
                "{}: this is the database being imported into; give a different --database-url",
                source.display()
            );
        }
    }
    Ok(())
}

/// Two names of one file (a hard link) have different canonical paths.
#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// An input read from its first byte: the bytes [`Input::open`] read
/// first, then the rest of the file.
pub(crate) type Peeked = Chain<Cursor<Vec<u8>>, File>;

/// An input opened once, with its first bytes already read so that its
/// format can be recognised. A pipe (`/dev/stdin`, a FIFO) can be read only
/// once: opening it a second time after looking at its start would lose
/// those bytes, so they are kept and read again in front of the rest.
pub(crate) struct Input {
    /// The first bytes after any UTF-8 byte-order mark (which is skipped):
    /// at least as many as asked for, fewer only when the input is shorter.
    pub head: Vec<u8>,
    /// The whole input from its first byte (after the byte-order mark).
    pub reader: Peeked,
    /// The size of a regular file, for the progress bar; 0 for a pipe.
    pub len: u64,
    /// True for a regular file, which can be opened again by name.
    pub is_file: bool,
}

impl Input {
    pub fn open(path: &Path, head_bytes: usize) -> anyhow::Result<Self> {
        let name = path.display();
        let mut file = File::open(path).with_context(|| format!("{name}: cannot open"))?;
        let metadata = file
            .metadata()
            .with_context(|| format!("{name}: cannot open"))?;
        if metadata.is_dir() {
            anyhow::bail!("{name}: is a directory");
        }
        let mut head = read_head(&mut file, head_bytes.max(UTF8_BOM.len()))
            .with_context(|| format!("{name}: cannot read"))?;
        // Text saved by Windows tools (Excel's "CSV UTF-8", Notepad) may
        // start with a UTF-8 byte-order mark; it is not part of the data.
        if head.starts_with(UTF8_BOM) {
            head.drain(..UTF8_BOM.len());
            head.extend(
                read_head(&mut file, UTF8_BOM.len())
                    .with_context(|| format!("{name}: cannot read"))?,
            );
        }
        Ok(Self {
            reader: Cursor::new(head.clone()).chain(file),
            head,
            len: if metadata.is_file() {
                metadata.len()
            } else {
                0
            },
            is_file: metadata.is_file(),
        })
    }
}

/// Up to `want` bytes: a pipe may hand over fewer per read, so this reads
/// until it has them all or the input ends.
fn read_head(input: &mut impl Read, want: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0; want];
    let mut filled = 0;
    while filled < want {
        match input.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(head)
}

/// CSV input with each CRLF outside quoted fields turned into LF. The csv
/// crate ends a record at the CR of a CRLF and reads the LF as the start of
/// the next record, whose position then names the line before: every reject
/// of a CRLF file (as Excel and Python's csv module write them) was reported
/// one line too low. Records parse the same either way; a CRLF inside a
/// quoted value is data and is kept.
pub(crate) struct CrlfToLf<R> {
    inner: R,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    state: CsvState,
    /// A CR outside quotes, held until the next byte shows whether it ends a CRLF.
    cr_pending: bool,
}

/// Where the input stands in CSV terms (delimiter `,`, quote `"`), as far
/// as telling a record's CRLF from one inside a quoted value needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CsvState {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: its end, or the first of a doubled quote.
    QuotedQuote,
}

impl<R> CrlfToLf<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buffer: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            state: CsvState::FieldStart,
            cr_pending: false,
        }
    }
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use CsvState::*;
        let mut n = 0;
        while n < out.len() {
            if self.start == self.end {
                if n > 0 {
                    break;
                }
                let got = self.inner.read(&mut self.buffer)?;
                if got == 0 {
                    if std::mem::take(&mut self.cr_pending) {
                        out[0] = b'\r';
                        n = 1;
                    }
                    break;
                }
                (self.start, self.end) = (0, got);
            }
            let byte = self.buffer[self.start];
            if std::mem::take(&mut self.cr_pending) && byte != b'\n' {
                // A CR alone: kept (the csv crate ends a record at it too).
                out[n] = b'\r';
                n += 1;
                continue;
            }
            self.start += 1;
            if byte == b'\r' && self.state != Quoted {
                self.cr_pending = true;
                self.state = FieldStart;
                continue;
            }
            self.state = match (self.state, byte) {
                (Quoted, b'"') => QuotedQuote,
                (Quoted, _) => Quoted,
                (QuotedQuote, b'"') | (FieldStart, b'"') => Quoted,
                (_, b',' | b'\n') => FieldStart,
                _ => Unquoted,
            };
            out[n] = byte;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::{CrlfToLf, ImportReport, Position};

    /// The rows listed are the first ones in the input whenever they were
    /// refused, files in the order read.
    #[test]
    fn rejects_listed_are_the_first_in_the_input() {
        let mut report = ImportReport::new(3);
        for (source, line) in [("a.csv", 9), ("a.csv", 7), ("a.csv", 12), ("b.csv", 1)] {
            report.reject(source, Position::Line(line), "late");
        }
        // A conflict found when its batch was written, after line 12.
        report.reject("a.csv", Position::Line(2), "conflict");
        let listed: Vec<String> = report
            .finish()
            .rejects
            .iter()
            .map(|r| format!("{} {}", r.source, r.position))
            .collect();
        assert_eq!(listed, ["a.csv line 2", "a.csv line 7", "a.csv line 9"]);
    }

    fn convert(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut reader = CrlfToLf::new(input);
        let mut out = Vec::new();
        let mut buffer = vec![0; chunk];
        loop {
            let n = reader.read(&mut buffer).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buffer[..n]);
        }
    }

    #[test]
    fn crlf_ends_become_lf_and_quoted_values_keep_theirs() {
        let input = b"a,b\r\n1,\"x\r\ny\"\r\n2,\"say \"\"hi\"\"\r\n\"\r\n3,lone\rcr\r\n4,end\r";
        let want = b"a,b\n1,\"x\r\ny\"\n2,\"say \"\"hi\"\"\r\n\"\n3,lone\rcr\n4,end\r";
        for chunk in [1, 2, 3, 7, 4096] {
            assert_eq!(convert(input, chunk), want, "reads of {chunk} bytes");
        }
        assert_eq!(convert(b"", 8), b"");
        assert_eq!(convert(b"a\nb", 8), b"a\nb");
    }
}
