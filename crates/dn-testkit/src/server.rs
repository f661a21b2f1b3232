//! An in-process `dn serve` API for tests (the `server` feature): SQLite and local storage in a temporary
//! directory, a catalog of one model (by default a tiny config-only Llama), listening on 127.0.0.1:0,
//! stopped when dropped.

use std::path::PathBuf;
use std::sync::Arc;

use dn_registry::{Registry, StorageConfig};
use dn_server::{AppState, Catalog, ServerLimits};
use dn_store::SqlStore;
use dn_types::SftDefaults;
use tokio::sync::watch;

/// A tiny Llama described by its config.json alone: enough for the catalog and validation, not to train.
pub const TINY_LLAMA_CONFIG: &str = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
 "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":256,
 "max_position_embeddings":512,"tie_word_embeddings":true}"#;

/// How to start an [`ApiServer`].
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The catalog's model (`None`: [`TINY_LLAMA_CONFIG`] in a directory of the server's own).
    pub model: Option<String>,
    /// Jobs only for the catalog's models.
    pub catalog_only: bool,
    pub max_upload_bytes: u64,
    pub limits: ServerLimits,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            model: None,
            catalog_only: false,
            max_upload_bytes: 10 << 20,
            limits: ServerLimits::default(),
        }
    }
}

pub struct ApiServer {
    pub url: String,
    pub store: Arc<SqlStore>,
    pub model: String,
    /// The server's temporary directory: `data/` holds the database and `data/storage/` the storage.
    pub dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
}

impl ApiServer {
    pub async fn start(options: ApiOptions) -> ApiServer {
        let dir = tempfile::tempdir().unwrap();
        let model = options.model.unwrap_or_else(|| {
            let model_dir = dir.path().join("tiny-llama");
            std::fs::create_dir_all(&model_dir).unwrap();
            std::fs::write(model_dir.join("config.json"), TINY_LLAMA_CONFIG).unwrap();
            model_dir.to_string_lossy().into_owned()
        });
        let data = dir.path().join("data");
        let store = Arc::new(SqlStore::open_data_dir(&data).await.unwrap());
        let storage = StorageConfig::Local {
            root: data.join("storage"),
        };
        let catalog = Catalog::load(std::slice::from_ref(&model)).unwrap();
        let state = AppState {
            store: store.clone(),
            registry: Registry::new(&storage, options.max_upload_bytes).unwrap(),
            catalog: Arc::new(catalog.catalog_only(options.catalog_only)),
            defaults: SftDefaults::default(),
            previewer: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(dn_server::serve_with_limits(
            listener,
            state,
            options.limits,
            async move {
                let _ = stopped.changed().await;
            },
        ));
        ApiServer {
            url,
            store,
            model,
            dir,
            stop,
        }
    }

    /// Where the database and storage live (`--data-dir` for a `dn` command on the same files).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The local storage's root.
    pub fn storage_dir(&self) -> PathBuf {
        self.data_dir().join("storage")
    }

    /// Changes when the server stops (for what runs beside it, a worker).
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
