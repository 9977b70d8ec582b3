//! The screenshot cache on disk, content-addressed.
//!
//! `objects/ab/abcdef...` holds bytes named by their SHA-256, so the same image is stored
//! once however many requests produced it; `keys/12/1234....json` maps a request's cache
//! key (account + the options that change the pixels) to an object, its type and when it
//! was made. Files are written to a temporary name and renamed, so a reader never sees
//! half a file. Idempotent replays point at objects too.

use std::io::Write;
use std::path::{Path, PathBuf};

use ledger_core::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sharded(root: &Path, name: &str) -> PathBuf {
    root.join(&name[..2]).join(name)
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

impl DiskCache {
    pub fn new(dir: impl Into<PathBuf>) -> DiskCache {
        DiskCache { dir: dir.into() }
    }

    fn key_path(&self, key: &str) -> PathBuf {
        sharded(
            &self.dir.join("keys"),
            &hex(&Sha256::digest(key.as_bytes())),
        )
    }

    fn object_path(&self, object: &str) -> Option<PathBuf> {
        (object.len() == 64 && object.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| sharded(&self.dir.join("objects"), object))
    }

    /// The capture stored under `key`, if it is younger than `ttl_secs`.
    pub fn get(&self, key: &str, ttl_secs: u64, now: Timestamp) -> Option<Hit> {
        let record: KeyRecord =
            serde_json::from_slice(&std::fs::read(self.key_path(key)).ok()?).ok()?;
        if now.millis() - record.created_at_ms >= ttl_secs as i64 * 1000 {
            return None;
        }
        let bytes = self.object(&record.object)?;
        Some(Hit {
            bytes,
            content_type: record.content_type,
            object: record.object,
        })
    }

    /// Stores bytes as an object (once) and returns its name.
    pub fn put_object(&self, bytes: &[u8]) -> std::io::Result<String> {
        let object = hex(&Sha256::digest(bytes));
        let path = sharded(&self.dir.join("objects"), &object);
        if !path.is_file() {
            write_atomically(&path, bytes)?;
        }
        Ok(object)
    }

    /// Points `key` at an object.
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
        write_atomically(&self.key_path(key), &serde_json::to_vec(&record)?)
    }

    pub fn object(&self, object: &str) -> Option<Vec<u8>> {
        std::fs::read(self.object_path(object)?).ok()
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
}
