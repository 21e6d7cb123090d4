//! Pipeline files (TOML): which tables move, where they are dumped and relayed, which
//! targets they land in and with what batch settings. Parsed with
//! `deny_unknown_fields`, validated in one [`PipelineFile::build`] step.
//!
//! String values in `[targets.*]` may use `${VAR}` to read the environment (so one
//! file serves the demo, CI and production).

use crate::codec::Codec;
use crate::layout::{validate_prefix, validate_table};
use crate::routing::{Route, RouteRule};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Why a pipeline file was refused. Messages name the field and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot parse pipeline file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("pipeline file {path}: {field}: {message}")]
    Invalid { path: String, field: String, message: String },
}

/// Where the DynamoDB tables are dumped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// S3 bucket receiving the dumps.
    pub bucket: String,
    /// Key prefix inside the bucket: empty, or ending with `/`.
    #[serde(default)]
    pub prefix: String,
    /// AWS region of the tables and bucket (defaults to the environment's).
    pub region: Option<String>,
    /// Share of the table's read capacity the export may use, in (0, 1.5].
    #[serde(default = "default_read_ratio")]
    pub read_ratio: f64,
}

fn default_read_ratio() -> f64 {
    0.5
}

/// Where the relay writes, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Destination GCS bucket (defaults to the source bucket's name).
    pub bucket: Option<String>,
    /// Codec for data parts.
    #[serde(default)]
    pub codec: Codec,
    /// Codec level (defaults to the codec's CLI default).
    pub level: Option<i32>,
}

/// One target database. Its `Debug` shows a PostgreSQL URL redacted
/// ([`crate::redact::url`]): the URL usually carries the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetConfig {
    /// Cloud Spanner: `database = "projects/P/instances/I/databases/D"`.
    Spanner { database: String },
    /// PostgreSQL: `url = "postgres://…"`, tables created in `schema`.
    Postgres {
        url: String,
        #[serde(default = "default_pg_schema")]
        schema: String,
    },
    /// Bigtable: project, instance, and the single column family used.
    Bigtable {
        project: String,
        instance: String,
        #[serde(default = "default_family")]
        column_family: String,
        /// Whether the loader may create a missing table (through the admin API, which
        /// needs `bigtable.tables.create`). Off by default: on Cloud Bigtable tables are
        /// usually created by Terraform and the loader holds data permissions only; a
        /// missing table is then an error naming the `cbt createtable` command.
        #[serde(default)]
        create_tables: bool,
    },
}

fn default_pg_schema() -> String {
    "public".into()
}
fn default_family() -> String {
    "d".into()
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetConfig::Spanner { database } => f.debug_struct("Spanner").field("database", database).finish(),
            TargetConfig::Postgres { url, schema } => f.debug_struct("Postgres").field("url", &crate::redact::Redacted(url)).field("schema", schema).finish(),
            TargetConfig::Bigtable { project, instance, column_family, create_tables } => f
                .debug_struct("Bigtable")
                .field("project", project)
                .field("instance", instance)
                .field("column_family", column_family)
                .field("create_tables", create_tables)
                .finish(),
        }
    }
}

impl TargetConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Spanner { .. } => "spanner",
            TargetConfig::Postgres { .. } => "postgres",
            TargetConfig::Bigtable { .. } => "bigtable",
        }
    }
    fn route(&self) -> Route {
        match self {
            TargetConfig::Bigtable { .. } => Route::WideColumn,
            _ => Route::Relational,
        }
    }
}

/// The targets, one per route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsConfig {
    /// Spanner or PostgreSQL: tables with secondary indexes (under `route = "auto"`).
    pub relational: Option<TargetConfig>,
    /// Bigtable: tables without secondary indexes.
    pub wide_column: Option<TargetConfig>,
}

/// Batch knobs; anything unset uses the target's tuned default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Starting rows per batch.
    pub rows: Option<usize>,
    /// Upper bound of rows per batch (never above the service limit).
    pub max_rows: Option<usize>,
    /// Parallel writers.
    pub writers: Option<usize>,
    /// Adapt the batch size to throughput and throttling (default true).
    pub adaptive: Option<bool>,
    /// Seconds one batch write may go unanswered before it is abandoned and retried
    /// (default [`crate::retry::TARGET_WRITE_TIMEOUT`]).
    pub write_timeout_secs: Option<u64>,
}

impl BatchConfig {
    /// Field-wise override: `self`'s values win over `base`.
    pub fn or(self, base: BatchConfig) -> BatchConfig {
        BatchConfig {
            rows: self.rows.or(base.rows),
            max_rows: self.max_rows.or(base.max_rows),
            writers: self.writers.or(base.writers),
            adaptive: self.adaptive.or(base.adaptive),
            write_timeout_secs: self.write_timeout_secs.or(base.write_timeout_secs),
        }
    }
}

