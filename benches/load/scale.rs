//! How the cost of a page grows with its size and with the database's: one
//! connection sending back to back, so a latency is the work of one request
//! and not time spent queueing behind others.

use std::path::Path;
use std::sync::Arc;

use catalynx::config::DbConfig;
use catalynx::db::Db;
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use tokio::runtime::Runtime;

use crate::child::ChildServer;
use crate::data::{self, SeedRecord};
use crate::drive::{self, Target, Workload};
use crate::scenarios::{Server, Timing, nested_page};

pub const PAGE_SIZES: [u32; 4] = [10, 50, 200, 500];

#[derive(Clone, Debug, Serialize)]
pub struct PagePoint {
    pub page_size: u32,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub statements_per_request: f64,
}

/// Nested page latency and statements per request for each page size (cache off).
pub fn page_sizes(server: &Server, client_rt: &Runtime, timing: &Timing) -> Vec<PagePoint> {
    let target = Target::new(server.running.addr, 1);
    let workloads: Vec<Workload> = PAGE_SIZES
        .iter()
        .map(|&n| drive::fixed(nested_page(n)))
        .collect();
    for workload in &workloads {
        client_rt.block_on(drive::run(&target, workload, timing.warmup, 0));
    }
    let mut latencies = vec![Vec::new(); PAGE_SIZES.len()];
    let mut statements = vec![(0u64, 0u64); PAGE_SIZES.len()];
    for round in 0..timing.rounds {
        for (i, workload) in workloads.iter().enumerate() {
            eprintln!(
                "scale round {}/{}: page size {}",
                round + 1,
                timing.rounds,
                PAGE_SIZES[i]
            );
            let before = server.statements();
            let measured = client_rt.block_on(drive::run(
                &target,
                workload,
                timing.duration,
                round as u64 + 1,
            ));
            statements[i].0 += server.statements() - before;
            statements[i].1 += measured.requests;
            latencies[i].extend(measured.latencies_us);
        }
    }
    PAGE_SIZES
        .iter()
        .zip(latencies)
        .zip(statements)
        .map(|((&page_size, mut l), (sent, requests))| {
            l.sort_unstable();
            PagePoint {
                page_size,
                p50_ms: drive::percentile_ms(&l, 50.0),
                p99_ms: drive::percentile_ms(&l, 99.0),
                statements_per_request: sent as f64 / requests.max(1) as f64,
            }
        })
        .collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct SizePoint {
    pub profiles: u64,
    pub rows: u64,
    pub file_bytes: u64,
    /// Nested page of 50, cache off, one connection.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Peak RSS of the cache-off server after the latency rounds.
    pub peak_rss_cache_off_bytes: u64,
    /// Peak RSS of a server with the cache at its default bound after the
    /// memory workload, and what its cache then held.
    pub peak_rss_bytes: u64,
    /// At the end of the memory workload: anonymous and file-backed resident memory.
    pub rss_anon_bytes: u64,
    pub rss_file_bytes: u64,
    pub cache_stored_bytes: u64,
    pub cache_max_bytes: u64,
    pub cache_entries: u64,
    pub memory_requests: u64,
    pub memory_errors: u64,
    pub memory_first_error: Option<String>,
    pub seed: SeedRecord,
}

/// Seeds (or reuses) a file per size, measures the nested page on a
/// cache-off child of each in interleaved rounds, then each size's peak RSS
/// with the cache on under a workload of many distinct reads.
pub fn database_sizes(
    out: &Path,
    sizes: &[u64],
    connections: usize,
    server_rt: &Runtime,
    client_rt: &Runtime,
    timing: &Timing,
) -> anyhow::Result<Vec<SizePoint>> {
    let files = sizes
        .iter()
        .map(|&n| server_rt.block_on(data::sqlite_file(out, n)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let children = files
        .iter()
        .map(|(path, _)| ChildServer::start(path, false, None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let targets: Vec<Target> = children.iter().map(|c| Target::new(c.addr, 1)).collect();
    let page = drive::fixed(nested_page(50));
    for target in &targets {
        client_rt.block_on(drive::run(target, &page, timing.warmup, 0));
    }
    let mut latencies = vec![Vec::new(); sizes.len()];
    for round in 0..timing.rounds {
        for (i, target) in targets.iter().enumerate() {
            eprintln!(
                "scale round {}/{}: {} profiles",
                round + 1,
                timing.rounds,
                sizes[i]
            );
            let measured =
                client_rt.block_on(drive::run(target, &page, timing.duration, round as u64 + 1));
            anyhow::ensure!(
                measured.errors == 0,
                "nested page on {} profiles failed: {:?}\n{}",
                sizes[i],
                measured.first_error,
                children[i].log_tail()
            );
            latencies[i].extend(measured.latencies_us);
        }
    }
    let rss_cache_off = children
        .iter()
        .map(ChildServer::peak_rss_bytes)
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(children);

    let mut points = Vec::new();
    for (((path, seed), mut l), rss_off) in files.into_iter().zip(latencies).zip(rss_cache_off) {
        l.sort_unstable();
        let memory = memory_workload(&path, connections, server_rt, client_rt, timing)?;
        points.push(SizePoint {
            profiles: seed.profiles,
            rows: seed.profiles + seed.opportunities,
            file_bytes: std::fs::metadata(&path)?.len(),
            p50_ms: drive::percentile_ms(&l, 50.0),
            p99_ms: drive::percentile_ms(&l, 99.0),
            peak_rss_cache_off_bytes: rss_off,
            peak_rss_bytes: memory.peak_rss,
            rss_anon_bytes: memory.anon,
            rss_file_bytes: memory.file,
            cache_stored_bytes: memory.stored,
            cache_max_bytes: memory.max,
            cache_entries: memory.entries,
            memory_requests: memory.requests,
            memory_errors: memory.errors,
            memory_first_error: memory.first_error,
            seed,
        });
    }
    Ok(points)
}

struct Memory {
    peak_rss: u64,
    anon: u64,
    file: u64,
    stored: u64,
    max: u64,
    entries: u64,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
}

const PROFILE_WITH_OPPORTUNITIES: &str = "query($id: ID!) { profile(id: $id) { id name ein missionStatement opportunitiesCount opportunities(first: 20) { nodes { id organizationName overallScore currentStage closeDate awardCeiling } } } }";
const CACHE_STATS: &str = "{ cacheStats { storedBytes maxBytes entries } }";

/// Fills the cache with distinct answers (random profiles with their
/// opportunities, and the nested page) on a server with the default cache
/// bound, for rounds x duration, then reads its peak RSS.
fn memory_workload(
    path: &Path,
    connections: usize,
    server_rt: &Runtime,
    client_rt: &Runtime,
    timing: &Timing,
) -> anyhow::Result<Memory> {
    let db = server_rt.block_on(Db::connect(&DbConfig::new(data::sqlite_url(path))))?;
    let (profiles, _) = server_rt.block_on(data::ids(&db, 1))?;
    server_rt.block_on(db.close())?;
    let profiles = Arc::new(profiles);
    let page = nested_page(50);
    let workload: Workload = Arc::new(move |rng| {
        if rng.random_range(0..10) == 0 {
            page.clone()
        } else {
            let id = &profiles[rng.random_range(0..profiles.len())];
            drive::graphql(PROFILE_WITH_OPPORTUNITIES, json!({ "id": id }))
        }
    });
    let admin_key = format!("bench-{:016x}", rand::random::<u64>());
    let child = ChildServer::start(path, true, Some(&admin_key))?;
    let target = Target::new(child.addr, connections);
    eprintln!(
        "memory workload: {} for {:?}",
        path.display(),
        timing.duration * timing.rounds as u32
    );
    let measured = client_rt.block_on(drive::run(
        &target,
        &workload,
        timing.duration * timing.rounds as u32,
        1,
    ));
    // cacheStats is for admins.
    let admin = Target::spread(&[child.addr], 1, Some(&admin_key));
    let (_, body) = client_rt.block_on(admin.send(&drive::graphql(CACHE_STATS, json!({}))))?;
    let stats: serde_json::Value = serde_json::from_slice(&body)?;
    let stats = &stats["data"]["cacheStats"];
    Ok(Memory {
        peak_rss: child.peak_rss_bytes()?,
        anon: child.anon_rss_bytes()?,
        file: child.file_rss_bytes()?,
        stored: stats["storedBytes"].as_u64().unwrap_or(0),
        max: stats["maxBytes"].as_u64().unwrap_or(0),
        entries: stats["entries"].as_u64().unwrap_or(0),
        requests: measured.requests,
        errors: measured.errors,
        first_error: measured.first_error,
    })
}
