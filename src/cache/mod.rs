//! The resolver cache: results stored as gzip-compressed MessagePack in
//! memory, bounded by their stored bytes (moka, TinyLFU admission with LRU
//! eviction), each with a TTL, and never stale after a write.
//!
//! # Invalidation
//! Every entry records the *tags* its result depends on ("any profile",
//! "the opportunities of profile X", ...) together with each tag's
//! generation when the read began. A write bumps the generations of the tags
//! it touches after it commits; a lookup whose recorded generations are no
//! longer current is a miss. So a write invalidates every list, count and
//! lookup that could include it in O(tags), without enumerating keys, and a
//! read that began before a write can never store its older result under
//! the newer generation (it checks before inserting, and lookups check again).
//!
//! Writes made outside a server (an import, a seed) raise a counter in the
//! database instead, which every server polls
//! ([`Cache::follow_external_writes`]); its value is part of every key, so
//! when it moves every entry of every tier is left behind at once.

pub mod codec;
pub mod disk;
pub mod responses;
pub mod shared;

use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache as Moka;
use moka::notification::RemovalCause;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::CacheConfig;
use crate::error::{AppError, AppResult};
use codec::Codec;

/// What a cached result depends on.
#[derive(Clone, Debug)]
pub enum Tag<'a> {
    /// Any profile row (lists, totals, lookups by EIN).
    Profiles,
    /// Any opportunity row.
    Opportunities,
    /// One profile row.
    Profile(&'a str),
    /// The opportunities of one profile (its counts and nested pages).
    ProfileOpportunities(&'a str),
}

/// Generation counters, striped: a tag maps to one of `SLOTS` counters. Two
/// tags sharing a slot only cause an extra miss, never a stale hit, and the
/// memory stays fixed however many ids are written.
const SLOTS: usize = 1 << 16;

struct Generations {
    slots: Box<[AtomicU64]>,
    /// Added to shared (Redis) generations to give local ones. It jumps when
    /// the mirror is reloaded, so local values only ever grow: an entry
    /// recorded before a reload can never match again, even after Redis
    /// restarted and counts from zero anew.
    base: AtomicU64,
}

/// How far the base jumps on each reload: beyond any count of writes.
const REBASE: u64 = 1 << 40;

impl Generations {
    fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            base: AtomicU64::new(0),
        }
    }

    /// Makes every recorded generation stale and starts a new base.
    fn rebase(&self) {
        let base = self.base.fetch_add(REBASE, Ordering::AcqRel) + REBASE;
        for slot in self.slots.iter() {
            slot.fetch_max(base, Ordering::AcqRel);
        }
    }

    /// Dependencies in shared terms, or `None` if one predates the base.
    fn shared_deps(&self, deps: &[(u32, u64)]) -> Option<Vec<(u32, u64)>> {
        let base = self.base.load(Ordering::Acquire);
        deps.iter()
            .map(|&(slot, g)| g.checked_sub(base).map(|g| (slot, g)))
            .collect()
    }

    fn local_deps(&self, deps: &[(u32, u64)]) -> Deps {
        let base = self.base.load(Ordering::Acquire);
        deps.iter().map(|&(slot, g)| (slot, g + base)).collect()
    }

    fn slot(tag: &Tag<'_>) -> u32 {
        let (kind, id) = match tag {
            Tag::Profiles => return 0,
            Tag::Opportunities => return 1,
            Tag::Profile(id) => (b'p', id),
            Tag::ProfileOpportunities(id) => (b'o', id),
        };
        // FNV-1a over bytes written out here: every process maps a tag to
        // the same slot whatever compiler built it, which the generations
        // in Redis rely on. std's hashers and `Hash` impls promise no such
        // thing from one release to the next.
        let mut hasher = fnv::FnvHasher::default();
        hasher.write(&[kind]);
        hasher.write(id.as_bytes());
        2 + (hasher.finish() % (SLOTS as u64 - 2)) as u32
    }

    fn snapshot(&self, tags: &[Tag<'_>]) -> Deps {
        tags.iter()
            .map(|tag| {
                let slot = Self::slot(tag);
                (slot, self.slots[slot as usize].load(Ordering::Acquire))
            })
            .collect()
    }

    /// A slot out of range (from a corrupt or foreign stored entry) is never current.
    fn current(&self, deps: &[(u32, u64)]) -> bool {
        deps.iter().all(|&(slot, generation)| {
            self.slots
                .get(slot as usize)
                .is_some_and(|counter| counter.load(Ordering::Acquire) == generation)
        })
    }

    fn bump(&self, slots: &[u32]) {
        for &slot in slots {
            self.slots[slot as usize].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Sets a slot to at least the shared `generation`.
    fn raise(&self, slot: u32, generation: u64) {
        if let Some(counter) = self.slots.get(slot as usize) {
            counter.fetch_max(
                self.base.load(Ordering::Acquire) + generation,
                Ordering::AcqRel,
            );
        }
    }
}

/// Generations an entry was made under: (slot, generation) pairs.
pub type Deps = Arc<[(u32, u64)]>;

#[derive(Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    deps: Deps,
    /// When the value stops being served: its field's TTL after the
    /// database read that produced it, in whichever tier it was copied to.
    expires: Instant,
}

struct EntryExpiry;

impl Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, entry: &Entry, now: Instant) -> Option<Duration> {
        Some(entry.expires.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.expires.saturating_duration_since(now))
    }
}

