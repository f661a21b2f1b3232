//! Test backends: a fresh SQLite file, or a fresh database on the PostgreSQL server named by
//! `DN_TEST_DATABASE_URL` (started by scripts/test.sh). Without that variable the PostgreSQL half is
//! skipped, unless `DN_REQUIRE_POSTGRES=1` (set by the test script) makes that an error.

use std::time::Duration;

use dn_store::{NewJob, SqlStore};
use dn_types::{CapabilitySnapshot, DatasetRef};
use serde_json::json;

pub struct Backend {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("dn.db").display());
        Backend {
            url,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Option<Backend> {
        let admin_url = dn_testkit::postgres_url()?;
        let name = format!("dn_test_{}", uuid::Uuid::new_v4().simple());
        let url = SqlStore::create_postgres_database(&admin_url, &name)
            .await
            .unwrap();
        Some(Backend { url, _dir: None })
    }

    pub async fn store(&self) -> SqlStore {
        SqlStore::connect(&self.url).await.unwrap()
    }
}

/// Runs each named async test function against SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = $crate::common::Backend::sqlite().await;
                    super::$name(&backend).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(backend) = $crate::common::Backend::postgres().await else { return };
                    super::$name(&backend).await;
                }
            )*
        }
    };
}

/// The lease of claims that are meant to stay live.
pub const LEASE: Duration = Duration::from_secs(60);

/// A job of `org`/`ws` named `name`, with every optional field set.
pub fn new_job(org: &str, ws: &str, name: &str) -> NewJob {
    NewJob {
        organization_id: org.into(),
        workspace_id: ws.into(),
        name: Some(name.into()),
        model: "smollm2-135m".into(),
        project_ref: Some("proj".into()),
        run_ref: None,
        dataset_ref: Some(DatasetRef {
            name: "demos".into(),
            version: "0.1.0".into(),
        }),
        trajectory_dataset_refs: vec![],
        capability: CapabilitySnapshot {
            artifact_id: Some("sha256:abc".into()),
            name: "agent".into(),
            version: "1.0.0".into(),
            runtime_digest: None,
            organization_id: Some(org.into()),
            content_digest: Some("sha256:abc".into()),
            system_prompt_digest: Some("sha256:def".into()),
        },
        config: json!({"batch_size": 8}).as_object().unwrap().clone(),
        tags: vec!["t".into()],
    }
}

/// The first page of `org`'s jobs in workspace `main`.
#[allow(dead_code)] // not every test file lists jobs
pub fn filter(org: &str) -> dn_store::JobFilter {
    dn_store::JobFilter {
        organization_id: org.into(),
        workspace_id: "main".into(),
        status: None,
        backend: None,
        trainer_type: None,
        project_ref: None,
        page: 1,
        page_size: 20,
    }
}
