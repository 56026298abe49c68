//! One error type for the whole library, by meaning. It carries no HTTP types: the server maps
//! each variant to exactly one status in one place (`lyss_server::error`).

use std::time::Duration;

/// Result alias used across lyss-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key, a malformed key, an unknown key, a revoked or an expired key.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (for example an admin route without the token).
    #[error("{0}")]
    PermissionDenied(String),
    /// The model does not exist, or the caller's allow-lists do not include it. Both look the
    /// same to the caller so that model names of other tenants do not leak.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// The request itself is wrong; `param` names the offending field when known.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The request body is larger than the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// A named thing (workspace, user, key) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A thing with that name already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// A rate limit refused the request; retry after the given delay.
    #[error("rate limit reached for {scope}; retry after {} s", retry_after.as_secs().max(1))]
    RateLimited {
        scope: String,
        retry_after: Duration,
    },
    /// A budget cannot admit the request: which one, where it stands and when it resets.
    #[error("{}", .0.message)]
    BudgetExceeded(Box<BudgetRefusal>),
    /// The upstream provider answered with an error status.
    #[error("upstream {provider} answered {status}: {message}")]
    Upstream {
        provider: String,
        status: u16,
        message: String,
        /// How long the upstream asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The upstream provider could not be reached or its answer could not be understood.
    #[error("upstream {provider} failed: {message}")]
    UpstreamUnavailable { provider: String, message: String },
    /// The upstream provider did not answer in time.
    #[error("upstream {provider} timed out")]
    UpstreamTimeout { provider: String },
    /// A backend lyss depends on (database, cache) is unavailable. Quotas fail closed on this.
    #[error("{backend} is unavailable: {message}")]
    Unavailable {
        backend: &'static str,
        message: String,
        /// The database refused because of other writers (a deadlock, a serialization
        /// failure, a busy or locked SQLite file): the same work may succeed if run again.
        contended: bool,
    },
    /// Configuration is invalid; the message names the key and how to fix it.
    #[error("configuration: {0}")]
    Config(String),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a budget refused a request, with what a caller needs to act on it. Plain fields, so
/// that the error type depends on nothing else in the crate.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRefusal {
    /// For people: which budget, why, what is spent and reserved, when it resets.
    pub message: String,
    /// The refusing budget: its id, scope (`workspace`, `user` or `key`) and that scope's name,
    /// its limit in its unit (`usd`: nano-USD; `tokens`).
    pub budget_id: String,
    pub scope: &'static str,
    pub scope_name: String,
    pub limit: i64,
    pub unit: &'static str,
    /// Spent and reserved in the current period, in the budget's unit.
    pub spent: i64,
    pub reserved: i64,
    /// When the current period ends and the budget admits requests again (`None`: it does
    /// not reset, or it has expired).
    pub resets_at: Option<time::OffsetDateTime>,
}

impl Error {
    /// An [`Error::InvalidRequest`] without a parameter name.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    /// An [`Error::InvalidRequest`] naming the offending parameter.
    pub fn invalid_param(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Error::NotFound("row".into()),
            e @ (sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed) => Error::Unavailable {
                backend: "database",
                message: e.to_string(),
                contended: false,
            },
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(db.message().to_string())
            }
            // Disk full, read-only file, locked database: the store cannot take writes now.
            sqlx::Error::Database(db) => Error::Unavailable {
                backend: "database",
                message: db.message().to_string(),
                contended: db.code().as_deref().is_some_and(contention),
            },
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Whether a database error code means other writers were in the way: Postgres's SQLSTATE
/// `40P01` (deadlock detected), `40001` (serialization failure) or `55P03` (lock not
/// available), or SQLite's `SQLITE_BUSY` / `SQLITE_LOCKED` (5 and 6, with any extended code).
fn contention(code: &str) -> bool {
    matches!(code, "40P01" | "40001" | "55P03")
        || code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Unavailable {
            backend: "database",
            message: format!("migration failed: {e}"),
            contended: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::contention;

    #[test]
    fn contention_is_read_from_the_error_code() {
        // Postgres: deadlock, serialization failure, lock not available.
        for code in ["40P01", "40001", "55P03"] {
            assert!(contention(code), "{code}");
        }
        // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes (BUSY_SNAPSHOT,
        // LOCKED_SHAREDCACHE).
        for code in ["5", "6", "517", "262"] {
            assert!(contention(code), "{code}");
        }
        // A unique violation on either, a full disk, a read-only file: not contention.
        for code in ["23505", "2067", "13", "8", "53100"] {
            assert!(!contention(code), "{code}");
        }
    }
}
