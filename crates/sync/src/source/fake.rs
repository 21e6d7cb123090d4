//! An in-memory stream for tests: shards that can be written, split, merged, trimmed
//! and removed, so lineage and expiry are tested without a service (moto serves one
//! shard that never splits).

use super::{Change, ChangeKind, ChangeSource, Position, Read, ShardInfo};
use crate::error::SyncError;
use crossdock_core::item::Item;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Default)]
struct Shard {
    id: String,
    parents: Vec<String>,
    records: Vec<Change>,
    closed: bool,
    /// Records before this index were trimmed.
    trimmed: usize,
}

#[derive(Debug, Default)]
struct State {
    shards: Vec<Shard>,
    next_seq: u64,
    /// (shard, first sequence number) of every read that returned records.
    reads: Vec<(String, String)>,
    /// Reads that fail (retryable) before the next one succeeds.
    failing_reads: u32,
}

/// The fake stream; clones share it.
#[derive(Debug, Clone)]
pub struct FakeStream {
    state: Arc<Mutex<State>>,
    table: String,
}

impl FakeStream {
    /// A stream with one open shard `shard-0`.
    pub fn new(table: &str) -> FakeStream {
        let s = FakeStream { state: Arc::default(), table: table.into() };
        s.lock().shards.push(Shard { id: "shard-0".into(), ..Default::default() });
        s
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, shard: &str, kind: ChangeKind, item: Item, created_ms: i64) -> String {
        let mut st = self.lock();
        st.next_seq += 1;
        let sequence = format!("{:020}", st.next_seq);
        let sh = st.shards.iter_mut().find(|s| s.id == shard && !s.closed).unwrap_or_else(|| panic!("no open shard {shard}"));
        sh.records.push(Change { kind, item, sequence: sequence.clone(), created_ms: Some(created_ms) });
        sequence
    }

    /// Appends an upsert (new image `item`) to an open shard; returns its sequence number.
    pub fn upsert(&self, shard: &str, item: Item, created_ms: i64) -> String {
        self.push(shard, ChangeKind::Upsert, item, created_ms)
    }

    /// Appends a delete of the item with these key attributes.
    pub fn delete(&self, shard: &str, keys: Item, created_ms: i64) -> String {
        self.push(shard, ChangeKind::Delete, keys, created_ms)
    }

    /// Closes `shard` and opens two children of it; returns their ids.
    pub fn split(&self, shard: &str) -> (String, String) {
        let mut st = self.lock();
        let sh = st.shards.iter_mut().find(|s| s.id == shard).unwrap_or_else(|| panic!("no shard {shard}"));
        sh.closed = true;
        let (a, b) = (format!("{shard}.a"), format!("{shard}.b"));
        for id in [&a, &b] {
            st.shards.push(Shard { id: id.clone(), parents: vec![shard.into()], ..Default::default() });
        }
        (a, b)
    }

    /// Closes two shards and opens their merged child; returns its id.
    pub fn merge(&self, a: &str, b: &str) -> String {
        let mut st = self.lock();
        for sh in st.shards.iter_mut().filter(|s| s.id == a || s.id == b) {
            sh.closed = true;
        }
        let id = format!("{a}+{b}");
        st.shards.push(Shard { id: id.clone(), parents: vec![a.into(), b.into()], ..Default::default() });
        id
    }

    /// Drops the first `n` records of a shard, as retention does.
    pub fn trim(&self, shard: &str, n: usize) {
        let mut st = self.lock();
        let sh = st.shards.iter_mut().find(|s| s.id == shard).unwrap_or_else(|| panic!("no shard {shard}"));
        sh.trimmed = (sh.trimmed + n).min(sh.records.len());
    }

    /// Removes a shard from the stream, as retention does with old closed shards.
    pub fn remove_shard(&self, shard: &str) {
        self.lock().shards.retain(|s| s.id != shard);
    }

    /// The next `n` reads fail with a retryable error.
    pub fn fail_reads(&self, n: u32) {
        self.lock().failing_reads = n;
    }

    /// (shard, first sequence number) of every read that returned records, in order.
    pub fn reads(&self) -> Vec<(String, String)> {
        self.lock().reads.clone()
    }

    fn expired(&self, shard: &str, reason: &str) -> SyncError {
        SyncError::Expired { table: self.table.clone(), stream: "fake".into(), shard: shard.into(), reason: reason.into() }
    }
}

impl ChangeSource for FakeStream {
    fn stream(&self) -> &str {
        "fake"
    }

    fn kind(&self) -> &'static str {
        "fake"
    }

    fn retention(&self) -> Duration {
        Duration::from_secs(24 * 3600)
    }

    async fn shards(&self) -> Result<Vec<ShardInfo>, SyncError> {
        Ok(self.lock().shards.iter().map(|s| ShardInfo { id: s.id.clone(), parents: s.parents.clone() }).collect())
    }

    async fn iterator(&self, shard: &str, from: &Position) -> Result<String, SyncError> {
        let st = self.lock();
        let sh = st.shards.iter().find(|s| s.id == shard).ok_or_else(|| self.expired(shard, "shard not found"))?;
        let index = match from {
            Position::TrimHorizon => sh.trimmed,
            Position::After(seq) => {
                let after = sh.records.iter().position(|r| r.sequence.as_str() > seq.as_str()).unwrap_or(sh.records.len());
                if after < sh.trimmed {
                    return Err(self.expired(shard, "TrimmedDataAccessException: the records after the checkpoint were trimmed"));
                }
                after
            }
        };
        Ok(format!("{shard}#{index}"))
    }

    async fn read(&self, shard: &str, iterator: &str, limit: usize) -> Result<Read, SyncError> {
        let mut st = self.lock();
        if st.failing_reads > 0 {
            st.failing_reads -= 1;
            return Err(SyncError::Source {
                table: self.table.clone(),
                stream: "fake".into(),
                shard: Some(shard.into()),
                op: "GetRecords",
                message: "injected failure".into(),
                retryable: true,
            });
        }
        let index: usize = iterator.rsplit_once('#').and_then(|(_, i)| i.parse().ok()).unwrap_or(0);
        let sh = st.shards.iter().find(|s| s.id == shard).ok_or_else(|| self.expired(shard, "shard not found"))?;
        if index < sh.trimmed {
            return Err(self.expired(shard, "TrimmedDataAccessException"));
        }
        let end = (index + limit).min(sh.records.len());
        let changes = sh.records[index..end].to_vec();
        let at_tip = end == sh.records.len();
        let next = if at_tip && sh.closed { None } else { Some(format!("{shard}#{end}")) };
        if let Some(first) = changes.first() {
            let seq = first.sequence.clone();
            st.reads.push((shard.into(), seq));
        }
        Ok(Read { changes, next, at_tip })
    }
}
