//! Completion: after each durable copy, decide whether the table export is complete in
//! GCS, and if so write `_SUCCESS` once (create-only, `ifGenerationMatch=0`).
//!
//! The check runs after every copied file, so its cost must not grow with the table:
//! a relay keeps, per export, what it has already seen (the schema, each parsed
//! manifest, each part found with its relayed size) and probes only what it has not
//! seen, in order, stopping at the first object that is not there yet. Each object is
//! found once per relay process, plus one failed probe per check: about two GCS calls
//! per copied file for one relay (each relay of a fleet finds the others' copies once
//! too). Only when everything is seen does it run the authoritative rule,
//! [`crossdock_core::marker::check_complete`], on one listing of the data, once per
//! export.

use crate::error::RelayError;
use crate::gcs::{self, Created, Gcs, Provenance};
use crossdock_core::layout::{DumpFile, ExportId};
use crossdock_core::manifest::SegmentManifest;
use crossdock_core::marker::{check_complete, Completeness, StoredObject, SuccessMarker};
use crossdock_core::schema::TableSchema;
use crossdock_core::Codec;
use gcloud_storage::http::objects::Object;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The result of one completion check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkOutcome {
    /// `_SUCCESS` was already there.
    AlreadyMarked,
    /// Not complete yet; `missing` is the number of files found missing (at least 1,
    /// or 0 when the schema or a manifest is what is missing).
    Incomplete { missing: usize },
    /// This relay wrote `_SUCCESS`.
    Written { files: u64, items: u64 },
    /// Another relay wrote it between our check and our write.
    LostRace,
    /// A check of this export was already running in this process: it looks again,
    /// for this file too, before it lets go.
    Deferred,
}

/// The destination bucket, as completion reads and writes it.
struct Store<'a> {
    gcs: &'a Gcs,
    bucket: &'a str,
}

impl Store<'_> {
    /// The object's resource (size, metadata), or `None`.
    async fn get(&self, name: &str) -> Result<Option<Object>, RelayError> {
        self.gcs.get(self.bucket, name).await
    }
    async fn download(&self, name: &str) -> Result<Option<Vec<u8>>, RelayError> {
        self.gcs.download(self.bucket, name).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Object>, RelayError> {
        self.gcs.list(self.bucket, prefix).await
    }
    async fn create_json(&self, name: &str, body: Vec<u8>) -> Result<Created, RelayError> {
        self.gcs.create_json(self.bucket, name, body).await
    }
}

/// What one relay process has seen of each export it copies files of.
#[derive(Debug, Default)]
pub struct Completion {
    /// By destination bucket and export directory.
    exports: Mutex<HashMap<(String, String), Arc<Looks>>>,
}

/// One look at an export at a time in this process, and none waited for: a copy that
/// finds a look running leaves its file to it — the running look goes round again
/// before it lets go — instead of queueing behind it. A probe that meets a throttled
/// or slow GCS would otherwise hold up every copy of the table in the process.
#[derive(Debug, Default)]
struct Looks {
    seen: tokio::sync::Mutex<Seen>,
    /// A file landed since the running look began.
    pending: std::sync::atomic::AtomicBool,
}

/// One look at an export.
trait Look {
    fn look(&mut self, seen: &mut Seen) -> impl std::future::Future<Output = Result<MarkOutcome, RelayError>> + Send;
}

/// The look a copy makes: probe what is new, and mark the export once complete.
struct Probe<'a> {
    store: &'a Store<'a>,
    export: &'a ExportId,
    codec: Codec,
    written_by: &'a str,
}

impl Look for Probe<'_> {
    async fn look(&mut self, seen: &mut Seen) -> Result<MarkOutcome, RelayError> {
        let (store, bucket, export, codec) = (self.store, self.store.bucket, self.export, self.codec);
        if seen.marked {
            return Ok(MarkOutcome::AlreadyMarked);
        }
        let mut listing = None;
        if let Some(missing) = probe(store, bucket, export, codec, seen, &mut listing).await? {
            return Ok(MarkOutcome::Incomplete { missing });
        }
        let outcome = mark(store, bucket, export, codec, self.written_by, seen, listing).await?;
        if !matches!(outcome, MarkOutcome::Incomplete { .. }) {
            // Done with this export: keep only the fact.
            *seen = Seen { marked: true, ..Seen::default() };
        }
        Ok(outcome)
    }
}

