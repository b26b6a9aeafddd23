//! `spawn_app()`: a real server on port 0 over a fresh database, and request helpers.

use std::sync::atomic::{AtomicU64, Ordering};

use catalynx::auth::ApiKeys;
use catalynx::config::{ApiConfig, CacheConfig, DbConfig, HttpConfig, SecurityConfig, ServeConfig};
use catalynx::db::Db;
use catalynx::server::RunningServer;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

/// Environment variable with an admin URL of a PostgreSQL server; each test
/// creates its own database there and drops it afterwards.
pub const POSTGRES_ENV: &str = "CATALYNX_TEST_POSTGRES_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of the given kind; `None` (with a note on
/// stderr) when PostgreSQL is not configured.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Some(Self {
                    url,
                    _dir: Some(dir),
                    pg_drop: None,
                })
            }
            Backend::Postgres => {
                let Ok(admin) = std::env::var(POSTGRES_ENV) else {
                    // CI must test PostgreSQL, not pass by skipping it.
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "CI is set but {POSTGRES_ENV} is not: the PostgreSQL tests must run"
                    );
                    eprintln!(
                        "skipped: PostgreSQL test (set {POSTGRES_ENV}, e.g. postgres://postgres@127.0.0.1:5432/test)"
                    );
                    return None;
                };
                let name = format!(
                    "catalynx_t_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    rand_suffix()
                );
                let conn = sea_orm::Database::connect(&admin)
                    .await
                    .expect("connect to the PostgreSQL admin URL");
                conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                conn.close().await.ok();
                let url = replace_db_name(&admin, &name);
                Some(Self {
                    url,
                    _dir: None,
                    pg_drop: Some((admin, name)),
                })
            }
        }
    }

    pub fn config(&self) -> DbConfig {
        DbConfig::new(self.url.clone())
    }

    pub async fn connect(&self) -> Db {
        let db = Db::connect(&self.config()).await.expect("connect");
        db.migrate().await.expect("migrate");
        db
    }

    /// Drops a PostgreSQL test database (SQLite files go with their temp dir).
    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg_drop
            && let Ok(conn) = sea_orm::Database::connect(admin).await
        {
            let _ = conn
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
            conn.close().await.ok();
        }
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let cut = base.rfind('/').expect("URL with a database name");
    let mut out = format!("{}/{}", &base[..cut], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub db: Db,
    server: Option<RunningServer>,
    test_db: Option<TestDb>,
}

/// A server on a fresh SQLite file with the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Sqlite, ApiConfig::default())
        .await
        .expect("sqlite is always available")
}

/// A server on a fresh database of `backend`; `None` when that backend is not configured.
pub async fn spawn_app_on(backend: Backend, api: ApiConfig) -> Option<TestApp> {
    spawn_configured(backend, api, HttpConfig::default(), CacheConfig::default()).await
}

/// A server with the given API and cache configuration.
pub async fn spawn_with(backend: Backend, api: ApiConfig, cache: CacheConfig) -> Option<TestApp> {
    spawn_configured(backend, api, HttpConfig::default(), cache).await
}

/// A server on a fresh SQLite file with the given HTTP settings.
pub async fn spawn_http_app(http: HttpConfig) -> TestApp {
    spawn_app_with(Backend::Sqlite, ApiConfig::default(), http)
        .await
        .expect("sqlite is always available")
}

/// A server with the given API and HTTP settings; `None` when `backend` is not configured.
pub async fn spawn_app_with(backend: Backend, api: ApiConfig, http: HttpConfig) -> Option<TestApp> {
    spawn_configured(backend, api, http, CacheConfig::default()).await
}

/// A server with every setting given.
pub async fn spawn_configured(
    backend: Backend,
    api: ApiConfig,
    http: HttpConfig,
    cache: CacheConfig,
) -> Option<TestApp> {
    spawn_serving(
        backend,
        ServeConfig {
            api,
            cache,
            http,
            ..serve_config()
        },
    )
    .await
}

/// Keys every test server knows, one per role; `TestApp::gql` sends the admin key.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const EDITOR_KEY: &str = "test-editor-key-0123456789";
pub const READER_KEY: &str = "test-reader-key-0123456789";

