//! The store when its database cannot be written (a full disk), run against SQLite and PostgreSQL: a
//! trigger makes every UPDATE of a table fail as such a database does. On SQLite it rolls the whole
//! transaction back (`RAISE(ROLLBACK)`), as SQLITE_FULL does; PostgreSQL aborts the transaction.

mod common;

use std::time::Duration;

use common::{Backend, LEASE, new_job};
use dn_store::prelude::*;

fn sqlite(backend: &Backend) -> bool {
    backend.url.starts_with("sqlite")
}

async fn run(backend: &Backend, statements: &[String]) {
    let pool = sqlx::AnyPool::connect(&backend.url).await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
}

/// Makes every UPDATE of `table` fail, as a full disk would.
async fn refuse_updates(backend: &Backend, table: &str) {
    let statements = if sqlite(backend) {
        vec![format!(
            "CREATE TRIGGER refuse_{table} BEFORE UPDATE ON {table} \
             BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END"
        )]
    } else {
        vec![
            "CREATE OR REPLACE FUNCTION refuse_write() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'could not extend file: No space left on device'; END $$ \
             LANGUAGE plpgsql"
                .to_string(),
            format!(
                "CREATE TRIGGER refuse_{table} BEFORE UPDATE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION refuse_write()"
            ),
        ]
    };
    run(backend, &statements).await;
}

/// The disk has room again.
async fn allow_updates(backend: &Backend, table: &str) {
    let statement = if sqlite(backend) {
        format!("DROP TRIGGER refuse_{table}")
    } else {
        format!("DROP TRIGGER refuse_{table} ON {table}")
    };
    run(backend, &[statement]).await;
}

/// A key still authenticates when its last use cannot be recorded (reads keep working on a database
/// that cannot be written).
async fn keys_authenticate_when_their_last_use_cannot_be_written(backend: &Backend) {
    let store = backend.store().await;
    let key = store.create_api_key("acme").await.unwrap();
    refuse_updates(backend, "api_keys").await;
    assert_eq!(
        store.organization_for_key(&key).await.unwrap().as_deref(),
        Some("acme")
    );
    let keys = store.list_api_keys("acme").await.unwrap();
    assert_eq!(keys[0].last_used_at, None, "the write was refused");
}

/// Write transactions that fail inside (more of them than the pool has connections) leave no
/// connection behind in a transaction: once the disk has room, every write works again. (sqlx's own
/// transactions left each such SQLite connection answering "non-zero transaction depth" for good.)
async fn failed_write_transactions_leave_the_store_usable(backend: &Backend) {
    let store = backend.store().await;
    for i in 0..3 {
        store
            .create_job(new_job("acme", "main", &format!("job-{i}")))
            .await
            .unwrap();
    }
    refuse_updates(backend, "jobs").await;
    for _ in 0..20 {
        let e = store.claim_job("worker", LEASE).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("database or disk is full") || text.contains("No space left"),
            "{text}"
        );
    }
    allow_updates(backend, "jobs").await;
    for _ in 0..3 {
        let claimed =
            tokio::time::timeout(Duration::from_secs(30), store.claim_job("worker", LEASE))
                .await
                .expect("the claim does not hang")
                .unwrap();
        assert!(claimed.is_some());
    }
    store
        .create_job(new_job("acme", "main", "after"))
        .await
        .unwrap();
}

on_both_backends!(
    keys_authenticate_when_their_last_use_cannot_be_written,
    failed_write_transactions_leave_the_store_usable,
);
