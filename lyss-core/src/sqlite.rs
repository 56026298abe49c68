//! Opening a SQLite file shared by several pools (the policy store and the memory store use the
//! same one).

use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::error::Result;

/// Creates the database if needed, switches it to WAL and applies the migrations, on one
/// connection. A pool that did this itself would open its connections concurrently against a
/// file still being created and switched to WAL, and one of them could fail at once with
/// "database is locked" (seen about once in 50 starts on a fresh data directory).
pub(crate) async fn prepare(opts: &SqliteConnectOptions) -> Result<()> {
    let mut conn = SqliteConnection::connect_with(opts).await?;
    sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}
