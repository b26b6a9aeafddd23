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
    /// `METHOD_NOT_ALLOWED` (HTTP 405 with `Allow`): a route asked with a
    /// method it does not take.
    #[error("{0}")]
    MethodNotAllowed(String),
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
    /// `UNAUTHENTICATED` (HTTP 401 with `WWW-Authenticate: Bearer`): no API key
    /// where one is needed, or an unknown or malformed one; nothing ran.
    #[error("{0}")]
    Unauthenticated(String),
    /// `FORBIDDEN` (HTTP 403): the API key's role does not allow this, or the
    /// server is read-only (no keys configured); nothing ran.
    #[error("{0}")]
    Forbidden(String),
    /// `SERVICE_UNAVAILABLE` (HTTP 503 with `Retry-After`): the server is at
    /// capacity, or the database is busy or unreachable; retrying may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// `READ_ONLY` (HTTP 503): the database cannot be written (a read-only
    /// file or replica); reads still work, nothing was written.
    #[error("the database is read-only: writes are refused, reads still work")]
    ReadOnly,
    /// `REQUEST_TIMEOUT` (HTTP 408): the request ran past `--request-timeout-secs`.
    /// A mutation among it still runs to its end.
    #[error("the request took longer than the server allows")]
    RequestTimeout,
}

impl AppError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput(message.into())
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::NotFound(format!("{what} {id:?} does not exist"))
    }

    /// A request body over `--max-body-bytes` (`limit`).
    pub fn body_too_large(limit: usize) -> Self {
        Self::PayloadTooLarge(format!("the request body exceeds {limit} bytes"))
    }

    /// The GraphQL `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUserInput(_) => "BAD_USER_INPUT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict(_) => "CONFLICT",
            Self::Internal(_) => "INTERNAL",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::MutationOverGet | Self::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            Self::NotAcceptable(_) => "NOT_ACCEPTABLE",
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::PersistedQueryNotSupported => "PERSISTED_QUERY_NOT_SUPPORTED",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::Unavailable(_) => "SERVICE_UNAVAILABLE",
            Self::ReadOnly => "READ_ONLY",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
        }
    }

    /// A copy for another caller of a shared failure (single flight, loaders);
    /// the internal cause travels as text, and is logged with each copy that
    /// reaches a client.
    pub fn shared(&self) -> Self {
        match self {
            Self::BadUserInput(m) => Self::BadUserInput(m.clone()),
            Self::NotFound(m) => Self::NotFound(m.clone()),
            Self::Conflict(m) => Self::Conflict(m.clone()),
            Self::Internal(e) => Self::Internal(anyhow::anyhow!("{e:#}")),
            Self::BadRequest(m) => Self::BadRequest(m.clone()),
            Self::MutationOverGet => Self::MutationOverGet,
            Self::MethodNotAllowed(m) => Self::MethodNotAllowed(m.clone()),
            Self::NotAcceptable(m) => Self::NotAcceptable(m.clone()),
            Self::PayloadTooLarge(m) => Self::PayloadTooLarge(m.clone()),
            Self::UnsupportedMediaType(m) => Self::UnsupportedMediaType(m.clone()),
            Self::PersistedQueryNotFound => Self::PersistedQueryNotFound,
            Self::PersistedQueryNotSupported => Self::PersistedQueryNotSupported,
            Self::Unauthenticated(m) => Self::Unauthenticated(m.clone()),
            Self::Forbidden(m) => Self::Forbidden(m.clone()),
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::ReadOnly => Self::ReadOnly,
            Self::RequestTimeout => Self::RequestTimeout,
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
            Self::MutationOverGet | Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) | Self::ReadOnly => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Logs the cause of an internal error; the client never sees it.
    pub fn log(&self) {
        if let AppError::Internal(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
    }

    /// The error as one GraphQL error: `{ message, extensions: { code } }`,
    /// written in that order, as async-graphql writes field errors.
    pub fn server_error(&self) -> async_graphql::ServerError {
        self.log();
        let mut error = async_graphql::ServerError::new(self.to_string(), None);
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", self.code());
        error
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
            _ => match DbFault::of(&err) {
                Some(fault) => {
                    // The client learns the kind of fault; the log keeps the cause.
                    tracing::warn!(error = %err, "database fault");
                    fault.into()
                }
                None => Self::Internal(anyhow::Error::new(err)),
            },
        }
    }
}

