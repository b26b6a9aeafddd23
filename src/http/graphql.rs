//! GraphQL over HTTP (the spec's current draft): POST with a JSON body (one
//! operation, or a batch as a JSON array) and GET with query parameters.
//!
//! The request is parsed here rather than by async-graphql-axum so that each
//! failure gets its own status and a JSON body that says what is wrong: 406
//! for an `Accept` we cannot serve, 415 for a body that is not JSON, 413 for
//! one too large, 400 for one that is not a GraphQL request, 405 for a GET
//! mutation (never executed: browsers send GETs across sites freely).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{CacheControl, ErrorExtensions, Variables};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::caching::{self, Cacheability};
use super::negotiate::{self, ResponseFormat};
use super::observe::{OperationName, Refused};
use super::playground;
use crate::auth::{Principal, Role};
use crate::cache::Freshness;
use crate::cache::responses::Keep;
use crate::error::{AppError, finish_error_headers};
use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/graphql", get(graphql_get).post(graphql_post))
}

/// The request parameters, as POSTed in JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Value>,
    extensions: Option<Map<String, Value>>,
}

/// The request parameters of a GET: `variables` and `extensions` are JSON text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

impl GetParams {
    fn into_params(self) -> Result<Params, AppError> {
        let json = |name: &str, text: Option<String>| -> Result<Option<Value>, AppError> {
            text.map(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| AppError::BadRequest(format!("`{name}` is not valid JSON: {e}")))
            })
            .transpose()
        };
        let extensions = match json("extensions", self.extensions)? {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => {
                return Err(AppError::BadRequest(
                    "`extensions` must be a JSON object".into(),
                ));
            }
        };
        Ok(Params {
            query: self.query,
            operation_name: self.operation_name,
            variables: json("variables", self.variables)?,
            extensions,
        })
    }
}

async fn graphql_get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params: GetParams = match serde_urlencoded::from_str(raw.as_deref().unwrap_or_default()) {
        Ok(params) => params,
        Err(e) => {
            // Answered in the format the client accepts, as every other error.
            let error = AppError::BadRequest(format!("invalid query string: {e}"));
            return match negotiate::response_format(&headers) {
                Ok(format) => error_response(error, Some(format)),
                Err(refused) => error_response(refused, None),
            };
        }
    };
    // A browser opening the endpoint gets the playground.
    if params.query.is_none() && params.extensions.is_none() && negotiate::wants_html(&headers) {
        return playground::page(State(state)).await;
    }
    let format = match negotiate::response_format(&headers) {
        Ok(format) => format,
        Err(e) => return error_response(e, None),
    };
    match params.into_params() {
        Ok(params) => single(&state, &principal, &headers, Method::GET, params, format).await,
        Err(e) => error_response(e, Some(format)),
    }
}

async fn graphql_post(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let format = match negotiate::response_format(&headers) {
        Ok(format) => format,
        Err(e) => return error_response(e, None),
    };
    match parse_body(&state, &headers, body) {
        Ok(Payload::Single(params)) => {
            single(&state, &principal, &headers, Method::POST, params, format).await
        }
        Ok(Payload::Batch(items)) => batch(&state, &principal, &headers, items, format).await,
        Err(e) => error_response(e, Some(format)),
    }
}

/// A POST body: one request or a batch.
enum Payload {
    Single(Params),
    Batch(Vec<Params>),
}

fn parse_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Payload, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(negotiate::APPLICATION_JSON) {
        return Err(AppError::UnsupportedMediaType(format!(
            "send the request as {} (got {:?})",
            negotiate::APPLICATION_JSON,
            content_type
        )));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::body_too_large(state.http().max_body_bytes)
        } else {
            AppError::BadRequest(rejection.body_text())
        }
    })?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    let params = |value: Value| {
        serde_json::from_value::<Params>(value)
            .map_err(|e| AppError::BadRequest(format!("not a GraphQL request: {e}")))
    };
    match value {
        Value::Array(items) => {
            let max = state.http().max_batch_size;
            if max == 0 {
                return Err(AppError::BadRequest(
                    "batched requests are turned off".into(),
                ));
            }
            if items.is_empty() || items.len() > max {
                return Err(AppError::BadRequest(format!(
                    "a batch holds 1 to {max} operations, got {}",
                    items.len()
                )));
            }
            Ok(Payload::Batch(
                items.into_iter().map(params).collect::<Result<_, _>>()?,
            ))
        }
        value @ Value::Object(_) => Ok(Payload::Single(params(value)?)),
        _ => Err(AppError::BadRequest(
            "the body must be a JSON object (or an array of them for a batch)".into(),
        )),
    }
}

