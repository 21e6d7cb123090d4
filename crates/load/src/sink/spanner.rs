//! Cloud Spanner: `InsertOrUpdate` mutations, commits sized under 80,000 mutations
//! (every column and every index entry's columns counted) and the byte limit; Aborted,
//! ResourceExhausted, Unavailable, DeadlineExceeded and cut connections are retryable.

use super::contention::Contention;
use super::{BatchLimits, CallStats, Target};
use crate::error::LoadError;
use crate::schema::{compat_diff, Cell, Column, ColumnType, Row, TableModel, TargetKind};
use base64::Engine as _;
use gcloud_googleapis::spanner::admin::database::v1::UpdateDatabaseDdlRequest;
use gcloud_googleapis::spanner::v1::mutation::{Operation, Write};
use gcloud_googleapis::spanner::v1::Mutation;
use gcloud_spanner::client::{Client, ClientConfig};
use gcloud_spanner::key::Key;
use gcloud_spanner::statement::{Statement, ToKind};
use prost_types::value::Kind;
use prost_types::{ListValue, Value};

pub struct SpannerTarget {
    database: String,
    client: Client,
    /// Commits set aside from each other after an abort.
    contention: Contention,
    admin: gcloud_spanner::admin::client::Client,
    stats: CallStats,
}

fn q(ident: &str) -> String {
    format!("`{ident}`")
}

/// One commit of `mutations` in a read-write transaction ended by hand: unlike
/// gcloud-spanner's `apply_at_least_once`, which retries an aborted commit inside
/// itself (after 10 ms, 100 ms, then 1 s, whatever its options say), it lets the
/// abort through, so [`SpannerTarget::commit`] can see contention and act on it. The
/// price is a `BeginTransaction` call per commit.
async fn commit_once(client: &Client, mutations: &[Mutation]) -> Result<(), gcloud_spanner::client::Error> {
    let mut tx = client.begin_read_write_transaction().await?;
    tx.buffer_write(mutations.to_vec());
    let no_retry = gcloud_gax::retry::RetrySetting { take: 0, codes: Vec::new(), ..Default::default() };
    let options = gcloud_spanner::transaction_rw::CommitOptions {
        call_options: gcloud_spanner::transaction::CallOptions { retry: Some(no_retry), ..Default::default() },
        ..Default::default()
    };
    tx.end(Ok::<(), gcloud_spanner::client::Error>(()), Some(options)).await.map(drop)
}

fn aborted(e: &gcloud_spanner::client::Error) -> bool {
    matches!(e, gcloud_spanner::client::Error::GRPC(s) if s.code() == tonic::Code::Aborted)
}

fn status_err(op: &'static str, table: &str, s: &tonic::Status) -> LoadError {
    LoadError::Target {
        target: "spanner",
        op,
        table: table.into(),
        message: format!("{:?}: {}", s.code(), s.message()),
        retryable: super::grpc_retryable(s, &[]),
    }
}

fn client_err(op: &'static str, table: &str, e: gcloud_spanner::client::Error) -> LoadError {
    match &e {
        gcloud_spanner::client::Error::GRPC(s) => status_err(op, table, s),
        gcloud_spanner::client::Error::InvalidSession(_) | gcloud_spanner::client::Error::Connection(_) => {
            LoadError::Target { target: "spanner", op, table: table.into(), message: e.to_string(), retryable: true }
        }
        _ => LoadError::Target { target: "spanner", op, table: table.into(), message: e.to_string(), retryable: false },
    }
}

/// The type of a column as Spanner's `INFORMATION_SCHEMA.COLUMNS.SPANNER_TYPE` spells it.
pub fn spanner_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Int64 => "INT64",
        ColumnType::Numeric => "NUMERIC",
        ColumnType::Float64 => "FLOAT64",
        ColumnType::String => "STRING(MAX)",
        ColumnType::Bytes => "BYTES(MAX)",
        ColumnType::Bool => "BOOL",
        ColumnType::StringArray => "ARRAY<STRING(MAX)>",
        ColumnType::Int64Array => "ARRAY<INT64>",
        ColumnType::NumericArray => "ARRAY<NUMERIC>",
        ColumnType::Float64Array => "ARRAY<FLOAT64>",
        ColumnType::BytesArray => "ARRAY<BYTES(MAX)>",
        ColumnType::Json => "JSON",
        ColumnType::DecimalText => "STRING(MAX)",
        ColumnType::DecimalTextArray => "ARRAY<STRING(MAX)>",
    }
}

