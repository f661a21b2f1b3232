//! Strided matrix views and `dst (+)= beta * lhs @ rhs` on them through `gemm` (candle's own CPU matmul
//! kernels), writing into caller-owned buffers: no allocation, no transposed copies (a transpose is a view
//! with its strides swapped).

use gemm::Parallelism;
use rayon::prelude::*;

use crate::kernels::Real;

/// A read-only `rows x cols` matrix: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// Row-major `rows x cols` over the start of `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// `rows x cols` starting at `offset`, rows `rs` apart (a block of columns of a wider matrix).
    pub fn strided(data: &'a [T], offset: usize, rows: usize, cols: usize, rs: usize) -> Self {
        Mat {
            data: &data[offset..],
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        (self.rows - 1) * self.rs + (self.cols - 1) * self.cs
    }
}

/// A writable `rows x cols` matrix with row stride `rs` (columns contiguous).
pub struct MatMut<'a, T> {
    pub data: &'a mut [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
}

impl<'a, T> MatMut<'a, T> {
    pub fn new(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            rs: cols,
        }
    }

    pub fn strided(data: &'a mut [T], offset: usize, rows: usize, cols: usize, rs: usize) -> Self {
        MatMut {
            data: &mut data[offset..],
            rows,
            cols,
            rs,
        }
    }
}

/// Threads for one product: all of them at the top level, one inside a parallel loop.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    All,
    One,
}

