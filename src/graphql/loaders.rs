//! DataLoaders: per request, they gather the keys that sibling resolvers ask
//! for and load them in one statement per relation, so a page costs the same
//! number of statements whatever its size. They are created for each request
//! and dropped with it, so nothing loaded for one caller reaches another.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use async_graphql::Pos;
use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use entity::{opportunity, profile};

use crate::cache::{Cache, Freshness, Tag};
use crate::db::Db;
use crate::error::AppError;
use crate::store::opportunities::{self, ColumnSet, OpportunityFilter, OpportunityOrderField};
use crate::store::page::{Fetched, PageRequest, SortKey};
use crate::store::profiles;

/// Loader errors are shared by every key of a failed batch.
pub type LoadError = Arc<AppError>;

/// Profiles by id (for `Opportunity.profile`).
// SELECT ... FROM profiles WHERE id IN (...)
pub struct ProfileLoader {
    db: Db,
    cache: Cache,
    /// The request's record of the cached values it used: loads run in
    /// their own task, outside the request's.
    used: Option<Arc<Freshness>>,
}

impl Loader<String> for ProfileLoader {
    type Value = profile::Model;
    type Error = LoadError;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        Freshness::scope(
            self.used.clone(),
            self.cache.get_or_load_many(
                "profile",
                ids,
                |id| (id.clone(), vec![Tag::Profile(id)]),
                |missing| async move {
                    let rows = profiles::by_ids(&self.db.read, &missing).await?;
                    Ok(rows.into_iter().map(|p| (p.id.clone(), p)).collect())
                },
            ),
        )
        .await
        .map_err(Arc::new)
    }
}

/// A key part hashed once, when it is built. Loader keys are hashed by
/// every map they pass through (the request's pending keys, its loaded
/// values, a batch's groups): hashing whole filters and page arguments each
/// time took about 5% of the CPU of an uncached page of 50 profiles.
#[derive(Debug, Eq)]
pub struct Hashed<T> {
    hash: u64,
    value: T,
}

impl<T: Hash> Hashed<T> {
    pub fn new(value: T) -> Self {
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        Self {
            hash: hasher.finish(),
            value,
        }
    }
}

impl<T> Deref for Hashed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Hashed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.value == other.value
    }
}

impl<T> Hash for Hashed<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<T: serde::Serialize> serde::Serialize for Hashed<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

/// A profile's opportunity count under one filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CountKey {
    pub profile_id: String,
    pub filter: Arc<Hashed<OpportunityFilter>>,
}

/// Opportunity counts per profile (for `Profile.opportunitiesCount`).
// SELECT profile_id, COUNT(*) FROM opportunities WHERE profile_id IN (...) AND <filter> GROUP BY profile_id
pub struct CountLoader {
    db: Db,
    cache: Cache,
    /// The request's record of the cached values it used: loads run in
    /// their own task, outside the request's.
    used: Option<Arc<Freshness>>,
}

impl Loader<CountKey> for CountLoader {
    type Value = u64;
    type Error = LoadError;

    async fn load(&self, keys: &[CountKey]) -> Result<HashMap<CountKey, u64>, Self::Error> {
        Freshness::scope(
            self.used.clone(),
            self.cache.get_or_load_many(
                "Profile.opportunitiesCount",
                keys,
                |k| {
                    (
                        cache_args(&(&k.profile_id, &*k.filter)),
                        vec![Tag::ProfileOpportunities(&k.profile_id)],
                    )
                },
                |missing| async move {
                    let mut out = HashMap::with_capacity(missing.len());
                    for (filter, ids) in
                        group_by(&missing, |k| (k.filter.clone(), k.profile_id.clone()))
                    {
                        let counts =
                            opportunities::counts_by_profile(&self.db.read, &ids, &filter).await?;
                        for (profile_id, n) in counts {
                            out.insert(
                                CountKey {
                                    profile_id,
                                    filter: filter.clone(),
                                },
                                n,
                            );
                        }
                    }
                    Ok(out)
                },
            ),
        )
        .await
        .map_err(Arc::new)
    }
}