fn v(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}
fn s(x: String) -> Value {
    v(Kind::StringValue(x))
}
fn list(values: Vec<Value>) -> Value {
    v(Kind::ListValue(ListValue { values }))
}
fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn to_value(c: &Cell) -> Value {
    match c {
        Cell::Null => v(Kind::NullValue(0)),
        Cell::Int(i) => s(i.to_string()),
        Cell::Num(n) | Cell::Str(n) | Cell::Json(n) => s(n.clone()),
        Cell::Float(f) => v(Kind::NumberValue(*f)),
        Cell::Bytes(b) => s(b64(b)),
        Cell::Bool(b) => v(Kind::BoolValue(*b)),
        Cell::StrArr(a) | Cell::NumArr(a) => list(a.iter().cloned().map(s).collect()),
        Cell::IntArr(a) => list(a.iter().map(|i| s(i.to_string())).collect()),
        Cell::FloatArr(a) => list(a.iter().map(|f| v(Kind::NumberValue(*f))).collect()),
        Cell::BytesArr(a) => list(a.iter().map(|b| s(b64(b))).collect()),
    }
}

fn scalar_from(ty: ColumnType, val: &Value) -> Result<Cell, String> {
    let kind = val.kind.as_ref().ok_or("value without kind")?;
    let bad = || format!("unexpected {kind:?} for {ty:?}");
    let text = || match kind {
        Kind::StringValue(x) => Ok(x.clone()),
        _ => Err(bad()),
    };
    let bytes = |t: String| base64::engine::general_purpose::STANDARD.decode(t).map_err(|e| e.to_string());
    let float = || match kind {
        Kind::NumberValue(f) => Ok(*f),
        Kind::StringValue(x) => x.parse::<f64>().map_err(|e| e.to_string()),
        _ => Err(bad()),
    };
    if matches!(kind, Kind::NullValue(_)) {
        return Ok(Cell::Null);
    }
    Ok(match ty {
        ColumnType::Int64 => Cell::Int(text()?.parse().map_err(|e: std::num::ParseIntError| e.to_string())?),
        ColumnType::Numeric | ColumnType::DecimalText => Cell::Num(text()?),
        ColumnType::Float64 => Cell::Float(float()?),
        ColumnType::String => Cell::Str(text()?),
        ColumnType::Bytes => Cell::Bytes(bytes(text()?)?),
        ColumnType::Bool => match kind {
            Kind::BoolValue(b) => Cell::Bool(*b),
            _ => return Err(bad()),
        },
        ColumnType::Json => Cell::Json(text()?),
        ColumnType::StringArray
        | ColumnType::Int64Array
        | ColumnType::NumericArray
        | ColumnType::DecimalTextArray
        | ColumnType::Float64Array
        | ColumnType::BytesArray => {
            let Kind::ListValue(l) = kind else { return Err(bad()) };
            let elem = match ty {
                ColumnType::StringArray => ColumnType::String,
                ColumnType::Int64Array => ColumnType::Int64,
                ColumnType::NumericArray | ColumnType::DecimalTextArray => ColumnType::Numeric,
                ColumnType::Float64Array => ColumnType::Float64,
                _ => ColumnType::Bytes,
            };
            let cells: Vec<Cell> = l.values.iter().map(|x| scalar_from(elem, x)).collect::<Result<_, _>>()?;
            match ty {
                ColumnType::StringArray => Cell::StrArr(cells.into_iter().filter_map(|c| if let Cell::Str(x) = c { Some(x) } else { None }).collect()),
                ColumnType::Int64Array => Cell::IntArr(cells.into_iter().filter_map(|c| if let Cell::Int(x) = c { Some(x) } else { None }).collect()),
                ColumnType::NumericArray | ColumnType::DecimalTextArray => {
                    Cell::NumArr(cells.into_iter().filter_map(|c| if let Cell::Num(x) = c { Some(x) } else { None }).collect())
                }
                ColumnType::Float64Array => Cell::FloatArr(cells.into_iter().filter_map(|c| if let Cell::Float(x) = c { Some(x) } else { None }).collect()),
                _ => Cell::BytesArr(cells.into_iter().filter_map(|c| if let Cell::Bytes(x) = c { Some(x) } else { None }).collect()),
            }
        }
    })
}

/// One row of raw values, in model column order, as cells.
fn decode_row(model: &TableModel, values: &[Value]) -> Result<Row, LoadError> {
    model
        .columns
        .iter()
        .zip(values)
        .map(|(c, v)| {
            scalar_from(c.ty, v).map_err(|m| LoadError::Target {
                target: "spanner",
                op: "read",
                table: model.name.clone(),
                message: format!("column {}: {m}", c.name),
                retryable: false,
            })
        })
        .collect()
}

