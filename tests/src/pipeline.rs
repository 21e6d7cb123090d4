//! Harness additions for the whole-pipeline tests: tables with or without a GSI, the
//! real `crossdock` binary as a child process (stdout and stderr to files, signals),
//! a pipeline file with `${VAR}` values in a temp dir, and independent readers of
//! what landed (DynamoDB Scan keys, PostgreSQL rows, Bigtable row keys).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ProvisionedThroughput, ScalarAttributeType,
};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// Creates a provisioned table keyed `pk` (S) [+ `sk` (N)], with a KEYS_ONLY GSI
/// `by_name` on `name` (S) when `gsi`, and waits for ACTIVE.
pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str, with_sort_key: bool, gsi: bool, rcu: i64) {
    let attr = |n: &str, t| AttributeDefinition::builder().attribute_name(n).attribute_type(t).build().expect("attr");
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().expect("key");
    let pt = |r: i64| ProvisionedThroughput::builder().read_capacity_units(r).write_capacity_units(1000).build().expect("pt");
    let mut req = ddb.create_table().table_name(name).attribute_definitions(attr("pk", ScalarAttributeType::S)).key_schema(key("pk", KeyType::Hash));
    if with_sort_key {
        req = req.attribute_definitions(attr("sk", ScalarAttributeType::N)).key_schema(key("sk", KeyType::Range));
    }
    if gsi {
        req = req.attribute_definitions(attr("name", ScalarAttributeType::S)).global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by_name")
                .key_schema(key("name", KeyType::Hash))
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .provisioned_throughput(pt(10))
                .build()
                .expect("gsi"),
        );
    }
    req.provisioned_throughput(pt(rcu)).send().await.unwrap_or_else(|e| panic!("create table {name}: {e:?}"));
    crate::export::wait_active(ddb, name).await;
}