/// Loader arguments as the cache key's JSON.
fn cache_args(args: &impl serde::Serialize) -> String {
    serde_json::to_string(args).expect("loader arguments serialise")
}

/// The arguments of a nested opportunities page, shared by all its parents.
#[derive(Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct NestedPageArgs {
    pub filter: OpportunityFilter,
    pub order: Vec<(OpportunityOrderField, bool)>,
    pub page: PageRequest,
    /// What the query reads of each row (part of the cache key: rows hold
    /// only these columns).
    pub columns: ColumnSet,
}

impl NestedPageArgs {
    pub fn keys(&self) -> Vec<SortKey> {
        opportunities::sort_keys(&self.order)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub profile_id: String,
    pub args: Arc<Hashed<NestedPageArgs>>,
}

/// A fetched nested page; `Arc` because every clone of a loader value is shared.
pub type NestedPage = Arc<Fetched<opportunity::Model>>;

/// Nested opportunity pages of many profiles in one statement (for `Profile.opportunities`).
// SQLite: SELECT * FROM (<page of p1>) UNION ALL SELECT * FROM (<page of p2>) ...
// PostgreSQL: SELECT o.* FROM unnest($n::text[]) p(pid) CROSS JOIN LATERAL (<page of p.pid>) o
pub struct PageLoader {
    db: Db,
    cache: Cache,
    /// The request's record of the cached values it used: loads run in
    /// their own task, outside the request's.
    used: Option<Arc<Freshness>>,
}

impl Loader<PageKey> for PageLoader {
    type Value = NestedPage;
    type Error = LoadError;

