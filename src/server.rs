//! The HTTP server: GraphQL over HTTP (POST and GET), the GraphiQL
//! playground, health checks, and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::OperationType;
use async_graphql_axum::GraphQLRequest;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::cache::Cache;
use crate::config::{ApiConfig, ServeConfig};
use crate::db::Db;
use crate::graphql::loaders::Loaders;
use crate::graphql::schema::{self, AppSchema};
use crate::graphql::{ApiContext, limits};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// A request taking longer than this is answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared by every request; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    schema: AppSchema,
    db: Db,
    cache: Cache,
    batching: bool,
    bench_routes: bool,
}

impl AppState {
    pub fn new(db: Db, api: ApiConfig, cache: Cache) -> Self {
        let batching = !api.disable_loaders;
        let bench_routes = api.bench_routes;
        let context = ApiContext {
            db: db.clone(),
            config: api.clone(),
            cache: cache.clone(),
        };
        let schema = schema::build(&api, Some(context));
        Self {
            inner: Arc::new(Shared {
                schema,
                db,
                cache,
                batching,
                bench_routes,
            }),
        }
    }

    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }
}

/// The SDL of the schema.
pub fn sdl() -> String {
    schema::sdl()
}

/// The router, usable from tests without a socket.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/", get(playground))
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready));
    let router = if state.inner.bench_routes {
        router.merge(bench_routes())
    } else {
        router
    };
    router
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Largest body `/bench/ceiling` builds.
const MAX_CEILING_BYTES: usize = 16 * 1024 * 1024;

#[derive(serde::Deserialize)]
struct CeilingQuery {
    bytes: usize,
}

/// `GET /bench/ceiling?bytes=N`: a JSON body of exactly N bytes, built once
/// per size, so the load benchmark can compare a GraphQL answer with the
/// cost of the HTTP stack alone (same listener, layers and body size).
fn bench_routes() -> Router<AppState> {
    let bodies = Arc::new(std::sync::Mutex::new(HashMap::<usize, Bytes>::new()));
    let ceiling = move |Query(query): Query<CeilingQuery>| async move {
        let frame = br#"{"data":""}"#.len();
        if !(frame..=MAX_CEILING_BYTES).contains(&query.bytes) {
            return (StatusCode::BAD_REQUEST, "bytes out of range").into_response();
        }
        let body = bodies
            .lock()
            .expect("ceiling bodies lock")
            .entry(query.bytes)
            .or_insert_with(|| {
                let fill = "x".repeat(query.bytes - frame);
                Bytes::from(format!(r#"{{"data":"{fill}"}}"#))
            })
            .clone();
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    Router::new().route("/bench/ceiling", get(ceiling))
}

async fn playground() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.db().ping().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, async_graphql_axum::rejection::GraphQLRejection>,
) -> Response {
    match request {
        Err(_) if wants_html(&headers) => playground().await.into_response(),
        Err(rejection) => rejection.into_response(),
        Ok(request) => execute(state, &headers, Method::GET, request.into_inner()).await,
    }
}

async fn graphql_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> Response {
    execute(state, &headers, Method::POST, request.into_inner()).await
}

/// The operation a request would run, when its document parses.
fn operation_type(request: &async_graphql::Request) -> Option<OperationType> {
    let doc = async_graphql::parser::parse_query(&request.query).ok()?;
    let name = request.operation_name.as_deref();
    doc.operations
        .iter()
        .find(|(n, _)| name.is_none() || n.map(|n| n.as_str()) == name)
        .map(|(_, op)| op.node.ty)
}

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

async fn execute(
    state: AppState,
    headers: &HeaderMap,
    method: Method,
    request: async_graphql::Request,
) -> Response {
    // GET must never change data: browsers send GETs across sites freely.
    if method == Method::GET && operation_type(&request) == Some(OperationType::Mutation) {
        let mut response = (
            StatusCode::METHOD_NOT_ALLOWED,
            "mutations must be sent with POST",
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let request = request.data(Loaders::new(
        state.db(),
        state.cache(),
        state.inner.batching,
    ));
    let response = state.inner.schema.execute(request).await;
    let modern = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(GRAPHQL_RESPONSE_JSON));
    // With application/graphql-response+json, a request that never reached
    // execution (parse or validation failure) is a client error.
    let failed_early = response.data == async_graphql::Value::Null
        && response.errors.iter().any(|e| {
            e.extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .is_some_and(|c| {
                    *c == async_graphql::Value::from(limits::PARSE_FAILED)
                        || *c == async_graphql::Value::from(limits::VALIDATION_FAILED)
                })
        });
    let status = if modern && failed_early {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let content_type = if modern {
        GRAPHQL_RESPONSE_JSON
    } else {
        "application/json"
    };
    let body = match serde_json::to_vec(&response) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "response serialisation failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"errors": [{"message": "internal error", "extensions": {"code": "INTERNAL"}}]}))).into_response();
        }
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("valid response")
}

/// A running server: its address and a way to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Binds `config.listen` and serves in the background.
    pub async fn start(db: Db, config: &ServeConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "CATALYNX_LISTEN / --listen: cannot listen on {}: {e}",
                config.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let state = AppState::new(db, config.api.clone(), Cache::new(&config.cache));
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let router = app(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = signal.await;
                })
                .await
        });
        Ok(Self {
            addr,
            state,
            shutdown,
            task,
        })
    }

    /// Stops accepting connections, finishes in-flight requests, and returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await??;
        Ok(())
    }
}

/// Runs the server until ctrl-c or SIGTERM, then drains in-flight requests.
pub async fn serve(db: Db, config: ServeConfig) -> anyhow::Result<()> {
    let server = RunningServer::start(db, &config).await?;
    tracing::info!(
        "listening on http://{addr} (GraphQL: http://{addr}/graphql, playground: http://{addr}/)",
        addr = server.addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.stop().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