impl Looks {
    async fn run(&self, look: &mut impl Look) -> Result<MarkOutcome, RelayError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.pending.store(true, SeqCst);
        let mut outcome = MarkOutcome::Deferred;
        loop {
            let Ok(mut seen) = self.seen.try_lock() else { return Ok(outcome) };
            while self.pending.swap(false, SeqCst) {
                outcome = match look.look(&mut seen).await {
                    Ok(o) => o,
                    Err(e) => {
                        // The next copy to arrive looks again; this one's message is retried.
                        self.pending.store(true, SeqCst);
                        return Err(e);
                    }
                };
                if seen.marked {
                    return Ok(outcome);
                }
            }
            drop(seen);
            // A file that landed between the last look and the unlock found the lock
            // taken: look again for it unless someone else has the lock by now.
            if !self.pending.load(SeqCst) {
                return Ok(outcome);
            }
        }
    }
}

/// What was found, in probing order: the manifests of segments `0..manifests.len()`,
/// then the parts before `next_part` (manifest index, part index).
#[derive(Debug, Default)]
struct Seen {
    marked: bool,
    schema: Option<TableSchema>,
    manifests: Vec<SegmentManifest>,
    next_part: (usize, usize),
}

impl Completion {
    /// Checks the export `export` in `bucket` and writes its marker when complete.
    pub async fn try_mark(&self, gcs: &Gcs, bucket: &str, export: &ExportId, codec: Codec, written_by: &str) -> Result<MarkOutcome, RelayError> {
        self.check(&Store { gcs, bucket }, export, codec, written_by).await
    }

    async fn check(&self, store: &Store<'_>, export: &ExportId, codec: Codec, written_by: &str) -> Result<MarkOutcome, RelayError> {
        let bucket = store.bucket;
        let looks = {
            let mut exports = self.exports.lock().unwrap_or_else(|p| p.into_inner());
            exports.entry((bucket.to_string(), export.dir())).or_default().clone()
        };
        looks.run(&mut Probe { store, export, codec, written_by }).await
    }
}

/// Finds, in order, what this process has not seen yet; `Some(missing)` at the first
/// object that is not there.
/// A walk's listing of the data is left in `listing`, for [`mark`] to check instead of
/// listing again.
async fn probe(
    store: &Store<'_>,
    bucket: &str,
    export: &ExportId,
    codec: Codec,
    seen: &mut Seen,
    listing: &mut Option<HashMap<String, Object>>,
) -> Result<Option<usize>, RelayError> {
    let schema = match &seen.schema {
        Some(s) => s,
        None => {
            let key = export.gcs_key(&DumpFile::Schema, codec);
            let Some(bytes) = store.download(&key).await? else { return Ok(Some(0)) };
            seen.schema.insert(parse(bucket, &key, "schema", &bytes)?)
        }
    };
    let total = schema.total_segments;
    while (seen.manifests.len() as u32) < total {
        let segment = seen.manifests.len() as u32;
        let key = export.gcs_key(&DumpFile::Manifest { segment, total }, codec);
        let Some(bytes) = store.download(&key).await? else { return Ok(Some(0)) };
        seen.manifests.push(parse(bucket, &key, "segment manifest", &bytes)?);
    }
    let dir = export.dir();
    // Parts are looked at one at a time while they keep turning up missing (a copy's
    // look usually finds its own part and stops at the next). Once a look has found
    // `WALK_AFTER` in a row — a walk over parts that landed while an earlier one was
    // missing, as at the end of a table — one listing of the data answers for the
    // rest of the walk: a call per 1,000 parts instead of a round trip per part.
    let mut in_a_row = 0;
    while let Some(m) = seen.manifests.get(seen.next_part.0) {
        let Some(p) = m.parts.get(seen.next_part.1) else {
            seen.next_part = (seen.next_part.0 + 1, 0);
            continue;
        };
        let Some(DumpFile::Part { segment, part, .. }) = DumpFile::parse(&p.name) else { return Ok(Some(1)) };
        let key = format!("{dir}{}", DumpFile::Part { segment, part, codec }.s3_name());
        if listing.is_none() && in_a_row >= WALK_AFTER {
            *listing = Some(store.list(&export.gcs_data_prefix()).await?.into_iter().map(|o| (o.name.clone(), o)).collect());
        }
        let fetched;
        let object = match listing {
            Some(all) => all.get(&key),
            None => {
                fetched = store.get(&key).await?;
                fetched.as_ref()
            }
        };
        // Found only once finished, of the manifest's size and with the bytes the relay
        // stored; a copy in progress, an older copy of a rewritten part, or an object
        // changed behind the relay's back is not there yet.
        let found = object.and_then(|o| Provenance::from_object(o).filter(|p| gcs::intact(o, p)));
        if found.map(|p| p.raw_bytes) != Some(p.bytes) {
            return Ok(Some(1));
        }
        seen.next_part.1 += 1;
        in_a_row += 1;
    }
    Ok(None)
}

