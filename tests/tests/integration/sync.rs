//! `crossdock sync` against the local stack: a table on moto's DynamoDB with a
//! NEW_AND_OLD_IMAGES stream, an export of it written straight to GCS, the real binary
//! loading it, changes before, during and after, then `sync --until-lag 2s` and the
//! target compared with a fresh Scan (deletes included); SIGKILLs at checkpoints; an
//! expired checkpoint; refused streams; the Kinesis source.

use aws_sdk_dynamodb::types::StreamViewType;
use crossdock_core::item::AttributeValue;
use crossdock_core::Codec;
use crossdock_load::schema::{TableModel, TargetKind};
use crossdock_load::sink::bigtable::BigtableTarget;
use crossdock_load::sink::postgres::PostgresTarget;
use crossdock_load::sink::spanner::SpannerTarget;
use crossdock_tests::load::{pipeline_toml, put as gcs_put, schema, write_export, WrittenExport};
use crossdock_tests::pipeline::{work_dir, Proc};
use crossdock_tests::resources::*;
use crossdock_tests::sync::*;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Postgres,
    Spanner,
    Bigtable,
}

/// Where the export is loaded, cleaned up on drop.
struct Dest {
    kind: Kind,
    pg: Option<TempPgSchema>,
    spanner: Option<TempSpannerDb>,
    _bigtable: Option<TempBigtable>,
}

/// One table with its export and destination.
struct Ctx {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    _moto: MotoTable,
    bucket: TempGcsBucket,
    export: WrittenExport,
    dest: Dest,
    dir: PathBuf,
    pipeline: PathBuf,
}

fn sync_env() -> Vec<(&'static str, String)> {
    // DescribeTable must reach moto's DynamoDB, where the streams are.
    vec![("AWS_ENDPOINT_URL_DYNAMODB", moto_url())]
}

impl Ctx {
    /// Creates the table (stream `view`), puts `n` items, runs `during` (changes made
    /// while the export "scans"), exports the Scan, and writes a pipeline for `kind`.
    async fn new(prefix: &str, kind: Kind, view: Option<StreamViewType>, n: usize, stream_override: Option<crossdock_core::schema::StreamInfo>) -> Ctx {
        let ddb = moto_dynamodb().await;
        let (moto, stream) = create_table(&ddb, prefix, view).await;
        let table = moto.name.clone();
        for i in 0..n {
            put(&ddb, &table, &item(&format!("k{i:04}"), i as i64)).await;
        }
        // Changes while the export scans: already in the stream, and maybe in the dump.
        for i in 0..n.min(5) {
            put(&ddb, &table, &item(&format!("k{i:04}"), 1000 + i as i64)).await;
        }
        let bucket = TempGcsBucket::new("sync").await;
        let mut sch = schema(&table, false, false);
        sch.stream = stream_override.or(stream);
        let items = scan(&ddb, &table).await;
        let export = write_export(&bucket.client, &bucket.name, "b", sch, items, 2, Codec::Zstd).await;
        let dir = work_dir("sync");
        let (dest, toml) = match kind {
            Kind::Postgres => {
                let pg = TempPgSchema::new("sync").await;
                let toml = pipeline_toml("postgres", &pg.name, "", &format!("[[tables]]\nname = \"{table}\"\nroute = \"relational\""));
                (Dest { kind, pg: Some(pg), spanner: None, _bigtable: None }, toml)
            }
            Kind::Spanner => {
                let db = TempSpannerDb::new("sync").await;
                let toml = pipeline_toml("spanner", "", &db.path, &format!("[[tables]]\nname = \"{table}\"\nroute = \"relational\""));
                (Dest { kind, pg: None, spanner: Some(db), _bigtable: None }, toml)
            }
            Kind::Bigtable => {
                let toml = pipeline_toml("postgres", "unused", "", &format!("[[tables]]\nname = \"{table}\"\nroute = \"wide-column\""));
                (Dest { kind, pg: None, spanner: None, _bigtable: Some(TempBigtable { name: table.clone() }) }, toml)
            }
        };
        // The relay's bucket is where `--table` looks for the table's loaded exports.
        let toml = toml.replacen("[relay]\n", &format!("[relay]\nbucket = \"{}\"\n", bucket.name), 1);
        let pipeline = dir.join("pipeline.toml");
        std::fs::write(&pipeline, toml).expect("pipeline");
        Ctx { ddb, table, _moto: moto, bucket, export, dest, dir, pipeline }
    }

