//! What tests need from outside their process, found one way: the real test model
//! (scripts/fetch-test-model.sh), and the PostgreSQL, S3 and MLflow servers scripts/test.sh starts on
//! loopback.
//! Each is `None` where it is absent, so that `cargo test` alone skips what needs it, unless the test
//! script requires it (`DN_REQUIRE_TEST_MODEL`, `DN_REQUIRE_POSTGRES`, `DN_REQUIRE_S3`, `DN_REQUIRE_MLFLOW`
//! = 1), which turns
//! its absence into a failure: CI never passes by skipping. With the `server` feature, `server` starts
//! the API in-process as the server's and the CLI's tests use it.

use std::path::PathBuf;

#[cfg(feature = "server")]
pub mod server;

/// The SmolLM2-135M-Instruct Q4_1 GGUF: `DN_TEST_MODEL_GGUF`, else the workspace's `.cache`.
pub fn test_model() -> Option<PathBuf> {
    let path = std::env::var("DN_TEST_MODEL_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !required("DN_REQUIRE_TEST_MODEL"),
        "DN_REQUIRE_TEST_MODEL=1 but {} is missing (scripts/fetch-test-model.sh)",
        path.display()
    );
    eprintln!(
        "skipping: {} not found (scripts/fetch-test-model.sh)",
        path.display()
    );
    None
}

/// [`test_model`] as a string (for command lines and the APIs that take a model name).
pub fn test_model_name() -> Option<String> {
    test_model().map(|p| p.to_string_lossy().into_owned())
}

/// The admin URL of the PostgreSQL server scripts/test.sh started (`DN_TEST_DATABASE_URL`).
pub fn postgres_url() -> Option<String> {
    setting("DN_TEST_DATABASE_URL", "DN_REQUIRE_POSTGRES")
}

/// The S3-compatible server scripts/test.sh started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Server {
    /// `DN_TEST_S3_ENDPOINT`.
    pub endpoint: String,
    /// `DN_TEST_S3_BUCKET` (default `dn-test`).
    pub bucket: String,
}

pub fn s3_server() -> Option<S3Server> {
    let endpoint = setting("DN_TEST_S3_ENDPOINT", "DN_REQUIRE_S3")?;
    let bucket = std::env::var("DN_TEST_S3_BUCKET").unwrap_or_else(|_| "dn-test".into());
    Some(S3Server { endpoint, bucket })
}

/// The MLflow tracking server scripts/test.sh started (`DN_TEST_MLFLOW_URI`, serving artifacts).
pub fn mlflow_uri() -> Option<String> {
    setting("DN_TEST_MLFLOW_URI", "DN_REQUIRE_MLFLOW")
}

/// Whether a test may run with `what` (`available`): if not, it is skipped (`false`), unless `require`
/// is `1`, which fails it.
pub fn available(available: bool, what: &str, require: &str) -> bool {
    assert!(available || !required(require), "{require}=1 but {what}");
    if !available {
        eprintln!("skipping: {what}");
    }
    available
}

/// `var`, or `None` (skipped) unless `require` is `1`.
fn setting(var: &str, require: &str) -> Option<String> {
    if let Ok(value) = std::env::var(var) {
        return Some(value);
    }
    assert!(
        !required(require),
        "{require}=1 but {var} is not set (scripts/test.sh sets it)"
    );
    eprintln!("skipping: {var} is not set (scripts/test.sh sets it)");
    None
}

fn required(switch: &str) -> bool {
    std::env::var(switch).as_deref() == Ok("1")
}
