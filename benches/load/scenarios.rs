//! The scenarios, each against an in-process server so that the
//! statement counter (`Db::statement_count`) and the cache counters can be
//! read directly; run in interleaved rounds.

use std::sync::Arc;
use std::time::Duration;

use catalynx::auth::ApiKeys;
use catalynx::config::{ApiConfig, CacheConfig, DbConfig, SecurityConfig, ServeConfig};
use catalynx::db::Db;
use catalynx::server::RunningServer;
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use tokio::runtime::Runtime;

use crate::drive::{self, Request, Target, Workload};

pub const NESTED_PAGE: &str = "query($n: Int!) { profiles(first: $n) { totalCount nodes { name opportunitiesCount opportunities(first: 5) { nodes { organizationName overallScore } } } } }";
pub const PROFILE_BY_ID: &str = "query($id: ID!) { profile(id: $id) { id name ein organizationType status city state annualRevenue missionStatement updatedAt } }";
const FILTERED_OPPORTUNITIES: &str = "{ opportunities(first: 50, filter: { stages: [QUALIFIED_PROSPECTS, CANDIDATES], closeDateFrom: \"2026-06-01\", closeDateTo: \"2026-08-31\" }, orderBy: [{ field: OVERALL_SCORE }]) { totalCount nodes { id organizationName overallScore closeDate currentStage } } }";
const UPDATE_OPPORTUNITY: &str = "mutation($id: ID!, $input: UpdateOpportunityInput!) { updateOpportunity(id: $id, input: $input) { id overallScore } }";
const CREATE_OPPORTUNITY: &str =
    "mutation($input: CreateOpportunityInput!) { createOpportunity(input: $input) { id } }";
const REST_PROFILES: &str = "/api/profiles?limit=50";

/// The nested page of `n` profiles, each with its count and top five.
pub fn nested_page(n: u32) -> Request {
    drive::graphql(NESTED_PAGE, json!({ "n": n }))
}

/// The key the read/write mix writes with; the benchmark's own servers only.
const EDITOR_KEY: &str = "bench-editor-key";

/// One in-process server and the clients that load it.
pub struct Server {
    pub running: RunningServer,
    pub target: Target,
}

impl Server {
    /// `writer`: the server takes writes, from clients sending the editor key.
    fn start(
        rt: &Runtime,
        db: Db,
        cache: bool,
        loaders: bool,
        connections: usize,
        writer: bool,
    ) -> anyhow::Result<Self> {
        let keys = ApiKeys::parse(&format!("editor={EDITOR_KEY}")).map_err(anyhow::Error::msg)?;
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse()?,
            api: ApiConfig {
                disable_loaders: !loaders,
                bench_routes: true,
                ..ApiConfig::default()
            },
            cache: CacheConfig {
                cache_enabled: cache,
                ..CacheConfig::default()
            },
            security: SecurityConfig {
                api_keys: writer.then_some(keys),
                ..SecurityConfig::default()
            },
            ..ServeConfig::default()
        };
        let running = rt.block_on(RunningServer::start(db, &config))?;
        let target = Target::spread(&[running.addr], connections, writer.then_some(EDITOR_KEY));
        Ok(Self { running, target })
    }

    pub fn statements(&self) -> u64 {
        self.running.state.db().statement_count()
    }
}

/// The servers of one backend: one per configuration the scenarios need.
pub struct Suite {
    pub backend: &'static str,
    pub uncached: Server,
    cached: Server,
    no_loaders: Server,
    mix: Server,
    profile_ids: Arc<Vec<String>>,
    opportunity_ids: Arc<Vec<String>>,
}

impl Suite {
    /// Starts the servers: `url` for the read-only scenarios, `mix_url` for
    /// the one that writes.
    pub fn start(
        rt: &Runtime,
        backend: &'static str,
        url: &str,
        mix_url: &str,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let connect = |url: &str| rt.block_on(Db::connect(&DbConfig::new(url)));
        let db = connect(url)?;
        let (profile_ids, opportunity_ids) = rt.block_on(crate::data::ids(&db, 20_000))?;
        Ok(Self {
            backend,
            uncached: Server::start(rt, db, false, true, connections, false)?,
            cached: Server::start(rt, connect(url)?, true, true, connections, false)?,
            no_loaders: Server::start(rt, connect(url)?, false, false, connections, false)?,
            mix: Server::start(rt, connect(mix_url)?, true, true, connections, true)?,
            profile_ids: Arc::new(profile_ids),
            opportunity_ids: Arc::new(opportunity_ids),
        })
    }

    pub fn stop(self, rt: &Runtime) -> anyhow::Result<()> {
        for server in [self.uncached, self.cached, self.no_loaders, self.mix] {
            rt.block_on(server.running.stop())?;
        }
        Ok(())
    }

