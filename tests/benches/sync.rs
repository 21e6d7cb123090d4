//! Catch-up benchmark on the local stack (`scripts/bench sync`), printed as ratios against
//! references measured in the same run:
//!
//! - changes applied per second by `crossdock sync` into PostgreSQL and Bigtable vs
//!   `crossdock load`'s rows/s of the same rows (goal ≥ 50%): end to end from moto's
//!   DynamoDB stream (also against GetRecords alone, which bounds it there), and the apply
//!   side alone, from an in-memory stream through the same loop and targets;
//! - the largest lag while a writer keeps a steady rate of changes (goal < 5 s at 500/s);
//! - `crossdock audit` items/s vs `crossdock export` items/s on the same table (goal ≥ 80%).
//!
//! Rows: `BENCH_SYNC_ROWS` (default 20,000); steady rate and duration: `BENCH_SYNC_RATE`
//! (500 changes/s) and `BENCH_SYNC_SECS` (20). Run with the stack up and the binary built.
//! Wall times include each process's start-up, the same for both sides of a ratio.

use aws_sdk_dynamodb::types::{PutRequest, StreamViewType, WriteRequest};
use crossdock_core::item::Item;
use crossdock_core::schema::TableSchema;
use crossdock_core::Codec;
use crossdock_load::schema::{TableModel, TargetKind};
use crossdock_load::sink::{AnyTarget, Target};
use crossdock_sync::checkpoint::MemCheckpoints;
use crossdock_sync::source::fake::FakeStream;
use crossdock_sync::SyncOptions;
use crossdock_tests::load::{pipeline_toml, schema, write_export, WrittenExport};
use crossdock_tests::pipeline::{parse_json, work_dir, Proc};
use crossdock_tests::resources::{TempBigtable, TempBucket, TempGcsBucket, TempPgSchema};
use crossdock_tests::sync::{create_table, item, moto_dynamodb, moto_url};
use futures::StreamExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Puts `items` with BatchWriteItem (25 per call), `tasks` calls at a time.
async fn put_all(ddb: &aws_sdk_dynamodb::Client, table: &str, items: &[Item], tasks: usize) {
    let chunks: Vec<Vec<Item>> = items.chunks(25).map(<[Item]>::to_vec).collect();
    let mut pending = futures::stream::iter(chunks.into_iter().map(|chunk| {
        let ddb = ddb.clone();
        let table = table.to_string();
        async move {
            let mut reqs: Vec<WriteRequest> = chunk
                .iter()
                .map(|it| {
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(crossdock_export::convert::to_sdk_item(it))).build().expect("put"))
                        .build()
                })
                .collect();
            while !reqs.is_empty() {
                let out = ddb.batch_write_item().request_items(&table, reqs).send().await.expect("batch write");
                reqs = out.unprocessed_items().and_then(|m| m.get(&table)).cloned().unwrap_or_default();
            }
        }
    }))
    .buffer_unordered(tasks);
    while pending.next().await.is_some() {}
}

/// The reference reader: every record of the table's stream read with GetRecords and
/// nothing else (what moto's stream serves per second); returns the record count.
async fn read_stream(arn: &str) -> usize {
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let conf = crossdock_tests::aws_config().await;
    let c = aws_sdk_dynamodbstreams::Client::from_conf(aws_sdk_dynamodbstreams::config::Builder::from(&conf).endpoint_url(moto_url()).build());
    let d = c.describe_stream().stream_arn(arn).send().await.expect("describe stream");
    let mut n = 0;
    for shard in d.stream_description().map(|s| s.shards()).unwrap_or_default() {
        let id = shard.shard_id().expect("shard id");
        let it = c.get_shard_iterator().stream_arn(arn).shard_id(id).shard_iterator_type(ShardIteratorType::TrimHorizon).send().await.expect("iterator");
        let mut it = it.shard_iterator().map(str::to_string);
        while let Some(i) = it {
            let out = c.get_records().shard_iterator(i).limit(1000).send().await.expect("get records");
            if out.records().is_empty() {
                break;
            }
            n += out.records().len();
            it = out.next_shard_iterator().map(str::to_string);
        }
    }
    n
}

