//! The shared tier (`--redis-url`): entries in Redis behind the in-process
//! tier, and the generation counters that keep every replica coherent.
//!
//! # Coherence across replicas
//! - Generations live in Redis (`clx:gen:SLOT`). A write runs one Lua script
//!   that increments the global `clx:epoch`, sets the generations of the
//!   tags it touched to it, appends `epoch|slot:generation,...` to the
//!   stream `clx:inval` (its id is the epoch) and publishes the same text.
//!   The write's response waits for the script.
//! - Each replica mirrors the generations locally. Pub/sub pushes changes
//!   promptly; in addition, every request first reads `clx:epoch` (one round
//!   trip) and, when it moved, replays the stream from the last epoch seen.
//!   So a read that starts after a write was acknowledged anywhere validates
//!   against that write's generations, whatever pub/sub's delay.
//! - A replica that cannot reach Redis bypasses every cache tier and reads
//!   the database; when Redis answers again it reloads all generations
//!   before trusting any entry, and replays its own writes made meanwhile.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const EPOCH: &str = "clx:epoch";
const STREAM: &str = "clx:inval";
/// The pub/sub channel carrying invalidations.
pub const CHANNEL: &str = "clx:inval";
const GEN_PREFIX: &str = "clx:gen:";
/// A random id set once per Redis data set: it changes when Redis restarts empty.
const INSTANCE: &str = "clx:instance";
const VALUE_PREFIX: &str = "clx:v:";
/// Stream entries kept: a replica further behind than this reloads everything.
const STREAM_LEN: u64 = 100_000;

/// Increments the epoch, sets each slot's generation to it, records and
/// publishes the change; returns the payload. A generation taken from the
/// epoch rises past every value its slot had, also when its key was lost
/// (evicted, deleted): a counter of its own would start again at 1, under
/// the generation that entries written before were kept with, and they would
/// be served again. For the same reason the epoch never falls back below the
/// stream's last entry.
const INVALIDATE: &str = r#"
local epoch = redis.call('INCR', KEYS[2])
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
if last then
  local top = tonumber(string.match(last[1], '^%d+'))
  if top >= epoch then
    epoch = top + 1
    redis.call('SET', KEYS[2], epoch)
  end
end
local pairs = {}
for i, slot in ipairs(ARGV) do
  redis.call('SET', KEYS[1] .. slot, epoch)
  pairs[#pairs + 1] = slot .. ':' .. epoch
end
local payload = epoch .. '|' .. table.concat(pairs, ',')
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV_LEN, epoch .. '-0', 'p', payload)
redis.call('PUBLISH', KEYS[4], payload)
return payload
"#;

/// A parsed invalidation: the epoch it produced and the new generations.
pub struct Change {
    pub epoch: u64,
    pub generations: Vec<(u32, u64)>,
}

