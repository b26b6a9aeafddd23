//! Property tests over everything that parses untrusted bytes: the GraphQL
//! HTTP handler (through the router, without a socket), the cache codec, and
//! the cache's stored entries on disk and in Redis. Whatever the input: no
//! panic, no 5xx, and every error carries a code.
//!
//! `PROPTEST_CASES` sets the cases per property; the default is small so
//! that `cargo test` stays fast. A longer run:
//! `PROPTEST_CASES=100000 cargo test --release --test api fuzz::`

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use catalynx::cache::codec::Codec;
use catalynx::cache::{Cache, Tag};
use catalynx::config::CacheConfig;
use catalynx::db::Db;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::{ADMIN_KEY, TestDb, serve_config};

fn config(default_cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default_cases),
        failure_persistence: None,
        ..Config::default()
    }
}

/// One router over a seeded SQLite file, shared by every case, with the
/// runtime that drives it.
fn router() -> &'static (tokio::runtime::Runtime, Router, Db) {
    static ROUTER: OnceLock<(tokio::runtime::Runtime, Router, Db)> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (router, db) = runtime.block_on(async {
            let test_db = TestDb::new(crate::helpers::Backend::Sqlite).await.unwrap();
            let db = test_db.connect().await;
            // The file lives as long as the process.
            std::mem::forget(test_db);
            let plan = catalynx::seed::SeedPlan {
                profiles: 5,
                opportunities_per_profile: 3,
                seed: 7,
            };
            catalynx::seed::seed(&db, plan, false).await.unwrap();
            let config = serve_config();
            let cache = Cache::new(&config.cache);
            let state = catalynx::server::AppState::new(db.clone(), cache, &config).unwrap();
            (catalynx::server::app(state).unwrap(), db)
        });
        (runtime, router, db)
    })
}

/// Sends `request` through the router; checks the answer is a 2xx/4xx whose
/// errors carry codes.
fn check(request: Request<Body>) -> Result<(), TestCaseError> {
    let (runtime, router, _) = router();
    let (status, body) = runtime.block_on(async {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes)
    });
    prop_assert!(
        !status.is_server_error(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    if status == StatusCode::NOT_MODIFIED
        || status == StatusCode::METHOD_NOT_ALLOWED && body.is_empty()
    {
        return Ok(());
    }
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| TestCaseError::fail(format!("{status}: not JSON ({e})")))?;
    let items = match &json {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    for item in items {
        if let Some(errors) = item.get("errors").and_then(Value::as_array) {
            for error in errors {
                prop_assert!(
                    error["extensions"]["code"].is_string(),
                    "error without a code: {error}"
                );
            }
        } else if status != StatusCode::OK {
            prop_assert!(item["code"].is_string(), "{status} without a code: {item}");
        }
    }
    Ok(())
}

fn post(body: Vec<u8>, content_type: &str, auth: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/graphql")
        .header("content-type", content_type)
        .header("accept", "application/graphql-response+json");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.body(Body::from(body)).unwrap()
}

/// Words of GraphQL documents against this schema, valid and not.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ":",
    ",",
    "...",
    "on",
    "query",
    "mutation",
    "subscription",
    "fragment",
    "F",
    "Profile",
    "Opportunity",
    "QueryRoot",
    "profiles",
    "opportunities",
    "profile",
    "opportunity",
    "profileByEin",
    "nodes",
    "edges",
    "node",
    "cursor",
    "pageInfo",
    "hasNextPage",
    "endCursor",
    "totalCount",
    "id",
    "name",
    "ein",
    "state",
    "overallScore",
    "opportunitiesCount",
    "cacheStats",
    "entries",
    "__typename",
    "__schema",
    "types",
    "fields",
    "first:",
    "last:",
    "after:",
    "before:",
    "id:",
    "ein:",
    "filter:",
    "search:",
    "states:",
    "statuses:",
    "orderBy:",
    "0",
    "1",
    "-1",
    "500",
    "501",
    "2147483648",
    "1.5",
    "1e400",
    "true",
    "null",
    "\"x\"",
    "\"12-3456789\"",
    "\"%\"",
    "\"'; DROP TABLE profiles; --\"",
    "\"\\u0000\"",
    "ACTIVE",
    "BOGUS",
    "$v",
    "$v:",
    "Int",
    "String!",
    "@skip(if: true)",
    "@include(if: $v)",
    "@deprecated",
    "createProfile",
    "input:",
    "organizationType:",
    "NONPROFIT",
    "deleteProfile",
    "\"",
    "#",
    "\\",
];

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|t| t.join(" "))
}

