//! Greedy generation against transformers + PEFT `generate` (scripts/reference/generate_parity.py): 32 new
//! tokens, token for token, on each family's tiny random model with its closed-form LoRA and on SmolLM2
//! with a PEFT adapter directory; prompts batched together give each prompt's own tokens; the CPU engine's
//! cached decoding equals the candle graph recomputing each sequence.

mod common;

use common::families::{FAMILIES, family_dir, model, model_on};
use common::generation::{fixtures, greedy, reference};
use dn_train::{BaseModel, DType, Device, Executor, Finish, LoraModel, SamplingOptions, generate};

#[test]
fn every_family_generates_what_transformers_and_peft_generate() {
    for family in FAMILIES {
        let (prompts, want) = reference(&family_dir(family).join("generate.json"));
        let model = model(family, DType::F32);
        assert_eq!(greedy(&model, &prompts, 32), want, "{family}: batched");
        for (prompt, want) in prompts.iter().zip(&want) {
            assert_eq!(
                &greedy(&model, std::slice::from_ref(prompt), 32)[0],
                want,
                "{family}: alone"
            );
        }
    }
}

#[test]
fn cached_decoding_equals_recomputing_each_sequence() {
    for family in FAMILIES {
        // Phi-3's first prompt crosses longrope's switch (8 tokens), where a cache is recomputed.
        let (prompts, _) = reference(&family_dir(family).join("generate.json"));
        let model = model(family, DType::F64);
        let cached = greedy(&model, &prompts, 12);
        let graph = model_on(family, DType::F64, Executor::Graph);
        assert_eq!(greedy(&graph, &prompts, 12), cached, "{family}");
    }
}

#[test]
fn smollm2_with_a_peft_adapter_generates_what_peft_generates() {
    let Some(gguf) = common::test_model() else {
        return;
    };
    let dir = fixtures();
    let (prompts, want) = reference(&dir.join("smollm2.json"));
    let base = BaseModel::load(&gguf, DType::F32, &Device::Cpu).unwrap();
    let model = LoraModel::with_adapter(&base, &dir.join("smollm2-adapter")).unwrap();
    assert_eq!(model.lora.rank, 4);
    assert_eq!(
        model.lora.target_modules.as_names(),
        ["q_proj", "v_proj", "o_proj"]
    );
    assert_eq!(greedy(&model, &prompts, 32), want);
    // Stopping: the chat prompt's completion ends at <|im_end|> (id 2) after " Paris." or so.
    let options = SamplingOptions::greedy(32, vec![2]);
    let stopped = generate(&model, &prompts[1..], &options, &mut |_, _| true).unwrap();
    let end = want[1].iter().position(|&t| t == 2).unwrap();
    assert_eq!(stopped[0].tokens, want[1][..=end]);
    assert_eq!(stopped[0].finish, Finish::Stop);
    // Interrupted after 3 tokens.
    let mut seen = 0;
    let cut = generate(&model, &prompts[..1], &options, &mut |_, _| {
        seen += 1;
        seen < 3
    })
    .unwrap();
    assert_eq!(cut[0].tokens, want[0][..3]);
    assert_eq!(cut[0].finish, Finish::Interrupted);
}
