//! Operator endpoints (`/health`, `/ready`, `/metrics`) and graceful
//! shutdown of the real binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{ADMIN_KEY, spawn_app};

#[tokio::test]
async fn health_and_ready_answer() {
    let app = spawn_app().await;
    for (path, text) in [("/health", "ok"), ("/ready", "ready")] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.text().await.unwrap(), text);
    }
    app.finish().await;
}

#[tokio::test]
async fn metrics_count_operations_errors_statements_and_pools() {
    let app = spawn_app().await;
    app.data("query ListProfiles { profiles { totalCount } }", json!({}))
        .await;
    app.data("query ListProfiles { profiles { totalCount } }", json!({}))
        .await;
    app.gql("{ nope }", json!({})).await;
    app.client
        .get(app.url("/api/profiles/missing"))
        .send()
        .await
        .unwrap();
    // Refused before any operation ran, each by another layer: not JSON,
    // not a JSON body, an `Accept` nothing answers, a mutation without a key.
    let graphql = || app.client.post(app.url("/graphql"));
    for (request, status) in [
        (
            graphql()
                .header("content-type", "application/json")
                .body("{"),
            StatusCode::BAD_REQUEST,
        ),
        (
            graphql().header("content-type", "text/plain").body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            graphql()
                .header("accept", "application/xml")
                .json(&json!({ "query": "{ __typename }" })),
            StatusCode::NOT_ACCEPTABLE,
        ),
        (
            graphql().json(&json!({ "query": "mutation { deleteProfile(id: \"x\") }" })),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        assert_eq!(request.send().await.unwrap().status(), status);
    }

    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    for expected in [
        r#"catalynx_graphql_operations_total{operation="ListProfiles",type="query"} 2"#,
        r#"catalynx_graphql_operation_duration_seconds_count{operation="ListProfiles",type="query"} 2"#,
        r#"catalynx_graphql_errors_total{code="GRAPHQL_VALIDATION_FAILED",operation="anonymous"} 1"#,
        r#"catalynx_graphql_errors_total{code="BAD_REQUEST",operation="refused"} 1"#,
        r#"catalynx_graphql_errors_total{code="UNSUPPORTED_MEDIA_TYPE",operation="refused"} 1"#,
        r#"catalynx_graphql_errors_total{code="NOT_ACCEPTABLE",operation="refused"} 1"#,
        r#"catalynx_graphql_errors_total{code="UNAUTHENTICATED",operation="refused"} 1"#,
        r#"catalynx_http_requests_total{method="POST",route="/graphql",status="200"} 3"#,
        r#"catalynx_http_requests_total{method="POST",route="/graphql",status="415"} 1"#,
        r#"catalynx_http_requests_total{method="GET",route="/api/profiles/{id}",status="404"} 1"#,
        r#"catalynx_http_request_duration_seconds_bucket{method="POST",route="/graphql",le="+Inf"} 7"#,
        r#"catalynx_db_pool_connections{pool="read",state="open"}"#,
        r#"catalynx_db_pool_connections{pool="write",state="in_use"}"#,
        // The scrape is no API request: none runs.
        "\ncatalynx_http_requests_running 0\n",
    ] {
        assert!(text.contains(expected), "missing {expected}\n{text}");
    }
    let statements: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("catalynx_sql_statements_total "))
        .expect("statement counter")
        .parse()
        .unwrap();
    assert!(statements >= 3, "{statements}");
    assert!(statements <= app.db.statement_count());
    // The resolver cache's counters, as `cacheStats` reports them.
    let metric = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("missing {name}"))
            .parse()
            .unwrap()
    };
    let stats = app
        .data(
            "{ cacheStats { enabled hits misses maxBytes } }",
            serde_json::Value::Null,
        )
        .await;
    assert!(metric("catalynx_cache_hits_total") <= stats["cacheStats"]["hits"].as_f64().unwrap());
    if stats["cacheStats"]["enabled"] == true {
        assert!(metric("catalynx_cache_misses_total") > 0.0);
    }
    assert_eq!(
        metric("catalynx_cache_max_bytes"),
        stats["cacheStats"]["maxBytes"].as_f64().unwrap()
    );
    for name in [
        "catalynx_cache_evictions_total",
        "catalynx_cache_expirations_total",
        "catalynx_cache_entries",
        "catalynx_cache_stored_bytes",
    ] {
        metric(name);
    }
    app.finish().await;
}

/// Kills the child if the test fails half-way.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_catalynx"))
            .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("demo.db").display()),
            )
            .env("CATALYNX_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts"),
    );
    // The log names the port it picked.
    let mut log = BufReader::new(child.0.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(
            log.read_line(&mut line).unwrap() > 0,
            "exited before listening"
        );
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep reading the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in log.lines() {});

    // A request whose body is still arriving when SIGTERM comes.
    let body = br#"{"query": "{ profiles(first: 2) { totalCount nodes { name } } }"}"#;
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    stream.write_all(&body[10..]).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"totalCount\""), "{answer}");

    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(status) = child.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .await
    .unwrap()
    .expect("exited within 10 s");
    assert!(status.success(), "exit status {status}");
}
