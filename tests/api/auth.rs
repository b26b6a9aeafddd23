//! Access control: API keys and roles over GraphQL, REST and `/metrics`;
//! refused writes change nothing.

use catalynx::auth::Principal;
use catalynx::config::{SecurityConfig, ServeConfig};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_KEY, Backend, EDITOR_KEY, READER_KEY, TestApp, TestDb, create_profile, security,
    serve_config, spawn_app, spawn_serving,
};

const CREATE: &str =
    r#"mutation { createProfile(input: { name: "Written", organizationType: NONPROFIT }) { id } }"#;
const READ: &str = "{ profiles { totalCount } }";

fn with_key(request: RequestBuilder, key: Option<&str>) -> RequestBuilder {
    match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    }
}

/// POSTs `query` to `/graphql` with `key`: the status, `WWW-Authenticate`, the body.
async fn post(
    app: &TestApp,
    key: Option<&str>,
    query: &str,
) -> (StatusCode, Option<String>, Value) {
    let request = app
        .client
        .post(app.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": query }));
    let response = with_key(request, key).send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.json().await.unwrap())
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// A server on a fresh SQLite file with `security`.
async fn spawn_secured(security: SecurityConfig) -> TestApp {
    spawn_serving(
        Backend::Sqlite,
        ServeConfig {
            security,
            ..serve_config()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn writes_need_an_editor_key_and_refusals_write_nothing() {
    let app = spawn_app().await;
    create_profile(
        &app,
        json!({ "name": "Existing", "organizationType": "NONPROFIT" }),
    )
    .await;
    let before = app.digest().await;

    let (status, challenge, body) = post(&app, None, CREATE).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"catalynx\""));
    assert_eq!(code(&body), "UNAUTHENTICATED");
    assert!(body.get("data").is_none(), "{body}");

    let (status, challenge, body) = post(&app, Some(READER_KEY), CREATE).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(challenge, None);
    assert_eq!(code(&body), "FORBIDDEN");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("reader role")
    );

    for key in [
        "Bearer not-a-known-key-0123456789",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer a b",
    ] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("authorization", key)
            .json(&json!({ "query": CREATE }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key}");
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body), "UNAUTHENTICATED", "{key}");
    }
    assert_eq!(
        app.digest().await,
        before,
        "a refused write changed the data"
    );

    for key in [EDITOR_KEY, ADMIN_KEY] {
        let (status, _, body) = post(&app, Some(key), CREATE).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["data"]["createProfile"]["id"].is_string());
    }
    assert_eq!(app.scalar("SELECT COUNT(*) FROM profiles").await, 3);
    app.finish().await;
}

#[tokio::test]
async fn reads_are_open_by_default_but_a_bad_key_is_refused() {
    let app = spawn_app().await;
    let (status, _, body) = post(&app, None, READ).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "data": { "profiles": { "totalCount": 0 } } }));
    let (status, _, body) = post(&app, Some("wrong-key-0123456789abcdef"), READ).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "UNAUTHENTICATED");

    // REST: the same rule, in its own error shape.
    let response = app
        .client
        .get(app.url("/api/profiles"))
        .bearer_auth("wrong-key-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "UNAUTHENTICATED");
    app.finish().await;
}

#[tokio::test]
async fn reads_need_a_key_when_configured() {
    let app = spawn_secured(SecurityConfig {
        reads_need_key: true,
        ..security()
    })
    .await;
    let (status, challenge, body) = post(&app, None, READ).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.is_some());
    assert_eq!(code(&body), "UNAUTHENTICATED");
    let response = app
        .client
        .get(app.url("/api/profiles"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "UNAUTHENTICATED"
    );

    let response = app
        .client
        .get(app.url("/api/profiles"))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "private, no-cache");
    let (status, _, _) = post(&app, Some(READER_KEY), READ).await;
    assert_eq!(status, StatusCode::OK);

    // Probes stay open: orchestrators send no keys.
    for path in ["/health", "/ready"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    app.finish().await;
}

#[tokio::test]
async fn cache_stats_and_metrics_need_the_admin_role() {
    let app = spawn_app().await;
    let query = "{ cacheStats { entries } }";
    let (status, _, body) = post(&app, None, query).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code(&body), "UNAUTHENTICATED");
    assert_eq!(body["data"].get("cacheStats"), Some(&Value::Null), "{body}");
    // Refused alone: the rest of the query still answers.
    let (_, _, body) = post(
        &app,
        None,
        "{ cacheStats { entries } profiles { totalCount } }",
    )
    .await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
    assert_eq!(body["errors"][0]["path"], json!(["cacheStats"]));
    assert_eq!(body["data"].get("cacheStats"), Some(&Value::Null), "{body}");
    assert_eq!(body["data"]["profiles"]["totalCount"], 0, "{body}");
    let (_, _, body) = post(&app, Some(EDITOR_KEY), query).await;
    assert_eq!(code(&body), "FORBIDDEN");
    let (_, _, body) = post(&app, Some(ADMIN_KEY), query).await;
    assert!(body["data"]["cacheStats"]["entries"].is_number(), "{body}");

    for (key, status, error) in [
        (None, StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")),
        (Some(EDITOR_KEY), StatusCode::FORBIDDEN, Some("FORBIDDEN")),
        (Some(ADMIN_KEY), StatusCode::OK, None),
    ] {
        let response = with_key(app.client.get(app.url("/metrics")), key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{key:?}");
        if let Some(error) = error {
            assert_eq!(response.json::<Value>().await.unwrap()["code"], error);
        }
    }
    app.finish().await;
}

#[tokio::test]
async fn without_keys_the_server_is_read_only() {
    let app = spawn_secured(SecurityConfig {
        api_keys: None,
        ..security()
    })
    .await;
    let (status, _, body) = post(&app, None, READ).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, challenge, body) = post(&app, None, CREATE).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(challenge, None, "no key could help: no challenge");
    assert_eq!(code(&body), "FORBIDDEN");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("read-only")
    );
    let (status, _, _) = post(&app, Some(EDITOR_KEY), CREATE).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no key is known");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM profiles").await, 0);
    app.finish().await;
}