/// Parts found in a row after which a look lists the data instead of asking per part.
const WALK_AFTER: usize = 4;

/// The authoritative check on one listing of the data (`listing`, when this look's
/// probe took one), then the create-only write.
async fn mark(
    store: &Store<'_>,
    bucket: &str,
    export: &ExportId,
    codec: Codec,
    written_by: &str,
    seen: &Seen,
    listing: Option<HashMap<String, Object>>,
) -> Result<MarkOutcome, RelayError> {
    let marker_key = export.marker_key();
    if store.get(&marker_key).await?.is_some() {
        return Ok(MarkOutcome::AlreadyMarked);
    }
    let dir = export.dir();
    let mut objects = BTreeMap::new();
    let mut provenance = BTreeMap::new();
    let listed = match listing {
        Some(all) => all.into_values().collect(),
        None => store.list(&export.gcs_data_prefix()).await?,
    };
    for o in listed {
        let rel = o.name.strip_prefix(&dir).unwrap_or(&o.name).to_string();
        let p = Provenance::from_object(&o);
        let stored = StoredObject {
            stored_bytes: o.size.max(0) as u64,
            raw_bytes: p.as_ref().map(|p| p.raw_bytes),
            stored_crc32c: p.as_ref().and_then(|p| p.stored_crc32c),
            gcs_crc32c: gcs::gcs_crc32c(&o),
        };
        if !stored.intact() {
            // Counted as missing by the rule below; said here, since nothing else will.
            tracing::warn!(bucket, key = %o.name, recorded = ?stored.stored_crc32c, reported = ?o.crc32c, "stored object's CRC32C differs from the one the relay recorded; not counted");
        }
        objects.insert(rel.clone(), stored);
        if let Some(p) = p {
            provenance.insert(rel, p);
        }
    }
    let (files, totals, type_stats) = match check_complete(seen.schema.as_ref(), &seen.manifests, &objects, codec) {
        Completeness::Incomplete { missing } => return Ok(MarkOutcome::Incomplete { missing: missing.len() }),
        Completeness::Complete { files, totals, type_stats } => (files, totals, type_stats),
    };
    // Beyond the size rule: the bytes relayed must hash to what the exporter recorded.
    for f in &files {
        if let Some(p) = provenance.get(&f.name) {
            if !p.raw_sha256.is_empty() && !f.sha256.is_empty() && p.raw_sha256 != f.sha256 {
                return Err(RelayError::ChecksumMismatch {
                    bucket: bucket.into(),
                    key: format!("{dir}{}", f.name),
                    stored: p.raw_sha256.clone(),
                    manifest: f.sha256.clone(),
                });
            }
        }
    }
    let Some(schema) = seen.schema.clone() else { return Ok(MarkOutcome::Incomplete { missing: 0 }) };
    let marker = SuccessMarker {
        format_version: crossdock_core::FORMAT_VERSION,
        export: export.clone(),
        codec,
        schema,
        files,
        totals,
        type_stats,
        written_at: crossdock_core::stamp::now_rfc3339(),
        written_by: written_by.to_string(),
    };
    let body = serde_json::to_vec_pretty(&marker).map_err(|e| RelayError::BadExportFile {
        bucket: bucket.into(),
        key: marker_key.clone(),
        what: "marker",
        message: e.to_string(),
    })?;
    match store.create_json(&marker_key, body).await? {
        Created::Created => Ok(MarkOutcome::Written { files: totals.files, items: totals.items }),
        Created::AlreadyExists => Ok(MarkOutcome::LostRace),
    }
}

