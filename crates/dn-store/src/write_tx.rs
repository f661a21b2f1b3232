//! Write transactions on a pooled connection of their own, begun and ended with plain SQL. A connection
//! whose transaction did not end cleanly (a statement or COMMIT that failed on a full disk, a server
//! that went away, an early return) is closed, which rolls the transaction back, instead of going back
//! to the pool. sqlx's own transactions queue a ROLLBACK and count their depth; when that ROLLBACK
//! failed too (SQLite had already rolled back after SQLITE_FULL), the pooled connection answered every
//! later BEGIN with "attempted to call begin_with at non-zero transaction depth", and the worker holding
//! it was wedged for good.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use crate::error::Result;

pub(crate) struct WriteTx {
    conn: PoolConnection<Any>,
    /// COMMIT or ROLLBACK succeeded: the connection is clean and goes back to the pool.
    ended: bool,
}

impl WriteTx {
    /// `BEGIN` (or `BEGIN IMMEDIATE`) on a connection of `pool`.
    pub(crate) async fn begin(pool: &AnyPool, statement: &'static str) -> Result<Self> {
        let mut tx = WriteTx {
            conn: pool.acquire().await?,
            ended: false,
        };
        tx.conn.execute(statement).await?;
        Ok(tx)
    }

    pub(crate) async fn commit(mut self) -> Result<()> {
        self.end("COMMIT").await
    }

    pub(crate) async fn rollback(mut self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, statement: &'static str) -> Result<()> {
        self.conn.execute(statement).await?;
        self.ended = true;
        Ok(())
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}
