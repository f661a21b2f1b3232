//! Lease expiry, release on shutdown and automatic retries, run against SQLite and PostgreSQL: the store
//! side of worker recovery.

mod common;

use std::time::Duration;

use common::{Backend, LEASE, new_job};
use dn_store::prelude::*;
use dn_store::{Error, JobOutcome};
use dn_types::JobStatus;
use serde_json::Map;

async fn expired_leases_are_requeued_and_fenced(backend: &Backend) {
    let store = backend.store().await;
    let job = store
        .create_job(new_job("acme", "main", "lost"))
        .await
        .unwrap();
    let stale = store
        .claim_job("dead-worker", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap()
        .lease;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reaped = store.requeue_expired(3).await.unwrap();
    assert_eq!(reaped.requeued, vec![job.id.clone()]);
    assert_eq!(
        store.get_job("acme", "main", &job.id).await.unwrap().status,
        JobStatus::Queued
    );

    let fresh = store
        .claim_job("live-worker", LEASE)
        .await
        .unwrap()
        .unwrap()
        .lease;
    assert_eq!(fresh.attempt, 2);
    // The old attempt can no longer write anything.
    assert!(matches!(
        store.heartbeat(&stale, LEASE).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        store
            .finish_job(
                &stale,
                JobOutcome::Completed {
                    metrics: Map::new(),
                    artifacts: Map::new()
                }
            )
            .await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(
        store.requeue_expired(3).await.unwrap().requeued.is_empty(),
        "a live lease is left alone"
    );

    // A job whose cancel was requested ends cancelled when its lease expires.
    let doomed = store
        .create_job(new_job("acme", "main", "doomed"))
        .await
        .unwrap();
    store
        .finish_job(
            &fresh,
            JobOutcome::Completed {
                metrics: Map::new(),
                artifacts: Map::new(),
            },
        )
        .await
        .unwrap();
    store
        .claim_job("w", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    store.cancel_job("acme", "main", &doomed.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.requeue_expired(3).await.unwrap().cancelled,
        vec![doomed.id.clone()]
    );
    assert_eq!(
        store
            .get_job("acme", "main", &doomed.id)
            .await
            .unwrap()
            .status,
        JobStatus::Cancelled
    );
}

/// A job that keeps losing its worker (it crashes it, or runs it out of memory) is requeued with a retry
/// spent each time, and fails once the retries are spent instead of going round the fleet for ever; a
/// manual retry gives it a fresh budget.
async fn a_job_that_keeps_losing_its_worker_fails_when_its_retries_are_spent(backend: &Backend) {
    let store = backend.store().await;
    let job = store
        .create_job(new_job("acme", "main", "poison"))
        .await
        .unwrap();
    let lose_worker = async || {
        let claimed = store
            .claim_job("doomed-worker", Duration::from_millis(1))
            .await
            .unwrap()
            .expect("the job is claimable");
        tokio::time::sleep(Duration::from_millis(20)).await;
        (claimed.retries, store.requeue_expired(2).await.unwrap())
    };
    for spent in 0..2 {
        let (retries, reaped) = lose_worker().await;
        assert_eq!(retries, spent);
        assert_eq!(reaped.requeued, vec![job.id.clone()]);
    }
    let (retries, reaped) = lose_worker().await;
    assert_eq!(retries, 2);
    assert_eq!(reaped.failed, vec![job.id.clone()]);
    let failed = store.get_job("acme", "main", &job.id).await.unwrap();
    assert_eq!((failed.status, failed.attempt), (JobStatus::Failed, 3));
    let error = failed.error.unwrap();
    assert!(
        error.contains("worker was lost") && error.contains("2 automatic retries are spent"),
        "{error}"
    );
    store.retry_job("acme", "main", &job.id).await.unwrap();
    assert_eq!(lose_worker().await.0, 0, "a manual retry resets the budget");
}

/// A supervisor that saw its worker process die requeues that worker's jobs at once, with how it died in
/// their logs; other workers' jobs (live leases) are untouched.
async fn a_dead_workers_jobs_are_requeued_without_waiting_for_the_lease(backend: &Backend) {
    let store = backend.store().await;
    let job = store
        .create_job(new_job("acme", "main", "killed"))
        .await
        .unwrap();
    let other = store
        .create_job(new_job("acme", "main", "alive"))
        .await
        .unwrap();
    let stale = store.claim_job("node-0", LEASE).await.unwrap().unwrap();
    assert_eq!(stale.job.id, job.id);
    store.claim_job("node-1", LEASE).await.unwrap().unwrap();
    let cause = "worker process node-0 was killed by signal 9 (SIGKILL)";
    let reaped = store.requeue_lost_worker("node-0", cause, 3).await.unwrap();
    assert_eq!(reaped.requeued, vec![job.id.clone()]);
    assert_eq!(
        store.get_job("acme", "main", &job.id).await.unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(
        store
            .get_job("acme", "main", &other.id)
            .await
            .unwrap()
            .status,
        JobStatus::Running
    );
    assert!(matches!(
        store.heartbeat(&stale.lease, LEASE).await,
        Err(Error::LeaseLost { .. })
    ));
    let logs = store.list_logs("acme", "main", &job.id, 0).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.entry.message == format!("{cause}: job requeued, one retry spent")),
        "{logs:?}"
    );
    assert!(
        store
            .requeue_lost_worker("node-0", cause, 3)
            .await
            .unwrap()
            .requeued
            .is_empty()
    );
}

async fn released_jobs_go_back_to_the_queue_fenced(backend: &Backend) {
    let store = backend.store().await;
    let job = store
        .create_job(new_job("acme", "main", "preempted"))
        .await
        .unwrap();
    let lease = store.claim_job("w1", LEASE).await.unwrap().unwrap().lease;
    store
        .release_job(&lease, "worker shutting down", Duration::ZERO)
        .await
        .unwrap();
    let released = store.get_job("acme", "main", &job.id).await.unwrap();
    assert_eq!(released.status, JobStatus::Queued);
    assert!(
        matches!(
            store.release_job(&lease, "again", Duration::ZERO).await,
            Err(Error::LeaseLost { .. })
        ),
        "a released attempt can write nothing more"
    );
    let logs = store.list_logs("acme", "main", &job.id, 0).await.unwrap();
    assert!(
        logs.iter().any(|l| l
            .entry
            .message
            .contains("released to the queue by worker w1")),
        "the release is logged"
    );
    let next = store.claim_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!((next.job.id.as_str(), next.retries), (job.id.as_str(), 0));
    // Storage unreachable: back to the queue, no retry spent, not claimable before the pause is over.
    store
        .release_job(
            &next.lease,
            "storage unreachable",
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert!(store.claim_job("w3", LEASE).await.unwrap().is_none());
}

async fn retries_wait_for_their_backoff_and_reset_on_manual_retry(backend: &Backend) {
    let store = backend.store().await;
    let job = store
        .create_job(new_job("acme", "main", "flaky"))
        .await
        .unwrap();
    let first = store.claim_job("w1", LEASE).await.unwrap().unwrap();
    assert_eq!(first.retries, 0);
    let outcome = JobOutcome::Retry {
        error: "storage unavailable".into(),
        after: Duration::from_millis(200),
    };
    store.finish_job(&first.lease, outcome).await.unwrap();
    let queued = store.get_job("acme", "main", &job.id).await.unwrap();
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.error.as_deref(), Some("storage unavailable"));
    assert!(
        store.claim_job("w2", LEASE).await.unwrap().is_none(),
        "not claimable during its backoff"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let second = store.claim_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!((second.lease.attempt, second.retries), (2, 1));
    let failed = JobOutcome::Failed {
        error: "gave up".into(),
        metrics: Map::new(),
        artifacts: Map::new(),
    };
    store.finish_job(&second.lease, failed).await.unwrap();
    store.retry_job("acme", "main", &job.id).await.unwrap();
    let third = store.claim_job("w3", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (third.lease.attempt, third.retries),
        (3, 0),
        "a manual retry starts a fresh retry budget"
    );
}

/// Lease renewals are counted in the database, so monitoring through any handle (the server's) sees the
/// heartbeats of workers on every node.
async fn lease_renewals_of_every_node_are_counted(backend: &Backend) {
    let (node_a, node_b, server) = (
        backend.store().await,
        backend.store().await,
        backend.store().await,
    );
    for name in ["one", "two"] {
        node_a
            .create_job(new_job("acme", "main", name))
            .await
            .unwrap();
    }
    let a = node_a.claim_job("a", LEASE).await.unwrap().unwrap().lease;
    let b = node_b.claim_job("b", LEASE).await.unwrap().unwrap().lease;
    node_a.heartbeat(&a, LEASE).await.unwrap();
    node_b.heartbeat(&b, LEASE).await.unwrap();
    node_b.heartbeat(&b, LEASE).await.unwrap();
    assert_eq!(server.stats().await.unwrap().lease_renewals, 3);
}

/// A create retried under the same Idempotency-Key returns the first job; the key with another request
/// is refused; another organization's key of the same text is its own.
async fn creates_under_one_idempotency_key_make_one_job(backend: &Backend) {
    let store = backend.store().await;
    let first = store
        .create_job_once(new_job("acme", "main", "once"), "key-1", "fp-a")
        .await
        .unwrap();
    assert!(first.1, "the first create makes the job");
    let again = store
        .create_job_once(new_job("acme", "main", "once"), "key-1", "fp-a")
        .await
        .unwrap();
    assert_eq!((again.0.id.as_str(), again.1), (first.0.id.as_str(), false));
    let other = store
        .create_job_once(new_job("acme", "main", "other"), "key-1", "fp-b")
        .await;
    assert!(
        matches!(&other, Err(Error::Conflict(m)) if m.contains("Idempotency-Key 'key-1'")),
        "{other:?}"
    );
    let rival = store
        .create_job_once(new_job("rival", "main", "once"), "key-1", "fp-a")
        .await
        .unwrap();
    assert!(rival.1 && rival.0.id != first.0.id);
    assert_eq!(
        store.list_jobs(&common::filter("acme")).await.unwrap().1,
        1,
        "one job, not two"
    );
}

on_both_backends!(
    lease_renewals_of_every_node_are_counted,
    a_job_that_keeps_losing_its_worker_fails_when_its_retries_are_spent,
    expired_leases_are_requeued_and_fenced,
    released_jobs_go_back_to_the_queue_fenced,
    a_dead_workers_jobs_are_requeued_without_waiting_for_the_lease,
    retries_wait_for_their_backoff_and_reset_on_manual_retry,
    creates_under_one_idempotency_key_make_one_job,
);
