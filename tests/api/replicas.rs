//! Several replicas of the real binary on one PostgreSQL database and one
//! Redis: coherent caches across replicas, Redis restarts under load, and
//! migrations when replicas start together. Each test runs its own
//! `redis-server` on a free port, so it can stop and restart it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, Backend, TestDb};

/// A child process killed when dropped, so a failing test leaves nothing behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Redis on `port`; `None` (with a note) when redis-server is missing.
fn start_redis(port: u16) -> Option<Process> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is required in CI"
        );
        eprintln!("skipped: Redis test (redis-server not found)");
        return None;
    };
    let process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(process)
}

/// A replica: the real binary serving on a free port.
struct Replica {
    addr: SocketAddr,
    _process: Process,
}

fn start_replica(database_url: &str, redis_url: &str) -> Replica {
    start_replica_with(database_url, redis_url, &[])
}

/// A replica with more environment variables (settings).
fn start_replica_with(database_url: &str, redis_url: &str, env: &[(&str, &str)]) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_catalynx"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", database_url)
        .env("CATALYNX_REDIS_URL", redis_url)
        .env("CATALYNX_API_KEYS", format!("admin={ADMIN_KEY}"))
        .env("CATALYNX_CACHE", "true")
        .env("CATALYNX_LOG", "info")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server binary");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().to_owned();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the replica reports its address");
    Replica {
        addr: addr.parse().unwrap(),
        _process: Process(child),
    }
}