    async fn load(&self, keys: &[PageKey]) -> Result<HashMap<PageKey, NestedPage>, Self::Error> {
        let pages: HashMap<PageKey, Fetched<opportunity::Model>> = Freshness::scope(
            self.used.clone(),
            self.cache.get_or_load_many(
                "Profile.opportunities",
                keys,
                |k| {
                    (
                        cache_args(&(&k.profile_id, &*k.args)),
                        vec![Tag::ProfileOpportunities(&k.profile_id)],
                    )
                },
                |missing| async move {
                    let mut out = HashMap::with_capacity(missing.len());
                    for (args, ids) in
                        group_by(&missing, |k| (k.args.clone(), k.profile_id.clone()))
                    {
                        let pages = opportunities::pages_by_profile(
                            &self.db.read,
                            &ids,
                            &args.filter,
                            &args.keys(),
                            &args.page,
                            args.columns,
                        )
                        .await?;
                        for (profile_id, page) in pages {
                            out.insert(
                                PageKey {
                                    profile_id,
                                    args: args.clone(),
                                },
                                page,
                            );
                        }
                    }
                    Ok(out)
                },
            ),
        )
        .await
        .map_err(Arc::new)?;
        Ok(pages
            .into_iter()
            .map(|(k, page)| (k, Arc::new(page)))
            .collect())
    }
}

/// Groups keys that share their arguments, keeping first-seen order.
fn group_by<K, A: Eq + std::hash::Hash + Clone>(
    keys: &[K],
    split: impl Fn(&K) -> (A, String),
) -> Vec<(A, Vec<String>)> {
    let mut groups: Vec<(A, Vec<String>)> = Vec::new();
    let mut index: HashMap<A, usize> = HashMap::new();
    for key in keys {
        let (args, id) = split(key);
        let slot = *index.entry(args.clone()).or_insert_with(|| {
            groups.push((args, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(id);
    }
    groups
}

/// The loaders of one request.
pub struct Loaders {
    /// All cached per request: lists feed or prefetch what their nodes will
    /// ask for, so those ask nothing of the database.
    pub profiles: DataLoader<ProfileLoader, HashMapCache>,
    pub counts: DataLoader<CountLoader, HashMapCache>,
    pub pages: DataLoader<PageLoader, HashMapCache>,
    /// False for the N+1 baseline: every parent loads on its own.
    pub batching: bool,
    /// What a field of the document builds from its arguments and
    /// selection, by the field's place in the document and the type built.
    per_field: Mutex<HashMap<(Pos, TypeId), Arc<dyn Any + Send + Sync>>>,
}

impl Loaders {
    pub fn new(db: &Db, cache: &Cache, batching: bool) -> Self {
        let used = Freshness::current();
        Self {
            profiles: DataLoader::with_cache(
                ProfileLoader {
                    db: db.clone(),
                    cache: cache.clone(),
                    used: used.clone(),
                },
                tokio::spawn,
                HashMapCache::default(),
            ),
            counts: DataLoader::with_cache(
                CountLoader {
                    db: db.clone(),
                    cache: cache.clone(),
                    used: used.clone(),
                },
                tokio::spawn,
                HashMapCache::default(),
            ),
            pages: DataLoader::with_cache(
                PageLoader {
                    db: db.clone(),
                    cache: cache.clone(),
                    used: used.clone(),
                },
                tokio::spawn,
                HashMapCache::default(),
            ),
            batching,
            per_field: Mutex::default(),
        }
    }

    /// The value `build` makes for the field at `pos`, built once per
    /// request: the siblings of a page (every profile's `opportunities`)
    /// ask with the same arguments and selection, so parsing, hashing and
    /// sort keys need not be made again for each. A field's place fixes
    /// both within one request (a fragment's fields have one place and one
    /// text); a failed build is not kept.
    pub fn per_field<T: Send + Sync + 'static>(
        &self,
        pos: Pos,
        build: impl FnOnce() -> Result<T, AppError>,
    ) -> Result<Arc<T>, AppError> {
        let key = (pos, TypeId::of::<T>());
        let found = self
            .per_field
            .lock()
            .expect("not poisoned")
            .get(&key)
            .cloned();
        if let Some(found) = found.and_then(|v| v.downcast::<T>().ok()) {
            return Ok(found);
        }
        let built = Arc::new(build()?);
        self.per_field
            .lock()
            .expect("not poisoned")
            .insert(key, built.clone());
        Ok(built)
    }

    /// `key` through `loader`: batched with its siblings, or on its own for
    /// the N+1 baseline. The lone load is boxed: async-graphql boxes every
    /// field's future at the size of the largest field future of its type,
    /// and inlined, a whole load (cache, statement, driver) made each field
    /// future of `Profile` and `Opportunity` over 4 KiB, for a page of
    /// 50 x 5 to move and allocate about 700 times. Boxed, they are under 1 KiB.
    async fn one<K, L>(
        &self,
        loader: &DataLoader<L, HashMapCache>,
        key: K,
    ) -> Result<Option<L::Value>, LoadError>
    where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        L: Loader<K, Error = LoadError>,
    {
        if self.batching {
            loader.load_one(key).await
        } else {
            let mut found = Box::pin(loader.loader().load(std::slice::from_ref(&key))).await?;
            Ok(found.remove(&key))
        }
    }

    /// Forgets every value this request has loaded. The mutations of one
    /// document run in order, and each one's result must show what the
    /// ones before it wrote: a count or page loaded for an earlier result
    /// would otherwise be answered again from here.
    pub fn forget_loaded(&self) {
        self.profiles.clear::<String>();
        self.counts.clear::<CountKey>();
        self.pages.clear::<PageKey>();
    }

    pub async fn profile(&self, id: &str) -> Result<Option<profile::Model>, LoadError> {
        self.one(&self.profiles, id.to_owned()).await
    }

    pub async fn count(&self, key: CountKey) -> Result<u64, LoadError> {
        Ok(self.one(&self.counts, key).await?.unwrap_or(0))
    }

    pub async fn page(&self, key: PageKey) -> Result<NestedPage, LoadError> {
        Ok(self.one(&self.pages, key).await?.unwrap_or_default())
    }
}
