//! The memory store's statements: the macros that implement the store and its outbox for each
//! backend (`impl_sql_memory!` in `sql.rs`, `impl_sql_outbox!` in `outbox.rs`) only glue them
//! to the backend's sqlx types (binds, row reads, transactions).
//!
//! Every statement runs as written on SQLite and Postgres alike (`$N` placeholders,
//! `ON CONFLICT … RETURNING`). A scope is stored as its key ([`super::MemoryScope::key`]),
//! except in the outbox, which keeps the scope as an object (what `claim` hands back).

/// The columns a memory is read from.
pub(crate) const MEMORY_COLUMNS: &str =
    "id, text, source, occurred_at, created_at, updated_at, role, position, profile";

// --- Memories ---

/// A scope's (`$1`) version: every write bumps it, and a process whose index was built at an
/// older one rebuilds it.
pub(crate) const SCOPE_VERSION: &str = "SELECT version FROM memory_scope_versions WHERE scope = $1";

/// Every row of scope `$1` with its embedding and the embedder that made it, in stored order —
/// which is conversation order: the index's neighbours are turns said together.
pub(crate) fn scope_rows() -> String {
    format!(
        "SELECT {MEMORY_COLUMNS}, embedding, embedder FROM memories WHERE scope = $1 \
         ORDER BY created_at, id"
    )
}

/// Stores memory `$3`'s embedding (`$1`) and the embedder that made it (`$2`).
pub(crate) const SET_EMBEDDING: &str =
    "UPDATE memories SET embedding = $1, embedder = $2 WHERE id = $3";

/// The hashes of scope `$1`'s remembered conversation turns.
pub(crate) const SCOPE_TURNS: &str = "SELECT hash FROM memory_turns WHERE scope = $1";

/// A new memory's row (created and updated both at `$10`).
pub(crate) const INSERT_MEMORY: &str = "INSERT INTO memories (id, workspace_id, user_id, scope, \
     text, embedding, embedder, source, occurred_at, created_at, updated_at, role, position, \
     profile) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13)";

/// A change to a memory (`$4`: add, update or delete), for its history.
pub(crate) const INSERT_HISTORY: &str = "INSERT INTO memory_history \
     (memory_id, workspace_id, user_id, event, old_text, new_text, at, scope) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Bumps scope `$1`'s version (creating it at 1) and returns it: other processes rebuild their
/// index of the scope.
pub(crate) const BUMP_SCOPE_VERSION: &str = "INSERT INTO memory_scope_versions \
     (scope, workspace_id, user_id, version) \
     VALUES ($1, $2, $3, 1) ON CONFLICT (scope) \
     DO UPDATE SET version = memory_scope_versions.version + 1 RETURNING version";

/// Sets memory `$5` (of scope `$6`)'s text, embedding, embedder and update time.
pub(crate) const UPDATE_MEMORY: &str = "UPDATE memories SET text = $1, embedding = $2, \
     embedder = $3, updated_at = $4 WHERE id = $5 AND scope = $6";

/// Deletes memory `$1` of scope `$2`.
pub(crate) const DELETE_MEMORY: &str = "DELETE FROM memories WHERE id = $1 AND scope = $2";

/// Memory `$1` of scope `$2`.
pub(crate) fn memory_by_id() -> String {
    format!("SELECT {MEMORY_COLUMNS} FROM memories WHERE id = $1 AND scope = $2")
}

