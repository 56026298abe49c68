//! Provider API keys at rest: sealed with AES-256-GCM under a master key that never touches
//! the database.
//!
//! The master key comes from `LYSS_MASTER_KEY` (32 bytes as base64 or hex — every replica of a
//! cluster needs the same one), else from `master.key` in the data directory, created on first
//! use with mode 0600. A sealed value is bound to what it belongs to (the provider's name is
//! the associated data), so a ciphertext copied to another row does not open.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;

use crate::error::{Error, Result};

/// The environment variable that holds the master key.
pub const MASTER_KEY_ENV: &str = "LYSS_MASTER_KEY";
/// The key file's name in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
const NONCE_LEN: usize = 12;

/// The key provider secrets are sealed with.
pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

fn decode(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    };
    bytes.try_into().ok()
}

impl MasterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(bytes.into()))
    }

    /// `LYSS_MASTER_KEY`, else `data_dir/master.key`, created (0600) when `create` is set.
    pub fn load(data_dir: &Path, create: bool) -> Result<Self> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            let bytes = decode(&text).ok_or_else(|| {
                Error::Config(format!(
                    "{MASTER_KEY_ENV} must be 32 bytes as base64 or hex (e.g. `openssl rand -base64 32`)"
                ))
            })?;
            return Ok(Self::from_bytes(&bytes));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => decode(&text)
                .map(|b| Self::from_bytes(&b))
                .ok_or_else(|| Error::Config(format!("{} is not a 32-byte key", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let bytes: [u8; 32] = rand::random();
                create_private_dir(data_dir)
                    .map_err(|e| Error::Config(format!("{}: {e}", data_dir.display())))?;
                write_private(
                    &path,
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .as_bytes(),
                )?;
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) => Err(Error::Config(format!(
                "no master key: set {MASTER_KEY_ENV} or provide {} ({e})",
                path.display()
            ))),
        }
    }

    /// Encrypts `secret` for `owner`: a fresh random nonce, then the ciphertext and tag.
    pub fn seal(&self, owner: &str, secret: &str) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: owner.as_bytes(),
                },
            )
            .map_err(|_| Error::Internal("sealing a secret failed".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Decrypts what [`Self::seal`] made for the same `owner`.
    pub fn open(&self, owner: &str, sealed: &[u8]) -> Result<String> {
        let wrong = || {
            Error::Config(format!(
                "the stored key of `{owner}` does not open with this master key (was {MASTER_KEY_ENV} or {MASTER_KEY_FILE} changed?)"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let plain = self
            .0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: owner.as_bytes(),
                },
            )
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }
}

/// Creates a directory (and its missing parents) only its owner can enter (0700 on Unix):
/// lyss's data directory holds the database, the admin token and the master key.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates an empty file only its owner can read and write (0600 on Unix) unless it exists.
/// A SQLite database created this way keeps its WAL and shared-memory files at 0600 too
/// (SQLite gives them the database file's mode).
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes a file only its owner can read and write (0600 on Unix).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    f.write_all(contents)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_owner() {
        let key = MasterKey::from_bytes(&[7; 32]);
        let sealed = key.seal("anthropic", "sk-ant-secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"sk-ant"), "not in clear");
        assert_eq!(key.open("anthropic", &sealed).unwrap(), "sk-ant-secret");
        assert_ne!(
            sealed,
            key.seal("anthropic", "sk-ant-secret").unwrap(),
            "fresh nonce"
        );
        assert!(key.open("openai", &sealed).is_err(), "bound to its owner");
        assert!(
            MasterKey::from_bytes(&[8; 32])
                .open("anthropic", &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(key.open("anthropic", &tampered).is_err());
        assert!(key.open("anthropic", &[1, 2]).is_err());
    }

    #[test]
    fn keys_decode_from_base64_or_hex() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(decode(&hex).unwrap()[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        assert_eq!(decode(&b64).unwrap(), [9u8; 32]);
        assert!(decode("short").is_none());
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        // Not under test here: the environment variable (other tests may run in parallel).
        if std::env::var(MASTER_KEY_ENV).is_ok() {
            return;
        }
        assert!(
            MasterKey::load(dir.path(), false).is_err(),
            "not created unless asked"
        );
        let first = MasterKey::load(dir.path(), true).unwrap();
        let sealed = first.seal("p", "v").unwrap();
        let again = MasterKey::load(dir.path(), false).unwrap();
        assert_eq!(again.open("p", &sealed).unwrap(), "v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
