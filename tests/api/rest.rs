//! The seed platform's REST endpoints: shapes, paging, validation, statement
//! counts and ETags, on SQLite and PostgreSQL.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, create_opportunity, create_profile, seed};
use crate::on_both;

async fn get_json(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app.client.get(app.url(path)).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Two profiles (one archived) and three opportunities of the first.
async fn arrange(app: &TestApp) -> (String, String) {
    let alpha = create_profile(
        app,
        json!({
            "name": "Alpha Youth Trust", "organizationType": "NONPROFIT", "ein": "12-3456789",
            "missionStatement": "After-school programmes", "keywords": "youth",
            "focusAreas": ["education", "youth"], "nteeCodes": ["B20"], "city": "Austin",
            "state": "TX", "annualRevenue": 250000, "websiteUrl": "https://alpha.example.org"
        }),
    )
    .await;
    let archived = create_profile(
        app,
        json!({ "name": "Old Archive", "organizationType": "FOUNDATION", "status": "ARCHIVED" }),
    )
    .await;
    for (name, score, stage) in [
        ("Kresge Foundation", 0.9, "TARGETS"),
        ("Ford Foundation", 0.5, "DISCOVERY"),
        ("Gates Foundation", 0.7, "DISCOVERY"),
    ] {
        create_opportunity(
            app,
            json!({ "profileId": alpha, "organizationName": name, "overallScore": score, "currentStage": stage }),
        )
        .await;
    }
    (alpha, archived)
}

async fn profiles_list_shape(app: &TestApp) {
    let (alpha, _) = arrange(app).await;
    let (status, body) = get_json(app, "/api/profiles").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["total_count"], 1,
        "archived profiles are hidden: {body:#}"
    );
    let profile = &body["profiles"][0];
    let mut expected = json!({
        "profile_id": alpha, "id": alpha, "name": "Alpha Youth Trust",
        "organization_type": "nonprofit", "ein": "123456789",
        "mission_statement": "After-school programmes", "status": "active", "keywords": "youth",
        "focus_areas": ["education", "youth"], "ntee_codes": ["B20"], "city": "Austin",
        "state": "TX", "annual_revenue": 250000, "website_url": "https://alpha.example.org",
        "last_discovery_date": null, "opportunities_count": 3,
    });
    for time in ["created_at", "updated_at"] {
        assert!(
            profile[time].as_str().unwrap().ends_with('Z'),
            "{time}: {profile:#}"
        );
        expected[time] = profile[time].clone();
    }
    assert_eq!(profile, &expected);

    let (_, body) = get_json(app, "/api/profiles/database?status=archived").await;
    assert_eq!(body["source"], "database_optimized");
    assert_eq!(body["total_count"], 1);
    assert_eq!(body["profiles"][0]["name"], "Old Archive");
    assert_eq!(body["profiles"][0]["opportunities_count"], 0);
    assert!(
        get_json(app, "/api/profiles")
            .await
            .1
            .get("source")
            .is_none()
    );
}
on_both!(
    profiles_list_has_the_seed_platform_shape,
    profiles_list_shape
);