    fn profile_by_id(&self) -> Workload {
        let ids = self.profile_ids.clone();
        Arc::new(move |rng| {
            let id = &ids[rng.random_range(0..ids.len())];
            drive::graphql(PROFILE_BY_ID, json!({ "id": id }))
        })
    }

    fn read_write_mix(&self) -> Workload {
        read_write_mix(self.profile_ids.clone(), self.opportunity_ids.clone())
    }
}

/// 90% reads (the nested page or a random profile, half each), 10% writes
/// (an update of a random opportunity's score or a new opportunity for a
/// random profile, half each). Scenario 6, and the replicas' mix.
pub fn read_write_mix(profiles: Arc<Vec<String>>, opportunities: Arc<Vec<String>>) -> Workload {
    let page = nested_page(50);
    Arc::new(move |rng| {
        let roll = rng.random_range(0..100);
        let score = f64::from(rng.random_range(0..=1000)) / 1000.0;
        match roll {
            0..45 => page.clone(),
            45..90 => {
                let id = &profiles[rng.random_range(0..profiles.len())];
                drive::graphql(PROFILE_BY_ID, json!({ "id": id }))
            }
            90..95 => {
                let id = &opportunities[rng.random_range(0..opportunities.len())];
                drive::graphql(
                    UPDATE_OPPORTUNITY,
                    json!({ "id": id, "input": { "overallScore": score } }),
                )
            }
            _ => {
                let id = &profiles[rng.random_range(0..profiles.len())];
                drive::graphql(
                    CREATE_OPPORTUNITY,
                    json!({ "input": { "profileId": id, "organizationName": "Load Test Foundation", "overallScore": score } }),
                )
            }
        }
    })
}

/// What a scenario measured over all rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub number: u32,
    pub label: &'static str,
    /// Set when the scenario could not run (e.g. the endpoint is missing).
    pub skipped: Option<String>,
    pub rounds_requests_per_second: Vec<f64>,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub statements_per_request: f64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Cache hits over lookups during the measured rounds.
    pub hit_ratio: Option<f64>,
    pub response_bytes: Option<usize>,
}

struct Plan<'a> {
    number: u32,
    label: &'static str,
    server: &'a Server,
    workload: Workload,
    skipped: Option<String>,
    response_bytes: Option<usize>,
}

/// Settings shared by every measurement.
#[derive(Clone)]
pub struct Timing {
    pub rounds: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Scenario numbers to run; empty for all.
    pub only: Vec<u32>,
}

