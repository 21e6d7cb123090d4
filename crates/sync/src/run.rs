//! The catch-up loop: read every shard (children only after their parents are
//! finished), gather changes into batches, apply each batch, then checkpoint the shards
//! it advanced; report lag; stop on shutdown, or once caught up with `until_lag`.

use crate::apply::{self, Pending};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::columns;
use crate::error::SyncError;
use crate::events;
use crate::source::{ChangeKind, ChangeSource, Position, ShardInfo};
use crossdock_load::schema::TableModel;
use crossdock_load::sink::Target;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// Tunables of a sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// A batch closes at this many change records…
    pub max_changes: usize,
    /// …or this long after its first record, whichever comes first (and as soon as every
    /// shard is read to its tip, so a caught-up sync applies at once).
    pub max_wait: Duration,
    /// Pause between polls when every shard is at its tip.
    pub poll_interval: Duration,
    /// Records per read call (DynamoDB Streams and Kinesis allow up to 1000 / 10000).
    pub read_limit: usize,
    /// Stop once every shard stayed under this lag for `hold` and nothing is unread.
    pub until_lag: Option<Duration>,
    pub hold: Duration,
    /// Give up on `until_lag` after this long.
    pub until_timeout: Duration,
    /// How often the shard list is read again (new shards after splits and rollovers).
    pub shard_refresh: Duration,
    /// When the export started: on a first run (no checkpoint yet) it must be within the
    /// stream's retention, or the changes made just after it may be gone.
    pub export_started_ms: Option<i64>,
    /// Within a batch, keep per key the change created last rather than the last read
    /// (Kinesis may deliver a key's records out of order or twice).
    pub newest_wins: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            max_changes: 10_000,
            max_wait: Duration::from_secs(5),
            poll_interval: Duration::from_millis(500),
            read_limit: 1000,
            until_lag: None,
            hold: Duration::from_secs(3),
            until_timeout: Duration::from_secs(3600),
            shard_refresh: Duration::from_secs(10),
            export_started_ms: None,
            newest_wins: false,
        }
    }
}

/// One shard in a status line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardStatus {
    pub shard: String,
    /// `reading`, `waiting` (for a parent) or `finished`.
    pub state: &'static str,
    /// Milliseconds; 0 when caught up, `None` before anything is known.
    pub lag_ms: Option<u64>,
    /// Changes applied from this shard (over all runs).
    pub applied: u64,
    pub sequence_number: Option<String>,
}

/// Where the sync stands (the `--output json` status line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub table: String,
    pub stream: String,
    /// The largest lag of the unfinished shards; `None` while one is unknown.
    pub lag_ms: Option<u64>,
    /// Every shard is read to its tip and everything read is applied.
    pub caught_up: bool,
    pub records: u64,
    pub upserts: u64,
    pub deletes: u64,
    pub batches: u64,
    pub shards: Vec<ShardStatus>,
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `until_lag` reached.
    CaughtUp,
    /// Shutdown requested; records read but not applied are read again on restart.
    Interrupted,
}

/// The final status and outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub outcome: Outcome,
    #[serde(flatten)]
    pub status: Status,
}

#[derive(Debug, Default)]
struct Shard {
    info: Option<ShardInfo>,
    /// Last checkpoint saved.
    saved: Option<Checkpoint>,
    iterator: Option<String>,
    started: bool,
    /// Read to its end (closed shard).
    ended: bool,
    /// Ended, applied and checkpointed as finished.
    finished: bool,
    at_tip: bool,
    /// The last read returned fewer records than asked for: what the shard had is read,
    /// so the batch may close (a heuristic for batching only; `at_tip` decides "caught up").
    drained: bool,
    /// Last sequence number read (where a new iterator starts after expiry).
    read_pos: Option<String>,
    pending: usize,
    pending_last: Option<(String, Option<i64>)>,
    first_pending_created: Option<i64>,
    applied_created: Option<i64>,
    failures: u32,
}

