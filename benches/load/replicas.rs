//! Scale-out (`--replicas REDIS_URL`): two replicas of the release binary,
//! started as child processes on the run's PostgreSQL database with the
//! shared Redis tier, measured three ways:
//!
//! 1. throughput of one replica against two (requests taking turns between
//!    the replicas), for the warm nested page and the 90/10 mix, in
//!    interleaved rounds; and of one replica without Redis, for what the
//!    shared tier costs a request;
//! 2. the latency of one `profile(id)` read, one connection, by where its
//!    answer came from: the database, Redis (filled through the other
//!    replica), the replica's own resolver cache, its whole-response tier;
//!    the servers' cache counters and Redis's command counters over each
//!    category say that it is what it claims;
//! 3. how long after a write is acknowledged on one replica the other one
//!    answers with the new value.
//!
//! The server's Redis keys are fixed `clx:*` names, so the URL must name a
//! database of the benchmark's own (e.g. `redis://127.0.0.1:6379/5`); the
//! `clx:*` keys there are deleted before and after the run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use catalynx::config::DbConfig;
use catalynx::db::Db;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::child::ChildServer;
use crate::drive::{self, Target, Workload};
use crate::scenarios::{self, PROFILE_BY_ID, Timing};

/// Profiles read per latency category (half filled through each replica).
const LATENCY_IDS: usize = 400;
/// Writes in the invalidation-delay measurement.
const WRITES: usize = 200;
/// A replica still stale this long after the write counts as never fresh.
const FRESH_TIMEOUT: Duration = Duration::from_secs(5);

const UPDATE_NAME: &str =
    "mutation($id: ID!, $name: String!) { updateProfile(id: $id, input: { name: $name }) { id } }";
const PROFILE_NAME: &str = "query($id: ID!) { profile(id: $id) { name } }";
const CACHE_STATS: &str = "{ cacheStats { hits misses responseHits invalidated } }";

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub redis_url: String,
    pub connections: usize,
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Latency>,
    pub invalidation: Invalidation,
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub label: &'static str,
    pub replicas: usize,
    pub redis: bool,
    pub rounds_requests_per_second: Vec<f64>,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Resolver-cache hits over lookups, over both replicas.
    pub hit_ratio: Option<f64>,
    /// Whole responses sent again, per request.
    pub response_hits_per_request: f64,
}

/// Server and Redis counters over one latency category, per request.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Evidence {
    pub resolver_hits: f64,
    pub resolver_misses: f64,
    pub response_hits: f64,
    pub redis_get: f64,
    pub redis_set: f64,
    /// Epoch reads (`MGET clx:epoch clx:instance`).
    pub redis_mget: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub label: &'static str,
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub per_request: Evidence,
}

#[derive(Clone, Debug, Serialize)]
pub struct Invalidation {
    pub writes: usize,
    /// From the write's acknowledgement on A to the end of B's first read
    /// that returned the new value.
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    /// Writes whose very first read on B afterwards was already fresh.
    pub first_read_fresh: usize,
    pub max_reads_until_fresh: usize,
    /// Writes not seen on B within `FRESH_TIMEOUT`.
    pub never_fresh: usize,
    pub write_p50_ms: f64,
    /// Whole-response hits on B over the writes: the read before each write
    /// is one (B held the old answer in its fastest tier).
    pub b_response_hits: u64,
    /// Resolver entries B found outdated.
    pub b_invalidated: u64,
}

/// Checks that `url` names a Redis database (`redis://HOST:PORT/N`).
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .context("--replicas: expected a URL like redis://127.0.0.1:6379/5")?;
    let db = rest
        .split('?')
        .next()
        .and_then(|r| r.split_once('/'))
        .map(|(_, db)| db)
        .unwrap_or("");
    anyhow::ensure!(
        !db.is_empty() && db.bytes().all(|b| b.is_ascii_digit()),
        "--replicas {url}: name a Redis database of the benchmark's own, e.g. redis://127.0.0.1:6379/5 \
         (the server's keys are fixed clx:* names, which the benchmark deletes there before and after the run)"
    );
    Ok(())
}