/// The test servers' access: reads open, a key per role.
pub fn security() -> SecurityConfig {
    let keys = format!("admin={ADMIN_KEY},editor={EDITOR_KEY},reader={READER_KEY}");
    SecurityConfig {
        api_keys: Some(ApiKeys::parse(&keys).expect("valid test keys")),
        ..SecurityConfig::default()
    }
}

/// The defaults on a free port, with the test keys.
pub fn serve_config() -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        demo: false,
        security: security(),
        ..ServeConfig::default()
    }
}

/// A server with `config` on a fresh database of `backend`.
pub async fn spawn_serving(backend: Backend, config: ServeConfig) -> Option<TestApp> {
    let test_db = TestDb::new(backend).await?;
    let db = test_db.connect().await;
    let server = RunningServer::start(db.clone(), &config)
        .await
        .expect("server starts");
    Some(TestApp {
        addr: server.addr,
        client: reqwest::Client::new(),
        db,
        server: Some(server),
        test_db: Some(test_db),
    })
}

impl TestApp {
    /// The running server's state, to call the schema without HTTP.
    pub fn state(&self) -> &catalynx::server::AppState {
        &self.server.as_ref().expect("running").state
    }

    /// A digest of every row (an export, hashed): equal digests, equal data.
    pub async fn digest(&self) -> String {
        use sha2::Digest;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("export.jsonl");
        catalynx::export::export_to(&self.db, catalynx::config::ExportFormat::Jsonl, Some(&path))
            .await
            .expect("export");
        hex::encode(sha2::Sha256::digest(
            std::fs::read(&path).expect("read export"),
        ))
    }

    /// The database URL, for a second server (a replica) or a direct connection.
    pub fn database_url(&self) -> &str {
        &self.test_db.as_ref().expect("database").url
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a GraphQL operation with the admin key and returns the whole JSON response.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(self.url("/graphql"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent");
        assert!(response.status().is_success(), "HTTP {}", response.status());
        response.json().await.expect("JSON body")
    }

    /// `data` of a response that must have no errors.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// The `extensions.code` of the first error of a response that must fail.
    pub async fn error_code(&self, query: &str, variables: Value) -> String {
        let body = self.gql(query, variables).await;
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error with a code: {body:#}"))
            .to_owned()
    }

    /// SQL statements that `f` causes.
    pub async fn statements_of<F: std::future::Future<Output = T>, T>(&self, f: F) -> (T, u64) {
        let before = self.db.statement_count();
        let out = f.await;
        (out, self.db.statement_count() - before)
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let row = self
            .db
            .read
            .query_one_raw(Statement::from_string(self.db.backend(), sql))
            .await
            .expect("query")
            .expect("a row");
        row.try_get_by_index::<i64>(0).expect("an integer")
    }

    /// Stops the server cleanly and starts a new one on the same database.
    pub async fn restart(self, api: ApiConfig, cache: CacheConfig) -> TestApp {
        self.restart_after(api, cache, |_| async {}).await
    }

    /// Like `restart`, running `meanwhile` on the database while no server runs.
    pub async fn restart_after<F: std::future::Future<Output = ()>>(
        mut self,
        api: ApiConfig,
        cache: CacheConfig,
        meanwhile: impl FnOnce(Db) -> F,
    ) -> TestApp {
        self.server
            .take()
            .expect("running")
            .stop()
            .await
            .expect("clean shutdown");
        meanwhile(self.db.clone()).await;
        let test_db = self.test_db.take().expect("database");
        let db = test_db.connect().await;
        let config = ServeConfig {
            api,
            cache,
            ..serve_config()
        };
        let server = RunningServer::start(db.clone(), &config)
            .await
            .expect("server starts");
        TestApp {
            addr: server.addr,
            client: self.client.clone(),
            db,
            server: Some(server),
            test_db: Some(test_db),
        }
    }

    /// Stops the server and drops the database.
    pub async fn finish(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean shutdown");
        }
        if let Some(db) = self.test_db.take() {
            db.cleanup().await;
        }
    }
}

/// Runs an async test body against SQLite and (when configured) PostgreSQL.
#[macro_export]
macro_rules! on_both {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::helpers::spawn_app_on(
                    $crate::helpers::Backend::Sqlite,
                    Default::default(),
                )
                .await
                .unwrap();
                $body(&app).await;
                app.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::helpers::spawn_app_on(
                    $crate::helpers::Backend::Postgres,
                    Default::default(),
                )
                .await
                {
                    $body(&app).await;
                    app.finish().await;
                }
            }
        }
    };
}