impl Shard {
    fn parents(&self) -> &[String] {
        self.info.as_ref().map(|i| i.parents.as_slice()).unwrap_or_default()
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok().and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
}

fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

struct Sync<'a, S, T, C> {
    table: String,
    source: &'a S,
    target: &'a T,
    /// The loaded table's model, widened by the attributes first seen in the stream.
    model: TableModel,
    /// Those attributes, in the order their columns were added.
    added: Vec<String>,
    store: &'a C,
    opts: &'a SyncOptions,
    per_call: usize,
    shards: BTreeMap<String, Shard>,
    /// No checkpoint existed when this run started.
    first_run: bool,
    /// Shards of the listing this run started with.
    initial: std::collections::BTreeSet<String>,
    buffer: Vec<Pending>,
    batch_started: Option<Instant>,
    records: u64,
    upserts: u64,
    deletes: u64,
    batches: u64,
    /// With `newest_wins`: creation time of the last change applied per key.
    newest: std::collections::HashMap<String, i64>,
}

/// Keys whose last applied creation time is remembered (with `newest_wins`).
const NEWEST_KEYS: usize = 1_000_000;

impl<'a, S: ChangeSource, T: Target, C: CheckpointStore> Sync<'a, S, T, C> {
    fn expired(&self, shard: &str, reason: impl Into<String>) -> SyncError {
        SyncError::Expired { table: self.table.clone(), stream: self.source.stream().into(), shard: shard.into(), reason: reason.into() }
    }

    async fn refresh_shards(&mut self) -> Result<(), SyncError> {
        let listed = self.source.shards().await?;
        for info in listed {
            let s = self.shards.entry(info.id.clone()).or_default();
            s.info = Some(info);
        }
        Ok(())
    }

    /// A shard may be read once each parent is finished, or absent (trimmed away before
    /// this sync ever saw it: only acceptable on a first run, checked at start).
    fn eligible(&self, id: &str) -> bool {
        self.shards.get(id).is_some_and(|s| !s.finished && s.info.is_some() && s.parents().iter().all(|p| self.shards.get(p).is_none_or(|ps| ps.finished)))
    }

    async fn start(&mut self, id: &str) -> Result<(), SyncError> {
        let (from, parents_missing) = {
            let s = &self.shards[id];
            let from = match s.saved.as_ref().and_then(|c| c.sequence_number.clone()) {
                Some(seq) => Position::After(seq),
                None => Position::TrimHorizon,
            };
            let missing: Vec<String> = s.parents().iter().filter(|p| !self.shards.contains_key(*p)).cloned().collect();
            (from, missing)
        };
        // A parent that vanished unread is fine when this is the first sync of the export
        // (its records are older than the retention, so older than the export); later it
        // means changes were never applied.
        let fresh = self.shards[id].saved.is_none();
        if fresh && !parents_missing.is_empty() && !(self.first_run && self.initial.contains(id)) {
            return Err(self.expired(id, format!("its parent shard {} is gone from the stream and was never read", parents_missing.join(", "))));
        }
        let it = self.source.iterator(id, &from).await?;
        events::shard_started(
            &self.table,
            id,
            match &from {
                Position::TrimHorizon => "TRIM_HORIZON",
                Position::After(_) => "checkpoint",
            },
        );
        let s = self.shards.get_mut(id).expect("shard present");
        s.iterator = Some(it);
        s.started = true;
        if let Position::After(seq) = from {
            s.read_pos = Some(seq);
        }
        Ok(())
    }

