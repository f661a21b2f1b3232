//! LoRA supervised fine-tuning with candle of the decoder families `dn-arch` describes: the trainable
//! model, the masked loss, AdamW, the schedule, checkpoints in PEFT's adapter layout, and the training
//! loop. No async runtime, no store: the worker drives it on a dedicated thread.
//!
//! `weights` loads frozen base weights in transformers' names (GGUF through dn-model's dequantizer, or
//! memory-mapped safetensors of any float dtype; a multimodal checkpoint's text model only, older Gemma 3
//! names mapped to current ones) with the `ModelConfig` of its config.json (GGUF metadata goes through
//! `dn_model::hf_config` first: one parser). Two executors compute the same model, held to each other in f64
//! by the tests and each to transformers + PEFT per family: the CPU engine (`cpu/`) and the candle graph
//! (`graph/`, the only place autograd runs); they import nothing from each other and share `batch` (`Packed`,
//! `Targets`: the rows that predict supervised tokens), `model` (the weights and LoRA pairs both read) and
//! `kernels` (the float trait). `loss` packs the batch and dispatches to one of them.
//!
//! `generate` completes prompts (greedy, temperature, top-k, top-p, seeded; stop ids; `on_token` may end it):
//! on the CPU engine through `cpu/decode` (keys and values cached per layer, new rows of every sequence
//! through one product per projection; a sequence crossing longrope's switch is recomputed whole, as
//! transformers' Phi-3 does), elsewhere by recomputing each sequence on the graph. Few-row products skip
//! gemm's packing (`cpu/simd`: AVX-512 or AVX2 picked at run time). `adapter` reads a PEFT adapter directory
//! into a `LoraModel` (options that change what the pairs compute refused by name); `export` writes the base
//! with the pairs folded in as a model directory (shards planned from the shapes, each tensor merged when the
//! writer asks for its bytes), `export_gguf` as one llama.cpp file (llama, qwen2, qwen3) through dn-model's
//! `gguf_write` and `gguf_vocab`.
//!
//! `lora` holds the pairs, PEFT init and names; `optim` AdamW with savable moments, clipping and schedules;
//! `schedule` steps/epochs, per-epoch shuffles from the seed and token-budget passes; `checkpoint` the PEFT
//! adapter and trainer state, written then renamed; `trainer` the loop and its events (a step that runs out
//! of device memory with passes sized from memory is redone with half the tokens per pass, otherwise
//! `Error::OutOfMemory` says what to lower); `budget` the memory a job needs from config.json and its
//! settings against the device's free memory, and the tokens per pass that memory holds. `device`: cpu or
//! cuda (bf16 base with f32 LoRA on CUDA); a CUDA build probes the driver and the libraries at run time
//! (`device/probe.rs`, `device/cuda.rs`), so `auto` falls back to the CPU, warning when a GPU is there but
//! unusable, and `cuda` says why it cannot; on each CUDA device dn turns off cudarc's per-allocation events
//! and keeps the memory pool's mappings (trimmed when a job ends or a pass runs out of memory), and the free
//! memory it reports counts what the pool holds unused. The trainer completes `eval_prompts` after each
//! periodic evaluation and after training. Tests: f64 finite differences (engine and graph), engine = graph =
//! recompute in f64, PyTorch parity on the real model, per family against transformers 5 + PEFT on tiny
//! random models (`tests/fixtures/families`), resume. The GPU budget for Llama-3.1-8B is in
//! `docs/gpu-plan.md`.

mod adapter;
mod batch;
mod bnb;
mod budget;
mod checkpoint;
mod cpu;
mod device;
mod error;
mod export;
mod export_gguf;
mod frozen;
mod generate;
mod graph;
mod interleaved;
mod kernels;
mod lora;
mod loss;
mod model;
mod norm;
mod optim;
mod quant;
mod routing;
mod schedule;
mod trainer;
mod weights;

pub use batch::Packed;
pub use budget::{
    MAX_DERIVED_TOKENS_PER_PASS, MemoryEstimate, available_memory, check_fits, estimate_memory,
    estimate_memory_as, tokens_per_pass_for_memory,
};
pub use checkpoint::{
    ADAPTER_CONFIG_FILE, ADAPTER_FILE, Checkpoint, OPTIMIZER_FILE, STATE_FILE, StepRecord,
    TrainerState, adapter_config,
};
pub use device::{
    CudaReport, DeviceSpec, GpuInfo, KNOWN_GPUS, LibraryStatus, base_dtype, cuda_report,
    device_label, device_warning, known_peak_flops, peak_flops, release_cached_memory,
    select_device,
};
pub use dn_arch::{Family, ModelConfig};
pub use dn_model::gguf_write::TensorType;
pub use dn_spec::BaseQuantization;
pub use error::{Error, Result};
pub use export::{MAX_SHARD_BYTES, MergeSummary, merge_adapter, stored_dtype};
pub use export_gguf::{GgufSummary, export_gguf};
pub use frozen::Frozen;
pub use generate::{Completion, Finish, SamplingOptions, generate, pick};
pub use lora::{ALL_LINEAR, LoraConfig, LoraPair, LoraTargets, seeded_rng};
pub use loss::{
    BatchLoss, Sequence, count_targets, evaluate, forward_backward, logits_at, targets,
};
pub use model::{BaseMemory, Executor, LoraModel, RouterLoad};
pub use optim::{AdamW, AdamWConfig, Schedule, clip_grad_norm, scheduled_rate};
pub use schedule::{
    epoch_order, passes, step_examples, step_position, steps_per_epoch, total_steps,
};
pub use trainer::{
    Control, Event, MIN_TOKENS_PER_PASS, TrainExample, TrainOptions, TrainSummary, Trainer,
};
pub use weights::BaseModel;

pub use candle_core::{DType, Device};
