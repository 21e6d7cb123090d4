//! Per-shard positions, `{export}/_sync/{shard}.json` next to the marker. A checkpoint
//! is written only after every change up to its sequence number is durable in the
//! target, so a restart (even after SIGKILL) reapplies at most the last batch, which is
//! harmless: upserts of whole new images and deletes by key.

use crate::columns::AddedColumns;
use crate::error::SyncError;
use crossdock_core::layout::{sync_checkpoint_key, sync_columns_key, sync_prefix, sync_shard_of, ExportId};
use crossdock_load::gcs::Gcs;
use crossdock_load::LoadError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// `_sync/{shard}.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub format_version: u32,
    /// `streams` or `kinesis`.
    pub source: String,
    /// The stream's ARN: checkpoints of another stream are refused, not reinterpreted.
    pub stream: String,
    pub shard: String,
    pub parents: Vec<String>,
    /// Last sequence number applied; `None` when the shard ended without a record.
    pub sequence_number: Option<String>,
    /// The shard is closed and every record of it is applied: its children may start.
    pub finished: bool,
    /// `ApproximateCreationDateTime` of the last applied change (RFC 3339).
    pub last_change_at: Option<String>,
    /// Changes of this shard applied so far (over all runs).
    pub applied: u64,
    pub written_at: String,
}

/// Where checkpoints live.
pub trait CheckpointStore: Send + Sync {
    /// Every checkpoint, by shard.
    fn load_all(&self) -> impl Future<Output = Result<BTreeMap<String, Checkpoint>, SyncError>> + Send;
    fn save(&self, cp: &Checkpoint) -> impl Future<Output = Result<(), SyncError>> + Send;
    /// The attributes the catch-up added columns for (empty when none).
    fn load_added(&self) -> impl Future<Output = Result<Vec<String>, SyncError>> + Send;
    /// Records them, all of them each time: written after the columns exist and before
    /// any row that uses them, so every reader of the target can widen its model.
    fn save_added(&self, attributes: &[String]) -> impl Future<Output = Result<(), SyncError>> + Send;
}

/// Checkpoints in GCS next to the export's marker.
#[derive(Debug, Clone)]
pub struct GcsCheckpoints {
    pub gcs: Gcs,
    pub export: ExportId,
}

impl GcsCheckpoints {
    fn load_err(&self, source: LoadError) -> SyncError {
        SyncError::Load { table: self.export.table.clone(), source }
    }
}

impl CheckpointStore for GcsCheckpoints {
    async fn load_all(&self) -> Result<BTreeMap<String, Checkpoint>, SyncError> {
        let mut out = BTreeMap::new();
        for key in self.gcs.list(&sync_prefix(&self.export)).await.map_err(|e| self.load_err(e))? {
            let Some(shard) = sync_shard_of(&self.export, &key) else { continue };
            let body = match self.gcs.read(&key).await {
                Ok(b) => b,
                Err(LoadError::NotFound { .. }) => continue,
                Err(e) => return Err(self.load_err(e)),
            };
            // A checkpoint that does not parse is an error, not a fresh start: starting
            // the shard over is harmless, but the file may be the only record that its
            // shard was not finished.
            let cp: Checkpoint = serde_json::from_slice(&body).map_err(|e| SyncError::Checkpoint {
                table: self.export.table.clone(),
                key: key.clone(),
                reason: e.to_string(),
            })?;
            if cp.shard != shard {
                return Err(SyncError::Checkpoint { table: self.export.table.clone(), key, reason: format!("it names shard {}", cp.shard) });
            }
            out.insert(shard, cp);
        }
        Ok(out)
    }

    async fn save(&self, cp: &Checkpoint) -> Result<(), SyncError> {
        let key = sync_checkpoint_key(&self.export, &cp.shard).map_err(|e| SyncError::Checkpoint {
            table: self.export.table.clone(),
            key: cp.shard.clone(),
            reason: e.to_string(),
        })?;
        self.write(&key, serde_json::to_vec_pretty(cp).unwrap_or_default()).await
    }

    async fn load_added(&self) -> Result<Vec<String>, SyncError> {
        let key = sync_columns_key(&self.export);
        let body = match self.gcs.read(&key).await {
            Ok(b) => b,
            Err(LoadError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.load_err(e)),
        };
        let added: AddedColumns =
            serde_json::from_slice(&body).map_err(|e| SyncError::Checkpoint { table: self.export.table.clone(), key, reason: e.to_string() })?;
        Ok(added.attributes)
    }

    async fn save_added(&self, attributes: &[String]) -> Result<(), SyncError> {
        let added = AddedColumns::new(attributes);
        self.write(&sync_columns_key(&self.export), serde_json::to_vec_pretty(&added).unwrap_or_default()).await
    }
}

impl GcsCheckpoints {
    /// Writes one small JSON object (the HTTP layer retries transient failures).
    async fn write(&self, key: &str, body: Vec<u8>) -> Result<(), SyncError> {
        self.gcs.write(key, body, "application/json").await.map_err(|e| self.load_err(e))
    }
}

/// Checkpoints in memory (tests); clones share them.
#[derive(Debug, Clone, Default)]
pub struct MemCheckpoints {
    pub saved: Arc<Mutex<BTreeMap<String, Checkpoint>>>,
    /// Every save, in order.
    pub log: Arc<Mutex<Vec<Checkpoint>>>,
    pub added: Arc<Mutex<Vec<String>>>,
}

impl MemCheckpoints {
    pub fn get(&self, shard: &str) -> Option<Checkpoint> {
        self.saved.lock().unwrap_or_else(|p| p.into_inner()).get(shard).cloned()
    }
}

impl CheckpointStore for MemCheckpoints {
    async fn load_all(&self) -> Result<BTreeMap<String, Checkpoint>, SyncError> {
        Ok(self.saved.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn save(&self, cp: &Checkpoint) -> Result<(), SyncError> {
        self.saved.lock().unwrap_or_else(|p| p.into_inner()).insert(cp.shard.clone(), cp.clone());
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(cp.clone());
        Ok(())
    }

    async fn load_added(&self) -> Result<Vec<String>, SyncError> {
        Ok(self.added.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn save_added(&self, attributes: &[String]) -> Result<(), SyncError> {
        *self.added.lock().unwrap_or_else(|p| p.into_inner()) = attributes.to_vec();
        Ok(())
    }
}
