//! `GET /bench/ceiling`: served only with `--bench-routes`, with a body of
//! exactly the asked size.

use catalynx::config::ApiConfig;

use crate::helpers::{Backend, spawn_app, spawn_app_on};

#[tokio::test]
async fn ceiling_route_is_off_by_default() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/bench/ceiling?bytes=100"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 404);
    app.finish().await;
}

#[tokio::test]
async fn ceiling_route_serves_json_of_the_asked_size() {
    let api = ApiConfig {
        bench_routes: true,
        ..ApiConfig::default()
    };
    let app = spawn_app_on(Backend::Sqlite, api).await.unwrap();

    let mut bodies = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .get(app.url("/bench/ceiling?bytes=5000"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.bytes().await.unwrap());
    }
    let too_small = app
        .client
        .get(app.url("/bench/ceiling?bytes=3"))
        .send()
        .await
        .unwrap();

    assert_eq!(bodies[0].len(), 5000);
    assert_eq!(bodies[0], bodies[1]);
    let json: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert!(json["data"].is_string());
    assert_eq!(too_small.status(), 400);
    app.finish().await;
}
