-- Same model as the SQLite schema; times are unix seconds (ledger: milliseconds).
CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    models      TEXT NOT NULL,
    rpm         BIGINT,
    tpm         BIGINT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    rpm           BIGINT,
    tpm           BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX users_workspace ON users(workspace_id);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    name         TEXT,
    secret_hash  BYTEA NOT NULL,
    models       TEXT,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    rpm          BIGINT,
    tpm          BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE usage_ledger (
    id                 BIGSERIAL PRIMARY KEY,
    at_ms              BIGINT NOT NULL,
    request_id         TEXT NOT NULL,
    workspace_id       TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    endpoint           TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT NOT NULL,
    upstream_model     TEXT NOT NULL,
    stream             BOOLEAN NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    -- Prompt tokens the client sent, before memory compression.
    prompt_tokens_original BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    cost_nusd          BIGINT NOT NULL,
    latency_ms         DOUBLE PRECISION NOT NULL,
    status             BIGINT NOT NULL,
    error              TEXT
);
CREATE INDEX usage_ledger_at ON usage_ledger(at_ms);
CREATE INDEX usage_ledger_key ON usage_ledger(key_id, at_ms);

CREATE TABLE budgets (
    id            TEXT PRIMARY KEY,
    scope         TEXT NOT NULL,
    scope_id      TEXT NOT NULL,
    unit          TEXT NOT NULL,
    limit_amount  BIGINT NOT NULL,
    period        TEXT NOT NULL,
    tz            TEXT,
    expires_at    BIGINT,
    created_at    BIGINT NOT NULL,
    UNIQUE (scope, scope_id, unit, period)
);
CREATE INDEX budgets_scope_id ON budgets(scope_id);

CREATE TABLE budget_usage (
    budget_id     TEXT NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    period_start  BIGINT NOT NULL,
    spent         BIGINT NOT NULL DEFAULT 0,
    reserved      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period_start)
);

CREATE TABLE reservations (
    id            TEXT NOT NULL,
    budget_id     TEXT NOT NULL,
    period_start  BIGINT NOT NULL,
    amount        BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (id, budget_id)
);
CREATE INDEX reservations_expires ON reservations(expires_at);