/// One operation, run.
struct Outcome {
    response: async_graphql::Response,
    kind: Option<OperationType>,
    label: String,
    /// Failed before execution (parse, validation, unknown operation):
    /// the response has no `data`.
    request_error: bool,
    /// The stored response, when it came from the response cache.
    cached: Option<Arc<crate::cache::responses::Stored>>,
    /// Where to keep the body for the next identical query, the
    /// generations it was made under and until when.
    keep: Option<Keep>,
}

impl Outcome {
    fn cacheability(&self) -> Cacheability {
        if self.kind == Some(OperationType::Query) && self.response.errors.is_empty() {
            Cacheability::Read(self.response.cache_control)
        } else {
            Cacheability::NoStore
        }
    }

    /// The response's body: the stored one for a cache hit, otherwise
    /// written straight from async-graphql's values, whose objects are
    /// already in the document's order (see
    /// [`Shape`](crate::graphql::shape::Shape)).
    fn body(&self) -> Bytes {
        if let Some(stored) = &self.cached {
            return stored.body.clone();
        }
        let written = if self.request_error {
            // A request error has no `data` (GraphQL over HTTP).
            serde_json::to_vec(&RequestError {
                errors: &self.response.errors,
                extensions: &self.response.extensions,
            })
        } else {
            serde_json::to_vec(&self.response)
        };
        written.map(Bytes::from).unwrap_or_else(|e| {
            let error = AppError::Internal(anyhow::Error::new(e).context("serialising a response"));
            RequestError::body(&error)
        })
    }
}

/// The body of a request error: the errors, and no `data`.
#[derive(Serialize)]
struct RequestError<'a> {
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, async_graphql::Value>,
}

impl RequestError<'_> {
    /// The body of `error` alone.
    fn body(error: &AppError) -> Bytes {
        let body = RequestError {
            errors: &[error.server_error()],
            extensions: &BTreeMap::new(),
        };
        Bytes::from(serde_json::to_vec(&body).expect("an error serialises"))
    }
}

/// The name and type of the operation a document would run, when it can tell.
fn select_operation(
    doc: &ExecutableDocument,
    name: Option<&str>,
) -> Option<(Option<String>, OperationType)> {
    crate::graphql::operation(doc, name).map(|(n, op)| (n.map(|n| n.to_string()), op.node.ty))
}

/// A request error answered as a GraphQL response, for a batch item.
fn failed(state: &AppState, error: AppError) -> Outcome {
    state.metrics().observe_refused(error.code());
    Outcome {
        response: async_graphql::Response::from_errors(vec![error.server_error()]),
        kind: None,
        label: "refused".into(),
        request_error: true,
        cached: None,
        keep: None,
    }
}

/// Runs a mutation in a task of its own, which goes on when the request is
/// dropped (the client went away, the request timed out): dropped between
/// its COMMIT and the invalidation after it, a write was kept while every
/// replica went on serving what it replaced until the entries expired.
async fn run_to_the_end(
    state: &AppState,
    principal: &Principal,
    request: async_graphql::Request,
) -> async_graphql::Response {
    let state = state.clone();
    let principal = principal.clone();
    let task = tokio::spawn(
        async move { state.execute_synced(request, &principal).await }
            .instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(response) => response,
        // A panic stays the request's own, as if the mutation had run inline.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down under it.
        Err(_) => async_graphql::Response::from_errors(vec![
            AppError::Unavailable("the server is shutting down; retry".into())
                .extend()
                .into_server_error(async_graphql::Pos::default()),
        ]),
    }
}