/// JSON shaped like GraphQL requests, nested a little.
fn request_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        document().prop_map(Value::String),
        "[a-f0-9]{0,64}".prop_map(Value::String),
        ".{0,40}".prop_map(Value::String),
    ];
    let key = prop::sample::select(
        &[
            "query",
            "variables",
            "operationName",
            "extensions",
            "persistedQuery",
            "version",
            "sha256Hash",
            "v",
            "id",
            "first",
        ][..],
    );
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

fn auth() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(format!("Bearer {ADMIN_KEY}"))),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn arbitrary_bytes_as_a_body(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(post(body, "application/json", None))?;
    }

    #[test]
    fn arbitrary_bytes_inside_a_query(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut body = br#"{"query": ""#.to_vec();
        body.extend(bytes);
        body.extend(br#""}"#);
        check(post(body, "application/json", None))?;
    }

    #[test]
    fn arbitrary_json_requests(value in request_json(), auth in auth()) {
        let body = serde_json::to_vec(&value).unwrap();
        check(post(body, "application/json", auth.as_deref()))?;
    }

    #[test]
    fn arbitrary_documents(query in document(), variables in request_json(), auth in auth()) {
        let body = serde_json::to_vec(&json!({ "query": query, "variables": { "v": variables } })).unwrap();
        check(post(body, "application/json", auth.as_deref()))?;
    }

    #[test]
    fn arbitrary_get_query_strings(raw in prop::collection::vec(any::<u8>(), 0..256), query in document()) {
        let encoded: String = raw.iter().map(|b| format!("%{b:02X}")).collect();
        for uri in [
            format!("/graphql?{encoded}"),
            format!("/graphql?query={encoded}"),
            format!("/graphql?{}", serde_urlencoded::to_string([("query", &query)]).unwrap()),
            format!("/api/profiles?limit={encoded}&status={encoded}"),
        ] {
            let request = Request::get(uri).header("accept", "application/json").body(Body::empty()).unwrap();
            check(request)?;
        }
    }

    #[test]
    fn arbitrary_headers(content_type in "[ -~]{0,60}", accept in "[ -~]{0,60}", auth in auth()) {
        let mut request = Request::post("/graphql")
            .header("content-type", content_type)
            .header("accept", accept);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        check(request.body(Body::from(r#"{"query": "{ profiles { totalCount } }"}"#)).unwrap())?;
    }
}

/// Values the resolver cache holds, and a few other shapes.
fn decode_all(codec: &Codec, bytes: &[u8]) {
    let _ = codec.decode::<Vec<entity::profile::Model>>(bytes);
    let _ = codec.decode::<Vec<entity::opportunity::Model>>(bytes);
    let _ = codec.decode::<Option<entity::profile::Model>>(bytes);
    let _ = codec.decode::<std::collections::HashMap<String, i64>>(bytes);
    let _ = codec.decode::<u64>(bytes);
    let _ = codec.decode::<Vec<String>>(bytes);
    let _ = codec.decode::<Value>(bytes);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

const CODEC: Codec = Codec {
    level: 1,
    raw_below: 128,
};

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn codec_decodes_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        decode_all(&CODEC, &bytes);
        // Past the header byte: straight into MessagePack, and through gzip.
        let mut raw = vec![0xC0];
        raw.extend(&bytes);
        decode_all(&CODEC, &raw);
        let mut zipped = vec![0xC1];
        zipped.extend(gzip(&bytes));
        decode_all(&CODEC, &zipped);
    }

    #[test]
    fn codec_decodes_damaged_values(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>(), big in any::<bool>()) {
        let value: Vec<String> = (0..if big { 400 } else { 3 }).map(|i| format!("Harbor Youth Alliance {i}")).collect();
        let mut bytes = CODEC.encode(&value).unwrap().bytes;
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= byte;
        }
        decode_all(&CODEC, &bytes);
        decode_all(&CODEC, &bytes[..cut.index(bytes.len() + 1)]);
    }

    #[test]
    fn shared_entries_parse_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), text in ".{0,80}") {
        if let Some((deps, value)) = catalynx::cache::shared::decode_entry(&bytes) {
            prop_assert_eq!(catalynx::cache::shared::encode_entry(&deps, &value), bytes);
        }
        let _ = catalynx::cache::shared::parse_change(&text);
    }
}

