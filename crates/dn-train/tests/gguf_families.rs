//! GGUF files of the qwen2 and qwen3 tiny models (written as llama.cpp's converter lays them out, by
//! scripts/reference/family_gguf.py) load as the same models as their directories: same architecture,
//! q/k norms and biases in place, and the same loss.

mod common;

use common::families::{model_dir, reference};
use dn_train::{BaseModel, DType, Device, LoraConfig, LoraModel, TrainExample, evaluate};

fn loss(base: &BaseModel, examples: &[TrainExample]) -> f64 {
    let model = LoraModel::new(base, &LoraConfig::new(4, 8.0), 1).unwrap();
    evaluate(&model, &common::sequences(examples))
        .unwrap()
        .nll_sum()
        .unwrap()
}

#[test]
fn qwen_gguf_files_are_the_same_models_as_their_directories() {
    for family in ["qwen2", "qwen3"] {
        let gguf = common::families::family_dir(family).join("model.gguf");
        let from_gguf = BaseModel::load(&gguf, DType::F32, &Device::Cpu).unwrap();
        let from_dir = BaseModel::load(&model_dir(family), DType::F32, &Device::Cpu).unwrap();
        let (a, b) = (&from_gguf.config, &from_dir.config);
        assert_eq!(a.family, b.family);
        assert_eq!(
            (a.head_dim, a.qk_norm, a.biases, a.tie_word_embeddings),
            (b.head_dim, b.qk_norm, b.biases, b.tie_word_embeddings),
            "{family}"
        );
        assert_eq!(a.ropes[0].kind, b.ropes[0].kind, "{family}: rope");
        // llama.cpp has no sliding window for Qwen2: compare on examples no longer than the window (6).
        let mut examples = reference(family).examples;
        for e in &mut examples {
            e.input_ids.truncate(6);
            e.loss_mask.truncate(6);
        }
        let (x, y) = (loss(&from_gguf, &examples), loss(&from_dir, &examples));
        let rel = (x - y).abs() / y;
        assert!(rel < 1e-6, "{family}: GGUF loss {x} vs directory {y}");
        // `dn model import` writes the GGUF as a model directory: the same model again.
        let imported = tempfile::tempdir().unwrap();
        dn_model::import_gguf(&gguf, imported.path()).unwrap();
        let from_import = BaseModel::load(imported.path(), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(from_import.config, from_gguf.config, "{family}");
        assert_eq!(loss(&from_import, &examples), x, "{family}: imported");
    }
}
