//! The optional persistent tier (`--cache-dir`): every entry also lives in a
//! file, so a restarted server starts warm.
//!
//! - The index (key, file, size, expiry, dependencies) is rebuilt from the
//!   files on start; files that are corrupt, truncated, foreign or expired
//!   are removed.
//! - Files are written atomically (temporary file, then rename), off the
//!   request path, and no lock is held over file I/O: the index lock guards
//!   only the in-memory map.
//! - The directory is bounded by the same byte budget as memory; the least
//!   recently used files go first.
//! - Results depend on the database, which may change while the server is
//!   down: a fingerprint of it, written at shutdown, must match on start or
//!   the directory is emptied. A crash leaves no fingerprint, so the next
//!   start begins cold.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MAGIC: &[u8; 4] = b"CLXC";
/// 2: a CRC-32 of the whole file at its end (1 had none, so a flipped bit
/// in an uncompressed value was served as data).
const VERSION: u8 = 2;
const FINGERPRINT: &str = "FINGERPRINT";
const SUFFIX: &str = ".entry";

/// A stored entry as read back: its encoded value and dependencies.
pub struct Stored {
    pub bytes: Arc<[u8]>,
    pub deps: Vec<(u32, u64)>,
    pub ttl_left: Duration,
}

struct Meta {
    file: PathBuf,
    size: u64,
    deps: Arc<[(u32, u64)]>,
    last_used: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map stays consistent even if a holder panicked: every update is one call.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct DiskTier {
    dir: PathBuf,
    budget: u64,
    index: Mutex<HashMap<String, Meta>>,
    bytes: AtomicU64,
    clock: AtomicU64,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn file_name(key: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut a = DefaultHasher::new();
    key.hash(&mut a);
    let mut b = DefaultHasher::new();
    (key, 0x5eed_u32).hash(&mut b);
    format!("{:016x}{:016x}{SUFFIX}", a.finish(), b.finish())
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// Header: magic, version, expiry (unix ms), key length, key, dependency
/// count, dependencies (slot, generation); then the encoded value, then a
/// CRC-32 of all that (little-endian).
fn encode_file(key: &str, expires_at: u64, deps: &[(u32, u64)], bytes: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(4 + 1 + 8 + 4 + key.len() + 4 + deps.len() * 12 + bytes.len() + 4);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&expires_at.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(deps.len() as u32).to_le_bytes());
    for (slot, generation) in deps {
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(&generation.to_le_bytes());
    }
    out.extend_from_slice(bytes);
    out.extend_from_slice(&crc32(&out).to_le_bytes());
    out
}

struct Parsed<'a> {
    key: &'a str,
    expires_at: u64,
    deps: Vec<(u32, u64)>,
    value: &'a [u8],
}

fn parse_file(data: &[u8]) -> Option<Parsed<'_>> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if data.len() < n {
            return None;
        }
        let (head, rest) = data.split_at(n);
        *data = rest;
        Some(head)
    }
    let (data, sum) = data.split_at_checked(data.len().checked_sub(4)?)?;
    if crc32(data) != u32::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let mut rest = data;
    if take(&mut rest, 4)? != MAGIC || take(&mut rest, 1)?[0] != VERSION {
        return None;
    }
    let expires_at = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
    let key_len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(take(&mut rest, key_len)?).ok()?;
    let dep_count = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
    if dep_count > rest.len() / 12 {
        return None;
    }
    let mut deps = Vec::with_capacity(dep_count);
    for _ in 0..dep_count {
        let slot = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?);
        let generation = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
        deps.push((slot, generation));
    }
    if rest.is_empty() {
        return None;
    }
    Some(Parsed {
        key,
        expires_at,
        deps,
        value: rest,
    })
}