/// The earliest expiry among the cached values one request used, so that a
/// response assembled from them is not kept longer than its oldest part
/// (see `Freshness::scope`).
pub struct Freshness {
    /// Nanoseconds after `origin()`; `u64::MAX` while nothing was noted.
    earliest: AtomicU64,
}

tokio::task_local! {
    static FRESHNESS: Arc<Freshness>;
}

/// A fixed instant that expiries are counted from, as plain numbers.
fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Freshness {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            earliest: AtomicU64::new(u64::MAX),
        })
    }

    /// The tracker of the task running now, if it runs inside `scope`.
    pub fn current() -> Option<Arc<Self>> {
        FRESHNESS.try_with(Arc::clone).ok()
    }

    /// Runs `work` with every cached value it reads noted in `tracker`.
    /// Task-local: a task spawned inside (a DataLoader's) must enter the
    /// scope again with the tracker it captured.
    pub async fn scope<F: Future>(tracker: Option<Arc<Self>>, work: F) -> F::Output {
        match tracker {
            Some(tracker) => FRESHNESS.scope(tracker, work).await,
            None => work.await,
        }
    }

    /// Records that the current request used a value that expires at `expires`.
    fn note(expires: Instant) {
        let _ = FRESHNESS.try_with(|tracker| {
            let nanos = expires.saturating_duration_since(origin()).as_nanos();
            tracker
                .earliest
                .fetch_min(nanos.min(u64::MAX as u128 - 1) as u64, Ordering::AcqRel);
        });
    }

    /// The earliest expiry noted, if any.
    pub fn earliest(&self) -> Option<Instant> {
        match self.earliest.load(Ordering::Acquire) {
            u64::MAX => None,
            nanos => Some(origin() + Duration::from_nanos(nanos)),
        }
    }
}

/// Counters for `cacheStats` and metrics.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    stale: AtomicU64,
    bypassed: AtomicU64,
    response_hits: AtomicU64,
    decode_failures: AtomicU64,
    plain_bytes: AtomicU64,
    stored_bytes: AtomicU64,
    encode_nanos: AtomicU64,
    encodes: AtomicU64,
    decode_nanos: AtomicU64,
    decodes: AtomicU64,
}

/// A snapshot of the cache's state.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub enabled: bool,
    pub entries: u64,
    pub stored_bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
    /// Entries found but invalidated by a write since they were stored.
    pub stale: u64,
    pub decode_failures: u64,
    /// MessagePack bytes over stored bytes, over every value stored so far.
    pub compression_ratio: f64,
    pub default_ttl_seconds: u64,
    /// Bytes in the persistent tier (0 without `--cache-dir`).
    pub disk_bytes: u64,
    /// Lookups that went to the database because Redis was unreachable.
    pub bypassed: u64,
    /// Whole responses sent again without executing the query.
    pub response_hits: u64,
    /// Whether the shared tier is configured and answering.
    pub shared: Option<bool>,
    pub avg_encode_micros: f64,
    pub avg_decode_micros: f64,
}

