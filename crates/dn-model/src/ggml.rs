//! ggml's tensor types as GGUF files store them, and their dequantization to f32 exactly as ggml's
//! reference `dequantize_row_*` computes it (each product and sum an f32 operation, no fused
//! multiply-add, as gguf-py's numpy decoding): F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (blocks of
//! 32) and the k-quants Q4_K, Q5_K, Q6_K (super-blocks of 256 with 6-bit or 8-bit sub-block scales).

use half::f16;

/// One ggml type: its id, name, elements per block and bytes per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    pub block: usize,
    pub bytes: usize,
}

/// The types dn reads.
pub const TYPES: [GgmlType; 11] = [
    GgmlType {
        id: 0,
        name: "F32",
        block: 1,
        bytes: 4,
    },
    GgmlType {
        id: 1,
        name: "F16",
        block: 1,
        bytes: 2,
    },
    GgmlType {
        id: 30,
        name: "BF16",
        block: 1,
        bytes: 2,
    },
    GgmlType {
        id: 2,
        name: "Q4_0",
        block: 32,
        bytes: 18,
    },
    GgmlType {
        id: 3,
        name: "Q4_1",
        block: 32,
        bytes: 20,
    },
    GgmlType {
        id: 6,
        name: "Q5_0",
        block: 32,
        bytes: 22,
    },
    GgmlType {
        id: 7,
        name: "Q5_1",
        block: 32,
        bytes: 24,
    },
    GgmlType {
        id: 8,
        name: "Q8_0",
        block: 32,
        bytes: 34,
    },
    GgmlType {
        id: 12,
        name: "Q4_K",
        block: 256,
        bytes: 144,
    },
    GgmlType {
        id: 13,
        name: "Q5_K",
        block: 256,
        bytes: 176,
    },
    GgmlType {
        id: 14,
        name: "Q6_K",
        block: 256,
        bytes: 210,
    },
];

impl GgmlType {
    pub fn of(id: u32) -> Option<GgmlType> {
        TYPES.iter().copied().find(|t| t.id == id)
    }

    /// The names of every type read, for errors.
    pub fn names() -> String {
        TYPES.map(|t| t.name).join(", ")
    }

    /// Bytes of `n` elements; `None` when `n` is not a whole number of blocks.
    pub fn size_of(self, n: usize) -> Option<usize> {
        n.is_multiple_of(self.block)
            .then(|| n / self.block * self.bytes)
    }

    /// Decodes whole blocks of `bytes` into `out` (`out.len() == bytes.len() / self.bytes * self.block`).
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) {
        let blocks = bytes
            .chunks_exact(self.bytes)
            .zip(out.chunks_exact_mut(self.block));
        match self.id {
            0 => {
                for (b, y) in blocks {
                    y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            1 => blocks.for_each(|(b, y)| y[0] = half_at(b, 0)),
            30 => blocks.for_each(|(b, y)| y[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            2 => blocks.for_each(|(b, y)| q4_0(b, y)),
            3 => blocks.for_each(|(b, y)| q4_1(b, y)),
            6 => blocks.for_each(|(b, y)| q5(b, y, false)),
            7 => blocks.for_each(|(b, y)| q5(b, y, true)),
            8 => blocks.for_each(|(b, y)| q8_0(b, y)),
            12 => blocks.for_each(|(b, y)| q4_k(b, y)),
            13 => blocks.for_each(|(b, y)| q5_k(b, y)),
            14 => blocks.for_each(|(b, y)| q6_k(b, y)),
            _ => unreachable!("only TYPES are decoded"),
        }
    }
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, q) in b[2..18].iter().enumerate() {
        y[j] = (f32::from(q & 0xF) - 8.0) * d;
        y[j + 16] = (f32::from(q >> 4) - 8.0) * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, q) in b[4..20].iter().enumerate() {
        y[j] = f32::from(q & 0xF) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// Q5_0 (`x * d`, x centred on 16) and Q5_1 (`x * d + m`): 4 low bits in `qs`, the fifth in `qh`.
fn q5(b: &[u8], y: &mut [f32], with_min: bool) {
    let d = half_at(b, 0);
    let (m, at) = if with_min {
        (half_at(b, 2), 4)
    } else {
        (0.0, 2)
    };
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    for (j, q) in b[at + 4..at + 20].iter().enumerate() {
        let high0 = ((qh >> j) << 4) & 0x10;
        let high1 = (qh >> (j + 12)) & 0x10;
        let x0 = (u32::from(q & 0x0F) | high0) as i32;
        let x1 = (u32::from(q >> 4) | high1) as i32;
        if with_min {
            y[j] = x0 as f32 * d + m;
            y[j + 16] = x1 as f32 * d + m;
        } else {
            y[j] = (x0 - 16) as f32 * d;
            y[j + 16] = (x1 - 16) as f32 * d;
        }
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (v, q) in y.iter_mut().zip(&b[2..34]) {
        *v = f32::from(*q as i8) * d;
    }
}

/// Sub-block `j`'s 6-bit scale and min of a k-quant's 12 packed scale bytes.
fn scale_min(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (half_at(b, 0), half_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (chunk, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min(2 * chunk, scales);
        let (sc2, m2) = scale_min(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, min * m1, d * sc2, min * m2);
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0xF) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, min) = (half_at(b, 0), half_at(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (chunk, (ql, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min(2 * chunk, scales);
        let (sc2, m2) = scale_min(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, min * m1, d * sc2, min * m2);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for l in 0..32 {
            let high1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let high2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * f32::from((ql[l] & 0xF) + high1) - m1;
            y[l + 32] = d2 * f32::from((ql[l] >> 4) + high2) - m2;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], half_at(b, 208));
    for half in 0..2 {
        let (ql, qh, sc) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..]);
        let y = &mut y[128 * half..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let scale = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = scale(0) * q1 as f32;
            y[l + 32] = scale(2) * q2 as f32;
            y[l + 64] = scale(4) * q3 as f32;
            y[l + 96] = scale(6) * q4 as f32;
        }
    }
}
