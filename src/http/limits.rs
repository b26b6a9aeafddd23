//! Load shedding: past `--max-concurrent-requests` API requests in flight,
//! a new one is answered `503` with `Retry-After` at once. The server keeps
//! no queue of its own: waiting requests would hold connections and memory
//! and then wait out the pool's acquire timeout anyway, while a quick 503
//! tells a client (or a load balancer) to come back or try another replica.
//!
//! A request's body is read before it takes a slot: a client that sends its
//! body slowly, on purpose or not, holds its own connection until the
//! request timeout, not one of the slots every other client needs.
//!
//! The same layer fails requests fast while the database is known to be
//! unreachable (see [`crate::availability`]), instead of letting each one
//! wait for a connection that cannot come.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::LengthLimitError;
use tokio::sync::Semaphore;

use crate::error::AppError;
use crate::server::AppState;

/// How many API requests may run at once; cheap to clone.
#[derive(Clone)]
pub struct Capacity {
    /// `None` without a limit.
    permits: Option<Arc<Semaphore>>,
    limit: usize,
}

impl Capacity {
    /// At most `limit` requests at once; 0 means no limit.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            limit,
        }
    }

    /// API requests running now, when there is a limit: how close the
    /// server is to turning requests away.
    pub fn running(&self) -> Option<usize> {
        self.permits
            .as_ref()
            .map(|permits| self.limit - permits.available_permits())
    }
}

/// Middleware: runs the request if there is room and the database can be
/// reached, else refuses it with 503 and `Retry-After`.
pub async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let request = match read_body(request, state.http().max_body_bytes).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    // Held until the handler has produced its response.
    let permit = match &state.capacity().permits {
        None => None,
        Some(permits) => match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let error =
                    AppError::Unavailable("the server is at capacity; retry shortly".into());
                return crate::http::refusal(request.uri().path(), request.headers(), error);
            }
        },
    };
    if !state.availability().is_up() {
        let error = AppError::Unavailable("the database is unreachable; retry shortly".into());
        return crate::http::refusal(request.uri().path(), request.headers(), error);
    }
    let response = next.run(request).await;
    drop(permit);
    response
}

/// The request with its whole body in memory, or the refusal of a body over
/// `limit` bytes (413) or one that could not be read (400).
async fn read_body(request: Request, limit: usize) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    // A body announced as too large is refused before any of it is waited for.
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let error = if announced.is_some_and(|length| length > limit as u64) {
        AppError::body_too_large(limit)
    } else {
        match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => return Ok(Request::from_parts(parts, Body::from(bytes))),
            Err(error) => {
                if error.into_inner().is::<LengthLimitError>() {
                    AppError::body_too_large(limit)
                } else {
                    AppError::BadRequest("the request body could not be read".into())
                }
            }
        }
    };
    let mut refusal = crate::http::refusal(parts.uri.path(), &parts.headers, error);
    // The rest of the body is left unread, so the connection cannot carry
    // another request: saying so keeps clients from sending one on it (they
    // would see it closed under them).
    refusal
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Err(refusal)
}
