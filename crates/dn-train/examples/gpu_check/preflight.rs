//! Seconds-long checks of the environment before anything numeric: a bf16 matrix product (cuBLAS), one
//! kernel of each candle module the trainer uses (affine, binary, cast, fill, indexing, reduce, sort,
//! ternary, unary, and the copies), random numbers (cuRAND), and an f64 reduction, each compared with
//! the CPU. A failure here is the environment (a library, the driver, a kernel that does not load), not
//! dn's numerics.

use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use dn_train::Result;
use serde_json::{Value, json};

/// Largest absolute difference between two tensors, read on the CPU in f64.
fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?)
}

/// The same computation on the device and on the CPU, within `tolerance`.
fn compare(
    name: &str,
    device: &Device,
    tolerance: f64,
    f: impl Fn(&Device) -> Result<Tensor>,
) -> Value {
    let started = Instant::now();
    let result = (|| {
        let on_device = f(device)?;
        let on_cpu = f(&Device::Cpu)?;
        max_diff(&on_device, &on_cpu)
    })();
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(diff) => json!({"check": name, "ok": diff <= tolerance, "max_abs_diff": diff,
                           "tolerance": tolerance, "seconds": seconds}),
        Err(e) => json!({"check": name, "ok": false, "error": e.to_string(), "seconds": seconds}),
    }
}

/// `[rows, cols]` of deterministic values in about [-1, 1].
fn ramp(rows: usize, cols: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Ok(Tensor::from_vec(values, (rows, cols), device)?)
}

pub fn run(device: &Device) -> Result<Value> {
    let checks = vec![
        compare("matmul_bf16 (cuBLAS)", device, 0.25, |d| {
            let a = ramp(64, 256, d)?.to_dtype(DType::BF16)?;
            let b = ramp(256, 96, d)?.to_dtype(DType::BF16)?;
            Ok(a.matmul(&b)?.to_dtype(DType::F32)?)
        }),
        compare("cast (f32 -> bf16 -> f32 -> f64)", device, 0.0, |d| {
            Ok(ramp(8, 64, d)?
                .to_dtype(DType::BF16)?
                .to_dtype(DType::F32)?
                .to_dtype(DType::F64)?)
        }),
        compare("fill (zeros, ones)", device, 0.0, |d| {
            Ok((Tensor::ones((4, 8), DType::F32, d)? + Tensor::zeros((4, 8), DType::F32, d)?)?)
        }),
        compare("affine", device, 1e-6, |d| {
            Ok(ramp(8, 64, d)?.affine(0.5, 0.25)?)
        }),
        compare("binary (mul, add, div, minimum)", device, 1e-6, |d| {
            let (a, b) = (ramp(8, 64, d)?, (ramp(8, 64, d)?.abs()? + 1.0)?);
            Ok(((&a * &b)? + a.div(&b)?.minimum(0.5)?)?)
        }),
        compare(
            "unary (exp, silu, tanh, sqrt, recip, neg)",
            device,
            1e-5,
            |d| {
                let a = ramp(8, 64, d)?;
                let positive = (a.abs()? + 0.5)?;
                Ok((((a.exp()? + a.silu()?)? + a.tanh()?.neg()?)? + positive.sqrt()?.recip()?)?)
            },
        ),
        compare("copies (transpose, cat, narrow)", device, 0.0, |d| {
            let a = ramp(16, 32, d)?;
            let t = a.t()?.contiguous()?;
            Ok(Tensor::cat(&[&t.narrow(0, 4, 8)?, &t.narrow(0, 0, 4)?], 0)?)
        }),
        compare("reduce (sum, max, softmax rows)", device, 1e-5, |d| {
            let a = ramp(8, 64, d)?;
            let max = a.max_keepdim(D::Minus1)?;
            let e = a.broadcast_sub(&max)?.exp()?;
            Ok((e.broadcast_div(&e.sum_keepdim(D::Minus1)?)? + max.broadcast_as((8, 64))?)?)
        }),
        compare("f64 reduction", device, 1e-9, |d| {
            Ok(ramp(64, 64, d)?.to_dtype(DType::F64)?.sqr()?.sum_all()?)
        }),
        compare(
            "indexing (index_select, index_add, gather)",
            device,
            1e-6,
            |d| {
                let a = ramp(16, 8, d)?;
                let rows = Tensor::new(&[3u32, 0, 15, 3], d)?;
                let picked = a.index_select(&rows, 0)?;
                let added = a.zeros_like()?.index_add(&rows, &picked, 0)?;
                let cols = Tensor::new(&[[1u32], [7]], d)?;
                let gathered = a.narrow(0, 0, 2)?.gather(&cols, 1)?;
                Ok((added.sum_all()? + gathered.sum_all()?)?)
            },
        ),
        compare("ternary (where_cond)", device, 0.0, |d| {
            let a = ramp(8, 64, d)?;
            let mask = a.ge(0.0)?;
            Ok(mask.where_cond(&a, &a.neg()?)?)
        }),
        compare("sort (arg_sort)", device, 0.0, |d| {
            Ok(ramp(4, 64, d)?
                .arg_sort_last_dim(false)?
                .to_dtype(DType::F32)?)
        }),
        random_numbers(device),
    ];
    let ok = checks.iter().all(|c| c["ok"] == json!(true));
    Ok(json!({"ok": ok, "checks": checks}))
}

/// cuRAND's normal draws: finite, mean near 0, standard deviation near 1.
fn random_numbers(device: &Device) -> Value {
    let started = Instant::now();
    let result = (|| -> Result<(f64, f64)> {
        let x = Tensor::randn(0f32, 1.0, 1 << 16, device)?.to_dtype(DType::F64)?;
        let mean = x.mean_all()?.to_scalar::<f64>()?;
        let std = x.sqr()?.mean_all()?.to_scalar::<f64>()?.sqrt();
        Ok((mean, std))
    })();
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok((mean, std)) => json!({"check": "randn (cuRAND)", "seconds": seconds,
            "ok": mean.abs() < 0.05 && (std - 1.0).abs() < 0.05, "mean": mean, "std": std}),
        Err(e) => {
            json!({"check": "randn (cuRAND)", "ok": false, "error": e.to_string(), "seconds": seconds})
        }
    }
}
