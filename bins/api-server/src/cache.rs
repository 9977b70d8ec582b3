//! The screenshot cache on disk, content-addressed, with a size limit.
//!
//! `objects/ab/abcdef...` holds bytes named by their SHA-256, so the same image is stored
//! once however many requests produced it; `keys/12/1234...` (JSON) maps a request's cache
//! key (account + the options that change the pixels) to an object, its type and when it
//! was made. Files are written to a temporary name and renamed, so a reader never sees
//! half a file. Idempotent replays point at objects too.
//!
//! **Size limit** (`screenshots.cache_max_bytes`): an index in memory knows every object,
//! its size and when it was last used, and every key. When the files pass the limit, the
//! least recently used objects go, each with the keys that point at it, until they fit
//! again. A hit refreshes its object's recency, in memory and in the file's modification
//! time, so that the index rebuilt from the directory at start (by modification time) keeps
//! the order across restarts. An object larger than the whole limit is not kept. A replay
//! whose object was evicted answers that it is no longer stored.
//!
//! **Hot entries in memory** (ADR 20): a hit read from disk is also kept in memory, up to
//! [`HOT_MAX_BYTES`] (least recently used out first), so that the next hits of the same key
//! within [`HOT_FRESH_MS`] are answered by [`DiskCache::get_hot`] without a file read or a
//! blocking thread. Writing a key (a new capture, `fresh`) or evicting its object drops its
//! hot entry at once; after [`HOT_FRESH_MS`] the entry is read from disk again, which
//! refreshes its recency on disk and sees what another process sharing the directory wrote.
//!
//! Operators see [`DiskCache::stats`] at `GET /admin/v1/cache`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use ledger_core::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The default `screenshots.cache_max_bytes`: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The most bytes of images kept in memory for [`DiskCache::get_hot`] (never more than the
/// disk limit); an image larger than an eighth of it is never kept there.
pub const HOT_MAX_BYTES: u64 = 16 << 20;

/// How long a hot entry answers without a look at the disk: the delay with which a key
/// another process rewrote, or a hit's recency on disk, is seen.
pub const HOT_FRESH_MS: i64 = 1_000;

#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Arc<Mutex<Index>>,
    /// Never held during I/O, so [`DiskCache::get_hot`] can take it on an async thread.
    hot: Arc<Mutex<Hot>>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Serialize, Deserialize)]
struct KeyRecord {
    object: String,
    content_type: String,
    created_at_ms: i64,
}

/// A cached capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub object: String,
}

/// What operators see of the cache (`GET /admin/v1/cache`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    /// Cache keys stored (requests that can be answered from the cache).
    pub entries: u64,
    /// Bytes on disk: objects and key records.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Lookups answered from the cache, and lookups that were not, since start.
    pub hits: u64,
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 before the first lookup.
    pub hit_rate: f64,
}

/// One stored object: its size, when it was last used (a tick of [`Index::order`]) and the
/// keys (file names) that point at it.
#[derive(Debug)]
struct Object {
    size: u64,
    tick: u64,
    keys: Vec<String>,
}

/// The index of what is on disk.
#[derive(Debug, Default)]
struct Index {
    objects: HashMap<String, Object>,
    /// Least recently used first: tick → object.
    order: BTreeMap<u64, String>,
    /// Key file name → (its object, the record's size).
    keys: HashMap<String, (String, u64)>,
    bytes: u64,
    next_tick: u64,
}

/// A hit kept in memory: the key's record, the object's bytes, when the disk was last read.
#[derive(Debug)]
struct HotEntry {
    object: String,
    content_type: String,
    created_at_ms: i64,
    bytes: Arc<[u8]>,
    read_at_ms: i64,
    tick: u64,
}

/// Hot entries by key file name, least recently used first in `order`.
#[derive(Debug, Default)]
struct Hot {
    entries: HashMap<String, HotEntry>,
    order: BTreeMap<u64, String>,
    bytes: u64,
    next_tick: u64,
    /// Moves whenever a key is written or removed: a disk read that started before keeps
    /// what it read out of memory (it may be the record just replaced).
    generation: u64,
}

