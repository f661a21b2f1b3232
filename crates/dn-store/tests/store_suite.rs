//! The one store test suite, run against SQLite and PostgreSQL.

mod common;

use std::collections::HashSet;

use common::{Backend, LEASE, filter, new_job};
use dn_store::prelude::*;
use dn_store::{Error, JobFilter, JobOutcome, NewLogEntry, SqlStore};
use dn_types::{JobStatus, LogLevel};
use serde_json::{Map, json};

fn metrics(step: i64) -> Map<String, serde_json::Value> {
    json!({"train/steps": step}).as_object().unwrap().clone()
}

async fn create_get_list_and_scope(backend: &Backend) {
    let store = backend.store().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            store
                .create_job(new_job("acme", "main", &format!("job-{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    store
        .create_job(new_job("other", "main", "theirs"))
        .await
        .unwrap();
    let job = store.get_job("acme", "main", &ids[0]).await.unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.name.as_deref(), Some("job-0"));
    assert_eq!(job.config["batch_size"], 8);
    assert_eq!(
        job.capability.system_prompt_digest.as_deref(),
        Some("sha256:def")
    );
    assert_eq!(job.attempt, 0);

    // Another org or workspace sees nothing.
    assert!(matches!(
        store.get_job("other", "main", &ids[0]).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.get_job("acme", "dev", &ids[0]).await,
        Err(Error::NotFound(_))
    ));

    let (page, total) = store
        .list_jobs(&JobFilter {
            page_size: 2,
            ..filter("acme")
        })
        .await
        .unwrap();
    assert_eq!((page.len(), total), (2, 5));
    assert_eq!(page[0].id, ids[4], "newest first");
    let (page3, _) = store
        .list_jobs(&JobFilter {
            page: 3,
            page_size: 2,
            ..filter("acme")
        })
        .await
        .unwrap();
    assert_eq!(
        page3.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&ids[0]]
    );
    let (running, total) = store
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Running),
            ..filter("acme")
        })
        .await
        .unwrap();
    assert_eq!((running.len(), total), (0, 0));
    let (_, total) = store
        .list_jobs(&JobFilter {
            project_ref: Some("nope".into()),
            ..filter("acme")
        })
        .await
        .unwrap();
    assert_eq!(total, 0);
    let (_, total) = store
        .list_jobs(&JobFilter {
            backend: Some("tinker".into()),
            trainer_type: Some("sft".into()),
            ..filter("acme")
        })
        .await
        .unwrap();
    assert_eq!(total, 5);
    store
        .create_job(new_job("acme", "dev", "elsewhere"))
        .await
        .unwrap();
    assert_eq!(
        store.list_workspaces("acme").await.unwrap(),
        ["dev", "main"]
    );
    assert_eq!(store.list_workspaces("other").await.unwrap(), ["main"]);
    assert!(store.list_workspaces("nobody").await.unwrap().is_empty());
}