/// Changes per second `crossdock_sync::run` applies into PostgreSQL schema `pg` (or, with
/// `None`, Bigtable table `bt`) from an in-memory stream holding `items` as upserts.
async fn apply_rate(sch: &TableSchema, bulk: &WrittenExport, items: &[Item], pg: Option<&str>, bt: &str) -> f64 {
    let kind = if pg.is_some() { TargetKind::Postgres } else { TargetKind::Bigtable };
    let model = TableModel::infer(kind, sch, &bulk.marker.type_stats, pg.map_or(Some(bt), |_| None)).expect("model");
    let target = match pg {
        Some(schema) => AnyTarget::Postgres(
            crossdock_load::sink::postgres::PostgresTarget::connect(&crossdock_tests::stack_var("CROSSDOCK_PG_URL"), schema).await.expect("postgres"),
        ),
        None => AnyTarget::Bigtable(crossdock_tests::load::bigtable().await),
    };
    target.ensure_table(&model).await.expect("table");
    let stream = FakeStream::new(&sch.table);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    for it in items {
        stream.upsert("shard-0", it.clone(), now);
    }
    let opts = SyncOptions { until_lag: Some(Duration::from_secs(5)), hold: Duration::ZERO, ..SyncOptions::default() };
    let began = Instant::now();
    let summary = crossdock_sync::run(&stream, &target, &model, &MemCheckpoints::default(), &opts, &mut |_| {}, std::future::pending()).await.expect("sync");
    assert_eq!(summary.status.upserts, items.len() as u64);
    items.len() as f64 / began.elapsed().as_secs_f64()
}

fn env_pairs() -> Vec<(&'static str, String)> {
    vec![("AWS_ENDPOINT_URL_DYNAMODB", moto_url())]
}

/// Runs the binary to its end; (wall seconds, stdout).
async fn timed(dir: &Path, name: &str, args: &[String]) -> (f64, String) {
    timed_allowing(dir, name, args, &[0]).await
}

/// [`timed`], accepting the exit codes `ok`.
async fn timed_allowing(dir: &Path, name: &str, args: &[String], ok: &[i32]) -> (f64, String) {
    let env = env_pairs();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let began = Instant::now();
    let mut p = Proc::spawn_with_env(dir, name, args, &env);
    let st = p.wait(Duration::from_secs(1800)).await;
    let secs = began.elapsed().as_secs_f64();
    assert!(st.code().is_some_and(|c| ok.contains(&c)), "{name} failed ({st}):\n{}", p.log_tail());
    (secs, std::fs::read_to_string(&p.stdout).unwrap_or_default())
}

