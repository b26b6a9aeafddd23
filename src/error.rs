//! One error type for the whole API. Each variant says what the client gets.

use async_graphql::ErrorExtensions;
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
    /// `INTERNAL`: logged with its cause; the client sees only "internal error".
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
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
        }
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
        if let AppError::Internal(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        let code = self.code();
        async_graphql::Error::new(self.to_string()).extend_with(|_, ext| ext.set("code", code))
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