impl Hot {
    fn remove(&mut self, name: &str) {
        if let Some(e) = self.entries.remove(name) {
            self.order.remove(&e.tick);
            self.bytes -= e.bytes.len() as u64;
        }
    }

    /// Keys `name` (or its replacement) changed on disk.
    fn forget(&mut self, name: &str) {
        self.generation += 1;
        self.remove(name);
    }

    fn insert(&mut self, name: String, mut entry: HotEntry, max_bytes: u64) {
        let size = entry.bytes.len() as u64;
        self.remove(&name);
        if size > max_bytes / 8 {
            return;
        }
        while self.bytes + size > max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.bytes.len() as u64;
            }
        }
        self.next_tick += 1;
        entry.tick = self.next_tick;
        self.order.insert(entry.tick, name.clone());
        self.bytes += size;
        self.entries.insert(name, entry);
    }

    /// The entry of `name` if it may answer at `now` without the disk, made most recent.
    fn hit(&mut self, name: &str, ttl_secs: u64, now_ms: i64) -> Option<Hit> {
        let e = self.entries.get_mut(name)?;
        if now_ms - e.read_at_ms >= HOT_FRESH_MS
            || now_ms < e.read_at_ms
            || now_ms - e.created_at_ms >= ttl_secs as i64 * 1000
        {
            return None;
        }
        self.next_tick += 1;
        self.order.remove(&e.tick);
        e.tick = self.next_tick;
        self.order.insert(e.tick, name.to_owned());
        Some(Hit {
            bytes: e.bytes.to_vec(),
            content_type: e.content_type.clone(),
            object: e.object.clone(),
        })
    }
}

impl Index {
    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    /// Marks `object` as just used.
    fn touch(&mut self, object: &str) {
        let tick = self.tick();
        if let Some(o) = self.objects.get_mut(object) {
            self.order.remove(&o.tick);
            o.tick = tick;
            self.order.insert(tick, object.to_owned());
        }
    }

    fn add_object(&mut self, object: &str, size: u64) {
        let tick = self.tick();
        self.objects.insert(
            object.to_owned(),
            Object {
                size,
                tick,
                keys: Vec::new(),
            },
        );
        self.order.insert(tick, object.to_owned());
        self.bytes += size;
    }

    /// Points key file `name` at `object` (already indexed), replacing what it pointed at.
    fn set_key(&mut self, name: &str, object: &str, size: u64) {
        self.remove_key(name);
        if let Some(o) = self.objects.get_mut(object) {
            o.keys.push(name.to_owned());
            self.keys.insert(name.to_owned(), (object.to_owned(), size));
            self.bytes += size;
        }
    }

    fn remove_key(&mut self, name: &str) {
        if let Some((object, size)) = self.keys.remove(name) {
            self.bytes -= size;
            if let Some(o) = self.objects.get_mut(&object) {
                o.keys.retain(|k| k != name);
            }
        }
    }

    /// Takes the object out of the index with its keys; answers the key file names.
    fn remove_object(&mut self, object: &str) -> Vec<String> {
        let Some(o) = self.objects.remove(object) else {
            return Vec::new();
        };
        self.order.remove(&o.tick);
        self.bytes -= o.size;
        for k in &o.keys {
            if let Some((_, size)) = self.keys.remove(k) {
                self.bytes -= size;
            }
        }
        o.keys
    }