async fn run(
    state: &AppState,
    principal: &Principal,
    method: &Method,
    params: Params,
) -> Result<Outcome, AppError> {
    let persisted = params
        .extensions
        .as_ref()
        .and_then(|e| e.get("persistedQuery"));
    let resolved = state.persisted_queries().resolve(params.query, persisted)?;
    let variables_json = match params.variables {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(AppError::BadRequest(
                "`variables` must be a JSON object".into(),
            ));
        }
    };
    // An empty operation name means none (GraphQL over HTTP).
    let operation_name = params.operation_name.filter(|n| !n.is_empty());

    // Before any entry is read (the stored responses included), and before
    // the generations a response is kept under are read: see every write
    // acknowledged anywhere. Once per request (one Redis round trip).
    state.cache().sync().await;
    // A repeated query: its stored body, unless a write came in since. Only
    // successful queries are stored, so a hit needs no parsing (a fifth of
    // a hit's time) to know it is a query that may be answered here.
    let keep = state.cache().response_deps().map(|deps| {
        (
            state
                .cache()
                .response_key(&resolved.query, operation_name.as_deref(), &variables_json),
            deps,
        )
    });
    if let Some((key, _)) = &keep {
        let started = Instant::now();
        if let Some(stored) = state.cache().response(key).await {
            // The text ran successfully before: an APQ registration holds.
            if let Some(hash) = resolved.register {
                state.persisted_queries().register(hash, &resolved.query);
            }
            state
                .metrics()
                .observe_operation(&stored.label, "query", started.elapsed(), &[]);
            let mut response = async_graphql::Response::default();
            response.cache_control = async_graphql::CacheControl {
                public: stored.public,
                max_age: stored.max_age,
            };
            return Ok(Outcome {
                response,
                kind: Some(OperationType::Query),
                label: stored.label.clone(),
                request_error: false,
                cached: Some(stored),
                keep: None,
            });
        }
    }

    let variables = Variables::from_json(variables_json);
    let doc = async_graphql::parser::parse_query(&resolved.query).ok();
    let selected = doc
        .as_ref()
        .and_then(|d| select_operation(d, operation_name.as_deref()));
    let kind = selected.as_ref().map(|(_, kind)| *kind);
    if kind == Some(OperationType::Mutation) {
        if *method == Method::GET {
            return Err(AppError::MutationOverGet);
        }
        // Refused whole, with its HTTP status, before anything runs; the
        // mutation fields' guards refuse it again inside the schema.
        principal.require(Role::Editor)?;
    }
    let label = state
        .metrics()
        .operation_label(selected.as_ref().and_then(|(n, _)| n.as_deref()));

    // Only queries are kept for the next identical request.
    let keep = keep.filter(|_| kind == Some(OperationType::Query));

    let mut request = async_graphql::Request::new(resolved.query.clone()).variables(variables);
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    if let Some(doc) = doc {
        // Parsed once: the schema's own parse hooks still run on it.
        request.set_parsed_query(doc);
    }
    let started = Instant::now();
    // Notes the cached values the query uses: its response is kept no
    // longer than the first of them may be served.
    let used = keep.as_ref().map(|_| Freshness::new());
    let response = if kind == Some(OperationType::Mutation) {
        run_to_the_end(state, principal, request).await
    } else {
        Freshness::scope(used.clone(), state.execute_synced(request, principal)).await
    };
    let elapsed = started.elapsed();

    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    if !request_error && let Some(hash) = resolved.register {
        state.persisted_queries().register(hash, &resolved.query);
    }
    let codes: Vec<&str> = response
        .errors
        .iter()
        .map(
            |e| match e.extensions.as_ref().and_then(|x| x.get("code")) {
                Some(async_graphql::Value::String(code)) => known_code(code),
                _ => "OTHER",
            },
        )
        .collect();
    let kind_label = match kind {
        Some(OperationType::Query) => "query",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        None => "unknown",
    };
    state
        .metrics()
        .observe_operation(&label, kind_label, elapsed, &codes);
    // Responses with errors, or marked no-cache, are not kept.
    let keep = keep
        .zip(used)
        .filter(|_| response.errors.is_empty() && response.cache_control.max_age >= 0)
        .map(|((key, deps), used)| Keep {
            key,
            deps,
            expires: state.cache().response_expiry(started, &used),
        });
    Ok(Outcome {
        response,
        kind,
        label,
        request_error,
        cached: None,
        keep,
    })
}

/// Error codes the API produces, as metric labels; anything else is `OTHER`
/// (a label value must not come from the client).
fn known_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "BAD_USER_INPUT",
        "NOT_FOUND",
        "CONFLICT",
        "FORBIDDEN",
        "UNAUTHENTICATED",
        "SERVICE_UNAVAILABLE",
        "READ_ONLY",
        "REQUEST_TIMEOUT",
        "INTERNAL",
        crate::graphql::limits::PARSE_FAILED,
        crate::graphql::limits::VALIDATION_FAILED,
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("OTHER")
}

