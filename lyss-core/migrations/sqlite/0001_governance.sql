-- Workspaces, users, keys and the usage ledger. Times are unix seconds (ledger: milliseconds).
CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- JSON array of public model names; ["*"] allows every configured model.
    models      TEXT NOT NULL,
    rpm         INTEGER,
    tpm         INTEGER,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    rpm           INTEGER,
    tpm           INTEGER,
    created_at    INTEGER NOT NULL
);
CREATE INDEX users_workspace ON users(workspace_id);

CREATE TABLE api_keys (
    -- The public id: the middle part of lyss-sk-<id>-<secret>.
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    name         TEXT,
    -- SHA-256 of the secret part; the secret itself is never stored.
    secret_hash  BLOB NOT NULL,
    -- JSON array narrowing the workspace's models, or NULL for all of them.
    models       TEXT,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    rpm          INTEGER,
    tpm          INTEGER,
    created_at   INTEGER NOT NULL
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE usage_ledger (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms              INTEGER NOT NULL,
    request_id         TEXT NOT NULL,
    workspace_id       TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    endpoint           TEXT NOT NULL,
    model              TEXT NOT NULL,
    provider           TEXT NOT NULL,
    upstream_model     TEXT NOT NULL,
    stream             INTEGER NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    -- Prompt tokens the client sent, before memory compression.
    prompt_tokens_original INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL,
    cached_tokens      INTEGER NOT NULL,
    cost_nusd          INTEGER NOT NULL,
    latency_ms         REAL NOT NULL,
    status             INTEGER NOT NULL,
    error              TEXT
);
CREATE INDEX usage_ledger_at ON usage_ledger(at_ms);
CREATE INDEX usage_ledger_key ON usage_ledger(key_id, at_ms);

-- Budgets: one per (scope, target, unit, period). Amounts are nano-USD or tokens.
CREATE TABLE budgets (
    id            TEXT PRIMARY KEY,
    scope         TEXT NOT NULL,          -- workspace | user | key
    scope_id      TEXT NOT NULL,          -- ws_…, u_… or the key's public id
    unit          TEXT NOT NULL,          -- usd | tokens
    limit_amount  INTEGER NOT NULL,
    period        TEXT NOT NULL,          -- none | daily | weekly | monthly
    tz            TEXT,
    expires_at    INTEGER,
    created_at    INTEGER NOT NULL,
    UNIQUE (scope, scope_id, unit, period)
);
CREATE INDEX budgets_scope_id ON budgets(scope_id);

-- What each budget has spent and holds in reservations, per period (period_start: unix s).
CREATE TABLE budget_usage (
    budget_id     TEXT NOT NULL REFERENCES budgets(id) ON DELETE CASCADE,
    period_start  INTEGER NOT NULL,
    spent         INTEGER NOT NULL DEFAULT 0,
    reserved      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period_start)
);

-- Holds of requests in flight; the reaper releases those past expires_at.
CREATE TABLE reservations (
    id            TEXT NOT NULL,
    budget_id     TEXT NOT NULL,
    period_start  INTEGER NOT NULL,
    amount        INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (id, budget_id)
);
CREATE INDEX reservations_expires ON reservations(expires_at);