#[tokio::test]
async fn batches_refuse_each_write_the_key_does_not_allow() {
    let app = spawn_app().await;
    let request = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(READER_KEY)
        .json(&json!([{ "query": READ }, { "query": CREATE }]));
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body[0],
        json!({ "data": { "profiles": { "totalCount": 0 } } })
    );
    assert_eq!(code(&body[1]), "FORBIDDEN");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM profiles").await, 0);
    app.finish().await;
}

/// Every mutation field refuses a caller without the editor role inside the
/// schema too, whatever path the request took to it.
#[tokio::test]
async fn every_mutation_field_is_guarded_in_the_schema() {
    let app = spawn_app().await;
    let profile = create_profile(
        &app,
        json!({ "name": "P", "organizationType": "NONPROFIT" }),
    )
    .await;
    let before = app.digest().await;
    let mutations = [
        (
            "createProfile",
            r#"createProfile(input: { name: "X", organizationType: NONPROFIT }) { id }"#.to_owned(),
        ),
        (
            "createProfiles",
            r#"createProfiles(inputs: [{ name: "X" }]) { id }"#.to_owned(),
        ),
        (
            "updateProfile",
            format!(r#"updateProfile(id: "{profile}", input: {{ city: "X" }}) {{ id }}"#),
        ),
        (
            "deleteProfile",
            format!(r#"deleteProfile(id: "{profile}")"#),
        ),
        (
            "createOpportunity",
            format!(
                r#"createOpportunity(input: {{ profileId: "{profile}", organizationName: "X" }}) {{ id }}"#
            ),
        ),
        (
            "createOpportunities",
            format!(
                r#"createOpportunities(inputs: [{{ profileId: "{profile}", organizationName: "X" }}]) {{ id }}"#
            ),
        ),
        (
            "updateOpportunity",
            r#"updateOpportunity(id: "opp_000000000000", input: { notes: "x" }) { id }"#.to_owned(),
        ),
        (
            "moveOpportunityStage",
            r#"moveOpportunityStage(id: "opp_000000000000", stage: TARGETS) { id }"#.to_owned(),
        ),
        (
            "deleteOpportunity",
            r#"deleteOpportunity(id: "opp_000000000000")"#.to_owned(),
        ),
    ];
    // The list is the whole mutation root: a new mutation must be added here.
    let fields = app
        .data(
            "{ __schema { mutationType { fields { name } } } }",
            json!({}),
        )
        .await;
    let mut names: Vec<&str> = fields["__schema"]["mutationType"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    names.sort();
    let mut listed: Vec<&str> = mutations.iter().map(|(name, _)| *name).collect();
    listed.sort();
    assert_eq!(names, listed);

    let reader = app
        .state()
        .access()
        .principal(&{
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                "authorization",
                format!("Bearer {READER_KEY}").parse().unwrap(),
            );
            h
        })
        .unwrap();
    for principal in [Principal::nobody(), reader] {
        for (name, field) in &mutations {
            let request = async_graphql::Request::new(format!("mutation {{ {field} }}"));
            let response = app.state().execute(request, &principal).await;
            let code = response.errors[0]
                .extensions
                .as_ref()
                .and_then(|e| e.get("code"))
                .cloned();
            let expected = if principal.is_authenticated() {
                "FORBIDDEN"
            } else {
                "UNAUTHENTICATED"
            };
            assert_eq!(
                code,
                Some(async_graphql::Value::String(expected.into())),
                "{name}: {:?}",
                response.errors
            );
        }
    }
    assert_eq!(app.digest().await, before, "a guarded mutation wrote");
    app.finish().await;
}

#[tokio::test]
async fn keys_come_from_a_file_of_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let key = "file-editor-key-0123456789";
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
    std::fs::write(&path, format!("# editors\neditor:{hash}:ci\n")).unwrap();
    let app = spawn_secured(SecurityConfig {
        api_keys_file: Some(path.clone()),
        api_keys: None,
        ..SecurityConfig::default()
    })
    .await;
    let (status, _, body) = post(&app, Some(key), CREATE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = post(&app, Some(&hash), CREATE).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the hash is not the key");
    app.finish().await;

    // A bad file, and reads that need a key nobody has, stop the start.
    std::fs::write(&path, "editor:not-a-hash\n").unwrap();
    let test_db = TestDb::new(Backend::Sqlite).await.unwrap();
    for (security, expected) in [
        (
            SecurityConfig {
                api_keys_file: Some(path),
                ..SecurityConfig::default()
            },
            "line 1: expected the key's SHA-256",
        ),
        (
            SecurityConfig {
                reads_need_key: true,
                api_keys: None,
                ..SecurityConfig::default()
            },
            "--reads-need-key",
        ),
    ] {
        let config = ServeConfig {
            security,
            ..serve_config()
        };
        let error = catalynx::server::RunningServer::start(test_db.connect().await, &config)
            .await
            .err()
            .expect("refused");
        assert!(format!("{error:#}").contains(expected), "{error:#}");
    }
}