/// One table of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// DynamoDB table name.
    pub name: String,
    /// Overrides the pipeline's route rule for this table.
    pub route: Option<RouteRule>,
    /// Name of the table in the target (defaults to the DynamoDB name, sanitised).
    pub destination: Option<String>,
    /// Overrides of the pipeline's batch settings.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Number attributes (`N`, `NS`) the relational target stores as FLOAT64 /
    /// `double precision`, by choice: lossy past 15–17 significant digits, so never
    /// chosen otherwise. Key attributes cannot be listed (two numbers could become one
    /// key). Bigtable keeps every number's exact text and ignores the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float64_attributes: Vec<String>,
}

/// A pipeline file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// A name for logs and metrics.
    pub name: String,
    pub source: SourceConfig,
    pub relay: RelayConfig,
    #[serde(default)]
    pub targets: TargetsConfig,
    /// Default route rule (`auto`, `relational`, `wide-column`).
    #[serde(default)]
    pub route: RouteRule,
    /// Default batch settings for every table.
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub tables: Vec<TableConfig>,
}

/// The source side of a pipeline: where dumps go and how the relay writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSide {
    pub source: SourceConfig,
    pub dst_bucket: String,
    pub codec: Codec,
    pub level: i32,
}

/// A validated pipeline, ready for the phases.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub source: SourceConfig,
    pub dst_bucket: String,
    pub codec: Codec,
    pub level: i32,
    pub relational: Option<TargetConfig>,
    pub wide_column: Option<TargetConfig>,
    pub route: RouteRule,
    pub batch: BatchConfig,
    pub tables: Vec<TableConfig>,
}

impl PipelineFile {
    /// Parses TOML text; `path` is used in messages.
    pub fn parse(path: &str, text: &str) -> Result<PipelineFile, PipelineError> {
        toml::from_str(text).map_err(|e| PipelineError::Parse { path: path.into(), message: e.to_string() })
    }

    /// The `[source]` and `[relay]` sections, validated: what `export` and `relay` read,
    /// without the targets (or the secrets their `${VAR}`s name).
    pub fn build_source(&self, path: &str) -> Result<SourceSide, PipelineError> {
        let bad = |field: &str, message: String| PipelineError::Invalid { path: path.into(), field: field.into(), message };
        let s = &self.source;
        if s.bucket.is_empty() {
            return Err(bad("source.bucket", "must name the S3 bucket the dumps go to".into()));
        }
        validate_prefix(&s.prefix).map_err(|e| bad("source.prefix", e.to_string()))?;
        if !(s.read_ratio > 0.0 && s.read_ratio <= 1.5) {
            return Err(bad("source.read_ratio", format!("{} is outside (0, 1.5]", s.read_ratio)));
        }
        let level = self.relay.codec.level(self.relay.level).map_err(|e| bad("relay.level", e.to_string()))?;
        let dst_bucket = self.relay.bucket.clone().unwrap_or_else(|| s.bucket.clone());
        Ok(SourceSide { source: s.clone(), dst_bucket, codec: self.relay.codec, level })
    }