pub fn parse_change(payload: &str) -> Option<Change> {
    let (epoch, pairs) = payload.split_once('|')?;
    let generations = pairs
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (slot, generation) = p.split_once(':')?;
            Some((slot.parse().ok()?, generation.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Change {
        epoch: epoch.parse().ok()?,
        generations,
    })
}

/// Warns when Redis may evict keys without a TTL (the epoch, generations and
/// stream), each time costing every replica a reload of its caches. Quiet
/// where `CONFIG` is refused, as managed services often do.
async fn warn_of_eviction(conn: &mut ConnectionManager) {
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    if let Ok(pair) = policy
        && let Some(policy) = pair.get(1).filter(|p| p.starts_with("allkeys-"))
    {
        tracing::warn!(
            "Redis evicts by {policy}: the cache's epoch, generations and stream, which have no TTL, may be evicted, and every replica then reloads its caches; set maxmemory-policy to volatile-lru"
        );
    }
}

pub struct SharedTier {
    conn: ConnectionManager,
    url: String,
    script: redis::Script,
    /// Epoch up to which the local mirror is complete.
    epoch: AtomicU64,
    /// False after a failed round trip, until the mirror is reloaded.
    healthy: AtomicBool,
    /// Slots this replica bumped while Redis was unreachable.
    pending: Mutex<Vec<u32>>,
    /// Serialises mirror reloads and stream replays.
    syncing: tokio::sync::Mutex<()>,
    /// The Redis data set the mirror reflects.
    instance: Mutex<Option<String>>,
}

/// The local view of the shared generations.
pub trait Mirror {
    /// Makes every local entry stale and forgets the old generations.
    fn reset(&self);
    /// Sets a slot to at least the shared generation `generation`.
    fn raise(&self, slot: u32, generation: u64);
}

/// What a sync concluded.
pub enum Sync {
    /// The mirror is complete (rebuilt if it had to be, its local entries
    /// dropped with it): entries may be used.
    Current,
    /// Redis is unreachable: bypass the caches.
    Unavailable,
}

impl SharedTier {
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let conn = client.get_connection_manager_with_config(config).await?;
        warn_of_eviction(&mut conn.clone()).await;
        let script =
            redis::Script::new(&INVALIDATE.replace("ARGV_LEN", &format!("'{STREAM_LEN}'")));
        Ok(Self {
            conn,
            url: url.to_owned(),
            script,
            epoch: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            pending: Mutex::new(Vec::new()),
            syncing: tokio::sync::Mutex::new(()),
            instance: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn mark_down(&self, error: &redis::RedisError) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %error, "Redis unreachable: caches bypassed, reading the database");
        }
    }

    /// Brings the local mirror up to date before a request reads any entry.
    pub async fn sync(&self, mirror: &impl Mirror) -> Sync {
        let mut conn = self.conn.clone();
        let remote: redis::RedisResult<(Option<u64>, Option<String>)> = redis::cmd("MGET")
            .arg(EPOCH)
            .arg(INSTANCE)
            .query_async(&mut conn)
            .await;
        let (remote, instance) = match remote {
            Ok((epoch, instance)) => (epoch.unwrap_or(0), instance),
            Err(e) => {
                self.mark_down(&e);
                return Sync::Unavailable;
            }
        };
        let same_redis = instance.is_some()
            && *self.instance.lock().unwrap_or_else(|p| p.into_inner()) == instance;
        let local = self.epoch.load(Ordering::Acquire);
        if self.healthy() && same_redis && remote == local {
            return Sync::Current;
        }
        let _guard = self.syncing.lock().await;
        // An epoch behind the mirror's was lost in Redis, and generations
        // written after it may repeat ones already seen: start again.
        let result = if self.healthy() && same_redis && remote > local {
            self.replay(mirror, remote).await
        } else {
            Err(None)
        };
        match result {
            Ok(()) => Sync::Current,
            Err(Some(e)) => {
                self.mark_down(&e);
                Sync::Unavailable
            }
            // Unhealthy before, a Redis that restarted empty or lost its
            // epoch, or a stream that no longer holds every change since the
            // mirror's epoch: reload everything.
            Err(None) => match self.reload(mirror).await {
                Ok(()) => {
                    self.healthy.store(true, Ordering::Release);
                    tracing::info!("Redis reachable: shared cache in use");
                    Sync::Current
                }
                Err(e) => {
                    self.mark_down(&e);
                    Sync::Unavailable
                }
            },
        }
    }

    /// Applies stream entries after the local epoch, up to `target` at
    /// least. `Err(None)` when entries are missing (trimmed, or the stream
    /// lost), `Err(Some)` when Redis failed.
    async fn replay(
        &self,
        mirror: &impl Mirror,
        target: u64,
    ) -> Result<(), Option<redis::RedisError>> {
        let mut conn = self.conn.clone();
        let from = self.epoch.load(Ordering::Acquire);
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(format!("{}-0", from + 1))
            .arg("+")
            .query_async(&mut conn)
            .await
            .map_err(Some)?;
        for (expected, (_, fields)) in (from + 1..).zip(entries) {
            let Some(change) = fields
                .iter()
                .find(|(k, _)| k == "p")
                .and_then(|(_, v)| parse_change(v))
            else {
                return Err(None);
            };
            if change.epoch != expected {
                return Err(None);
            }
            for (slot, generation) in &change.generations {
                mirror.raise(*slot, *generation);
            }
            self.epoch.store(change.epoch, Ordering::Release);
        }
        if self.epoch.load(Ordering::Acquire) < target {
            return Err(None);
        }
        Ok(())
    }

    /// Replays this replica's own writes made while Redis was down, drops
    /// every local entry, then reads every generation and the epoch.
    async fn reload(&self, mirror: &impl Mirror) -> redis::RedisResult<()> {
        let pending: Vec<u32> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if !pending.is_empty()
            && let Err(e) = self.run_script(&pending).await
        {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(pending);
            return Err(e);
        }
        let mut conn = self.conn.clone();
        // A Redis that restarted empty has no instance id: name it, so that
        // every replica notices the restart.
        let fresh = format!("{:016x}", rand::random::<u64>());
        let _: bool = conn.set_nx(INSTANCE, &fresh).await?;
        let instance: Option<String> = conn.get(INSTANCE).await?;
        mirror.reset();
        let epoch: Option<u64> = conn.get(EPOCH).await?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{GEN_PREFIX}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<u64>> = conn.mget(&keys).await?;
                for (key, value) in keys.iter().zip(values) {
                    if let (Some(slot), Some(generation)) =
                        (key[GEN_PREFIX.len()..].parse().ok(), value)
                    {
                        mirror.raise(slot, generation);
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let epoch = epoch.unwrap_or(0);
        self.epoch.store(epoch, Ordering::Release);
        *self.instance.lock().unwrap_or_else(|p| p.into_inner()) = instance;
        // Writes that landed during the scan are in the stream.
        self.replay(mirror, epoch).await.map_err(|e| {
            e.unwrap_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "invalidation stream trimmed during reload",
                ))
            })
        })
    }

    async fn run_script(&self, slots: &[u32]) -> redis::RedisResult<String> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(GEN_PREFIX);
        invocation.key(EPOCH).key(STREAM).key(CHANNEL);
        for slot in slots {
            invocation.arg(*slot);
        }
        invocation.invoke_async(&mut conn).await
    }

    /// Publishes a write's invalidation. Returns the new generations to set
    /// locally, or `None` when Redis is unreachable (the slots are kept and
    /// replayed when it answers again).
    pub async fn invalidate(&self, slots: &[u32]) -> Option<Change> {
        match self.run_script(slots).await {
            Ok(payload) => parse_change(&payload),
            Err(e) => {
                self.mark_down(&e);
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(slots);
                None
            }
        }
    }

    /// Records that the epoch of a change this replica applied is seen, when
    /// it directly follows the mirror (otherwise the next sync replays).
    pub fn applied(&self, epoch: u64) {
        let _ = self
            .epoch
            .compare_exchange(epoch - 1, epoch, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A stored value and when Redis expires it (`None` for a value without
    /// an expiry, which this server never writes). One round trip: `GET` and
    /// `PTTL` in one `MULTI`, so the time left is that of the value read. It
    /// is counted from before the request: never later than Redis's expiry.
    pub async fn get(&self, key: &str) -> Option<(Vec<u8>, Option<Instant>)> {
        if !self.healthy() {
            return None;
        }
        let mut conn = self.conn.clone();
        let key = format!("{VALUE_PREFIX}{key}");
        let sent = Instant::now();
        let read: redis::RedisResult<(Option<Vec<u8>>, i64)> = redis::pipe()
            .atomic()
            .get(&key)
            .pttl(&key)
            .query_async(&mut conn)
            .await;
        match read {
            // -1: no expiry; -2: no key; 0: expiring now.
            Ok((Some(value), -1)) => Some((value, None)),
            Ok((Some(value), millis)) if millis > 0 => {
                Some((value, Some(sent + Duration::from_millis(millis as u64))))
            }
            Ok(_) => None,
            Err(e) => {
                self.mark_down(&e);
                None
            }
        }
    }

    /// Stores a value until `expires` (whole milliseconds, rounded down).
    pub async fn put(&self, key: &str, value: Vec<u8>, expires: Instant) {
        let millis = expires
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        if !self.healthy() || millis == 0 {
            return;
        }
        let mut conn = self.conn.clone();
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("{VALUE_PREFIX}{key}"))
            .arg(value)
            .arg("PX")
            .arg(millis)
            .query_async(&mut conn)
            .await;
        if let Err(e) = set {
            self.mark_down(&e);
        }
    }
}

/// An entry as stored in Redis: dependency count, dependencies (slot,
/// generation), then the encoded value.
pub fn encode_entry(deps: &[(u32, u64)], bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + deps.len() * 12 + bytes.len());
    out.extend_from_slice(&(deps.len() as u32).to_le_bytes());
    for (slot, generation) in deps {
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
    }
    out.extend_from_slice(bytes);
    out
}

