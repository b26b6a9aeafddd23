//! Command line and environment configuration: one clap struct per concern.
//! Every flag has an environment variable; the defaults need no flags at all.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "catalynx",
    version,
    about = "GraphQL API server for grant-research data"
)]
pub struct Cli {
    #[command(flatten)]
    pub db: DbConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default when no subcommand is given).
    Serve(ServeConfig),
    /// Apply pending migrations and exit.
    Migrate,
    /// Load deterministic demo data.
    Seed(SeedConfig),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Import profiles (and opportunities) from IRS or Catalynx files.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write every profile and opportunity out, for backups or leaving.
    Export(ExportConfig),
}

#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// Database URL: `sqlite://PATH` (created on first start) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://catalynx.db",
        global = true
    )]
    pub database_url: String,
    /// Connections for reads. Default: 8 on SQLite (WAL readers never block each
    /// other), 10 on PostgreSQL (keep replicas x this under `max_connections`).
    #[arg(long, env = "CATALYNX_DB_MAX_CONNECTIONS", global = true)]
    pub db_max_connections: Option<u32>,
    /// Seconds to wait for a pooled connection before failing the request.
    #[arg(
        long,
        env = "CATALYNX_DB_ACQUIRE_TIMEOUT",
        default_value_t = 5,
        global = true
    )]
    pub db_acquire_timeout: u64,
    /// SQLite: milliseconds a writer waits for the lock before `database is locked`.
    #[arg(
        long,
        env = "CATALYNX_SQLITE_BUSY_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub sqlite_busy_timeout_ms: u64,
    /// PostgreSQL: per-statement timeout in milliseconds (0 = none).
    #[arg(
        long,
        env = "CATALYNX_PG_STATEMENT_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub pg_statement_timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "CATALYNX_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Seed a small demo data set first when the database is empty.
    #[arg(long, env = "CATALYNX_DEMO")]
    pub demo: bool,
    #[command(flatten)]
    pub api: ApiConfig,
}

/// The defaults of an argument group, with environment variables applied.
fn defaults<T: Args>() -> T {
    #[derive(Parser)]
    struct Wrapper<T: Args> {
        #[command(flatten)]
        inner: T,
    }
    Wrapper::<T>::parse_from(["catalynx"]).inner
}

impl Default for ServeConfig {
    fn default() -> Self {
        defaults()
    }
}

impl DbConfig {
    /// The defaults for `database_url`.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            ..defaults()
        }
    }
}

/// How the GraphQL API behaves: page sizes, limits, loaders.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    /// Page size when a list query gives neither `first` nor `last`.
    #[arg(long, env = "CATALYNX_DEFAULT_PAGE_SIZE", default_value_t = 100)]
    pub default_page_size: u32,
    /// Largest `first`/`last` accepted; more is a BAD_USER_INPUT error.
    #[arg(long, env = "CATALYNX_MAX_PAGE_SIZE", default_value_t = 500)]
    pub max_page_size: u32,
    /// Deepest selection set accepted.
    #[arg(long, env = "CATALYNX_MAX_DEPTH", default_value_t = 12)]
    pub max_depth: usize,
    /// Highest query complexity accepted (each field costs 1; lists cost their page size).
    #[arg(long, env = "CATALYNX_MAX_COMPLEXITY", default_value_t = 50_000)]
    pub max_complexity: usize,
    /// Most root fields (aliases included) in one operation.
    #[arg(long, env = "CATALYNX_MAX_ROOT_FIELDS", default_value_t = 20)]
    pub max_root_fields: usize,
    /// Turn schema introspection off (e.g. in production behind a public gateway).
    #[arg(long, env = "CATALYNX_DISABLE_INTROSPECTION")]
    pub disable_introspection: bool,
    /// Resolve nested fields one query per parent instead of batching (the
    /// N+1 baseline; for benchmarks and tests only).
    #[arg(long, env = "CATALYNX_DISABLE_LOADERS")]
    pub disable_loaders: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        defaults()
    }
}

#[derive(Debug, Clone, Args)]
pub struct SeedConfig {
    /// Number of profiles to create.
    #[arg(long, env = "CATALYNX_SEED_PROFILES", default_value_t = 1000)]
    pub profiles: u64,
    /// Average opportunities per profile (some get none, some twice as many).
    #[arg(long, env = "CATALYNX_SEED_OPPORTUNITIES", default_value_t = 20)]
    pub opportunities_per_profile: u64,
    /// Random seed: the same seed gives the same rows.
    #[arg(long, env = "CATALYNX_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Hide the progress bar.
    #[arg(long, env = "CATALYNX_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// IRS Exempt Organizations Business Master File CSVs (plain or gzip): upsert profiles by EIN.
    Bmf(BmfImportConfig),
    /// A Catalynx SQLite database, or a file written by `catalynx export`: upsert by id.
    Catalynx(CatalynxImportConfig),
}

#[derive(Debug, Clone, Args)]
pub struct BmfImportConfig {
    /// EO BMF CSV files, e.g. eo1.csv eo2.csv.gz (gzip is recognised by its magic bytes).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub options: ImportOptions,
}

#[derive(Debug, Clone, Args)]
pub struct CatalynxImportConfig {
    /// The Catalynx SQLite database (opened read-only), or a `catalynx export` file (JSONL or CSV).
    pub path: PathBuf,
    #[command(flatten)]
    pub options: ImportOptions,
}

/// How an import writes and reports.
#[derive(Debug, Clone, Args)]
pub struct ImportOptions {
    /// Rows per transaction: a failure loses at most one batch, and a batch is never half-written.
    #[arg(long, env = "CATALYNX_IMPORT_BATCH_SIZE", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Rejected rows listed in the report with line number and reason (all are counted).
    #[arg(long, env = "CATALYNX_IMPORT_SHOW_REJECTS", default_value_t = 20)]
    pub show_rejects: usize,
    /// Hide the progress bar.
    #[arg(long, env = "CATALYNX_QUIET")]
    pub quiet: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        defaults()
    }
}

/// The file format of `catalynx export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line, tagged `"table": "profiles"` or `"opportunities"`.
    Jsonl,
    /// One CSV table: a `table` column, then the columns of both tables.
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct ExportConfig {
    /// Output format.
    #[arg(long, env = "CATALYNX_EXPORT_FORMAT", value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// File to write (replaced if it exists); standard output when absent.
    #[arg(long, env = "CATALYNX_EXPORT_OUTPUT")]
    pub output: Option<PathBuf>,
}
