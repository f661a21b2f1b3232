//! dn's TensorBoard event files as TensorBoard reads them: a fixed run of scalars written by
//! [`EventFile`] is byte for byte the committed fixture, and TensorBoard's own reader
//! (`scripts/reference/run.sh tensorboard-read`, its output committed beside the fixture) reads every
//! step's scalars back from it. `DN_WRITE_FIXTURES=1` rewrites the fixture (then rerun the script).

use std::collections::BTreeMap;
use std::path::PathBuf;

use dn_worker::EventFile;

mod common;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tensorboard")
}

/// Five steps' training scalars and two evaluations, as a job reports them.
fn run() -> (EventFile, BTreeMap<String, Vec<(i64, f32)>>) {
    let mut file = EventFile::new(1_700_000_000.0, "dn-test");
    let mut expected: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for step in 1..=5i64 {
        let s = step as f64;
        let mut values = vec![
            ("train/loss", 3.0 - 0.25 * s),
            ("train/learning_rate", 1e-4 * (1.0 - s / 10.0)),
            ("train/grad_norm", 1.5 / s),
            ("train/tokens_per_second", 250.0 + s),
        ];
        if step % 2 == 1 {
            values.push(("eval/loss", 2.9 - 0.2 * s));
        }
        file.scalars(1_700_000_000.0 + s, step, &values);
        for (tag, value) in values {
            expected
                .entry(tag.to_owned())
                .or_default()
                .push((step, value as f32));
        }
    }
    (file, expected)
}

#[test]
fn event_files_are_what_tensorboard_reads_back() {
    let (file, expected) = run();
    let path = fixtures().join(file.name());
    if std::env::var_os("DN_WRITE_FIXTURES").is_some() {
        file.write_into(&fixtures()).unwrap();
    }
    assert_eq!(file.name(), "events.out.tfevents.1700000000.dn-test.dn");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        file.bytes(),
        "{} is not what EventFile writes now",
        path.display()
    );
    let read: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("read_by_tensorboard.json")).unwrap(),
    )
    .unwrap();
    let scalars = read["scalars"].as_object().unwrap();
    assert_eq!(
        scalars.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (tag, points) in &expected {
        let got: Vec<(i64, f32)> = scalars[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32))
            .collect();
        assert_eq!(&got, points, "{tag}");
    }
}

/// `report_to: tensorboard`: every checkpoint directory in storage holds the event file with the steps
/// and evaluations so far; `final` holds the whole run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reporting_to_tensorboard_leaves_event_files_in_its_checkpoints() {
    use common::sft::{create_job_with, events, run_to_completion, setup, worker};

    let setup = setup().await;
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bnb/base");
    let job = create_job_with(&setup, &model.to_string_lossy(), "demos", &[], 4, |c| {
        c.extras.report_to = vec![dn_spec::Tracker::TensorBoard];
        c.checkpoint_interval = 2;
        c.extras.eval_interval = 2;
    })
    .await;
    let logs = run_to_completion(&setup, worker(&setup), &job).await;
    let evals = events(&logs, "eval_complete").len();
    assert!(evals >= 2, "{evals} evaluations");
    let checkpoints = setup
        ._dir
        .path()
        .join("storage/jobs/acme")
        .join(&job.id)
        .join("checkpoints");
    let event_file = |name: &str| -> Vec<u8> {
        let dir = checkpoints.join(name);
        let found: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("events.out.tfevents."))
            .collect();
        assert_eq!(found.len(), 1, "{}", dir.display());
        std::fs::read(&found[0]).unwrap()
    };
    let count = |bytes: &[u8], tag: &str| {
        bytes
            .windows(tag.len())
            .filter(|w| *w == tag.as_bytes())
            .count()
    };
    let at_step_2 = event_file("step-000002");
    assert_eq!(count(&at_step_2, "train/loss"), 2);
    let whole = event_file("final");
    assert_eq!(count(&whole, "train/loss"), 4);
    assert_eq!(count(&whole, "train/tokens_per_second"), 4);
    assert_eq!(count(&whole, "eval/loss"), evals);
    assert!(whole.starts_with(&at_step_2[..at_step_2.len() / 2]));
}
