//! The soak: the real binary under sustained load on loopback, 90% reads and
//! 10% writes with the resolver cache on. Opt-in (it takes a minute):
//!
//! ```sh
//! cargo test --release --test api soak -- --ignored --nocapture
//! ```
//!
//! `CATALYNX_SOAK_SECS` (default 60) and `CATALYNX_SOAK_CONNECTIONS`
//! (default 64) change the run. It fails on any 5xx, any acknowledged insert
//! missing at the end, any read that misses a write acknowledged before the
//! read began, or resident memory at the end more than 20% above its level
//! after the warm-up.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{Binary, EDITOR_KEY};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What the load saw, shared by every connection.
#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    writes: AtomicU64,
    server_errors: AtomicU64,
    shed: AtomicU64,
    other_failures: AtomicU64,
    stale: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u32>>,
    acknowledged: std::sync::Mutex<Vec<String>>,
    first_problem: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn problem(&self, what: String) {
        self.first_problem.lock().unwrap().get_or_insert(what);
    }
}

/// Opportunities acknowledged per profile: a read that starts after an
/// acknowledgement must count at least that many.
struct Profiles {
    ids: Vec<String>,
    acknowledged: Vec<AtomicUsize>,
    seeded: Vec<usize>,
}

const PROFILE_READ: &str = "query($id: ID!) { profile(id: $id) { opportunitiesCount opportunities(first: 5) { totalCount nodes { id overallScore } } } }";
const LIST: &str = "query($after: String) { profiles(first: 20, after: $after) { totalCount pageInfo { endCursor } nodes { id name opportunitiesCount } } }";
const FILTERED: &str = "query($id: ID!) { opportunities(filter: { profileIds: [$id] }, first: 10) { totalCount nodes { id organizationName } } }";
const INSERT: &str =
    "mutation($input: CreateOpportunityInput!) { createOpportunity(input: $input) { id } }";