    /// Validates and resolves `${VAR}` references with `env`.
    pub fn build(self, path: &str, env: impl Fn(&str) -> Option<String>) -> Result<Pipeline, PipelineError> {
        let bad = |field: &str, message: String| PipelineError::Invalid { path: path.into(), field: field.into(), message };
        let SourceSide { level, dst_bucket, .. } = self.build_source(path)?;
        let resolve = |field: &str, t: Option<TargetConfig>, route: Route| -> Result<Option<TargetConfig>, PipelineError> {
            let Some(t) = t else { return Ok(None) };
            if t.route() != route {
                return Err(bad(field, format!("a {} target cannot serve the {route:?} route", t.kind())));
            }
            let sub = |key: &str, v: &str| expand(v, &env).map_err(|m| bad(&format!("{field}.{key}"), m));
            Ok(Some(match t {
                TargetConfig::Spanner { database } => TargetConfig::Spanner { database: sub("database", &database)? },
                TargetConfig::Postgres { url, schema } => TargetConfig::Postgres { url: sub("url", &url)?, schema: sub("schema", &schema)? },
                TargetConfig::Bigtable { project, instance, column_family, create_tables } => {
                    let column_family = sub("column_family", &column_family)?;
                    // Bigtable's rule for family names; checked here so a typo fails before
                    // any table is looked at.
                    let valid = column_family.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                        && column_family.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                    if !valid {
                        return Err(bad(
                            &format!("{field}.column_family"),
                            format!("{column_family:?} is not a Bigtable column family name ([_a-zA-Z0-9][-_.a-zA-Z0-9]*)"),
                        ));
                    }
                    TargetConfig::Bigtable { project: sub("project", &project)?, instance: sub("instance", &instance)?, column_family, create_tables }
                }
            }))
        };
        let relational = resolve("targets.relational", self.targets.relational, Route::Relational)?;
        let wide_column = resolve("targets.wide_column", self.targets.wide_column, Route::WideColumn)?;
        let mut seen = BTreeSet::new();
        for (i, t) in self.tables.iter().enumerate() {
            validate_table(&t.name).map_err(|e| bad(&format!("tables[{i}].name"), e.to_string()))?;
            if !seen.insert(t.name.as_str()) {
                return Err(bad(&format!("tables[{i}].name"), format!("table {:?} is listed twice", t.name)));
            }
            let mut attrs = BTreeSet::new();
            for a in &t.float64_attributes {
                if a.is_empty() || !attrs.insert(a.as_str()) {
                    let why = if a.is_empty() { "an attribute name is empty".to_string() } else { format!("attribute {a:?} is listed twice") };
                    return Err(bad(&format!("tables[{i}].float64_attributes"), why));
                }
            }
        }
        for (field, b) in
            std::iter::once(("batch".to_string(), &self.batch)).chain(self.tables.iter().enumerate().map(|(i, t)| (format!("tables[{i}].batch"), &t.batch)))
        {
            if b.rows == Some(0) || b.max_rows == Some(0) || b.writers == Some(0) || b.write_timeout_secs == Some(0) {
                return Err(bad(&field, "rows, max_rows, writers and write_timeout_secs must be at least 1".into()));
            }
        }
        Ok(Pipeline {
            name: self.name,
            source: self.source,
            dst_bucket,
            codec: self.relay.codec,
            level,
            relational,
            wide_column,
            route: self.route,
            batch: self.batch,
            tables: self.tables,
        })
    }
}