async fn page_in_two_statements(app: &TestApp) {
    seed(app, 120, 5).await;
    let total = app
        .scalar("SELECT COUNT(*) FROM profiles WHERE status <> 'archived'")
        .await;
    let mut seen = Vec::new();
    for offset in [0, 50, 100] {
        let path = format!("/api/profiles?limit=50&offset={offset}");
        let ((status, body), statements) = app.statements_of(get_json(app, &path)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(statements, 2, "page and total only");
        assert_eq!(body["total_count"], total);
        for profile in body["profiles"].as_array().unwrap() {
            let id = profile["profile_id"].as_str().unwrap().to_owned();
            let count = app
                .scalar(&format!(
                    "SELECT COUNT(*) FROM opportunities WHERE profile_id = '{id}'"
                ))
                .await;
            assert_eq!(profile["opportunities_count"], count, "{id}");
            seen.push(id);
        }
    }
    assert_eq!(seen.len() as i64, total);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len() as i64, total, "pages overlap");
}
/// Counting the SQL of each page needs the resolver cache off.
async fn without_cache(backend: crate::helpers::Backend) -> Option<TestApp> {
    let cache = catalynx::config::CacheConfig {
        cache_enabled: false,
        ..Default::default()
    };
    crate::helpers::spawn_with(backend, Default::default(), cache).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_page_costs_two_statements_on_sqlite() {
    let app = without_cache(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    page_in_two_statements(&app).await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_page_costs_two_statements_on_postgres() {
    if let Some(app) = without_cache(crate::helpers::Backend::Postgres).await {
        page_in_two_statements(&app).await;
        app.finish().await;
    }
}

async fn repeat_from_cache(app: &TestApp) {
    seed(app, 30, 2).await;
    let path = "/api/profiles?limit=10&offset=5";
    let ((_, first), _) = app.statements_of(get_json(app, path)).await;
    let ((_, again), statements) = app.statements_of(get_json(app, path)).await;
    assert_eq!(statements, 0, "served from the resolver cache");
    assert_eq!(first, again);
    // A write through GraphQL shows at once.
    let id = first["profiles"][0]["profile_id"]
        .as_str()
        .unwrap()
        .to_owned();
    create_opportunity(
        app,
        json!({ "profileId": id, "organizationName": "New Funder" }),
    )
    .await;
    let ((_, after), _) = app.statements_of(get_json(app, path)).await;
    let count = |body: &Value| {
        body["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["profile_id"] == id.as_str())
            .map(|p| p["opportunities_count"].as_i64().unwrap())
    };
    assert_eq!(
        count(&after),
        count(&first).map(|n| n + 1),
        "count invalidated by the write"
    );
    let opportunities = format!("/api/profiles/{id}/opportunities?limit=50");
    let (_, listed) = get_json(app, &opportunities).await;
    assert!(
        listed["opportunities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["organization_name"] == "New Funder")
    );
}
/// These tests are about the cache: on whatever the environment says.
async fn with_cache(backend: crate::helpers::Backend) -> Option<TestApp> {
    let cache = catalynx::config::CacheConfig {
        cache_enabled: true,
        ..Default::default()
    };
    crate::helpers::spawn_with(backend, Default::default(), cache).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_reads_come_from_the_resolver_cache_on_sqlite() {
    let app = with_cache(crate::helpers::Backend::Sqlite).await.unwrap();
    repeat_from_cache(&app).await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_reads_come_from_the_resolver_cache_on_postgres() {
    if let Some(app) = with_cache(crate::helpers::Backend::Postgres).await {
        repeat_from_cache(&app).await;
        app.finish().await;
    }
}

async fn one_profile(app: &TestApp) {
    let (alpha, _) = arrange(app).await;
    let ((status, body), statements) = app
        .statements_of(get_json(app, &format!("/api/profiles/{alpha}")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(statements, 1);
    assert_eq!(body["profile_id"], alpha.as_str());
    assert_eq!(body["opportunities_count"], 3);

    let (status, body) = get_json(app, "/api/profiles/profile_000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({ "detail": "profile \"profile_000000000000\" does not exist", "code": "NOT_FOUND" })
    );
}
on_both!(one_profile_or_404, one_profile);

async fn opportunities_of_a_profile(app: &TestApp) {
    let (alpha, archived) = arrange(app).await;
    let path = format!("/api/profiles/{alpha}/opportunities");
    let ((status, body), statements) = app.statements_of(get_json(app, &path)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(statements, 2);
    assert_eq!(body["profile_id"], alpha.as_str());
    assert_eq!(body["total_count"], 3);
    let names = |body: &Value| -> Vec<String> {
        body["opportunities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["organization_name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&body),
        ["Kresge Foundation", "Gates Foundation", "Ford Foundation"]
    );
    let first = &body["opportunities"][0];
    assert_eq!(first["opportunity_id"], first["id"]);
    assert_eq!(first["current_stage"], "targets");
    assert_eq!(first["profile_id"], alpha.as_str());

    let (_, body) = get_json(app, &format!("{path}?stage=discovery&limit=1")).await;
    assert_eq!(body["total_count"], 2);
    assert_eq!(body["opportunities"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["opportunities"][0]["organization_name"],
        "Gates Foundation"
    );
    let (_, body) = get_json(app, &format!("{path}?limit=2&offset=1")).await;
    assert_eq!(body["total_count"], 3);
    assert_eq!(
        names(&body),
        ["Gates Foundation", "Ford Foundation"],
        "after the first"
    );

    let (status, body) = get_json(app, &format!("/api/profiles/{archived}/opportunities")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total_count"], 0);
    let (status, body) = get_json(app, "/api/profiles/nope/opportunities").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "NOT_FOUND");
}
on_both!(
    opportunities_of_a_profile_by_score,
    opportunities_of_a_profile
);

#[tokio::test]
async fn query_parameters_are_validated() {
    let app = crate::helpers::spawn_app().await;
    for path in [
        "/api/profiles?limit=0",
        "/api/profiles?limit=501",
        "/api/profiles?limit=ten",
        "/api/profiles?offset=-1",
        "/api/profiles?offset=9223372036854775808",
        "/api/profiles?status=deleted",
        "/api/profiles/database?limit=-5",
        "/api/profiles/x/opportunities?stage=won",
        "/api/profiles/x/opportunities?limit=1000",
        "/api/profiles/%FF",
        "/api/profiles/%FF/opportunities",
    ] {
        let (status, body) = get_json(&app, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body["code"], "BAD_USER_INPUT", "{path}");
        assert!(!body["detail"].as_str().unwrap().is_empty());
    }
    let (status, _) = get_json(&app, "/api/profiles?limit=500&offset=0&status=draft").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get_json(&app, "/api/profiles?offset=9223372036854775807").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["profiles"], serde_json::json!([]));
    app.finish().await;
}

#[tokio::test]
async fn rest_reads_answer_304_until_the_data_changes() {
    let app = crate::helpers::spawn_app().await;
    let (alpha, _) = arrange(&app).await;
    let fetch = |etag: Option<String>| {
        let mut request = app.client.get(app.url("/api/profiles"));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send()
    };
    let first = fetch(None).await.unwrap();
    assert_eq!(first.headers()["cache-control"], "public, no-cache");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        fetch(Some(etag.clone())).await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );

    create_opportunity(
        &app,
        json!({ "profileId": alpha, "organizationName": "New Funder", "overallScore": 0.1 }),
    )
    .await;
    let changed = fetch(Some(etag.clone())).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["profiles"][0]["opportunities_count"], 4);
    app.finish().await;
}
