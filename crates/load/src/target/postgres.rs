//! PostgreSQL: binary COPY into a per-session staging table, then one
//! `INSERT … SELECT … ON CONFLICT DO UPDATE` per batch, in one transaction per batch.

use super::{BatchLimits, CallStats, Target};
use crate::error::LoadError;
use crate::schema::{compat_diff, Cell, ColumnType, Row, TableModel, TargetKind};
use bytes::BytesMut;
use futures::{pin_mut, TryStreamExt as _};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};

/// Rows per COPY batch to start with, and the cap (PostgreSQL has no hard limit; this
/// bounds memory and transaction size).
const PG_START_ROWS: usize = 5_000;
const PG_MAX_ROWS: usize = 50_000;

pub struct PostgresTarget {
    url: String,
    schema: String,
    pool: tokio::sync::Mutex<Vec<Client>>,
    stats: CallStats,
}

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn err(op: &'static str, table: &str, e: tokio_postgres::Error) -> LoadError {
    use tokio_postgres::error::SqlState;
    let retryable = e.is_closed()
        || e.code().is_some_and(|c| {
            [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED, SqlState::LOCK_NOT_AVAILABLE, SqlState::TOO_MANY_CONNECTIONS, SqlState::ADMIN_SHUTDOWN]
                .contains(c)
        })
        || (e.code().is_none() && e.as_db_error().is_none());
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}{}", db.code().code(), db.message(), db.detail().map(|d| format!(" ({d})")).unwrap_or_default()),
        None => e.to_string(),
    };
    LoadError::Target { target: "postgres", op, table: table.into(), message, retryable }
}

/// The type of a column as `information_schema.columns.udt_name` spells it.
pub fn udt_name(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Int64 => "int8",
        ColumnType::Numeric => "numeric",
        ColumnType::Float64 => "float8",
        ColumnType::String => "text",
        ColumnType::Bytes => "bytea",
        ColumnType::Bool => "bool",
        ColumnType::StringArray => "_text",
        ColumnType::Int64Array => "_int8",
        ColumnType::NumericArray => "_numeric",
        ColumnType::Float64Array => "_float8",
        ColumnType::BytesArray => "_bytea",
        ColumnType::Json => "jsonb",
    }
}

fn sql_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Int64 => "bigint",
        ColumnType::Numeric => "numeric",
        ColumnType::Float64 => "double precision",
        ColumnType::String => "text",
        ColumnType::Bytes => "bytea",
        ColumnType::Bool => "boolean",
        ColumnType::StringArray => "text[]",
        ColumnType::Int64Array => "bigint[]",
        ColumnType::NumericArray => "numeric[]",
        ColumnType::Float64Array => "double precision[]",
        ColumnType::BytesArray => "bytea[]",
        ColumnType::Json => "jsonb",
    }
}

/// Staging column type: numeric and JSON travel as text and are cast by the upsert.
fn stage_type(t: ColumnType) -> (&'static str, Type) {
    match t {
        ColumnType::Int64 => ("bigint", Type::INT8),
        ColumnType::Numeric | ColumnType::Json | ColumnType::String => ("text", Type::TEXT),
        ColumnType::Float64 => ("double precision", Type::FLOAT8),
        ColumnType::Bytes => ("bytea", Type::BYTEA),
        ColumnType::Bool => ("boolean", Type::BOOL),
        ColumnType::StringArray | ColumnType::NumericArray => ("text[]", Type::TEXT_ARRAY),
        ColumnType::Int64Array => ("bigint[]", Type::INT8_ARRAY),
        ColumnType::Float64Array => ("double precision[]", Type::FLOAT8_ARRAY),
        ColumnType::BytesArray => ("bytea[]", Type::BYTEA_ARRAY),
    }
}

/// A cell as a COPY value.
#[derive(Debug)]
struct PgCell<'a>(&'a Cell);

impl ToSql for PgCell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(v) => v.to_sql(ty, out),
            Cell::Num(v) | Cell::Str(v) | Cell::Json(v) => v.as_str().to_sql(ty, out),
            Cell::Float(v) => v.to_sql(ty, out),
            Cell::Bytes(v) => v.as_slice().to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::StrArr(v) | Cell::NumArr(v) => v.to_sql(ty, out),
            Cell::IntArr(v) => v.to_sql(ty, out),
            Cell::FloatArr(v) => v.to_sql(ty, out),
            Cell::BytesArr(v) => v.to_sql(ty, out),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

impl PostgresTarget {
    /// Connects (one connection now; writers open more as needed).
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresTarget, LoadError> {
        let t = PostgresTarget { url: url.into(), schema: schema.into(), pool: tokio::sync::Mutex::new(Vec::new()), stats: CallStats::default() };
        let c = t.open().await?;
        t.pool.lock().await.push(c);
        Ok(t)
    }

