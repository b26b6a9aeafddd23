//! Command line and environment configuration: one clap struct per concern.
//! Every flag has an environment variable; the defaults need no flags at all.
//! A boolean variable takes the usual spellings (`1`/`0`, `true`/`false`,
//! `yes`/`no`, `on`/`off`), as scripts and container files write them.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{BoolishValueParser, TypedValueParser};
use clap::error::ErrorKind;
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
    Serve(Box<ServeConfig>),
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
    #[arg(long, env = "CATALYNX_DB_MAX_CONNECTIONS", global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: Option<u32>,
    /// Seconds to wait for a pooled connection before failing the request.
    #[arg(
        long,
        env = "CATALYNX_DB_ACQUIRE_TIMEOUT",
        default_value_t = 5,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..)
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
    /// SQLite: page cache of all connections together, in MiB, split evenly
    /// among them. Pages that miss it are read from the file, usually out of
    /// the operating system's cache; more trades memory for fewer reads.
    #[arg(
        long,
        env = "CATALYNX_SQLITE_CACHE_MIB",
        default_value_t = 32,
        global = true
    )]
    pub sqlite_cache_mib: u64,
    /// SQLite: memory-mapped window of the file per connection, in MiB (0 =
    /// off). Pages inside it are read without a copy; they count as the
    /// server's file-backed memory.
    #[arg(
        long,
        env = "CATALYNX_SQLITE_MMAP_MIB",
        default_value_t = 256,
        global = true
    )]
    pub sqlite_mmap_mib: u64,
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
    #[arg(long, env = "CATALYNX_DEMO", value_parser = Boolish)]
    pub demo: bool,
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub cache: CacheConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub security: SecurityConfig,
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

/// A boolean in the usual spellings (clap's [`BoolishValueParser`]), whose
/// error names the variable as well as the flag: a bad value usually comes
/// from the environment, and clap's own error names only the flag.
#[derive(Clone)]
struct Boolish;

impl TypedValueParser for Boolish {
    type Value = bool;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<bool, clap::Error> {
        BoolishValueParser::new()
            .parse_ref(cmd, arg, value)
            .map_err(|_| {
                let name = match arg.map(|a| (a.get_env(), a.get_long())) {
                    Some((Some(env), Some(long))) => format!("{} / --{long}", env.display()),
                    Some((None, Some(long))) => format!("--{long}"),
                    _ => "a boolean".to_owned(),
                };
                let message = format!(
                    "invalid value {:?} for {name}: use true or false (or 1/0, yes/no, on/off)\n",
                    value.to_string_lossy()
                );
                clap::Error::raw(ErrorKind::InvalidValue, message).with_cmd(cmd)
            })
    }
}

/// A limit of 0 would refuse every request (or, for page sizes, answer
/// every list empty): refused at start instead.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// How the GraphQL API behaves: page sizes, limits, loaders.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    /// Page size when a list query gives neither `first` nor `last`.
    #[arg(long, env = "CATALYNX_DEFAULT_PAGE_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub default_page_size: u32,
    /// Largest `first`/`last` accepted; more is a BAD_USER_INPUT error.
    #[arg(long, env = "CATALYNX_MAX_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_page_size: u32,
    /// Deepest selection set accepted.
    #[arg(long, env = "CATALYNX_MAX_DEPTH", default_value_t = 12, value_parser = at_least_one)]
    pub max_depth: usize,
    /// Highest query complexity accepted (each field costs 1; lists cost their page size).
    #[arg(long, env = "CATALYNX_MAX_COMPLEXITY", default_value_t = 50_000, value_parser = at_least_one)]
    pub max_complexity: usize,
    /// Most root fields (aliases included) in one operation.
    #[arg(long, env = "CATALYNX_MAX_ROOT_FIELDS", default_value_t = 20, value_parser = at_least_one)]
    pub max_root_fields: usize,
    /// Turn schema introspection off (e.g. in production behind a public gateway).
    #[arg(long, env = "CATALYNX_DISABLE_INTROSPECTION", value_parser = Boolish)]
    pub disable_introspection: bool,
    /// Resolve nested fields one query per parent instead of batching (the
    /// N+1 baseline; for benchmarks and tests only).
    #[arg(long, env = "CATALYNX_DISABLE_LOADERS", value_parser = Boolish)]
    pub disable_loaders: bool,
    /// Serve `GET /bench/ceiling?bytes=N` (a fixed JSON body of N bytes), the
    /// load benchmark's measure of the HTTP stack alone; off in normal use.
    #[arg(long, env = "CATALYNX_BENCH_ROUTES", hide = true, value_parser = Boolish)]
    pub bench_routes: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        defaults()
    }
}