/// The key of every item of `table` by a plain Scan, as `pk` or `pk|sk`, sorted.
pub async fn scan_keys(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<String> {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    let mut keys: Vec<String> = crate::export::scan_items(ddb, table)
        .await
        .iter()
        .map(|it| match it.get("pk") {
            Some(Av::S(s)) => s.clone(),
            other => panic!("item without a string pk: {other:?}"),
        })
        .collect();
    keys.sort();
    keys
}

/// Like [`scan_keys`] with the sort key: `pk|sk`.
pub async fn scan_keys_with_sort(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<String> {
    use aws_sdk_dynamodb::types::AttributeValue as Av;
    let mut keys: Vec<String> = crate::export::scan_items(ddb, table)
        .await
        .iter()
        .map(|it| match (it.get("pk"), it.get("sk")) {
            (Some(Av::S(pk)), Some(Av::N(sk))) => format!("{pk}|{sk}"),
            other => panic!("item without pk/sk: {other:?}"),
        })
        .collect();
    keys.sort();
    keys
}

/// A `crossdock` child process whose stdout and stderr go to files in `dir`.
pub struct Proc {
    pub child: tokio::process::Child,
    pub name: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    /// Starts the real binary with `args`; `name` names its output files (appended).
    pub fn spawn(dir: &Path, name: &str, args: &[String]) -> Proc {
        Proc::spawn_with_env(dir, name, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables for the child (e.g. another
    /// `STORAGE_EMULATOR_HOST`).
    pub fn spawn_with_env(dir: &Path, name: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_without(dir, name, args, env, &[])
    }

    /// [`Proc::spawn_with_env`] with the variables `unset` taken out of the inherited
    /// environment (an empty value is not the same as unset to every library).
    pub fn spawn_without(dir: &Path, name: &str, args: &[String], env: &[(&str, &str)], unset: &[&str]) -> Proc {
        let open = |ext: &str| std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.{ext}"))).expect("output file");
        let mut cmd = tokio::process::Command::new(crate::crossdock_bin());
        cmd.args(args).envs(env.iter().copied());
        for name in unset {
            cmd.env_remove(name);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(open("out"))
            .stderr(open("log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn crossdock {args:?}: {e}"));
        Proc { child, name: name.into(), stdout: dir.join(format!("{name}.out")), stderr: dir.join(format!("{name}.log")) }
    }

    /// Sends a signal (`"TERM"`, `"KILL"`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running");
        let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().expect("kill").success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Whether it has exited already.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the exit, up to `limit` (panics with the log tail if it runs on).
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(r) => r.expect("wait"),
            Err(_) => panic!("{} still running after {limit:?}; log:\n{}", self.name, self.log_tail()),
        }
    }

    /// The JSON object printed on stdout (`--output json`).
    pub fn json(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        parse_json(&text).unwrap_or_else(|| panic!("{}: no JSON object on stdout:\n{text}\nlog:\n{}", self.name, self.log_tail()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (panics with the log tail after `limit`,
    /// or if the process exits first).
    pub async fn wait_log(&mut self, needle: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while !self.log_text().contains(needle) {
            if let Some(st) = self.exited() {
                panic!("{} exited ({st}) before logging {needle:?}; log:\n{}", self.name, self.log_tail());
            }
            assert!(std::time::Instant::now() < deadline, "{} did not log {needle:?} within {limit:?}; log:\n{}", self.name, self.log_tail());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last 30 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Runs the binary to completion (up to `limit`) and returns (exit code, stdout JSON or Null, log).
pub async fn run(dir: &Path, name: &str, args: &[String], limit: Duration) -> (Option<i32>, serde_json::Value, String) {
    let mut p = Proc::spawn(dir, name, args);
    let status = p.wait(limit).await;
    let text = std::fs::read_to_string(&p.stdout).unwrap_or_default();
    (status.code(), parse_json(&text).unwrap_or(serde_json::Value::Null), p.log_text())
}

/// The JSON object of a `--output json` stdout: the whole text (pretty-printed), or
/// else its last line that is one.
pub fn parse_json(text: &str) -> Option<serde_json::Value> {
    serde_json::from_str(text.trim()).ok().or_else(|| text.lines().rev().find(|l| l.trim_start().starts_with('{')).and_then(|l| serde_json::from_str(l).ok()))
}

/// A fresh temp directory for a test's pipeline file and process outputs.
pub fn work_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(crate::unique(prefix));
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// Writes a pipeline file for the local stack into `dir`: source bucket `src`, relay
/// bucket `dst`, PostgreSQL (`schema`) for tables with an index and Bigtable for the
/// rest, the tables named, and `extra` TOML appended. Endpoints stay `${VAR}` values,
/// expanded by the binary from the stack's environment.
pub fn write_pipeline(dir: &Path, src: &str, dst: &str, pg_schema: &str, tables: &[&str], extra: &str) -> PathBuf {
    let mut text = format!(
        r#"# Written by crossdock_tests::pipeline for one test run.
name = "faults"
{extra}

[source]
bucket = "{src}"
prefix = ""
read_ratio = 1.0

[relay]
bucket = "{dst}"
codec = "zstd"

[targets.relational]
kind = "postgres"
url = "${{CROSSDOCK_PG_URL}}"
schema = "{pg_schema}"

[targets.wide_column]
kind = "bigtable"
project = "${{CROSSDOCK_GCP_PROJECT}}"
instance = "{instance}"
create_tables = true
"#,
        instance = crate::bigtable_instance(),
    );
    for t in tables {
        text.push_str(&format!("\n[[tables]]\nname = \"{t}\"\n"));
    }
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).expect("write pipeline");
    p
}

/// The tables of a PostgreSQL schema.
pub async fn pg_tables(pg: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    let rows = pg.query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", &[&schema]).await.expect("list tables");
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// `pk|sk` of every row of `schema.table` (columns `pk`, `sk`), sorted, and the row count.
pub async fn pg_keys(pg: &tokio_postgres::Client, schema: &str, table: &str) -> (i64, Vec<String>) {
    let count: i64 = pg.query_one(&format!("SELECT count(*) FROM \"{schema}\".\"{table}\""), &[]).await.expect("count").get(0);
    let rows = pg.query(&format!("SELECT pk::text || '|' || sk::text FROM \"{schema}\".\"{table}\""), &[]).await.expect("keys");
    let mut keys: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    keys.sort();
    (count, keys)
}

/// Every row key of a Bigtable table (raw bytes as UTF-8, lossy), sorted.
pub async fn bigtable_row_keys(table: &str) -> Vec<String> {
    use bigtable_rs::bigtable::BigTableConnection;
    use bigtable_rs::google::bigtable::v2::row_filter::Filter;
    use bigtable_rs::google::bigtable::v2::{ReadRowsRequest, RowFilter};
    crate::stack_var("BIGTABLE_EMULATOR_HOST");
    let conn =
        BigTableConnection::new(&crate::gcp_project(), &crate::bigtable_instance(), true, 1, Some(Duration::from_secs(60))).await.expect("Bigtable connection");
    let mut client = conn.client();
    let req = ReadRowsRequest {
        table_name: client.get_full_table_name(table),
        filter: Some(RowFilter { filter: Some(Filter::CellsPerRowLimitFilter(1)) }),
        ..Default::default()
    };
    let rows = client.read_rows(req).await.unwrap_or_else(|e| panic!("read Bigtable table {table}: {e}"));
    let mut keys: Vec<String> = rows.into_iter().map(|(k, _)| String::from_utf8_lossy(&k).into_owned()).collect();
    keys.sort();
    keys
}