/// The primary key of a row, as Spanner keys are written.
fn key_of(model: &TableModel, row: &Row) -> Key {
    let parts: Vec<KeyPart> = model.primary_key.iter().map(|&k| KeyPart(to_value(&row[k]))).collect();
    Key::composite(&parts.iter().map(|p| p as &dyn ToKind).collect::<Vec<_>>())
}

/// A key element already encoded as a Spanner value (the form mutations use).
struct KeyPart(Value);

impl ToKind for KeyPart {
    fn to_kind(&self) -> Kind {
        self.0.kind.clone().unwrap_or(Kind::NullValue(0))
    }

    // Keys carry no type annotation; the read names the table, whose key types Spanner knows.
    fn get_type() -> gcloud_googleapis::spanner::v1::Type {
        <String as ToKind>::get_type()
    }
}

/// A raw column value of a result row.
struct Raw(Value);

impl gcloud_spanner::row::TryFromValue for Raw {
    fn try_from(value: &Value, _field: &gcloud_googleapis::spanner::v1::struct_type::Field) -> Result<Self, gcloud_spanner::row::Error> {
        Ok(Raw(value.clone()))
    }
}

impl SpannerTarget {
    /// Connects to `projects/P/instances/I/databases/D` signed in through `gcp` (the
    /// emulator when `SPANNER_EMULATOR_HOST` is set).
    pub async fn connect(gcp: &crossdock_gcp::Gcp, database: &str) -> Result<SpannerTarget, LoadError> {
        let cfg = |e: String| LoadError::Config(format!("Spanner {database}: {e}"));
        let config: ClientConfig = gcp.spanner_config().await.map_err(LoadError::auth("Spanner"))?;
        let client = Client::new(database, config).await.map_err(|e| cfg(e.to_string()))?;
        let admin_config = gcp.spanner_admin_config().await.map_err(LoadError::auth("Spanner"))?;
        let admin = gcloud_spanner::admin::client::Client::new(admin_config).await.map_err(|e| cfg(e.to_string()))?;
        Ok(SpannerTarget { database: database.into(), client, contention: Contention::new(), admin, stats: CallStats::default() })
    }

    /// Commits `mutations`; an abort (the commit met another transaction: on the
    /// emulator, any other) goes through [`Contention`], any other failure to the
    /// loader's `Policy::TARGET_WRITE`.
    async fn commit(&self, op: &'static str, table: &str, mutations: &[Mutation]) -> Result<(), LoadError> {
        self.contention.commit("spanner", aborted, || commit_once(&self.client, mutations)).await.map_err(|e| client_err(op, table, e))
    }

    /// (name, type, nullable) of the table's columns; none when it does not exist.
    async fn columns(&self, model: &TableModel) -> Result<Vec<Vec<Value>>, LoadError> {
        let mut stmt = Statement::new(
            "SELECT COLUMN_NAME, SPANNER_TYPE, IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t ORDER BY ORDINAL_POSITION",
        );
        stmt.add_param("t", &model.name);
        self.query(&model.name, stmt, 3).await
    }

    fn create_table_sql(model: &TableModel) -> String {
        let cols: Vec<String> =
            model.columns.iter().map(|c| format!("{} {}{}", q(&c.name), spanner_type(c.ty), if c.key { " NOT NULL" } else { "" })).collect();
        let pk: Vec<String> = model.primary_key.iter().map(|&i| q(&model.columns[i].name)).collect();
        format!("CREATE TABLE {} ({}) PRIMARY KEY ({})", q(&model.name), cols.join(", "), pk.join(", "))
    }

    fn index_sql(model: &TableModel) -> Vec<(String, String)> {
        model
            .indexes
            .iter()
            .map(|ix| {
                let cols: Vec<String> = ix.columns.iter().map(|&i| q(&model.columns[i].name)).collect();
                let storing: Vec<String> = ix.storing.iter().map(|&i| q(&model.columns[i].name)).collect();
                let storing = if storing.is_empty() { String::new() } else { format!(" STORING ({})", storing.join(", ")) };
                (ix.name.clone(), format!("CREATE NULL_FILTERED INDEX {} ON {} ({}){storing}", q(&ix.name), q(&model.name), cols.join(", ")))
            })
            .collect()
    }

    async fn run_ddl(&self, table: &str, statements: Vec<String>) -> Result<(), LoadError> {
        let req = UpdateDatabaseDdlRequest { database: self.database.clone(), statements, ..Default::default() };
        let mut op = self.admin.database().update_database_ddl(req, None).await.map_err(|s| status_err("ddl", table, &s))?;
        op.wait(None).await.map_err(|s| status_err("ddl", table, &s))?;
        Ok(())
    }

