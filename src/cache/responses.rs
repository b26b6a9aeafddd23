//! Whole GraphQL responses for repeated identical queries, in front of the
//! resolver cache.
//!
//! A repeated query (same text, operation and variables) skips parsing,
//! validation and execution entirely: the JSON body it produced is sent
//! again, with its ETag. An entry depends on every profile and opportunity
//! (the coarsest tags), so any write makes every stored response stale; the
//! resolver cache underneath, with its fine-grained tags, still answers what
//! the write did not touch. Bodies are kept as the JSON they are sent as:
//! re-encoding them would cost what this tier exists to save.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache as Moka;

/// A response body and what its HTTP headers are made from.
pub struct Stored {
    pub body: Bytes,
    /// The body's ETag, computed once when it was stored.
    pub etag: String,
    /// The response's cache hint: `max-age` and scope.
    pub max_age: i32,
    pub public: bool,
    /// The metric label of its operation.
    pub label: String,
    pub(super) deps: super::Deps,
}

pub(super) fn store(max_bytes: u64, ttl: Duration) -> Moka<String, Arc<Stored>> {
    Moka::builder()
        .max_capacity(max_bytes)
        .weigher(|key: &String, value: &Arc<Stored>| {
            (value.body.len() + key.len() + 64).min(u32::MAX as usize) as u32
        })
        .time_to_live(ttl)
        .build()
}

/// The key of a request: everything that changes its response.
pub fn key(query: &str, operation_name: Option<&str>, variables: &serde_json::Value) -> String {
    serde_json::to_string(&(query, operation_name, variables)).expect("JSON values serialise")
}
