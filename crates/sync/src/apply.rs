//! One batch of changes → the target: keep the last change per key (stream order), then
//! upserts with `write_batch` and deletes with `delete_keys`, in calls within the
//! target's batch limit. Keys are distinct after the reduction, so the order between
//! the calls does not matter; the caller writes checkpoints only after this returns.

use crate::error::{SyncError, NEW_ATTRIBUTE_HINT};
use crate::events;
use crate::source::{Change, ChangeKind};
use crossdock_core::item::{to_line, Item};
use crossdock_core::retry::Policy;
use crossdock_load::schema::{Row, TableModel};
use crossdock_load::sink::Target;
use crossdock_load::LoadError;
use indexmap::IndexMap;

/// A change with the shard it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub shard: String,
    pub change: Change,
}

/// The key attributes of `item` (partition key, then sort key) as one comparable
/// string; `None` when one is missing.
pub fn key_of(model: &TableModel, item: &Item) -> Option<String> {
    let mut key = Item::new();
    for &i in &model.primary_key {
        let name = &model.columns[i].attribute;
        key.insert(name.clone(), item.get(name)?.clone());
    }
    Some(to_line(&key))
}

/// The changes that decide the end state of each key: per key the last in `changes`
/// (which is in stream order), or, with `newest_wins`, the one with the latest
/// creation time (ties: the later in the stream) — Kinesis may deliver a key's records
/// out of order or twice. Changes without their key attributes are an error.
pub fn reduce<'a>(table: &str, model: &TableModel, changes: &'a [Pending], newest_wins: bool) -> Result<Vec<(String, &'a Pending)>, SyncError> {
    let mut last: IndexMap<String, &Pending> = IndexMap::with_capacity(changes.len());
    for p in changes {
        let key = key_of(model, &p.change.item).ok_or_else(|| SyncError::Change {
            table: table.into(),
            shard: p.shard.clone(),
            sequence: p.change.sequence.clone(),
            reason: "the record lacks a key attribute of the table".into(),
            hint: NEW_ATTRIBUTE_HINT,
        })?;
        match last.get_mut(&key) {
            Some(prev) if newest_wins && p.change.created_ms < prev.change.created_ms => {}
            Some(prev) => *prev = p,
            None => {
                last.insert(key, p);
            }
        }
    }
    Ok(last.into_iter().collect())
}

/// Rows to upsert and key rows to delete for the reduced changes.
pub fn rows(table: &str, model: &TableModel, reduced: &[(String, &Pending)]) -> Result<(Vec<Row>, Vec<Row>), SyncError> {
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (_, p) in reduced {
        let bad = |reason: String| SyncError::Change {
            table: table.into(),
            shard: p.shard.clone(),
            sequence: p.change.sequence.clone(),
            reason,
            hint: NEW_ATTRIBUTE_HINT,
        };
        match p.change.kind {
            ChangeKind::Upsert => upserts.push(model.to_row(&p.change.item).map_err(bad)?),
            ChangeKind::Delete => {
                // Only the key cells are read; the image may carry more (Kinesis sends
                // the old image's attributes in Keys-only form anyway).
                let mut keys = Item::new();
                for &i in &model.primary_key {
                    let name = &model.columns[i].attribute;
                    if let Some(v) = p.change.item.get(name) {
                        keys.insert(name.clone(), v.clone());
                    }
                }
                deletes.push(model.into_row(keys).map_err(bad)?);
            }
        }
    }
    Ok((upserts, deletes))
}

/// Calls `f` until it succeeds, fails with a non-retryable error, or the attempts of
/// `Policy::SYNC_APPLY` are spent.
pub(crate) async fn with_retries<F, Fut>(table: &str, op: &'static str, mut f: F) -> Result<(), LoadError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), LoadError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && Policy::SYNC_APPLY.allows(attempt + 1) => {
                attempt += 1;
                events::retry(table, op, attempt, &e.to_string());
                tokio::time::sleep(Policy::SYNC_APPLY.delay(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A write bounded by the loader's default write timeout.
async fn within(model: &TableModel, op: &'static str, call: impl std::future::Future<Output = Result<(), LoadError>>) -> Result<(), LoadError> {
    crossdock_load::sink::within(crossdock_core::retry::TARGET_WRITE_TIMEOUT, model.target, op, &model.name, call).await
}

/// Writes the rows: upserts, then deletes, each in calls of at most `per_call` rows.
/// Returns only when all of it is durable in the target.
pub async fn write<T: Target>(table: &str, target: &T, model: &TableModel, upserts: &[Row], deletes: &[Row], per_call: usize) -> Result<(), SyncError> {
    let per_call = per_call.max(1);
    let wrap = |source| SyncError::Load { table: table.into(), source };
    for chunk in upserts.chunks(per_call) {
        with_retries(table, "write_batch", || within(model, "write batch", target.write_batch(model, chunk))).await.map_err(wrap)?;
    }
    for chunk in deletes.chunks(per_call) {
        with_retries(table, "delete_keys", || within(model, "delete keys", target.delete_keys(model, chunk))).await.map_err(wrap)?;
    }
    Ok(())
}
