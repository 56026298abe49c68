//! The SQL policy's statements, by part: the `impl_sql_*` macros only glue them to each
//! backend's sqlx types (binds, row reads, transactions).
//!
//! Every statement runs as written on SQLite and Postgres alike (`$N` placeholders,
//! `ON CONFLICT … RETURNING`). Some are fragments a `QueryBuilder` completes, as each one's doc
//! says: binds or a `VALUES` list go after a head, and before its `_END` if it has one.

use crate::policy::{Bucket, GroupBy};

/// Checks that the database answers.
pub(crate) const PING: &str = "SELECT 1";

// --- Directory ---

/// A key's facts with its user's and workspace's names; a `WHERE` on `k` follows.
pub(crate) const KEY_INFO_SELECT: &str = "SELECT k.id, k.name, u.name AS user_name, \
     w.name AS ws_name, k.models, k.expires_at, k.revoked_at, k.created_at \
     FROM api_keys k JOIN users u ON u.id = k.user_id JOIN workspaces w ON w.id = u.workspace_id";

/// Every workspace, or the one with id `$1` (NULL: all), by name.
pub(crate) const WORKSPACES: &str = "SELECT id, name, models, created_at, cache_mode, \
     cache_ttl_secs, cache_scope, cache_threshold \
     FROM workspaces WHERE $1 IS NULL OR id = $1 ORDER BY name";

/// A workspace's id and name, by its name or id (`$1`).
pub(crate) const WORKSPACE_ID: &str = "SELECT id, name FROM workspaces WHERE name = $1 OR id = $1";

/// A user's id, by its name or id (`$1`).
pub(crate) const USER_ID: &str = "SELECT id FROM users WHERE name = $1 OR id = $1";

/// A key's facts ([`KEY_INFO_SELECT`]) by its id (`$1`).
pub(crate) fn key_info() -> String {
    format!("{KEY_INFO_SELECT} WHERE k.id = $1")
}

/// Every key's facts ([`KEY_INFO_SELECT`]), or those of user `$1` (NULL: all), oldest first.
pub(crate) fn key_infos() -> String {
    format!("{KEY_INFO_SELECT} WHERE $1 IS NULL OR k.user_id = $1 ORDER BY k.created_at, k.id")
}

/// Everything a request's key (`$1`, its public id) needs in one round trip: its secret's hash,
/// its user and workspace, the rate limits of all three, the workspace's cache settings, and
/// whether any budget applies to one of them.
pub(crate) const AUTHENTICATE: &str = "SELECT k.id, k.name, k.secret_hash, k.models, \
     k.expires_at, k.revoked_at, \
     k.rpm AS k_rpm, k.tpm AS k_tpm, u.id AS user_id, u.name AS user_name, \
     u.rpm AS u_rpm, u.tpm AS u_tpm, w.id AS ws_id, w.name AS ws_name, \
     w.models AS ws_models, w.rpm AS w_rpm, w.tpm AS w_tpm, \
     w.cache_mode, w.cache_ttl_secs, w.cache_scope, w.cache_threshold, \
     EXISTS (SELECT 1 FROM budgets b WHERE b.scope_id IN (k.id, u.id, w.id)) AS budgeted \
     FROM api_keys k JOIN users u ON u.id = k.user_id \
     JOIN workspaces w ON w.id = u.workspace_id WHERE k.id = $1";

/// A new workspace; a name taken already is a unique violation.
pub(crate) const INSERT_WORKSPACE: &str =
    "INSERT INTO workspaces (id, name, models, created_at) VALUES ($1, $2, $3, $4)";

/// Sets workspace `$6`'s models and cache settings; a NULL keeps what is there.
pub(crate) const UPDATE_WORKSPACE: &str = "UPDATE workspaces SET models = COALESCE($1, models), \
     cache_mode = COALESCE($2, cache_mode), cache_ttl_secs = COALESCE($3, cache_ttl_secs), \
     cache_scope = COALESCE($4, cache_scope), cache_threshold = COALESCE($5, cache_threshold) \
     WHERE id = $6";

/// A new user of a workspace; a name taken already is a unique violation.
pub(crate) const INSERT_USER: &str =
    "INSERT INTO users (id, name, workspace_id, created_at) VALUES ($1, $2, $3, $4)";

/// Every user with its workspace's name, or those of workspace `$1` (NULL: all), by name.
pub(crate) const USERS: &str = "SELECT u.id, u.name, w.name, u.created_at FROM users u \
     JOIN workspaces w ON w.id = u.workspace_id \
     WHERE $1 IS NULL OR u.workspace_id = $1 ORDER BY u.name";