async fn single(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    method: Method,
    params: Params,
    format: ResponseFormat,
) -> Response {
    let mut outcome = match run(state, principal, &method, params).await {
        Ok(outcome) => outcome,
        Err(e) => return error_response(e, Some(format)),
    };
    let cacheability = outcome.cacheability();
    let (body, coding, tag) = match &outcome.cached {
        Some(stored) => {
            let coding = caching::Coding::preferred(headers)
                .filter(|_| stored.body.len() >= caching::MIN_COMPRESSED_BYTES);
            let body = coding.map_or_else(|| stored.body.clone(), |c| stored.encoded(c));
            (body, coding, Some(stored.etag.clone()))
        }
        None => {
            let body = outcome.body();
            let tag = matches!(cacheability, Cacheability::Read(_)).then(|| caching::etag(&body));
            (body, None, tag)
        }
    };
    if let (Some(keep), Some(tag)) = (outcome.keep.take(), &tag) {
        let cc = outcome.response.cache_control;
        state
            .cache()
            .keep_response(
                keep,
                body.clone(),
                tag.clone(),
                cc.max_age,
                cc.public,
                outcome.label.clone(),
            )
            .await;
    }
    let mut response = if outcome.request_error && format == ResponseFormat::GraphqlResponseJson {
        Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, format.content_type())
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::from(body))
            .expect("valid response")
    } else {
        caching::respond_tagged(
            headers,
            format.content_type(),
            body,
            coding,
            cacheability,
            tag,
        )
    };
    finish(&mut response, outcome.label);
    response
}

async fn batch(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    items: Vec<Params>,
    format: ResponseFormat,
) -> Response {
    let mut outcomes = Vec::with_capacity(items.len());
    for params in items {
        outcomes.push(match run(state, principal, &Method::POST, params).await {
            Ok(outcome) => outcome,
            Err(e) => failed(state, e),
        });
    }
    // Cacheable only when every item is; then the tightest hint of them all.
    let cacheability = outcomes
        .iter()
        .map(Outcome::cacheability)
        .try_fold(None::<CacheControl>, |merged, c| match c {
            Cacheability::NoStore => None,
            Cacheability::Read(hint) => Some(Some(merge(merged, hint))),
        })
        .flatten()
        .map_or(Cacheability::NoStore, Cacheability::Read);
    let mut body = vec![b'['];
    for (i, outcome) in outcomes.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&outcome.body());
    }
    body.push(b']');
    let mut response = caching::respond(headers, format.content_type(), body.into(), cacheability);
    finish(&mut response, "batch".into());
    response
}

/// Two cache hints combined as async-graphql combines a query's fields:
/// private wins, `-1` (no-cache) wins, otherwise the shortest positive age.
fn merge(merged: Option<CacheControl>, hint: CacheControl) -> CacheControl {
    let Some(merged) = merged else {
        return hint;
    };
    CacheControl {
        public: merged.public && hint.public,
        max_age: match (merged.max_age, hint.max_age) {
            (-1, _) | (_, -1) => -1,
            (a, 0) => a,
            (0, b) => b,
            (a, b) => a.min(b),
        },
    }
}

/// Headers every GraphQL response carries, and the operation for the request log.
fn finish(response: &mut Response, label: String) {
    // Appended: a stored response sent compressed varies by Accept-Encoding too.
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept"));
    response.extensions_mut().insert(OperationName(label));
}

/// A request refused before the handler ran (auth, load shedding), in the
/// format the client accepts.
pub fn refusal(headers: &HeaderMap, error: AppError) -> Response {
    error_response(error, negotiate::response_format(headers).ok())
}

/// An HTTP-level failure as a GraphQL error body. `format` is the negotiated
/// one; `None` when negotiation itself failed (the body is then plain JSON).
/// Counted as refused by the metrics layer, whichever layer refused it.
fn error_response(error: AppError, format: Option<ResponseFormat>) -> Response {
    // A well-formed request whose persisted query is unknown is a request
    // error: 200 for legacy clients, as for a query that fails to parse.
    let request_error = matches!(
        error,
        AppError::PersistedQueryNotFound | AppError::PersistedQueryNotSupported
    );
    let status = if request_error && format == Some(ResponseFormat::Json) {
        StatusCode::OK
    } else {
        error.status()
    };
    let content_type = format.unwrap_or(ResponseFormat::Json).content_type();
    let mut response = (
        status,
        [(header::CONTENT_TYPE, content_type)],
        RequestError::body(&error),
    )
        .into_response();
    finish_error_headers(&error, &mut response);
    finish(&mut response, "refused".into());
    response.extensions_mut().insert(Refused(error.code()));
    response
}
