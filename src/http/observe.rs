//! One log line and the HTTP metrics per request, with the GraphQL
//! requests refused before any operation ran.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::Metrics;

/// Set by the GraphQL handler on its response: the operation's metric label,
/// for the request log line.
#[derive(Clone, Debug)]
pub struct OperationName(pub String);

/// Set on a GraphQL response refused before any operation ran (malformed,
/// unacceptable, unauthenticated, shed, ...): its error code, counted here
/// so that every layer's refusals are.
#[derive(Clone, Copy, Debug)]
pub struct Refused(pub &'static str);

/// Wraps every request in a span, then logs method, path, status, GraphQL
/// operation and duration, and counts it by route (the route template, so
/// ids in paths do not make new label values).
pub async fn observe(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    // `principal` is filled in by the auth layer, for the routes that have one.
    let span = tracing::info_span!(
        "request",
        %method,
        %path,
        principal = tracing::field::Empty
    );
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.observe_http(method.as_str(), &route, status, elapsed);
    if let Some(Refused(code)) = response.extensions().get() {
        metrics.observe_refused(code);
    }
    let operation = response
        .extensions()
        .get::<OperationName>()
        .map(|o| o.0.as_str());
    span.in_scope(|| {
        tracing::info!(
            status,
            operation,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}