fn args(cmd: &str, marker: &str, pipeline: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![cmd.into(), "--marker".into(), marker.into(), "--pipeline".into(), pipeline.display().to_string()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A pipeline routing `table` to PostgreSQL schema `pg` (`wide` false) or to Bigtable
/// table `bt` (`wide` true).
fn write_pipeline(dir: &Path, name: &str, table: &str, gcs_bucket: &str, pg: &str, wide: bool, bt: &str) -> PathBuf {
    let route = if wide { format!("route = \"wide-column\"\ndestination = \"{bt}\"") } else { "route = \"relational\"".into() };
    let toml = pipeline_toml("postgres", pg, "", &format!("[[tables]]\nname = \"{table}\"\n{route}"));
    let toml = toml.replacen("[relay]\n", &format!("[relay]\nbucket = \"{gcs_bucket}\"\n"), 1);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).expect("pipeline");
    path
}

#[tokio::main]
async fn main() {
    let rows = env_or("BENCH_SYNC_ROWS", 20_000) as usize;
    let rate = env_or("BENCH_SYNC_RATE", 500);
    let steady_secs = env_or("BENCH_SYNC_SECS", 20);
    let dir = work_dir("bench-sync");
    let ddb = moto_dynamodb().await;
    let (moto, stream) = create_table(&ddb, "bsync", Some(StreamViewType::NewAndOldImages)).await;
    let table = moto.name.clone();
    let gcs = TempGcsBucket::new("bsync").await;
    let mut sch = schema(&table, false, false);
    sch.stream = stream;
    let items: Vec<Item> = (0..rows).map(|i| item(&format!("k{i:08}"), i as i64)).collect();
    // The loader's reference: the same rows as an export.
    let bulk = write_export(&gcs.client, &gcs.name, "bulk", sch.clone(), items.clone(), 8, Codec::Zstd).await;
    // The sync's starting point: an export of one item (the same attributes), loaded.
    let seeds: Vec<WrittenExport> = {
        let mut v = Vec::new();
        for batch in ["seed-pg", "seed-bt"] {
            v.push(write_export(&gcs.client, &gcs.name, batch, sch.clone(), vec![item("seed", 0)], 1, Codec::Zstd).await);
        }
        v
    };
    let pg_load = TempPgSchema::new("bsyncl").await;
    let pg_sync = TempPgSchema::new("bsyncs").await;
    let bt_load = TempBigtable::name("bsyncl");
    let bt_sync = TempBigtable::name("bsyncs");
    let pipes = [
        (
            write_pipeline(&dir, "pg-load", &table, &gcs.name, &pg_load.name, false, ""),
            write_pipeline(&dir, "pg-sync", &table, &gcs.name, &pg_sync.name, false, ""),
        ),
        (
            write_pipeline(&dir, "bt-load", &table, &gcs.name, "", true, &bt_load.name),
            write_pipeline(&dir, "bt-sync", &table, &gcs.name, "", true, &bt_sync.name),
        ),
    ];
    for ((_, sync_pipe), seed) in pipes.iter().zip(&seeds) {
        timed(&dir, "seed-load", &args("load", &seed.marker_url, sync_pipe, &["--no-progress"])).await;
    }
    // Every row as a change in the stream, after the seed exports.
    let began = Instant::now();
    put_all(&ddb, &table, &items, 8).await;
    println!("fed {rows} changes into moto's stream at {:.0} puts/s", rows as f64 / began.elapsed().as_secs_f64());
    let arn = sch.stream.as_ref().and_then(|s| s.dynamodb.as_ref()).map(|d| d.arn.clone()).expect("the table's stream");
    let began = Instant::now();
    let read = read_stream(&arn).await;
    let stream_rate = read as f64 / began.elapsed().as_secs_f64();
    println!("reference: GetRecords alone reads moto's stream at {stream_rate:.0} records/s ({read} records)");

    let mut load_rates = Vec::new();
    for (i, target) in ["postgres", "bigtable"].into_iter().enumerate() {
        let (load_pipe, sync_pipe) = &pipes[i];
        let (load_s, _) = timed(&dir, &format!("{target}-load"), &args("load", &bulk.marker_url, load_pipe, &["--no-progress"])).await;
        let hold = 1.0;
        let (sync_s, out) = timed(
            &dir,
            &format!("{target}-sync"),
            &args("sync", &seeds[i].marker_url, sync_pipe, &["--until-lag", "2s", "--hold", "1s", "--output", "json", "--no-progress"]),
        )
        .await;
        let summary = parse_json(&out).expect("sync summary");
        let records = summary["records"].as_u64().expect("records");
        assert!(records >= rows as u64, "sync read {records} of {rows} changes");
        let (load_rate, sync_rate) = (rows as f64 / load_s, records as f64 / (sync_s - hold).max(0.001));
        load_rates.push(load_rate);
        println!(
            "{target}: load {load_rate:.0} rows/s ({load_s:.1} s) · sync {sync_rate:.0} changes/s ({records} in {sync_s:.1} s, less its {hold:.0} s hold)"
        );
        println!("{target} ratio: {:.0}% (sync changes/s ÷ load rows/s; goal ≥ 50%)", 100.0 * sync_rate / load_rate);
        println!("{target} ratio to the stream: {:.0}% (sync changes/s ÷ GetRecords alone)", 100.0 * sync_rate / stream_rate);
    }

    // The apply side alone: the same changes from an in-memory stream, through the
    // catch-up loop and the real targets (moto's stream serves ~1,000 records/s, far
    // below what the targets take).
    let pg_apply = TempPgSchema::new("bsynca").await;
    let bt_apply = TempBigtable::name("bsynca");
    for (i, target) in ["postgres", "bigtable"].into_iter().enumerate() {
        let rate = apply_rate(&sch, &bulk, &items, if i == 0 { Some(&pg_apply.name) } else { None }, &bt_apply.name).await;
        println!("{target}: sync applies {rate:.0} changes/s from an in-memory stream");
        println!("{target} apply ratio: {:.0}% (sync apply changes/s ÷ load rows/s; goal ≥ 50%)", 100.0 * rate / load_rates[i]);
    }

    // Lag under a steady write rate: sync follows while a writer puts `rate` items/s.
    let env = env_pairs();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut follower = Proc::spawn_with_env(
        &dir,
        "follow",
        &args("sync", &seeds[0].marker_url, &pipes[0].1, &["--output", "json", "--status-interval", "1s", "--no-progress"]),
        &env,
    );
    follower.wait_log("sync started", Duration::from_secs(60)).await;
    let per_tick = (rate / 20).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let began = Instant::now();
    let mut written = 0usize;
    while began.elapsed() < Duration::from_secs(steady_secs) {
        tick.tick().await;
        let batch: Vec<Item> = (0..per_tick).map(|j| item(&format!("s{:08}", written + j), j as i64)).collect();
        put_all(&ddb, &table, &batch, 1).await;
        written += per_tick;
    }
    let achieved = written as f64 / began.elapsed().as_secs_f64();
    // Let the follower report once more after the writer stops, then stop it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    follower.signal("TERM");
    follower.wait(Duration::from_secs(60)).await;
    let text = std::fs::read_to_string(&follower.stdout).unwrap_or_default();
    let lags: Vec<u64> = text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter_map(|v| v["lag_ms"].as_u64()).collect();
    // The first seconds include catching up with what was written before the follower started.
    let steady: &[u64] = if lags.len() > 3 { &lags[3..] } else { &lags };
    let max_lag = steady.iter().copied().max().unwrap_or(0);
    println!("steady writes: {achieved:.0} changes/s for {steady_secs} s; sync lag max {max_lag} ms over {} status lines (goal < 5000 ms)", steady.len());

    // Audit vs export on the same live table.
    let s3 = TempBucket::new("bsync").await;
    let (export_s, _) = timed(
        &dir,
        "export",
        &["export", "--table", &table, "--bucket", &s3.name, "--prefix", "bench/", "--batch", "b", "--max-rcu", "1000000"].map(String::from),
    )
    .await;
    // Exit 7 (a difference) is possible: the follower may have stopped a batch short.
    let audit_args = args("audit", &seeds[0].marker_url, &pipes[0].1, &["--max-rcu", "1000000", "--output", "json"]);
    let (audit_s, out) = timed_allowing(&dir, "audit", &audit_args, &[0, 7]).await;
    let report = parse_json(&out).expect("audit report");
    let scanned = ["matching", "missing", "different"].iter().filter_map(|k| report[*k].as_u64()).sum::<u64>();
    let live = (rows + written + 1) as f64;
    println!("export {:.0} items/s ({export_s:.1} s) · audit {:.0} items/s ({audit_s:.1} s, {scanned} compared)", live / export_s, scanned as f64 / audit_s);
    println!("audit ratio: {:.0}% (audit items/s ÷ export items/s; goal ≥ 80%)", 100.0 * (scanned as f64 / audit_s) / (live / export_s));
    drop((bt_load, bt_sync, bt_apply, pg_load, pg_sync, pg_apply));
}