    async fn open(&self) -> Result<Client, LoadError> {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.map_err(|e| err("connect", &self.schema, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "postgres connection closed");
            }
        });
        Ok(client)
    }

    async fn take(&self) -> Result<Client, LoadError> {
        if let Some(c) = self.pool.lock().await.pop() {
            if !c.is_closed() {
                return Ok(c);
            }
        }
        self.open().await
    }

    async fn give(&self, c: Client) {
        if !c.is_closed() {
            self.pool.lock().await.push(c);
        }
    }

    fn table(&self, model: &TableModel) -> String {
        format!("{}.{}", q(&self.schema), q(&model.name))
    }

    fn create_table_sql(&self, model: &TableModel) -> String {
        let cols: Vec<String> = model
            .columns
            .iter()
            .map(|c| format!("{} {}{}", q(&c.name), sql_type(c.ty), if c.key { " NOT NULL" } else { "" }))
            .collect();
        let pk: Vec<String> = model.primary_key.iter().map(|&i| q(&model.columns[i].name)).collect();
        format!("CREATE TABLE {} ({}, PRIMARY KEY ({}))", self.table(model), cols.join(", "), pk.join(", "))
    }

    fn index_sql(&self, model: &TableModel) -> Vec<String> {
        model
            .indexes
            .iter()
            .map(|ix| {
                let cols: Vec<String> = ix.columns.iter().map(|&i| q(&model.columns[i].name)).collect();
                format!("CREATE INDEX IF NOT EXISTS {} ON {} ({})", q(&ix.name), self.table(model), cols.join(", "))
            })
            .collect()
    }

    fn stage_name(model: &TableModel) -> String {
        q(&format!("crossdock_stage_{}", model.name))
    }

    async fn write_once(&self, client: &mut Client, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        let table = &model.name;
        let stage = Self::stage_name(model);
        let tx = client.transaction().await.map_err(|e| err("begin", table, e))?;
        let stage_cols: Vec<String> = model.columns.iter().map(|c| format!("{} {}", q(&c.name), stage_type(c.ty).0)).collect();
        tx.batch_execute(&format!("CREATE TEMP TABLE IF NOT EXISTS {stage} ({}) ON COMMIT DELETE ROWS", stage_cols.join(", ")))
            .await
            .map_err(|e| err("create staging table", table, e))?;
        let names: Vec<String> = model.columns.iter().map(|c| q(&c.name)).collect();
        let types: Vec<Type> = model.columns.iter().map(|c| stage_type(c.ty).1).collect();
        let sink = tx
            .copy_in(&format!("COPY {stage} ({}) FROM STDIN (FORMAT binary)", names.join(", ")))
            .await
            .map_err(|e| err("copy", table, e))?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        for row in rows {
            let cells: Vec<PgCell<'_>> = row.iter().map(PgCell).collect();
            let refs: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await.map_err(|e| err("copy", table, e))?;
        }
        writer.finish().await.map_err(|e| err("copy", table, e))?;
        let select: Vec<String> = model
            .columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::Numeric => format!("{}::numeric", q(&c.name)),
                ColumnType::NumericArray => format!("{}::numeric[]", q(&c.name)),
                ColumnType::Json => format!("{}::jsonb", q(&c.name)),
                _ => q(&c.name),
            })
            .collect();
        let pk: Vec<String> = model.primary_key.iter().map(|&i| q(&model.columns[i].name)).collect();
        let updates: Vec<String> = model.columns.iter().filter(|c| !c.key).map(|c| format!("{0} = EXCLUDED.{0}", q(&c.name))).collect();
        let conflict = if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        tx.batch_execute(&format!(
            "INSERT INTO {} ({}) SELECT {} FROM {stage} ON CONFLICT ({}) {conflict}",
            self.table(model),
            names.join(", "),
            select.join(", "),
            pk.join(", ")
        ))
        .await
        .map_err(|e| err("upsert", table, e))?;
        tx.commit().await.map_err(|e| err("commit", table, e))?;
        Ok(())
    }
}