/// Deletes the server's `clx:*` keys in the benchmark's Redis database.
async fn clear_redis(url: &str) -> anyhow::Result<u64> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
        .context("--replicas: cannot connect to Redis")?;
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("clx:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
            deleted += n;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(deleted)
}

/// Calls of each Redis command so far (`INFO commandstats`), server-wide.
async fn redis_calls(conn: &mut redis::aio::MultiplexedConnection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// An HTTP client for single requests to the replicas, with the API key.
struct Client {
    http: reqwest::Client,
    key: String,
}

impl Client {
    async fn gql(&self, addr: SocketAddr, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body: Value = self
            .http
            .post(format!("http://{addr}/graphql"))
            .bearer_auth(&self.key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(body.get("errors").is_none(), "GraphQL errors: {body}");
        Ok(body["data"].clone())
    }

    /// One read, timed from sending to the whole body.
    async fn timed(
        &self,
        addr: SocketAddr,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<(u32, Value)> {
        let started = Instant::now();
        let data = self.gql(addr, query, variables).await?;
        Ok((micros(started.elapsed()), data))
    }

    async fn stats(&self, addr: SocketAddr) -> anyhow::Result<Value> {
        Ok(self.gql(addr, CACHE_STATS, Value::Null).await?["cacheStats"].take())
    }

    async fn redis_up(&self, addr: SocketAddr) -> anyhow::Result<bool> {
        let text = self
            .http
            .get(format!("http://{addr}/metrics"))
            .bearer_auth(&self.key)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text.contains("catalynx_cache_redis_up 1"))
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Counters of both replicas and of Redis at one moment.
struct Snapshot {
    hits: u64,
    misses: u64,
    response_hits: u64,
    redis: HashMap<String, u64>,
}

impl Snapshot {
    async fn take(
        client: &Client,
        addrs: &[SocketAddr],
        redis: &mut redis::aio::MultiplexedConnection,
    ) -> anyhow::Result<Self> {
        let (mut hits, mut misses, mut response_hits) = (0, 0, 0);
        for &addr in addrs {
            let s = client.stats(addr).await?;
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            hits += n("hits");
            misses += n("misses");
            response_hits += n("responseHits");
        }
        // Read last, so the cacheStats requests above fall before it.
        let redis = redis_calls(redis).await;
        Ok(Self {
            hits,
            misses,
            response_hits,
            redis,
        })
    }

    fn redis_delta(&self, before: &Self, command: &str) -> u64 {
        let get = |s: &Self| s.redis.get(command).copied().unwrap_or(0);
        get(self).saturating_sub(get(before))
    }
}

/// Runs the three measurements on `pg_url` with two fresh replicas.
pub fn run(
    pg_url: &str,
    redis_url: &str,
    connections: usize,
    client_rt: &Runtime,
    timing: &Timing,
) -> anyhow::Result<Report> {
    check_url(redis_url)?;
    let deleted = client_rt.block_on(clear_redis(redis_url))?;
    if deleted > 0 {
        eprintln!("replicas: deleted {deleted} clx:* keys left in {redis_url}");
    }
    let (profile_ids, opportunity_ids) = client_rt.block_on(async {
        let db = Db::connect(&DbConfig::new(pg_url)).await?;
        let ids = crate::data::ids(&db, 20_000).await;
        db.close().await?;
        ids
    })?;
    let key = format!("bench-{:016x}", rand::random::<u64>());
    eprintln!("replicas: starting two release servers on {redis_url} and one without Redis");
    let a = ChildServer::replica(pg_url, Some(redis_url), &key)?;
    let b = ChildServer::replica(pg_url, Some(redis_url), &key)?;
    let alone = ChildServer::replica(pg_url, None, &key)?;
    let measured = measure(
        [a.addr, b.addr],
        alone.addr,
        &key,
        redis_url,
        Arc::new(profile_ids),
        Arc::new(opportunity_ids),
        connections,
        client_rt,
        timing,
    );
    if measured.is_err() {
        eprintln!(
            "replica A log:\n{}\nreplica B log:\n{}",
            a.log_tail(),
            b.log_tail()
        );
    }
    drop((a, b));
    client_rt.block_on(clear_redis(redis_url))?;
    let (throughput, latency, invalidation) = measured?;
    Ok(Report {
        redis_url: redis_url.to_owned(),
        connections,
        throughput,
        latency,
        invalidation,
    })
}

#[allow(clippy::too_many_arguments)]
fn measure(
    [a, b]: [SocketAddr; 2],
    alone: SocketAddr,
    key: &str,
    redis_url: &str,
    profile_ids: Arc<Vec<String>>,
    opportunity_ids: Arc<Vec<String>>,
    connections: usize,
    client_rt: &Runtime,
    timing: &Timing,
) -> anyhow::Result<(Vec<Throughput>, Vec<Latency>, Invalidation)> {
    let client = Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(60))
            .build()?,
        key: key.to_owned(),
    };
    client_rt.block_on(async {
        for addr in [a, b] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !client.redis_up(addr).await? {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "replica {addr} does not report catalynx_cache_redis_up 1"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        anyhow::Ok(())
    })?;
    // Fresh replicas and an empty Redis: the latency categories first, while
    // no profile has been read yet; then the writes; then the load.
    let mut rng = ChaCha8Rng::seed_from_u64(crate::data::SEED);
    let mut sample: Vec<String> = profile_ids.as_ref().clone();
    sample.shuffle(&mut rng);
    sample.truncate(LATENCY_IDS + 1);
    let written = sample.pop().context("no profiles")?;
    let latency = client_rt.block_on(latencies(&client, [a, b], redis_url, &sample))?;
    let invalidation = client_rt.block_on(invalidation(&client, [a, b], &written))?;
    let throughput = throughput(
        &client,
        [a, b],
        alone,
        key,
        scenarios::read_write_mix(profile_ids, opportunity_ids),
        connections,
        client_rt,
        timing,
    )?;
    Ok((throughput, latency, invalidation))
}

const CATEGORIES: [&str; 4] = [
    "miss: database (first read anywhere)",
    "Redis hit (filled via the other replica)",
    "local hit: resolver cache, same replica",
    "local hit: whole-response tier",
];

async fn latencies(
    client: &Client,
    [a, b]: [SocketAddr; 2],
    redis_url: &str,
    ids: &[String],
) -> anyhow::Result<Vec<Latency>> {
    let mut redis = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    // Open the keep-alive connections before anything is timed.
    for addr in [a, b] {
        client
            .http
            .get(format!("http://{addr}/ready"))
            .send()
            .await?;
    }
    // The same lookup under another query text: the response tier, keyed by
    // the text, misses; the resolver cache, keyed by field and id, does not.
    let other_text = format!("{PROFILE_BY_ID}\n# the same read, another text");
    let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); CATEGORIES.len()];
    let mut totals = vec![Evidence::default(); CATEGORIES.len()];
    // What the cacheStats requests of one snapshot add to Redis's counters.
    let s0 = Snapshot::take(client, &[a, b], &mut redis).await?;
    let s1 = Snapshot::take(client, &[a, b], &mut redis).await?;
    let overhead = |command: &str| s1.redis_delta(&s0, command);
    let (first, second) = ids.split_at(ids.len() / 2);
    for (fill, other, ids) in [(a, b, first), (b, a, second)] {
        let plan: [(SocketAddr, &str); 4] = [
            (fill, PROFILE_BY_ID),
            (other, PROFILE_BY_ID),
            (other, &other_text),
            (other, PROFILE_BY_ID),
        ];
        for (category, (addr, query)) in plan.into_iter().enumerate() {
            let before = Snapshot::take(client, &[a, b], &mut redis).await?;
            for id in ids {
                let (us, data) = client.timed(addr, query, json!({ "id": id })).await?;
                anyhow::ensure!(data["profile"]["id"] == json!(id), "profile {id}: {data}");
                latencies[category].push(us);
            }
            if category == 0 {
                // The fill's Redis writes run in the background: wait for them.
                let deadline = Instant::now() + Duration::from_secs(5);
                while redis_calls(&mut redis)
                    .await
                    .get("set")
                    .copied()
                    .unwrap_or(0)
                    < before.redis.get("set").copied().unwrap_or(0) + ids.len() as u64
                {
                    anyhow::ensure!(Instant::now() < deadline, "entries never reached Redis");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let after = Snapshot::take(client, &[a, b], &mut redis).await?;
            let t = &mut totals[category];
            t.resolver_hits += (after.hits - before.hits) as f64;
            t.resolver_misses += (after.misses - before.misses) as f64;
            t.response_hits += (after.response_hits - before.response_hits) as f64;
            for (field, command) in [
                (&mut t.redis_get, "get"),
                (&mut t.redis_set, "set"),
                (&mut t.redis_mget, "mget"),
            ] {
                *field += after
                    .redis_delta(&before, command)
                    .saturating_sub(overhead(command)) as f64;
            }
        }
    }
    Ok(CATEGORIES
        .iter()
        .zip(latencies)
        .zip(totals)
        .map(|((&label, mut l), t)| {
            l.sort_unstable();
            let n = l.len().max(1) as f64;
            Latency {
                label,
                requests: l.len(),
                p50_ms: drive::percentile_ms(&l, 50.0),
                p99_ms: drive::percentile_ms(&l, 99.0),
                mean_ms: l.iter().map(|&us| f64::from(us)).sum::<f64>() / n / 1000.0,
                per_request: Evidence {
                    resolver_hits: t.resolver_hits / n,
                    resolver_misses: t.resolver_misses / n,
                    response_hits: t.response_hits / n,
                    redis_get: t.redis_get / n,
                    redis_set: t.redis_set / n,
                    redis_mget: t.redis_mget / n,
                },
            }
        })
        .collect())
}

/// Renames one profile through A, then reads it through B until B answers
/// with the new name. Before each write B reads the profile, so its
/// resolver cache and its response tier hold the old answer.
async fn invalidation(
    client: &Client,
    [a, b]: [SocketAddr; 2],
    id: &str,
) -> anyhow::Result<Invalidation> {
    let before = client.stats(b).await?;
    let (mut delays, mut writes) = (Vec::new(), Vec::new());
    let (mut first_fresh, mut max_reads, mut never) = (0, 0, 0);
    for i in 0..WRITES {
        let name = format!("Scale Check {i}");
        client.gql(b, PROFILE_NAME, json!({ "id": id })).await?;
        let sent = Instant::now();
        client
            .gql(a, UPDATE_NAME, json!({ "id": id, "name": name }))
            .await?;
        let acked = Instant::now();
        writes.push(micros(acked - sent));
        let mut reads = 0;
        loop {
            let data = client.gql(b, PROFILE_NAME, json!({ "id": id })).await?;
            reads += 1;
            if data["profile"]["name"] == json!(name) {
                delays.push(micros(acked.elapsed()));
                if reads == 1 {
                    first_fresh += 1;
                }
                max_reads = max_reads.max(reads);
                break;
            }
            if acked.elapsed() > FRESH_TIMEOUT {
                never += 1;
                break;
            }
        }
    }
    let after = client.stats(b).await?;
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    delays.sort_unstable();
    writes.sort_unstable();
    Ok(Invalidation {
        writes: WRITES,
        delay_p50_ms: drive::percentile_ms(&delays, 50.0),
        delay_p99_ms: drive::percentile_ms(&delays, 99.0),
        delay_max_ms: drive::percentile_ms(&delays, 100.0),
        first_read_fresh: first_fresh,
        max_reads_until_fresh: max_reads,
        never_fresh: never,
        write_p50_ms: drive::percentile_ms(&writes, 50.0),
        b_response_hits: delta("responseHits"),
        b_invalidated: delta("invalidated"),
    })
}

/// Resolver hits, misses and whole-response hits, summed over replicas.
#[derive(Clone, Copy, Default)]
struct Counts {
    hits: u64,
    misses: u64,
    response_hits: u64,
}

impl Counts {
    async fn read(client: &Client, addrs: &[SocketAddr]) -> anyhow::Result<Self> {
        let mut sum = Self::default();
        for &addr in addrs {
            let s = client.stats(addr).await?;
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            sum.hits += n("hits");
            sum.misses += n("misses");
            sum.response_hits += n("responseHits");
        }
        Ok(sum)
    }

    fn since(self, before: Self) -> Self {
        Self {
            hits: self.hits - before.hits,
            misses: self.misses - before.misses,
            response_hits: self.response_hits - before.response_hits,
        }
    }
}

/// One replica against two, for the warm nested page and the 90/10 mix, and
/// one replica without Redis as the baseline, in interleaved rounds. (The
/// baseline's writes in the mix reach the database but not the Redis
/// replicas' caches; nothing here checks values, and the other parts ran
/// before.)
#[allow(clippy::too_many_arguments)]
fn throughput(
    client: &Client,
    [a, b]: [SocketAddr; 2],
    alone: SocketAddr,
    key: &str,
    mix: Workload,
    connections: usize,
    client_rt: &Runtime,
    timing: &Timing,
) -> anyhow::Result<Vec<Throughput>> {
    let baseline = Target::spread(&[alone], connections, Some(key));
    let one = Target::spread(&[a], connections, Some(key));
    let two = Target::spread(&[a, b], connections, Some(key));
    let page = drive::fixed(scenarios::nested_page(50));
    let plans: [(&'static str, usize, bool, &Target, &Workload); 6] = [
        ("nested page, cache on (warm)", 1, false, &baseline, &page),
        ("nested page, cache on (warm)", 1, true, &one, &page),
        ("nested page, cache on (warm)", 2, true, &two, &page),
        ("90/10 read/write mix, cache on", 1, false, &baseline, &mix),
        ("90/10 read/write mix, cache on", 1, true, &one, &mix),
        ("90/10 read/write mix, cache on", 2, true, &two, &mix),
    ];
    let setup = |replicas: usize, redis: bool| {
        format!(
            "{replicas} replica{}{}",
            if replicas == 1 { "" } else { "s" },
            if redis { " + Redis" } else { ", no Redis" }
        )
    };
    for (label, replicas, redis, target, workload) in &plans {
        eprintln!("replicas: warming up {label}, {}", setup(*replicas, *redis));
        client_rt.block_on(drive::run(target, workload, timing.warmup, 0));
    }
    let mut rounds: Vec<Vec<(drive::Round, Counts)>> = plans.iter().map(|_| Vec::new()).collect();
    for round in 0..timing.rounds {
        for ((label, replicas, redis, target, workload), results) in plans.iter().zip(&mut rounds) {
            eprintln!(
                "replicas round {}/{}: {label}, {}",
                round + 1,
                timing.rounds,
                setup(*replicas, *redis)
            );
            let addrs = [a, b, alone];
            let before = client_rt.block_on(Counts::read(client, &addrs))?;
            let measured = client_rt.block_on(drive::run(
                target,
                workload,
                timing.duration,
                round as u64 + 1,
            ));
            let after = client_rt.block_on(Counts::read(client, &addrs))?;
            results.push((measured, after.since(before)));
        }
    }
    Ok(plans
        .iter()
        .zip(rounds)
        .map(|((label, replicas, redis, _, _), results)| {
            let mut latencies = Vec::new();
            let (mut requests, mut errors) = (0, 0);
            let mut counts = Counts::default();
            let mut first_error = None;
            let mut per_round = Vec::new();
            for (round, c) in results {
                per_round.push(round.requests_per_second());
                requests += round.requests;
                errors += round.errors;
                counts.hits += c.hits;
                counts.misses += c.misses;
                counts.response_hits += c.response_hits;
                first_error = first_error.or(round.first_error);
                latencies.extend(round.latencies_us);
            }
            latencies.sort_unstable();
            let lookups = counts.hits + counts.misses;
            Throughput {
                label,
                replicas: *replicas,
                redis: *redis,
                requests_per_second: drive::median(&per_round),
                rounds_requests_per_second: per_round,
                p50_ms: drive::percentile_ms(&latencies, 50.0),
                p99_ms: drive::percentile_ms(&latencies, 99.0),
                requests,
                errors,
                first_error,
                hit_ratio: (lookups > 0).then(|| counts.hits as f64 / lookups as f64),
                response_hits_per_request: counts.response_hits as f64 / requests.max(1) as f64,
            }
        })
        .collect())
}

/// The replicas part as printed.
pub fn lines(r: &Report, cpus: usize) -> String {
    let mut out = format!(
        "replicas: release binaries as child processes, one PostgreSQL database, Redis {} \
         (cache on, in-process tier in front of Redis); both replicas and the load generator \
         share this machine's {cpus} CPUs, so 2 replicas cannot add CPU here\n",
        r.redis_url
    );
    out.push_str(&format!(
        "  {:<36} {:<20} {:>9} {:>8} {:>8}  {}\n",
        format!("throughput, {} connections", r.connections),
        "setup",
        "req/s",
        "p50 ms",
        "p99 ms",
        "notes"
    ));
    for t in &r.throughput {
        let mut notes = vec![format!("{} errors of {}", t.errors, t.requests)];
        if let Some(ratio) = t.hit_ratio {
            notes.push(format!("hit ratio {ratio:.2}"));
        }
        notes.push(format!(
            "{:.2} response hits/req",
            t.response_hits_per_request
        ));
        let setup = format!(
            "{} replica{}{}",
            t.replicas,
            if t.replicas == 1 { "" } else { "s" },
            if t.redis { " + Redis" } else { ", no Redis" }
        );
        out.push_str(&format!(
            "  {:<36} {:<20} {:>9.0} {:>8.2} {:>8.2}  {}\n",
            t.label,
            setup,
            t.requests_per_second,
            t.p50_ms,
            t.p99_ms,
            notes.join(", ")
        ));
    }
    let rps = |label: &str, n: usize, redis: bool| {
        r.throughput
            .iter()
            .find(|t| t.label.starts_with(label) && t.replicas == n && t.redis == redis)
            .map_or(f64::NAN, |t| t.requests_per_second)
    };
    out.push_str(&format!(
        "  req/s ratios: 2 replicas / 1 (both + Redis): nested page {:.2}, mix {:.2};   1 replica + Redis / no Redis: nested page {:.2}, mix {:.2}\n",
        rps("nested", 2, true) / rps("nested", 1, true),
        rps("90/10", 2, true) / rps("90/10", 1, true),
        rps("nested", 1, true) / rps("nested", 1, false),
        rps("90/10", 1, true) / rps("90/10", 1, false)
    ));
    out.push_str(&format!(
        "  {:<42} {:>5} {:>7} {:>7} {:>7}  {}\n",
        "profile(id), one connection",
        "reads",
        "p50 ms",
        "p99 ms",
        "mean",
        "per read: resolver hit/miss, response hit, Redis GET/SET/MGET"
    ));
    for l in &r.latency {
        let e = &l.per_request;
        out.push_str(&format!(
            "  {:<42} {:>5} {:>7.2} {:>7.2} {:>7.2}  {:.2}/{:.2}, {:.2}, {:.2}/{:.2}/{:.2}\n",
            l.label,
            l.requests,
            l.p50_ms,
            l.p99_ms,
            l.mean_ms,
            e.resolver_hits,
            e.resolver_misses,
            e.response_hits,
            e.redis_get,
            e.redis_set,
            e.redis_mget
        ));
    }
    let i = &r.invalidation;
    out.push_str(&format!(
        "  invalidation: {} renames acknowledged on A, then read on B until fresh: ack -> fresh read p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         first read already fresh {} of {} (most reads needed {}, never fresh {}); write p50 {:.2} ms; \
         B over the run: {} response hits, {} entries found invalidated\n",
        i.writes,
        i.delay_p50_ms,
        i.delay_p99_ms,
        i.delay_max_ms,
        i.first_read_fresh,
        i.writes,
        i.max_reads_until_fresh,
        i.never_fresh,
        i.write_p50_ms,
        i.b_response_hits,
        i.b_invalidated
    ));
    out
}