impl ApiConfig {
    /// Refuses settings that contradict each other (clap checks each alone):
    /// a default page size above the maximum would be served as the maximum.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.default_page_size > self.max_page_size {
            anyhow::bail!(
                "CATALYNX_DEFAULT_PAGE_SIZE / --default-page-size: {} is larger than \
                 CATALYNX_MAX_PAGE_SIZE / --max-page-size ({}); lower the default or raise the maximum",
                self.default_page_size,
                self.max_page_size
            );
        }
        Ok(())
    }
}

/// How the HTTP layer behaves: limits, CORS, batching, persisted queries, the playground.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes; a larger one is answered 413.
    #[arg(long, env = "CATALYNX_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a request may take before it is answered 408.
    #[arg(long, env = "CATALYNX_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's head, and stay idle
    /// between requests, before it is closed.
    #[arg(long, env = "CATALYNX_HEAD_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub head_timeout_secs: u64,
    /// Browser origins allowed to call the API (CORS), comma-separated, e.g.
    /// `https://app.example.org`; `*` allows any origin; none: same origin only.
    #[arg(long, env = "CATALYNX_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Most operations in one batched request (a JSON array); 0 turns batching off.
    #[arg(long, env = "CATALYNX_MAX_BATCH_SIZE", default_value_t = 10)]
    pub max_batch_size: usize,
    /// Automatic persisted queries remembered (least recently used go first); 0 turns them off.
    #[arg(long, env = "CATALYNX_PERSISTED_QUERIES", default_value_t = 1000)]
    pub persisted_queries: usize,
    /// Directory filled by `scripts/fetch-playground-assets.sh`: the playground
    /// then loads nothing from other hosts. Without it, it loads from a CDN.
    #[arg(long, env = "CATALYNX_PLAYGROUND_ASSETS")]
    pub playground_assets: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        defaults()
    }
}

/// Who may do what (API keys and their roles), and how much load is taken on.
#[derive(Debug, Clone, Args)]
pub struct SecurityConfig {
    /// File of API keys, one `ROLE:SHA256[:NAME]` per line: ROLE is reader,
    /// editor or admin, SHA256 the key's SHA-256 in hex (the key itself is
    /// never stored), NAME a label for the log; `#` starts a comment.
    #[arg(long, env = "CATALYNX_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// API keys as comma-separated `ROLE=KEY` items, for simple setups: hashed
    /// when read, the text is not kept. Prefer the variable to the flag
    /// (process lists show flags).
    #[arg(long, env = "CATALYNX_API_KEYS", hide_env_values = true, value_parser = crate::auth::ApiKeysParser)]
    pub api_keys: Option<crate::auth::ApiKeys>,
    /// Reads (GraphQL queries, REST) need a key too (reader or above); by
    /// default anyone may read and only writes need a key.
    #[arg(long, env = "CATALYNX_READS_NEED_KEY", value_parser = Boolish)]
    pub reads_need_key: bool,
    /// GraphQL and REST requests handled at once; past it, requests are
    /// answered 503 with `Retry-After` at once instead of queueing (0: no limit).
    #[arg(long, env = "CATALYNX_MAX_CONCURRENT_REQUESTS", default_value_t = 128)]
    pub max_concurrent_requests: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        defaults()
    }
}

