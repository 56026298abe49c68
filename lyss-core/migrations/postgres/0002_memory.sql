-- Long-term memories (one row per memory) and every change to them.
CREATE TABLE memories (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    -- The full scope: workspace, user, the app's end-user and an agent tag (JSON array).
    scope         TEXT NOT NULL,
    text          TEXT NOT NULL,
    -- Little-endian f32s of the embedding, and which embedder made them.
    embedding     BYTEA,
    embedder      TEXT,
    -- Provenance: source message ids or a note, and when the remembered thing happened.
    source        TEXT,
    occurred_at   BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX memories_scope ON memories(scope, created_at);
CREATE INDEX memories_user ON memories(workspace_id, user_id);

CREATE TABLE memory_history (
    id            BIGSERIAL PRIMARY KEY,
    memory_id     TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    event         TEXT NOT NULL,          -- add | update | delete
    old_text      TEXT,
    new_text      TEXT,
    at            BIGINT NOT NULL
);
CREATE INDEX memory_history_memory ON memory_history(memory_id, id);

-- New turns waiting to become memories: written before the response completes, drained by a
-- background worker, so a crash between the two loses nothing.
CREATE TABLE memory_outbox (
    id            BIGSERIAL PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    scope         TEXT NOT NULL,
    text          TEXT NOT NULL,
    source        TEXT,
    occurred_at   BIGINT,
    queued_at     BIGINT NOT NULL
);

-- Bumped on every change to a scope's memories, so that every process notices when its
-- in-process index is behind.
CREATE TABLE memory_scope_versions (
    scope         TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    version       BIGINT NOT NULL
);
CREATE INDEX memory_scope_versions_user ON memory_scope_versions(workspace_id, user_id);