/// `dst = beta * lhs @ rhs`, or `dst += beta * lhs @ rhs` with `accumulate`.
pub fn matmul<T: Real>(
    dst: MatMut<'_, T>,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    beta: T,
    accumulate: bool,
    threads: Threads,
) {
    assert_eq!(lhs.cols, rhs.rows, "matmul: inner dimensions differ");
    assert_eq!(
        (dst.rows, dst.cols),
        (lhs.rows, rhs.cols),
        "matmul: output shape"
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    assert!(lhs.data.len() > lhs.last_index() && rhs.data.len() > rhs.last_index());
    assert!(dst.data.len() > (dst.rows - 1) * dst.rs + dst.cols - 1);
    if lhs.cols == 0 {
        if !accumulate {
            for i in 0..dst.rows {
                dst.data[i * dst.rs..i * dst.rs + dst.cols].fill(T::ZERO);
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::All => Parallelism::Rayon(rayon::current_num_threads()),
        Threads::One => Parallelism::None,
    };
    // SAFETY: the asserts above keep every element gemm touches inside the three slices; `dst` is a
    // unique borrow, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            beta,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Rows at most that [`few_rows_wt`] takes instead of gemm: generation's rows per step.
pub const FEW_ROWS: usize = 16;
/// Multiply-adds below which [`few_rows_wt`] stays on the calling thread.
const SERIAL_WORK: usize = 1 << 16;

/// `part[r * n + i] = dot(x_i, rows_r)` for every row `r` of a block of `w` and row `i` of `x`.
fn block_dots<T: Real>(part: &mut [T], rows: &[T], x: &[T], n: usize, inp: usize) {
    let count = part.len() / n.max(1);
    let row = |r: usize| &rows[r * inp..(r + 1) * inp];
    let mut r = 0;
    // Four rows of `w` at a time: each chunk of a row of `x` is loaded once for the four.
    while r + 4 <= count {
        for i in 0..n {
            let sums = super::simd::dot4(
                &x[i * inp..(i + 1) * inp],
                [row(r), row(r + 1), row(r + 2), row(r + 3)],
            );
            for (k, s) in sums.into_iter().enumerate() {
                part[(r + k) * n + i] = s;
            }
        }
        r += 4;
    }
    for r in r..count {
        for i in 0..n {
            part[r * n + i] = super::simd::dot(&x[i * inp..(i + 1) * inp], row(r));
        }
    }
}

/// `y (+)= beta * x w^T` for `x [n, inp]` and a row-major `w [out, inp]` (a projection): gemm on all
/// threads, or [`few_rows_wt`] for up to [`FEW_ROWS`] rows (a decoding step).
#[allow(clippy::too_many_arguments)]
pub fn rows_times_wt<T: Real>(
    y: &mut [T],
    x: &[T],
    n: usize,
    w: &[T],
    out: usize,
    inp: usize,
    beta: T,
    accumulate: bool,
) {
    if n <= FEW_ROWS {
        return few_rows_wt(y, x, n, w, out, inp, beta, accumulate);
    }
    matmul(
        MatMut::new(y, n, out),
        Mat::new(x, n, inp),
        Mat::new(w, out, inp).t(),
        beta,
        accumulate,
        Threads::All,
    );
}

/// `y (+)= x w^T` for a few rows `x [n, inp]` and a quantized `w [out, inp]`: [`few_rows_wt`] on blocks
/// of `w`'s rows, each decoded just before its dot products (never the whole matrix).
pub fn few_rows_quantized_wt<T: Real>(
    y: &mut [T],
    x: &[T],
    n: usize,
    w: crate::quant::QuantRows<'_>,
    accumulate: bool,
) {
    let (out, inp) = (w.rows, w.cols());
    let block = (out / (rayon::current_num_threads() * 4)).clamp(16, 512);
    let starts: Vec<usize> = (0..out).step_by(block).collect();
    let parts: Vec<Vec<T>> = starts
        .par_iter()
        .map(|&first| {
            let count = block.min(out - first);
            let mut decoded = vec![0.0f32; count * inp];
            w.dequantize_rows(first, &mut decoded);
            let rows: Vec<T> = decoded.iter().map(|v| T::from_f64(f64::from(*v))).collect();
            let mut part = vec![T::ZERO; count * n];
            block_dots(&mut part, &rows, x, n, inp);
            part
        })
        .collect();
    for (first, part) in starts.iter().zip(&parts) {
        for (r, values) in part.chunks(n).enumerate() {
            for (i, v) in values.iter().enumerate() {
                let dst = &mut y[i * out + first + r];
                *dst = if accumulate { *dst + *v } else { *v };
            }
        }
    }
}

/// `y (+)= beta * x w^T` for a few rows `x [n, inp]` and a row-major `w [out, inp]`: every output is the
/// dot product of two contiguous rows and `w` is read once, in parallel blocks of its rows. Decoding
/// is bound by reading the weights; gemm would pack all of `w` again for each call.
#[allow(clippy::too_many_arguments)]
fn few_rows_wt<T: Real>(
    y: &mut [T],
    x: &[T],
    n: usize,
    w: &[T],
    out: usize,
    inp: usize,
    beta: T,
    accumulate: bool,
) {
    assert!(x.len() >= n * inp && w.len() >= out * inp && y.len() >= n * out);
    if n == 0 || out == 0 {
        return;
    }
    if inp == 0 {
        if !accumulate {
            y[..n * out].fill(T::ZERO);
        }
        return;
    }
    let block = (out / (rayon::current_num_threads() * 4)).clamp(16, 512);
    let dots = |rows: &[T]| {
        let count = rows.len() / inp;
        let mut part = vec![T::ZERO; count * n];
        block_dots(&mut part, rows, x, n, inp);
        part
    };
    let chunks = w[..out * inp].chunks(block * inp);
    // A small product (a LoRA pair's) costs less than handing it to other threads.
    let parts: Vec<Vec<T>> = if out * inp * n < SERIAL_WORK {
        chunks.map(dots).collect()
    } else {
        w[..out * inp].par_chunks(block * inp).map(dots).collect()
    };
    for (b, part) in parts.iter().enumerate() {
        for (r, values) in part.chunks(n).enumerate() {
            let o = b * block + r;
            for (i, v) in values.iter().enumerate() {
                let dst = &mut y[i * out + o];
                *dst = if accumulate {
                    *dst + beta * *v
                } else {
                    beta * *v
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_rows_equal_gemm() {
        for (n, out, inp) in [(1, 37, 19), (3, 600, 64), (16, 5, 130), (2, 1000, 16)] {
            let x: Vec<f64> = (0..n * inp)
                .map(|k| ((k * 7 % 11) as f64 - 5.0) / 3.0)
                .collect();
            let w: Vec<f64> = (0..out * inp)
                .map(|k| ((k * 5 % 13) as f64 - 6.0) / 7.0)
                .collect();
            for accumulate in [false, true] {
                let mut want = vec![0.5; n * out];
                let mut got = want.clone();
                matmul(
                    MatMut::new(&mut want, n, out),
                    Mat::new(&x, n, inp),
                    Mat::new(&w, out, inp).t(),
                    1.5,
                    accumulate,
                    Threads::One,
                );
                few_rows_wt(&mut got, &x, n, &w, out, inp, 1.5, accumulate);
                for (a, b) in want.iter().zip(&got) {
                    assert!((a - b).abs() < 1e-9, "{n}x{out}x{inp}: {a} vs {b}");
                }
            }
        }
    }
}