/// Most profiles `seed` creates: generated ids and EINs stay unique far
/// beyond it, and a load this size already takes hours.
pub const MAX_SEED_PROFILES: u64 = 100_000_000;
/// Most opportunities per profile `seed` plans: the rows of a step of
/// profiles are generated in memory at once.
pub const MAX_SEED_OPPORTUNITIES: u64 = 1_000;

#[derive(Debug, Clone, Args)]
pub struct SeedConfig {
    /// Number of profiles to create (at most 100,000,000).
    #[arg(long, env = "CATALYNX_SEED_PROFILES", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(..=MAX_SEED_PROFILES))]
    pub profiles: u64,
    /// Average opportunities per profile (some get none, some twice as many;
    /// at most 1,000).
    #[arg(long, env = "CATALYNX_SEED_OPPORTUNITIES", default_value_t = 20, value_parser = clap::value_parser!(u64).range(..=MAX_SEED_OPPORTUNITIES))]
    pub opportunities_per_profile: u64,
    /// Random seed: the same seed gives the same rows.
    #[arg(long, env = "CATALYNX_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Hide the progress bar.
    #[arg(long, env = "CATALYNX_QUIET", value_parser = Boolish)]
    pub quiet: bool,
}

/// The resolver cache.
#[derive(Debug, Clone, Args)]
pub struct CacheConfig {
    /// Cache resolver results (`false` turns the cache off).
    #[arg(long, env = "CATALYNX_CACHE", default_value_t = true, action = clap::ArgAction::Set, value_parser = Boolish)]
    pub cache_enabled: bool,
    /// Bound on the stored (compressed) bytes in memory; least valuable entries go first.
    #[arg(long, env = "CATALYNX_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Seconds an entry lives unless its field has its own TTL.
    #[arg(long, env = "CATALYNX_CACHE_TTL_SECS", default_value_t = 300)]
    pub cache_ttl_secs: u64,
    /// Per-field TTLs in seconds, e.g. `profiles=60,Profile.opportunitiesCount=30`.
    #[arg(long, env = "CATALYNX_CACHE_FIELD_TTL", default_value = "", value_parser = parse_field_ttls)]
    pub cache_field_ttl: FieldTtls,
    /// gzip level for stored values, 0 (store) to 9 (smallest).
    #[arg(long, env = "CATALYNX_CACHE_GZIP_LEVEL", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub cache_gzip_level: u32,
    /// Values whose MessagePack form is smaller than this are stored uncompressed.
    #[arg(long, env = "CATALYNX_CACHE_RAW_BELOW_BYTES", default_value_t = 128)]
    pub cache_raw_below_bytes: usize,
    /// Also keep entries in this directory, so that a restart starts warm
    /// (bounded by the same byte budget).
    #[arg(long, env = "CATALYNX_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// A Redis shared by all replicas (`redis://HOST:6379`): a second cache
    /// tier, and what keeps every replica's cache coherent.
    #[arg(long, env = "CATALYNX_REDIS_URL")]
    pub redis_url: Option<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        defaults()
    }
}

/// Per-field TTLs, parsed from `field=seconds,...`.
#[derive(Debug, Clone, Default)]
pub struct FieldTtls(pub Vec<(String, std::time::Duration)>);