    /// The least recently used object other than `keep`.
    fn oldest_except(&self, keep: &str) -> Option<String> {
        self.order.values().find(|o| *o != keep).cloned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sharded(root: &Path, name: &str) -> PathBuf {
    root.join(&name[..2]).join(name)
}

fn is_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", ledger_store::new_id("")));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Every file under `root`'s shard folders: (name, size, modification time). Leftover
/// temporary files of an interrupted write are removed.
fn files(root: &Path) -> Vec<(String, u64, SystemTime)> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(root) else {
        return out;
    };
    for file in shards
        .flatten()
        .filter_map(|s| std::fs::read_dir(s.path()).ok())
    {
        for f in file.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let Ok(meta) = f.metadata() else { continue };
            if !is_name(&name) {
                if name.contains(".tmp") {
                    let _ = std::fs::remove_file(f.path());
                }
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((name, meta.len(), mtime));
        }
    }
    out
}

impl DiskCache {
    /// A cache in `dir` of at most [`DEFAULT_MAX_BYTES`].
    pub fn new(dir: impl Into<PathBuf>) -> DiskCache {
        DiskCache::with_limit(dir, DEFAULT_MAX_BYTES)
    }

    /// A cache in `dir` of at most `max_bytes`, its index rebuilt from what the directory
    /// holds (least recently used first by modification time), then trimmed to the limit.
    pub fn with_limit(dir: impl Into<PathBuf>, max_bytes: u64) -> DiskCache {
        let cache = DiskCache {
            dir: dir.into(),
            max_bytes,
            index: Arc::default(),
            hot: Arc::default(),
            counters: Arc::default(),
        };
        cache.rebuild();
        cache
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every change to the index is completed under the lock before any I/O can fail.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hot(&self) -> MutexGuard<'_, Hot> {
        self.hot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hot_max_bytes(&self) -> u64 {
        HOT_MAX_BYTES.min(self.max_bytes)
    }

    fn rebuild(&self) {
        let mut objects = files(&self.dir.join("objects"));
        objects.sort_by_key(|(_, _, mtime)| *mtime);
        let mut index = self.lock();
        for (name, size, _) in objects {
            index.add_object(&name, size);
        }
        for (name, size, _) in files(&self.dir.join("keys")) {
            let path = self.key_file(&name);
            let record = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<KeyRecord>(&b).ok());
            match record {
                Some(r) if index.objects.contains_key(&r.object) => {
                    index.set_key(&name, &r.object, size)
                }
                // A key whose object is gone can never hit again.
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        self.evict(&mut index, "");
    }

    /// Removes least recently used objects (never `keep`) until the files fit the limit.
    fn evict(&self, index: &mut Index, keep: &str) {
        while index.bytes > self.max_bytes {
            let Some(object) = index.oldest_except(keep) else {
                break;
            };
            let keys = index.remove_object(&object);
            tracing::debug!(%object, keys = keys.len(), "cache: evicted");
            for k in keys {
                self.hot().forget(&k);
                let _ = std::fs::remove_file(self.key_file(&k));
            }
            let _ = std::fs::remove_file(sharded(&self.dir.join("objects"), &object));
        }
    }

    fn key_name(key: &str) -> String {
        hex(&Sha256::digest(key.as_bytes()))
    }

    fn key_file(&self, name: &str) -> PathBuf {
        sharded(&self.dir.join("keys"), name)
    }

    fn object_path(&self, object: &str) -> Option<PathBuf> {
        is_name(object).then(|| sharded(&self.dir.join("objects"), object))
    }

    /// The capture stored under `key`, if it is younger than `ttl_secs` (a hit or a miss in
    /// the statistics; a hit makes its object the most recently used).
    pub fn get(&self, key: &str, ttl_secs: u64, now: Timestamp) -> Option<Hit> {
        let name = Self::key_name(key);
        let hit = self.lookup(&name, ttl_secs, now);
        if hit.is_none() {
            // Expired, or removed behind this process's back: not answered from memory either.
            self.hot().remove(&name);
        }
        let counter = match &hit {
            Some(_) => &self.counters.hits,
            None => &self.counters.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// [`DiskCache::get`] from memory alone, with no I/O (it may run on an async thread):
    /// the capture if `key` was read from disk less than [`HOT_FRESH_MS`] ago, is still
    /// younger than `ttl_secs` and has not been written or evicted since; `None` (and no
    /// miss counted) otherwise, when the caller asks [`DiskCache::get`].
    pub fn get_hot(&self, key: &str, ttl_secs: u64, now: Timestamp) -> Option<Hit> {
        let name = Self::key_name(key);
        let hit = self.hot().hit(&name, ttl_secs, now.millis())?;
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    /// [`DiskCache::get`] of the key file `name`, without the statistics.
    fn lookup(&self, name: &str, ttl_secs: u64, now: Timestamp) -> Option<Hit> {
        let generation = self.hot().generation;
        let record: KeyRecord =
            serde_json::from_slice(&std::fs::read(self.key_file(name)).ok()?).ok()?;
        if now.millis() - record.created_at_ms >= ttl_secs as i64 * 1000 {
            return None;
        }
        let Some(bytes) = self.object(&record.object) else {
            // Evicted (or removed by hand) since the key was read.
            let keys = self.lock().remove_object(&record.object);
            for k in keys {
                self.hot().forget(&k);
                let _ = std::fs::remove_file(self.key_file(&k));
            }
            return None;
        };
        self.lock().touch(&record.object);
        if let Some(path) = self.object_path(&record.object) {
            // The recency the index is rebuilt from after a restart.
            let _ = std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|f| f.set_modified(SystemTime::now()));
        }
        let mut hot = self.hot();
        if hot.generation == generation {
            let entry = HotEntry {
                object: record.object.clone(),
                content_type: record.content_type.clone(),
                created_at_ms: record.created_at_ms,
                bytes: Arc::from(bytes.as_slice()),
                read_at_ms: now.millis(),
                tick: 0,
            };
            let max = self.hot_max_bytes();
            hot.insert(name.to_owned(), entry, max);
        }
        drop(hot);
        Some(Hit {
            bytes,
            content_type: record.content_type,
            object: record.object,
        })
    }

    /// Stores bytes as an object (once) and returns its name. Older objects are evicted to
    /// make room; bytes larger than the whole limit are refused.
    pub fn put_object(&self, bytes: &[u8]) -> std::io::Result<String> {
        let object = hex(&Sha256::digest(bytes));
        if bytes.len() as u64 > self.max_bytes {
            return Err(std::io::Error::other(format!(
                "{} bytes do not fit the cache limit of {} bytes",
                bytes.len(),
                self.max_bytes
            )));
        }
        let mut index = self.lock();
        if index.objects.contains_key(&object) {
            index.touch(&object);
            return Ok(object);
        }
        write_atomically(&sharded(&self.dir.join("objects"), &object), bytes)?;
        index.add_object(&object, bytes.len() as u64);
        self.evict(&mut index, &object);
        Ok(object)
    }

    /// Points `key` at an object stored by [`DiskCache::put_object`] (nothing is stored
    /// when that object has been evicted since).
    pub fn put_key(
        &self,
        key: &str,
        object: &str,
        content_type: &str,
        now: Timestamp,
    ) -> std::io::Result<()> {
        let record = KeyRecord {
            object: object.to_owned(),
            content_type: content_type.to_owned(),
            created_at_ms: now.millis(),
        };
        let bytes = serde_json::to_vec(&record)?;
        let name = Self::key_name(key);
        let mut index = self.lock();
        if !index.objects.contains_key(object) {
            return Ok(());
        }
        write_atomically(&self.key_file(&name), &bytes)?;
        self.hot().forget(&name);
        index.set_key(&name, object, bytes.len() as u64);
        index.touch(object);
        self.evict(&mut index, object);
        Ok(())
    }

    pub fn object(&self, object: &str) -> Option<Vec<u8>> {
        std::fs::read(self.object_path(object)?).ok()
    }

    /// Size, entries and hit rate.
    pub fn stats(&self) -> CacheStats {
        let (entries, bytes) = {
            let index = self.lock();
            (index.keys.len() as u64, index.bytes)
        };
        let hits = self.counters.hits.load(Ordering::Relaxed);
        let misses = self.counters.misses.load(Ordering::Relaxed);
        let lookups = hits + misses;
        CacheStats {
            entries,
            bytes,
            max_bytes: self.max_bytes,
            hits,
            misses,
            hit_rate: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_once_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        let t0 = Timestamp::from_millis(1_000_000);
        let a = cache.put_object(b"png bytes").unwrap();
        assert_eq!(
            a,
            cache.put_object(b"png bytes").unwrap(),
            "content-addressed"
        );
        cache.put_key("k", &a, "image/png", t0).unwrap();
        let hit = cache.get("k", 10, t0.plus_secs(9)).unwrap();
        assert_eq!(
            (hit.bytes.as_slice(), hit.content_type.as_str()),
            (&b"png bytes"[..], "image/png")
        );
        assert!(cache.get("k", 10, t0.plus_secs(10)).is_none(), "expired");
        assert!(cache.get("other", 10, t0).is_none());
        assert!(cache.object("../../etc/passwd").is_none());
    }

    /// `n` bytes that are an object of their own (content-addressed: distinct contents).
    fn blob(tag: u8, n: usize) -> Vec<u8> {
        vec![tag; n]
    }

    /// Stores `bytes` under `key`.
    fn store(cache: &DiskCache, key: &str, bytes: &[u8], now: Timestamp) {
        let object = cache.put_object(bytes).unwrap();
        cache.put_key(key, &object, "image/png", now).unwrap();
    }

    fn cached(cache: &DiskCache, key: &str, now: Timestamp) -> bool {
        cache.get(key, 3600, now).is_some()
    }

    /// Bytes under `dir`, as `du` would count the files.
    fn bytes_on_disk(dir: &Path) -> u64 {
        let mut total = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    stack.push(e.path());
                } else {
                    total += meta.len();
                }
            }
        }
        total
    }

    /// A hit read from disk answers from memory for [`HOT_FRESH_MS`], with no file read
    /// (its files removed behind the cache's back do not stop it), and counts as a hit;
    /// then it is looked up on disk again.
    #[test]
    fn a_hit_read_from_disk_answers_from_memory_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        let t0 = Timestamp::from_millis(1_000_000);
        store(&cache, "k", b"png bytes", t0);
        assert!(
            cache.get_hot("k", 60, t0).is_none(),
            "not read from disk yet"
        );
        assert_eq!(cache.get("k", 60, t0).unwrap().bytes, b"png bytes");
        std::fs::remove_dir_all(dir.path().join("keys")).unwrap();
        std::fs::remove_dir_all(dir.path().join("objects")).unwrap();
        let later = Timestamp::from_millis(t0.millis() + HOT_FRESH_MS - 1);
        let hit = cache.get_hot("k", 60, later).expect("answered from memory");
        assert_eq!(
            (hit.bytes.as_slice(), hit.content_type.as_str()),
            (&b"png bytes"[..], "image/png")
        );
        assert_eq!((cache.stats().hits, cache.stats().misses), (2, 0));
        assert!(cache.get_hot("other", 60, later).is_none());
        let stale = Timestamp::from_millis(t0.millis() + HOT_FRESH_MS);
        assert!(
            cache.get_hot("k", 60, stale).is_none(),
            "read from disk again"
        );
        assert!(cache.get("k", 60, stale).is_none(), "the files are gone");
        assert!(
            cache.get_hot("k", 60, later).is_none(),
            "and so is the hot entry"
        );
    }

    /// The TTL holds in memory too.
    #[test]
    fn a_hot_entry_expires_with_its_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path());
        let t0 = Timestamp::from_millis(1_000_000);
        store(&cache, "k", b"png bytes", t0);
        let read = Timestamp::from_millis(t0.millis() + 9_500);
        assert!(cache.get("k", 10, read).is_some());
        assert!(cache
            .get_hot("k", 10, Timestamp::from_millis(t0.millis() + 9_999))
            .is_some());
        assert!(
            cache.get_hot("k", 10, t0.plus_secs(10)).is_none(),
            "expired"
        );
    }