impl DiskTier {
    /// Opens (creating) `dir` and indexes its files. `fingerprint` describes
    /// the database now; entries survive only if it matches the one the last
    /// clean shutdown wrote. Returned with the number of entries kept.
    pub fn open(dir: &Path, budget: u64, fingerprint: &str) -> std::io::Result<(Self, usize)> {
        fs::create_dir_all(dir)?;
        // Prove the directory is writable now rather than on the first write.
        let probe = dir.join(".probe");
        fs::write(&probe, b"")?;
        fs::remove_file(&probe)?;
        let stored = fs::read_to_string(dir.join(FINGERPRINT)).ok();
        // Removed now, so a crash before the next clean shutdown leaves none.
        let _ = fs::remove_file(dir.join(FINGERPRINT));
        let trusted = stored.as_deref() == Some(fingerprint);
        let tier = Self {
            dir: dir.to_owned(),
            budget,
            index: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            clock: AtomicU64::new(0),
        };
        let now = now_millis();
        let mut kept = 0;
        for item in fs::read_dir(dir)? {
            let path = item?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name == FINGERPRINT {
                continue;
            }
            let data = fs::read(&path).unwrap_or_default();
            let usable = trusted
                && name.ends_with(SUFFIX)
                && parse_file(&data)
                    .is_some_and(|p| p.expires_at > now && file_name(p.key) == name);
            if !usable {
                if trusted {
                    tracing::warn!(file = %path.display(), "cache file is corrupt, foreign or expired; removed");
                }
                let _ = fs::remove_file(&path);
                continue;
            }
            let parsed = parse_file(&data).expect("checked above");
            // Generations restart at zero with the process: entries trusted by
            // the fingerprint are current as of now.
            let deps: Arc<[(u32, u64)]> = parsed.deps.iter().map(|&(slot, _)| (slot, 0)).collect();
            tier.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            let last_used = tier.tick();
            lock(&tier.index).insert(
                parsed.key.to_owned(),
                Meta {
                    file: path,
                    size: data.len() as u64,
                    deps,
                    last_used,
                },
            );
            kept += 1;
        }
        tier.shrink();
        Ok((tier, kept))
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Reads an entry; corrupt or expired files are removed and read as a miss.
    /// `current` says whether recorded dependencies are still current.
    pub fn get(&self, key: &str, current: impl Fn(&[(u32, u64)]) -> bool) -> Option<Stored> {
        let (file, deps) = {
            let mut index = lock(&self.index);
            let meta = index.get_mut(key)?;
            meta.last_used = self.clock.fetch_add(1, Ordering::Relaxed);
            (meta.file.clone(), meta.deps.clone())
        };
        if !current(&deps) {
            self.remove(key);
            return None;
        }
        let data = fs::read(&file).ok();
        let parsed = data
            .as_deref()
            .and_then(parse_file)
            .filter(|p| p.key == key);
        let now = now_millis();
        match parsed {
            Some(p) if p.expires_at > now => Some(Stored {
                bytes: p.value.into(),
                deps: deps.to_vec(),
                ttl_left: Duration::from_millis(p.expires_at - now),
            }),
            Some(_) => {
                self.remove(key);
                None
            }
            None => {
                tracing::warn!(file = %file.display(), "cache file is corrupt or missing; removed");
                self.remove(key);
                None
            }
        }
    }

    /// Writes an entry atomically. Failures are logged; the cache then just
    /// has fewer entries on disk.
    pub fn put(&self, key: &str, bytes: &[u8], deps: &[(u32, u64)], ttl: Duration) {
        let expires_at = now_millis() + ttl.as_millis() as u64;
        let data = encode_file(key, expires_at, deps, bytes);
        let file = self.dir.join(file_name(key));
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", file_name(key), self.tick()));
        let written = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&data))
            .and_then(|()| fs::rename(&tmp, &file));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::warn!(dir = %self.dir.display(), error = %e, "cache file not written");
            return;
        }
        let size = data.len() as u64;
        let last_used = self.tick();
        let old = lock(&self.index).insert(
            key.to_owned(),
            Meta {
                file,
                size,
                deps: deps.into(),
                last_used,
            },
        );
        self.bytes.fetch_add(size, Ordering::Relaxed);
        if let Some(old) = old {
            self.bytes.fetch_sub(old.size, Ordering::Relaxed);
        }
        self.shrink();
    }

    pub fn remove(&self, key: &str) {
        let removed = lock(&self.index).remove(key);
        if let Some(meta) = removed {
            self.bytes.fetch_sub(meta.size, Ordering::Relaxed);
            let _ = fs::remove_file(&meta.file);
        }
    }

    /// Evicts least recently used files until the directory fits the budget.
    fn shrink(&self) {
        while self.bytes.load(Ordering::Relaxed) > self.budget {
            let victim = {
                let mut index = lock(&self.index);
                let key = index
                    .iter()
                    .min_by_key(|(_, m)| m.last_used)
                    .map(|(k, _)| k.clone());
                key.and_then(|k| index.remove(&k))
            };
            let Some(meta) = victim else { break };
            self.bytes.fetch_sub(meta.size, Ordering::Relaxed);
            let _ = fs::remove_file(&meta.file);
        }
    }

    pub fn stored_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Marks the directory's entries as matching the database as it is now.
    pub fn seal(&self, fingerprint: &str) {
        if let Err(e) = fs::write(self.dir.join(FINGERPRINT), fingerprint) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cache fingerprint not written; the next start will be cold");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_reopen_with_the_same_fingerprint_only() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, kept) = DiskTier::open(dir.path(), 1 << 20, "db-1").unwrap();
        assert_eq!(kept, 0);
        tier.put("k", b"\xC0value", &[(3, 7)], Duration::from_secs(60));
        let got = tier.get("k", |_| true).unwrap();
        assert_eq!(&*got.bytes, b"\xC0value");
        tier.seal("db-1");
        drop(tier);
        let (tier, kept) = DiskTier::open(dir.path(), 1 << 20, "db-1").unwrap();
        assert_eq!(kept, 1);
        assert_eq!(
            tier.get("k", |deps| deps == [(3, 0)]).unwrap().deps,
            vec![(3, 0)]
        );
        // No seal this time (a crash): the next start is cold.
        drop(tier);
        let (_, kept) = DiskTier::open(dir.path(), 1 << 20, "db-1").unwrap();
        assert_eq!(kept, 0);
    }

    #[test]
    fn corrupt_truncated_and_foreign_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, _) = DiskTier::open(dir.path(), 1 << 20, "fp").unwrap();
        for key in ["a", "b", "c"] {
            tier.put(key, b"\xC0some value bytes", &[], Duration::from_secs(60));
        }
        tier.seal("fp");
        drop(tier);
        let a = dir.path().join(file_name("a"));
        let data = fs::read(&a).unwrap();
        fs::write(&a, &data[..10]).unwrap();
        fs::write(dir.path().join(file_name("b")), b"not a cache file at all").unwrap();
        fs::write(dir.path().join("foreign.txt"), b"hello").unwrap();
        let (tier, kept) = DiskTier::open(dir.path(), 1 << 20, "fp").unwrap();
        assert_eq!(kept, 1);
        assert!(tier.get("c", |_| true).is_some());
        assert!(tier.get("a", |_| true).is_none());
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn the_directory_stays_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (tier, _) = DiskTier::open(dir.path(), 2_000, "fp").unwrap();
        for i in 0..50 {
            tier.put(
                &format!("key-{i}"),
                &[0xC0; 200],
                &[],
                Duration::from_secs(60),
            );
        }
        assert!(tier.stored_bytes() <= 2_000);
        let on_disk: u64 = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(on_disk <= 2_000, "{on_disk}");
        assert!(tier.get("key-49", |_| true).is_some(), "the newest stays");
        assert!(tier.get("key-0", |_| true).is_none(), "the oldest went");
    }
}
