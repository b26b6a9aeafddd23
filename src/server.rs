//! The HTTP server: shared state, the router, and graceful shutdown. The
//! endpoints live in [`crate::http`] and [`crate::rest`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::{Access, Principal, Role};
use crate::availability::Availability;
use crate::cache::Cache;
use crate::config::{ApiConfig, HttpConfig, ServeConfig};
use crate::db::Db;
use crate::error::AppError;
use crate::graphql::ApiContext;
use crate::graphql::limits::{self, RequestLimits};
use crate::graphql::loaders::Loaders;
use crate::graphql::schema::{self, AppSchema};
use crate::graphql::shape::{FieldTypes, Shape};
use crate::http::apq::PersistedQueries;
use crate::http::limits::Capacity;
use crate::metrics::Metrics;

/// Shared by every request; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    schema: AppSchema,
    /// Where a response's field errors put their nulls.
    field_types: FieldTypes,
    limits: RequestLimits,
    db: Db,
    cache: Cache,
    batching: bool,
    api: ApiConfig,
    http: HttpConfig,
    persisted_queries: PersistedQueries,
    metrics: Metrics,
    access: Access,
    capacity: Capacity,
    availability: Availability,
}

impl AppState {
    /// Fails when the API keys cannot be loaded.
    pub fn new(db: Db, cache: Cache, config: &ServeConfig) -> anyhow::Result<Self> {
        let access = Access::from_config(&config.security)?;
        let (api, http) = (config.api.clone(), config.http.clone());
        let batching = !api.disable_loaders;
        let context = ApiContext {
            db: db.clone(),
            config: api.clone(),
            cache: cache.clone(),
        };
        let schema = schema::build(&api, Some(context));
        Ok(Self {
            inner: Arc::new(Shared {
                field_types: FieldTypes::from_sdl(&schema.sdl()),
                schema,
                limits: schema::limits(&api),
                availability: Availability::watch(&db),
                db,
                cache,
                batching,
                api,
                persisted_queries: PersistedQueries::new(http.persisted_queries),
                http,
                metrics: Metrics::new(),
                access,
                capacity: Capacity::new(config.security.max_concurrent_requests),
            }),
        })
    }

    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    pub fn capacity(&self) -> &Capacity {
        &self.inner.capacity
    }

    pub fn availability(&self) -> &Availability {
        &self.inner.availability
    }

    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn api(&self) -> &ApiConfig {
        &self.inner.api
    }

    pub fn http(&self) -> &HttpConfig {
        &self.inner.http
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn persisted_queries(&self) -> &PersistedQueries {
        &self.inner.persisted_queries
    }

    /// Runs one GraphQL request against the schema, as `principal`, with
    /// this request's loaders.
    pub async fn execute(
        &self,
        request: async_graphql::Request,
        principal: &Principal,
    ) -> async_graphql::Response {
        // Before any entry is read: see every write acknowledged anywhere.
        self.cache().sync().await;
        self.execute_synced(request, principal).await
    }

    /// `execute` for a caller that has just brought the cache up to date
    /// (`Cache::sync`): with Redis, one round trip fewer.
    pub(crate) async fn execute_synced(
        &self,
        mut request: async_graphql::Request,
        principal: &Principal,
    ) -> async_graphql::Response {
        if let Err(error) = self.inner.limits.check(&mut request) {
            let mut response = async_graphql::Response::from_errors(vec![error]);
            limits::bound_errors(&mut response);
            return response;
        }
        // Built once the document is known to be within the limits.
        let operation = request.operation_name.clone();
        let shape = request
            .parsed_query()
            .ok()
            .and_then(|doc| Shape::of(doc, operation.as_deref(), &self.inner.field_types));
        let request = request
            .data(Loaders::new(self.db(), self.cache(), self.inner.batching))
            .data(principal.clone());
        let mut response = self.inner.schema.execute(request).await;
        limits::code_errors(&mut response);
        limits::bound_errors(&mut response);
        if let Some(shape) = shape {
            shape.apply(&mut response);
        }
        response
    }
}

/// The SDL of the schema.
pub fn sdl() -> String {
    schema::sdl()
}

/// The router with every endpoint and layer, usable from tests without a
/// socket. Fails on an invalid HTTP configuration (CORS origins, assets).
pub fn app(state: AppState) -> anyhow::Result<Router> {
    let http = state.http().clone();
    if let Some(dir) = &http.playground_assets {
        crate::http::playground::check_assets(dir)?;
    }
    let cors = crate::http::cors(&http)?;
    let access = |minimum: Role| {
        axum::middleware::from_fn_with_state(
            (state.access().clone(), minimum),
            crate::auth::require,
        )
    };
    // The API: callers checked (inner), and only as many at once as fit (outer).
    let api = Router::new()
        .merge(crate::http::graphql::routes())
        .merge(crate::rest::routes())
        .route_layer(access(Role::Reader))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::limits::shed,
        ));
    let routes = Router::new()
        .merge(api)
        .merge(crate::http::ops::admin_routes().route_layer(access(Role::Admin)))
        .merge(crate::http::playground::routes(
            http.playground_assets.as_deref(),
        ))
        .merge(crate::http::ops::routes());
    let routes = if state.api().bench_routes {
        routes.merge(bench_routes())
    } else {
        routes
    }
    // Last, so that they cover every route: the same JSON error body, with
    // a code, as every other error (axum's own are empty).
    .fallback(no_route)
    .method_not_allowed_fallback(no_method)
    .with_state(state.clone());
    Ok(crate::http::layers(
        routes,
        &http,
        cors,
        state.metrics().clone(),
    ))
}

async fn no_route(uri: Uri) -> AppError {
    AppError::NotFound(format!("no route for {}", uri.path()))
}

/// In the body its endpoint answers errors with: GraphQL errors on
/// `/graphql`, like the 405 of a mutation sent by GET.
async fn no_method(method: Method, uri: Uri, headers: HeaderMap) -> axum::response::Response {
    let error = AppError::MethodNotAllowed(format!("{} does not take {method}", uri.path()));
    crate::http::refusal(uri.path(), &headers, error)
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

/// A running server: its address and a way to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Binds `config.listen` and serves in the background.
    pub async fn start(db: Db, config: &ServeConfig) -> anyhow::Result<Self> {
        let mut cache = Cache::open(&config.cache, &db).await;
        if let Some(url) = config
            .cache
            .redis_url
            .as_deref()
            .filter(|_| config.cache.cache_enabled)
        {
            cache = cache.with_shared(url).await?;
        }
        let state = AppState::new(db, cache, config)?;
        let router = app(state.clone())?;
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "CATALYNX_LISTEN / --listen: cannot listen on {}: {e}",
                config.listen
            )
        })?;
        let addr = listener.local_addr()?;
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let follow = config.cache.cache_enabled.then(|| {
            state
                .cache()
                .clone()
                .follow_external_writes(state.db().read.clone())
        });
        let head_timeout = Duration::from_secs(config.http.head_timeout_secs);
        let task = tokio::spawn(async move {
            let serve = crate::http::listen::serve(listener, router, head_timeout, async move {
                let _ = signal.await;
            });
            // The poll lasts as long as the server.
            match follow {
                Some(follow) => tokio::select! {
                    served = serve => served,
                    never = follow => match never {},
                },
                None => serve.await,
            }
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
        self.task.await?;
        // No request runs any more: the persistent cache matches the database.
        self.state.cache().seal(self.state.db()).await;
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
