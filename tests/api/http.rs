//! GraphQL over HTTP through the running server: negotiation, status codes,
//! GET mutations, persisted queries, batches, caching headers, compression,
//! limits and CORS.

use std::io::Read;
use std::time::Duration;

use catalynx::config::HttpConfig;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    Backend, EDITOR_KEY, READER_KEY, TestApp, create_profile, seed, spawn_app, spawn_app_on,
    spawn_http_app, spawn_with,
};

const GRJ: &str = "application/graphql-response+json";
const PROFILES: &str = "{ profiles(first: 3) { totalCount nodes { name } } }";

/// POSTs `body` as JSON with the given `Accept`.
async fn post(app: &TestApp, accept: &str, body: Value) -> Response {
    app.client
        .post(app.url("/graphql"))
        .header(header::ACCEPT, accept)
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

/// GETs `/graphql` with the given query parameters.
async fn get(app: &TestApp, accept: &str, params: &[(&str, &str)]) -> Response {
    app.client
        .get(app.url("/graphql"))
        .header(header::ACCEPT, accept)
        .query(params)
        .send()
        .await
        .expect("request sent")
}

fn content_type(response: &Response) -> &str {
    response.headers()[header::CONTENT_TYPE].to_str().unwrap()
}

fn header_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn first_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn persisted(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn legacy_json_clients_get_200_and_no_data_for_request_errors() {
    let app = spawn_app().await;
    for (query, code) in [
        ("{", "GRAPHQL_PARSE_FAILED"),
        ("{ noSuchField }", "GRAPHQL_VALIDATION_FAILED"),
    ] {
        let response = post(&app, "application/json", json!({ "query": query })).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");
        assert!(content_type(&response).starts_with("application/json"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(first_code(&body), code);
        assert!(
            body.get("data").is_none(),
            "request error with data: {body}"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn graphql_response_json_clients_get_4xx_for_request_errors() {
    let app = spawn_app().await;
    let accept = "application/graphql-response+json, application/json;q=0.9";
    for query in [
        "{",
        "{ noSuchField }",
        "query A { __typename } query B { __typename }",
    ] {
        let response = post(&app, accept, json!({ "query": query })).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(content_type(&response).starts_with(GRJ));
        assert_eq!(
            header_of(response.headers(), "cache-control"),
            Some("no-store")
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body.get("data").is_none(),
            "request error with data: {body}"
        );
        assert!(!body["errors"].as_array().unwrap().is_empty());
    }

    // Execution errors are not request errors: 200 with `data`.
    let response = post(
        &app,
        GRJ,
        json!({ "query": "{ profileByEin(ein: \"bad\") { id } }" }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("data").is_some());
    assert_eq!(first_code(&body), "BAD_USER_INPUT");

    let response = post(&app, GRJ, json!({ "query": PROFILES })).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(content_type(&response).starts_with(GRJ));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "data": { "profiles": { "totalCount": 0, "nodes": [] } } })
    );
    app.finish().await;
}

#[tokio::test]
async fn accept_decides_the_media_type_and_406_when_none_fits() {
    let app = spawn_app().await;
    let query = json!({ "query": "{ __typename }" });
    for (accept, expected) in [
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        (GRJ, GRJ),
        (
            "application/graphql-response+json;q=0.2, application/json",
            "application/json",
        ),
    ] {
        let response = post(&app, accept, query.clone()).await;
        assert_eq!(response.status(), StatusCode::OK, "{accept}");
        assert!(content_type(&response).starts_with(expected), "{accept}");
        assert_eq!(header_of(response.headers(), "vary"), Some("accept"));
    }
    let response = post(&app, "text/csv", query).await;
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_code(&body), "NOT_ACCEPTABLE");
    app.finish().await;
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_errors() {
    let app = spawn_app().await;
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = app
            .client
            .post(app.url("/graphql"))
            .header(header::ACCEPT, "application/json")
            .body(body);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        request.send()
    };
    let cases: [(Option<&str>, &str, StatusCode, &str, &str); 7] = [
        (
            Some("text/plain"),
            "{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "application/json",
        ),
        (
            None,
            "{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "application/json",
        ),
        (
            Some("application/json"),
            "{\"query\":",
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "not valid JSON",
        ),
        (
            Some("application/json"),
            "NONSENSE",
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "not valid JSON",
        ),
        (
            Some("application/json"),
            "{\"qeury\": \"{ __typename }\"}",
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "no `query`",
        ),
        (
            Some("application/json; charset=utf-8"),
            "{\"query\": \"{ __typename }\", \"variables\": [7]}",
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "`variables` must be a JSON object",
        ),
        (
            Some("application/json"),
            "42",
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "JSON object",
        ),
    ];
    for (content_type, body, status, code, message) in cases {
        let response = send(content_type, body).await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(first_code(&json), code, "{json}");
        let text = json["errors"][0]["message"].as_str().unwrap();
        assert!(text.contains(message), "{text:?} lacks {message:?}");
    }
    app.finish().await;
}

#[tokio::test]
async fn get_runs_queries_with_variables() {
    let app = spawn_app().await;
    create_profile(
        &app,
        json!({ "name": "Alpha", "organizationType": "NONPROFIT" }),
    )
    .await;
    let response = get(
        &app,
        "application/json",
        &[
            (
                "query",
                "query Q($n: Int) { profiles(first: $n) { nodes { name } } }",
            ),
            ("variables", "{\"n\": 1}"),
            ("operationName", ""),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "data": { "profiles": { "nodes": [{ "name": "Alpha" }] } } })
    );

    let response = get(
        &app,
        "application/json",
        &[("query", "{ __typename }"), ("variables", "{")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    app.finish().await;
}

#[tokio::test]
async fn mutations_by_get_are_refused_with_405_and_never_run() {
    let app = spawn_app().await;
    let create = r#"mutation { createProfile(input: { name: "Sneaky", organizationType: NONPROFIT }) { id } }"#;
    let named = r#"query Read { __typename } mutation Write { createProfile(input: { name: "Sneaky", organizationType: NONPROFIT }) { id } }"#;
    for params in [
        vec![("query", create)],
        vec![("query", named), ("operationName", "Write")],
    ] {
        let response = get(&app, "application/json", &params).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header_of(response.headers(), "allow"), Some("POST"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(first_code(&body), "METHOD_NOT_ALLOWED");
    }
    // The query of the same document still runs by GET.
    let response = get(
        &app,
        "application/json",
        &[("query", named), ("operationName", "Read")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM profiles").await, 0);
    app.finish().await;
}

#[tokio::test]
async fn persisted_queries_round_trip_over_post_and_get() {
    let app = spawn_app().await;
    create_profile(
        &app,
        json!({ "name": "Alpha", "organizationType": "NONPROFIT" }),
    )
    .await;
    let hash = sha256(PROFILES);

    // Unknown hash: the client is asked for the query (200 for JSON clients, 400 otherwise).
    let response = post(
        &app,
        "application/json",
        json!({ "extensions": persisted(&hash) }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "errors": [{ "message": "PersistedQueryNotFound", "extensions": { "code": "PERSISTED_QUERY_NOT_FOUND" } }] })
    );
    let response = post(&app, GRJ, json!({ "extensions": persisted(&hash) })).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Query and hash: run and remembered.
    let expected =
        json!({ "data": { "profiles": { "totalCount": 1, "nodes": [{ "name": "Alpha" }] } } });
    let response = post(
        &app,
        GRJ,
        json!({ "query": PROFILES, "extensions": persisted(&hash) }),
    )
    .await;
    assert_eq!(response.json::<Value>().await.unwrap(), expected);

    // Hash only, by POST and by GET.
    let response = post(&app, GRJ, json!({ "extensions": persisted(&hash) })).await;
    assert_eq!(response.json::<Value>().await.unwrap(), expected);
    let extensions = persisted(&hash).to_string();
    let response = get(&app, GRJ, &[("extensions", &extensions)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("etag"));
    assert_eq!(response.json::<Value>().await.unwrap(), expected);
    app.finish().await;
}

#[tokio::test]
async fn persisted_queries_with_a_wrong_hash_are_refused_and_not_kept() {
    let app = spawn_app().await;
    let wrong = sha256("{ somethingElse }");
    let response = post(
        &app,
        GRJ,
        json!({ "query": PROFILES, "extensions": persisted(&wrong) }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["message"],
        "provided sha does not match query"
    );
    assert_eq!(first_code(&body), "BAD_REQUEST");

    let response = post(
        &app,
        "application/json",
        json!({ "extensions": persisted(&wrong) }),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_code(&body), "PERSISTED_QUERY_NOT_FOUND");
    app.finish().await;
}

#[tokio::test]
async fn a_persisted_mutation_cannot_be_replayed_by_get() {
    let app = spawn_app().await;
    let mutation = r#"mutation { createProfile(input: { name: "Once", organizationType: NONPROFIT }) { id } }"#;
    let hash = sha256(mutation);
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(EDITOR_KEY)
        .json(&json!({ "query": mutation, "extensions": persisted(&hash) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM profiles").await, 1);

    let extensions = persisted(&hash).to_string();
    let response = get(&app, GRJ, &[("extensions", &extensions)]).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.scalar("SELECT COUNT(*) FROM profiles").await, 1);
    app.finish().await;
}

/// With introspection turned off, a query for the schema is refused with a
/// code and a reason, not answered with `null`; `__typename` still works.
#[tokio::test]
async fn introspection_turned_off_is_an_error_not_a_null() {
    let ask = |app: &TestApp, query: &'static str| {
        let request = app
            .client
            .post(app.url("/graphql"))
            .header("accept", "application/json")
            .json(&json!({ "query": query }));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let schema = "{ __schema { queryType { name } } }";
    let open = spawn_app().await;
    assert_eq!(
        ask(&open, schema).await["data"]["__schema"]["queryType"]["name"],
        "QueryRoot"
    );
    open.finish().await;

    let api = catalynx::config::ApiConfig {
        disable_introspection: true,
        ..Default::default()
    };
    let closed = spawn_app_on(Backend::Sqlite, api).await.unwrap();
    for query in [
        schema,
        "{ __type(name: \"Profile\") { name } }",
        "query { ...F } fragment F on QueryRoot { __schema { types { name } } }",
    ] {
        let body = ask(&closed, query).await;
        assert_eq!(
            first_code(&body),
            "GRAPHQL_VALIDATION_FAILED",
            "{query}: {body}"
        );
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("introspection is turned off"), "{message}");
    }
    let body = ask(&closed, "{ __typename profiles { totalCount } }").await;
    assert_eq!(body["data"]["__typename"], "QueryRoot", "{body}");
    closed.finish().await;
}

/// Requests no route takes get the JSON error body and code every other
/// error of their endpoint has (GraphQL errors on `/graphql`), and a 405
/// still names the methods that are taken.
#[tokio::test]
async fn unknown_routes_and_methods_get_coded_json_errors() {
    let app = spawn_http_app(HttpConfig::default()).await;
    for (method, path, status, code, allow) in [
        (
            Method::PUT,
            "/graphql",
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            Some("GET,HEAD,POST"),
        ),
        (
            Method::DELETE,
            "/api/profiles/x",
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            Some("GET,HEAD"),
        ),
        (
            Method::GET,
            "/nonexistent",
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            None,
        ),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        let allowed = header_of(response.headers(), "allow").map(|a| a.replace(' ', ""));
        assert_eq!(allowed.as_deref(), allow, "{method} {path}");
        assert_eq!(
            header_of(response.headers(), "cache-control"),
            Some("no-store")
        );
        let body: Value = response.json().await.unwrap();
        let (found, detail) = if path == "/graphql" {
            (first_code(&body), &body["errors"][0]["message"])
        } else {
            (body["code"].as_str().unwrap(), &body["detail"])
        };
        assert_eq!(found, code, "{method} {path}: {body}");
        assert!(detail.as_str().unwrap().contains(path), "{body}");
    }
    app.finish().await;
}

#[tokio::test]
async fn batches_run_each_operation_up_to_the_limit() {
    let app = spawn_http_app(HttpConfig {
        max_batch_size: 2,
        ..HttpConfig::default()
    })
    .await;
    // Asked alone first, so that with the cache on the batch finds it stored.
    let alone = post(&app, GRJ, json!({ "query": "{ profiles { totalCount } }" })).await;
    assert_eq!(alone.status(), StatusCode::OK);
    let response = post(
        &app,
        GRJ,
        json!([
            { "query": "{ profiles { totalCount } }" },
            { "query": "{" },
        ]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body[0],
        json!({ "data": { "profiles": { "totalCount": 0 } } })
    );
    assert_eq!(first_code(&body[1]), "GRAPHQL_PARSE_FAILED");
    assert!(body[1].get("data").is_none());

    let item = json!({ "query": "{ __typename }" });
    for too_many in [json!([]), json!([item, item, item])] {
        let response = post(&app, GRJ, too_many).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("1 to 2")
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn cache_control_follows_the_schema_hints() {
    let app = spawn_app().await;
    let cache_control = |response: &Response| {
        header_of(response.headers(), "cache-control")
            .unwrap()
            .to_owned()
    };
    let response = post(&app, GRJ, json!({ "query": PROFILES })).await;
    assert_eq!(cache_control(&response), "public, max-age=10");
    assert!(response.headers().contains_key("etag"));

    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(READER_KEY)
        .json(&json!({ "query": PROFILES }))
        .send()
        .await
        .unwrap();
    assert_eq!(cache_control(&response), "private, max-age=10");

    // Nothing hinted: stored, but revalidated every time.
    let response = post(&app, GRJ, json!({ "query": "{ __typename }" })).await;
    assert_eq!(cache_control(&response), "public, no-cache");

    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(EDITOR_KEY)
        .json(&json!({ "query": r#"mutation { createProfile(input: { name: "A", organizationType: NONPROFIT }) { id } }"# }))
        .send()
        .await
        .unwrap();
    assert_eq!(cache_control(&response), "no-store");
    assert!(!response.headers().contains_key("etag"));

    for query in ["{ profileByEin(ein: \"bad\") { id } }", "{"] {
        let response = post(&app, "application/json", json!({ "query": query })).await;
        assert_eq!(cache_control(&response), "no-store", "{query}");
        assert!(!response.headers().contains_key("etag"));
    }
    app.finish().await;
}

#[tokio::test]
async fn etags_answer_304_for_post_and_get_and_change_after_a_mutation() {
    let app = spawn_app().await;
    create_profile(
        &app,
        json!({ "name": "Alpha", "organizationType": "NONPROFIT" }),
    )
    .await;
    let conditional_post = |etag: Option<String>| {
        let mut request = app
            .client
            .post(app.url("/graphql"))
            .header(header::ACCEPT, GRJ)
            .json(&json!({ "query": PROFILES }));
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        request.send()
    };
    let first = conditional_post(None).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = header_of(first.headers(), "etag").unwrap().to_owned();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");

    let again = conditional_post(Some(etag.clone())).await.unwrap();
    let (status, headers) = (again.status(), again.headers().clone());
    let body = again.bytes().await.unwrap();
    // The whole answer on failure: a 200 here has either errors (which
    // carry no ETag) or a body that differs from the first.
    assert_eq!(
        status,
        StatusCode::NOT_MODIFIED,
        "{headers:?} {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(header_of(&headers, "etag"), Some(etag.as_str()));
    assert_eq!(
        header_of(&headers, "cache-control"),
        Some("public, max-age=10")
    );
    assert!(body.is_empty());
    // The same `Vary` as the 200, which a cache needs to store the 304 under.
    let vary = |headers: &HeaderMap| {
        let mut vary: Vec<String> = headers
            .get_all(header::VARY)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        vary.sort();
        vary
    };
    assert_eq!(vary(&headers), vary(first.headers()));
    assert_eq!(vary(&headers), ["accept", "accept-encoding"]);

    // The same query by GET has the same body, so the same tag.
    let by_get = app
        .client
        .get(app.url("/graphql"))
        .header(header::ACCEPT, GRJ)
        .header(header::IF_NONE_MATCH, &etag)
        .query(&[("query", PROFILES)])
        .send()
        .await
        .unwrap();
    assert_eq!(by_get.status(), StatusCode::NOT_MODIFIED);

    create_profile(
        &app,
        json!({ "name": "Beta", "organizationType": "NONPROFIT" }),
    )
    .await;
    let changed = conditional_post(Some(etag.clone())).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(header_of(changed.headers(), "etag"), Some(etag.as_str()));
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["data"]["profiles"]["totalCount"], 2);
    app.finish().await;
}

/// Every object lists its fields in the order the query asks for them
/// (aliases, fragments and nested lists included), over POST, GET and in a
/// batch, whether the answer is built or stored.
#[tokio::test]
async fn responses_list_fields_in_the_order_the_query_asks() {
    let app = spawn_app().await;
    seed(&app, 3, 2).await;
    let query = "{ profiles(first: 3) { totalCount nodes { updatedAt ...Named \
                 top: opportunities(first: 2) { nodes { overallScore organizationName } } id } } } \
                 fragment Named on Profile { name opportunitiesCount }";
    let keys = [
        "profiles",
        "totalCount",
        "nodes",
        "updatedAt",
        "name",
        "opportunitiesCount",
        "top",
        "overallScore",
        "organizationName",
        "id",
    ];
    // Each key first appears where the first node's object puts it.
    let assert_in_order = |body: &str| {
        let at: Vec<usize> = keys
            .iter()
            .map(|k| body.find(&format!("\"{k}\":")).expect(k))
            .collect();
        assert!(at.is_sorted(), "keys at {at:?} in {body}");
    };
    for _ in 0..2 {
        // The second round is answered from the response cache.
        let response = post(&app, GRJ, json!({ "query": query })).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_in_order(&response.text().await.unwrap());
        let response = get(&app, GRJ, &[("query", query)]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_in_order(&response.text().await.unwrap());
    }
    let response = post(
        &app,
        GRJ,
        json!([{ "query": query }, { "query": "{ z: __typename a: __typename m: __typename }" }]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    let (first, second) = body.split_at(body.rfind(r#",{"data""#).unwrap());
    assert_in_order(first);
    assert_eq!(
        second,
        r#",{"data":{"z":"QueryRoot","a":"QueryRoot","m":"QueryRoot"}}]"#
    );
    app.finish().await;
}

/// A document can fail validation in as many places as it has arguments,
/// and a parse error quotes its line: neither may make the answer many
/// times the request.
#[tokio::test]
async fn error_lists_and_messages_are_bounded() {
    let app = spawn_app().await;
    let repeated = format!("{{ profile({}) {{ id }} }}", "id: \"x\" ".repeat(20_000));
    let response = post(&app, GRJ, json!({ "query": repeated })).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 101, "{}", errors.len());
    assert_eq!(errors[0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    let last = &errors[100];
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .ends_with("more errors like these are not listed"),
        "{last}"
    );
    assert_eq!(last["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");

    // One long line that fails to parse near its end.
    let long = format!("{{ profiles {{ {} }}", "totalCount ".repeat(50_000));
    let response = post(&app, GRJ, json!({ "query": long })).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let text = response.text().await.unwrap();
    assert!(text.len() < 4_000, "{} bytes", text.len());
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(first_code(&body), "GRAPHQL_PARSE_FAILED");
    app.finish().await;
}

/// With the resolver cache off every answer is built anew, its fields
/// finishing in whatever order they do: the bytes, and so the ETag, must
/// not depend on it.
#[tokio::test]
async fn concurrent_identical_queries_get_identical_bytes() {
    let cache = catalynx::config::CacheConfig {
        cache_enabled: false,
        ..Default::default()
    };
    let app = spawn_with(
        Backend::Sqlite,
        catalynx::config::ApiConfig::default(),
        cache,
    )
    .await
    .expect("SQLite is always there");
    seed(&app, 40, 6).await;
    let query = "{ profiles(first: 40) { totalCount nodes { name opportunitiesCount \
                 opportunities(first: 5) { totalCount nodes { organizationName overallScore } } } } }";
    // Orders vary with timing: several rounds of concurrent requests.
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.extend(
            futures_util::future::join_all((0..32).map(|_| async {
                let response = post(&app, GRJ, json!({ "query": query })).await;
                assert_eq!(response.status(), StatusCode::OK);
                let etag = header_of(response.headers(), "etag").unwrap().to_owned();
                (etag, response.bytes().await.unwrap())
            }))
            .await,
        );
    }
    let (etag, body) = &answers[0];
    let parsed: Value = serde_json::from_slice(body).unwrap();
    let nodes = parsed["data"]["profiles"]["nodes"]
        .as_array()
        .unwrap()
        .len();
    assert!(nodes > 30, "{parsed}");
    assert_eq!(parsed["data"]["profiles"]["totalCount"], nodes);
    for (other_etag, other_body) in &answers[1..] {
        if let Some(at) = (0..body.len().min(other_body.len())).find(|&i| body[i] != other_body[i])
        {
            let around = |b: &[u8]| {
                String::from_utf8_lossy(&b[at.saturating_sub(80)..])
                    .chars()
                    .take(160)
                    .collect::<String>()
            };
            panic!(
                "bodies differ at byte {at}:\n{}\n{}",
                around(body),
                around(other_body)
            );
        }
        assert_eq!(other_body.len(), body.len());
        assert_eq!(other_etag, etag);
    }
    app.finish().await;
}

#[tokio::test]
async fn responses_are_compressed_by_accept_encoding() {
    let app = spawn_app().await;
    seed(&app, 30, 2).await;
    let query =
        json!({ "query": "{ profiles(first: 30) { nodes { id name missionStatement } } }" });
    let plain = post(&app, GRJ, query.clone()).await;
    assert!(!plain.headers().contains_key("content-encoding"));
    let plain_etag = header_of(plain.headers(), "etag").unwrap().to_owned();
    let expected: Value = plain.json().await.unwrap();

    // Each asked for twice: with the cache on, stored responses keep their
    // compressed forms, made the first time; either way the answer is the same.
    for (accepted, coding) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("gzip, deflate, br, zstd", "br"),
        ("br;q=0, gzip", "gzip"),
        ("gzip", "gzip"),
        ("br", "br"),
    ] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header(header::ACCEPT, GRJ)
            .header(header::ACCEPT_ENCODING, accepted)
            .json(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(
            header_of(response.headers(), "content-encoding"),
            Some(coding),
            "{accepted}"
        );
        assert!(
            response.headers().get_all(header::VARY).iter().any(|v| v
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding")),
            "{accepted}: no Vary: accept-encoding"
        );
        let etag = header_of(response.headers(), "etag").unwrap().to_owned();
        assert_eq!(
            etag,
            format!("{}-{coding}\"", plain_etag.trim_end_matches('"'))
        );
        let compressed = response.bytes().await.unwrap();
        let mut text = String::new();
        match coding {
            "gzip" => flate2::read::GzDecoder::new(&compressed[..])
                .read_to_string(&mut text)
                .unwrap(),
            _ => brotli_decompressor::Decompressor::new(&compressed[..], 4096)
                .read_to_string(&mut text)
                .unwrap(),
        };
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);

        // The coding's tag revalidates too.
        let response = app
            .client
            .post(app.url("/graphql"))
            .header(header::ACCEPT, GRJ)
            .header(header::ACCEPT_ENCODING, accepted)
            .header(header::IF_NONE_MATCH, &etag)
            .json(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(response.headers(), "etag"), Some(etag.as_str()));
    }
    app.finish().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let app = spawn_http_app(HttpConfig {
        max_body_bytes: 1024,
        ..HttpConfig::default()
    })
    .await;
    let padding = " ".repeat(2000);
    let response = post(
        &app,
        GRJ,
        json!({ "query": format!("{{ __typename {padding} }}") }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_code(&body), "PAYLOAD_TOO_LARGE");
    let response = post(&app, GRJ, json!({ "query": "{ __typename }" })).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.finish().await;
}

/// A query string that cannot be read is answered in the format the client
/// accepts, as every other error of the endpoint.
#[tokio::test]
async fn a_bad_query_string_is_answered_in_the_accepted_format() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/graphql?query=%7B__typename%7D&query=%7B__typename%7D"))
        .header(header::ACCEPT, GRJ)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(content_type(&response).starts_with(GRJ));
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_code(&body), "BAD_REQUEST");
    app.finish().await;
}

#[tokio::test]
async fn requests_that_take_too_long_get_408() {
    let app = spawn_http_app(HttpConfig {
        request_timeout_secs: 1,
        ..HttpConfig::default()
    })
    .await;
    // A body that never finishes arriving keeps the request running.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\"",
        )
        .await
        .unwrap();
    let mut answer = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered before the test's own timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"REQUEST_TIMEOUT\""), "{answer}");
    app.finish().await;
}

/// Reads until the server closes `stream`, or fails after `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    let mut buffer = vec![0; 1024];
    loop {
        let read = tokio::time::timeout(limit, stream.read(&mut buffer))
            .await
            .expect("closed before the test's own timeout");
        if matches!(read, Ok(0) | Err(_)) {
            return started.elapsed();
        }
    }
}

/// A connection must send a whole request head within the head timeout,
/// however it trickles it, and may not sit idle longer: slow clients hold
/// no socket for ever. The server also stops while one is half-sent.
#[tokio::test]
async fn heads_sent_slowly_and_idle_connections_are_closed() {
    let app = spawn_http_app(HttpConfig {
        head_timeout_secs: 1,
        ..HttpConfig::default()
    })
    .await;
    let mut trickling = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    trickling
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if trickling
                .write_all(format!("X-Line-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        trickling
    });
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let waited = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    let mut trickling = trickle.await.unwrap();
    closed_within(&mut trickling, Duration::from_secs(5)).await;

    // One more half-sent head does not hold the shutdown past its timeout.
    let mut half = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(5), app.finish())
        .await
        .expect("stopped with a head half-sent");
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let app = spawn_http_app(HttpConfig {
        cors_origins: vec!["https://app.example.org".into()],
        ..HttpConfig::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header(header::ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.org").await.unwrap();
    assert_eq!(
        header_of(allowed.headers(), "access-control-allow-origin"),
        Some("https://app.example.org")
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    app.finish().await;

    // Without origins, no CORS headers at all.
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/graphql"))
        .header(header::ORIGIN, "https://app.example.org")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    app.finish().await;
}

#[tokio::test]
async fn an_invalid_cors_origin_stops_the_start() {
    let test_db = crate::helpers::TestDb::new(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let config = catalynx::config::ServeConfig {
        http: HttpConfig {
            cors_origins: vec!["app.example.org/path".into()],
            ..HttpConfig::default()
        },
        ..crate::helpers::serve_config()
    };
    let error = catalynx::server::RunningServer::start(test_db.connect().await, &config)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("--cors-origins"), "{error}");
}
