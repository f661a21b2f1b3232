//! LoRA supervised fine-tuning with candle of the decoder families `dn-arch` describes: the trainable
//! model, the masked loss, AdamW, the schedule, checkpoints in PEFT's adapter layout, and the training
//! loop. No async runtime, no store: the worker drives it on a dedicated thread.

mod adapter;
mod batch;
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
mod kernels;
mod lora;
mod loss;
mod model;
mod norm;
mod optim;
mod schedule;
mod trainer;
mod weights;

pub use batch::Packed;
pub use budget::{
    MAX_DERIVED_TOKENS_PER_PASS, MemoryEstimate, available_memory, check_fits, estimate_memory,
    tokens_per_pass_for_memory,
};
pub use checkpoint::{
    ADAPTER_CONFIG_FILE, ADAPTER_FILE, Checkpoint, OPTIMIZER_FILE, STATE_FILE, StepRecord,
    TrainerState, adapter_config,
};
pub use device::{
    CudaReport, DeviceSpec, GpuInfo, LibraryStatus, base_dtype, cuda_report, device_label,
    device_warning, release_cached_memory, select_device,
};
pub use dn_arch::{Family, ModelConfig};
pub use dn_model::gguf_write::TensorType;
pub use error::{Error, Result};
pub use export::{MAX_SHARD_BYTES, MergeSummary, merge_adapter, stored_dtype};
pub use export_gguf::{GgufSummary, export_gguf};
pub use frozen::Frozen;
pub use generate::{Completion, Finish, SamplingOptions, generate, pick};
pub use lora::{ALL_LINEAR, LoraConfig, LoraPair, LoraTargets, seeded_rng};
pub use loss::{
    BatchLoss, Sequence, count_targets, evaluate, forward_backward, logits_at, targets,
};
pub use model::LoraModel;
pub use optim::{AdamW, AdamWConfig, Schedule, clip_grad_norm, scheduled_rate};
pub use schedule::{
    epoch_order, passes, step_examples, step_position, steps_per_epoch, total_steps,
};
pub use trainer::{
    Control, Event, MIN_TOKENS_PER_PASS, TrainExample, TrainOptions, TrainSummary, Trainer,
};
pub use weights::BaseModel;

pub use candle_core::{DType, Device};
