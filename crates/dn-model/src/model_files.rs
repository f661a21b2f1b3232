//! The small JSON files of a model directory (`config.json`, `model.safetensors.index.json`), read with a
//! size bound by everything that looks at a model (the trainer's loader, the hub fetch, the inventory), so
//! each reads them one way.

use std::path::Path;

use serde_json::Value;

/// The largest JSON file of a model read (a 400B model's shard index is a few hundred KiB).
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// The name of a sharded checkpoint's index.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";
/// Most weight shards an index may name.
pub const MAX_SHARDS: usize = 1024;

/// Parses the JSON file at `path`, refusing one over [`MAX_JSON_BYTES`]; errors name the file.
pub fn read_json(path: &Path) -> Result<Value, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > MAX_JSON_BYTES {
        return Err(format!(
            "{}: {size} bytes (at most {MAX_JSON_BYTES})",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// A model directory's `config.json` as dn-arch describes it (an architecture dn cannot train is an
/// error naming it), with the JSON it was read from.
pub fn read_model_config(dir: &Path) -> Result<(Value, dn_arch::ModelConfig), String> {
    let path = dir.join("config.json");
    let json = read_json(&path)?;
    let config = dn_arch::ModelConfig::from_json(&json, &path.display().to_string())
        .map_err(|e| e.to_string())?;
    Ok((json, config))
}

/// The distinct shard files a `model.safetensors.index.json` names, each a plain `.safetensors` file name
/// (no path: a shard outside the directory is refused), at most [`MAX_SHARDS`].
pub fn shard_names(index: &Path) -> Result<Vec<String>, String> {
    let parsed = read_json(index)?;
    let mut shards: Vec<String> = parsed["weight_map"]
        .as_object()
        .ok_or_else(|| format!("{}: no weight_map", index.display()))?
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    shards.sort();
    shards.dedup();
    if shards.len() > MAX_SHARDS {
        return Err(format!(
            "{}: names {} shards (at most {MAX_SHARDS})",
            index.display(),
            shards.len()
        ));
    }
    if let Some(bad) = shards
        .iter()
        .find(|s| s.contains(['/', '\\']) || s.starts_with('.') || !s.ends_with(".safetensors"))
    {
        return Err(format!(
            "{}: unexpected shard name {bad:?}",
            index.display()
        ));
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join(SHARD_INDEX);
        for bad in [
            "../outside.safetensors",
            "/etc/passwd",
            "a/b.safetensors",
            "x.bin",
        ] {
            std::fs::write(&index, format!(r#"{{"weight_map": {{"w": "{bad}"}}}}"#)).unwrap();
            assert!(
                shard_names(&index)
                    .unwrap_err()
                    .contains("unexpected shard name"),
                "{bad}"
            );
        }
        std::fs::write(
            &index,
            r#"{"weight_map": {"a": "m-2.safetensors", "b": "m-1.safetensors", "c": "m-2.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            shard_names(&index).unwrap(),
            ["m-1.safetensors", "m-2.safetensors"]
        );
    }
}
