-- Admin sign-in sessions (the dashboard's), by the SHA-256 of their random id: signing out
-- deletes the row, so a cookie captured before stops working on every replica.
CREATE TABLE admin_sessions (
    id_hash     TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions(expires_at);
