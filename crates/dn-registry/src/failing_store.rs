//! An in-memory object store whose writes fail while told to, with the error an operator meets (a
//! refused connection, a full disk): for tests of what a failed upload leaves and reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

#[derive(Debug, Default)]
pub(crate) struct FailingStore {
    inner: InMemory,
    pub(crate) failing: Arc<AtomicBool>,
}

impl std::fmt::Display for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FailingStore")
    }
}

impl FailingStore {
    fn check(&self) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "FailingStore",
                source: "No space left on device (os error 28)".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FailingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.check()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.check()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.check()?;
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.check()?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    /// A storage that refuses writes: the worker's check says so, and the error counts as storage being
    /// away (not the job's fault); a read still works, and a missing object is no outage.
    #[tokio::test]
    async fn a_refused_write_is_storage_being_away_and_the_write_check_sees_it() {
        let store = Arc::new(FailingStore::default());
        let registry = Registry::with_store(store.clone());
        registry.check_writable().await.unwrap();
        store.failing.store(true, Ordering::SeqCst);
        let refused = registry.check_writable().await.unwrap_err();
        assert!(refused.is_unavailable(), "{refused}");
        assert!(refused.to_string().contains("No space left on device"));
        registry.check_reachable().await.unwrap();
        let missing = registry.dataset("acme", "nope", "1.0.0").await.unwrap_err();
        assert!(!missing.is_unavailable(), "{missing}");
        store.failing.store(false, Ordering::SeqCst);
        registry.check_writable().await.unwrap();
    }
}
