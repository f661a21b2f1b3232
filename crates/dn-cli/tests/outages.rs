//! The CLI through outages of the control plane: `dn train wait` rides through a server killed and
//! started again, and says so with its own exit code when a server stays unreachable.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, JobSpec, free_port};
use common::dn_command;
use dn_store::JobOutcome;
use dn_store::prelude::*;
use serde_json::Map;

/// Waits (at most 30 s) until the server at `listen` answers.
async fn answering(listen: &str) {
    let client = dn_client::Client::new(&format!("http://{listen}"), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.health().await.is_err() {
        assert!(Instant::now() < deadline, "dn serve did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_rides_through_a_server_killed_and_started_again() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = c.serve(&listen, 0);
    answering(&listen).await;
    let spec = JobSpec {
        steps: 2,
        checkpoint_interval: 1,
        eval: false,
        max_sequence_length: 64,
    };
    let id = c.submit(&spec).await;
    let mut conn = c.env.member("acme").await;
    conn.retain(|(k, _)| *k != "DN_SERVER");
    let args = [
        "train",
        "wait",
        &id,
        "--poll-interval-sec",
        "0.2",
        "--timeout-sec",
        "120",
    ];
    let waiting = dn_command(c.env.dir.path(), &args)
        .envs(conn)
        .env("DN_SERVER", format!("http://{listen}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _server = c.serve(&listen, 0);
    answering(&listen).await;
    // The job completes (its worker is not the point here).
    let claimed = c
        .store
        .claim_job("outage-test", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let outcome = JobOutcome::Completed {
        metrics: Map::new(),
        artifacts: Map::new(),
    };
    c.store.finish_job(&claimed.lease, outcome).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), waiting.wait_with_output())
        .await
        .expect("dn train wait ended on its own")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("cannot reach the dn server")
            && stderr.contains("trying again")
            && stderr.contains("the server answers again"),
        "{stderr}"
    );
}

#[tokio::test]
async fn wait_gives_up_on_a_server_that_stays_unreachable_with_its_own_exit_code() {
    let home = tempfile::tempdir().unwrap();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let args = [
        "train",
        "wait",
        "some-job",
        "--poll-interval-sec",
        "0.2",
        "--timeout-sec",
        "1.5",
    ];
    let run = dn_command(home.path(), &args)
        .env("DN_SERVER", &nobody)
        .env("DN_API_KEY", "dn_test")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("dn train wait ended on its own")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("gave up on some-job: the server has not answered for"),
        "{stderr}"
    );
}
