//! Faults: SQLite lock contention, overload, a read-only database, kill -9
//! in the middle of a write, and PostgreSQL going away under load. Nothing
//! acknowledged is lost, and every failure a client sees carries a code.

use std::time::{Duration, Instant};

use catalynx::config::{DbConfig, SecurityConfig, ServeConfig};
use catalynx::db::Db;
use catalynx::server::RunningServer;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Binary, EDITOR_KEY, TestApp, create_opportunity, create_profile, id, security,
    serve_config, spawn_app, spawn_serving,
};

const CREATE_MANY: &str =
    "mutation($i: [CreateOpportunityInput!]!) { createOpportunities(inputs: $i) { id } }";
const MOVE: &str =
    "mutation($id: ID!, $s: Stage!) { moveOpportunityStage(id: $id, stage: $s) { id } }";
const COUNT: &str = "{ opportunities { totalCount } }";

/// POSTs an operation with the editor key: status and body.
async fn send(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    variables: Value,
) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/graphql"))
        .bearer_auth(EDITOR_KEY)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("answered");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Two servers on one SQLite file (two writers contending for its lock),
/// and a third connection that holds the lock for a while now and then:
/// every write waits its turn within the busy timeout, none is lost, and no
/// client ever sees `database is locked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_lock_contention_loses_nothing() {
    let app = spawn_app().await;
    let replica_db = Db::connect(&DbConfig::new(app.database_url()))
        .await
        .unwrap();
    let replica = RunningServer::start(replica_db, &serve_config())
        .await
        .unwrap();
    let bases = [app.url(""), format!("http://{}", replica.addr)];
    let mut profiles = Vec::new();
    for i in 0..4 {
        profiles.push(
            create_profile(
                &app,
                json!({ "name": format!("P{i}"), "organizationType": "NONPROFIT" }),
            )
            .await,
        );
    }
    let seeded = create_opportunity(
        &app,
        json!({ "profileId": profiles[0], "organizationName": "Seed" }),
    )
    .await;

    // A third writer, outside both servers, holding the write lock 400 ms at a time.
    let url = app.database_url().to_owned();
    let holder = tokio::spawn(async move {
        let conn = sea_orm::Database::connect(&url).await.unwrap();
        for _ in 0..6 {
            conn.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            conn.execute_unprepared("COMMIT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });

    const WRITERS: usize = 12;
    const ROUNDS: usize = 8;
    const BATCH: usize = 25;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, base, profile, seeded) = (
            client.clone(),
            bases[w % 2].clone(),
            profiles[w % profiles.len()].clone(),
            seeded.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = 0;
            let mut failures = Vec::new();
            for r in 0..ROUNDS {
                let inputs: Vec<Value> = (0..BATCH)
                    .map(|i| json!({ "profileId": profile, "organizationName": format!("W{w} R{r} #{i}") }))
                    .collect();
                let (status, body) = send(&client, &base, CREATE_MANY, json!({ "i": inputs })).await;
                if status == StatusCode::OK && body.get("errors").is_none() {
                    acknowledged += BATCH;
                } else {
                    failures.push(format!("{status} {body}"));
                }
                // A read-then-write transaction too: the kind SQLite refuses
                // at once, without waiting, when another writer got in between.
                let stage = ["PROSPECTS", "CANDIDATES"][r % 2];
                let (status, body) = send(&client, &base, MOVE, json!({ "id": seeded, "s": stage })).await;
                if status != StatusCode::OK || body.get("errors").is_some() {
                    failures.push(format!("{status} {body}"));
                }
            }
            (acknowledged, failures)
        }));
    }
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (client, base) = (client.clone(), bases[r % 2].clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(3) {
                    let (status, body) = send(&client, &base, COUNT, json!({})).await;
                    if status != StatusCode::OK || body.get("errors").is_some() {
                        failures.push(format!("{status} {body}"));
                    }
                }
                failures
            })
        })
        .collect();

    let mut acknowledged = 1; // the seeded one
    let mut failures = Vec::new();
    for task in tasks {
        let (acked, failed) = task.await.unwrap();
        acknowledged += acked;
        failures.extend(failed);
    }
    for reader in readers {
        failures.extend(reader.await.unwrap());
    }
    holder.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {}",
        failures.len(),
        failures[0]
    );
    assert_eq!(acknowledged, 1 + WRITERS * ROUNDS * BATCH);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM opportunities").await,
        acknowledged as i64,
        "every acknowledged write is there"
    );
    replica.stop().await.unwrap();
    app.finish().await;
}

