//! The resolver cache: zero SQL on a cached repeat, never stale after a
//! write, TTL, byte bound, single flight, and the race between reads and writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use catalynx::config::{ApiConfig, CacheConfig};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, create_opportunity, create_profile, seed, spawn_with};
use crate::on_both;

const NESTED_PAGE: &str = "{ profiles(first: 20) { totalCount nodes { name opportunitiesCount opportunities(first: 5) { nodes { id overallScore profile { name } } } } } }";

fn cache_on() -> CacheConfig {
    CacheConfig {
        cache_enabled: true,
        ..CacheConfig::default()
    }
}

async fn stats(app: &TestApp) -> Value {
    app.data(
        "{ cacheStats { enabled entries storedBytes maxBytes utilisationPercent hits misses hitRatio evictions expirations invalidated compressionRatio ttlSeconds responseHits } }",
        Value::Null,
    )
    .await["cacheStats"]
        .clone()
}

async fn cached_repeat_sends_no_sql(backend: Backend) {
    let Some(app) = spawn_with(backend, ApiConfig::default(), cache_on()).await else {
        return;
    };
    seed(&app, 40, 5).await;
    let (first, cold) = app.statements_of(app.data(NESTED_PAGE, Value::Null)).await;
    let (second, warm) = app.statements_of(app.data(NESTED_PAGE, Value::Null)).await;
    assert!(cold > 0);
    assert_eq!(warm, 0, "a fully cached repeat sends no SQL");
    assert_eq!(first, second, "the cache returns the same data");
    let s = stats(&app).await;
    assert!(
        s["hits"].as_u64().unwrap() + s["responseHits"].as_u64().unwrap() > 0
            && s["entries"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert!(s["compressionRatio"].as_f64().unwrap() > 1.0, "{s}");
    // Same query, other arguments: another entry, not a shared one.
    let (other, sent) = app
        .statements_of(app.data("{ profiles(first: 3) { nodes { name } } }", Value::Null))
        .await;
    assert!(sent > 0, "first: 3 is not first: 20");
    assert_eq!(other["profiles"]["nodes"].as_array().unwrap().len(), 3);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_repeat_sends_no_sql_on_sqlite() {
    cached_repeat_sends_no_sql(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_repeat_sends_no_sql_on_postgres() {
    cached_repeat_sends_no_sql(Backend::Postgres).await;
}

/// Every kind of read, warmed into the cache, shows every kind of write at once.
async fn writes_invalidate_what_they_affect(app: &TestApp) {
    let empty = "{ profiles(first: 10) { totalCount nodes { name } } opportunities(first: 10) { totalCount nodes { organizationName } } }";
    // Cached empty lists must show the first rows.
    assert_eq!(
        app.data(empty, Value::Null).await["profiles"]["totalCount"],
        0
    );
    assert_eq!(
        app.data(empty, Value::Null).await["opportunities"]["totalCount"],
        0
    );
    let p = create_profile(app, json!({ "name": "Harbor Arts", "ein": "12-3456789" })).await;
    let listed = app.data(empty, Value::Null).await;
    assert_eq!(
        listed["profiles"]["nodes"],
        json!([{ "name": "Harbor Arts" }])
    );
    assert_eq!(listed["opportunities"]["totalCount"], 0);

    let one = "query($id: ID!) { profile(id: $id) { name opportunitiesCount opportunities(first: 3) { totalCount nodes { organizationName overallScore currentStage } } } profileByEin(ein: \"123456789\") { name } }";
    let warm = app.data(one, json!({ "id": p })).await;
    assert_eq!(warm["profile"]["opportunitiesCount"], 0);
    let o = create_opportunity(
        app,
        json!({ "profileId": p, "organizationName": "Kresge", "overallScore": 0.4 }),
    )
    .await;
    let after_insert = app.data(one, json!({ "id": p })).await;
    assert_eq!(
        after_insert["profile"]["opportunitiesCount"], 1,
        "count invalidated"
    );
    assert_eq!(
        after_insert["profile"]["opportunities"]["nodes"][0]["organizationName"], "Kresge",
        "nested page invalidated"
    );
    assert_eq!(
        app.data(empty, Value::Null).await["opportunities"]["totalCount"],
        1,
        "root list invalidated"
    );

    app.data(
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { overallScore: 0.9 }) { id } }",
        json!({ "id": o }),
    )
    .await;
    app.data(
        "mutation($id: ID!) { moveOpportunityStage(id: $id, stage: TARGETS) { id } }",
        json!({ "id": o }),
    )
    .await;
    let after_update = app.data(one, json!({ "id": p })).await;
    assert_eq!(
        after_update["profile"]["opportunities"]["nodes"][0],
        json!({ "organizationName": "Kresge", "overallScore": 0.9, "currentStage": "TARGETS" })
    );
    let lookup = "query($id: ID!) { opportunity(id: $id) { overallScore profile { name } } }";
    assert_eq!(
        app.data(lookup, json!({ "id": o })).await["opportunity"]["profile"]["name"],
        "Harbor Arts"
    );

    app.data("mutation($id: ID!) { updateProfile(id: $id, input: { name: \"Harbor Arts Council\", ein: \"98-7654321\" }) { id } }", json!({ "id": p })).await;
    let renamed = app.data(one, json!({ "id": p })).await;
    assert_eq!(renamed["profile"]["name"], "Harbor Arts Council");
    assert_eq!(
        renamed["profileByEin"],
        Value::Null,
        "lookup by the old EIN invalidated"
    );
    assert_eq!(
        app.data(lookup, json!({ "id": o })).await["opportunity"]["profile"]["name"],
        "Harbor Arts Council",
        "parent via loader invalidated"
    );

    app.data(
        "mutation($id: ID!) { deleteOpportunity(id: $id) }",
        json!({ "id": o }),
    )
    .await;
    assert_eq!(
        app.data(one, json!({ "id": p })).await["profile"]["opportunitiesCount"],
        0
    );
    assert_eq!(
        app.data(lookup, json!({ "id": o })).await["opportunity"],
        Value::Null
    );

    let o2 = create_opportunity(app, json!({ "profileId": p, "organizationName": "Mott" })).await;
    assert_eq!(
        app.data(lookup, json!({ "id": o2 })).await["opportunity"]["profile"]["name"],
        "Harbor Arts Council"
    );
    app.data(
        "mutation($id: ID!) { deleteProfile(id: $id) }",
        json!({ "id": p }),
    )
    .await;
    assert_eq!(
        app.data(one, json!({ "id": p })).await["profile"],
        Value::Null
    );
    assert_eq!(
        app.data(lookup, json!({ "id": o2 })).await["opportunity"],
        Value::Null,
        "cascaded delete invalidated"
    );
    let gone = app.data(empty, Value::Null).await;
    assert_eq!(
        (
            gone["profiles"]["totalCount"].clone(),
            gone["opportunities"]["totalCount"].clone()
        ),
        (json!(0), json!(0))
    );

    let batch = app
        .data(
            "mutation { createProfiles(inputs: [{ name: \"B1\" }, { name: \"B2\" }]) { id } }",
            Value::Null,
        )
        .await;
    assert_eq!(
        app.data(empty, Value::Null).await["profiles"]["totalCount"],
        2
    );
    let owner = batch["createProfiles"][0]["id"].as_str().unwrap();
    let q = "query($id: ID!) { profile(id: $id) { opportunitiesCount } }";
    assert_eq!(
        app.data(q, json!({ "id": owner })).await["profile"]["opportunitiesCount"],
        0
    );
    app.data(
        "mutation($id: ID!) { createOpportunities(inputs: [{ profileId: $id, organizationName: \"X\" }, { profileId: $id, organizationName: \"Y\" }]) { id } }",
        json!({ "id": owner }),
    )
    .await;
    assert_eq!(
        app.data(q, json!({ "id": owner })).await["profile"]["opportunitiesCount"],
        2
    );
}
on_both!(
    writes_invalidate_what_they_affect_,
    writes_invalidate_what_they_affect
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_after_their_ttl() {
    let cache = CacheConfig {
        cache_ttl_secs: 1,
        ..cache_on()
    };
    let app = spawn_with(Backend::Sqlite, ApiConfig::default(), cache)
        .await
        .unwrap();
    seed(&app, 5, 1).await;
    let q = "{ profiles(first: 5) { totalCount } }";
    app.data(q, Value::Null).await;
    assert_eq!(
        app.statements_of(app.data(q, Value::Null)).await.1,
        0,
        "cached"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        app.statements_of(app.data(q, Value::Null)).await.1 > 0,
        "expired after 1 s"
    );
    assert!(stats(&app).await["expirations"].as_u64().unwrap() > 0);
    app.finish().await;
}

/// A SQLite server with the cache on and `ttl` for every field.
async fn spawn_with_ttl(ttl: Duration) -> TestApp {
    let cache = CacheConfig {
        cache_ttl_secs: ttl.as_secs(),
        ..cache_on()
    };
    spawn_with(Backend::Sqlite, ApiConfig::default(), cache)
        .await
        .unwrap()
}

/// Renames a profile in SQL, unseen by the server: only the TTL can end
/// what it has cached.
/// A seed or an import made by another process (here: another pool on the
/// same database, as `catalynx seed` opens) is seen within a moment, where
/// the TTL would have kept the old answers for minutes; and the answers are
/// cached again after.
async fn writes_made_outside_the_server_are_seen_within_a_moment(backend: Backend) {
    let Some(app) = spawn_with(backend, ApiConfig::default(), cache_on()).await else {
        return;
    };
    let total =
        || async { app.data(NESTED_PAGE, Value::Null).await["profiles"]["totalCount"].clone() };
    assert_eq!(total().await, 0);
    let (_, warm) = app.statements_of(total()).await;
    assert_eq!(warm, 0, "the repeat is cached");

    let elsewhere = catalynx::db::Db::connect(&catalynx::config::DbConfig::new(app.database_url()))
        .await
        .unwrap();
    let plan = catalynx::seed::SeedPlan {
        profiles: 20,
        opportunities_per_profile: 2,
        seed: 7,
    };
    catalynx::seed::seed(&elsewhere, plan, false).await.unwrap();
    elsewhere.close().await.unwrap();
    // The default list leaves archived profiles out.
    let listed = json!(
        app.scalar("SELECT COUNT(*) FROM profiles WHERE status <> 'archived'")
            .await
    );
    assert!(listed.as_i64().unwrap() > 0);

    let started = Instant::now();
    while total().await != listed {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the seed is still not seen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    total().await;
    let (seen, warm) = app.statements_of(total()).await;
    assert_eq!((seen, warm), (listed, 0), "cached again");
    app.finish().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_outside_the_server_are_seen_within_a_moment_on_sqlite() {
    writes_made_outside_the_server_are_seen_within_a_moment(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_outside_the_server_are_seen_within_a_moment_on_postgres() {
    writes_made_outside_the_server_are_seen_within_a_moment(Backend::Postgres).await;
}

async fn rename_behind_the_servers_back(app: &TestApp, id: &str, name: &str) {
    use sea_orm::ConnectionTrait;
    app.db
        .write
        .execute_unprepared(&format!(
            "UPDATE profiles SET name = '{name}' WHERE id = '{id}'"
        ))
        .await
        .unwrap();
}

/// A whole response is not kept past the TTL of the oldest cached value it
/// was made of: the TTL counts from the database read, not from the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_lives_no_longer_than_the_values_it_was_made_of() {
    let ttl = Duration::from_secs(2);
    let app = spawn_with_ttl(ttl).await;
    let id = create_profile(&app, json!({ "name": "Read Once" })).await;
    let one = "query($id: ID!) { profile(id: $id) { name } }";
    let name = |body: Value| body["profile"]["name"].as_str().unwrap().to_owned();
    // Read from the database no later than `read`.
    assert_eq!(name(app.data(one, json!({ "id": id })).await), "Read Once");
    let read = Instant::now();
    rename_behind_the_servers_back(&app, &id, "Read Again").await;
    // Another text, the same resolver entry: a response made of a value
    // read ~0.8 s ago, and kept.
    let other = format!("{one} # another text");
    tokio::time::sleep_until((read + Duration::from_millis(800)).into()).await;
    assert_eq!(
        name(app.data(&other, json!({ "id": id })).await),
        "Read Once",
        "the cached value (the test needs it to be read within the TTL)"
    );
    // Past the TTL of that value: neither it nor the response made of it.
    tokio::time::sleep_until((read + ttl + Duration::from_millis(300)).into()).await;
    assert_eq!(
        name(app.data(&other, json!({ "id": id })).await),
        "Read Again",
        "served more than the TTL after it was read from the database"
    );
    app.finish().await;
}

/// The same through a DataLoader, whose loads run in a task of their own:
/// a response made of a fresh opportunity and an older cached profile (its
/// parent, batched) lives no longer than that profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_lives_no_longer_than_the_values_its_loaders_used() {
    let ttl = Duration::from_secs(2);
    let app = spawn_with_ttl(ttl).await;
    let profile = create_profile(&app, json!({ "name": "Read Once" })).await;
    let opportunity = create_opportunity(
        &app,
        json!({ "profileId": profile, "organizationName": "Mott" }),
    )
    .await;
    let q = "query($id: ID!) { opportunity(id: $id) { organizationName profile { name } } }";
    let vars = json!({ "id": opportunity });
    let name = |body: Value| {
        body["opportunity"]["profile"]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(name(app.data(q, vars.clone()).await), "Read Once");
    let read = Instant::now();
    rename_behind_the_servers_back(&app, &profile, "Read Again").await;
    tokio::time::sleep_until((read + Duration::from_millis(800)).into()).await;
    // A write to the opportunity only: it is read again, its profile is not.
    app.data(
        "mutation($id: ID!) { updateOpportunity(id: $id, input: { organizationName: \"Kresge\" }) { id } }",
        vars.clone(),
    )
    .await;
    let other = format!("{q} # another text");
    let body = app.data(&other, vars.clone()).await;
    assert_eq!(body["opportunity"]["organizationName"], "Kresge");
    assert_eq!(
        name(body),
        "Read Once",
        "the cached profile (the test needs it to be read within the TTL)"
    );
    tokio::time::sleep_until((read + ttl + Duration::from_millis(300)).into()).await;
    assert_eq!(
        name(app.data(&other, vars).await),
        "Read Again",
        "served more than the TTL after it was read from the database"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_ttl_overrides_the_default() {
    let cache = CacheConfig {
        cache_ttl_secs: 300,
        cache_field_ttl: catalynx::config::FieldTtls(vec![(
            "profiles.totalCount".into(),
            Duration::from_secs(1),
        )]),
        ..cache_on()
    };
    let app = spawn_with(Backend::Sqlite, ApiConfig::default(), cache)
        .await
        .unwrap();
    seed(&app, 5, 1).await;
    let q = "{ profiles(first: 5) { totalCount nodes { name } } }";
    app.data(q, Value::Null).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Only the total expired: one statement, the count.
    assert_eq!(app.statements_of(app.data(q, Value::Null)).await.1, 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_bytes_stay_within_the_bound() {
    let max = 48 * 1024;
    let cache = CacheConfig {
        cache_max_bytes: max,
        ..cache_on()
    };
    let app = spawn_with(Backend::Sqlite, ApiConfig::default(), cache)
        .await
        .unwrap();
    seed(&app, 200, 3).await;
    for first in 1..=60 {
        app.data(
            &format!("{{ profiles(first: {first}) {{ nodes {{ name missionStatement }} }} }}"),
            Value::Null,
        )
        .await;
    }
    let s = stats(&app).await;
    assert!(s["storedBytes"].as_u64().unwrap() <= max, "{s}");
    assert!(s["evictions"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["maxBytes"].as_u64().unwrap(), max);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_on_one_key_load_once() {
    let app = spawn_with(Backend::Sqlite, ApiConfig::default(), cache_on())
        .await
        .unwrap();
    seed(&app, 300, 2).await;
    let q = json!({ "query": "{ profiles(first: 100, orderBy: [{field: OPPORTUNITIES_COUNT}]) { totalCount } }" });
    let before = app.db.statement_count();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, q) = (app.client.clone(), app.url("/graphql"), q.clone());
        requests.spawn(async move {
            client
                .post(url)
                .json(&q)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        });
    }
    let answers = requests.join_all().await;
    let sent = app.db.statement_count() - before;
    assert!(
        answers
            .windows(2)
            .all(|w| w[0] == w[1] && w[0].get("errors").is_none()),
        "{answers:?}"
    );
    // One page (plus its counts) and one total, however many asked at once.
    assert!(
        sent <= 3,
        "16 concurrent identical requests sent {sent} statements"
    );
    app.finish().await;
}

/// Writers and readers in parallel for a few seconds: once a write is
/// acknowledged, no later read may return older data.
async fn no_stale_read_after_a_write(backend: Backend) {
    let Some(app) = spawn_with(backend, ApiConfig::default(), cache_on()).await else {
        return;
    };
    let app = Arc::new(app);
    let p = create_profile(&app, json!({ "name": "v0" })).await;
    let acked_version = Arc::new(AtomicU64::new(0));
    let acked_count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stale = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let q = "query($id: ID!) { profile(id: $id) { name opportunitiesCount opportunities(first: 50) { totalCount } } profiles(first: 5) { nodes { name opportunitiesCount } } }";

    let mut readers = Vec::new();
    for _ in 0..4 {
        let (app, p, acked_version, acked_count, stop, stale, reads) = (
            app.clone(),
            p.clone(),
            acked_version.clone(),
            acked_count.clone(),
            stop.clone(),
            stale.clone(),
            reads.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                // What was acknowledged before this read began.
                let min_version = acked_version.load(Ordering::Acquire);
                let min_count = acked_count.load(Ordering::Acquire);
                let data = app.data(q, json!({ "id": p })).await;
                let version: u64 = data["profile"]["name"].as_str().unwrap()[1..]
                    .parse()
                    .unwrap();
                let listed: u64 = data["profiles"]["nodes"][0]["name"].as_str().unwrap()[1..]
                    .parse()
                    .unwrap();
                let count = data["profile"]["opportunitiesCount"].as_u64().unwrap();
                let total = data["profile"]["opportunities"]["totalCount"]
                    .as_u64()
                    .unwrap();
                let listed_count = data["profiles"]["nodes"][0]["opportunitiesCount"]
                    .as_u64()
                    .unwrap();
                if version < min_version
                    || listed < min_version
                    || count < min_count
                    || total < min_count
                    || listed_count < min_count
                {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let mut version = 0;
    let mut count = 0;
    while started.elapsed() < Duration::from_secs(3) {
        version += 1;
        app.data("mutation($id: ID!, $n: String!) { updateProfile(id: $id, input: { name: $n }) { id } }", json!({ "id": p, "n": format!("v{version}") }))
            .await;
        acked_version.store(version, Ordering::Release);
        create_opportunity(
            &app,
            json!({ "profileId": p, "organizationName": format!("F{version}") }),
        )
        .await;
        count += 1;
        acked_count.store(count, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        r.await.unwrap();
    }
    let (reads, stale) = (reads.load(Ordering::Relaxed), stale.load(Ordering::Relaxed));
    eprintln!("{backend:?}: {version} writes, {reads} reads, {stale} stale");
    assert!(
        reads > 20 && version > 5,
        "too little load to show anything: {reads} reads, {version} writes"
    );
    assert_eq!(stale, 0, "reads older than an acknowledged write");
    Arc::try_unwrap(app)
        .ok()
        .expect("readers done")
        .finish()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stale_read_after_a_write_on_sqlite() {
    no_stale_read_after_a_write(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stale_read_after_a_write_on_postgres() {
    no_stale_read_after_a_write(Backend::Postgres).await;
}

fn with_dir(dir: &std::path::Path) -> CacheConfig {
    CacheConfig {
        cache_dir: Some(dir.to_owned()),
        ..cache_on()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_directory_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(Backend::Sqlite, ApiConfig::default(), with_dir(dir.path()))
        .await
        .unwrap();
    seed(&app, 30, 4).await;
    let (cold, sent) = app.statements_of(app.data(NESTED_PAGE, Value::Null)).await;
    assert!(sent > 0);
    let app = app
        .restart(ApiConfig::default(), with_dir(dir.path()))
        .await;
    let (warm, sent) = app.statements_of(app.data(NESTED_PAGE, Value::Null)).await;
    assert_eq!(sent, 0, "answered from the cache directory after a restart");
    assert_eq!(cold, warm);
    let s = stats(&app).await;
    assert!(s["hits"].as_u64().unwrap() + s["responseHits"].as_u64().unwrap() > 0);

    // A change made while the server is down makes the next start cold.
    let renamed = "Renamed While Down";
    let first = cold["profiles"]["nodes"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = app
        .restart_after(ApiConfig::default(), with_dir(dir.path()), |db| async move {
            use sea_orm::ConnectionTrait;
            let sql = format!("UPDATE profiles SET name = '{renamed}', updated_at = '2099-01-01T00:00:00+00:00' WHERE name = '{first}'");
            db.write.execute_unprepared(&sql).await.unwrap();
        })
        .await;
    let (fresh, sent) = app.statements_of(app.data(NESTED_PAGE, Value::Null)).await;
    assert!(
        sent > 0,
        "the fingerprint changed: the directory was not trusted"
    );
    assert!(fresh.to_string().contains(renamed));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_unwritable_cache_directories_degrade_to_misses() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(Backend::Sqlite, ApiConfig::default(), with_dir(dir.path()))
        .await
        .unwrap();
    seed(&app, 10, 2).await;
    let expected = app.data(NESTED_PAGE, Value::Null).await;
    // A clean stop seals the directory; then every entry file is damaged.
    let app = app
        .restart(ApiConfig::default(), with_dir(dir.path()))
        .await;
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|e| e == "entry") {
            let data = std::fs::read(&path).unwrap();
            let mut damaged = data.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 0xFF;
            damaged.truncate(data.len() - 3);
            std::fs::write(&path, damaged).unwrap();
        }
    }
    std::fs::write(dir.path().join("stray.entry"), b"foreign bytes").unwrap();
    let app = app
        .restart(ApiConfig::default(), with_dir(dir.path()))
        .await;
    assert_eq!(
        app.data(NESTED_PAGE, Value::Null).await,
        expected,
        "corrupt files are misses, never errors"
    );

    // A directory that cannot be created: the server still serves.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let app = app
        .restart(ApiConfig::default(), with_dir(&blocker.join("cache")))
        .await;
    assert_eq!(app.data(NESTED_PAGE, Value::Null).await, expected);
    app.finish().await;
}