impl Stats {
    /// The counters in Prometheus text format, for `/metrics`.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        metric(
            "catalynx_cache_hits_total",
            "counter",
            "Resolver cache lookups answered from the cache.",
            self.hits as f64,
        );
        metric(
            "catalynx_cache_misses_total",
            "counter",
            "Resolver cache lookups that loaded from the database.",
            self.misses as f64,
        );
        metric(
            "catalynx_cache_evictions_total",
            "counter",
            "Entries evicted to stay within the byte bound.",
            self.evictions as f64,
        );
        metric(
            "catalynx_cache_expirations_total",
            "counter",
            "Entries removed when their TTL ran out.",
            self.expirations as f64,
        );
        metric(
            "catalynx_cache_invalidated_total",
            "counter",
            "Entries found outdated by a write.",
            self.stale as f64,
        );
        metric(
            "catalynx_cache_bypassed_total",
            "counter",
            "Lookups sent to the database because Redis was unreachable.",
            self.bypassed as f64,
        );
        metric(
            "catalynx_cache_entries",
            "gauge",
            "Entries held in memory.",
            self.entries as f64,
        );
        metric(
            "catalynx_cache_stored_bytes",
            "gauge",
            "Bytes held in memory (compressed values and keys).",
            self.stored_bytes as f64,
        );
        metric(
            "catalynx_cache_max_bytes",
            "gauge",
            "The bound on stored bytes.",
            self.max_bytes as f64,
        );
        if let Some(up) = self.shared {
            metric(
                "catalynx_cache_redis_up",
                "gauge",
                "1 when the shared Redis tier answers, 0 while it is bypassed.",
                if up { 1.0 } else { 0.0 },
            );
        }
        out
    }
}

impl shared::Mirror for Cache {
    fn reset(&self) {
        self.inner.generations.rebase();
        self.inner.store.invalidate_all();
    }

    fn raise(&self, slot: u32, generation: u64) {
        self.inner.generations.raise(slot, generation);
    }
}

/// A whole response lives no longer than the shortest-lived field could.
fn shortest_ttl(config: &CacheConfig) -> Duration {
    config
        .cache_field_ttl
        .0
        .iter()
        .map(|(_, ttl)| *ttl)
        .fold(Duration::from_secs(config.cache_ttl_secs), Duration::min)
}

/// A cheap-to-clone handle to the cache.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    store: Moka<String, Entry>,
    generations: Generations,
    codec: Codec,
    default_ttl: Duration,
    field_ttl: Vec<(String, Duration)>,
    max_bytes: u64,
    counters: Arc<Counters>,
    disk: Option<Arc<disk::DiskTier>>,
    shared: Option<Arc<shared::SharedTier>>,
    responses: Moka<String, Arc<responses::Stored>>,
    /// The longest a whole response may live: the shortest field TTL.
    response_ttl: Duration,
    /// Disk writes still running in the background.
    pending_writes: Arc<std::sync::atomic::AtomicUsize>,
    /// The database's count of writes made outside a server, as last read.
    epoch: AtomicI64,
    /// One reading of the epoch at a time: a slow read must not put back
    /// the value a later one replaced.
    epoch_reads: tokio::sync::Mutex<()>,
}

/// How often a server reads the count of writes made outside it: what it
/// serves is at most this much older than an import or a seed.
const EXTERNAL_WRITES_POLL: Duration = Duration::from_secs(1);

/// Why a computed value was not stored; shared by every request that waited on it.
enum NotStored {
    /// A write bumped a generation while the value was loading: the value,
    /// the generations it was read under and when it would have expired.
    Raced(Arc<[u8]>, Deps, Instant),
    Failed(AppError),
    Unencodable(AppError),
}