    async fn query(&self, table: &str, stmt: Statement, width: usize) -> Result<Vec<Vec<Value>>, LoadError> {
        let mut tx = self.client.single().await.map_err(|e| client_err("read", table, e))?;
        let mut iter = tx.query(stmt).await.map_err(|s| status_err("read", table, &s))?;
        let mut out = Vec::new();
        while let Some(row) = iter.next().await.map_err(|s| status_err("read", table, &s))? {
            let mut vals = Vec::with_capacity(width);
            for i in 0..width {
                let raw: Raw = row.column(i).map_err(|e| LoadError::Target {
                    target: "spanner",
                    op: "read",
                    table: table.into(),
                    message: e.to_string(),
                    retryable: false,
                })?;
                vals.push(raw.0);
            }
            out.push(vals);
        }
        Ok(out)
    }
}

fn text_of(v: &Value) -> String {
    match &v.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

impl Target for SpannerTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Spanner
    }

    fn destination(&self, model: &TableModel) -> String {
        format!("{}/tables/{}", self.database, model.name)
    }

    fn ddl(&self, model: &TableModel) -> Vec<String> {
        let mut v = vec![Self::create_table_sql(model)];
        v.extend(Self::index_sql(model).into_iter().map(|(_, s)| s));
        v
    }

    fn batch_limits(&self, model: &TableModel) -> BatchLimits {
        let per_row = model.spanner_mutations_per_row();
        let max = crossdock_core::sizing::spanner_rows_per_commit(per_row, model.max_row_bytes as usize);
        let start = crossdock_core::sizing::spanner_start_rows(per_row, model.max_row_bytes as usize);
        BatchLimits {
            start,
            max,
            writers: 2,
            basis: format!(
                "{per_row} mutations per row ({} columns + {} index entries) → from {start} rows (SpannerIO's default commit) up to ≤ {max} rows per commit (under {} mutations and {} bytes, 10% headroom; max row {} B)",
                model.columns.len(),
                model.indexes.len(),
                crossdock_core::sizing::SPANNER_MAX_MUTATIONS,
                crossdock_core::sizing::SPANNER_MAX_COMMIT_BYTES,
                model.max_row_bytes
            ),
        }
    }

    async fn ensure_table(&self, model: &TableModel) -> Result<bool, LoadError> {
        let mut cols = self.columns(model).await?;
        if cols.is_empty() {
            match self.run_ddl(&model.name, vec![Self::create_table_sql(model)]).await {
                Ok(()) => return Ok(true),
                // Another load of the table created it first: check it like any other.
                Err(e) => {
                    cols = self.columns(model).await?;
                    if cols.is_empty() {
                        return Err(e);
                    }
                }
            }
        }
        let existing: Vec<(String, String, bool)> = cols.iter().map(|r| (text_of(&r[0]), text_of(&r[1]), text_of(&r[2]) == "YES")).collect();
        let mut stmt = Statement::new(
            "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.INDEX_COLUMNS WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t AND INDEX_NAME = 'PRIMARY_KEY' ORDER BY ORDINAL_POSITION",
        );
        stmt.add_param("t", &model.name);
        let pk: Vec<String> = self.query(&model.name, stmt, 1).await?.iter().map(|r| text_of(&r[0])).collect();
        let diff = compat_diff(model, &existing, &pk, |t| spanner_type(t).to_string());
        if diff.is_empty() {
            Ok(false)
        } else {
            Err(LoadError::Incompatible { target: "spanner".into(), table: model.name.clone(), diff: diff.join("\n") })
        }
    }

    async fn add_columns(&self, model: &TableModel, columns: &[Column]) -> Result<(), LoadError> {
        // Spanner has no ADD COLUMN IF NOT EXISTS: add only what the schema lacks.
        let have = |cols: &[Vec<Value>], c: &Column| cols.iter().any(|r| text_of(&r[0]).eq_ignore_ascii_case(&c.name));
        let existing = self.columns(model).await?;
        let ddl: Vec<String> = columns
            .iter()
            .filter(|c| !have(&existing, c))
            .map(|c| format!("ALTER TABLE {} ADD COLUMN {} {}", q(&model.name), q(&c.name), spanner_type(c.ty)))
            .collect();
        if ddl.is_empty() {
            return Ok(());
        }
        match self.run_ddl(&model.name, ddl).await {
            Ok(()) => Ok(()),
            // Another process added them first.
            Err(e) => {
                let now = self.columns(model).await?;
                if columns.iter().all(|c| have(&now, c)) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn write_batch(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        let columns: Vec<String> = model.columns.iter().map(|c| c.name.clone()).collect();
        let values: Vec<ListValue> = rows.iter().map(|r| ListValue { values: r.iter().map(to_value).collect() }).collect();
        let m = Mutation { operation: Some(Operation::InsertOrUpdate(Write { table: model.name.clone(), columns, values })) };
        let mutations = rows.len() * model.spanner_mutations_per_row();
        // Commit first, count after: only commits that reached Spanner are recorded.
        self.commit("commit", &model.name, &[m]).await?;
        self.stats.record(rows.len(), mutations);
        Ok(())
    }

    async fn create_indexes(&self, model: &TableModel) -> Result<(), LoadError> {
        let present = self.list_indexes(model).await?;
        let todo: Vec<String> =
            Self::index_sql(model).into_iter().filter(|(n, _)| !present.iter().any(|p| p.eq_ignore_ascii_case(n))).map(|(_, s)| s).collect();
        if todo.is_empty() {
            return Ok(());
        }
        match self.run_ddl(&model.name, todo).await {
            Ok(()) => Ok(()),
            // Another process finishing the same table created them first.
            Err(e) => {
                let now = self.list_indexes(model).await?;
                if model.indexes.iter().all(|ix| now.iter().any(|p| p.eq_ignore_ascii_case(&ix.name))) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn count_rows(&self, model: &TableModel) -> Result<u64, LoadError> {
        let rows = self.query(&model.name, Statement::new(format!("SELECT COUNT(*) FROM {}", q(&model.name))), 1).await?;
        Ok(rows.first().map(|r| text_of(&r[0]).parse::<u64>().unwrap_or(0)).unwrap_or(0))
    }

    async fn read_all(&self, model: &TableModel) -> Result<Vec<Row>, LoadError> {
        let cols: Vec<String> = model.columns.iter().map(|c| q(&c.name)).collect();
        let stmt = Statement::new(format!("SELECT {} FROM {}", cols.join(", "), q(&model.name)));
        let raw = self.query(&model.name, stmt, cols.len()).await?;
        raw.iter().map(|r| decode_row(model, r)).collect()
    }

    async fn read_keys(&self, model: &TableModel, rows: &[Row]) -> Result<Vec<Row>, LoadError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // A read by key set: Spanner looks each key up, in one call and one snapshot.
        let keys: Vec<Key> = rows.iter().map(|row| key_of(model, row)).collect();
        let columns: Vec<&str> = model.columns.iter().map(|c| c.name.as_str()).collect();
        let mut tx = self.client.single().await.map_err(|e| client_err("read", &model.name, e))?;
        let mut iter = tx.read(&model.name, &columns, keys).await.map_err(|s| status_err("read", &model.name, &s))?;
        let mut out = Vec::with_capacity(rows.len());
        while let Some(row) = iter.next().await.map_err(|s| status_err("read", &model.name, &s))? {
            let mut vals = Vec::with_capacity(columns.len());
            for i in 0..columns.len() {
                let raw: Raw = row.column(i).map_err(|e| LoadError::Target {
                    target: "spanner",
                    op: "read",
                    table: model.name.clone(),
                    message: e.to_string(),
                    retryable: false,
                })?;
                vals.push(raw.0);
            }
            out.push(decode_row(model, &vals)?);
        }
        Ok(out)
    }

    async fn delete_keys(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        if rows.is_empty() {
            return Ok(());
        }
        let keys = rows.iter().map(|row| ListValue { values: model.primary_key.iter().map(|&k| to_value(&row[k])).collect() }).collect();
        let key_set = gcloud_googleapis::spanner::v1::KeySet { keys, ranges: vec![], all: false };
        let m = Mutation {
            operation: Some(Operation::Delete(gcloud_googleapis::spanner::v1::mutation::Delete { table: model.name.clone(), key_set: Some(key_set) })),
        };
        self.commit("delete", &model.name, &[m]).await?;
        self.stats.record(rows.len(), rows.len());
        Ok(())
    }

    async fn list_indexes(&self, model: &TableModel) -> Result<Vec<String>, LoadError> {
        let mut stmt = Statement::new(
            "SELECT INDEX_NAME FROM INFORMATION_SCHEMA.INDEXES WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @t AND INDEX_TYPE = 'INDEX' ORDER BY INDEX_NAME",
        );
        stmt.add_param("t", &model.name);
        Ok(self.query(&model.name, stmt, 1).await?.iter().map(|r| text_of(&r[0])).collect())
    }

    fn stats(&self) -> &CallStats {
        &self.stats
    }
}
