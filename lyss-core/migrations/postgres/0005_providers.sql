-- Providers added with `lyss provider add`. The API key is sealed (AES-256-GCM, see
-- secrets.rs) under a master key kept outside the database; or only the name of the
-- environment variable that holds it is stored.
CREATE TABLE providers (
    name             TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    base_url         TEXT NOT NULL,
    api_key_env      TEXT,
    api_key_sealed   BYTEA,
    api_version      TEXT,
    discover_models  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at       BIGINT NOT NULL
);
