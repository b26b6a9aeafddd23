//! `cacheStats`: what the resolver cache holds and how well it works.

use async_graphql::{Context, Object, SimpleObject};

use super::ApiContext;
use crate::auth::{Role, RoleGuard};

/// The state of the resolver cache.
#[derive(SimpleObject)]
pub struct CacheStats {
    /// False when the server runs with the cache off.
    enabled: bool,
    /// Entries held.
    entries: u64,
    /// Bytes held (compressed values plus keys).
    stored_bytes: u64,
    /// The bound on stored bytes.
    max_bytes: u64,
    /// Stored bytes as a percentage of the bound.
    utilisation_percent: f64,
    /// Lookups answered from the cache.
    hits: u64,
    /// Lookups that had to load.
    misses: u64,
    /// Hits over all lookups, 0 to 1.
    hit_ratio: f64,
    /// Entries removed to stay within the byte bound.
    evictions: u64,
    /// Entries removed when their TTL ran out.
    expirations: u64,
    /// Entries found outdated by a write since they were stored.
    invalidated: u64,
    /// Uncompressed over stored size of the values stored so far.
    compression_ratio: f64,
    /// Default time to live of an entry, in seconds.
    ttl_seconds: u64,
    /// Mean time to encode (MessagePack + gzip) one value, in microseconds.
    avg_encode_micros: f64,
    /// Mean time to decode one value, in microseconds.
    avg_decode_micros: f64,
    /// Whole responses sent again without running their query.
    response_hits: u64,
}

#[derive(Default)]
pub struct CacheStatsQuery;

#[Object]
impl CacheStatsQuery {
    /// Counters of the resolver cache (admin role). Never cached: they
    /// change all the time. Null, with an error, for other roles, so that the
    /// rest of a query still answers.
    #[graphql(guard = "RoleGuard(Role::Admin)", cache_control(no_cache))]
    async fn cache_stats(&self, ctx: &Context<'_>) -> Option<CacheStats> {
        let s = ApiContext::of(ctx).cache.stats().await;
        let lookups = s.hits + s.misses;
        Some(CacheStats {
            enabled: s.enabled,
            entries: s.entries,
            stored_bytes: s.stored_bytes,
            max_bytes: s.max_bytes,
            utilisation_percent: if s.max_bytes == 0 {
                0.0
            } else {
                100.0 * s.stored_bytes as f64 / s.max_bytes as f64
            },
            hits: s.hits,
            misses: s.misses,
            hit_ratio: if lookups == 0 {
                0.0
            } else {
                s.hits as f64 / lookups as f64
            },
            evictions: s.evictions,
            expirations: s.expirations,
            invalidated: s.stale,
            compression_ratio: s.compression_ratio,
            ttl_seconds: s.default_ttl_seconds,
            avg_encode_micros: s.avg_encode_micros,
            avg_decode_micros: s.avg_decode_micros,
            response_hits: s.response_hits,
        })
    }
}
