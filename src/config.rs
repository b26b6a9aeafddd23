//! Command line and environment configuration: one clap struct per concern.
//! Every flag has an environment variable; the defaults need no flags at all.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

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
    #[command(flatten)]
    pub cache: CacheConfig,
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
    /// Serve `GET /bench/ceiling?bytes=N` (a fixed JSON body of N bytes), the
    /// load benchmark's measure of the HTTP stack alone; off in normal use.
    #[arg(long, env = "CATALYNX_BENCH_ROUTES", hide = true)]
    pub bench_routes: bool,
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

/// The resolver cache.
#[derive(Debug, Clone, Args)]
pub struct CacheConfig {
    /// Cache resolver results (`false` turns the cache off).
    #[arg(long, env = "CATALYNX_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
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
