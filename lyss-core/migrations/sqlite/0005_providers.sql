-- Providers added with `lyss provider add`. The API key is sealed (AES-256-GCM, see
-- secrets.rs) under a master key kept outside the database; or only the name of the
-- environment variable that holds it is stored.
CREATE TABLE providers (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    base_url         TEXT NOT NULL,
    api_key_env      TEXT,
    api_key_sealed   BLOB,
    api_version      TEXT,
    discover_models  INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);