    /// One read of every readable shard; returns whether anything was read.
    async fn read_round(&mut self) -> Result<bool, SyncError> {
        let ids: Vec<String> = self.shards.keys().cloned().collect();
        let mut any = false;
        for id in ids {
            if !self.eligible(&id) || self.shards[&id].ended {
                continue;
            }
            let room = self.opts.max_changes.saturating_sub(self.buffer.len());
            if room == 0 {
                break;
            }
            if !self.shards[&id].started || self.shards[&id].iterator.is_none() {
                self.start(&id).await?;
            }
            let Some(it) = self.shards[&id].iterator.clone() else { continue };
            let asked = room.min(self.opts.read_limit);
            match self.source.read(&id, &it, asked).await {
                Ok(read) => {
                    let s = self.shards.get_mut(&id).expect("shard present");
                    s.failures = 0;
                    s.at_tip = read.at_tip;
                    s.drained = read.at_tip || read.changes.len() < asked;
                    s.ended = read.next.is_none();
                    s.iterator = read.next;
                    if read.changes.is_empty() {
                        continue;
                    }
                    any = true;
                    events::records_read(&self.table, &id, read.changes.len());
                    self.records += read.changes.len() as u64;
                    if self.batch_started.is_none() {
                        self.batch_started = Some(Instant::now());
                    }
                    for change in read.changes {
                        s.pending += 1;
                        if s.first_pending_created.is_none() {
                            s.first_pending_created = change.created_ms;
                        }
                        s.pending_last = Some((change.sequence.clone(), change.created_ms));
                        s.read_pos = Some(change.sequence.clone());
                        self.buffer.push(Pending { shard: id.clone(), change });
                    }
                }
                Err(SyncError::IteratorExpired { .. }) => {
                    events::iterator_renewed(&self.table, &id);
                    let from = match self.shards[&id].read_pos.clone() {
                        Some(seq) => Position::After(seq),
                        None => Position::TrimHorizon,
                    };
                    let it = self.source.iterator(&id, &from).await?;
                    self.shards.get_mut(&id).expect("shard present").iterator = Some(it);
                }
                Err(e) if e.is_retryable() => {
                    let s = self.shards.get_mut(&id).expect("shard present");
                    s.failures += 1;
                    let policy = crossdock_core::retry::Policy::READ_PAGE;
                    if !policy.allows(s.failures) {
                        return Err(e);
                    }
                    events::retry(&self.table, "read", s.failures, &e.to_string());
                    let wait = policy.delay(s.failures);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(any)
    }

    /// Shards read to their end whose finish is not checkpointed yet.
    fn unfinished_ends(&self) -> bool {
        self.shards.values().any(|s| s.ended && !s.finished)
    }

    /// Gives each attribute of the batch's new images that has no column one (see
    /// [`crate::columns`]): the column first, then the record of it, then the rows.
    async fn add_new_columns(&mut self, reduced: &[(String, &Pending)]) -> Result<(), SyncError> {
        let mut new: Vec<String> = Vec::new();
        for (_, p) in reduced.iter().filter(|(_, p)| p.change.kind == ChangeKind::Upsert) {
            for a in self.model.unknown_attributes(&p.change.item) {
                if !new.iter().any(|n| n == a) {
                    new.push(a.to_string());
                }
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let columns = columns::widen(&mut self.model, &new)?;
        let (table, target, model) = (&self.table, self.target, &self.model);
        apply::with_retries(table, "add_columns", || target.add_columns(model, &columns))
            .await
            .map_err(|source| SyncError::Load { table: table.clone(), source })?;
        self.added.extend(new.iter().cloned());
        self.store.save_added(&self.added).await?;
        self.per_call = self.target.batch_limits(&self.model).max;
        events::columns_added(&self.table, &new);
        Ok(())
    }

    /// Applies the buffer, then checkpoints every shard it advanced (and every shard
    /// read to its end) — only after the target has it all.
    async fn flush(&mut self) -> Result<(), SyncError> {
        let began = Instant::now();
        let batch = std::mem::take(&mut self.buffer);
        self.batch_started = None;
        let mut reduced = apply::reduce(&self.table, &self.model, &batch, self.opts.newest_wins)?;
        if self.opts.newest_wins {
            // A record older than one already applied for its key is a late duplicate or
            // out of order (Kinesis): applying it would put an older image back.
            reduced.retain(|(key, p)| match (self.newest.get(key), p.change.created_ms) {
                (Some(&applied), Some(created)) => created >= applied,
                _ => true,
            });
        }
        self.add_new_columns(&reduced).await?;
        let (upserts, deletes) = apply::rows(&self.table, &self.model, &reduced)?;
        apply::write(&self.table, self.target, &self.model, &upserts, &deletes, self.per_call).await?;
        if self.opts.newest_wins {
            if self.newest.len() + reduced.len() > NEWEST_KEYS {
                // Bounded memory: forget and start over (documented limit).
                self.newest.clear();
            }
            for (key, p) in &reduced {
                if let Some(c) = p.change.created_ms {
                    self.newest.insert(key.clone(), c);
                }
            }
        }
        let now = crossdock_core::stamp::now_rfc3339();
        let mut saves = Vec::new();
        for (id, s) in &self.shards {
            // Nothing applied here, and no end to record.
            let end_to_record = s.ended && !s.finished;
            if s.pending == 0 && !end_to_record {
                continue;
            }
            let prev = s.saved.as_ref();
            let (sequence_number, last_change_at) = match &s.pending_last {
                Some((seq, created)) => (Some(seq.clone()), created.and_then(rfc3339_ms)),
                None => (prev.and_then(|c| c.sequence_number.clone()), prev.and_then(|c| c.last_change_at.clone())),
            };
            saves.push(Checkpoint {
                format_version: 1,
                source: self.source.kind().into(),
                stream: self.source.stream().into(),
                shard: id.clone(),
                parents: s.parents().to_vec(),
                sequence_number,
                finished: s.ended,
                last_change_at,
                applied: prev.map_or(0, |c| c.applied) + s.pending as u64,
                written_at: now.clone(),
            });
        }
        let results = futures::future::join_all(saves.iter().map(|cp| self.store.save(cp))).await;
        for r in results {
            r?;
        }
        for cp in saves {
            events::checkpoint_written(&self.table, &cp.shard, cp.sequence_number.as_deref(), cp.finished);
            let s = self.shards.get_mut(&cp.shard).expect("shard present");
            if let Some((_, created)) = s.pending_last.take() {
                s.applied_created = created.or(s.applied_created);
            }
            s.pending = 0;
            s.first_pending_created = None;
            if cp.finished {
                s.finished = true;
                events::shard_finished(&self.table, &cp.shard);
            }
            s.saved = Some(cp);
        }
        self.upserts += upserts.len() as u64;
        self.deletes += deletes.len() as u64;
        if !batch.is_empty() {
            self.batches += 1;
            events::batch_applied(&self.table, batch.len(), upserts.len(), deletes.len(), began.elapsed());
        }
        Ok(())
    }

    fn shard_lag(&self, id: &str, s: &Shard, now: i64) -> Option<u64> {
        if !self.eligible(id) {
            return None;
        }
        if s.pending == 0 && s.at_tip {
            return Some(0);
        }
        // The target holds every change before the oldest unapplied one.
        let since = if s.pending > 0 { s.first_pending_created.or(s.applied_created)? } else { s.applied_created? };
        Some(now.saturating_sub(since).max(0) as u64)
    }

    fn status(&self) -> Status {
        let now = now_ms();
        let mut shards = Vec::new();
        let mut lag: Option<u64> = Some(0);
        for (id, s) in &self.shards {
            if s.info.is_none() && s.finished {
                continue;
            }
            let state = if s.finished {
                "finished"
            } else if self.eligible(id) {
                "reading"
            } else {
                "waiting"
            };
            let l = if s.finished { Some(0) } else { self.shard_lag(id, s, now) };
            if !s.finished {
                lag = match (lag, l) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                events::lag(&self.table, id, Duration::from_millis(l.unwrap_or(0)));
            }
            shards.push(ShardStatus {
                shard: id.clone(),
                state,
                lag_ms: l,
                applied: s.saved.as_ref().map_or(0, |c| c.applied),
                sequence_number: s.saved.as_ref().and_then(|c| c.sequence_number.clone()),
            });
        }
        let caught_up = self.buffer.is_empty()
            && !self.unfinished_ends()
            && self.shards.iter().filter(|(_, s)| !s.finished && s.info.is_some()).all(|(id, s)| self.eligible(id) && s.at_tip);
        if let Some(l) = lag {
            events::max_lag(&self.table, Duration::from_millis(l));
        }
        Status {
            table: self.table.clone(),
            stream: self.source.stream().into(),
            lag_ms: lag,
            caught_up,
            records: self.records,
            upserts: self.upserts,
            deletes: self.deletes,
            batches: self.batches,
            shards,
        }
    }
}

/// Catches `target` up with `source` from the checkpoints in `store`, until `shutdown`
/// resolves or (with `until_lag`) the lag stays under it. `on_status` gets the status
/// after every batch and every idle poll.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: ChangeSource, T: Target, C: CheckpointStore>(
    source: &S,
    target: &T,
    model: &TableModel,
    store: &C,
    opts: &SyncOptions,
    on_status: &mut (dyn FnMut(&Status) + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, SyncError> {
    let table = model.source_table.clone();
    let result = run_inner(&table, source, target, model, store, opts, on_status, shutdown).await;
    if let Err(e) = &result {
        let kind = match e {
            SyncError::Expired { .. } => "expired",
            SyncError::Change { .. } => "change",
            SyncError::Stream { .. } => "stream",
            SyncError::LagNotReached { .. } => "lag",
            SyncError::Load { .. } => "target",
            _ => "other",
        };
        events::failed(&table, kind, &e.to_string());
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_inner<S: ChangeSource, T: Target, C: CheckpointStore>(
    table: &str,
    source: &S,
    target: &T,
    model: &TableModel,
    store: &C,
    opts: &SyncOptions,
    on_status: &mut (dyn FnMut(&Status) + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<Summary, SyncError> {
    tokio::pin!(shutdown);
    let checkpoints = store.load_all().await?;
    let added = store.load_added().await?;
    let mut model = model.clone();
    columns::widen(&mut model, &added)?;
    let mut sync = Sync {
        table: table.into(),
        source,
        target,
        per_call: target.batch_limits(&model).max,
        model,
        added,
        store,
        opts,
        shards: BTreeMap::new(),
        first_run: checkpoints.is_empty(),
        initial: Default::default(),
        buffer: Vec::new(),
        batch_started: None,
        records: 0,
        upserts: 0,
        deletes: 0,
        batches: 0,
        newest: Default::default(),
    };
    for (id, cp) in &checkpoints {
        if cp.stream != source.stream() {
            return Err(sync.expired(
                id,
                format!(
                    "its checkpoint was written for stream {}, but the table's stream is now {} (was the stream disabled and enabled again?)",
                    cp.stream,
                    source.stream()
                ),
            ));
        }
        let s = sync.shards.entry(id.clone()).or_default();
        s.finished = cp.finished;
        s.applied_created = cp.last_change_at.as_deref().and_then(parse_rfc3339_ms);
        s.saved = Some(cp.clone());
    }
    sync.refresh_shards().await?;
    sync.initial = sync.shards.iter().filter(|(_, s)| s.info.is_some()).map(|(id, _)| id.clone()).collect();
    for (id, s) in &sync.shards {
        if s.info.is_none() && !s.finished {
            return Err(sync.expired(id, "the shard of this checkpoint is no longer in the stream (older than its retention)"));
        }
    }
    if sync.first_run {
        if let Some(started) = opts.export_started_ms {
            let age = Duration::from_millis(now_ms().saturating_sub(started).max(0) as u64);
            if age > source.retention() {
                return Err(sync.expired(
                    "*",
                    format!(
                        "no checkpoint yet and the export started {} h ago, longer than the stream keeps records ({} h): the changes made just after it may be trimmed",
                        age.as_secs() / 3600,
                        source.retention().as_secs() / 3600
                    ),
                ));
            }
        }
    }
    events::started(table, source.stream(), sync.initial.len(), checkpoints.len());
    let started = Instant::now();
    let mut last_refresh = Instant::now();
    let mut under_since: Option<Instant> = None;
    loop {
        if futures::poll!(shutdown.as_mut()).is_ready() {
            events::interrupted(table);
            return Ok(Summary { outcome: Outcome::Interrupted, status: sync.status() });
        }
        if last_refresh.elapsed() >= opts.shard_refresh || sync.unfinished_ends() && sync.buffer.is_empty() {
            sync.refresh_shards().await?;
            last_refresh = Instant::now();
        }
        let read_any = sync.read_round().await?;
        let readable: Vec<&String> = sync.shards.keys().filter(|id| sync.eligible(id) && !sync.shards[*id].ended).collect();
        // Under a steady write rate a shard is rarely empty at a read; a batch closes once
        // every shard returned less than a full page, so the lag stays near one read.
        let all_drained = readable.iter().all(|id| sync.shards[*id].drained);
        let full = sync.buffer.len() >= opts.max_changes;
        let old = sync.batch_started.is_some_and(|t| t.elapsed() >= opts.max_wait);
        let has_work = !sync.buffer.is_empty() || sync.unfinished_ends();
        if full || old || (has_work && (all_drained || !read_any)) {
            sync.flush().await?;
            if sync.shards.values().any(|s| s.finished && s.info.is_some()) {
                // Children of a finished shard may be listed already; read them at once.
                sync.refresh_shards().await?;
                last_refresh = Instant::now();
            }
        }
        let status = sync.status();
        on_status(&status);
        if let Some(limit) = opts.until_lag {
            let under = status.lag_ms.is_some_and(|l| l < limit.as_millis() as u64);
            if under {
                let since = *under_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= opts.hold && status.caught_up {
                    events::caught_up(table, status.lag_ms.unwrap_or(0), since.elapsed());
                    return Ok(Summary { outcome: Outcome::CaughtUp, status });
                }
            } else {
                under_since = None;
            }
            if started.elapsed() > opts.until_timeout {
                let held = under_since.map_or(Duration::ZERO, |t| t.elapsed());
                let worst = if under {
                    format!(
                        "it was under the limit for {} ms of the --hold {} ms, with records still unread or unapplied",
                        held.as_millis(),
                        opts.hold.as_millis()
                    )
                } else {
                    status
                        .shards
                        .iter()
                        .filter(|s| s.state != "finished")
                        .max_by_key(|s| s.lag_ms.unwrap_or(u64::MAX))
                        .map(|s| match (s.state, s.lag_ms) {
                            ("waiting", _) => format!("shard {} is still waiting for its parent", s.shard),
                            (_, Some(l)) => format!("shard {} is {l} ms behind", s.shard),
                            (_, None) => format!("shard {} has no lag yet", s.shard),
                        })
                        .unwrap_or_else(|| "no shard to read".into())
                };
                return Err(SyncError::LagNotReached {
                    table: table.into(),
                    target_ms: limit.as_millis() as u64,
                    waited_s: started.elapsed().as_secs(),
                    reason: worst,
                });
            }
        }
        if !read_any {
            let waiting_for_batch = sync.batch_started.map(|t| opts.max_wait.saturating_sub(t.elapsed()));
            let pause = waiting_for_batch.map_or(opts.poll_interval, |w| w.min(opts.poll_interval));
            tokio::select! {
                _ = &mut shutdown => {
                    events::interrupted(table);
                    return Ok(Summary { outcome: Outcome::Interrupted, status: sync.status() });
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
