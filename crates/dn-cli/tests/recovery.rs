//! Worker processes (`dn worker`) on one embedded store, killed, stopped or cancelled mid-job: the job is
//! picked up by another worker from its latest committed checkpoint and completes once, with each step
//! once in its metrics. Real training on the test model, short leases.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    Cluster, JobSpec, checkpoint_names, children_of, count, free_port, kill, signal, steps_done,
};
use dn_store::prelude::*;
use dn_types::JobStatus;

const STEPS: u64 = 8;
const LIMIT: Duration = Duration::from_secs(180);

fn spec() -> JobSpec {
    JobSpec {
        steps: STEPS,
        checkpoint_interval: 3,
        eval: false,
        max_sequence_length: 96,
    }
}

/// The job completed once, its step series is 1..=STEPS each once, and the attempt that finished it
/// resumed from a checkpoint at or after `min_step` (`None`: no attempt resumed).
async fn assert_completed_once(c: &Cluster, id: &str, min_step: Option<u64>) {
    let job = c.job(id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let steps: Vec<u64> = serde_json::from_value(job.metrics["steps"].clone()).unwrap();
    assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>());
    let events = c.events(id).await;
    assert_eq!(count(&events, "training_end"), 1, "the job completed once");
    let resumed: Vec<u64> = events
        .iter()
        .filter(|d| d.get("event").and_then(|e| e.as_str()) == Some("resumed"))
        .map(|d| d["step"].as_u64().unwrap())
        .collect();
    match min_step {
        Some(min) => {
            assert_eq!(resumed.len(), 1, "one resumed attempt");
            assert!(resumed[0] >= min, "resumed at step {}", resumed[0]);
        }
        None => assert!(resumed.is_empty(), "{resumed:?}"),
    }
    let names = checkpoint_names(&job);
    assert_eq!(names.last(), Some(&"final"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_resumes_from_its_last_checkpoint_on_another_worker() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let id = c.submit(&spec()).await;
    let first = c.worker("w1");
    // Past the step-3 checkpoint, before the end.
    c.wait_for(&id, "step 4", LIMIT, |_, events| steps_done(events) >= 4)
        .await;
    kill(first);
    let second = c.worker("w2");
    c.wait_for(&id, "completion", LIMIT, |job, _| job.status.is_terminal())
        .await;
    kill(second);
    assert_completed_once(&c, &id, Some(3)).await;
    assert_eq!(c.job(&id).await.attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_releases_the_job_without_spending_an_attempt() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let id = c.submit(&spec()).await;
    let mut first = c.worker("w1");
    c.wait_for(&id, "step 1", LIMIT, |_, events| steps_done(events) >= 1)
        .await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = first.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the worker exits within its grace period"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let job = c.job(&id).await;
    assert_eq!(job.status, JobStatus::Queued, "released to the queue");
    assert_eq!(job.attempt, 1);
    let preempted_at = steps_done(&c.events(&id).await);
    assert!(preempted_at < STEPS, "stopped before the end");
    let second = c.worker("w2");
    c.wait_for(&id, "completion", LIMIT, |job, _| job.status.is_terminal())
        .await;
    kill(second);
    // The checkpoint written at the preemption step is where the next attempt starts.
    assert_completed_once(&c, &id, Some(preempted_at)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_job_stops_within_a_step_and_keeps_its_checkpoints() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let id = c.submit(&spec()).await;
    let worker = c.worker("w1");
    c.wait_for(&id, "step 4", LIMIT, |_, events| steps_done(events) >= 4)
        .await;
    let asked = Instant::now();
    c.store.cancel_job("acme", "main", &id).await.unwrap();
    c.wait_for(&id, "the cancel", LIMIT, |job, _| job.status.is_terminal())
        .await;
    let took = asked.elapsed();
    kill(worker);
    let job = c.job(&id).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    let longest_step = c
        .events(&id)
        .await
        .iter()
        .filter_map(|d| d.get("train/step_seconds").and_then(|s| s.as_f64()))
        .fold(0.0, f64::max);
    eprintln!("cancelled {took:?} after the request (longest step {longest_step:.2} s)");
    // The step in flight, a checkpoint, the heartbeat that carries the cancel: room for a loaded machine.
    assert!(took.as_secs_f64() < 2.0 * longest_step + 15.0, "{took:?}");
    let names = checkpoint_names(&job);
    assert!(names.contains(&"step-000003"), "{names:?}");
    let marker = std::path::Path::new(&c.env.data_dir_arg()).join(format!(
        "storage/jobs/acme/{id}/checkpoints/step-000003/_COMMITTED"
    ));
    assert!(marker.is_file(), "the checkpoint stays in storage");
}

/// `dn serve` runs its worker as a child process: killed by the kernel mid-job (SIGKILL, as the
/// out-of-memory killer does), the API keeps answering, the job goes back to the queue at once with the
/// cause in its log, a new worker process takes the slot and completes the job from its checkpoint, and
/// SIGTERM to the server stops its worker too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_worker_process_killed_mid_job_leaves_the_api_answering_and_is_restarted() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    // A second server on the cluster's store, with one worker process of its own.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = c.serve(&listen, 1);
    let health = dn_client::Client::new(&format!("http://{listen}"), None).unwrap();
    let id = c.submit(&spec()).await;
    c.wait_for(&id, "step 4", LIMIT, |_, events| steps_done(events) >= 4)
        .await;
    let workers = children_of(server.id());
    assert_eq!(workers.len(), 1, "one worker process: {workers:?}");
    signal(workers[0], "KILL");
    health.health().await.expect("the API answers");
    c.wait_for(&id, "completion", LIMIT, |job, _| job.status.is_terminal())
        .await;
    assert_completed_once(&c, &id, Some(3)).await;
    let logs = c.store.list_logs("acme", "main", &id, 0).await.unwrap();
    let requeued = logs
        .iter()
        .find(|l| l.entry.message.contains("was killed by signal 9"))
        .expect("the job's log says how its worker ended");
    assert!(
        requeued
            .entry
            .message
            .ends_with("job requeued, one retry spent"),
        "{}",
        requeued.entry.message
    );
    let restarted = children_of(server.id());
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert_ne!(restarted[0], workers[0], "a new worker process");
    health.health().await.expect("the API still answers");

    signal(server.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "dn serve did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let worker_alive = std::path::Path::new(&format!("/proc/{}", restarted[0])).exists();
    assert!(!worker_alive, "the worker process stopped with the server");
}