impl Target for PostgresTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Postgres
    }

    fn ddl(&self, model: &TableModel) -> Vec<String> {
        let mut v = vec![self.create_table_sql(model)];
        v.extend(self.index_sql(model));
        v
    }

    fn batch_limits(&self, model: &TableModel) -> BatchLimits {
        // Keep a batch's payload around 64 MiB at the largest row size seen.
        let by_bytes = ((64usize << 20) / model.max_row_bytes.max(1) as usize).max(1);
        let max = PG_MAX_ROWS.min(by_bytes);
        BatchLimits { start: PG_START_ROWS.min(max), max, writers: 2, basis: format!("≤ {PG_MAX_ROWS} rows and ≈64 MiB per COPY transaction (max row {} B)", model.max_row_bytes) }
    }

    async fn ensure_table(&self, model: &TableModel) -> Result<bool, LoadError> {
        let c = self.take().await?;
        let result = async {
            let rows = c
                .query(
                    "SELECT column_name, udt_name, is_nullable = 'YES' FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                    &[&self.schema, &model.name],
                )
                .await
                .map_err(|e| err("read schema", &model.name, e))?;
            if rows.is_empty() {
                c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", q(&self.schema))).await.map_err(|e| err("create schema", &model.name, e))?;
                c.batch_execute(&self.create_table_sql(model)).await.map_err(|e| err("create table", &model.name, e))?;
                return Ok(true);
            }
            let existing: Vec<(String, String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
            let pk_rows = c
                .query(
                    "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
                    &[&self.schema, &model.name],
                )
                .await
                .map_err(|e| err("read primary key", &model.name, e))?;
            let pk: Vec<String> = pk_rows.iter().map(|r| r.get(0)).collect();
            let diff = compat_diff(model, &existing, &pk, |t| udt_name(t).to_string());
            if diff.is_empty() {
                Ok(false)
            } else {
                Err(LoadError::Incompatible { target: "postgres".into(), table: format!("{}.{}", self.schema, model.name), diff: diff.join("\n") })
            }
        }
        .await;
        self.give(c).await;
        result
    }

    async fn write_batch(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        let mut c = self.take().await?;
        let r = self.write_once(&mut c, model, rows).await;
        self.stats.record(rows.len(), rows.len());
        self.give(c).await;
        r
    }

    async fn create_indexes(&self, model: &TableModel) -> Result<(), LoadError> {
        let c = self.take().await?;
        let mut r = Ok(());
        for s in self.index_sql(model) {
            if let Err(e) = c.batch_execute(&s).await {
                r = Err(err("create index", &model.name, e));
                break;
            }
        }
        self.give(c).await;
        r
    }

    async fn count_rows(&self, model: &TableModel) -> Result<u64, LoadError> {
        let c = self.take().await?;
        let r = c.query_one(&format!("SELECT count(*) FROM {}", self.table(model)), &[]).await.map_err(|e| err("count", &model.name, e));
        self.give(c).await;
        Ok(r?.get::<_, i64>(0) as u64)
    }

    async fn read_all(&self, model: &TableModel) -> Result<Vec<Row>, LoadError> {
        let c = self.take().await?;
        let select: Vec<String> = model
            .columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::Numeric | ColumnType::Json => format!("{}::text", q(&c.name)),
                ColumnType::NumericArray => format!("{}::text[]", q(&c.name)),
                _ => q(&c.name),
            })
            .collect();
        let sql = format!("SELECT {} FROM {}", select.join(", "), self.table(model));
        let result = async {
            let stream = c.query_raw(&sql, std::iter::empty::<i32>()).await.map_err(|e| err("read", &model.name, e))?;
            pin_mut!(stream);
            let mut out = Vec::new();
            while let Some(r) = stream.try_next().await.map_err(|e| err("read", &model.name, e))? {
                let mut row = Vec::with_capacity(model.columns.len());
                for (i, col) in model.columns.iter().enumerate() {
                    let get_err = |e: tokio_postgres::Error| err("read", &model.name, e);
                    let cell = match col.ty {
                        ColumnType::Int64 => r.try_get::<_, Option<i64>>(i).map_err(get_err)?.map(Cell::Int),
                        ColumnType::Numeric => r.try_get::<_, Option<String>>(i).map_err(get_err)?.map(Cell::Num),
                        ColumnType::Json => r.try_get::<_, Option<String>>(i).map_err(get_err)?.map(Cell::Json),
                        ColumnType::String => r.try_get::<_, Option<String>>(i).map_err(get_err)?.map(Cell::Str),
                        ColumnType::Float64 => r.try_get::<_, Option<f64>>(i).map_err(get_err)?.map(Cell::Float),
                        ColumnType::Bytes => r.try_get::<_, Option<Vec<u8>>>(i).map_err(get_err)?.map(Cell::Bytes),
                        ColumnType::Bool => r.try_get::<_, Option<bool>>(i).map_err(get_err)?.map(Cell::Bool),
                        ColumnType::StringArray => r.try_get::<_, Option<Vec<String>>>(i).map_err(get_err)?.map(Cell::StrArr),
                        ColumnType::NumericArray => r.try_get::<_, Option<Vec<String>>>(i).map_err(get_err)?.map(Cell::NumArr),
                        ColumnType::Int64Array => r.try_get::<_, Option<Vec<i64>>>(i).map_err(get_err)?.map(Cell::IntArr),
                        ColumnType::Float64Array => r.try_get::<_, Option<Vec<f64>>>(i).map_err(get_err)?.map(Cell::FloatArr),
                        ColumnType::BytesArray => r.try_get::<_, Option<Vec<Vec<u8>>>>(i).map_err(get_err)?.map(Cell::BytesArr),
                    };
                    row.push(cell.unwrap_or(Cell::Null));
                }
                out.push(row);
            }
            Ok(out)
        }
        .await;
        self.give(c).await;
        result
    }

    async fn list_indexes(&self, model: &TableModel) -> Result<Vec<String>, LoadError> {
        let c = self.take().await?;
        let r = c
            .query("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY 1", &[&self.schema, &model.name])
            .await
            .map_err(|e| err("list indexes", &model.name, e));
        self.give(c).await;
        let pk = format!("{}_pkey", model.name);
        Ok(r?.iter().map(|r| r.get::<_, String>(0)).filter(|n| *n != pk).collect())
    }

    fn stats(&self) -> &CallStats {
        &self.stats
    }
}