/// Replaces `${VAR}` with the variable's value; an unset variable is an error.
///
/// Messages name the variable, never the value: target values are where credentials
/// live (a PostgreSQL URL with its password written inline), and the error is
/// printed. The caller's field name says where to look.
fn expand(v: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            return Err("unterminated ${ (no closing })".into());
        };
        let var = &rest[start + 2..start + len];
        // Checked before use so a value pasted between the braces by mistake (a whole
        // URL with its password) is never echoed as a "variable name".
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("${…} must hold an environment variable name (letters, digits, _)".into());
        }
        out.push_str(&env(var).ok_or_else(|| format!("environment variable {var} is not set"))?);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Pipeline {
    /// The configuration of `table` (a default entry if the file does not list it).
    pub fn table(&self, table: &str) -> TableConfig {
        self.tables.iter().find(|t| t.name == table).cloned().unwrap_or(TableConfig {
            name: table.into(),
            route: None,
            destination: None,
            batch: BatchConfig::default(),
            float64_attributes: Vec::new(),
        })
    }

    /// The route rule, target and batch settings for a table.
    pub fn target_for(&self, table: &str, schema: &crate::schema::TableSchema) -> (Route, Option<&TargetConfig>, BatchConfig) {
        let t = self.table(table);
        let route = t.route.unwrap_or(self.route).route(schema);
        let target = match route {
            Route::Relational => self.relational.as_ref(),
            Route::WideColumn => self.wide_column.as_ref(),
        };
        (route, target, t.batch.or(self.batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::sample_schema;

    const FILE: &str = r#"
name = "demo"
[source]
bucket = "dumps"
prefix = "exports/"
[relay]
bucket = "landing"
codec = "gzip"
[targets.relational]
kind = "postgres"
url = "${PG_URL}"
[targets.wide_column]
kind = "bigtable"
project = "p"
instance = "i"
create_tables = true
[batch]
writers = 4
[[tables]]
name = "Orders"
route = "wide-column"
[tables.batch]
rows = 500
"#;

    fn env(v: &str) -> Option<String> {
        (v == "PG_URL").then(|| "postgres://localhost/db".to_string())
    }

    #[test]
    fn parses_builds_and_routes() {
        let p = PipelineFile::parse("demo.toml", FILE).expect("parses").build("demo.toml", env).expect("valid");
        assert_eq!((p.dst_bucket.as_str(), p.codec, p.level), ("landing", Codec::Gzip, 6));
        assert_eq!(p.relational, Some(TargetConfig::Postgres { url: "postgres://localhost/db".into(), schema: "public".into() }));
        let schema = sample_schema();
        let (route, target, batch) = p.target_for("Orders", &schema);
        assert_eq!((route, target.map(TargetConfig::kind)), (Route::WideColumn, Some("bigtable")));
        assert_eq!((batch.rows, batch.writers), (Some(500), Some(4)));
        assert!(matches!(p.wide_column, Some(TargetConfig::Bigtable { create_tables: true, .. })));
        let off = PipelineFile::parse("x.toml", &FILE.replace("create_tables = true\n", "")).expect("parses").build("x.toml", env).expect("valid");
        assert!(matches!(off.wide_column, Some(TargetConfig::Bigtable { create_tables: false, .. })), "table creation is opt-in");
        let (route, target, _) = p.target_for("Other", &schema);
        assert_eq!((route, target.map(TargetConfig::kind)), (Route::Relational, Some("postgres")));
    }

    #[test]
    fn the_source_side_needs_no_target_variables() {
        // `export` and `relay` read the pipeline where the targets' secrets are not set.
        let file = PipelineFile::parse("x.toml", &FILE.replace("${PG_URL}", "${NOPE}")).expect("parses");
        let side = file.build_source("x.toml").expect("source side");
        assert_eq!(
            (side.source.bucket.as_str(), side.source.prefix.as_str(), side.dst_bucket.as_str(), side.codec, side.level),
            ("dumps", "exports/", "landing", Codec::Gzip, 6)
        );
        assert!(file.build_source("x.toml").is_ok() && file.build("x.toml", env).is_err(), "the whole pipeline still needs them");
        let bad = PipelineFile::parse("x.toml", &FILE.replace("prefix = \"exports/\"", "prefix = \"exports\"")).expect("parses");
        assert!(bad.build_source("x.toml").expect_err("bad prefix").to_string().contains("source.prefix"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = PipelineFile::parse("x.toml", &FILE.replace("codec = \"gzip\"", "codec = \"gzip\"\ncolour = 1")).expect_err("unknown key");
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
        let build = |text: &str| PipelineFile::parse("x.toml", text).expect("parses").build("x.toml", env).expect_err("invalid").to_string();
        assert!(build(&FILE.replace("${PG_URL}", "${NOPE}")).contains("NOPE is not set"));
        assert!(build(&FILE.replace("prefix = \"exports/\"", "prefix = \"exports\"")).contains("source.prefix"));
        assert!(build(&FILE.replace("[source]", "[source]\nread_ratio = 2.0")).contains("source.read_ratio"));
        assert!(build(&FILE.replace("kind = \"postgres\"\nurl = \"${PG_URL}\"", "kind = \"bigtable\"\nproject = \"p\"\ninstance = \"i\""))
            .contains("targets.relational"));
        assert!(build(&FILE.replace("name = \"Orders\"", "name = \"../x\"")).contains("tables[0].name"));
        assert!(build(&format!("{FILE}\n[[tables]]\nname = \"Orders\"\n")).contains("listed twice"));
        let floats = |list: &str| FILE.replace("route = \"wide-column\"", &format!("route = \"wide-column\"\nfloat64_attributes = {list}"));
        assert!(build(&floats(r#"["ratio", "ratio"]"#)).contains("tables[0].float64_attributes"));
        assert!(build(&floats(r#"[""]"#)).contains("tables[0].float64_attributes"));
        let p = PipelineFile::parse("x.toml", &floats(r#"["ratio", "score"]"#)).expect("parses").build("x.toml", env).expect("valid");
        assert_eq!(p.table("Orders").float64_attributes, ["ratio", "score"]);
        assert!(p.table("Other").float64_attributes.is_empty());
        assert!(PipelineFile::parse("x.toml", &floats("\"ratio\"")).is_err(), "a list, not a string");
        assert!(build(&FILE.replace("codec = \"gzip\"", "codec = \"gzip\"\nlevel = 12")).contains("relay.level"));
        assert!(build(&FILE.replace("instance = \"i\"", "instance = \"i\"\ncolumn_family = \"a b\"")).contains("targets.wide_column.column_family"));
        assert!(PipelineFile::parse("x.toml", &FILE.replace("create_tables = true", "create_tables = \"yes\"")).is_err());
    }

    #[test]
    fn expansion_errors_never_echo_values() {
        let build = |url: &str| {
            let text = FILE.replace("${PG_URL}", url);
            PipelineFile::parse("x.toml", &text).expect("parses").build("x.toml", env).expect_err("invalid").to_string()
        };
        for url in ["postgres://app:Hunter2Pw@db/${NOPE}", "postgres://app:Hunter2Pw@db/${NOPE", "${postgres://app:Hunter2Pw@db/x}"] {
            let e = build(url);
            assert!(!e.contains("Hunter2Pw") && e.contains("targets.relational.url"), "{url}: {e}");
        }
        assert!(build("postgres://app:Hunter2Pw@db/${NOPE}").contains("NOPE is not set"));
        let p = PipelineFile::parse("x.toml", FILE).expect("parses");
        let p = p.build("x.toml", |_| Some("postgres://app:Hunter2Pw@db/x".into())).expect("valid");
        let shown = format!("{p:?}");
        assert!(!shown.contains("Hunter2Pw") && shown.contains("postgres://app:REDACTED@db/…"), "{shown}");
    }
}
