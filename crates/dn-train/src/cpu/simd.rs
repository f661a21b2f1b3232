//! Dot products with the widest vector instructions the CPU has, chosen at run time (the crate is built
//! for baseline x86-64, where the compiler leaves these loops scalar or half-vectorized): AVX-512 or
//! AVX2 with FMA for f32, a portable loop otherwise (and for f64).

use candle_core::DType;

use crate::kernels::Real;

/// `sum(a[i] * b[i])` over the shorter length.
#[inline]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let len = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == DType::F32 {
        // SAFETY: `T` is f32 (its DTYPE says so), so the slices reinterpret to themselves.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a.as_ptr().cast::<f32>(), len),
                std::slice::from_raw_parts(b.as_ptr().cast::<f32>(), len),
            )
        };
        let sum = if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            unsafe { dot_avx512(a, b) }
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { dot_avx2(a, b) }
        } else {
            portable(a, b)
        };
        return T::from_f64(f64::from(sum));
    }
    portable(&a[..len], &b[..len])
}

/// `[dot(x, w[0]), .., dot(x, w[3])]`: four rows against one vector, `x` loaded once per chunk.
#[inline]
pub fn dot4<T: Real>(x: &[T], w: [&[T]; 4]) -> [T; 4] {
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == DType::F32
        && w.iter().all(|r| r.len() >= x.len())
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        let cast = |s: &[T]| {
            // SAFETY: `T` is f32 (its DTYPE says so).
            unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), x.len()) }
        };
        // SAFETY: the CPU has AVX-512F; every row is at least as long as `x`.
        let sums = unsafe { dot4_avx512(cast(x), w.map(cast)) };
        return sums.map(|s| T::from_f64(f64::from(s)));
    }
    w.map(|row| dot(x, row))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot4_avx512(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = x.len();
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): `i + 16 <= n` and every row is at least `n` long.
    unsafe {
        while i + 16 <= n {
            let xv = _mm512_loadu_ps(x.as_ptr().add(i));
            for r in 0..4 {
                acc[r] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w[r].as_ptr().add(i)), acc[r]);
            }
            i += 16;
        }
    }
    let mut out = acc.map(|a| _mm512_reduce_add_ps(a));
    while i < n {
        for r in 0..4 {
            out[r] += x[i] * w[r][i];
        }
        i += 1;
    }
    out
}

fn portable<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (main_a, main_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let (rest_a, rest_b) = (main_a.remainder(), main_b.remainder());
    for (x, y) in main_a.zip(main_b) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    for (k, (x, y)) in rest_a.iter().zip(rest_b).enumerate() {
        acc[k] += *x * *y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    // SAFETY (all loads): `i + 32 <= n` or `i + 16 <= n` keeps them inside both slices.
    unsafe {
        while i + 32 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                acc1,
            );
            i += 32;
        }
        if i + 16 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            i += 16;
        }
    }
    let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    while i < n {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    // SAFETY (all loads): `i + 16 <= n` or `i + 8 <= n` keeps them inside both slices.
    unsafe {
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
    }
    let v = _mm256_add_ps(acc0, acc1);
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
    let mut sum = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
    while i < n {
        sum += a[i] * b[i];
        i += 1;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_sums_the_same() {
        for len in [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 576, 1000] {
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let b: Vec<f32> = (0..len)
                .map(|i| ((i * 3 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot(&a, &b) as f64;
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{len}: {got} vs {want}"
            );
            let a64: Vec<f64> = a.iter().map(|&v| v as f64).collect();
            let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            assert!((dot(&a64, &b64) - want).abs() < 1e-9, "{len}");
        }
    }
}
