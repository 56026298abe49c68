//! Opening a SQLite file shared by several pools (the policy store and the memory store use the
//! same one) and by several processes (the server, and an admin's `lyss` command beside it).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::error::{Error, Result};

/// Creates the database if needed, switches it to WAL and applies the migrations, on one
/// connection, holding an exclusive lock on `<file>.lock` meanwhile.
///
/// One connection: a pool that did this itself would open its connections concurrently against
/// a file still being created and switched to WAL, and one of them could fail at once with
/// "database is locked" (seen about once in 50 starts on a fresh data directory).
///
/// The lock file: sqlx's SQLite migrator takes no lock (Postgres's takes an advisory lock), so
/// two processes opening a new data directory at once would both apply migration 1 and one
/// would fail with "duplicate column name". The lock is the OS's (`flock`), released when the
/// process exits however it exits, so a crashed migration never leaves a stale lock behind.
pub(crate) async fn prepare(opts: &SqliteConnectOptions) -> Result<()> {
    let lock = lock_path(opts.get_filename(), "lock");
    // Created here, empty and 0600, before SQLite opens it: SQLite would create it 0644 (every
    // local user could read keys' hashes, ledgers and memories) and gives the WAL and
    // shared-memory files the database's mode.
    let db = opts.get_filename().to_owned();
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::secrets::create_private_dir(dir)
            .map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
    }
    crate::secrets::create_private_file(&db)
        .map_err(|e| Error::Config(format!("{}: {e}", db.display())))?;
    let guard = tokio::task::spawn_blocking(move || exclusive(&lock))
        .await
        .map_err(|e| Error::Internal(format!("migration lock: {e}")))??;
    // Another process may be writing (a server already running while an admin runs `lyss`):
    // the busy timeout covers a statement, not switching the journal mode while a checkpoint
    // runs, so a busy store is retried for a while before startup gives up.
    let mut attempt = 0;
    let done = loop {
        match migrate(opts).await {
            Err(e) if attempt < BUSY_RETRIES && is_busy(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            other => break other,
        }
    };
    drop(guard);
    done
}

/// How many times a busy store is retried at startup (about 9 s in all).
const BUSY_RETRIES: u64 = 8;

async fn migrate(opts: &SqliteConnectOptions) -> Result<()> {
    let mut conn = SqliteConnection::connect_with(opts).await?;
    sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

fn is_busy(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("database is locked") || text.contains("database is busy")
}

/// `<db>.<suffix>`: a lock file beside the database.
pub(crate) fn lock_path(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Blocks until this process holds the lock; dropping the file releases it.
fn exclusive(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options
        .open(path)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    file.lock()
        .map_err(|e| Error::Config(format!("{}: cannot lock: {e}", path.display())))?;
    Ok(file)
}

/// Options for a pool on a SQLite database: a file's pools close a connection that comes back
/// inside a transaction ([`release_outside_transactions`]); an in-memory database exists only
/// on its one connection, which is never closed.
pub(crate) fn pool_options(in_memory: bool) -> sqlx::sqlite::SqlitePoolOptions {
    let options = sqlx::sqlite::SqlitePoolOptions::new();
    match in_memory {
        true => options,
        false => options.after_release(release_outside_transactions),
    }
}

/// A pool's `after_release` check: a connection comes back outside any transaction, or is
/// closed (SQLite then rolls back whatever it still held).
///
/// Seen about once in eight runs of the full-disk fault test: after space was back, one
/// connection still held SQLite's write lock, every other writer waited out its busy timeout
/// and lyss refused every request. The likely path: SQLite rolls a transaction back by itself
/// when the disk fills, the `ROLLBACK` sqlx sends when the transaction is dropped then fails,
/// and sqlx still counts one open; that connection's next transaction begins with a
/// `SAVEPOINT` and, dropped, ends with `ROLLBACK TO`, which leaves SQLite's transaction open.
fn release_outside_transactions(
    conn: &mut SqliteConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> futures::future::BoxFuture<'_, std::result::Result<bool, sqlx::Error>> {
    use sqlx::TransactionManager as _;
    let clean = sqlx::sqlite::SqliteTransactionManager::get_transaction_depth(conn) == 0;
    if !clean {
        tracing::debug!("a SQLite connection came back inside a transaction: closed");
    }
    Box::pin(async move { Ok(clean) })
}