    /// A new capture under the same key (`fresh`) is what the next hit answers: writing a
    /// key drops its hot entry at once, and so does evicting its object.
    #[test]
    fn writing_or_evicting_a_key_drops_its_hot_entry() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::from_millis(1_000_000);
        // Room in memory for 1,000-byte images (an eighth of the limit), on disk for eight.
        let cache = DiskCache::with_limit(dir.path(), 10_000);
        store(&cache, "k", &blob(1, 1_000), t0);
        assert!(cache.get("k", 60, t0).is_some());
        store(&cache, "k", &blob(2, 1_000), t0);
        assert!(cache.get_hot("k", 60, t0).is_none(), "rewritten");
        assert_eq!(cache.get("k", 60, t0).unwrap().bytes, blob(2, 1_000));
        assert_eq!(cache.get_hot("k", 60, t0).unwrap().bytes, blob(2, 1_000));
        // Newer objects push k's out on disk.
        for i in 0..9u8 {
            store(&cache, &format!("x{i}"), &blob(10 + i, 1_000), t0);
        }
        assert!(cache.get_hot("k", 60, t0).is_none(), "evicted in memory");
        assert!(!cached(&cache, "k", t0), "and on disk");
    }

    /// Memory holds at most [`HOT_MAX_BYTES`] (never more than the disk limit), least
    /// recently used out first, and no image larger than an eighth of it.
    #[test]
    fn hot_entries_stay_within_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::from_millis(1_000_000);
        let cache = DiskCache::with_limit(dir.path(), 1 << 20);
        let size = (1 << 20) / 8 - 100;
        for i in 0..6u8 {
            store(&cache, &format!("k{i}"), &blob(i, size), t0);
        }
        for i in 0..6u8 {
            assert!(cache.get(&format!("k{i}"), 60, t0).is_some());
        }
        assert!(cache.hot().bytes <= 1 << 20);
        let hot: Vec<bool> = (0..6u8)
            .map(|i| cache.get_hot(&format!("k{i}"), 60, t0).is_some())
            .collect();
        assert!(hot.iter().all(|h| *h), "six fit: {hot:?}");
        store(&cache, "big", &blob(9, (1 << 20) / 8 + 1), t0);
        assert!(cache.get("big", 60, t0).is_some());
        assert!(
            cache.get_hot("big", 60, t0).is_none(),
            "too large for memory"
        );
        // Past the limit, the least recently used hot entry goes first.
        let dir = tempfile::tempdir().unwrap();
        let roomy = DiskCache::with_limit(dir.path(), 4 * HOT_MAX_BYTES);
        let size = (HOT_MAX_BYTES / 8) as usize;
        for i in 0..9u8 {
            store(&roomy, &format!("s{i}"), &blob(i, size), t0);
            assert!(roomy.get(&format!("s{i}"), 60, t0).is_some());
        }
        assert!(roomy.hot().bytes <= HOT_MAX_BYTES);
        assert!(roomy.get_hot("s0", 60, t0).is_none(), "the oldest went");
        assert!(roomy.get_hot("s8", 60, t0).is_some(), "the latest stays");
    }

    /// Least recently used goes first, and a hit counts as a use: after a, b, c are stored
    /// and a is read again, the fourth entry pushes b out (not a).
    #[test]
    fn the_least_recently_used_entry_is_evicted_first() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::from_millis(1_000_000);
        // Room for three 1,000-byte objects and their key records, not four.
        let cache = DiskCache::with_limit(dir.path(), 3_500);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            store(&cache, key, &blob(i as u8, 1_000), t0);
        }
        assert!(cached(&cache, "a", t0));
        store(&cache, "d", &blob(9, 1_000), t0);
        assert!(!cached(&cache, "b", t0), "b was the least recently used");
        // Read in this order, c becomes the least recently used.
        for key in ["c", "a", "d"] {
            assert!(cached(&cache, key, t0), "{key} should still be cached");
        }
        store(&cache, "e", &blob(10, 1_000), t0);
        assert!(!cached(&cache, "c", t0));
        assert!(cached(&cache, "e", t0) && cached(&cache, "a", t0));
    }

    /// However many writes, what is on disk stays within the limit, and the index agrees
    /// with the directory; an object larger than the limit is refused.
    #[test]
    fn the_limit_holds_under_writes() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::from_millis(1_000_000);
        let limit = 10_000;
        let cache = DiskCache::with_limit(dir.path(), limit);
        for i in 0..200u32 {
            let size = 300 + (i as usize * 37) % 1_500;
            store(
                &cache,
                &format!("key {i}"),
                &blob((i % 250) as u8, size),
                t0,
            );
            // The same bytes under a second key: stored once.
            if i % 3 == 0 {
                let object = hex(&Sha256::digest(blob((i % 250) as u8, size)));
                cache
                    .put_key(&format!("alias {i}"), &object, "image/png", t0)
                    .unwrap();
            }
            let stats = cache.stats();
            assert!(stats.bytes <= limit, "after write {i}: {stats:?}");
            assert_eq!(bytes_on_disk(dir.path()), stats.bytes, "after write {i}");
        }
        assert!(cache.stats().entries > 5, "{:?}", cache.stats());
        assert!(cached(&cache, "key 199", t0), "the newest entry is kept");
        assert!(cache.put_object(&blob(1, 10_001)).is_err());
        assert!(bytes_on_disk(dir.path()) <= limit);
    }

    /// Hits, misses and the hit rate move with lookups; entries and bytes with writes.
    #[test]
    fn stats_move_with_lookups_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::from_millis(1_000_000);
        let cache = DiskCache::with_limit(dir.path(), 1 << 20);
        let empty = cache.stats();
        assert_eq!(
            (empty.entries, empty.bytes, empty.hits, empty.misses),
            (0, 0, 0, 0)
        );
        assert_eq!((empty.max_bytes, empty.hit_rate), (1 << 20, 0.0));
        assert!(!cached(&cache, "k", t0));
        store(&cache, "k", &blob(1, 500), t0);
        assert!(cached(&cache, "k", t0));
        assert!(cached(&cache, "k", t0));
        assert!(
            cache.get("k", 1, t0.plus_secs(5)).is_none(),
            "expired: a miss"
        );
        let s = cache.stats();
        assert_eq!((s.entries, s.hits, s.misses), (1, 2, 2));
        assert_eq!(s.hit_rate, 0.5);
        assert!(s.bytes > 500 && s.bytes < 1_000, "{s:?}");
        let json = serde_json::to_value(s).unwrap();
        for field in ["entries", "bytes", "maxBytes", "hits", "misses", "hitRate"] {
            assert!(json.get(field).is_some(), "{field} in {json}");
        }
    }

    /// A new cache on the same directory (a restart) finds what was stored, with the
    /// recency the hits gave it, and trims to a lower limit by evicting the oldest.
    #[test]
    fn a_restart_rebuilds_the_index_from_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::from_millis(1_000_000);
        let before = DiskCache::with_limit(dir.path(), 1 << 20);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            store(&before, key, &blob(i as u8, 1_000), t0);
            // Modification times are what order the entries after a restart.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(cached(&before, "a", t0), "a is now the most recently used");
        // What an interrupted write leaves: removed at start, never counted.
        let shard = std::fs::read_dir(dir.path().join("objects"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(shard.join("0123.tmp0123"), b"half").unwrap();
        let bytes = before.stats().bytes;
        drop(before);

        let after = DiskCache::with_limit(dir.path(), 1 << 20);
        assert_eq!((after.stats().entries, after.stats().bytes), (3, bytes));
        assert!(cached(&after, "b", t0));
        drop(after);
        // Room for two: c goes (b was read last, then a before it).
        let smaller = DiskCache::with_limit(dir.path(), 2_300);
        assert_eq!(smaller.stats().entries, 2);
        assert!(!cached(&smaller, "c", t0));
        assert!(cached(&smaller, "a", t0) && cached(&smaller, "b", t0));
        assert_eq!(bytes_on_disk(dir.path()), smaller.stats().bytes);
    }
}