/// Runs the scenarios in interleaved rounds.
pub fn run(
    suite: &Suite,
    server_rt: &Runtime,
    client_rt: &Runtime,
    timing: &Timing,
) -> anyhow::Result<Vec<Outcome>> {
    // Scenario 8 sends a body as large as scenario 2's answer.
    let page = nested_page(50);
    let (status, body) = client_rt.block_on(suite.cached.target.send(&page))?;
    anyhow::ensure!(
        status == 200 && !body.ends_with(b"]}"),
        "nested page failed: {}",
        String::from_utf8_lossy(&body)
    );
    let page_bytes = body.len();
    let compressed_page = page.clone().compressed();
    let (status, compressed) = client_rt.block_on(suite.uncached.target.send(&compressed_page))?;
    anyhow::ensure!(
        status == 200,
        "compressed nested page failed: HTTP {status}"
    );
    let ceiling: Arc<str> = format!("/bench/ceiling?bytes={page_bytes}").into();
    let rest: Arc<str> = REST_PROFILES.into();
    let (rest_status, _) =
        client_rt.block_on(suite.uncached.target.send(&Request::Get(rest.clone())))?;
    let rest_skipped = (rest_status == 404).then(|| "n/a (endpoint missing)".to_owned());
    let skip = |number: u32, reason: Option<String>| {
        reason.or_else(|| {
            (!timing.only.is_empty() && !timing.only.contains(&number))
                .then(|| "not run (--only)".to_owned())
        })
    };

    let plans = [
        Plan {
            number: 1,
            label: "nested page, cache off",
            server: &suite.uncached,
            workload: drive::fixed(page.clone()),
            skipped: skip(1, None),
            response_bytes: Some(page_bytes),
        },
        Plan {
            number: 2,
            label: "nested page, cache on (warm)",
            server: &suite.cached,
            workload: drive::fixed(page.clone()),
            skipped: skip(2, None),
            response_bytes: Some(page_bytes),
        },
        Plan {
            number: 3,
            label: "nested page, loaders off (N+1)",
            server: &suite.no_loaders,
            workload: drive::fixed(page.clone()),
            skipped: skip(3, None),
            response_bytes: Some(page_bytes),
        },
        Plan {
            number: 4,
            label: "profile by id, cache off",
            server: &suite.uncached,
            workload: suite.profile_by_id(),
            skipped: skip(4, None),
            response_bytes: None,
        },
        Plan {
            number: 5,
            label: "filtered opportunities, cache off",
            server: &suite.uncached,
            workload: drive::fixed(drive::graphql(FILTERED_OPPORTUNITIES, json!({}))),
            skipped: skip(5, None),
            response_bytes: None,
        },
        Plan {
            number: 6,
            label: "90/10 read/write mix, cache on",
            server: &suite.mix,
            workload: suite.read_write_mix(),
            skipped: skip(6, None),
            response_bytes: None,
        },
        Plan {
            number: 7,
            label: "REST GET /api/profiles?limit=50",
            server: &suite.uncached,
            workload: drive::fixed(Request::Get(rest)),
            skipped: skip(7, rest_skipped),
            response_bytes: None,
        },
        Plan {
            number: 8,
            label: "ceiling: fixed body, same size as 2",
            server: &suite.cached,
            workload: drive::fixed(Request::Get(ceiling)),
            skipped: skip(8, None),
            response_bytes: Some(page_bytes),
        },
        Plan {
            number: 9,
            label: "nested page, compressed, cache off",
            server: &suite.uncached,
            workload: drive::fixed(compressed_page.clone()),
            skipped: skip(9, None),
            response_bytes: Some(compressed.len()),
        },
        Plan {
            number: 10,
            label: "nested page, compressed, cache on",
            server: &suite.cached,
            workload: drive::fixed(compressed_page),
            skipped: skip(10, None),
            response_bytes: Some(compressed.len()),
        },
    ];

    for plan in plans.iter().filter(|p| p.skipped.is_none()) {
        eprintln!("warming up {}: {}", plan.number, plan.label);
        client_rt.block_on(drive::run(
            &plan.server.target,
            &plan.workload,
            timing.warmup,
            0,
        ));
    }
    let mut rounds: Vec<Vec<Measured>> = plans.iter().map(|_| Vec::new()).collect();
    for round in 0..timing.rounds {
        for (plan, results) in plans.iter().zip(&mut rounds) {
            if plan.skipped.is_some() {
                continue;
            }
            eprintln!(
                "{} round {}/{}: {}",
                suite.backend,
                round + 1,
                timing.rounds,
                plan.label
            );
            let cache_before = server_rt.block_on(plan.server.running.state.cache().stats());
            let statements_before = plan.server.statements();
            let measured = client_rt.block_on(drive::run(
                &plan.server.target,
                &plan.workload,
                timing.duration,
                round as u64 + 1,
            ));
            let statements = plan.server.statements() - statements_before;
            let cache_after = server_rt.block_on(plan.server.running.state.cache().stats());
            results.push(Measured {
                round: measured,
                statements,
                hits: cache_after.hits - cache_before.hits,
                misses: cache_after.misses - cache_before.misses,
            });
        }
    }
    Ok(plans
        .iter()
        .zip(rounds)
        .map(|(plan, results)| summarise(plan, results))
        .collect())
}

/// One round of one scenario with the server's counters over it.
struct Measured {
    round: drive::Round,
    statements: u64,
    hits: u64,
    misses: u64,
}

fn summarise(plan: &Plan<'_>, results: Vec<Measured>) -> Outcome {
    let mut latencies = Vec::new();
    let (mut requests, mut errors, mut statements, mut hits, mut misses) = (0, 0, 0, 0, 0);
    let mut first_error = None;
    let mut per_round = Vec::new();
    for Measured {
        round,
        statements: round_statements,
        hits: round_hits,
        misses: round_misses,
    } in results
    {
        per_round.push(round.requests_per_second());
        requests += round.requests;
        errors += round.errors;
        statements += round_statements;
        hits += round_hits;
        misses += round_misses;
        first_error = first_error.or(round.first_error);
        latencies.extend(round.latencies_us);
    }
    latencies.sort_unstable();
    Outcome {
        number: plan.number,
        label: plan.label,
        skipped: plan.skipped.clone(),
        requests_per_second: drive::median(&per_round),
        rounds_requests_per_second: per_round,
        p50_ms: drive::percentile_ms(&latencies, 50.0),
        p99_ms: drive::percentile_ms(&latencies, 99.0),
        statements_per_request: statements as f64 / requests.max(1) as f64,
        requests,
        errors,
        first_error,
        hit_ratio: (plan.number == 6 && hits + misses > 0)
            .then(|| hits as f64 / (hits + misses) as f64),
        response_bytes: plan.response_bytes,
    }
}
