//! TensorBoard event files (`report_to: tensorboard`): every step's scalars and each evaluation's loss as
//! TensorBoard's `tf.summary` writes them, in TFRecord framing (length and data each followed by their
//! masked CRC-32C) of `Event` protocol buffers (`wall_time`, `step`, `file_version` or a `Summary` of
//! `simple_value`s). The file goes into every checkpoint directory before it is uploaded, so storage (local
//! or S3) holds the curves so far beside each checkpoint and the whole run's in `final`.

use std::path::Path;

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masked CRC-32C of `data`.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = CASTAGNOLI.checksum(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited protobuf field.
fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    varint(out, u64::from(field << 3 | 2));
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// An `Event`: `wall_time` (1, double), `step` (2, int64), then `what` (its own field, already encoded).
fn event(wall_time: f64, step: i64, what: &[u8]) -> Vec<u8> {
    let mut out = vec![0x09];
    out.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        out.push(0x10);
        varint(&mut out, step as u64);
    }
    out.extend_from_slice(what);
    out
}

/// One TensorBoard event file, built in memory (a run's scalars are small: ~60 bytes each).
#[derive(Debug, Clone)]
pub struct EventFile {
    name: String,
    bytes: Vec<u8>,
}

impl EventFile {
    /// A file named as TensorBoard's writers name theirs (`events.out.tfevents.<seconds>.<host>.dn`),
    /// opening with the `brain.Event:2` version record.
    pub fn new(wall_time: f64, host: &str) -> Self {
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut file = EventFile {
            name: format!("events.out.tfevents.{}.{host}.dn", wall_time as u64),
            bytes: Vec::new(),
        };
        let mut version = Vec::new();
        bytes_field(&mut version, 3, b"brain.Event:2");
        file.record(&event(wall_time, 0, &version));
        file
    }

    fn record(&mut self, data: &[u8]) {
        let length = (data.len() as u64).to_le_bytes();
        self.bytes.extend_from_slice(&length);
        self.bytes
            .extend_from_slice(&masked_crc(&length).to_le_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes
            .extend_from_slice(&masked_crc(data).to_le_bytes());
    }

    /// Scalars `(tag, value)` of one step, as one `Summary` event.
    pub fn scalars(&mut self, wall_time: f64, step: i64, values: &[(&str, f64)]) {
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            v.push(0x15);
            v.extend_from_slice(&(*value as f32).to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        let mut what = Vec::new();
        bytes_field(&mut what, 5, &summary);
        self.record(&event(wall_time, step, &what));
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the file into `dir` (a checkpoint directory about to be uploaded).
    pub fn write_into(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::write(dir.join(&self.name), &self.bytes)
    }
}

/// A step's scalars as the event file and MLflow hold them (the step log's names; `train/mfu` when the
/// device's peak is known, `system/gpu_memory_used_megabytes` on a GPU).
pub(crate) fn step_scalars(
    r: &dn_train::StepRecord,
    peak_flops: Option<f64>,
) -> Vec<(&'static str, f64)> {
    let seconds = r.step_seconds.max(1e-9);
    let mut values = vec![
        ("train/loss", r.loss),
        ("train/learning_rate", r.learning_rate),
        ("train/grad_norm", r.grad_norm),
        ("train/epoch", r.epoch as f64),
        ("train/num_tokens", r.num_tokens as f64),
        ("train/tokens_per_second", r.num_tokens as f64 / seconds),
        (
            "train/model_tflops_per_second",
            r.model_flops / seconds / 1e12,
        ),
    ];
    if let Some(peak) = peak_flops {
        values.push(("train/mfu", r.model_flops / seconds / peak));
    }
    if let Some(bytes) = r.device_memory_used {
        values.push(("system/gpu_memory_used_megabytes", bytes as f64 / 1048576.0));
    }
    values
}

/// Seconds since the epoch, as event files stamp their records.
pub(crate) fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This node's host name (`localhost` when it cannot be read), for the event file's name.
pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
    match ok && end > 0 {
        true => String::from_utf8_lossy(&buf[..end]).into_owned(),
        false => "localhost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_its_mask_as_tfrecord_defines_them() {
        // CRC-32C of "123456789" is 0xE3069283 (the Castagnoli check value).
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xe306_9283);
        // ((crc >> 15) | (crc << 17)) + 0xa282ead8, mod 2^32.
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }
}