impl Cache {
    pub fn new(config: &CacheConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let listener_counters = counters.clone();
        let store = Moka::builder()
            // The rest of the budget holds whole responses (see `responses`).
            .max_capacity(config.cache_max_bytes - config.cache_max_bytes / 8)
            // Weighed by stored bytes plus the key, so the bound is in bytes.
            .weigher(|key: &String, entry: &Entry| {
                (entry.bytes.len() + key.len() + 64).min(u32::MAX as usize) as u32
            })
            .expire_after(EntryExpiry)
            .eviction_listener(move |_key, _entry, cause| match cause {
                RemovalCause::Size => {
                    listener_counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Expired => {
                    listener_counters
                        .expirations
                        .fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Self {
            inner: Arc::new(Inner {
                enabled: config.cache_enabled,
                store,
                generations: Generations::new(),
                codec: Codec {
                    level: config.cache_gzip_level,
                    raw_below: config.cache_raw_below_bytes,
                },
                default_ttl: Duration::from_secs(config.cache_ttl_secs),
                field_ttl: config.cache_field_ttl.0.clone(),
                max_bytes: config.cache_max_bytes,
                counters,
                disk: None,
                shared: None,
                // An eighth of the budget: responses repeat, but so do their parts.
                responses: responses::store(config.cache_max_bytes / 8),
                response_ttl: shortest_ttl(config),
                pending_writes: Default::default(),
                epoch: AtomicI64::new(0),
                epoch_reads: Default::default(),
            }),
        }
    }

    /// The cache with its persistent tier when `--cache-dir` is set. A
    /// directory that cannot be used is logged and the cache runs in memory.
    pub async fn open(config: &CacheConfig, db: &crate::db::Db) -> Self {
        let mut cache = Self::new(config);
        match crate::store::data_epoch(&db.read).await {
            Ok(epoch) => cache.inner.epoch.store(epoch, Ordering::Release),
            // The poll reads it again; until then keys are those of epoch 0.
            Err(e) => tracing::warn!(error = %e, "cannot read the data epoch"),
        }
        let Some(dir) = config.cache_dir.clone().filter(|_| config.cache_enabled) else {
            return cache;
        };
        let fingerprint = match crate::store::fingerprint(&db.read).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot fingerprint the database; cache directory not used");
                return cache;
            }
        };
        let budget = config.cache_max_bytes;
        let opened = tokio::task::spawn_blocking(move || {
            disk::DiskTier::open(&dir, budget, &fingerprint).map(|t| (t, dir))
        })
        .await;
        match opened {
            Ok(Ok((tier, dir))) => {
                tracing::info!(dir = %dir.display(), entries = tier.1, "cache directory opened");
                Arc::get_mut(&mut cache.inner).expect("not shared yet").disk =
                    Some(Arc::new(tier.0));
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cache directory unusable; caching in memory only")
            }
            Err(e) => {
                tracing::error!(error = %e, "cache directory scan failed; caching in memory only")
            }
        }
        cache
    }

    /// Adds the shared Redis tier. An unreachable Redis is not fatal: the
    /// server then reads the database until Redis answers.
    pub async fn with_shared(mut self, url: &str) -> anyhow::Result<Self> {
        let tier = shared::SharedTier::connect(url).await.map_err(|e| {
            anyhow::anyhow!("CATALYNX_REDIS_URL / --redis-url: invalid Redis URL: {e}")
        })?;
        let tier = Arc::new(tier);
        Arc::get_mut(&mut self.inner)
            .expect("not shared yet")
            .shared = Some(tier.clone());
        self.subscribe(tier).await;
        let _ = self.sync().await;
        Ok(self)
    }

    /// Follows the invalidations other replicas publish, so their entries
    /// leave this replica's memory promptly (the per-request sync is what
    /// guarantees freshness; this keeps memory clean between requests).
    async fn subscribe(&self, tier: Arc<shared::SharedTier>) {
        let cache = self.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            loop {
                let subscription = async {
                    let client = redis::Client::open(tier.url())?;
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(shared::CHANNEL).await?;
                    redis::RedisResult::Ok(pubsub)
                };
                if let Ok(mut pubsub) = subscription.await {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        if let Some(change) = shared::parse_change(&payload) {
                            cache.apply(&change);
                            tier.applied(change.epoch);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    fn apply(&self, change: &shared::Change) {
        for &(slot, generation) in &change.generations {
            self.inner.generations.raise(slot, generation);
        }
    }

    /// Brings the view of shared generations up to date; called at the start
    /// of every request. False when the caches must be bypassed.
    pub async fn sync(&self) -> bool {
        let Some(shared) = &self.inner.shared else {
            return true;
        };
        !matches!(shared.sync(self).await, shared::Sync::Unavailable)
    }

    /// True when entries may be read and written: no shared tier, or one
    /// that answers.
    fn usable(&self) -> bool {
        self.inner.enabled && self.inner.shared.as_ref().is_none_or(|s| s.healthy())
    }

    /// Records that the persistent tier matches the database as it is now;
    /// called after the last request of a clean shutdown.
    pub async fn seal(&self, db: &crate::db::Db) {
        let Some(disk) = self.inner.disk.clone() else {
            return;
        };
        // Let background writes land first (bounded, should the disk hang).
        for _ in 0..500 {
            if self.inner.pending_writes.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match crate::store::fingerprint(&db.read).await {
            Ok(fingerprint) => {
                let _ = tokio::task::spawn_blocking(move || disk.seal(&fingerprint)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fingerprint the database; the next start will be cold")
            }
        }
    }

    /// Stores an entry in memory and, off the request path, on disk.
    async fn store(&self, key: String, entry: Entry) {
        self.persist(&key, &entry);
        self.inner.store.insert(key, entry).await;
    }

    /// Writes an entry to the persistent and shared tiers in the background.
    /// The copies expire with the value: their time to live is what it has
    /// left when each is written.
    fn persist(&self, key: &str, entry: &Entry) {
        if entry.expires <= Instant::now() {
            return;
        }
        if let Some(shared) = self.inner.shared.clone() {
            let (key, entry) = (key.to_owned(), entry.clone());
            // Entries recorded before a reload are stale: not worth sending.
            if let Some(deps) = self.inner.generations.shared_deps(&entry.deps) {
                tokio::spawn(async move {
                    let value = shared::encode_entry(&deps, &entry.bytes);
                    shared.put(&key, value, entry.expires).await;
                });
            }
        }
        if let Some(disk) = self.inner.disk.clone() {
            let (key, entry) = (key.to_owned(), entry.clone());
            let pending = self.inner.pending_writes.clone();
            pending.fetch_add(1, Ordering::AcqRel);
            tokio::task::spawn_blocking(move || {
                let ttl = entry.expires.saturating_duration_since(Instant::now());
                if !ttl.is_zero() {
                    disk.put(&key, &entry.bytes, &entry.deps, ttl);
                }
                pending.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// An entry from the persistent tier, promoted to memory.
    async fn promote_from_disk(&self, key: &str) -> Option<Entry> {
        let disk = self.inner.disk.clone()?;
        let this = self.clone();
        let owned = key.to_owned();
        let stored = tokio::task::spawn_blocking(move || {
            disk.get(&owned, |deps| this.inner.generations.current(deps))
        })
        .await
        .ok()??;
        let entry = Entry {
            bytes: stored.bytes,
            deps: stored.deps.into(),
            expires: Instant::now() + stored.ttl_left.min(self.ttl_of_key(key)),
        };
        self.inner.store.insert(key.to_owned(), entry.clone()).await;
        Some(entry)
    }

    /// An entry from Redis, promoted to memory for the time Redis had left
    /// on it: a value copied between tiers lives no longer than in the first.
    async fn promote_from_shared(&self, key: &str) -> Option<Entry> {
        let shared = self.inner.shared.as_ref()?;
        let (data, expires) = shared.get(key).await?;
        let Some((deps, bytes)) = shared::decode_entry(&data) else {
            tracing::warn!(key, "shared cache entry is malformed; ignored");
            return None;
        };
        // Without an expiry (not written by this server), the field's TTL.
        let longest = Instant::now() + self.ttl_of_key(key);
        let entry = Entry {
            bytes: bytes.into(),
            deps: self.inner.generations.local_deps(&deps),
            expires: expires.map_or(longest, |expires| expires.min(longest)),
        };
        self.inner.store.insert(key.to_owned(), entry.clone()).await;
        Some(entry)
    }

    /// The TTL of the field a key belongs to.
    fn ttl_of_key(&self, key: &str) -> Duration {
        self.ttl(key.split('\u{1f}').next().unwrap_or(key))
    }

    async fn forget(&self, key: &str) {
        self.inner.store.invalidate(key).await;
        if let Some(disk) = self.inner.disk.clone() {
            let key = key.to_owned();
            tokio::task::spawn_blocking(move || disk.remove(&key));
        }
    }

    fn ttl(&self, field: &str) -> Duration {
        self.inner
            .field_ttl
            .iter()
            .find(|(name, _)| name == field)
            .map_or(self.inner.default_ttl, |(_, ttl)| *ttl)
    }

    /// The cache key: the field, every argument after defaults as JSON, and
    /// the data epoch.
    fn key(&self, field: &str, args: &impl Serialize) -> String {
        let mut key = String::with_capacity(64);
        key.push_str(field);
        key.push('\u{1f}');
        key.push_str(&serde_json::to_string(args).expect("cache key arguments serialise"));
        self.push_epoch(&mut key);
        key
    }

    /// The key of a whole response (see [`responses::key`]).
    pub fn response_key(
        &self,
        query: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Value,
    ) -> String {
        let mut key = responses::key(query, operation_name, variables);
        self.push_epoch(&mut key);
        key
    }

    fn push_epoch(&self, key: &mut String) {
        use std::fmt::Write;
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        write!(key, "\u{1f}{epoch}").expect("writing to a String");
    }

    /// Reads the database's count of writes made outside a server every
    /// [`EXTERNAL_WRITES_POLL`], for as long as the future runs. When it
    /// moves, keys change with it, so nothing stored before (in memory, on
    /// disk, in Redis) is found again, and the memory tiers are emptied.
    pub async fn follow_external_writes(
        self,
        conn: sea_orm::DatabaseConnection,
    ) -> std::convert::Infallible {
        let mut ticks = tokio::time::interval(EXTERNAL_WRITES_POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match self.observe_external_writes(&conn).await {
                Ok(()) => failing = false,
                // Once per outage: the database's own faults are logged
                // by the requests that meet them.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read the data epoch; retrying");
                }
                Err(_) => {}
            }
        }
    }

    /// One poll of [`Cache::follow_external_writes`]; also for a caller
    /// that has just written outside the server and wants it seen at once.
    pub async fn observe_external_writes(
        &self,
        conn: &sea_orm::DatabaseConnection,
    ) -> Result<(), sea_orm::sqlx::Error> {
        let _one_at_a_time = self.inner.epoch_reads.lock().await;
        let epoch = crate::store::data_epoch(conn).await?;
        if self.inner.epoch.swap(epoch, Ordering::AcqRel) != epoch {
            tracing::info!(
                epoch,
                "data changed outside this server (an import or a seed): cached results dropped"
            );
            self.inner.store.invalidate_all();
            self.inner.responses.invalidate_all();
        }
        Ok(())
    }

    fn encode<T: Serialize>(&self, value: &T) -> AppResult<Arc<[u8]>> {
        let started = Instant::now();
        let encoded = self
            .inner
            .codec
            .encode(value)
            .map_err(|e| AppError::Internal(e.context("cache encode")))?;
        let c = &self.inner.counters;
        c.encode_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        c.encodes.fetch_add(1, Ordering::Relaxed);
        c.plain_bytes
            .fetch_add(encoded.plain_len as u64, Ordering::Relaxed);
        c.stored_bytes
            .fetch_add(encoded.bytes.len() as u64, Ordering::Relaxed);
        Ok(encoded.bytes.into())
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Option<T> {
        let started = Instant::now();
        let value = self.inner.codec.decode(bytes);
        let c = &self.inner.counters;
        c.decode_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        c.decodes.fetch_add(1, Ordering::Relaxed);
        if value.is_none() {
            c.decode_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key, "cached value failed to decode; dropped");
        }
        value
    }

    /// A current, decodable entry for `key`, or `None` (dropping what is there).
    async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let entry = match self.inner.store.get(key).await {
            Some(entry) => entry,
            None => match self.promote_from_disk(key).await {
                Some(entry) => entry,
                None => self.promote_from_shared(key).await?,
            },
        };
        if !self.inner.generations.current(&entry.deps) {
            self.inner.counters.stale.fetch_add(1, Ordering::Relaxed);
            self.forget(key).await;
            return None;
        }
        let value = self.decode(key, &entry.bytes);
        if value.is_none() {
            self.forget(key).await;
        } else {
            Freshness::note(entry.expires);
        }
        value
    }

    /// The cached result of `field(args)`, or `load`'s result, stored unless a
    /// write to one of `tags` happened meanwhile. Concurrent misses on one key
    /// load once.
    pub async fn get_or_load<T, F, Fut>(
        &self,
        field: &'static str,
        args: &impl Serialize,
        tags: &[Tag<'_>],
        load: F,
    ) -> AppResult<T>
    where
        T: Serialize + DeserializeOwned,
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        if !self.usable() {
            if self.inner.enabled {
                self.inner.counters.bypassed.fetch_add(1, Ordering::Relaxed);
            }
            return load().await;
        }
        let key = self.key(field, args);
        if let Some(value) = self.lookup(&key).await {
            self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(value);
        }
        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        let deps = self.inner.generations.snapshot(tags);
        let ttl = self.ttl(field);
        let loaded = self
            .inner
            .store
            .try_get_with(key.clone(), async {
                // Counted from before the read: the value is no older than that.
                let expires = Instant::now() + ttl;
                let value = load().await.map_err(NotStored::Failed)?;
                let bytes = self.encode(&value).map_err(NotStored::Unencodable)?;
                if self.inner.generations.current(&deps) {
                    Ok(Entry {
                        bytes,
                        deps: deps.clone(),
                        expires,
                    })
                } else {
                    Err(NotStored::Raced(bytes, deps.clone(), expires))
                }
            })
            .await;
        // What another request loaded (or stored) counts only if it was read
        // under the same generations as this request's: one that began
        // before a write must not answer one that began after it.
        let bytes = match loaded {
            Ok(entry) if entry.deps == deps => {
                // moka stored it in memory; the disk copy follows.
                self.persist(&key, &entry);
                // Perhaps loaded for another request, before this one began.
                Freshness::note(entry.expires);
                Some(entry.bytes)
            }
            Err(shared) => match &*shared {
                NotStored::Raced(bytes, theirs, expires) if *theirs == deps => {
                    Freshness::note(*expires);
                    Some(bytes.clone())
                }
                NotStored::Raced(..) => None,
                NotStored::Failed(e) | NotStored::Unencodable(e) => return Err(e.shared()),
            },
            Ok(_) => None,
        };
        let Some(bytes) = bytes else {
            return load().await;
        };
        self.decode(&key, &bytes).ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "a value just encoded failed to decode ({field})"
            ))
        })
    }

    /// Batch form for DataLoaders: answers what it can from the cache and
    /// loads only the missing keys, in one call to `load`.
    pub async fn get_or_load_many<K, T, F, Fut>(
        &self,
        field: &'static str,
        keys: &[K],
        describe: impl Fn(&K) -> (String, Vec<Tag<'_>>),
        load: F,
    ) -> AppResult<std::collections::HashMap<K, T>>
    where
        K: Clone + Eq + std::hash::Hash,
        T: Serialize + DeserializeOwned,
        F: FnOnce(Vec<K>) -> Fut,
        Fut: Future<Output = AppResult<std::collections::HashMap<K, T>>>,
    {
        if !self.usable() {
            if self.inner.enabled {
                self.inner
                    .counters
                    .bypassed
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
            }
            return load(keys.to_vec()).await;
        }
        let mut found = std::collections::HashMap::with_capacity(keys.len());
        let mut missing = Vec::new();
        let mut pending = Vec::new();
        for k in keys {
            let (args, tags) = describe(k);
            let key = self.key(field, &args);
            match self.lookup::<T>(&key).await {
                Some(value) => {
                    found.insert(k.clone(), value);
                }
                None => {
                    pending.push((key, self.inner.generations.snapshot(&tags)));
                    missing.push(k.clone());
                }
            }
        }
        let c = &self.inner.counters;
        c.hits.fetch_add(found.len() as u64, Ordering::Relaxed);
        c.misses.fetch_add(missing.len() as u64, Ordering::Relaxed);
        if missing.is_empty() {
            return Ok(found);
        }
        let expires = Instant::now() + self.ttl(field);
        let mut loaded = load(missing.clone()).await?;
        for (k, (key, deps)) in missing.iter().zip(pending) {
            let Some(value) = loaded.remove(k) else {
                continue;
            };
            if self.inner.generations.current(&deps) {
                let bytes = self.encode(&value)?;
                self.store(
                    key,
                    Entry {
                        bytes,
                        deps,
                        expires,
                    },
                )
                .await;
            }
            found.insert(k.clone(), value);
        }
        Ok(found)
    }

    /// Where a response's validity is read: before the query runs.
    pub fn response_deps(&self) -> Option<Deps> {
        self.usable().then(|| {
            self.inner
                .generations
                .snapshot(&[Tag::Profiles, Tag::Opportunities])
        })
    }

    /// A stored response for `key`, if no write happened since it was made.
    pub async fn response(&self, key: &str) -> Option<Arc<responses::Stored>> {
        if !self.usable() {
            return None;
        }
        let stored = self.inner.responses.get(key).await?;
        if !self.inner.generations.current(&stored.deps) {
            self.inner.responses.invalidate(key).await;
            return None;
        }
        self.inner
            .counters
            .response_hits
            .fetch_add(1, Ordering::Relaxed);
        Some(stored)
    }

    /// When a response must stop being sent, for a request that began
    /// executing at `started` and used the cached values noted in `used`:
    /// the shortest TTL after `started` (for what it read from the
    /// database), and no later than the first of those values expires.
    pub fn response_expiry(&self, started: Instant, used: &Freshness) -> Instant {
        let own = started + self.inner.response_ttl;
        used.earliest().map_or(own, |earliest| earliest.min(own))
    }

    /// Keeps a response made under `keep.deps` until `keep.expires`, unless
    /// a write came in meanwhile.
    pub async fn keep_response(
        &self,
        keep: responses::Keep,
        body: bytes::Bytes,
        etag: String,
        max_age: i32,
        public: bool,
        label: String,
    ) {
        let responses::Keep { key, deps, expires } = keep;
        if self.inner.generations.current(&deps) && expires > Instant::now() {
            let stored = responses::Stored {
                body,
                etag,
                max_age,
                public,
                label,
                deps,
                expires,
                encoded: Default::default(),
            };
            self.inner.responses.insert(key, Arc::new(stored)).await;
        }
    }

    /// Invalidates every result that depends on `tags`. Called by each write
    /// after it commits and before its response is sent.
    pub async fn invalidate(&self, tags: &[Tag<'_>]) {
        let slots: Vec<u32> = tags.iter().map(Generations::slot).collect();
        let Some(shared) = &self.inner.shared else {
            self.inner.generations.bump(&slots);
            return;
        };
        match shared.invalidate(&slots).await {
            Some(change) => {
                self.apply(&change);
                shared.applied(change.epoch);
            }
            // Redis is down: this replica bypasses its caches until it is
            // back; the local bump covers entries read before that.
            None => self.inner.generations.bump(&slots),
        }
    }

    pub async fn stats(&self) -> Stats {
        self.inner.store.run_pending_tasks().await;
        self.inner.responses.run_pending_tasks().await;
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let avg = |nanos: &AtomicU64, n: &AtomicU64| {
            if load(n) == 0 {
                0.0
            } else {
                load(nanos) as f64 / load(n) as f64 / 1000.0
            }
        };
        Stats {
            enabled: self.inner.enabled,
            entries: self.inner.store.entry_count() + self.inner.responses.entry_count(),
            stored_bytes: self.inner.store.weighted_size() + self.inner.responses.weighted_size(),
            max_bytes: self.inner.max_bytes,
            hits: load(&c.hits),
            misses: load(&c.misses),
            evictions: load(&c.evictions),
            expirations: load(&c.expirations),
            stale: load(&c.stale),
            decode_failures: load(&c.decode_failures),
            compression_ratio: if load(&c.stored_bytes) == 0 {
                1.0
            } else {
                load(&c.plain_bytes) as f64 / load(&c.stored_bytes) as f64
            },
            default_ttl_seconds: self.inner.default_ttl.as_secs(),
            disk_bytes: self.inner.disk.as_ref().map_or(0, |d| d.stored_bytes()),
            bypassed: load(&c.bypassed),
            response_hits: load(&c.response_hits),
            shared: self.inner.shared.as_ref().map(|s| s.healthy()),
            avg_encode_micros: avg(&c.encode_nanos, &c.encodes),
            avg_decode_micros: avg(&c.decode_nanos, &c.decodes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replicas built at other times share generations in Redis by slot, so
    /// the mapping is fixed: these values may only change with a format
    /// change that also leaves every stored entry behind.
    #[test]
    fn tags_map_to_the_same_slots_in_every_build() {
        let slots: Vec<u32> = [
            Tag::Profiles,
            Tag::Opportunities,
            Tag::Profile("profile_57485fda9caf"),
            Tag::ProfileOpportunities("profile_57485fda9caf"),
        ]
        .iter()
        .map(Generations::slot)
        .collect();
        assert_eq!(slots, [0, 1, 15120, 27747]);
    }
}
