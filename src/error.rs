//! One error type for the whole API. Each variant says what the client gets:
//! in GraphQL its `extensions.code`, over HTTP its status code too.

use async_graphql::ErrorExtensions;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sea_orm::{DbErr, SqlErr};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// `BAD_USER_INPUT`: the request asked for something invalid; nothing was written.
    #[error("{0}")]
    BadUserInput(String),
    /// `NOT_FOUND`: the named entity does not exist.
    #[error("{0}")]
    NotFound(String),
    /// `CONFLICT`: the write collides with existing data (e.g. a duplicate EIN).
    #[error("{0}")]
    Conflict(String),
    /// `INTERNAL` (HTTP 500): logged with its cause; the client sees only "internal error".
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    /// `BAD_REQUEST` (HTTP 400): the HTTP request itself is malformed (invalid
    /// JSON, no query, a persisted-query hash that does not match its query).
    #[error("{0}")]
    BadRequest(String),
    /// `METHOD_NOT_ALLOWED` (HTTP 405 with `Allow: POST`): a mutation sent by
    /// GET, refused before anything runs.
    #[error("mutations must be sent with POST")]
    MutationOverGet,
    /// `NOT_ACCEPTABLE` (HTTP 406): the `Accept` header allows no format the server writes.
    #[error("{0}")]
    NotAcceptable(String),
    /// `PAYLOAD_TOO_LARGE` (HTTP 413): the body exceeds `--max-body-bytes`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// `UNSUPPORTED_MEDIA_TYPE` (HTTP 415): the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// `PERSISTED_QUERY_NOT_FOUND`: the hash of an automatic persisted query is
    /// not known; the client sends the query text along with it.
    #[error("PersistedQueryNotFound")]
    PersistedQueryNotFound,
    /// `PERSISTED_QUERY_NOT_SUPPORTED`: persisted queries are turned off
    /// (`--persisted-queries 0`); the client sends full queries.
    #[error("PersistedQueryNotSupported")]
    PersistedQueryNotSupported,
}

impl AppError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput(message.into())
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::NotFound(format!("{what} {id:?} does not exist"))
    }

    /// The GraphQL `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUserInput(_) => "BAD_USER_INPUT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict(_) => "CONFLICT",
            Self::Internal(_) => "INTERNAL",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::MutationOverGet => "METHOD_NOT_ALLOWED",
            Self::NotAcceptable(_) => "NOT_ACCEPTABLE",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::PersistedQueryNotSupported => "PERSISTED_QUERY_NOT_SUPPORTED",
        }
    }

    /// A copy for another caller of a shared failure (single flight, loaders);
    /// the internal cause travels as text, already logged once.
    pub fn shared(&self) -> Self {
        match self {
            Self::BadUserInput(m) => Self::BadUserInput(m.clone()),
            Self::NotFound(m) => Self::NotFound(m.clone()),
            Self::Conflict(m) => Self::Conflict(m.clone()),
            Self::Internal(e) => Self::Internal(anyhow::anyhow!("{e:#}")),
            Self::BadRequest(m) => Self::BadRequest(m.clone()),
            Self::MutationOverGet => Self::MutationOverGet,
            Self::NotAcceptable(m) => Self::NotAcceptable(m.clone()),
            Self::PayloadTooLarge(m) => Self::PayloadTooLarge(m.clone()),
            Self::UnsupportedMediaType(m) => Self::UnsupportedMediaType(m.clone()),
            Self::PersistedQueryNotFound => Self::PersistedQueryNotFound,
            Self::PersistedQueryNotSupported => Self::PersistedQueryNotSupported,
        }
    }

    /// The HTTP status of this error when it ends a request.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadUserInput(_)
            | Self::BadRequest(_)
            | Self::PersistedQueryNotFound
            | Self::PersistedQueryNotSupported => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MutationOverGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// Logs the cause of an internal error; the client never sees it.
    pub fn log(&self) {
        if let AppError::Internal(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
    }

    /// The error as one GraphQL error object: `{ message, extensions: { code } }`.
    pub fn graphql_json(&self) -> serde_json::Value {
        self.log();
        serde_json::json!({ "message": self.to_string(), "extensions": { "code": self.code() } })
    }

    /// Prefixes a client-facing message, e.g. with the index of a batch item.
    pub fn context(self, prefix: impl std::fmt::Display) -> Self {
        match self {
            Self::BadUserInput(m) => Self::BadUserInput(format!("{prefix}: {m}")),
            Self::NotFound(m) => Self::NotFound(format!("{prefix}: {m}")),
            Self::Conflict(m) => Self::Conflict(format!("{prefix}: {m}")),
            internal => internal,
        }
    }
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                Self::Conflict("a profile with this EIN already exists".into())
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                Self::NotFound("the referenced profile does not exist".into())
            }
            _ => Self::Internal(anyhow::Error::new(err)),
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

/// Resolvers turn an `AppError` into a GraphQL error with `.extend()`
/// (async-graphql's `ResultExt`), which adds `extensions.code` and logs
/// internal causes; a plain `?` would lose the code.
impl ErrorExtensions for AppError {
    fn extend(&self) -> async_graphql::Error {
        self.log();
        let code = self.code();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| ext.set("code", code))
    }
}

/// The REST endpoints' error body, as the seed platform's clients read it:
/// `{ "detail": message, "code": CODE }` with the variant's status.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let body = serde_json::json!({ "detail": self.to_string(), "code": self.code() });
        let mut response = (self.status(), Json(body)).into_response();
        finish_error_headers(&self, &mut response);
        response
    }
}

/// Headers every error response carries: never cached, and `Allow` on 405.
pub fn finish_error_headers(error: &AppError, response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(error, AppError::MutationOverGet) {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// `.gql()` turns any error that maps to an `AppError` (database errors
/// included) into a GraphQL error with its code.
pub trait GqlResultExt<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T, E: Into<AppError>> GqlResultExt<T> for Result<T, E> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| e.into().extend())
    }
}
