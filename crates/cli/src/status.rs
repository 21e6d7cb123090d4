//! `crossdock status`: one row per table export — export, relay, `_SUCCESS`, load,
//! `_LOADED`, catch-up — read from the objects the phases write (listings plus a few
//! small records; `core::status` derives the row), with totals, as a table on a terminal
//! (redrawn with `--watch`) or JSON lines. It keeps no state of its own.

use crate::exit::{fail, Code};
use crate::load::Output;
use anyhow::Context as _;
use crossdock_core::layout::{self, DumpFile, ExportId, Timestamp};
use crossdock_core::manifest::SegmentCheckpoint;
use crossdock_core::marker::{LoadedRecord, SuccessMarker};
use crossdock_core::schema::TableSchema;
use crossdock_core::status::{table_status, wants_plain_sizes, Listed, Observed, State, SyncShard, TableStatus};
use crossdock_load::gcs::Gcs;
use futures::StreamExt as _;
use std::collections::BTreeSet;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Flags of `crossdock status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline file: its S3 bucket and prefix, and its GCS bucket, are read.
    #[arg(long)]
    pub pipeline: PathBuf,
    /// Only this batch (default: every batch found).
    #[arg(long)]
    pub batch: Option<String>,
    /// Only this table.
    #[arg(long)]
    pub table: Option<String>,
    /// Redraw every --interval until interrupted (JSON lines: one round after another).
    #[arg(long)]
    pub watch: bool,
    #[arg(long, value_parser = crate::sync::parse_duration, default_value = "5s")]
    pub interval: Duration,
    /// Listings and reads at a time.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Print how many requests a round made (to stderr).
    #[arg(short, long)]
    pub verbose: bool,
    /// AWS region (default: from the environment).
    #[arg(long)]
    pub region: Option<String>,
}

/// The two stores, with a count of the requests made to them.
struct Stores {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    gcs: Gcs,
    requests: AtomicU64,
}

impl Stores {
    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// S3 objects under `prefix` (with a `/` delimiter: the common prefixes instead).
    async fn s3_list(&self, prefix: &str, dirs: bool) -> anyhow::Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            self.count();
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(dirs.then(|| "/".to_string()))
                .set_continuation_token(token)
                .send()
                .await
                .with_context(|| format!("listing s3://{}/{prefix}", self.bucket))?;
            if dirs {
                out.extend(page.common_prefixes().iter().filter_map(|p| Some(Listed { name: p.prefix()?.to_string(), size: 0, modified_ms: None })));
            } else {
                out.extend(page.contents().iter().filter_map(|o| {
                    Some(Listed {
                        name: o.key()?.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified_ms: o.last_modified().and_then(|t| t.to_millis().ok()),
                    })
                }));
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn s3_get<T: serde::de::DeserializeOwned>(&self, key: &str) -> anyhow::Result<T> {
        self.count();
        let out = self.s3.get_object().bucket(&self.bucket).key(key).send().await.with_context(|| format!("reading s3://{}/{key}", self.bucket))?;
        let body = out.body.collect().await.with_context(|| format!("reading s3://{}/{key}", self.bucket))?.into_bytes();
        serde_json::from_slice(&body).with_context(|| format!("s3://{}/{key}", self.bucket))
    }

    async fn gcs_dirs(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        self.count();
        Ok(self.gcs.list_dirs(prefix).await?)
    }

    async fn gcs_get<T: serde::de::DeserializeOwned>(&self, key: &str) -> anyhow::Result<T> {
        self.count();
        let body = self.gcs.read(key).await?;
        serde_json::from_slice(&body).with_context(|| format!("gs://{}/{key}", self.gcs.bucket))
    }

    /// The export directories to show: the newest timestamp of each table of each batch.
    async fn exports(&self, batch: Option<&str>, table: Option<&str>) -> anyhow::Result<Vec<ExportId>> {
        let name_of = |dir: &str, under: &str| dir.strip_prefix(under).map(|d| d.trim_end_matches('/').to_string());
        // Exporter state (`_leases/`) and anything not a valid name is not a batch or table.
        let keep = |n: &String| !n.is_empty() && !n.starts_with('_');
        let mut batches = BTreeSet::new();
        match batch {
            Some(b) => {
                batches.insert(b.to_string());
            }
            None => {
                batches.extend(self.s3_list(&self.prefix, true).await?.iter().filter_map(|l| name_of(&l.name, &self.prefix)).filter(keep));
                batches.extend(self.gcs_dirs("").await?.iter().filter_map(|d| name_of(d, "")).filter(keep));
            }
        }
        let mut out = Vec::new();
        for b in batches {
            let mut tables = BTreeSet::new();
            match table {
                Some(t) => {
                    tables.insert(t.to_string());
                }
                None => {
                    let s3_dir = format!("{}{b}/", self.prefix);
                    tables.extend(self.s3_list(&s3_dir, true).await?.iter().filter_map(|l| name_of(&l.name, &s3_dir)).filter(keep));
                    let gcs_dir = format!("{b}/");
                    tables.extend(self.gcs_dirs(&gcs_dir).await?.iter().filter_map(|d| name_of(d, &gcs_dir)).filter(keep));
                }
            }
            for t in tables {
                let s3_dir = layout::table_prefix(&self.prefix, &b, &t);
                let gcs_dir = layout::table_prefix("", &b, &t);
                let mut stamps: Vec<Timestamp> =
                    layout::timestamps_under(&s3_dir, &self.s3_list(&s3_dir, true).await?.into_iter().map(|l| l.name).collect::<Vec<_>>());
                stamps.extend(layout::timestamps_under(&gcs_dir, &self.gcs_dirs(&gcs_dir).await?));
                if let Some(ts) = stamps.into_iter().max() {
                    out.push(ExportId::new(&b, &t, ts)?);
                }
            }
        }
        Ok(out)
    }

    /// Everything `core::status` needs of one export.
    async fn observe(&self, id: &ExportId, now_ms: i64) -> anyhow::Result<TableStatus> {
        let s3_dir = id.s3_dir(&self.prefix);
        let gcs_dir = id.dir();
        let relative = |dir: &str, l: Vec<Listed>| -> Vec<Listed> {
            l.into_iter().filter_map(|o| Some(Listed { name: o.name.strip_prefix(dir)?.to_string(), ..o })).collect()
        };
        let s3 = relative(&s3_dir, self.s3_list(&s3_dir, false).await?);
        self.count();
        let gcs_listing = self.gcs.list_meta(&gcs_dir).await?.into_iter().map(|(name, size, modified_ms)| Listed { name, size, modified_ms }).collect();
        let gcs = relative(&gcs_dir, gcs_listing);
        let present = |l: &[Listed], f: DumpFile| l.iter().any(|o| o.name == f.s3_name());
        let schema: Option<TableSchema> = if present(&s3, DumpFile::Schema) {
            Some(self.s3_get(&format!("{s3_dir}{}", DumpFile::Schema.s3_name())).await?)
        } else if present(&gcs, DumpFile::Schema) {
            Some(self.gcs_get(&format!("{gcs_dir}{}", DumpFile::Schema.s3_name())).await?)
        } else {
            None
        };
        let marker: Option<SuccessMarker> =
            if present(&gcs, DumpFile::Success) { Some(self.gcs_get(&format!("{gcs_dir}{}", DumpFile::Success.s3_name())).await?) } else { None };
        let loaded: Option<LoadedRecord> =
            if present(&gcs, DumpFile::Loaded) { Some(self.gcs_get(&format!("{gcs_dir}{}", DumpFile::Loaded.s3_name())).await?) } else { None };
        let mut sync = Vec::new();
        for o in &gcs {
            if layout::sync_shard_of(id, &format!("{gcs_dir}{}", o.name)).is_some() {
                let cp: crossdock_sync::checkpoint::Checkpoint = self.gcs_get(&format!("{gcs_dir}{}", o.name)).await?;
                let last_change_ms =
                    cp.last_change_at.as_deref().and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok());
                sync.push(SyncShard { finished: cp.finished, last_change_ms: last_change_ms.map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64) });
            }
        }
        let seen = Observed { s3: &s3, gcs: &gcs, schema: schema.as_ref(), marker: marker.as_ref(), loaded: loaded.as_ref(), sync: &sync, plain_sizes: &[] };
        let status = table_status(id, &seen, now_ms);
        // A running export's compressed parts: one checkpoint's plain part sizes turn
        // the stored bytes into the plain bytes its ETA needs.
        let checkpoint = s3.iter().find(|o| matches!(DumpFile::parse(&o.name), Some(DumpFile::Checkpoint { .. })));
        let Some(o) = checkpoint.filter(|_| wants_plain_sizes(&status, &s3)) else { return Ok(status) };
        match self.s3_get::<SegmentCheckpoint>(&format!("{s3_dir}{}", o.name)).await {
            Ok(cp) => Ok(table_status(id, &Observed { plain_sizes: &cp.parts, ..seen }, now_ms)),
            Err(e) => {
                tracing::debug!(key = %o.name, error = %e, "no plain part sizes for the export's ETA");
                Ok(status)
            }
        }
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Totals over the rows of a round.
#[derive(Debug, Default, serde::Serialize)]
struct Totals {
    tables: usize,
    exported: usize,
    relayed: usize,
    loaded: usize,
    syncing: usize,
    export_bytes: u64,
    relay_raw_bytes: u64,
    relay_stored_bytes: u64,
    rows_loaded: u64,
    rejects: u64,
    /// The longest remaining time per phase, of the tables that report one.
    export_eta_s: Option<u64>,
    relay_eta_s: Option<u64>,
    load_eta_s: Option<u64>,
    requests: u64,
}

fn totals(rows: &[TableStatus], requests: u64) -> Totals {
    let max = |f: &dyn Fn(&TableStatus) -> Option<u64>| rows.iter().filter_map(f).max();
    Totals {
        tables: rows.len(),
        exported: rows.iter().filter(|r| r.export.state == State::Done).count(),
        relayed: rows.iter().filter(|r| r.success).count(),
        loaded: rows.iter().filter(|r| r.loaded).count(),
        syncing: rows.iter().filter(|r| r.sync.is_some()).count(),
        export_bytes: rows.iter().map(|r| r.export.bytes).sum(),
        relay_raw_bytes: rows.iter().map(|r| r.relay.raw_bytes).sum(),
        relay_stored_bytes: rows.iter().map(|r| r.relay.stored_bytes).sum(),
        rows_loaded: rows.iter().map(|r| r.load.rows).sum(),
        rejects: rows.iter().map(|r| r.load.rejects).sum(),
        export_eta_s: max(&|r| r.export.eta_s),
        relay_eta_s: max(&|r| r.relay.eta_s),
        load_eta_s: max(&|r| r.load.eta_s),
        requests,
    }
}

fn mb(b: u64) -> String {
    format!("{:.1}", b as f64 / 1_048_576.0)
}

fn eta(s: Option<u64>) -> String {
    s.map_or(String::new(), |s| if s >= 3600 { format!(" ~{}h{:02}m", s / 3600, s % 3600 / 60) } else { format!(" ~{}m{:02}s", s / 60, s % 60) })
}

/// The rows as a table; `colour` paints states (terminal only).
fn render(rows: &[TableStatus], t: &Totals, colour: bool) -> String {
    let paint = |st: Option<State>, text: String| -> String {
        let code = match st {
            _ if !colour => return text,
            None => return text,
            Some(State::Done) => "32",
            Some(State::Running) => "33",
            Some(State::Pending) => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    };
    let flag = |b: bool| if b { (Some(State::Done), "yes".to_string()) } else { (Some(State::Pending), "–".to_string()) };
    let mut out = String::new();
    let header = ["BATCH", "TABLE", "EXPORT (segments, MB)", "RELAY (files, MB raw→stored)", "_SUCCESS", "LOAD (files, rows, rejects)", "_LOADED", "SYNC"];
    let mut cells: Vec<Vec<(Option<State>, String)>> = Vec::new();
    for r in rows {
        let e = &r.export;
        let rl = &r.relay;
        let l = &r.load;
        let sync = r.sync.as_ref().map_or(String::new(), |s| {
            format!("{}/{} shards done{}", s.shards_finished, s.shards, s.since_last_change_s.map_or(String::new(), |x| format!(", last change {x}s ago")))
        });
        cells.push(vec![
            (None, r.batch.clone()),
            (None, r.table.clone()),
            (Some(e.state), format!("{}/{}, {}{}", e.segments_done, e.segments_total, mb(e.bytes), eta(e.eta_s))),
            (Some(rl.state), format!("{}/{}, {}→{}{}", rl.files_copied, rl.files_total, mb(rl.raw_bytes), mb(rl.stored_bytes), eta(rl.eta_s))),
            flag(r.success),
            (Some(l.state), format!("{}/{}, {}/{}, {}{}", l.files_done, l.files_total, l.rows, l.rows_total, l.rejects, eta(l.eta_s))),
            flag(r.loaded),
            (None, sync),
        ]);
    }
    let width = |i: usize| cells.iter().map(|c| c[i].1.chars().count()).chain([header[i].chars().count(), 3]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |parts: Vec<String>| parts.join("  ").trim_end().to_string() + "\n";
    out += &line(header.iter().enumerate().map(|(i, h)| format!("{h:<w$}", w = widths[i])).collect());
    for c in &cells {
        // Padded before painting, so colour codes do not upset the widths.
        let parts = c.iter().enumerate().map(|(i, (st, text))| paint(*st, format!("{text:<w$}", w = widths[i]))).collect();
        out += &line(parts);
    }
    out += &format!(
        "{} table(s): {} exported ({} MB), {} relayed ({} → {} MB), {} loaded ({} rows, {} rejected), {} syncing{}{}{}\n",
        t.tables,
        t.exported,
        mb(t.export_bytes),
        t.relayed,
        mb(t.relay_raw_bytes),
        mb(t.relay_stored_bytes),
        t.loaded,
        t.rows_loaded,
        t.rejects,
        t.syncing,
        t.export_eta_s.map_or(String::new(), |s| format!("; export{}", eta(Some(s)))),
        t.relay_eta_s.map_or(String::new(), |s| format!("; relay{}", eta(Some(s)))),
        t.load_eta_s.map_or(String::new(), |s| format!("; load{}", eta(Some(s)))),
    );
    out
}

/// One round: every export's row, in batch/table order.
async fn round(stores: &Stores, args: &Args) -> anyhow::Result<(Vec<TableStatus>, Totals)> {
    let before = stores.requests.load(Ordering::Relaxed);
    let exports = stores.exports(args.batch.as_deref(), args.table.as_deref()).await?;
    let now = now_ms();
    let mut rows: Vec<TableStatus> = futures::stream::iter(exports.iter().map(|id| stores.observe(id, now)))
        .buffered(args.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    rows.sort_by(|a, b| (&a.batch, &a.table).cmp(&(&b.batch, &b.table)));
    let requests = stores.requests.load(Ordering::Relaxed) - before;
    let t = totals(&rows, requests);
    Ok((rows, t))
}

pub async fn run(args: Args) -> anyhow::Result<Code> {
    let pipeline = crate::pipeline::load(&args.pipeline)?;
    let conf = crate::aws::config(args.region.clone()).await;
    let client = crossdock_load::gcs::client(crate::gcp()).await.map_err(crate::load::coded)?;
    let stores = Stores {
        s3: crate::aws::s3(&conf),
        bucket: pipeline.source.bucket.clone(),
        prefix: pipeline.source.prefix.clone(),
        gcs: Gcs::new(client, pipeline.dst_bucket.clone()),
        requests: AtomicU64::new(0),
    };
    let terminal = std::io::stdout().is_terminal();
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        let (rows, t) = round(&stores, &args).await?;
        match args.output {
            Output::Json => {
                for r in &rows {
                    println!("{}", serde_json::to_string(r).context("status json")?);
                }
                println!("{}", serde_json::json!({ "totals": t }));
            }
            Output::Text => {
                if args.watch && terminal {
                    // Clear and redraw in place.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&rows, &t, terminal));
            }
        }
        if args.verbose {
            eprintln!("{} request(s) for {} table(s)", t.requests, t.tables);
        }
        if !args.watch {
            return Ok(if rows.is_empty() && (args.table.is_some() || args.batch.is_some()) {
                return Err(fail(Code::Usage, "no export of that batch/table in the pipeline's buckets"));
            } else {
                Code::Ok
            });
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(Code::Ok),
            _ = tokio::time::sleep(args.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossdock_core::status::{ExportPhase, LoadPhase, RelayPhase};

    fn row(table: &str, loaded: bool) -> TableStatus {
        TableStatus {
            batch: "b".into(),
            table: table.into(),
            timestamp: "2026-11-30T09-00-00Z".into(),
            export: ExportPhase {
                state: State::Done,
                segments_done: 4,
                segments_total: 4,
                parts: 4,
                bytes: 2 << 20,
                bytes_estimate: 0,
                items_estimate: 0,
                eta_s: None,
            },
            relay: RelayPhase { state: State::Done, files_copied: 4, files_total: 4, raw_bytes: 2 << 20, stored_bytes: 1 << 20, eta_s: None },
            success: true,
            load: LoadPhase {
                state: if loaded { State::Done } else { State::Running },
                files_done: 2,
                files_total: 4,
                rows: 500,
                rows_total: 1000,
                rejects: 0,
                destination: None,
                eta_s: (!loaded).then_some(90),
            },
            loaded,
            sync: None,
        }
    }

    #[test]
    fn the_table_has_a_row_per_export_and_totals_with_the_longest_eta() {
        let rows = [row("Orders", true), row("Users", false)];
        let t = totals(&rows, 12);
        let text = render(&rows, &t, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("BATCH") && lines[1].contains("Orders") && lines[2].contains("Users"), "{text}");
        assert!(lines[2].contains("2/4, 500/1000, 0 ~1m30s"), "{text}");
        assert!(lines[3].starts_with("2 table(s): 2 exported (4.0 MB), 2 relayed (4.0 → 2.0 MB), 1 loaded (1000 rows, 0 rejected)"), "{text}");
        assert!(lines[3].contains("load ~1m30s"), "{text}");
        assert!(!text.contains('\x1b'), "no colour off a terminal");
    }
}
