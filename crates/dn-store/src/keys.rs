//! API keys: `dn_` + 40 random alphanumerics, stored as sha256 hex, each bound to one organization, with an
//! optional expiry, revocation, and the time of last use (updated at most once a minute per key). A key's
//! id is the first 16 hex digits of its hash: listed and revoked by it, never by the secret.

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::ApiKeys;
use crate::error::Result;
use crate::rows::{now_micros, to_time};
use crate::sql::SqlStore;
use async_trait::async_trait;

/// Characters of a key's id (a prefix of its hash).
const ID_LEN: usize = 16;
/// `last_used_at` is written only when older than this (a read per request, a write per minute).
const LAST_USED_RESOLUTION_MICROS: i64 = 60_000_000;

pub(crate) fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key as `dn keys list` shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub organization_id: String,
    /// The key's first characters (`dn_abcd`), to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn info(row: &sqlx::any::AnyRow) -> Result<ApiKeyInfo> {
    let time = |column: &str| -> Result<Option<DateTime<Utc>>> {
        Ok(row.try_get::<Option<i64>, _>(column)?.map(to_time))
    };
    let hash: String = row.try_get("key_hash")?;
    Ok(ApiKeyInfo {
        id: hash[..ID_LEN].to_owned(),
        organization_id: row.try_get("organization_id")?,
        prefix: row.try_get("prefix")?,
        created_at: to_time(row.try_get("created_at")?),
        last_used_at: time("last_used_at")?,
        expires_at: time("expires_at")?,
        revoked_at: time("revoked_at")?,
    })
}

#[async_trait]
impl ApiKeys for SqlStore {
    async fn create_expiring_api_key(
        &self,
        org: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let secret: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let key = format!("dn_{secret}");
        sqlx::query(
            "INSERT INTO api_keys (key_hash, organization_id, prefix, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash_key(&key))
        .bind(org)
        .bind(&key[..7])
        .bind(now_micros())
        .bind(expires_at.map(|t| t.timestamp_micros()))
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    /// The organization of a key that exists, is not revoked and has not expired.
    async fn organization_for_key(&self, key: &str) -> Result<Option<String>> {
        let hash = hash_key(key);
        let row = sqlx::query(
            "SELECT organization_id, expires_at, revoked_at, last_used_at FROM api_keys \
             WHERE key_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let now = now_micros();
        let expires_at: Option<i64> = row.try_get("expires_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        if revoked_at.is_some() || expires_at.is_some_and(|t| t <= now) {
            return Ok(None);
        }
        let last_used: Option<i64> = row.try_get("last_used_at")?;
        if last_used.is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MICROS) {
            // Best effort: a store that can be read but not written (a full disk) still authenticates.
            let touched = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE key_hash = $2")
                .bind(now)
                .bind(&hash)
                .execute(&self.pool)
                .await;
            if let Err(e) = touched {
                tracing::warn!("cannot record an API key's last use: {e}");
            }
        }
        Ok(Some(row.try_get("organization_id")?))
    }

    async fn count_api_keys(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The keys of `org`, oldest first.
    async fn list_api_keys(&self, org: &str) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query(
            "SELECT key_hash, organization_id, prefix, created_at, last_used_at, expires_at, revoked_at \
             FROM api_keys WHERE organization_id = $1 ORDER BY created_at, key_hash",
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(info).collect()
    }

    /// Revokes the key with this id (from then on it gets 401); `None` if there is no such key.
    async fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKeyInfo>> {
        if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let pattern = format!("{}%", id.to_ascii_lowercase());
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE key_hash LIKE $2 AND revoked_at IS NULL",
        )
        .bind(now_micros())
        .bind(&pattern)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(
            "SELECT key_hash, organization_id, prefix, created_at, last_used_at, expires_at, revoked_at \
             FROM api_keys WHERE key_hash LIKE $1",
        )
        .bind(&pattern)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(info).transpose()
    }
}