async fn claim_heartbeat_progress_finish(backend: &Backend) {
    let store = backend.store().await;
    let first = store
        .create_job(new_job("acme", "main", "first"))
        .await
        .unwrap();
    let second = store
        .create_job(new_job("acme", "main", "second"))
        .await
        .unwrap();

    let claimed = store.claim_job("w1", LEASE).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, first.id, "oldest queued job first");
    assert_eq!(
        (claimed.job.status, claimed.job.attempt),
        (JobStatus::Running, 1)
    );
    assert!(claimed.job.started_at.is_some());
    let lease = claimed.lease;

    let beat = store.heartbeat(&lease, LEASE).await.unwrap();
    assert!(!beat.cancel_requested);
    let entry = NewLogEntry {
        level: LogLevel::Info,
        message: "step 1".into(),
        data: json!({"event": "step_complete", "train/loss": 2.5})
            .as_object()
            .unwrap()
            .clone(),
    };
    store
        .append_progress(&lease, &[entry], Some(&metrics(1)))
        .await
        .unwrap();
    let running = store.get_job("acme", "main", &first.id).await.unwrap();
    assert_eq!(running.metrics["train/steps"], 1);

    let done = store
        .finish_job(
            &lease,
            JobOutcome::Completed {
                metrics: metrics(2),
                artifacts: Map::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert!(done.completed_at.is_some());
    assert_eq!(done.metrics["train/steps"], 2);

    // The lease is spent: every fenced write now fails and changes nothing.
    assert!(matches!(
        store.heartbeat(&lease, LEASE).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        store.append_progress(&lease, &[], None).await,
        Err(Error::LeaseLost { .. })
    ));
    assert!(matches!(
        store
            .finish_job(
                &lease,
                JobOutcome::Failed {
                    error: "late".into(),
                    metrics: Map::new(),
                    artifacts: Map::new()
                }
            )
            .await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(
        store
            .get_job("acme", "main", &first.id)
            .await
            .unwrap()
            .status,
        JobStatus::Completed
    );

    let logs = store.list_logs("acme", "main", &first.id, 0).await.unwrap();
    let messages: Vec<&str> = logs.iter().map(|l| l.entry.message.as_str()).collect();
    assert_eq!(
        messages,
        vec![
            "job queued",
            "claimed by worker w1 (attempt 1)",
            "step 1",
            "job completed"
        ]
    );
    assert_eq!(logs[2].entry.data["train/loss"], 2.5);
    let after = store
        .list_logs("acme", "main", &first.id, logs[1].seq)
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    assert!(matches!(
        store.list_logs("other", "main", &first.id, 0).await,
        Err(Error::NotFound(_))
    ));

    let next = store.claim_job("w2", LEASE).await.unwrap().unwrap();
    assert_eq!(next.job.id, second.id);
    assert!(store.claim_job("w3", LEASE).await.unwrap().is_none());
}

async fn cancel_queued_and_running(backend: &Backend) {
    let store = backend.store().await;
    let queued = store
        .create_job(new_job("acme", "main", "q"))
        .await
        .unwrap();
    let cancelled = store.cancel_job("acme", "main", &queued.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.cancel_requested_at.is_some() && cancelled.completed_at.is_some());
    // Idempotent, and a cancelled job is never claimed.
    assert_eq!(
        store
            .cancel_job("acme", "main", &queued.id)
            .await
            .unwrap()
            .status,
        JobStatus::Cancelled
    );
    assert!(store.claim_job("w", LEASE).await.unwrap().is_none());

    let running = store
        .create_job(new_job("acme", "main", "r"))
        .await
        .unwrap();
    let lease = store.claim_job("w", LEASE).await.unwrap().unwrap().lease;
    let requested = store.cancel_job("acme", "main", &running.id).await.unwrap();
    assert_eq!(requested.status, JobStatus::Running);
    assert!(requested.cancel_requested_at.is_some());
    assert!(
        store
            .heartbeat(&lease, LEASE)
            .await
            .unwrap()
            .cancel_requested
    );
    let done = store
        .finish_job(
            &lease,
            JobOutcome::Cancelled {
                metrics: Map::new(),
                artifacts: Map::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Cancelled);

    let completed = store
        .create_job(new_job("acme", "main", "c"))
        .await
        .unwrap();
    let lease = store.claim_job("w", LEASE).await.unwrap().unwrap().lease;
    store
        .finish_job(
            &lease,
            JobOutcome::Completed {
                metrics: Map::new(),
                artifacts: Map::new(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        store.cancel_job("acme", "main", &completed.id).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.cancel_job("other", "main", &completed.id).await,
        Err(Error::NotFound(_))
    ));
}

async fn retry_keeps_history(backend: &Backend) {
    let store = backend.store().await;
    let job = store
        .create_job(new_job("acme", "main", "flaky"))
        .await
        .unwrap();
    assert!(matches!(
        store.retry_job("acme", "main", &job.id).await,
        Err(Error::Conflict(_))
    ));
    let lease = store.claim_job("w", LEASE).await.unwrap().unwrap().lease;
    assert!(matches!(
        store.retry_job("acme", "main", &job.id).await,
        Err(Error::Conflict(_))
    ));
    let failed = store
        .finish_job(
            &lease,
            JobOutcome::Failed {
                error: "boom".into(),
                metrics: Map::new(),
                artifacts: Map::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (failed.status, failed.error.as_deref()),
        (JobStatus::Failed, Some("boom"))
    );

    assert!(matches!(
        store.retry_job("other", "main", &job.id).await,
        Err(Error::NotFound(_))
    ));
    let retried = store.retry_job("acme", "main", &job.id).await.unwrap();
    assert_eq!(retried.id, job.id);
    assert_eq!(
        (retried.status, retried.error.clone(), retried.attempt),
        (JobStatus::Queued, None, 1)
    );
    assert!(retried.started_at.is_none() && retried.completed_at.is_none());

    let again = store.claim_job("w", LEASE).await.unwrap().unwrap();
    assert_eq!(again.job.attempt, 2);
    let logs = store.list_logs("acme", "main", &job.id, 0).await.unwrap();
    let retry_entry = logs
        .iter()
        .find(|l| l.entry.message.starts_with("retry requested"))
        .unwrap();
    assert_eq!(retry_entry.entry.data["previous_error"], "boom");
    assert!(
        logs.iter()
            .any(|l| l.entry.message == "job failed: boom" && l.attempt == 1)
    );
}

async fn api_keys_are_hashed_and_scoped(backend: &Backend) {
    let store = backend.store().await;
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    let key = store.create_api_key("acme").await.unwrap();
    assert!(key.starts_with("dn_") && key.len() > 30);
    assert_eq!(
        store.organization_for_key(&key).await.unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(store.organization_for_key("dn_wrong").await.unwrap(), None);
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    let pool = sqlx::AnyPool::connect(&backend.url).await.unwrap();
    let stored: Vec<(String,)> = sqlx::query_as("SELECT key_hash FROM api_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        !stored[0].0.contains(&key[3..]),
        "the key must not be stored in clear"
    );

    // Listed without secrets, revoked by id, expired by time.
    let other = store.create_api_key("rival").await.unwrap();
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    let expired = store
        .create_expiring_api_key("acme", Some(past))
        .await
        .unwrap();
    assert_eq!(store.organization_for_key(&expired).await.unwrap(), None);
    let keys = store.list_api_keys("acme").await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].prefix, &key[..7]);
    assert!(keys[0].last_used_at.is_some() && keys[0].revoked_at.is_none());
    assert_eq!(
        keys[1].expires_at.map(|t| t.timestamp()),
        Some(past.timestamp())
    );
    let listed = format!("{keys:?}");
    assert!(!listed.contains(&key[7..]) && !listed.contains(&expired[7..]));
    let revoked = store.revoke_api_key(&keys[0].id).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.organization_for_key(&key).await.unwrap(), None);
    assert_eq!(
        store.organization_for_key(&other).await.unwrap().as_deref(),
        Some("rival")
    );
    assert_eq!(
        store.revoke_api_key("0000000000000000").await.unwrap(),
        None
    );
    assert_eq!(store.revoke_api_key("%").await.unwrap(), None);
}

/// 4 claimers, each with its own connection pool (as separate worker processes), drain 200 jobs: every
/// job is claimed exactly once.
async fn four_claimers_drain_200_jobs(backend: &Backend) {
    let store = backend.store().await;
    let mut created = HashSet::new();
    for i in 0..200 {
        created.insert(
            store
                .create_job(new_job("acme", "main", &format!("j{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let mut handles = Vec::new();
    for w in 0..4 {
        let worker_store: SqlStore = backend.store().await;
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..1000 {
                let Some(claimed) = worker_store
                    .claim_job(&format!("w{w}"), LEASE)
                    .await
                    .unwrap()
                else {
                    break;
                };
                worker_store
                    .finish_job(
                        &claimed.lease,
                        JobOutcome::Completed {
                            metrics: Map::new(),
                            artifacts: Map::new(),
                        },
                    )
                    .await
                    .unwrap();
                mine.push(claimed.job.id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    let mut per_worker = Vec::new();
    for handle in handles {
        let mine = handle.await.unwrap();
        per_worker.push(mine.len());
        claimed.extend(mine);
    }
    let unique: HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 200, "claims per worker: {per_worker:?}");
    assert_eq!(unique, created, "every job claimed exactly once");
    let (_, completed) = store
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Completed),
            ..filter("acme")
        })
        .await
        .unwrap();
    assert_eq!(completed, 200);
    let (jobs, _) = store
        .list_jobs(&JobFilter {
            page_size: 200,
            ..filter("acme")
        })
        .await
        .unwrap();
    assert!(jobs.iter().all(|j| j.attempt == 1));
    eprintln!("claims per worker: {per_worker:?}");
}

on_both_backends!(
    create_get_list_and_scope,
    claim_heartbeat_progress_finish,
    cancel_queued_and_running,
    retry_keeps_history,
    api_keys_are_hashed_and_scoped,
    four_claimers_drain_200_jobs,
);