/// A new key (its secret stored as a hash only).
pub(crate) const INSERT_KEY: &str = "INSERT INTO api_keys \
     (id, user_id, name, secret_hash, models, expires_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Revokes key `$2` at `$1`; a key revoked already keeps its first time.
pub(crate) const REVOKE_KEY: &str =
    "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";

/// Sets workspace `$3`'s requests (`$1`) and tokens (`$2`) per minute; NULL: no limit.
pub(crate) const SET_WORKSPACE_RATE: &str =
    "UPDATE workspaces SET rpm = $1, tpm = $2 WHERE id = $3";

/// Sets user `$3`'s requests (`$1`) and tokens (`$2`) per minute; NULL: no limit.
pub(crate) const SET_USER_RATE: &str = "UPDATE users SET rpm = $1, tpm = $2 WHERE id = $3";

/// Sets key `$3`'s requests (`$1`) and tokens (`$2`) per minute; NULL: no limit.
pub(crate) const SET_KEY_RATE: &str = "UPDATE api_keys SET rpm = $1, tpm = $2 WHERE id = $3";

/// Deletes the sign-in sessions that ran out by `$1` (run when a new one opens: the table
/// stays small).
pub(crate) const DELETE_EXPIRED_SESSIONS: &str =
    "DELETE FROM admin_sessions WHERE expires_at <= $1";

/// A new sign-in session, by its id's hash.
pub(crate) const INSERT_SESSION: &str =
    "INSERT INTO admin_sessions (id_hash, expires_at, created_at) VALUES ($1, $2, $3)";

/// A session (by its id's hash, `$1`) still open at `$2`: a row when it is.
pub(crate) const SESSION_OPEN: &str =
    "SELECT expires_at FROM admin_sessions WHERE id_hash = $1 AND expires_at > $2";

/// Ends a session (by its id's hash).
pub(crate) const DELETE_SESSION: &str = "DELETE FROM admin_sessions WHERE id_hash = $1";

// --- Budgets ---

/// The budgets of some scope ids: the ids' binds and `)` follow.
pub(crate) const BUDGETS_OF_SCOPES: &str = "SELECT id, scope, scope_id, unit, limit_amount, \
     period, tz, expires_at \
     FROM budgets WHERE scope_id IN (";

/// An upsert that changes nothing but creates missing usage rows and locks them (Postgres), in
/// the order given, and returns them — those of budgets that still exist (one deleted while
/// its request ran has no row to come back to). A `VALUES` list of `(budget id, period start)`
/// follows, then [`LOCK_USAGE_ROWS_END`].
pub(crate) const LOCK_USAGE_ROWS: &str = "INSERT INTO budget_usage \
     (budget_id, period_start, spent, reserved) \
     SELECT column1, column2, 0, 0 FROM (";

/// The end of [`LOCK_USAGE_ROWS`].
pub(crate) const LOCK_USAGE_ROWS_END: &str = ") AS v WHERE column1 IN (SELECT id FROM budgets) \
     ON CONFLICT (budget_id, period_start) DO UPDATE SET spent = budget_usage.spent \
     RETURNING budget_id, period_start, spent, reserved";

/// Some holds by reservation id: the ids' binds and `)` follow (and [`FOR_UPDATE`] where
/// other writers run at the same time).
pub(crate) const HOLDS_BY_ID: &str =
    "SELECT id, budget_id, period_start, amount, expires_at FROM reservations WHERE id IN (";

/// Locks the rows read, where other writers can run at the same time (Postgres); SQLite's
/// `BEGIN IMMEDIATE` already serializes writers.
pub(crate) const FOR_UPDATE: &str = " FOR UPDATE";

/// The main statement of a Postgres write-back whose `WITH` parts did all the writing (no
/// ledger rows to insert).
pub(crate) const WITH_NOTHING_MORE: &str = " SELECT 1";

/// Holds expired by `$1`, by budget and period, at most 10,000 at a time.
pub(crate) const EXPIRED_HOLDS: &str = "SELECT id, budget_id, period_start FROM reservations \
     WHERE expires_at <= $1 ORDER BY budget_id, period_start LIMIT 10000";

/// The head of one multi-row `INSERT` of ledger rows: a `VALUES` list of
/// [`LEDGER_COLUMNS`] follows.
pub(crate) fn insert_ledger() -> String {
    format!("INSERT INTO usage_ledger ({LEDGER_COLUMNS}) ")
}