/// Scope `$1`'s newest memories, at most `$2`.
pub(crate) fn recent_memories() -> String {
    format!(
        "SELECT {MEMORY_COLUMNS} FROM memories WHERE scope = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    )
}

/// Memory `$1`'s history, oldest first: its rows in scope `$4` (of user `$2`, `$3`). Rows
/// written before history kept its scope (none) count for a memory of this scope, or for one
/// since deleted.
pub(crate) const HISTORY: &str = "SELECT h.memory_id, h.event, h.old_text, h.new_text, h.at \
     FROM memory_history h \
     WHERE h.memory_id = $1 AND h.workspace_id = $2 AND h.user_id = $3 \
     AND (h.scope = $4 OR (h.scope IS NULL \
       AND (NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = h.memory_id) \
         OR EXISTS (SELECT 1 FROM memories m WHERE m.id = h.memory_id AND m.scope = $4)))) \
     ORDER BY h.id";

/// A workspace user's scopes with the number of rows in each.
pub(crate) const SCOPES_OF_USER: &str = "SELECT scope, COUNT(*) AS n FROM memories \
     WHERE workspace_id = $1 AND user_id = $2 GROUP BY scope";

/// Deletes scope `$1`'s history, that of its memories included.
pub(crate) const FORGET_SCOPE_HISTORY: &str = "DELETE FROM memory_history WHERE scope = $1 \
     OR memory_id IN (SELECT id FROM memories WHERE scope = $1)";

/// Deletes scope `$1`'s memories.
pub(crate) const FORGET_SCOPE_MEMORIES: &str = "DELETE FROM memories WHERE scope = $1";

/// Deletes scope `$1`'s remembered turns.
pub(crate) const FORGET_SCOPE_TURNS: &str = "DELETE FROM memory_turns WHERE scope = $1";

/// Deletes the turns queued for a scope (`$1`: the scope as an object, as the queue keeps it).
pub(crate) const FORGET_SCOPE_QUEUE: &str = "DELETE FROM memory_outbox WHERE scope = $1";

/// Bumps scope `$1`'s version, if it has one: other processes rebuild their index of it.
pub(crate) const TOUCH_SCOPE_VERSION: &str =
    "UPDATE memory_scope_versions SET version = version + 1 WHERE scope = $1";

/// Deletes every memory of a workspace user, in every scope.
pub(crate) const FORGET_USER_MEMORIES: &str =
    "DELETE FROM memories WHERE workspace_id = $1 AND user_id = $2";

/// Deletes a workspace user's history, remembered turns and queued turns, one statement each.
pub(crate) const FORGET_USER_REST: [&str; 3] = [
    "DELETE FROM memory_history WHERE workspace_id = $1 AND user_id = $2",
    "DELETE FROM memory_turns WHERE workspace_id = $1 AND user_id = $2",
    "DELETE FROM memory_outbox WHERE workspace_id = $1 AND user_id = $2",
];

/// Bumps the version of every scope of a workspace user.
pub(crate) const TOUCH_USER_VERSIONS: &str = "UPDATE memory_scope_versions \
     SET version = version + 1 WHERE workspace_id = $1 AND user_id = $2";

/// Which of some turn hashes a scope remembers: the scope's bind follows, then
/// [`REMEMBERED_TURNS_IN`], the hashes' binds and `)`.
pub(crate) const REMEMBERED_TURNS: &str = "SELECT hash FROM memory_turns WHERE scope = ";

/// The hash list of [`REMEMBERED_TURNS`].
pub(crate) const REMEMBERED_TURNS_IN: &str = " AND hash IN (";

/// Remembers turn `$2` of scope `$1`, or nothing when it is remembered already: the writer that
/// inserts the row claims the turn, and a concurrent writer of the same turn (another request,
/// the ingestion worker, another replica) finds it taken and adds nothing.
pub(crate) const REMEMBER_TURN: &str = "INSERT INTO memory_turns \
     (scope, hash, workspace_id, user_id, at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, hash) DO NOTHING";

/// The history row of a memory a conversation turn added, in its scope `$6` (as
/// [`INSERT_HISTORY`]: forgetting the scope takes it along, another scope never reads it).
pub(crate) const INSERT_TURN_HISTORY: &str = "INSERT INTO memory_history \
     (memory_id, workspace_id, user_id, event, old_text, new_text, at, scope) \
     VALUES ($1, $2, $3, 'add', NULL, $4, $5, $6)";

// --- Outbox ---

/// Queues a turn; a conversation turn already waiting in the queue (same scope and turn
/// hash) is not queued again.
pub(crate) const ENQUEUE: &str = "INSERT INTO memory_outbox (workspace_id, user_id, scope, \
     text, source, occurred_at, queued_at, key_id, role, position, turn_hash, profile) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (scope, turn_hash) DO NOTHING";

/// Claims up to `$3` turns unclaimed at `$2` until `$1`. Users take turns: each user's oldest
/// waiting turn first, then each one's second …, so one user's flood never holds up another's
/// turns by more than a batch. The outer condition is checked again on a row another claimer
/// changed meanwhile (Postgres re-reads it after the lock; SQLite has one writer): taken once
/// only.
pub(crate) const CLAIM: &str = "UPDATE memory_outbox SET claimed_until = $1 \
     WHERE claimed_until <= $2 AND id IN \
     (SELECT id FROM (SELECT id, ROW_NUMBER() OVER \
        (PARTITION BY workspace_id, user_id ORDER BY id) AS turn \
        FROM memory_outbox WHERE claimed_until <= $2) AS waiting \
      ORDER BY turn, id LIMIT $3) \
     RETURNING id, scope, text, source, occurred_at, key_id, role, position, profile";

/// Takes turn `$1` off the queue, returning its scope and turn hash.
pub(crate) const COMPLETE: &str =
    "DELETE FROM memory_outbox WHERE id = $1 RETURNING scope, turn_hash";

/// How many turns of a workspace user wait in the queue (claimed or not).
pub(crate) const WAITING: &str =
    "SELECT COUNT(*) FROM memory_outbox WHERE workspace_id = $1 AND user_id = $2";

/// Returns turn `$1` to the queue now.
pub(crate) const RELEASE: &str = "UPDATE memory_outbox SET claimed_until = 0 WHERE id = $1";
