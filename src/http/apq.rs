//! Automatic persisted queries (Apollo's APQ protocol).
//!
//! A client first sends only `extensions.persistedQuery.sha256Hash`; when the
//! server does not know the hash it answers `PersistedQueryNotFound` and the
//! client sends the query with its hash, which the server checks and keeps.
//!
//! async-graphql ships an APQ extension, but it hands the schema a parsed
//! document, so the HTTP layer could no longer see that a hash-only GET asks
//! for a mutation, and its errors carry no `extensions.code`. Resolving the
//! hash to query text here, before anything else, keeps every later check
//! (GET mutations, limits, metrics) working on real text.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// `extensions.persistedQuery` of a request.
#[derive(Deserialize)]
struct PersistedQuery {
    version: i64,
    #[serde(rename = "sha256Hash")]
    sha256_hash: String,
}

/// What the request's query text turned out to be.
pub struct Resolved {
    pub query: String,
    /// The hash to remember the query under once it has parsed and validated.
    pub register: Option<String>,
}

/// Query texts by their SHA-256 hash (hex).
type Store = Mutex<lru::LruCache<String, Arc<str>>>;

/// Query texts by SHA-256 hash, least recently used dropped first.
#[derive(Clone)]
pub struct PersistedQueries {
    /// `None` when persisted queries are turned off. A std mutex: it is held
    /// only for a map look-up, never across an `.await`.
    cache: Option<Arc<Store>>,
}

impl PersistedQueries {
    /// Keeps up to `capacity` queries; 0 turns the protocol off.
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: NonZeroUsize::new(capacity).map(|c| Arc::new(Mutex::new(lru::LruCache::new(c)))),
        }
    }

    /// The query text of a request from its `query` and its
    /// `extensions.persistedQuery`, when either is given.
    pub fn resolve(
        &self,
        query: Option<String>,
        persisted: Option<&serde_json::Value>,
    ) -> Result<Resolved, AppError> {
        let Some(persisted) = persisted else {
            return match query {
                Some(query) => Ok(Resolved {
                    query,
                    register: None,
                }),
                None => Err(AppError::BadRequest(
                    "the request has no `query` (nor a persisted query hash)".into(),
                )),
            };
        };
        let Some(cache) = &self.cache else {
            return Err(AppError::PersistedQueryNotSupported);
        };
        let persisted = PersistedQuery::deserialize(persisted)
            .map_err(|e| AppError::BadRequest(format!("invalid extensions.persistedQuery: {e}")))?;
        if persisted.version != 1 {
            return Err(AppError::BadRequest(format!(
                "persisted query version {} is not supported; use 1",
                persisted.version
            )));
        }
        let hash = persisted.sha256_hash.to_ascii_lowercase();
        match query {
            Some(query) => {
                if hex::encode(Sha256::digest(query.as_bytes())) != hash {
                    // Apollo Server's wording, which clients may match on.
                    return Err(AppError::BadRequest(
                        "provided sha does not match query".into(),
                    ));
                }
                Ok(Resolved {
                    query,
                    register: Some(hash),
                })
            }
            None => {
                let found = cache
                    .lock()
                    .expect("persisted query cache lock")
                    .get(&hash)
                    .cloned();
                match found {
                    Some(query) => Ok(Resolved {
                        query: query.to_string(),
                        register: None,
                    }),
                    None => Err(AppError::PersistedQueryNotFound),
                }
            }
        }
    }

    /// Remembers a verified query under its hash.
    pub fn register(&self, hash: String, query: &str) {
        if let Some(cache) = &self.cache {
            cache
                .lock()
                .expect("persisted query cache lock")
                .put(hash, Arc::from(query));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const QUERY: &str = "{ __typename }";

    fn hash(query: &str) -> String {
        hex::encode(Sha256::digest(query.as_bytes()))
    }

    #[test]
    fn round_trip_after_registration() {
        let apq = PersistedQueries::new(2);
        let ext = json!({ "version": 1, "sha256Hash": hash(QUERY) });
        assert!(matches!(
            apq.resolve(None, Some(&ext)),
            Err(AppError::PersistedQueryNotFound)
        ));
        let resolved = apq.resolve(Some(QUERY.into()), Some(&ext)).unwrap();
        apq.register(resolved.register.unwrap(), &resolved.query);
        assert_eq!(apq.resolve(None, Some(&ext)).unwrap().query, QUERY);
    }

    #[test]
    fn refuses_a_wrong_hash_and_other_versions() {
        let apq = PersistedQueries::new(2);
        let wrong = json!({ "version": 1, "sha256Hash": hash("{ other }") });
        assert!(matches!(
            apq.resolve(Some(QUERY.into()), Some(&wrong)),
            Err(AppError::BadRequest(_))
        ));
        let v2 = json!({ "version": 2, "sha256Hash": hash(QUERY) });
        assert!(matches!(
            apq.resolve(Some(QUERY.into()), Some(&v2)),
            Err(AppError::BadRequest(_))
        ));
    }

    #[test]
    fn off_when_capacity_is_zero() {
        let apq = PersistedQueries::new(0);
        let ext = json!({ "version": 1, "sha256Hash": hash(QUERY) });
        assert!(matches!(
            apq.resolve(None, Some(&ext)),
            Err(AppError::PersistedQueryNotSupported)
        ));
        assert_eq!(apq.resolve(Some(QUERY.into()), None).unwrap().query, QUERY);
    }
}