/// Sets usage rows to their `(spent, reserved)`: a `VALUES` list of `(budget id, period start,
/// spent, reserved)` follows, then [`SET_USAGE_END`].
pub(crate) const SET_USAGE: &str =
    "INSERT INTO budget_usage (budget_id, period_start, spent, reserved) ";

/// The end of [`SET_USAGE`].
pub(crate) const SET_USAGE_END: &str = " ON CONFLICT (budget_id, period_start) DO UPDATE SET \
     spent = excluded.spent, reserved = excluded.reserved";

/// Deletes holds: `(id = … AND budget_id = …)` conditions joined by `OR` follow.
pub(crate) const DELETE_HOLDS: &str = "DELETE FROM reservations WHERE ";

/// Inserts holds, or sets the amount of those already there: a `VALUES` list of `(reservation
/// id, budget id, period start, amount, expires at)` follows, then [`PUT_HOLDS_END`].
pub(crate) const PUT_HOLDS: &str =
    "INSERT INTO reservations (id, budget_id, period_start, amount, expires_at) ";

/// The end of [`PUT_HOLDS`].
pub(crate) const PUT_HOLDS_END: &str =
    " ON CONFLICT (id, budget_id) DO UPDATE SET amount = excluded.amount";

/// Every budget's definition.
pub(crate) const ALL_BUDGETS: &str =
    "SELECT id, scope, scope_id, unit, limit_amount, period, tz, expires_at FROM budgets";

/// Adds spend to usage rows — only to budgets that still exist: a request whose budget was
/// deleted while it ran still gets its ledger row. A `VALUES` list of `(budget id, period
/// start, spent)` follows, then [`ADD_SPEND_END`].
pub(crate) const ADD_SPEND: &str = "INSERT INTO budget_usage \
     (budget_id, period_start, spent, reserved) \
     SELECT column1, column2, column3, 0 FROM (";

/// The end of [`ADD_SPEND`].
pub(crate) const ADD_SPEND_END: &str = ") AS v WHERE column1 IN (SELECT id FROM budgets) \
     ON CONFLICT (budget_id, period_start) DO UPDATE SET \
     spent = budget_usage.spent + excluded.spent";

/// Deletes every hold of some reservations: the ids' binds and `)` follow.
pub(crate) const RELEASE_HOLDS: &str = "DELETE FROM reservations WHERE id IN (";

/// Creates a budget, or sets the limit, time zone and expiry of the one with the same scope,
/// unit and period; returns its id.
pub(crate) const UPSERT_BUDGET: &str = "INSERT INTO budgets \
     (id, scope, scope_id, unit, limit_amount, period, tz, expires_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (scope, scope_id, unit, period) DO UPDATE SET \
     limit_amount = excluded.limit_amount, tz = excluded.tz, expires_at = excluded.expires_at \
     RETURNING id";

/// Deletes budget `$1`.
pub(crate) const DELETE_BUDGET: &str = "DELETE FROM budgets WHERE id = $1";

/// Every budget with its scope's name (a key's is its id).
pub(crate) const BUDGETS_NAMED: &str = "SELECT b.id, b.scope, b.scope_id, b.unit, \
     b.limit_amount, b.period, b.tz, b.expires_at, \
     CASE b.scope WHEN 'workspace' THEN (SELECT name FROM workspaces WHERE id = b.scope_id) \
     WHEN 'user' THEN (SELECT name FROM users WHERE id = b.scope_id) ELSE b.scope_id END \
     AS scope_name \
     FROM budgets b ORDER BY b.scope, scope_name, b.unit, b.period";

/// A budget's (`$1`) spent and reserved amounts in the period starting at `$2`.
pub(crate) const BUDGET_USAGE: &str =
    "SELECT spent, reserved FROM budget_usage WHERE budget_id = $1 AND period_start = $2";

// --- Ledger ---

/// The columns of a ledger row, in the order [`insert_ledger`]'s values are bound.
pub(crate) const LEDGER_COLUMNS: &str = "at_ms, request_id, workspace_id, user_id, key_id, \
     endpoint, model, provider, upstream_model, stream, prompt_tokens, prompt_tokens_original, \
     completion_tokens, cached_tokens, cost_nusd, latency_ms, status, error, cache, saved_tokens, \
     saved_nusd, memory_saved_nusd, cache_write_tokens, prompt_cache_saved_nusd";

/// Ledger rows, newest first: since `$1`, of key `$2`, before `$4` (each NULL: any), at most
/// `$3`.
pub(crate) fn ledger_rows() -> String {
    format!(
        "SELECT {LEDGER_COLUMNS} FROM usage_ledger \
         WHERE ($1 IS NULL OR at_ms >= $1) AND ($2 IS NULL OR key_id = $2) \
         AND ($4 IS NULL OR at_ms < $4) \
         ORDER BY id DESC LIMIT $3"
    )
}

