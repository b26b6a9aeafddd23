//! A page costs a constant number of SQL statements whatever its size; with
//! loaders off (the N+1 baseline) it grows with the page.

use catalynx::config::{ApiConfig, CacheConfig};
use serde_json::json;

use crate::helpers::{Backend, TestApp, seed, spawn_with};

/// The parent is asked for through a fragment: the list hands its rows to
/// the parent loader only when the query reads them, and must see it there.
const NESTED_PAGE: &str = "query($n: Int!) { profiles(first: $n) { totalCount nodes { opportunitiesCount opportunities(first: 5) { nodes { id ...Parent } } } } } fragment Parent on Opportunity { profile { name } }";

/// Statements sent for the nested page at each size, checking the data too.
async fn statements_per_page(app: &TestApp, sizes: &[i64]) -> Vec<u64> {
    let mut counts = Vec::new();
    for &n in sizes {
        let (data, statements) = app
            .statements_of(app.data(NESTED_PAGE, json!({ "n": n })))
            .await;
        let nodes = data["profiles"]["nodes"].as_array().unwrap();
        assert_eq!(
            nodes.len() as i64,
            n.min(data["profiles"]["totalCount"].as_i64().unwrap())
        );
        for node in nodes {
            let shown = node["opportunities"]["nodes"].as_array().unwrap().len() as i64;
            assert_eq!(shown, node["opportunitiesCount"].as_i64().unwrap().min(5));
        }
        counts.push(statements);
    }
    counts
}

/// The cache would answer repeats without SQL; these tests count what the
/// loaders send, so they run with it off.
fn no_cache() -> CacheConfig {
    CacheConfig {
        cache_enabled: false,
        ..CacheConfig::default()
    }
}

async fn constant_with_loaders(backend: Backend) {
    let Some(app) = spawn_with(backend, ApiConfig::default(), no_cache()).await else {
        return;
    };
    // 600 profiles, some with none, some with 2x the average opportunities.
    seed(&app, 600, 6).await;
    let counts = statements_per_page(&app, &[1, 10, 100, 500]).await;
    eprintln!("{backend:?}: statements for N = 1, 10, 100, 500 with loaders: {counts:?}");
    assert!(
        counts.iter().all(|&c| c == counts[0]),
        "statement count varies with N: {counts:?}"
    );
    assert!(counts[0] <= 4, "more than 4 statements: {counts:?}");
    app.finish().await;
}

async fn grows_without_loaders(backend: Backend) {
    let api = ApiConfig {
        disable_loaders: true,
        ..ApiConfig::default()
    };
    let Some(app) = spawn_with(backend, api, no_cache()).await else {
        return;
    };
    seed(&app, 120, 6).await;
    let counts = statements_per_page(&app, &[1, 10, 100]).await;
    eprintln!(
        "{backend:?}: statements for N = 1, 10, 100 without loaders (N+1 baseline): {counts:?}"
    );
    // Per profile: a count, a page, and a parent lookup per opportunity shown.
    assert!(counts[2] > 100 * 2, "expected N+1 growth: {counts:?}");
    assert!(counts[0] < counts[1] && counts[1] < counts[2]);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_page_statements_are_constant_on_sqlite() {
    constant_with_loaders(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_page_statements_are_constant_on_postgres() {
    constant_with_loaders(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_loaders_statements_grow_on_sqlite() {
    grows_without_loaders(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_loaders_statements_grow_on_postgres() {
    grows_without_loaders(Backend::Postgres).await;
}