/// Database failures that are not bugs: the client gets an answer that says
/// which, instead of `INTERNAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DbFault {
    /// Locked by another writer past the busy timeout, or no pooled connection in time.
    Busy,
    /// Cannot be reached (PostgreSQL down or restarting, connection lost).
    Unreachable,
    /// Cannot be written (read-only file, directory or replica).
    ReadOnly,
    /// Out of disk or memory.
    Full,
    /// Cancelled by PostgreSQL's statement timeout (`--pg-statement-timeout-ms`).
    TimedOut,
    /// A value the database refuses to store or compare (PostgreSQL's data
    /// exceptions: out of range, a character it cannot hold). Input is
    /// validated before it gets there; this keeps whatever slips through a
    /// client's error.
    Unstorable,
}

impl DbFault {
    fn of(err: &DbErr) -> Option<Self> {
        use sea_orm::RuntimeErr;
        use sea_orm::sqlx::Error as Sqlx;
        let sqlx = match err {
            DbErr::ConnectionAcquire(_) => return Some(Self::Busy),
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
            _ => return None,
        };
        match &**sqlx {
            Sqlx::PoolTimedOut => Some(Self::Busy),
            Sqlx::Io(_) | Sqlx::Tls(_) | Sqlx::PoolClosed | Sqlx::WorkerCrashed => {
                Some(Self::Unreachable)
            }
            Sqlx::Database(e) => {
                let code = e.code()?;
                // By the driver, not by the code's form: many SQLSTATEs are
                // digits too (22021 would read as SQLITE_BUSY).
                if e.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
                    .is_some()
                {
                    // SQLite extended result codes: the primary code is the low byte.
                    return match code.parse::<i32>().ok()? & 0xff {
                        5 | 6 => Some(Self::Busy), // SQLITE_BUSY, SQLITE_LOCKED
                        8 => Some(Self::ReadOnly), // SQLITE_READONLY
                        13 => Some(Self::Full),    // SQLITE_FULL
                        _ => None,
                    };
                }
                // PostgreSQL SQLSTATEs.
                match code.as_ref() {
                    "25006" => Some(Self::ReadOnly), // read_only_sql_transaction (a standby)
                    "55P03" | "40P01" => Some(Self::Busy), // lock_not_available, deadlock
                    "57014" => Some(Self::TimedOut), // query_canceled
                    c if c.starts_with("08") || c.starts_with("57P") => {
                        Some(Self::Unreachable) // connection exception, shutting down
                    }
                    c if c.starts_with("53") => Some(Self::Full), // insufficient resources
                    c if c.starts_with("22") => Some(Self::Unstorable), // data exception
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl From<DbFault> for AppError {
    fn from(fault: DbFault) -> Self {
        match fault {
            DbFault::Busy => Self::Unavailable("the database is busy; retry shortly".into()),
            DbFault::Unreachable => {
                Self::Unavailable("the database is unreachable; retry shortly".into())
            }
            DbFault::ReadOnly => Self::ReadOnly,
            DbFault::Full => {
                Self::Unavailable("the database is out of space or memory; retry later".into())
            }
            DbFault::TimedOut => Self::Unavailable(
                "the database did not answer within the statement timeout; narrow the request or retry later"
                    .into(),
            ),
            DbFault::Unstorable => Self::bad_input(
                "a value is out of the range or holds a character the database cannot store",
            ),
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

/// Headers every error response carries: never cached, `Allow` on 405, the
/// auth scheme on 401, and when to retry on a passing 503.
pub fn finish_error_headers(error: &AppError, response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match error {
        AppError::MutationOverGet => {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        AppError::Unauthenticated(_) => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"catalynx\""),
            );
        }
        AppError::Unavailable(_) => {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        _ => {}
    }
}

/// `Retry-After` of a 503 that passes: long enough for a burst to drain.
pub const RETRY_AFTER_SECS: &str = "1";

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

/// `error` and its causes on one line, `a: b: c`, each cause once: some
/// errors (sqlx's database errors) repeat their source in their own
/// message, which `{:#}` would print twice.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "error returned from database: {}", self.0)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let cause = std::io::Error::other("database \"x\" does not exist");
        let error = anyhow::Error::new(Repeats(cause)).context("cannot connect");
        assert_eq!(
            one_line(&error),
            "cannot connect: error returned from database: database \"x\" does not exist"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), "outer: inner");
    }
}