/// A usage report: the ledger rows since `$1` and before `$2` (each NULL: any) — of key `$3`
/// only when `one_key` (a statement of its own, so that the planner uses the key's index) —
/// summed per group (`grp`) and, in a time series, per bucket (`bkt`).
pub(crate) fn usage(by: GroupBy, bucket: Option<Bucket>, one_key: bool) -> String {
    let group = match by {
        GroupBy::Workspace => "COALESCE(w.name, l.workspace_id)",
        GroupBy::User => "COALESCE(u.name, l.user_id)",
        GroupBy::Key => "l.key_id",
        GroupBy::Model => "l.model",
        GroupBy::Day => "CAST(l.at_ms / 86400000 AS TEXT)",
    };
    // A time series groups by bucket too (integer division: the same on both
    // databases; UTC).
    let bucket = match bucket {
        Some(b) => format!("(l.at_ms / {0}) * {0}", b.millis()),
        // Not a bare `0`: in ORDER BY that names a column position.
        None => "CAST(0 AS BIGINT)".to_owned(),
    };
    format!(
        "SELECT {bucket} AS bkt, {group} AS grp, COUNT(*) AS requests, \
         CAST(SUM(CASE WHEN l.status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
         CAST(SUM(l.prompt_tokens) AS BIGINT) AS prompt_tokens, \
         CAST(SUM(l.completion_tokens) AS BIGINT) AS completion_tokens, \
         CAST(SUM(l.cost_nusd) AS BIGINT) AS cost_nusd, \
         CAST(SUM(l.prompt_tokens_original - l.prompt_tokens) AS BIGINT) AS memory_saved, \
         CAST(SUM(l.memory_saved_nusd) AS BIGINT) AS memory_saved_nusd, \
         CAST(SUM(CASE WHEN l.cache IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS cache_hits, \
         CAST(SUM(l.saved_tokens) AS BIGINT) AS cache_saved_tokens, \
         CAST(SUM(l.saved_nusd) AS BIGINT) AS cache_saved, \
         CAST(SUM(l.cached_tokens) AS BIGINT) AS cached_tokens, \
         CAST(SUM(l.cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
         CAST(SUM(l.prompt_cache_saved_nusd) AS BIGINT) AS prompt_cache_saved \
         FROM usage_ledger l LEFT JOIN workspaces w ON w.id = l.workspace_id \
         LEFT JOIN users u ON u.id = l.user_id \
         WHERE ($1 IS NULL OR l.at_ms >= $1) AND ($2 IS NULL OR l.at_ms < $2){key} \
         GROUP BY {bucket}, {group} ORDER BY {bucket}, {group}",
        key = if one_key { " AND l.key_id = $3" } else { "" },
    )
}

// --- Conversations ---

/// A stored response with the messages that led to it, of user `$2`.
pub(crate) const INSERT_RESPONSE: &str = "INSERT INTO responses \
     (id, user_id, messages, response, created_at_ms) VALUES ($1, $2, $3, $4, $5)";

/// Response `$1` of user `$2`.
pub(crate) const RESPONSE: &str = "SELECT response FROM responses WHERE id = $1 AND user_id = $2";

/// Deletes response `$1` of user `$2`.
pub(crate) const DELETE_RESPONSE: &str = "DELETE FROM responses WHERE id = $1 AND user_id = $2";

/// The messages that led to response `$1` of user `$2`.
pub(crate) const RESPONSE_MESSAGES: &str =
    "SELECT messages FROM responses WHERE id = $1 AND user_id = $2";

// --- Providers ---

/// Stores a provider, or replaces every setting of the one with the same name but its
/// creation time.
pub(crate) const UPSERT_PROVIDER: &str = "INSERT INTO providers (name, kind, base_url, \
     api_key_env, api_key_sealed, api_version, discover_models, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (name) DO UPDATE SET kind = $2, base_url = $3, api_key_env = $4, \
     api_key_sealed = $5, api_version = $6, discover_models = $7";

/// Every stored provider, by name.
pub(crate) const PROVIDERS: &str = "SELECT name, kind, base_url, api_key_env, api_key_sealed, \
     api_version, discover_models, created_at \
     FROM providers ORDER BY name";

/// Deletes provider `$1`.
pub(crate) const DELETE_PROVIDER: &str = "DELETE FROM providers WHERE name = $1";
