//! API keys: `dn_` + 40 random alphanumerics, stored as sha256 hex, each bound to one organization.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::error::Result;
use crate::rows::now_micros;
use crate::sql::SqlStore;

pub(crate) fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl SqlStore {
    pub(crate) async fn new_key(&self, org: &str) -> Result<String> {
        let secret: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let key = format!("dn_{secret}");
        sqlx::query(
            "INSERT INTO api_keys (key_hash, organization_id, prefix, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash_key(&key))
        .bind(org)
        .bind(&key[..7])
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    pub(crate) async fn key_org(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT organization_id FROM api_keys WHERE key_hash = $1")
            .bind(hash_key(key))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("organization_id")?),
            None => None,
        })
    }

    pub(crate) async fn key_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}
