//! Writes GGUF files (version 3, as llama.cpp reads them): metadata, tensor infos, then each tensor's data
//! aligned to 32 bytes, in f32, f16, bf16 or q8_0. Tensor sizes follow from their shapes and types, so the
//! header is written first and each tensor's values are asked for only when its turn comes: memory stays
//! at one tensor.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// GGUF's data alignment (`general.alignment` default).
const ALIGNMENT: u64 = 32;
/// Values per q8_0 block.
const Q8_BLOCK: usize = 32;

/// A metadata value, typed as llama.cpp expects it.
#[derive(Debug, Clone, PartialEq)]
pub enum KvValue {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    F32s(Vec<f32>),
}

/// How a tensor's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    /// Blocks of 32 values: an f16 scale and 32 signed bytes.
    Q8_0,
}

impl TensorType {
    /// ggml's type id.
    pub fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
            TensorType::BF16 => 30,
        }
    }

    /// `general.file_type` of a file whose matrices are of this type.
    pub fn file_type(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 7,
            TensorType::BF16 => 32,
        }
    }

    /// Bytes of `count` values (a multiple of 32 for q8_0).
    fn bytes(self, count: usize) -> usize {
        match self {
            TensorType::F32 => count * 4,
            TensorType::F16 | TensorType::BF16 => count * 2,
            TensorType::Q8_0 => count / Q8_BLOCK * (2 + Q8_BLOCK),
        }
    }
}

/// One tensor to write: GGUF name, shape in PyTorch order (rows first), storage type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorType,
}