/// Dependencies and encoded value of a stored entry.
pub type DecodedEntry = (Vec<(u32, u64)>, Vec<u8>);

pub fn decode_entry(data: &[u8]) -> Option<DecodedEntry> {
    let count = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let body = data.get(4..)?;
    if count > body.len() / 12 {
        return None;
    }
    let deps = (0..count)
        .map(|i| {
            let d = &body[i * 12..i * 12 + 12];
            (
                u32::from_le_bytes(d[..4].try_into().unwrap()),
                u64::from_le_bytes(d[4..].try_into().unwrap()),
            )
        })
        .collect();
    let value = body[count * 12..].to_vec();
    (!value.is_empty()).then_some((deps, value))
}

#[cfg(test)]
mod tests {
    use super::parse_change;

    #[test]
    fn payloads_parse() {
        let c = parse_change("42|0:7,1234:1").unwrap();
        assert_eq!(c.epoch, 42);
        assert_eq!(c.generations, vec![(0, 7), (1234, 1)]);
        assert!(parse_change("x|0:1").is_none());
        assert!(parse_change("1|0:").is_none());
        let stored = super::encode_entry(&[(3, 9)], b"value");
        assert_eq!(
            super::decode_entry(&stored),
            Some((vec![(3, 9)], b"value".to_vec()))
        );
        assert_eq!(super::decode_entry(&[255, 255, 255, 255, 1]), None);
    }
}
