//! Jobs on quantized bases: a bitsandbytes 4-bit checkpoint trains with its projections kept 4-bit and the
//! job log says so (format, bytes; the embedding and head kept in their stored bf16); `base_quantization: nf4` quantizes an unquantized base at load and
//! `none` decodes a stored one; a stored quantization asked to be quantized again fails the job by name.

mod common;

use std::path::PathBuf;

use common::sft::{create_job_with, events, setup, worker};
use dn_spec::BaseQuantization;
use dn_store::prelude::*;
use dn_types::JobStatus;

fn bnb(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bnb")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_hold_the_base_as_asked() {
    let setup = setup().await;
    // (model, base_quantization, what training_start says of the base)
    for (model, quantization, format) in [
        ("nf4-dq", BaseQuantization::AsStored, Some("bf16+nf4")),
        ("nf4-dq", BaseQuantization::None, None),
        ("base", BaseQuantization::Nf4, Some("bf16+nf4")),
        ("base", BaseQuantization::Q8_0, Some("Q8_0+bf16")),
    ] {
        let job = create_job_with(&setup, &bnb(model), "demos", &[], 2, |c| {
            c.extras.base_quantization = quantization;
            c.learning_rate = 1e-2;
        })
        .await;
        assert!(worker(&setup).reap_and_run_once().await.unwrap());
        let job = setup.store.get_job_by_id(&job.id).await.unwrap();
        let label = format!("{model} ({quantization})");
        assert_eq!(job.status, JobStatus::Completed, "{label}: {:?}", job.error);
        let logs = setup
            .store
            .list_logs("acme", "main", &job.id, 0)
            .await
            .unwrap();
        let start = &events(&logs, "training_start")[0];
        assert_eq!(start["base_quantization"].as_str(), format, "{label}");
        let quantized = start["base_quantized_bytes"].as_u64().unwrap();
        // 14 projections of 73728 weights in total over 2 layers: 0.5625 bytes each (nf4), 34/32 (q8_0);
        // the embedding and head, [306, 64] each, 2 bytes a weight.
        let vocab = 2 * 306 * 64 * 2;
        match format {
            Some("bf16+nf4") => assert_eq!(quantized, 73728 * 9 / 16 + vocab, "{label}"),
            Some(_) => assert_eq!(quantized, 73728 * 34 / 32 + vocab, "{label}"),
            None => assert_eq!(quantized, 0, "{label}"),
        }
        let message = &logs
            .iter()
            .find(|l| l.entry.data.get("event").and_then(|e| e.as_str()) == Some("training_start"))
            .unwrap()
            .entry
            .message;
        assert!(message.contains("base in memory"), "{message}");
        let losses: Vec<f64> = events(&logs, "step_complete")
            .iter()
            .map(|s| s["train/loss"].as_f64().unwrap())
            .collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{label}: {losses:?}");
    }

    let job = create_job_with(&setup, &bnb("nf4-dq"), "demos", &[], 2, |c| {
        c.extras.base_quantization = BaseQuantization::Q8_0;
    })
    .await;
    assert!(worker(&setup).reap_and_run_once().await.unwrap());
    let job = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap().to_string();
    assert!(
        error.contains("base_quantization q8_0") && error.contains("bitsandbytes"),
        "{error}"
    );
}
