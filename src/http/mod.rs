//! The HTTP surface around the schema: GraphQL over HTTP, persisted
//! queries, caching headers, the playground, operator endpoints, and the
//! layers every request passes through.

pub mod apq;
pub mod caching;
pub mod graphql;
pub mod limits;
pub mod listen;
pub mod negotiate;
pub mod observe;
pub mod ops;
pub mod playground;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::HttpConfig;
use crate::error::AppError;
use crate::metrics::Metrics;

/// How long browsers may reuse a CORS preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `--cors-origins`; `None` when no origin is allowed
/// (same origin only). Fails on an origin that is not a valid header value.
pub fn cors(config: &HttpConfig) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<&str> = config
        .cors_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| {
                parse_origin(o).ok_or_else(|| {
                    anyhow::anyhow!(
                        "CATALYNX_CORS_ORIGINS / --cors-origins: {o:?} is not an origin \
                         (scheme://host[:port], e.g. https://app.example.org)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::AUTHORIZATION,
                header::IF_NONE_MATCH,
            ])
            .expose_headers([header::ETAG, HeaderName::from_static("content-encoding")])
            .max_age(PREFLIGHT_MAX_AGE),
    ))
}

/// `scheme://host[:port]`, as browsers send it in `Origin`.
fn parse_origin(origin: &str) -> Option<HeaderValue> {
    let origin = origin.trim_end_matches('/');
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))?;
    if host.is_empty() || host.contains(['/', ' ', '?', '#', '@']) {
        return None;
    }
    HeaderValue::from_str(origin).ok()
}

/// A request refused before its handler ran (auth, load shedding), with the
/// error body of its endpoint: GraphQL errors on `/graphql`, the REST shape
/// (`{ detail, code }`) elsewhere.
pub fn refusal(path: &str, headers: &HeaderMap, error: AppError) -> Response {
    if path == "/graphql" {
        graphql::refusal(headers, error)
    } else {
        error.into_response()
    }
}

/// Answers a request still running after `limit` with 408 and its
/// endpoint's error body (tower-http's timeout sends an empty one).
async fn time_limit(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let mut headers = HeaderMap::new();
    if let Some(accept) = request.headers().get(header::ACCEPT) {
        headers.insert(header::ACCEPT, accept.clone());
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => refusal(&path, &headers, AppError::RequestTimeout),
    }
}

/// Wraps the routes in the layers every request passes, outermost first:
/// log and metrics, CORS, ETag coding suffix, compression, timeout, body limit.
pub fn layers(
    router: Router,
    config: &HttpConfig,
    cors: Option<CorsLayer>,
    metrics: Metrics,
) -> Router {
    let mut router = router
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            Duration::from_secs(config.request_timeout_secs),
            time_limit,
        ))
        .layer(
            CompressionLayer::new()
                .quality(CompressionLevel::Precise(caching::COMPRESSION_LEVEL as i32)),
        )
        .layer(axum::middleware::map_response(caching::tag_content_coding));
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router.layer(axum::middleware::from_fn_with_state(
        metrics,
        observe::observe,
    ))
}