async fn connection(
    n: usize,
    base: String,
    until: Instant,
    profiles: Arc<Profiles>,
    tally: Arc<Tally>,
) {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    // Each connection writes to a profile of its own, so it also knows the
    // exact count that profile must have.
    let own = n % profiles.ids.len();
    let mut written = 0usize;
    while Instant::now() < until {
        let write = rng.random_bool(0.1);
        let target = if rng.random_bool(0.5) {
            own
        } else {
            rng.random_range(0..profiles.ids.len())
        };
        let (query, variables) = if write {
            let input = json!({
                "profileId": profiles.ids[own],
                "organizationName": format!("Soak {n} #{written}"),
                "overallScore": rng.random_range(0.0..1.0),
                "tags": ["soak"],
            });
            (INSERT, json!({ "input": input }))
        } else {
            match rng.random_range(0..3) {
                0 => (PROFILE_READ, json!({ "id": profiles.ids[target] })),
                1 => (FILTERED, json!({ "id": profiles.ids[target] })),
                _ => (LIST, json!({ "after": Value::Null })),
            }
        };
        let floor = profiles.seeded[target] + profiles.acknowledged[target].load(Ordering::SeqCst);
        let started = Instant::now();
        let response = client
            .post(format!("{base}/graphql"))
            .bearer_auth(EDITOR_KEY)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await;
        let took = started.elapsed();
        tally
            .latencies_us
            .lock()
            .unwrap()
            .push(took.as_micros().min(u32::MAX as u128) as u32);
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tally.other_failures.fetch_add(1, Ordering::Relaxed);
                tally.problem(format!("no answer: {e}"));
                continue;
            }
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.as_u16() == 503 {
            tally.shed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if status.is_server_error() {
            tally.server_errors.fetch_add(1, Ordering::Relaxed);
            tally.problem(format!("{status}: {body}"));
            continue;
        }
        if !status.is_success() || body.get("errors").is_some() {
            tally.other_failures.fetch_add(1, Ordering::Relaxed);
            tally.problem(format!("{status}: {body}"));
            continue;
        }
        if write {
            tally.writes.fetch_add(1, Ordering::Relaxed);
            let id = body["data"]["createOpportunity"]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            tally.acknowledged.lock().unwrap().push(id);
            profiles.acknowledged[own].fetch_add(1, Ordering::SeqCst);
            written += 1;
            continue;
        }
        tally.reads.fetch_add(1, Ordering::Relaxed);
        let seen = match query {
            PROFILE_READ => body["data"]["profile"]["opportunitiesCount"].as_u64(),
            FILTERED => body["data"]["opportunities"]["totalCount"].as_u64(),
            _ => None,
        };
        if let Some(seen) = seen
            && (seen as usize) < floor
        {
            tally.stale.fetch_add(1, Ordering::Relaxed);
            tally.problem(format!(
                "stale: {seen} < {floor} acknowledged for profile {target}"
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a minute of load: cargo test --release --test api soak -- --ignored --nocapture"]
async fn soak() {
    let secs = env_or("CATALYNX_SOAK_SECS", 60);
    let connections = env_or("CATALYNX_SOAK_CONNECTIONS", 64) as usize;
    let warm_up = Duration::from_secs((secs / 6).max(1));

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("soak.db").display());
    let keys = format!("editor={EDITOR_KEY}");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("CATALYNX_API_KEYS", keys.as_str()),
        ("CATALYNX_LOG", "warn,catalynx::server=info"),
    ];
    let mut seed = Binary::start(
        &[
            "seed",
            "--profiles",
            "2000",
            "--opportunities-per-profile",
            "20",
            "--quiet",
        ],
        &env,
        None,
    );
    assert!(seed.child.wait().unwrap().success());
    let server = Binary::start(&["serve", "--listen", "127.0.0.1:0"], &env, None);
    let base = server.url("");
    let pid = server.child.id();

    // The profiles the load works on, with their opportunity counts now.
    let client = reqwest::Client::new();
    let body = query(
        &client,
        &base,
        "{ profiles(first: 200, filter: { includeArchived: true }) { nodes { id opportunitiesCount } } }",
    )
    .await;
    let nodes = body["data"]["profiles"]["nodes"].as_array().unwrap();
    let profiles = Arc::new(Profiles {
        ids: nodes
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect(),
        acknowledged: nodes.iter().map(|_| AtomicUsize::new(0)).collect(),
        seeded: nodes
            .iter()
            .map(|n| n["opportunitiesCount"].as_u64().unwrap() as usize)
            .collect(),
    });
    let before = query(&client, &base, "{ opportunities { totalCount } }").await["data"]
        ["opportunities"]["totalCount"]
        .as_i64()
        .unwrap();

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let load: Vec<_> = (0..connections)
        .map(|n| {
            tokio::spawn(connection(
                n,
                base.clone(),
                until,
                profiles.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(warm_up).await;
    let rss_warm = rss_kib(pid);
    let mut rss_peak = rss_warm;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_peak = rss_peak.max(rss_kib(pid));
    }
    for task in load {
        task.await.unwrap();
    }
    let rss_end = rss_kib(pid);
    let elapsed = started.elapsed().as_secs_f64();
    drop(server);

    // Every acknowledged insert is in the database, counted by id.
    let db = catalynx::db::Db::connect(&catalynx::config::DbConfig::new(url.as_str()))
        .await
        .unwrap();
    let ids: HashSet<String> = {
        use sea_orm::{EntityTrait, QuerySelect};
        entity::opportunity::Entity::find()
            .select_only()
            .column(entity::opportunity::Column::Id)
            .into_tuple::<String>()
            .all(&db.read)
            .await
            .unwrap()
            .into_iter()
            .collect()
    };
    let acknowledged = tally.acknowledged.lock().unwrap().clone();
    let lost = acknowledged.iter().filter(|id| !ids.contains(*id)).count();

    let mut latencies = tally.latencies_us.lock().unwrap().clone();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let (reads, writes) = (
        tally.reads.load(Ordering::Relaxed),
        tally.writes.load(Ordering::Relaxed),
    );
    eprintln!(
        "soak: {secs} s, {connections} connections: {} requests ({:.0}/s), {reads} reads, {writes} writes \
         ({:.1}% writes); latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; 5xx {}, shed (503) {}, other failures {}; \
         stale reads {}; acknowledged inserts {}, lost {lost}, rows {} (before {before}); \
         RSS after warm-up {} MiB, peak {} MiB, end {} MiB ({:+.1}%)",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        100.0 * writes as f64 / (reads + writes).max(1) as f64,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        tally.server_errors.load(Ordering::Relaxed),
        tally.shed.load(Ordering::Relaxed),
        tally.other_failures.load(Ordering::Relaxed),
        tally.stale.load(Ordering::Relaxed),
        acknowledged.len(),
        ids.len(),
        rss_warm / 1024,
        rss_peak / 1024,
        rss_end / 1024,
        100.0 * (rss_end as f64 / rss_warm as f64 - 1.0),
    );
    if let Some(problem) = tally.first_problem.lock().unwrap().as_ref() {
        eprintln!("first problem: {problem}");
    }
    assert_eq!(
        tally.server_errors.load(Ordering::Relaxed),
        0,
        "5xx answers"
    );
    assert_eq!(
        tally.shed.load(Ordering::Relaxed),
        0,
        "shed below the concurrency limit"
    );
    assert_eq!(
        tally.other_failures.load(Ordering::Relaxed),
        0,
        "failed requests"
    );
    assert_eq!(tally.stale.load(Ordering::Relaxed), 0, "stale reads");
    assert_eq!(lost, 0, "acknowledged inserts missing");
    assert_eq!(
        ids.len() as i64,
        before + acknowledged.len() as i64,
        "rows = before + acknowledged"
    );
    assert!(
        rss_end as f64 <= rss_warm as f64 * 1.2,
        "RSS grew from {rss_warm} KiB to {rss_end} KiB"
    );
}

/// The answer to an unauthenticated read, for the test's own bookkeeping.
async fn query(client: &reqwest::Client, base: &str, query: &str) -> Value {
    client
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