/// A cache with a directory, over a database for its fingerprint.
fn with_dir(dir: &std::path::Path) -> CacheConfig {
    CacheConfig {
        cache_enabled: true,
        cache_dir: Some(dir.to_owned()),
        ..CacheConfig::default()
    }
}

fn value(i: usize) -> Vec<String> {
    (0..1 + i * 37)
        .map(|n| format!("entry {i} item {n}"))
        .collect()
}

proptest! {
    #![proptest_config(config(32))]

    /// Entry files damaged while the server is down: each read gives the
    /// value the loader would, never a panic or a damaged value.
    #[test]
    fn damaged_cache_files_are_misses(damage in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6)) {
        let (runtime, _, db) = router();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let cache = Cache::open(&with_dir(dir.path()), db).await;
            for i in 0..4 {
                let loaded: Vec<String> = cache
                    .get_or_load("fuzz", &i, &[Tag::Profiles], || async move { Ok(value(i)) })
                    .await
                    .unwrap();
                prop_assert_eq!(loaded, value(i));
            }
            cache.seal(db).await;
            drop(cache);
            let mut files: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|f| f.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "entry"))
                .collect();
            files.sort();
            prop_assert_eq!(files.len(), 4);
            for (file, at, byte, how) in damage {
                let path = &files[file.index(files.len())];
                let mut data = std::fs::read(path).unwrap();
                if data.is_empty() {
                    // Truncated to nothing by an earlier damage to this file
                    // (`Index` panics on an empty collection): it can only grow.
                    data.push(byte);
                } else {
                    let i = at.index(data.len());
                    match how {
                        0 => data[i] ^= byte.max(1),
                        1 => data.truncate(i),
                        _ => data.insert(i, byte),
                    }
                }
                std::fs::write(path, data).unwrap();
            }
            let cache = Cache::open(&with_dir(dir.path()), db).await;
            for i in 0..4 {
                let read: Vec<String> = cache
                    .get_or_load("fuzz", &i, &[Tag::Profiles], || async move { Ok(value(i)) })
                    .await
                    .unwrap();
                prop_assert_eq!(read, value(i));
            }
            Ok(())
        })?;
    }
}

/// An entry in Redis written by something else (another version, a bad
/// actor on the network): a miss, never a panic or its value.
#[test]
fn foreign_redis_entries_are_misses() {
    let Ok(url) = std::env::var("CATALYNX_TEST_REDIS_URL") else {
        eprintln!("skipped: Redis test (set CATALYNX_TEST_REDIS_URL, e.g. redis://127.0.0.1:6379)");
        return;
    };
    let (runtime, _, _) = router();
    runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let nonce = format!("{}-{}", std::process::id(), rand_u32());
        let bogus = catalynx::cache::codec::Codec {
            level: 1,
            raw_below: 1 << 20,
        }
        .encode(&vec!["planted".to_owned()])
        .unwrap()
        .bytes;
        let planted: [Vec<u8>; 4] = [
            catalynx::cache::shared::encode_entry(&[(u32::MAX, 0)], &bogus),
            catalynx::cache::shared::encode_entry(&[(70_000, 1)], &bogus),
            vec![0xff; 7],
            Vec::new(),
        ];
        let config = CacheConfig {
            cache_enabled: true,
            ..CacheConfig::default()
        };
        let cache = Cache::new(&config).with_shared(&url).await.unwrap();
        for (i, bytes) in planted.iter().enumerate() {
            let args = (nonce.as_str(), i);
            // Ends with the data epoch: 0 for a cache made without a database.
            let key = format!(
                "clx:v:fuzz\u{1f}{}\u{1f}0",
                serde_json::to_string(&args).unwrap()
            );
            let _: () = redis::AsyncCommands::set(&mut conn, &key, bytes.as_slice())
                .await
                .unwrap();
            let read: Vec<String> = cache
                .get_or_load("fuzz", &args, &[Tag::Profiles], || async {
                    Ok(vec!["loaded".to_owned()])
                })
                .await
                .unwrap();
            assert_eq!(read, vec!["loaded".to_owned()], "entry {i}");
            let _: () = redis::AsyncCommands::del(&mut conn, &key).await.unwrap();
        }
    });
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}