/// Creates a profile through the API and returns its id.
pub async fn create_profile(app: &TestApp, input: Value) -> String {
    let data = app
        .data(
            "mutation($input: CreateProfileInput!) { createProfile(input: $input) { id } }",
            json!({ "input": input }),
        )
        .await;
    data["createProfile"]["id"].as_str().unwrap().to_owned()
}

/// Creates an opportunity through the API and returns its id.
pub async fn create_opportunity(app: &TestApp, input: Value) -> String {
    let data = app
        .data(
            "mutation($input: CreateOpportunityInput!) { createOpportunity(input: $input) { id } }",
            json!({ "input": input }),
        )
        .await;
    data["createOpportunity"]["id"].as_str().unwrap().to_owned()
}

/// Seeds deterministic demo rows directly.
pub async fn seed(app: &TestApp, profiles: u64, per_profile: u64) {
    let plan = catalynx::seed::SeedPlan {
        profiles,
        opportunities_per_profile: per_profile,
        seed: 1,
    };
    catalynx::seed::seed(&app.db, plan, false)
        .await
        .expect("seed");
    // Seen now rather than at the server's next poll, which would empty the
    // cache in the middle of the test.
    app.server
        .as_ref()
        .expect("a running server")
        .state
        .cache()
        .observe_external_writes(&app.db.read)
        .await
        .expect("data epoch");
}

/// The real binary as a child process, killed with SIGKILL when dropped.
pub struct Binary {
    pub child: std::process::Child,
    /// `host:port` it listens on, for `serve`.
    pub addr: String,
}

impl Binary {
    /// Starts `catalynx args...` with `env`, as `user` (numeric uid and gid)
    /// when given, and waits for it to listen when it serves.
    pub fn start(args: &[&str], env: &[(&str, &str)], user: Option<(&str, &str)>) -> Self {
        use std::io::{BufRead, BufReader};
        let binary = env!("CARGO_BIN_EXE_catalynx");
        let mut command = match user {
            Some((uid, gid)) => {
                let mut c = std::process::Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={gid}"),
                    "--clear-groups",
                    binary,
                ]);
                c
            }
            None => std::process::Command::new(binary),
        };
        command
            .args(args)
            .env("CATALYNX_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let mut addr = String::new();
        let mut seen = String::new();
        if args.contains(&"serve") {
            addr = loop {
                let mut line = String::new();
                if log.read_line(&mut line).unwrap() == 0 {
                    panic!("exited before listening:\n{seen}");
                }
                seen.push_str(&line);
                // A log read through a pipe is plain text: no colour codes.
                assert!(!line.contains('\x1b'), "colour codes in the log: {line:?}");
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    break rest.split_whitespace().next().unwrap().to_owned();
                }
            };
        }
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in log.lines() {});
        Self { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `id OPTION [USER]`, trimmed.
pub fn id(args: &[&str]) -> String {
    let out = std::process::Command::new("id")
        .args(args)
        .output()
        .expect("id runs");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Rows of `table` in a copy of the SQLite file at `path` alone, without
/// its -wal file: what `cp catalynx.db backup.db` keeps. `None` when the
/// copy has no such table.
pub async fn rows_in_a_copy(path: &std::path::Path, table: &str) -> Option<i64> {
    use sea_orm::sqlx::{ConnectOptions, Connection, sqlite::SqliteConnectOptions};
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("backup.db");
    std::fs::copy(path, &copy).expect("copy the database file");
    let mut conn = SqliteConnectOptions::new()
        .filename(&copy)
        .connect()
        .await
        .expect("open the copy");
    let count = sea_orm::sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    let rows = sea_orm::sqlx::query_scalar(count)
        .fetch_one(&mut conn)
        .await
        .ok();
    conn.close().await.ok();
    rows
}

/// Runs `command` (the binary, expected to refuse and exit) to its end and
/// returns what it wrote to stderr; panics naming `what` if it is still
/// running after 20 s, as a server that started would be.
pub fn refused_output(command: &mut std::process::Command, what: &str) -> std::process::Output {
    let mut child = command
        .env("CATALYNX_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("{what} was not refused");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{what}");
    out
}