    fn args(&self, cmd: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![cmd.into(), "--marker".into(), self.export.marker_url.clone(), "--pipeline".into(), self.pipeline.display().to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    async fn load(&self) {
        let mut p = Proc::spawn(&self.dir, "load", &self.args("load", &["--no-progress"]));
        let st = p.wait(Duration::from_secs(180)).await;
        assert!(st.success(), "load failed: {}", p.log_tail());
    }

    fn spawn_sync(&self, name: &str, extra: &[&str]) -> Proc {
        let env = sync_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Proc::spawn_with_env(&self.dir, name, &self.args("sync", extra), &env)
    }

    /// Runs `sync` to its end; (exit code, stdout, log).
    async fn sync(&self, name: &str, extra: &[&str]) -> (Option<i32>, String, String) {
        self.sync_like(name, "sync", extra).await
    }

    /// Runs `cmd` (`sync`, `audit`) on this table, reaching moto's DynamoDB, to its end.
    async fn sync_like(&self, name: &str, cmd: &str, extra: &[&str]) -> (Option<i32>, String, String) {
        self.run_args(name, &self.args(cmd, extra)).await
    }

    /// Runs the binary with `args`, reaching moto's DynamoDB, to its end.
    async fn run_args(&self, name: &str, args: &[String]) -> (Option<i32>, String, String) {
        let env = sync_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut p = Proc::spawn_with_env(&self.dir, name, args, &env);
        let st = p.wait(Duration::from_secs(180)).await;
        (st.code(), std::fs::read_to_string(&p.stdout).unwrap_or_default(), p.log_text())
    }

    /// The loaded model, widened by the columns the sync recorded it added.
    async fn model(&self, kind: TargetKind) -> TableModel {
        let mut model = TableModel::infer(kind, &self.export.marker.schema, &self.export.marker.type_stats, None).expect("model");
        let key = crossdock_core::layout::sync_columns_key(&self.export.export);
        if let Some(body) = crossdock_tests::load::get(&self.bucket.client, &self.bucket.name, &key).await {
            let added: crossdock_sync::columns::AddedColumns = serde_json::from_slice(&body).expect("columns record");
            crossdock_sync::columns::widen(&mut model, &added.attributes).expect("widen");
        }
        model
    }

    /// The destination read back as items.
    async fn target_items(&self) -> Vec<crossdock_core::item::Item> {
        match self.dest.kind {
            Kind::Postgres => {
                let pg = self.dest.pg.as_ref().expect("pg");
                let t = PostgresTarget::connect(&crossdock_tests::stack_var("CROSSDOCK_PG_URL"), &pg.name).await.expect("connect");
                read_back(&t, &self.model(TargetKind::Postgres).await).await
            }
            Kind::Spanner => {
                let t = SpannerTarget::connect(&crossdock_gcp::Gcp::from_env(), &self.dest.spanner.as_ref().expect("db").path).await.expect("connect");
                read_back(&t, &self.model(TargetKind::Spanner).await).await
            }
            Kind::Bigtable => {
                let micros = self.export.export.timestamp.unix_micros();
                let t = BigtableTarget::connect(
                    &crossdock_gcp::Gcp::from_env(),
                    &crossdock_tests::gcp_project(),
                    &crossdock_tests::bigtable_instance(),
                    "d",
                    micros,
                    true,
                )
                .await
                .expect("connect");
                read_back(&t, &self.model(TargetKind::Bigtable).await).await
            }
        }
    }

    fn checkpoint_prefix(&self) -> String {
        crossdock_core::layout::sync_prefix(&self.export.export)
    }
}

/// Puts, updates and deletes after the export.
async fn churn(ctx: &Ctx, round: i64, n: usize) {
    for i in (0..n).step_by(3) {
        put(&ctx.ddb, &ctx.table, &item(&format!("k{i:04}"), round * 10_000 + i as i64)).await;
    }
    for i in (1..n).step_by(7) {
        delete(&ctx.ddb, &ctx.table, &format!("k{i:04}")).await;
    }
    for i in 0..3 {
        put(&ctx.ddb, &ctx.table, &item(&format!("new{round}-{i}"), i)).await;
    }
}

async fn end_to_end(kind: Kind) {
    let ctx = Ctx::new("syncee", kind, Some(StreamViewType::NewAndOldImages), 40, None).await;
    churn(&ctx, 1, 40).await;
    ctx.load().await;
    churn(&ctx, 2, 40).await;
    // A key deleted and put back, and one put then deleted, after the load.
    delete(&ctx.ddb, &ctx.table, "k0003").await;
    put(&ctx.ddb, &ctx.table, &item("k0003", 77)).await;
    put(&ctx.ddb, &ctx.table, &item("gone", 1)).await;
    delete(&ctx.ddb, &ctx.table, "gone").await;
    // An attribute the application starts writing after the export: not in the
    // export's statistics, so the sync adds a column for it rather than drop it.
    let mut wider = item("k0006", 6);
    wider.insert("loyalty tier".into(), AttributeValue::M([("level".to_string(), AttributeValue::N("3".into()))].into_iter().collect()));
    put(&ctx.ddb, &ctx.table, &wider).await;
    let (code, out, log) = ctx.sync("sync", &["--until-lag", "2s", "--output", "json", "--status-interval", "1s"]).await;
    assert_eq!(code, Some(0), "sync failed:\n{log}\n{out}");
    let summary = crossdock_tests::pipeline::parse_json(&out).expect("summary json");
    assert_eq!(summary["outcome"], "caught_up", "{out}");
    assert!(summary["lag_ms"].as_u64().is_some_and(|l| l < 2000), "{out}");
    assert!(out.lines().count() >= 2, "status lines then the summary: {out}");
    let source = scan(&ctx.ddb, &ctx.table).await;
    assert_same(&format!("{kind:?} after sync"), &source, &ctx.target_items().await);
    assert!(ctx.model(TargetKind::Postgres).await.columns.iter().any(|c| c.attribute == "loyalty tier"), "the new attribute's column is recorded");
    let cps = crossdock_tests::load::list(&ctx.bucket.client, &ctx.bucket.name, &ctx.checkpoint_prefix()).await;
    let shards: Vec<&String> = cps.iter().filter(|k| !k.ends_with("/_columns.json")).collect();
    assert_eq!(shards.len(), 1, "one shard, one checkpoint: {cps:?}");
    // More changes, then a second run continues from the checkpoint.
    churn(&ctx, 3, 40).await;
    let (code, out, log) = ctx.sync("sync2", &["--until-lag", "2s", "--output", "json"]).await;
    assert_eq!(code, Some(0), "second sync failed:\n{log}\n{out}");
    let summary = crossdock_tests::pipeline::parse_json(&out).expect("summary json");
    let records = summary["records"].as_u64().expect("records");
    assert!(records < 40, "the second run reads only the new changes, read {records}");
    assert_same(&format!("{kind:?} after the second sync"), &scan(&ctx.ddb, &ctx.table).await, &ctx.target_items().await);
    // The cutover check agrees: the live table and the target, item for item. It is
    // named by the table: the newest loaded export of it in the pipeline's bucket.
    let pipeline = ctx.pipeline.display().to_string();
    let by_table = ["audit", "--table", &ctx.table, "--pipeline", &pipeline, "--max-rcu", "1000", "--output", "json"];
    let (code, out, log) = ctx.run_args("audit", &by_table.map(String::from)).await;
    assert_eq!(code, Some(0), "audit found a difference or failed:\n{log}\n{out}");
    let report = crossdock_tests::pipeline::parse_json(&out).expect("audit json");
    let live = scan(&ctx.ddb, &ctx.table).await.len() as u64;
    assert_eq!(
        (report["matching"].as_u64(), report["missing"].as_u64(), report["different"].as_u64(), report["extra"].as_u64()),
        (Some(live), Some(0), Some(0), Some(0)),
        "{out}"
    );
}

#[tokio::test]
async fn sync_streams_into_postgres_matches_a_fresh_scan() {
    end_to_end(Kind::Postgres).await;
}

#[tokio::test]
async fn sync_streams_into_spanner_matches_a_fresh_scan() {
    end_to_end(Kind::Spanner).await;
}

#[tokio::test]
async fn sync_streams_into_bigtable_matches_a_fresh_scan() {
    end_to_end(Kind::Bigtable).await;
}

#[tokio::test]
async fn sync_killed_at_checkpoints_ends_equal_to_the_source() {
    let ctx = Ctx::new("synckill", Kind::Postgres, Some(StreamViewType::NewAndOldImages), 20, None).await;
    ctx.load().await;
    // Many updates to the same keys, made while sync runs and is killed.
    let writer = {
        let (ddb, table) = (ctx.ddb.clone(), ctx.table.clone());
        tokio::spawn(async move {
            for round in 0..40i64 {
                for k in 0..20 {
                    put(&ddb, &table, &item(&format!("k{k:04}"), round * 100 + k)).await;
                }
                if round % 10 == 9 {
                    delete(&ddb, &table, &format!("k{:04}", round % 20)).await;
                }
            }
        })
    };
    let gcs = &ctx.bucket.client;
    let prefix = ctx.checkpoint_prefix();
    let mut last_body: Option<Vec<u8>> = None;
    for kill in 0..3 {
        let mut p = ctx.spawn_sync(&format!("kill{kill}"), &["--max-changes", "25", "--max-wait", "200ms", "--no-progress"]);
        // Kill right after this run writes a checkpoint (a body other than the last one seen).
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            assert!(p.exited().is_none(), "sync exited before it was killed: {}", p.log_tail());
            assert!(std::time::Instant::now() < deadline, "no checkpoint written: {}", p.log_tail());
            let keys = crossdock_tests::load::list(gcs, &ctx.bucket.name, &prefix).await;
            if let Some(k) = keys.first() {
                let body = crossdock_tests::load::get(gcs, &ctx.bucket.name, k).await;
                if body.is_some() && body != last_body {
                    last_body = body;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        p.signal("KILL");
        p.wait(Duration::from_secs(10)).await;
    }
    writer.await.expect("writer");
    let (code, out, log) = ctx.sync("final", &["--until-lag", "2s", "--output", "json"]).await;
    assert_eq!(code, Some(0), "final sync failed:\n{log}\n{out}");
    assert_same("after three SIGKILLs", &scan(&ctx.ddb, &ctx.table).await, &ctx.target_items().await);
}

#[tokio::test]
async fn sync_reports_a_checkpoint_whose_shard_is_gone() {
    let ctx = Ctx::new("syncgone", Kind::Postgres, Some(StreamViewType::NewAndOldImages), 5, None).await;
    ctx.load().await;
    let arn = dynamodb_stream(&ctx.export.marker.schema.stream).arn.clone();
    let cp = serde_json::json!({
        "format_version": 1, "source": "streams", "stream": arn, "shard": "shardId-00000000000000000000-gone",
        "parents": [], "sequence_number": "100", "finished": false, "last_change_at": null, "applied": 3,
        "written_at": "2026-01-01T00:00:00Z"
    });
    let key = crossdock_core::layout::sync_checkpoint_key(&ctx.export.export, "shardId-00000000000000000000-gone").expect("key");
    gcs_put(&ctx.bucket.client, &ctx.bucket.name, &key, serde_json::to_vec(&cp).expect("json")).await;
    let (code, out, log) = ctx.sync("sync", &["--until-lag", "2s"]).await;
    assert_eq!(code, Some(1), "{log}\n{out}");
    assert!(log.contains("shardId-00000000000000000000-gone") && log.contains("re-export the table"), "{log}");
}

#[tokio::test]
async fn sync_refuses_a_keys_only_stream_and_an_export_not_loaded() {
    let ctx = Ctx::new("synckeys", Kind::Postgres, Some(StreamViewType::KeysOnly), 3, None).await;
    let (code, _, log) = ctx.sync("keys", &["--until-lag", "2s"]).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("KEYS_ONLY") && log.contains("NEW_AND_OLD_IMAGES"), "{log}");
    let ctx = Ctx::new("syncnl", Kind::Postgres, Some(StreamViewType::NewAndOldImages), 3, None).await;
    let (code, _, log) = ctx.sync("notloaded", &["--until-lag", "2s"]).await;
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("crossdock load"), "{log}");
}

#[tokio::test]
async fn sync_from_kinesis_matches_the_source() {
    let stream = TempKinesis::new("synck", 1).await;
    // The table has no DynamoDB stream: its changes go to Kinesis only (fed by hand, as
    // moto does not stream DynamoDB into Kinesis).
    let ctx = Ctx::new("synckin", Kind::Postgres, None, 20, Some(kinesis_info(&stream.arn))).await;
    ctx.load().await;
    let now = || (time_now_ms()) as i64;
    let mut expected: std::collections::BTreeMap<String, crossdock_core::item::Item> =
        scan(&ctx.ddb, &ctx.table).await.into_iter().map(|it| (crossdock_load::schema::typed_json(&it["pk"]), it)).collect();
    for round in 0..5i64 {
        for k in 0..20 {
            let pk = format!("k{k:04}");
            let it = item(&pk, round * 100 + k);
            stream.put_change(&ctx.table, "MODIFY", &keys(&pk), Some(&it), now()).await;
            expected.insert(crossdock_load::schema::typed_json(&it["pk"]), it);
        }
    }
    for k in [2, 5, 11] {
        let pk = format!("k{k:04}");
        stream.put_change(&ctx.table, "REMOVE", &keys(&pk), None, now()).await;
        expected.remove(&crossdock_load::schema::typed_json(&keys(&pk)["pk"]));
    }
    // Another table's record on the same stream is ignored.
    stream.put_change("SomeOtherTable", "INSERT", &keys("k0001"), Some(&item("k0001", -1)), now()).await;
    let (code, out, log) = ctx.sync("sync", &["--source", "kinesis", "--until-lag", "2s", "--output", "json"]).await;
    assert_eq!(code, Some(0), "{log}\n{out}");
    let expected: Vec<_> = expected.into_values().collect();
    assert_same("kinesis", &expected, &ctx.target_items().await);
}

fn time_now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}
