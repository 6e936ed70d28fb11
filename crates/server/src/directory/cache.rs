//! Rendered users, kept while they are current.
//!
//! `GET /Users/{id}` with the default attributes is what identity providers send most (Okta
//! reads a user before and after every change; reconciliations read them all). The answer
//! (the user, its groups direct and nested, its licenses and what they grant) is kept here as
//! the bytes sent, with the commit generations ([`Mark`]) taken before it was read. An entry
//! answers only while its tenant's generation and the global one have not moved, and every
//! commit moves them before its write returns: a client never reads, after its own write,
//! what was rendered before it. Commits by another process on the same SQLite file (the
//! CLI's `apply`) are seen within [`crate::jobs`]' look interval. On PostgreSQL every commit
//! sends a `NOTIFY` with the tenants it locked (`seatkeeper_commits`), and each node's
//! listener moves those tenants' generations when it hears it: another node's write reaches
//! this cache as fast as the notification (well under a millisecond on a local network), and
//! while the listener is not connected no entry answers.
//!
//! The cache is bounded by the bytes it holds (`--user-cache-mb`); the least useful entries
//! leave first (CLOCK-Pro, by `quick_cache`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::body::Bytes;
use quick_cache::{Equivalent, Weighter};

use crate::kernel::store::Mark;

/// One rendered user, as sent.
#[derive(Debug)]
pub(crate) struct Cached {
    /// The generations seen before the user was read.
    pub mark: Mark,
    /// The base URL its `meta.location` and group `$ref`s were written with.
    pub base_url: String,
    /// The user's version (its ETag).
    pub version: i64,
    /// The JSON body.
    pub body: Bytes,
}

#[derive(Debug, PartialEq, Eq)]
struct Key {
    tenant: String,
    id: String,
}

/// A borrowed key: looks up without allocating.
struct KeyRef<'a> {
    tenant: &'a str,
    id: &'a str,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        KeyRef {
            tenant: &self.tenant,
            id: &self.id,
        }
        .hash(h)
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.tenant.hash(h);
        self.id.hash(h);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.tenant == key.tenant && self.id == key.id
    }
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Key, Arc<Cached>> for ByBytes {
    fn weight(&self, key: &Key, v: &Arc<Cached>) -> u64 {
        // The body, the key and the base URL, plus the bookkeeping of an entry.
        (v.body.len() + v.base_url.len() + key.tenant.len() + key.id.len() + 96) as u64
    }
}

/// Rendered users by tenant and id; empty (and never filled) when its capacity is 0.
pub(crate) struct UserCache {
    entries: Option<quick_cache::sync::Cache<Key, Arc<Cached>, ByBytes>>,
}

/// The average rendered user, for sizing the table.
const TYPICAL_ENTRY: u64 = 1_024;

impl UserCache {
    /// A cache holding at most `bytes` (0: none).
    pub(crate) fn new(bytes: u64) -> UserCache {
        UserCache {
            entries: (bytes > 0).then(|| {
                let items = (bytes / TYPICAL_ENTRY).clamp(16, 1 << 22) as usize;
                quick_cache::sync::Cache::with_weighter(items, bytes, ByBytes)
            }),
        }
    }

    /// Whether it caches anything.
    pub(crate) fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The entry for this user, whatever its generations.
    pub(crate) fn get(&self, tenant: &str, id: &str) -> Option<Arc<Cached>> {
        self.entries.as_ref()?.get(&KeyRef { tenant, id })
    }

    /// Keeps a rendered user.
    pub(crate) fn put(&self, tenant: &str, id: &str, entry: Arc<Cached>) {
        if let Some(c) = &self.entries {
            c.insert(
                Key {
                    tenant: tenant.to_string(),
                    id: id.to_string(),
                },
                entry,
            );
            metrics::gauge!("seatkeeper_user_cache_bytes").set(c.weight() as f64);
        }
    }

    /// Forgets a user (it is gone).
    pub(crate) fn forget(&self, tenant: &str, id: &str) {
        if let Some(c) = &self.entries {
            c.remove(&KeyRef { tenant, id });
        }
    }
}

impl Default for UserCache {
    fn default() -> Self {
        UserCache::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str) -> Arc<Cached> {
        Arc::new(Cached {
            mark: Mark::default(),
            base_url: "http://x".into(),
            version: 1,
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn looks_up_by_tenant_and_id_without_mixing_them() {
        let c = UserCache::new(1 << 20);
        c.put("t1", "u1", entry("a"));
        c.put("t2", "u1", entry("b"));
        assert_eq!(&c.get("t1", "u1").unwrap().body[..], b"a");
        assert_eq!(&c.get("t2", "u1").unwrap().body[..], b"b");
        assert!(c.get("t1", "u2").is_none());
        c.forget("t1", "u1");
        assert!(c.get("t1", "u1").is_none());
        assert!(c.get("t2", "u1").is_some());
    }

    #[test]
    fn holds_no_more_than_its_bytes() {
        let c = UserCache::new(64 * 1024);
        let body = "x".repeat(1000);
        for i in 0..1000 {
            c.put("t", &format!("u{i}"), entry(&body));
        }
        let held = (0..1000)
            .filter(|i| c.get("t", &format!("u{i}")).is_some())
            .count();
        assert!(held > 0 && held <= 64, "{held} entries of ~1 KB in 64 KB");
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let c = UserCache::new(0);
        assert!(!c.enabled());
        c.put("t", "u", entry("a"));
        assert!(c.get("t", "u").is_none());
    }
}
