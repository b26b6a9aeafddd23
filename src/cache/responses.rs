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
//!
//! A body is kept until the first of its parts expires: the shortest TTL
//! after the request began executing (what it read from the database), and
//! the expiry of each cached value it used (`super::Freshness`), however
//! long ago that one was read.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache as Moka;

use crate::http::caching::Coding;

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
    /// When it stops being sent.
    pub(super) expires: Instant,
    /// The body in each content coding (`Coding::ALL` order), made the first
    /// time a client asks for it: brotli-compressing the 22 kB nested page
    /// again on every hit made a hit about six times as costly.
    pub(super) encoded: [OnceLock<Bytes>; Coding::ALL.len()],
}

impl Stored {
    /// The body in `coding`.
    pub fn encoded(&self, coding: Coding) -> Bytes {
        self.encoded[coding as usize]
            .get_or_init(|| coding.encode(&self.body))
            .clone()
    }
}

/// Where to keep a response, the generations it was made under, and when
/// it must stop being sent (`Cache::response_expiry`).
pub struct Keep {
    pub key: String,
    pub deps: super::Deps,
    pub expires: Instant,
}

struct StoredExpiry;

impl Expiry<String, Arc<Stored>> for StoredExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        stored: &Arc<Stored>,
        now: Instant,
    ) -> Option<Duration> {
        Some(stored.expires.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        stored: &Arc<Stored>,
        now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(stored.expires.saturating_duration_since(now))
    }
}

pub(super) fn store(max_bytes: u64) -> Moka<String, Arc<Stored>> {
    Moka::builder()
        .max_capacity(max_bytes)
        // A body counts half again for the compressed forms it may get
        // later (each well under a quarter of JSON's size), since an entry
        // is weighed once, when stored.
        .weigher(|key: &String, value: &Arc<Stored>| {
            (value.body.len() * 3 / 2 + key.len() + 64).min(u32::MAX as usize) as u32
        })
        .expire_after(StoredExpiry)
        .build()
}

/// The key of a request: everything that changes its response.
pub fn key(query: &str, operation_name: Option<&str>, variables: &serde_json::Value) -> String {
    serde_json::to_string(&(query, operation_name, variables)).expect("JSON values serialise")
}