fn parse<T: serde::de::DeserializeOwned>(bucket: &str, key: &str, what: &'static str, bytes: &[u8]) -> Result<T, RelayError> {
    serde_json::from_slice(bytes).map_err(|e| RelayError::BadExportFile { bucket: bucket.into(), key: key.into(), what, message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{export, schema};
    use crossdock_core::manifest::{PartEntry, TypeStats};
    use crossdock_core::marker::Crc32c;

    /// The destination bucket in memory, counting every call as GCS would bill them.
    struct MemStore {
        gcs: Gcs,
        memory: crate::gcs::memory::MemoryGcs,
    }

    impl Default for MemStore {
        fn default() -> Self {
            let (gcs, memory) = Gcs::memory();
            MemStore { gcs, memory }
        }
    }

    impl MemStore {
        fn store(&self) -> Store<'_> {
            Store { gcs: &self.gcs, bucket: "dst" }
        }
        /// Stores `body` as the relay does: GCS's CRC32C of it, and the same recorded in
        /// the provenance.
        fn put(&self, name: &str, body: Vec<u8>, raw_bytes: Option<u64>) {
            let metadata = raw_bytes.map(|raw| {
                Provenance {
                    source_bucket: "src".into(),
                    source_key: name.into(),
                    source_etag: "e".into(),
                    raw_bytes: raw,
                    stored_bytes: body.len() as u64,
                    items: 1,
                    raw_sha256: String::new(),
                    codec: "zstd".into(),
                    stored_crc32c: Some(Crc32c::of(&body)),
                }
                .to_metadata()
            });
            self.memory.insert("dst", name, body, metadata);
        }
        /// Replaces the object's bytes behind the relay's back, keeping its metadata.
        fn corrupt(&self, name: &str) {
            self.memory.corrupt("dst", name);
        }
        fn calls(&self) -> usize {
            self.memory.calls()
        }
        fn marked(&self) -> bool {
            self.memory.names("dst").iter().any(|k| k.ends_with("_SUCCESS"))
        }
    }

    /// The relayed files of an export, in the order the exporter writes them: the
    /// schema, then each segment's parts followed by its manifest.
    fn files(segments: u32, parts: u32) -> Vec<(String, Vec<u8>, Option<u64>)> {
        let e = export();
        let mut out = vec![(e.gcs_key(&DumpFile::Schema, Codec::Zstd), serde_json::to_vec(&schema(segments)).expect("json"), Some(10))];
        for segment in 0..segments {
            let entries: Vec<PartEntry> = (0..parts)
                .map(|part| PartEntry {
                    name: DumpFile::Part { segment, part, codec: Codec::None }.s3_name(),
                    items: 1,
                    bytes: 100 + u64::from(part),
                    sha256: String::new(),
                })
                .collect();
            for p in &entries {
                let DumpFile::Part { part, .. } = DumpFile::parse(&p.name).expect("part") else { unreachable!() };
                out.push((e.gcs_key(&DumpFile::Part { segment, part, codec: Codec::Zstd }, Codec::Zstd), vec![0; 10], Some(p.bytes)));
            }
            let m = SegmentManifest {
                format_version: 1,
                table: "Orders".into(),
                segment,
                total_segments: segments,
                items: u64::from(parts),
                bytes: entries.iter().map(|p| p.bytes).sum(),
                parts: entries,
                consumed_rcu: 0.0,
                type_stats: TypeStats::default(),
            };
            out.push((e.gcs_key(&DumpFile::Manifest { segment, total: segments }, Codec::Zstd), serde_json::to_vec(&m).expect("json"), Some(10)));
        }
        out
    }

    async fn relay_all(store: &MemStore, files: &[(String, Vec<u8>, Option<u64>)]) -> Vec<MarkOutcome> {
        let c = Completion::default();
        let mut outcomes = Vec::new();
        for (name, body, raw) in files {
            store.put(name, body.clone(), *raw);
            outcomes.push(c.check(&store.store(), &export(), Codec::Zstd, "test").await.expect("check"));
        }
        outcomes
    }

    #[tokio::test]
    async fn marks_exactly_when_the_last_file_arrives_in_any_order() {
        let mut fs = files(3, 2);
        let n = fs.len();
        // Exporter order, reversed, and interleaved.
        let orders: Vec<Vec<usize>> = vec![(0..n).collect(), (0..n).rev().collect(), (0..n).step_by(2).chain((1..n).step_by(2)).collect()];
        for order in orders {
            let ordered: Vec<_> = order.iter().map(|&i| fs[i].clone()).collect();
            let store = MemStore::default();
            let outcomes = relay_all(&store, &ordered).await;
            let (last, before) = outcomes.split_last().expect("outcomes");
            assert_eq!(last, &MarkOutcome::Written { files: 6, items: 6 }, "{order:?}");
            assert!(before.iter().all(|o| matches!(o, MarkOutcome::Incomplete { .. })), "{order:?}: {before:?}");
        }
        // A part whose relayed size is not the manifest's is not counted.
        fs[1].2 = Some(1);
        let outcomes = relay_all(&MemStore::default(), &fs).await;
        assert!(outcomes.iter().all(|o| matches!(o, MarkOutcome::Incomplete { .. })), "{outcomes:?}");
    }

    #[tokio::test]
    async fn a_part_changed_behind_the_relays_back_is_never_marked() {
        let fs = files(2, 2);
        let part = fs[1].0.clone();
        assert!(part.contains("/data/"), "{part}");
        // Changed after this process probed it (the final listing catches it), and
        // before a fresh process probes it (the probe does).
        for corrupt_after in [2, fs.len() - 1] {
            let store = MemStore::default();
            let c = Completion::default();
            let mut outcomes = Vec::new();
            for (i, (name, body, raw)) in fs.iter().enumerate() {
                store.put(name, body.clone(), *raw);
                if i == corrupt_after {
                    store.corrupt(&part);
                }
                outcomes.push(c.check(&store.store(), &export(), Codec::Zstd, "a").await.expect("check"));
            }
            assert!(outcomes.iter().all(|o| matches!(o, MarkOutcome::Incomplete { .. })), "{corrupt_after}: {outcomes:?}");
            let fresh = Completion::default().check(&store.store(), &export(), Codec::Zstd, "b").await.expect("check");
            assert!(matches!(fresh, MarkOutcome::Incomplete { .. }), "{fresh:?}");
            assert!(!store.marked());
            // Relayed again (the bytes the relay stores), it is counted and marked.
            store.put(&part, fs[1].1.clone(), fs[1].2);
            assert!(matches!(c.check(&store.store(), &export(), Codec::Zstd, "a").await.expect("check"), MarkOutcome::Written { files: 4, .. }));
        }
    }

    #[tokio::test]
    async fn a_marked_export_is_not_checked_again_and_a_second_process_loses_the_race() {
        let fs = files(1, 1);
        let store = MemStore::default();
        let c = Completion::default();
        for (name, body, raw) in &fs {
            store.put(name, body.clone(), *raw);
        }
        assert!(matches!(c.check(&store.store(), &export(), Codec::Zstd, "a").await.expect("check"), MarkOutcome::Written { .. }));
        let calls = store.calls();
        assert_eq!(c.check(&store.store(), &export(), Codec::Zstd, "a").await.expect("check"), MarkOutcome::AlreadyMarked);
        assert_eq!(store.calls(), calls, "no call once marked");
        let other = Completion::default();
        assert_eq!(other.check(&store.store(), &export(), Codec::Zstd, "b").await.expect("check"), MarkOutcome::AlreadyMarked);
    }

    #[tokio::test]
    async fn gcs_calls_per_copied_file_do_not_grow_with_the_table() {
        let mut per_file = Vec::new();
        for segments in [20, 2_000] {
            let fs = files(segments, 4);
            let store = MemStore::default();
            let outcomes = relay_all(&store, &fs).await;
            assert!(matches!(outcomes.last(), Some(MarkOutcome::Written { .. })));
            per_file.push(store.calls() as f64 / fs.len() as f64);
        }
        eprintln!("GCS calls per copied file, 20 and 2,000 segments of 4 parts: {per_file:.2?}");
        assert!(per_file.iter().all(|&c| c <= 3.0), "GCS calls per copied file: {per_file:?}");
        assert!(per_file[1] <= per_file[0] * 1.1, "no growth with the table: {per_file:?}");
    }

    #[tokio::test]
    async fn a_running_look_is_not_waited_for_and_goes_round_again_before_it_lets_go() {
        /// A look that waits at `gate` the first time (a slow GCS), counting calls.
        struct Gated<'a> {
            gate: &'a tokio::sync::Notify,
            calls: &'a std::sync::atomic::AtomicUsize,
        }
        impl Look for Gated<'_> {
            async fn look(&mut self, _: &mut Seen) -> Result<MarkOutcome, RelayError> {
                if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    self.gate.notified().await;
                }
                Ok(MarkOutcome::Incomplete { missing: 1 })
            }
        }
        let looks = Looks::default();
        let gate = tokio::sync::Notify::new();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let mut gated = Gated { gate: &gate, calls: &calls };
        let mut other = Gated { gate: &gate, calls: &calls };
        let first = looks.run(&mut gated);
        tokio::pin!(first);
        // The first copy's look is under way, waiting on GCS (the gate).
        tokio::select! {
            biased;
            _ = &mut first => panic!("the first look waits at the gate"),
            _ = tokio::task::yield_now() => {}
        }
        // A second copy arrives: it does not wait and does not look itself.
        let second = looks.run(&mut other).await;
        assert_eq!(second.expect("deferred"), MarkOutcome::Deferred);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the second copy left the look to the first");
        gate.notify_one();
        assert_eq!(first.await.expect("look"), MarkOutcome::Incomplete { missing: 1 });
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "the running look went round again for the second file");
        // Nothing pending: the next copy looks once.
        looks.run(&mut other).await.expect("look");
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
