//! Faults: SQLite lock contention, overload, a read-only database, kill -9
//! in the middle of a write, and PostgreSQL going away under load. Nothing
//! acknowledged is lost, and every failure a client sees carries a code.

use std::time::{Duration, Instant};

use catalynx::config::{DbConfig, SecurityConfig, ServeConfig};
use catalynx::db::Db;
use catalynx::server::RunningServer;
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, EDITOR_KEY, create_opportunity, create_profile, security, serve_config, spawn_app,
    spawn_serving,
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

/// Past `--max-concurrent-requests`, requests get 503 with `Retry-After`
/// at once; when the load drops, everything is answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_retry_after() {
    let app = spawn_serving(
        Backend::Sqlite,
        ServeConfig {
            security: SecurityConfig {
                max_concurrent_requests: 2,
                ..security()
            },
            ..serve_config()
        },
    )
    .await
    .unwrap();
    // Two writes that cannot finish while the test holds the writer.
    let held = {
        use sea_orm::TransactionTrait;
        app.db.write.begin().await.unwrap()
    };
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
        assert!(
            writes.iter().all(|w| !w.is_finished()),
            "the writes finished early"
        );
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
