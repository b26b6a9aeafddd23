//! Endpoints for operators: liveness, readiness and Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::server::AppState;

/// Probes for load balancers and orchestrators: open to every caller.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// Endpoints for operators only (the server mounts them behind the admin role).
pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// The process is up and answering; says nothing about the database.
async fn health() -> Response {
    no_store((StatusCode::OK, "ok"))
}

/// The database answers: the instance can take traffic.
async fn ready(State(state): State<AppState>) -> Response {
    if state.db().ping().await {
        no_store((StatusCode::OK, "ready"))
    } else {
        no_store((StatusCode::SERVICE_UNAVAILABLE, "database unreachable"))
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.metrics().render(state.db(), state.capacity());
    text.push_str(&state.cache().stats().await.prometheus());
    no_store((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}