impl TensorSpec {
    fn count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// `values` in `kind`'s bytes (little-endian).
pub fn encode(values: &[f32], kind: TensorType) -> Vec<u8> {
    match kind {
        TensorType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        TensorType::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        TensorType::Q8_0 => {
            let mut out = Vec::with_capacity(kind.bytes(values.len()));
            for block in values.chunks(Q8_BLOCK) {
                let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = max / 127.0;
                let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                out.extend_from_slice(&half::f16::from_f32(scale).to_le_bytes());
                out.extend(
                    block
                        .iter()
                        .map(|v| (v * inverse).round().clamp(-127.0, 127.0) as i8 as u8),
                );
            }
            out
        }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Model {
        path: path.display().to_string(),
        message: format!("cannot write: {e}"),
    }
}

fn put_str(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn put_value(out: &mut impl Write, value: &KvValue) -> std::io::Result<()> {
    // GGUF value types: 4 u32, 5 i32, 6 f32, 7 bool, 8 string, 9 array.
    let array = |out: &mut dyn Write, kind: u32, len: usize| -> std::io::Result<()> {
        out.write_all(&9u32.to_le_bytes())?;
        out.write_all(&kind.to_le_bytes())?;
        out.write_all(&(len as u64).to_le_bytes())
    };
    match value {
        KvValue::U32(v) => {
            out.write_all(&4u32.to_le_bytes())?;
            out.write_all(&v.to_le_bytes())
        }
        KvValue::I32(v) => {
            out.write_all(&5u32.to_le_bytes())?;
            out.write_all(&v.to_le_bytes())
        }
        KvValue::F32(v) => {
            out.write_all(&6u32.to_le_bytes())?;
            out.write_all(&v.to_le_bytes())
        }
        KvValue::Bool(v) => {
            out.write_all(&7u32.to_le_bytes())?;
            out.write_all(&[u8::from(*v)])
        }
        KvValue::Str(s) => {
            out.write_all(&8u32.to_le_bytes())?;
            put_str(out, s)
        }
        KvValue::Strs(list) => {
            array(out, 8, list.len())?;
            list.iter().try_for_each(|s| put_str(out, s))
        }
        KvValue::I32s(list) => {
            array(out, 5, list.len())?;
            list.iter()
                .try_for_each(|v| out.write_all(&v.to_le_bytes()))
        }
        KvValue::F32s(list) => {
            array(out, 6, list.len())?;
            list.iter()
                .try_for_each(|v| out.write_all(&v.to_le_bytes()))
        }
    }
}

fn padding(at: u64) -> usize {
    ((ALIGNMENT - at % ALIGNMENT) % ALIGNMENT) as usize
}

/// Writes `path` (through `path.partial`, renamed when complete): the metadata `kv`, the `tensors`' infos,
/// then each tensor's values as `values(i)` returns them (row-major, PyTorch order). Returns the bytes
/// written.
pub fn write_gguf(
    path: &Path,
    kv: &[(String, KvValue)],
    tensors: &[TensorSpec],
    values: &mut dyn FnMut(usize) -> Result<Vec<f32>>,
) -> Result<u64> {
    for t in tensors {
        if t.kind == TensorType::Q8_0 && t.shape.last().is_none_or(|c| c % Q8_BLOCK != 0) {
            return Err(Error::Model {
                path: path.display().to_string(),
                message: format!(
                    "tensor {}: q8_0 needs rows of a multiple of 32 values (shape {:?})",
                    t.name, t.shape
                ),
            });
        }
    }
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(|e| io_error(&partial, e))?;
    let mut out = BufWriter::new(file);
    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        put_str(&mut header, key).expect("in memory");
        put_value(&mut header, value).expect("in memory");
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut header, &t.name).expect("in memory");
        header.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            header.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        header.extend_from_slice(&t.kind.id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        let size = t.kind.bytes(t.count()) as u64;
        offset += size + padding(size) as u64;
    }
    header.resize(header.len() + padding(header.len() as u64), 0);
    out.write_all(&header).map_err(|e| io_error(&partial, e))?;
    let mut written = header.len() as u64;
    for (i, t) in tensors.iter().enumerate() {
        let data = values(i)?;
        if data.len() != t.count() {
            return Err(Error::Model {
                path: path.display().to_string(),
                message: format!(
                    "tensor {}: {} values for shape {:?}",
                    t.name,
                    data.len(),
                    t.shape
                ),
            });
        }
        let bytes = encode(&data, t.kind);
        let pad = padding(bytes.len() as u64);
        out.write_all(&bytes)
            .and_then(|_| out.write_all(&vec![0u8; pad]))
            .map_err(|e| io_error(&partial, e))?;
        written += (bytes.len() + pad) as u64;
    }
    out.into_inner()
        .map_err(|e| io_error(&partial, e.into_error()))?
        .sync_all()
        .map_err(|e| io_error(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| io_error(path, e))?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufMetadata;
    use crate::weights::{dequantize, tensor_bytes};

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let values: Vec<f32> = (0..64 * 3)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let kv = vec![
            (
                "general.architecture".to_owned(),
                KvValue::Str("llama".into()),
            ),
            ("llama.block_count".to_owned(), KvValue::U32(2)),
            ("x.eps".to_owned(), KvValue::F32(1e-5)),
            ("x.flag".to_owned(), KvValue::Bool(true)),
            (
                "x.tokens".to_owned(),
                KvValue::Strs(vec!["a".into(), "b c".into()]),
            ),
            ("x.types".to_owned(), KvValue::I32s(vec![1, 3])),
        ];
        let kinds = [
            TensorType::F32,
            TensorType::F16,
            TensorType::BF16,
            TensorType::Q8_0,
        ];
        let specs: Vec<TensorSpec> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| TensorSpec {
                name: format!("t{i}"),
                shape: vec![3, 64],
                kind: *kind,
            })
            .collect();
        write_gguf(&path, &kv, &specs, &mut |_| Ok(values.clone())).unwrap();
        let meta = GgufMetadata::read(&path).unwrap();
        assert_eq!(meta.str("general.architecture"), Some("llama"));
        assert_eq!(meta.u64("llama.block_count"), Some(2));
        assert_eq!(meta.strings("x.tokens").unwrap(), vec!["a", "b c"]);
        assert_eq!(meta.get("x.flag").unwrap().as_bool(), Some(true));
        let data = std::fs::read(&path).unwrap();
        for (info, tolerance) in meta.tensors.iter().zip([0.0, 5e-3, 3e-2, 4e-2]) {
            assert_eq!(info.dims, vec![64, 3]);
            let start = (meta.data_offset + info.offset) as usize;
            let got = dequantize(info, &data[start..start + tensor_bytes(info).unwrap()]).unwrap();
            for (a, b) in got.iter().zip(&values) {
                assert!(
                    (a - b).abs() <= tolerance * (1.0 + b.abs()),
                    "{}: {a} vs {b}",
                    info.name
                );
            }
        }
        let bad = TensorSpec {
            name: "odd".into(),
            shape: vec![2, 3],
            kind: TensorType::Q8_0,
        };
        let e = write_gguf(&path, &kv, &[bad], &mut |_| Ok(vec![0.0; 6])).unwrap_err();
        assert!(e.to_string().contains("multiple of 32"), "{e}");
    }
}
