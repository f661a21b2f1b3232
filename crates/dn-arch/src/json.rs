//! Typed reads of config.json keys, where `null` means absent (as transformers treats it) and a value of
//! the wrong type is an error naming the key.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The keys of one JSON object; `path` (e.g. `rope_parameters`) prefixes key names in errors.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
    file: &'a str,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, path: &'a str, file: &'a str) -> Self {
        Fields { map, path, file }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> Error {
        Error::new(
            self.file,
            format!("{} must be {expected} (got {got})", self.name(key)),
        )
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether the key is written at all (even as `null`, which disables some features).
    pub fn has_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn file(&self) -> &'a str {
        self.file
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    pub fn required_f64(&self, key: &str) -> Result<f64> {
        self.f64(key)?
            .ok_or_else(|| Error::new(self.file, format!("{} is missing", self.name(key))))
    }

    pub fn usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    /// A dimension: a positive integer, required.
    pub fn dim(&self, key: &str) -> Result<usize> {
        match self.usize(key)? {
            Some(n) if n > 0 => Ok(n),
            Some(_) => Err(Error::new(
                self.file,
                format!("{} must be at least 1", self.name(key)),
            )),
            None => Err(Error::new(
                self.file,
                format!("{} is missing", self.name(key)),
            )),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "true or false", other)),
        }
    }

    pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(other) => Err(self.wrong(key, "an object", other)),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| self.wrong(key, "a list of strings", v))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.wrong(key, "a list of strings", other)),
        }
    }
}

/// A required list of numbers.
pub(crate) fn f64_list(value: Option<&Value>, name: &str, file: &str) -> Result<Vec<f64>> {
    let Some(Value::Array(items)) = value else {
        return Err(Error::new(
            file,
            format!("{name} must be a list of numbers"),
        ));
    };
    items
        .iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| Error::new(file, format!("{name} must be a list of numbers")))
        })
        .collect()
}
