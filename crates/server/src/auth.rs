//! API keys (SPEC §6): generated here, shown once, stored as SHA-256 hashes.
//!
//! Keys are 244 random bits, so a fast unsalted hash is enough: there is no dictionary to try
//! and nothing to gain from a slow KDF, while every request pays for the hash. The hash is the
//! lookup key, so verifying a key is one indexed read.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::AppError;
use crate::store::{KeyRecord, Principal, new_id, now_ms};

/// Prefix of admin keys.
pub const ADMIN_PREFIX: &str = "bsa_";
/// Prefix of project keys.
pub const PROJECT_PREFIX: &str = "bsk_";
/// Shortest admin key accepted from `--admin-key`: it must be as hard to guess as ours.
pub const MIN_ADMIN_KEY_LEN: usize = 32;

/// A fresh secret: `prefix` and 64 hex digits from two v4 UUIDs (244 random bits).
#[must_use]
pub fn new_secret(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Hex SHA-256 of a key (lowercase). Every request computes one: the digits are written
/// straight into one `String` (a `format!` per byte was most of a cached request's auth cost).
#[must_use]
pub fn hash_key(secret: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(secret.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for b in digest {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

/// A new key record for `secret` (the secret itself is not kept).
#[must_use]
pub fn key_record(secret: &str, project: Option<&str>, name: &str) -> KeyRecord {
    KeyRecord {
        id: new_id("key_", 16),
        hash: hash_key(secret),
        project: project.map(str::to_owned),
        name: name.to_owned(),
        created_at_ms: now_ms(),
    }
}

/// The authenticated caller, from `Authorization: Bearer <key>`. Rejects with 401.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl Caller {
    /// Admins only (403 for project keys).
    ///
    /// # Errors
    /// [`AppError::Forbidden`].
    pub fn require_admin(&self) -> Result<(), AppError> {
        match self.0 {
            Principal::Admin => Ok(()),
            Principal::Project(_) => Err(AppError::Forbidden),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or(AppError::Unauthorized)?;
        let hash = hash_key(secret);
        if let Some(p) = state.keys.get(&hash) {
            return Ok(Self(p));
        }
        match state.store.principal(&hash).await? {
            Some(p) => {
                state.keys.put(hash, p.clone());
                Ok(Self(p))
            }
            None => Err(AppError::Unauthorized),
        }
    }
}

/// How long a verified key is trusted without asking the store again, by default.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);
/// Most keys remembered; past it the cache starts over (a server holds a few keys per project).
const KEY_CACHE_MAX: usize = 10_000;

/// Keys the store recently confirmed, by hash: the store lookup (on SQLite a blocking-pool hop
/// and the lock of `server.db`) was half the work of a reservation. Only hits are kept, for
/// a TTL ([`KEY_CACHE_TTL`] by default), so an unknown key always reaches the store and a key
/// removed from the store by any process stops working within the TTL.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(KEY_CACHE_TTL)
    }
}

impl KeyCache {
    /// A cache keeping keys for `ttl`; zero turns it off.
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn get(&self, hash: &str) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(p, _)| p.clone())
    }

    /// Forgets every key: after a revocation, this replica asks the store again at once.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn put(&self, hash: String, principal: Principal) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= KEY_CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash, (principal, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_hashes_to_the_lowercase_hex_sha256_stored_keys_were_made_with() {
        // FIPS 180-2's example: the hash is the lookup key of keys stored by earlier versions.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_key(""), format!("{:x}", Sha256::digest(b"")));
    }
}