fn parse_field_ttls(text: &str) -> Result<FieldTtls, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (field, secs) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected field=seconds"))?;
            let secs: u64 = secs
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: seconds must be a whole number"))?;
            Ok((
                field.trim().to_owned(),
                std::time::Duration::from_secs(secs),
            ))
        })
        .collect::<Result<_, String>>()
        .map(FieldTtls)
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
    #[arg(long, env = "CATALYNX_QUIET", value_parser = Boolish)]
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
    /// File to write, replaced whole once the export is complete (a symlink's
    /// target; a pipe or device is written in place); standard output when
    /// absent. The database being exported and its -wal, -shm and -journal
    /// files are refused.
    #[arg(long, env = "CATALYNX_EXPORT_OUTPUT")]
    pub output: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::{Cli, Command, MAX_SEED_OPPORTUNITIES, MAX_SEED_PROFILES};

    #[test]
    fn limits_of_zero_are_refused_at_start() {
        for flag in [
            "--default-page-size",
            "--max-page-size",
            "--max-depth",
            "--max-complexity",
            "--max-root-fields",
            "--request-timeout-secs",
            "--db-max-connections",
            "--db-acquire-timeout",
        ] {
            let refused = Cli::try_parse_from(["catalynx", "serve", flag, "0"])
                .err()
                .unwrap_or_else(|| panic!("{flag} 0 accepted"));
            assert_eq!(refused.kind(), ErrorKind::ValueValidation, "{flag}");
            assert!(
                Cli::try_parse_from(["catalynx", "serve", flag, "1"]).is_ok(),
                "{flag}"
            );
        }
    }

    #[test]
    fn a_default_page_size_above_the_maximum_is_refused() {
        let api = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["catalynx", "serve"][..], args].concat()).unwrap();
            match cli.command {
                Some(Command::Serve(serve)) => serve.api,
                other => panic!("not serve: {other:?}"),
            }
        };

        let refused = api(&["--default-page-size", "600"]).check().unwrap_err();

        assert_eq!(
            refused.to_string(),
            "CATALYNX_DEFAULT_PAGE_SIZE / --default-page-size: 600 is larger than \
             CATALYNX_MAX_PAGE_SIZE / --max-page-size (500); lower the default or raise the maximum"
        );
        assert!(api(&["--default-page-size", "500"]).check().is_ok());
        assert!(api(&["--max-page-size", "99"]).check().is_err());
        assert!(api(&["--max-page-size", "100"]).check().is_ok());
    }

    /// Booleans take the usual spellings; a bad one is refused naming the
    /// variable too, where bad values mostly come from.
    #[test]
    fn booleans_take_the_usual_spellings() {
        let cache = |value: &str| -> Result<bool, clap::Error> {
            let cli = Cli::try_parse_from(["catalynx", "serve", "--cache-enabled", value])?;
            match cli.command {
                Some(Command::Serve(serve)) => Ok(serve.cache.cache_enabled),
                other => panic!("not serve: {other:?}"),
            }
        };
        for (value, enabled) in [
            ("1", true),
            ("yes", true),
            ("on", true),
            ("true", true),
            ("0", false),
            ("no", false),
            ("off", false),
            ("false", false),
        ] {
            assert_eq!(cache(value).unwrap(), enabled, "{value}");
        }

        let refused = cache("maybe").unwrap_err();

        assert_eq!(refused.kind(), ErrorKind::InvalidValue);
        assert_eq!(refused.exit_code(), 2);
        assert_eq!(
            refused.to_string(),
            "error: invalid value \"maybe\" for CATALYNX_CACHE / --cache-enabled: \
             use true or false (or 1/0, yes/no, on/off)\n"
        );
    }

    /// Values past the bounds panicked or aborted in the generator (a
    /// capacity overflow, a 274 TB allocation); clap refuses them, exit code 2.
    #[test]
    fn seed_sizes_are_bounded() {
        let seed = |flag: &str, value: u64| {
            Cli::try_parse_from(["catalynx", "seed", flag, &value.to_string()])
        };
        for (flag, max) in [
            ("--profiles", MAX_SEED_PROFILES),
            ("--opportunities-per-profile", MAX_SEED_OPPORTUNITIES),
        ] {
            assert!(seed(flag, max).is_ok(), "{flag} {max}");
            for value in [max + 1, 4_294_967_296, u64::MAX] {
                let refused = seed(flag, value)
                    .err()
                    .unwrap_or_else(|| panic!("{flag} {value} accepted"));
                assert_eq!(refused.kind(), ErrorKind::ValueValidation, "{flag} {value}");
                assert_eq!(refused.exit_code(), 2);
            }
        }
    }
}
