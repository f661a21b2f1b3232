//! Workers killed with SIGKILL at many moments of a job's life, and a small cluster losing workers at
//! random while it drains a queue: every job completes, exactly once, with each step once in its metrics.
//! Real `dn worker` processes on the test model; each scenario prints what it did.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Events, JobSpec, count, kill, steps_done};
use dn_types::{JobStatus, TrainingJob};
use rand::{Rng, SeedableRng};

/// The job's completions recorded by the store (its finish entry).
fn completions(events: &Events) -> usize {
    events
        .iter()
        .filter(|d| d.get("status").and_then(|s| s.as_str()) == Some("completed"))
        .count()
}

fn assert_completed_once(label: &str, job: &TrainingJob, events: &Events, steps: u64) {
    assert_eq!(job.status, JobStatus::Completed, "{label}: {:?}", job.error);
    assert_eq!(completions(events), 1, "{label}: completed exactly once");
    let series: Vec<u64> = serde_json::from_value(job.metrics["steps"].clone()).unwrap();
    assert_eq!(
        series,
        (1..=steps).collect::<Vec<_>>(),
        "{label}: each step once"
    );
}

type Moment = (&'static str, fn(&TrainingJob, &Events) -> bool);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_ten_moments_of_a_job_another_worker_completes_it_once() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let spec = JobSpec {
        steps: 8,
        checkpoint_interval: 3,
        eval: true,
        max_sequence_length: 64,
    };
    let moments: [Moment; 10] = [
        ("just claimed", |job, _| job.status == JobStatus::Running),
        ("data prepared", |_, e| count(e, "data_prepared") >= 1),
        ("during the base-model eval", |_, e| {
            count(e, "training_start") >= 1
        }),
        ("before the first checkpoint", |_, e| steps_done(e) >= 1),
        ("writing checkpoint 3", |_, e| steps_done(e) >= 3),
        ("checkpoint 3 committed", |_, e| {
            count(e, "checkpoint_saved") >= 1
        }),
        ("between checkpoints", |_, e| steps_done(e) >= 5),
        ("writing checkpoint 6", |_, e| steps_done(e) >= 6),
        ("during the final eval", |_, e| steps_done(e) >= 8),
        ("final checkpoint committed", |_, e| {
            count(e, "checkpoint_saved") >= 3
        }),
    ];
    for (i, (label, moment)) in moments.into_iter().enumerate() {
        let id = c.submit(&spec).await;
        let first = c.worker(&format!("a{i}"));
        c.wait_for(&id, label, Duration::from_secs(120), |job, events| {
            moment(job, events) || job.status.is_terminal()
        })
        .await;
        kill(first);
        let seen = steps_done(&c.events(&id).await);
        let second = c.worker(&format!("b{i}"));
        c.wait_for(&id, "completion", Duration::from_secs(180), |job, _| {
            job.status.is_terminal()
        })
        .await;
        kill(second);
        let (job, events) = (c.job(&id).await, c.events(&id).await);
        assert_completed_once(label, &job, &events, spec.steps);
        let resumed = events
            .iter()
            .find(|d| d.get("event").and_then(|e| e.as_str()) == Some("resumed"))
            .and_then(|d| d["step"].as_u64());
        eprintln!(
            "killed {label:<28} after step {seen}: completed by attempt {} (resumed from step {})",
            job.attempt,
            resumed.map_or("-".into(), |s| s.to_string())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_with_random_kills_complete_sixty_jobs_exactly_once() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let spec = JobSpec {
        steps: 1,
        checkpoint_interval: 1,
        eval: false,
        max_sequence_length: 32,
    };
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(c.submit(&spec).await);
    }
    let started = Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut spawned = 0;
    let mut workers: Vec<_> = (0..3)
        .map(|_| {
            spawned += 1;
            c.worker(&format!("w{spawned}"))
        })
        .collect();
    let deadline = started + Duration::from_secs(600);
    let mut kills = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let mut open = 0;
        for id in &ids {
            if !c.job(id).await.status.is_terminal() {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} job(s) still open");
        if kills < 12 {
            let victim = rng.random_range(0..workers.len());
            spawned += 1;
            let fresh = c.worker(&format!("w{spawned}"));
            kill(std::mem::replace(&mut workers[victim], fresh));
            kills += 1;
        }
    }
    for worker in workers {
        kill(worker);
    }
    let mut attempts = 0;
    for id in &ids {
        let (job, events) = (c.job(id).await, c.events(id).await);
        assert_completed_once(id, &job, &events, spec.steps);
        attempts += job.attempt;
    }
    eprintln!(
        "60 jobs, 3 workers, {kills} kills: all completed once in {:.0} s, {attempts} attempts",
        started.elapsed().as_secs_f64()
    );
}
