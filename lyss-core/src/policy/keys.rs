//! Virtual keys: `lyss-sk-<public id>-<secret>`.
//!
//! The public id names the key in lists and logs; only a SHA-256 of the secret is stored.
//! A plain (unsalted, fast) hash is the right tool here: the secret is 190 bits of randomness,
//! not a password, so it cannot be guessed offline, and verification stays cheap per request.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use rand::distr::Alphanumeric;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use super::{Policy, Principal};
use crate::error::{Error, Result};

const PREFIX: &str = "lyss-sk-";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;

/// A freshly minted key: the full text (shown once) and its parts.
pub struct NewKeyMaterial {
    pub full: String,
    pub id: String,
    pub secret_hash: [u8; 32],
}

/// Mints a new key.
pub fn generate() -> NewKeyMaterial {
    let mut rng = rand::rng();
    let id: String = (0..ID_LEN)
        .map(|_| {
            const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            CHARS[rng.random_range(0..CHARS.len())] as char
        })
        .collect();
    let secret: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(SECRET_LEN)
        .map(char::from)
        .collect();
    NewKeyMaterial {
        full: format!("{PREFIX}{id}-{secret}"),
        secret_hash: hash_secret(&secret),
        id,
    }
}

/// Splits a presented key into (public id, secret), or `None` if it is not a lyss key.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('-')?;
    let ok = id.len() == ID_LEN
        && secret.len() == SECRET_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some((id, secret))
}

/// SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time check of a secret against a stored hash.
pub fn verify(secret: &str, stored_hash: &[u8]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

/// Generates an opaque random token (admin tokens, ids).
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Remembers verified keys for a short time so that a request does not read the store.
///
/// Keyed by the SHA-256 of the whole presented key, so a hit proves the same secret was
/// verified before. Only successes are kept; expiry is re-checked on every hit; the lifetime
/// bounds how long a revocation takes to reach this process.
pub struct KeyCache {
    cache: moka::sync::Cache<[u8; 32], Arc<Principal>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Authenticates through the cache.
    pub async fn authenticate(&self, policy: &dyn Policy, key: &str) -> Result<Arc<Principal>> {
        let digest = hash_secret(key);
        let now = OffsetDateTime::now_utc();
        if let Some(p) = self.cache.get(&digest) {
            if p.expired(now) {
                self.cache.invalidate(&digest);
                return Err(Error::Unauthenticated("This API key has expired.".into()));
            }
            return Ok(p);
        }
        let p = Arc::new(policy.authenticate(key).await?);
        self.cache.insert(digest, p.clone());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let k = generate();
        let (id, secret) = parse(&k.full).unwrap();
        assert_eq!(id, k.id);
        assert!(verify(secret, &k.secret_hash));
        assert!(!verify("x", &k.secret_hash));
        assert_ne!(generate().full, k.full);
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "sk-abc",
            "lyss-sk-",
            "lyss-sk-abc-def",
            "lyss-sk-ABCDEFGHIJKL-0123456789abcdef0123456789abcdef",
            "lyss-sk-abcdefghijkl-0123456789abcdef0123456789abcde",
            "lyss-sk-abcdefghijkl-0123456789abcdef0123456789abcd-f",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
