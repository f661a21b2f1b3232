//! Strided matrix views and `dst (+)= beta * lhs @ rhs` on them through `gemm` (candle's own CPU matmul
//! kernels), writing into caller-owned buffers: no allocation, no transposed copies (a transpose is a view
//! with its strides swapped).

use gemm::Parallelism;

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