async fn gql(
    client: &reqwest::Client,
    replica: SocketAddr,
    query: &str,
    variables: Value,
) -> (u16, Value) {
    let response = client
        .post(format!("http://{replica}/graphql"))
        .header("accept", "application/json")
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn data(
    client: &reqwest::Client,
    replica: SocketAddr,
    query: &str,
    variables: Value,
) -> Value {
    let (status, body) = gql(client, replica, query, variables).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

struct Setup {
    db: TestDb,
    redis_port: u16,
    redis: Option<Process>,
    a: Replica,
    b: Replica,
}

async fn two_replicas() -> Option<Setup> {
    let db = TestDb::new(Backend::Postgres).await?;
    let redis_port = free_port();
    let redis = start_redis(redis_port)?;
    // Migrate once up front; the test of simultaneous starts is separate.
    db.connect().await;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let a = start_replica(&db.url, &redis_url);
    let b = start_replica(&db.url, &redis_url);
    Some(Setup {
        db,
        redis_port,
        redis: Some(redis),
        a,
        b,
    })
}

const CREATE: &str =
    "mutation($input: CreateProfileInput!) { createProfile(input: $input) { id } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_is_read_through_the_other() {
    let Some(setup) = two_replicas().await else {
        return;
    };
    let client = reqwest::Client::new();
    let (a, b) = (setup.a.addr, setup.b.addr);
    let list = "{ profiles(first: 10) { totalCount nodes { name } } }";
    // A previously empty list, cached on B.
    assert_eq!(
        data(&client, b, list, Value::Null).await["profiles"]["totalCount"],
        0
    );
    assert_eq!(
        data(&client, b, list, Value::Null).await["profiles"]["totalCount"],
        0
    );
    let id = data(
        &client,
        a,
        CREATE,
        json!({ "input": { "name": "Harbor Arts" } }),
    )
    .await["createProfile"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        data(&client, b, list, Value::Null).await["profiles"]["nodes"],
        json!([{ "name": "Harbor Arts" }])
    );

    // A single entity and a count, cached on B, changed through A.
    let one = "query($id: ID!) { profile(id: $id) { name opportunitiesCount } }";
    assert_eq!(
        data(&client, b, one, json!({ "id": id })).await["profile"],
        json!({ "name": "Harbor Arts", "opportunitiesCount": 0 })
    );
    data(&client, a, "mutation($id: ID!) { updateProfile(id: $id, input: { name: \"Harbor Arts Council\" }) { id } }", json!({ "id": id })).await;
    data(&client, a, "mutation($id: ID!) { createOpportunity(input: { profileId: $id, organizationName: \"Mott\" }) { id } }", json!({ "id": id })).await;
    assert_eq!(
        data(&client, b, one, json!({ "id": id })).await["profile"],
        json!({ "name": "Harbor Arts Council", "opportunitiesCount": 1 })
    );
    // B answers repeats from its caches: the shared tier is in use.
    let stats = data(
        &client,
        b,
        "{ cacheStats { hits responseHits } }",
        Value::Null,
    )
    .await;
    let hits = stats["cacheStats"]["hits"].as_u64().unwrap()
        + stats["cacheStats"]["responseHits"].as_u64().unwrap();
    assert!(hits > 0);
    drop(setup.a);
    drop(setup.b);
    setup.db.cleanup().await;
}

/// An entry copied from Redis into a replica's memory keeps the time Redis
/// had left on it: no replica serves a value more than the TTL after it was
/// read from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_copied_between_replicas_keeps_its_expiry() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let redis_port = free_port();
    let Some(redis) = start_redis(redis_port) else {
        return;
    };
    let conn = db.connect().await;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let ttl = Duration::from_secs(2);
    let settings = [("CATALYNX_CACHE_TTL_SECS", "2")];
    let a = start_replica_with(&db.url, &redis_url, &settings);
    let b = start_replica_with(&db.url, &redis_url, &settings);
    let client = reqwest::Client::new();
    let id = data(
        &client,
        a.addr,
        CREATE,
        json!({ "input": { "name": "Read Once" } }),
    )
    .await["createProfile"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = "query($id: ID!) { profile(id: $id) { name } }";
    let name = |body: Value| body["profile"]["name"].as_str().unwrap().to_owned();
    // Read from the database by A, no later than `read`, and put in Redis.
    assert_eq!(
        name(data(&client, a.addr, one, json!({ "id": id })).await),
        "Read Once"
    );
    let read = Instant::now();
    // Changed behind the replicas' backs: only the TTL can end the old value.
    use sea_orm::ConnectionTrait;
    conn.write
        .execute_unprepared(&format!(
            "UPDATE profiles SET name = 'Read Again' WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    // B takes the entry from Redis (the database has the new name by now).
    tokio::time::sleep_until((read + Duration::from_millis(800)).into()).await;
    assert_eq!(
        name(data(&client, b.addr, one, json!({ "id": id })).await),
        "Read Once",
        "B copies A's entry from Redis (the test needs it within the TTL)"
    );
    // Past the TTL of the first read: B has it no more. Another text, so
    // that the answer cannot be B's stored response.
    tokio::time::sleep_until((read + ttl + Duration::from_millis(300)).into()).await;
    assert_eq!(
        name(
            data(
                &client,
                b.addr,
                &format!("{one} # again"),
                json!({ "id": id })
            )
            .await
        ),
        "Read Again",
        "B served a value more than the TTL after it was read from the database"
    );
    drop((a, b, redis));
    db.cleanup().await;
}

/// Generations lost in Redis (evicted under an `allkeys-*` policy, or
/// deleted) do not bring back what a write replaced, on either replica: the
/// next write's generation rises past what they held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_generations_were_lost_are_read_everywhere() {
    let Some(setup) = two_replicas().await else {
        return;
    };
    let client = reqwest::Client::new();
    let (a, b) = (setup.a.addr, setup.b.addr);
    let id = data(&client, a, CREATE, json!({ "input": { "name": "Name 0" } })).await
        ["createProfile"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rename = "mutation($id: ID!, $name: String!) { updateProfile(id: $id, input: { name: $name }) { id } }";
    let read = "query($id: ID!) { profile(id: $id) { name } }";
    // Its slot's generation climbs past 1, and both replicas cache the name.
    for n in 1..=3 {
        let name = format!("Name {n}");
        data(&client, a, rename, json!({ "id": id, "name": name })).await;
    }
    for replica in [a, b] {
        for _ in 0..2 {
            assert_eq!(
                data(&client, replica, read, json!({ "id": id })).await["profile"]["name"],
                "Name 3"
            );
        }
    }
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}", setup.redis_port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("clx:gen:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();

    data(&client, a, rename, json!({ "id": id, "name": "Name 4" })).await;
    for replica in [a, b] {
        assert_eq!(
            data(&client, replica, read, json!({ "id": id })).await["profile"]["name"],
            "Name 4",
            "replica {replica}"
        );
    }
    drop(setup.a);
    drop(setup.b);
    drop(setup.redis);
    setup.db.cleanup().await;
}

/// Calls of `command` so far on the Redis at `port` (`INFO commandstats`).
async fn redis_calls(port: u16, command: &str) -> u64 {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_reads_the_epoch_once() {
    let Some(setup) = two_replicas().await else {
        return;
    };
    let client = reqwest::Client::new();
    let b = setup.b.addr;
    let id = data(
        &client,
        setup.a.addr,
        CREATE,
        json!({ "input": { "name": "Epoch Reads" } }),
    )
    .await["createProfile"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = "query($id: ID!) { profile(id: $id) { name } }";
    // Executed (a miss, then a resolver-cache hit under another text), then
    // answered from the response tier: one epoch read (MGET) each.
    let before = redis_calls(setup.redis_port, "mget").await;
    for query in [one, &format!("{one} # again"), one] {
        assert_eq!(
            data(&client, b, query, json!({ "id": id })).await["profile"]["name"],
            "Epoch Reads"
        );
    }
    // The query above adds nothing: INFO is not MGET.
    let reads = redis_calls(setup.redis_port, "mget").await - before;
    assert_eq!(reads, 3, "epoch reads for 3 requests");
    drop(setup.a);
    drop(setup.b);
    setup.db.cleanup().await;
}

/// Writes through A, reads through both, for `seconds`; returns (writes, reads, stale, 5xx).
async fn load(
    setup: &Setup,
    seconds: u64,
    mut during: impl FnMut(Duration),
) -> (u64, u64, u64, u64) {
    let client = reqwest::Client::new();
    let (a, b) = (setup.a.addr, setup.b.addr);
    let id = data(&client, a, CREATE, json!({ "input": { "name": "v0" } })).await["createProfile"]
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (stale, reads, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let q = "query($id: ID!) { profile(id: $id) { name opportunitiesCount } profiles(first: 3) { nodes { name } } }";
    let mut readers = Vec::new();
    for replica in [a, b, b] {
        let (client, id, acked, stop, stale, reads, errors) = (
            client.clone(),
            id.clone(),
            acked.clone(),
            stop.clone(),
            stale.clone(),
            reads.clone(),
            errors.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let min = acked.load(Ordering::Acquire);
                let (status, body) = gql(&client, replica, q, json!({ "id": id })).await;
                reads.fetch_add(1, Ordering::Relaxed);
                if status >= 500 || body.get("errors").is_some() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let version: u64 = body["data"]["profile"]["name"].as_str().unwrap()[1..]
                    .parse()
                    .unwrap();
                let listed: u64 = body["data"]["profiles"]["nodes"][0]["name"]
                    .as_str()
                    .unwrap()[1..]
                    .parse()
                    .unwrap();
                let count = body["data"]["profile"]["opportunitiesCount"]
                    .as_u64()
                    .unwrap();
                if version < min || listed < min || count < min {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut version = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        during(started.elapsed());
        version += 1;
        let rename = "mutation($id: ID!, $n: String!) { updateProfile(id: $id, input: { name: $n }) { id } }";
        let (status, body) = gql(
            &client,
            a,
            rename,
            json!({ "id": id, "n": format!("v{version}") }),
        )
        .await;
        assert!(
            status == 200 && body.get("errors").is_none(),
            "write failed: {status} {body}"
        );
        let add = "mutation($id: ID!) { createOpportunity(input: { profileId: $id, organizationName: \"F\" }) { id } }";
        let (status, body) = gql(&client, a, add, json!({ "id": id })).await;
        assert!(
            status == 200 && body.get("errors").is_none(),
            "write failed: {status} {body}"
        );
        // Both writes are acknowledged: version `version`, `version` opportunities.
        acked.store(version, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        r.await.unwrap();
    }
    (
        version,
        reads.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_replica_reads_stale_data_under_load() {
    let Some(setup) = two_replicas().await else {
        return;
    };
    let (writes, reads, stale, errors) = load(&setup, 4, |_| {}).await;
    eprintln!(
        "two replicas: {writes} acknowledged writes, {reads} reads, {stale} stale, {errors} errors"
    );
    assert!(
        writes > 5 && reads > 20,
        "too little load: {writes} writes, {reads} reads"
    );
    assert_eq!((stale, errors), (0, 0));
    let Setup { db, a, b, .. } = setup;
    drop((a, b));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarting_under_load_loses_nothing() {
    let Some(mut setup) = two_replicas().await else {
        return;
    };
    let port = setup.redis_port;
    let mut redis = setup.redis.take();
    let (mut stopped, mut restarted) = (false, false);
    let (writes, reads, stale, errors) = load(&setup, 6, |elapsed| {
        if elapsed > Duration::from_secs(2) && !stopped {
            redis.take();
            stopped = true;
        }
        if elapsed > Duration::from_millis(3500) && !restarted {
            redis = start_redis(port);
            restarted = true;
        }
    })
    .await;
    eprintln!(
        "Redis stopped and restarted: {writes} acknowledged writes, {reads} reads, {stale} stale, {errors} errors"
    );
    assert!(stopped && restarted && redis.is_some());
    assert!(
        writes > 5 && reads > 20,
        "too little load: {writes} writes, {reads} reads"
    );
    assert_eq!((stale, errors), (0, 0));
    // Back in use without a restart of the replicas.
    let client = reqwest::Client::new();
    let q = "{ profiles(first: 1) { totalCount } }";
    data(&client, setup.b.addr, q, Value::Null).await;
    let body = client
        .get(format!("http://{}/metrics", setup.b.addr))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("catalynx_cache_redis_up 1"),
        "the replica uses Redis again"
    );
    let Setup { db, a, b, .. } = setup;
    drop((a, b, redis));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let redis_port = free_port();
    let Some(redis) = start_redis(redis_port) else {
        return;
    };
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let (url_a, url_b, r_a, r_b) = (
        db.url.clone(),
        db.url.clone(),
        redis_url.clone(),
        redis_url.clone(),
    );
    let a = std::thread::spawn(move || start_replica(&url_a, &r_a));
    let b = std::thread::spawn(move || start_replica(&url_b, &r_b));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    for replica in [a.addr, b.addr] {
        let ready = reqwest::get(format!("http://{replica}/ready"))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    }
    let conn = db.connect().await;
    use sea_orm::{ConnectionTrait, Statement};
    let row = conn
        .read
        .query_one_raw(Statement::from_string(
            conn.backend(),
            "SELECT COUNT(*) FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get_by_index::<i64>(0).unwrap() as usize,
        {
            use migration::MigratorTrait;
            migration::Migrator::migrations().len()
        },
        "each migration recorded once"
    );
    drop((a, b, redis));
    db.cleanup().await;
}