/// A body announced larger than the limit is refused at once, with the
/// JSON error of every refusal, not waited for until the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_announced_over_the_limit_are_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_with_slots(2).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n{{",
        app.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("answered before the request timeout")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    app.finish().await;
}

/// A SQLite server that runs at most `slots` API requests at once.
async fn spawn_with_slots(slots: usize) -> TestApp {
    let security = SecurityConfig {
        max_concurrent_requests: slots,
        ..security()
    };
    let config = ServeConfig {
        security,
        ..serve_config()
    };
    spawn_serving(Backend::Sqlite, config).await.unwrap()
}

/// Past `--max-concurrent-requests`, requests get 503 with `Retry-After`
/// at once; when the load drops, everything is answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_retry_after() {
    let app = spawn_with_slots(2).await;
    // Two writes that cannot finish while the test holds the writer.
    let held = app.db.write.begin().await.unwrap();
    let client = reqwest::Client::new();
    let writes: Vec<_> = (0..2)
        .map(|i| {
            let (client, base) = (client.clone(), app.url(""));
            tokio::spawn(async move {
                let query = format!(r#"mutation {{ createProfile(input: {{ name: "Slow {i}", organizationType: NONPROFIT }}) {{ id }} }}"#);
                send(&client, &base, &query, json!({})).await
            })
        })
        .collect();

    // Both writes hold their slots (waiting for the writer), before any
    // probe could take one of them.
    let started = Instant::now();
    while app.state().capacity().running() != Some(2) {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the writes never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Both slots taken: the next request is turned away, quickly.
    let shed = loop {
        let started = Instant::now();
        let response = app
            .client
            .post(app.url("/graphql"))
            .json(&json!({ "query": "{ __typename }" }))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "shed at once"
            );
            break response;
        }
        if writes.iter().any(|w| w.is_finished()) {
            let mut answers = Vec::new();
            for write in writes {
                answers.push(write.await.unwrap());
            }
            panic!("the writes finished early: {answers:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["cache-control"], "no-store");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "SERVICE_UNAVAILABLE"
    );
    let rest = app
        .client
        .get(app.url("/api/profiles"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        rest.json::<Value>().await.unwrap()["code"],
        "SERVICE_UNAVAILABLE"
    );
    // Probes are not API requests: they still answer.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    drop(held);
    for write in writes {
        let (status, body) = write.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
    }
    let data = app.data("{ profiles { totalCount } }", json!({})).await;
    assert_eq!(data["profiles"]["totalCount"], 2);
    app.finish().await;
}

/// A request whose body is still arriving holds no slot: clients that send
/// their bodies slowly cannot take the server from everyone else, and their
/// requests are answered once the bodies are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hold_no_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_with_slots(2).await;
    let body = json!({ "query": "{ profiles { totalCount } }" }).to_string();
    let (head, tail) = body.split_at(10);
    // More slow senders than slots, each stopped halfway through its body.
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
            app.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    // Give the server time to take their headers and start on the bodies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.state().capacity().running(), Some(0));

    let data = app.data("{ profiles { totalCount } }", json!({})).await;
    assert_eq!(data["profiles"]["totalCount"], 0);

    for mut stream in slow {
        stream.write_all(tail.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(
            answer.contains(r#"{"data":{"profiles":{"totalCount":0}}}"#),
            "{answer}"
        );
    }
    app.finish().await;
}

/// `PRAGMA integrity_check` on a fresh connection, and a count.
async fn reopen_and_count(url: &str, table: &str) -> i64 {
    let db = Db::connect(&DbConfig::new(url)).await.expect("reopens");
    let check = db
        .read
        .query_one_raw(sea_orm::Statement::from_string(
            db.backend(),
            "PRAGMA integrity_check",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(check.try_get_by_index::<String>(0).unwrap(), "ok");
    let row = db
        .read
        .query_one_raw(sea_orm::Statement::from_string(
            db.backend(),
            format!("SELECT COUNT(*) FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// kill -9 while `seed` writes its one transaction (some of it already in
/// the file: the seed has the file to itself, so it writes under a rollback
/// journal rather than the WAL): the database opens, is intact, and holds
/// none of it.
#[tokio::test]
async fn kill_9_during_seed_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.db");
    let url = format!("sqlite://{}", path.display());
    let mut seed = Binary::start(
        &[
            "seed",
            "--profiles",
            "20000",
            "--opportunities-per-profile",
            "20",
            "--quiet",
        ],
        &[("DATABASE_URL", &url)],
        None,
    );
    // Killed once uncommitted pages have spilled past the page cache into
    // the file (an empty, migrated file is ~100 KiB).
    let started = Instant::now();
    let written = || {
        ["seed.db", "seed.db-wal"]
            .iter()
            .map(|name| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len()))
            .max()
            .unwrap_or(0)
    };
    while written() < 96 << 20 {
        assert!(
            seed.child.try_wait().unwrap().is_none(),
            "seed finished before the kill"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the file never grew"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let journal = dir.path().join("seed.db-journal").exists();
    seed.kill9();
    eprintln!(
        "seed killed with {} bytes written (rollback journal: {journal})",
        written()
    );
    assert_eq!(reopen_and_count(&url, "profiles").await, 0);
    assert_eq!(reopen_and_count(&url, "opportunities").await, 0);

    // The same database takes a whole seed afterwards.
    let mut again = Binary::start(
        &[
            "seed",
            "--profiles",
            "50",
            "--opportunities-per-profile",
            "2",
            "--quiet",
        ],
        &[("DATABASE_URL", &url)],
        None,
    );
    assert!(again.child.wait().unwrap().success());
    assert_eq!(reopen_and_count(&url, "profiles").await, 50);
}

/// kill -9 while batches of 1,000 opportunities are being written: after a
/// restart every acknowledged batch is there, whole, and no other batch is
/// there in part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_batch_inserts_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("batch.db").display());
    let keys = format!("editor={EDITOR_KEY}");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CATALYNX_API_KEYS", keys.as_str()),
    ];
    let mut server = Binary::start(&["serve", "--listen", "127.0.0.1:0"], &env, None);
    let client = reqwest::Client::new();
    let base = server.url("");
    let (_, body) = send(
        &client,
        &base,
        r#"mutation { createProfile(input: { name: "Funded", organizationType: NONPROFIT }) { id } }"#,
        json!({}),
    )
    .await;
    let profile = body["data"]["createProfile"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    const BATCH: usize = 1000;
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (client, base, profile, acknowledged) =
                (client.clone(), base.clone(), profile.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for r in 0.. {
                    let inputs: Vec<Value> = (0..BATCH)
                        .map(|i| json!({ "profileId": profile, "organizationName": format!("W{w} R{r} #{i}"), "tags": ["bulk"] }))
                        .collect();
                    let response = client
                        .post(format!("{base}/graphql"))
                        .bearer_auth(EDITOR_KEY)
                        .json(&json!({ "query": CREATE_MANY, "variables": { "i": inputs } }))
                        .send()
                        .await;
                    let Ok(response) = response else { return };
                    let Ok(body) = response.json::<Value>().await else { return };
                    if body.get("errors").is_none() {
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    while acknowledged.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(137)).await;
    server.kill9();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
    let count = reopen_and_count(&url, "opportunities").await as usize;
    assert_eq!(count % BATCH, 0, "a batch was half-written: {count} rows");
    assert!(
        count >= acknowledged * BATCH,
        "{acknowledged} batches acknowledged, {count} rows there"
    );
    assert!(count <= (acknowledged + 3) * BATCH, "{count} rows");
    eprintln!("killed with {acknowledged} batches acknowledged; {count} rows after restart");

    // And the server starts again on it.
    let server = Binary::start(&["serve", "--listen", "127.0.0.1:0"], &env, None);
    let (status, body) = send(&client, &server.url(""), COUNT, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["opportunities"]["totalCount"], count);
}

/// Runs `serve` on a database in `dir` that cannot be written: as a user
/// without write access (root, whom permissions do not bind, drops to
/// `nobody` with setpriv).
fn serve_read_only(dir: &std::path::Path) -> Binary {
    let nobody = (id(&["-u", "nobody"]), id(&["-g", "nobody"]));
    let user = (id(&["-u"]) == "0").then_some((nobody.0.as_str(), nobody.1.as_str()));
    let url = format!("sqlite://{}", dir.join("test.db").display());
    let keys = format!("editor={EDITOR_KEY}");
    Binary::start(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("DATABASE_URL", &url), ("CATALYNX_API_KEYS", &keys)],
        user,
    )
}

/// A database file, or its whole directory, that cannot be written: the
/// server starts, reads work, writes fail with READ_ONLY and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_serves_reads_and_refuses_writes() {
    use std::os::unix::fs::PermissionsExt;
    let source = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", source.path().join("test.db").display());
    {
        let db = Db::connect(&DbConfig::new(url.as_str())).await.unwrap();
        db.migrate().await.unwrap();
        let plan = catalynx::seed::SeedPlan {
            profiles: 12,
            opportunities_per_profile: 2,
            seed: 3,
        };
        catalynx::seed::seed(&db, plan, false).await.unwrap();
        // Closed cleanly: the WAL is checkpointed and its files removed.
        db.write.close().await.unwrap();
        db.read.close().await.unwrap();
    }
    let client = reqwest::Client::new();
    // The file read-only; then the directory too (no WAL files can be made).
    for read_only_dir in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("test.db");
        std::fs::copy(source.path().join("test.db"), &file).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
        if !read_only_dir {
            // Writable by the user the server runs as, so it can make WAL files.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        } else {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        let server = serve_read_only(dir.path());
        let base = server.url("");
        let (status, body) = send(
            &client,
            &base,
            "{ profiles(filter: { includeArchived: true }) { totalCount } }",
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["profiles"]["totalCount"], 12, "{body}");
        let (status, body) = send(
            &client,
            &base,
            r#"mutation { createProfile(input: { name: "Nope", organizationType: NONPROFIT }) { id } }"#,
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "READ_ONLY",
            "{body}"
        );
        assert!(
            !body.to_string().contains("readonly database"),
            "internals leaked: {body}"
        );
        let rest = client
            .get(server.url("/api/profiles"))
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), StatusCode::OK);
        drop(server);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            reopen_and_count(&format!("sqlite://{}", file.display()), "profiles").await,
            12
        );
    }
}

/// A PostgreSQL cluster of the test's own, on a free port, so that it can
/// be stopped and started without disturbing the shared server. Stopped
/// (immediately) when dropped.
struct PrivateCluster {
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    port: u16,
    /// Root runs PostgreSQL's tools as `postgres`: they refuse to run as root.
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl PrivateCluster {
    /// `Err` says why a cluster cannot be made here.
    fn create() -> Result<Self, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no /usr/lib/postgresql ({e}); apt-get install postgresql"))?
            .filter_map(|d| d.ok().map(|d| d.path().join("bin")))
            .find(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
            .ok_or("no initdb and pg_ctl under /usr/lib/postgresql/*/bin")?;
        let as_postgres = id(&["-u"]) == "0";
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        if as_postgres {
            let chown = std::process::Command::new("chown")
                .args(["postgres:", &dir.path().display().to_string()])
                .status()
                .map_err(|e| e.to_string())?;
            if !chown.success() {
                return Err("cannot hand a directory to the postgres user".into());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let cluster = Self {
            data: dir.path().join("data"),
            log: dir.path().join("log"),
            bin,
            port,
            as_postgres,
            _dir: dir,
        };
        let data = cluster.data.display().to_string();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        cluster.start()?;
        Ok(cluster)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let tool = self.bin.join(tool).display().to_string();
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &tool]);
            c
        } else {
            std::process::Command::new(&tool)
        };
        let out = command
            .args(args)
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data.display().to_string();
        let mut all = vec!["-D", &data, "-w", "-t", "30"];
        all.extend(args);
        self.run("pg_ctl", &all)
    }

    fn start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self._dir.path().display()
        );
        let log = self.log.display().to_string();
        self.pg_ctl(&["-o", &options, "-l", &log, "start"])
    }

    fn stop(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "fast", "stop"])
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

/// One request of the load, as its client saw it.
struct Seen {
    at: Instant,
    took: Duration,
    ok: bool,
    code: Option<String>,
}

/// PostgreSQL stopped and started under load: while it is down, requests
/// fail fast with SERVICE_UNAVAILABLE; once it is back they succeed again,
/// with no restart of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_load_fails_fast_and_recovers() {
    let cluster = match PrivateCluster::create() {
        Ok(cluster) => cluster,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: PostgreSQL restart test: cannot run a private cluster: {why}");
            return;
        }
        Err(why) => panic!("CI: a private PostgreSQL cluster is required: {why}"),
    };
    let config = DbConfig {
        db_acquire_timeout: 3,
        ..DbConfig::new(cluster.url())
    };
    let db = Db::connect(&config).await.unwrap();
    db.migrate().await.unwrap();
    let server = RunningServer::start(db.clone(), &serve_config())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (status, body) = send(
        &client,
        &base,
        r#"mutation { createProfile(input: { name: "Steady", organizationType: NONPROFIT }) { id } }"#,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|i| {
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    // Each read asks something new: a cached answer is still
                    // right while the database is down (no write went
                    // through), so only reads that must reach it tell.
                    let query = if i == 0 {
                        r#"mutation { createProfile(input: { name: "Under load", organizationType: NONPROFIT }) { id } }"#.to_owned()
                    } else {
                        format!("{{ profiles(filter: {{ search: \"load {i} {n}\" }}) {{ totalCount }} }}")
                    };
                    let at = Instant::now();
                    let (status, body) = send(&client, &base, &query, json!({})).await;
                    seen.push(Seen {
                        at,
                        took: at.elapsed(),
                        ok: status == StatusCode::OK && body.get("errors").is_none(),
                        code: body["errors"][0]["extensions"]["code"].as_str().map(str::to_owned),
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop().unwrap();
    let stopped = Instant::now();
    // Requests caught by the stop wait out the 3 s pool timeout; the outage
    // lasts long enough after that for the fail-fast path to show.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // PostgreSQL answers before `pg_ctl start` returns (it polls), so the
    // outage ends, as far as the load can tell, when the start begins.
    let starting = Instant::now();
    cluster.start().unwrap();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = Vec::new();
    for task in load {
        seen.extend(task.await.unwrap());
    }

    // Down (from a moment after the stop until the start): fast, clear failures.
    let down: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > stopped + Duration::from_millis(500) && s.at + s.took < starting)
        .collect();
    assert!(down.len() > 5, "{} requests while down", down.len());
    for s in &down {
        assert!(!s.ok, "succeeded while the database was down");
        assert_eq!(s.code.as_deref(), Some("SERVICE_UNAVAILABLE"));
        assert!(
            // Well under the 3 s pool timeout, with room for a busy machine.
            s.took < Duration::from_secs(2),
            "took {:?} to fail",
            s.took
        );
    }
    // Back: everything succeeds again within a few seconds of the start.
    let back: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > started + Duration::from_secs(3))
        .collect();
    assert!(back.len() > 5, "{} requests after the restart", back.len());
    let failed: Vec<_> = back.iter().filter(|s| !s.ok).map(|s| &s.code).collect();
    assert!(failed.is_empty(), "failed after the restart: {failed:?}");
    let first_ok = seen
        .iter()
        .filter(|s| s.at > started && s.ok)
        .map(|s| s.at - started)
        .min()
        .unwrap();
    let around_stop = seen
        .iter()
        .filter(|s| s.at < stopped + Duration::from_millis(500) && s.at + s.took > stopped)
        .map(|s| s.took)
        .max();
    eprintln!(
        "{} requests in all; {} while down, slowest failure {:?}; slowest around the stop {around_stop:?}; \
         first success {first_ok:?} after the start",
        seen.len(),
        down.len(),
        down.iter().map(|s| s.took).max().unwrap()
    );
    server.stop().await.unwrap();
}

/// A mutation whose client gives up while its COMMIT runs is kept, and so is
/// the invalidation after it: reads show the write at once, not once the
/// entries holding what it replaced expire. A deferred trigger makes
/// PostgreSQL's COMMIT take a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_left_during_its_commit_is_not_served_stale() {
    let Some(app) = crate::helpers::spawn_app_on(Backend::Postgres, Default::default()).await
    else {
        return;
    };
    let id = create_profile(&app, json!({ "name": "Before" })).await;
    let read = "query($id: ID!) { profile(id: $id) { name } }";
    let name = || async { app.data(read, json!({ "id": id })).await["profile"]["name"].clone() };
    assert_eq!(name().await, "Before", "now cached");
    app.db
        .write
        .execute_unprepared(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON profiles
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
        )
        .await
        .unwrap();
    let gave_up = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(EDITOR_KEY)
        .timeout(Duration::from_millis(300))
        .json(&json!({
            "query": "mutation($id: ID!) { updateProfile(id: $id, input: { name: \"After\" }) { name } }",
            "variables": { "id": id },
        }))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client left before the answer");
    let committed = "SELECT COUNT(*) FROM profiles WHERE name = 'After'";
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.scalar(committed).await == 0 {
        assert!(Instant::now() < deadline, "the write was not kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The invalidation follows the COMMIT in the same task.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(name().await, "After");
    app.finish().await;
}

/// A statement cancelled by PostgreSQL's statement timeout (here waiting on
/// a lock another session holds) is the database's unavailability, not a
/// bug: 503 SERVICE_UNAVAILABLE, which a client may retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_past_the_timeout_are_unavailable_not_internal() {
    let Some(test_db) = crate::helpers::TestDb::new(Backend::Postgres).await else {
        return;
    };
    test_db.connect().await;
    let mut config = test_db.config();
    config.pg_statement_timeout_ms = 300;
    let db = Db::connect(&config).await.unwrap();
    let server = RunningServer::start(db, &serve_config()).await.unwrap();
    let holder = sea_orm::Database::connect(&test_db.url).await.unwrap();
    let lock = holder.begin().await.unwrap();
    lock.execute_unprepared("LOCK TABLE profiles IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{}/graphql", server.addr))
        .json(&json!({ "query": "{ profiles(first: 1) { nodes { id } } }" }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{body}"
    );
    lock.rollback().await.unwrap();
    server.stop().await.unwrap();
    test_db.cleanup().await;
}
