//! The candle graph's training memory grows linearly with the sequence length: attention keeps no
//! `[len, len]` tensor for the backward. Measured with a counting allocator (peak bytes allocated during
//! one forward/backward over one example), against the same model with one attention block spanning the
//! whole sequence, whose scores are quadratic.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::tiny::tiny_model;
use dn_train::{DType, Executor, LoraConfig, LoraModel, Sequence, forward_backward};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated above the starting point during one forward/backward of a `len`-token example.
fn peak_bytes(model: &LoraModel, len: usize) -> usize {
    let input_ids: Vec<u32> = (0..len as u32).map(|i| (i * 7 + 3) % 40).collect();
    let loss_mask: Vec<u8> = (0..len).map(|i| u8::from(i >= len / 2)).collect();
    let seqs = [Sequence {
        input_ids: &input_ids,
        loss_mask: &loss_mask,
    }];
    let start = CURRENT.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let (_, grads) = forward_backward(model, &seqs, len / 2).unwrap();
    drop(grads);
    PEAK.load(Ordering::Relaxed) - start
}

#[test]
fn graph_training_memory_grows_linearly_with_length() {
    let base = tiny_model(DType::F32, false, 3);
    let model =
        LoraModel::with_executor(&base, &LoraConfig::new(4, 8.0), 1, Executor::Graph).unwrap();
    let lengths = [512, 1024, 2048];
    let measure = |block: Option<usize>| -> Vec<usize> {
        lengths
            .iter()
            .map(|&len| {
                model.set_attention_block_rows(block.unwrap_or(len));
                peak_bytes(&model, len)
            })
            .collect()
    };
    let blocked = measure(Some(64));
    let whole = measure(None);
    let mib = |b: &usize| format!("{:.1} MiB", *b as f64 / (1 << 20) as f64);
    for (i, len) in lengths.iter().enumerate() {
        println!(
            "{len} tokens: blocks of 64 query rows {}, one block {}",
            mib(&blocked[i]),
            mib(&whole[i])
        );
    }
    for i in 1..lengths.len() {
        let ratio = blocked[i] as f64 / blocked[i - 1] as f64;
        assert!(
            ratio < 2.7,
            "doubling the length from {} to {} multiplied peak memory by {ratio:.2}: {blocked:?}",
            lengths[i - 1],
            lengths[i]
        );
    }
    // The measurement sees quadratic growth where it exists.
    let ratio = whole[2] as f64 / whole[1] as f64;
    assert!(
        ratio > 3.0,
        "one block: x{ratio:.2} per doubling: {whole:?}"
    );
}
