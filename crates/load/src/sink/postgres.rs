//! PostgreSQL: each batch is one binary `COPY` straight into the table — the fast path
//! of a first load, where no key exists yet. A batch that meets a key already there
//! (a rerun after a crash, `--force`) is redone as binary COPY into a per-session
//! staging table plus one `INSERT … SELECT … ON CONFLICT DO UPDATE`, in one
//! transaction. Either way a batch is all or nothing, and a repeated batch is harmless.
//! Rows arrive with their strings already in the form PostgreSQL can hold (the model's
//! conversion escapes U+0000, [`crate::schema::pg_escape`]) and are read back as stored;
//! `TableModel::to_item` reverses the escape.

use super::pgcopy::{CopyRows, HEADER, TRAILER};
use super::pgtls::Tls;
use super::{BatchLimits, CallStats, Target};
use crate::error::LoadError;
use crate::schema::{compat_diff, Cell, Column, ColumnType, Row, TableModel, TargetKind};
use bytes::BytesMut;
use futures::{pin_mut, TryStreamExt as _};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls};

/// Rows per COPY batch to start with, and the cap (PostgreSQL has no hard limit; this
/// bounds memory and transaction size). Each COPY transaction costs the server a fixed
/// amount on top of its rows: measured on 1M rows, batches of 25,000 took 10% less
/// time and server CPU than batches of 5,000, so the search starts high and comes
/// down only where that measures faster.
const PG_START_ROWS: usize = 25_000;
const PG_MAX_ROWS: usize = 50_000;

/// ` WHERE (k1, k2) IN (($1, $2), …)` for the primary keys of `rows`, with its
/// parameters: bound as text, bytea or int8 and cast to the column's type, so every
/// key type takes the one binding path.
fn key_filter(model: &TableModel, rows: &[Row]) -> Result<(String, Vec<KeyParam>), LoadError> {
    let mut params: Vec<KeyParam> = Vec::with_capacity(rows.len() * model.primary_key.len());
    let mut tuples = Vec::with_capacity(rows.len());
    for row in rows {
        let mut parts = Vec::with_capacity(model.primary_key.len());
        for &k in &model.primary_key {
            let (param, cast) = match &row[k] {
                Cell::Str(s) => (KeyParam::Text(s.clone()), "text"),
                Cell::Num(n) => (KeyParam::Text(n.clone()), "text::numeric"),
                Cell::Bytes(b) => (KeyParam::Bytes(b.clone()), "bytea"),
                Cell::Int(i) => (KeyParam::Int(*i), "int8"),
                other => {
                    return Err(LoadError::Target {
                        target: "postgres",
                        op: "key",
                        table: model.name.clone(),
                        message: format!("key cell {other:?} cannot be bound"),
                        retryable: false,
                    })
                }
            };
            params.push(param);
            parts.push(format!("${}::{cast}", params.len()));
        }
        tuples.push(format!("({})", parts.join(", ")));
    }
    let keys: Vec<String> = model.primary_key.iter().map(|&k| q(&model.columns[k].name)).collect();
    Ok((format!(" WHERE ({}) IN ({})", keys.join(", "), tuples.join(", ")), params))
}

/// A primary-key value bound in a lookup or delete (see `key_filter`).
#[derive(Debug)]
enum KeyParam {
    Text(String),
    Bytes(Vec<u8>),
    Int(i64),
}

impl ToSql for KeyParam {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            KeyParam::Text(s) => s.to_sql(ty, out),
            KeyParam::Bytes(b) => b.to_sql(ty, out),
            KeyParam::Int(i) => i.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <String as ToSql>::accepts(ty) || <Vec<u8> as ToSql>::accepts(ty) || <i64 as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

pub struct PostgresTarget {
    url: String,
    schema: String,
    pool: tokio::sync::Mutex<Vec<Conn>>,
    stats: CallStats,
    /// Direct COPY set aside after a conflict, the batches meanwhile sent through the
    /// upsert path: a rerun pays one failed COPY for the rows it already wrote, a
    /// `--force` reload a handful in all.
    direct: super::Pause,
}

fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn err(op: &'static str, table: &str, e: tokio_postgres::Error) -> LoadError {
    use tokio_postgres::error::SqlState;
    let retryable = e.is_closed()
        || e.code().is_some_and(|c| {
            [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::ADMIN_SHUTDOWN,
            ]
            .contains(c)
        })
        || (e.code().is_none() && e.as_db_error().is_none());
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}{}", db.code().code(), db.message(), db.detail().map(|d| format!(" ({d})")).unwrap_or_default()),
        // The driver's own text is generic ("error performing TLS handshake"); the cause
        // (an unknown issuer, a refused connection) is in its sources.
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                m.push_str(": ");
                m.push_str(&s.to_string());
                source = s.source();
            }
            m
        }
    };
    LoadError::Target { target: "postgres", op, table: table.into(), message, retryable }
}

/// A client and the task that runs its connection. Dropping it closes the socket at
/// once, even mid-call: the server then rolls back the call's transaction and lets go
/// of its locks. (A dropped `Client` alone leaves the connection open while a call is
/// in flight, so a write abandoned on a stalled connection would hold its table's locks
/// against the retry and the index build.)
struct Conn {
    client: Client,
    driver: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Runs a connection's I/O until it closes.
async fn drive<S, T>(conn: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "postgres connection closed");
    }
}

/// A failed connection, named by the redacted URL, with anything of the URL the
/// driver's message may quote (the password above all) taken out: connection errors
/// end up in logs, webhook posts and `pipeline validate --online` output.
fn connect_err(url: &str, schema: &str, e: tokio_postgres::Error) -> LoadError {
    match err("connect", schema, e) {
        LoadError::Target { target, op, table, message, retryable } => LoadError::Target {
            target,
            op,
            table,
            message: format!("{} ({})", crossdock_core::redact::scrub(&message, url), crossdock_core::redact::Redacted(url)),
            retryable,
        },
        other => other,
    }
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
        ColumnType::DecimalText => "text",
        ColumnType::DecimalTextArray => "_text",
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
        ColumnType::DecimalText => "text",
        ColumnType::DecimalTextArray => "text[]",
    }
}

impl PostgresTarget {
    /// Connects (one connection now; writers open more as needed).
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresTarget, LoadError> {
        let t = PostgresTarget {
            url: url.into(),
            schema: schema.into(),
            pool: tokio::sync::Mutex::new(Vec::new()),
            stats: CallStats::default(),
            direct: super::Pause::new(),
        };
        let c = t.open().await?;
        t.pool.lock().await.push(c);
        Ok(t)
    }

    /// A new connection; one that cannot be made within
    /// [`crossdock_core::retry::CONNECT_TIMEOUT`] fails as
    /// retryable.
    async fn open(&self) -> Result<Conn, LoadError> {
        let limit = crossdock_core::retry::CONNECT_TIMEOUT;
        tokio::time::timeout(limit, self.open_now()).await.unwrap_or_else(|_| {
            Err(LoadError::Target {
                target: "postgres",
                op: "connect",
                table: self.schema.clone(),
                message: format!("no connection to {} within {}s", crossdock_core::redact::url(&self.url), limit.as_secs()),
                retryable: true,
            })
        })
    }

    async fn open_now(&self) -> Result<Conn, LoadError> {
        let (conn_str, tls) = super::pgtls::configure(&self.url)?;
        let (client, driver) = match tls {
            Tls::Off => {
                let (client, conn) = tokio_postgres::connect(&conn_str, NoTls).await.map_err(|e| connect_err(&self.url, &self.schema, e))?;
                (client, tokio::spawn(drive(conn)).abort_handle())
            }
            Tls::On(tls) => {
                let (client, conn) = tokio_postgres::connect(&conn_str, tls).await.map_err(|e| connect_err(&self.url, &self.schema, e))?;
                (client, tokio::spawn(drive(conn)).abort_handle())
            }
        };
        let conn = Conn { client, driver };
        // IF NOT EXISTS notices (schema, staging table) are expected, not news. The
        // keepalives let the server notice within minutes, not its default two hours,
        // that a connection the loader abandoned on a dead path is gone, and roll back
        // the batch whose row locks the retry of that batch would wait on.
        conn.batch_execute("SET client_min_messages = warning; SET tcp_keepalives_idle = 60; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 6")
            .await
            .map_err(|e| err("connect", &self.schema, e))?;
        Ok(conn)
    }

    async fn take(&self) -> Result<Conn, LoadError> {
        if let Some(c) = self.pool.lock().await.pop() {
            if !c.is_closed() {
                return Ok(c);
            }
        }
        self.open().await
    }

    async fn give(&self, c: Conn) {
        if !c.is_closed() {
            self.pool.lock().await.push(c);
        }
    }

    /// `SELECT` every model column (numbers and JSON as their text) of the rows matching
    /// `filter` (SQL after the table name, may be empty).
    async fn select(&self, model: &TableModel, filter: String, params: Vec<KeyParam>) -> Result<Vec<Row>, LoadError> {
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
        let sql = format!("SELECT {} FROM {}{filter}", select.join(", "), self.table(model));
        let result = async {
            let stream = c.query_raw(&sql, params.iter().map(|p| p as &(dyn ToSql + Sync))).await.map_err(|e| err("read", &model.name, e))?;
            pin_mut!(stream);
            let mut out = Vec::new();
            while let Some(r) = stream.try_next().await.map_err(|e| err("read", &model.name, e))? {
                let mut row = Vec::with_capacity(model.columns.len());
                for (i, col) in model.columns.iter().enumerate() {
                    let get_err = |e: tokio_postgres::Error| err("read", &model.name, e);
                    let cell = match col.ty {
                        ColumnType::Int64 => r.try_get::<_, Option<i64>>(i).map_err(get_err)?.map(Cell::Int),
                        ColumnType::Numeric | ColumnType::DecimalText => r.try_get::<_, Option<String>>(i).map_err(get_err)?.map(Cell::Num),
                        ColumnType::Json => r.try_get::<_, Option<String>>(i).map_err(get_err)?.map(Cell::Json),
                        ColumnType::String => r.try_get::<_, Option<String>>(i).map_err(get_err)?.map(Cell::Str),
                        ColumnType::Float64 => r.try_get::<_, Option<f64>>(i).map_err(get_err)?.map(Cell::Float),
                        ColumnType::Bytes => r.try_get::<_, Option<Vec<u8>>>(i).map_err(get_err)?.map(Cell::Bytes),
                        ColumnType::Bool => r.try_get::<_, Option<bool>>(i).map_err(get_err)?.map(Cell::Bool),
                        ColumnType::StringArray => r.try_get::<_, Option<Vec<String>>>(i).map_err(get_err)?.map(Cell::StrArr),
                        ColumnType::NumericArray | ColumnType::DecimalTextArray => r.try_get::<_, Option<Vec<String>>>(i).map_err(get_err)?.map(Cell::NumArr),
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

    async fn table_exists(&self, c: &Client, model: &TableModel) -> Result<bool, LoadError> {
        let row = c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.table(model)]).await.map_err(|e| err("read schema", &model.name, e))?;
        Ok(row.get(0))
    }

    /// Creates the schema and the table unless another process got there first;
    /// whether this call created the table. Concurrent `CREATE … IF NOT EXISTS` of one
    /// name can still fail on PostgreSQL's catalog (a duplicate key in `pg_type`), so
    /// the creations in a schema take turns on a transaction-scoped advisory lock and
    /// look again once they hold it: two loads of one marker started together both go on.
    async fn create_table_once(&self, c: &mut Client, model: &TableModel) -> Result<bool, LoadError> {
        let e = |op| move |e| err(op, &model.name, e);
        let tx = c.transaction().await.map_err(e("create table"))?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("crossdock ddl {}", self.schema)]).await.map_err(e("lock for create table"))?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", q(&self.schema))).await.map_err(e("create schema"))?;
        let exists: bool = tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.table(model)]).await.map_err(e("read schema"))?.get(0);
        if !exists {
            tx.batch_execute(&self.create_table_sql(model)).await.map_err(e("create table"))?;
        }
        tx.commit().await.map_err(e("create table"))?;
        Ok(!exists)
    }

    /// The model's indexes, under the schema's DDL lock (see `create_table_once`): loads
    /// of one table finishing together build each index once, the later ones find it.
    async fn create_indexes_once(&self, c: &mut Client, model: &TableModel) -> Result<(), LoadError> {
        let e = |e| err("create index", &model.name, e);
        let tx = c.transaction().await.map_err(e)?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("crossdock ddl {}", self.schema)]).await.map_err(e)?;
        for s in self.index_sql(model) {
            tx.batch_execute(&s).await.map_err(e)?;
        }
        tx.commit().await.map_err(e)
    }

    fn table(&self, model: &TableModel) -> String {
        format!("{}.{}", q(&self.schema), q(&model.name))
    }

    fn create_table_sql(&self, model: &TableModel) -> String {
        let cols: Vec<String> = model.columns.iter().map(|c| format!("{} {}{}", q(&c.name), sql_type(c.ty), if c.key { " NOT NULL" } else { "" })).collect();
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

    /// The session's staging table for the model. Its name carries the column count:
    /// columns are only ever appended (the catch-up's new attributes), so a session that
    /// staged rows before a column was added gets a new staging table of the new shape.
    fn stage_name(model: &TableModel) -> String {
        q(&format!("crossdock_stage_{}_{}", model.columns.len(), model.name))
    }

    /// Header, `tuples` in 1 MiB messages, trailer.
    async fn send_copy(sink: tokio_postgres::CopyInSink<bytes::Bytes>, tuples: &bytes::Bytes) -> Result<(), tokio_postgres::Error> {
        use futures::SinkExt as _;
        pin_mut!(sink);
        sink.feed(bytes::Bytes::from_static(HEADER)).await?;
        let mut at = 0;
        while at < tuples.len() {
            let end = (at + (1 << 20)).min(tuples.len());
            sink.feed(tuples.slice(at..end)).await?;
            at = end;
        }
        sink.feed(bytes::Bytes::from_static(TRAILER)).await?;
        sink.as_mut().finish().await?;
        Ok(())
    }

    fn column_list(model: &TableModel) -> String {
        model.columns.iter().map(|c| q(&c.name)).collect::<Vec<_>>().join(", ")
    }

    /// The fast path: COPY straight into the table. `Ok(false)` when a key already
    /// exists (nothing was written; the caller upserts instead).
    async fn copy_direct(&self, client: &mut Client, model: &TableModel, tuples: &bytes::Bytes) -> Result<bool, LoadError> {
        let sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", self.table(model), Self::column_list(model));
        let r = async { Self::send_copy(client.copy_in(&sql).await?, tuples).await }.await;
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(false),
            Err(e) => Err(err("copy", &model.name, e)),
        }
    }

    async fn upsert(&self, client: &mut Client, model: &TableModel, tuples: &bytes::Bytes) -> Result<(), LoadError> {
        let table = &model.name;
        let stage = Self::stage_name(model);
        let names = Self::column_list(model);
        let tx = client.transaction().await.map_err(|e| err("begin", table, e))?;
        let stage_cols: Vec<String> = model.columns.iter().map(|c| format!("{} {}", q(&c.name), sql_type(c.ty))).collect();
        tx.batch_execute(&format!("CREATE TEMP TABLE IF NOT EXISTS {stage} ({}) ON COMMIT DELETE ROWS", stage_cols.join(", ")))
            .await
            .map_err(|e| err("create staging table", table, e))?;
        let sink = tx.copy_in(&format!("COPY {stage} ({names}) FROM STDIN (FORMAT binary)")).await.map_err(|e| err("copy", table, e))?;
        Self::send_copy(sink, tuples).await.map_err(|e| err("copy", table, e))?;
        let pk: Vec<String> = model.primary_key.iter().map(|&i| q(&model.columns[i].name)).collect();
        let updates: Vec<String> = model.columns.iter().filter(|c| !c.key).map(|c| format!("{0} = EXCLUDED.{0}", q(&c.name))).collect();
        let conflict = if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        tx.batch_execute(&format!("INSERT INTO {} ({names}) SELECT {names} FROM {stage} ON CONFLICT ({}) {conflict}", self.table(model), pk.join(", ")))
            .await
            .map_err(|e| err("upsert", table, e))?;
        tx.commit().await.map_err(|e| err("commit", table, e))?;
        Ok(())
    }

    async fn write_once(&self, client: &mut Client, model: &TableModel, tuples: &bytes::Bytes) -> Result<(), LoadError> {
        if self.direct.fast() {
            if self.copy_direct(client, model, tuples).await? {
                self.direct.fast_succeeded();
                return Ok(());
            }
            let pause = self.direct.fast_failed();
            tracing::debug!(table = %model.name, upsert_batches = pause, "keys already present: upserting");
        }
        self.upsert(client, model, tuples).await
    }
}

impl Target for PostgresTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Postgres
    }

    fn destination(&self, model: &TableModel) -> String {
        format!("{}.{}", self.schema, model.name)
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
        BatchLimits {
            start: PG_START_ROWS.min(max),
            max,
            writers: 2,
            basis: format!("≤ {PG_MAX_ROWS} rows and ≈64 MiB per COPY transaction (max row {} B)", model.max_row_bytes),
        }
    }

    async fn ensure_table(&self, model: &TableModel) -> Result<bool, LoadError> {
        let mut c = self.take().await?;
        let result = async {
            if !self.table_exists(&c, model).await? && self.create_table_once(&mut c, model).await? {
                return Ok(true);
            }
            let rows = c
                .query(
                    "SELECT column_name, udt_name, is_nullable = 'YES' FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                    &[&self.schema, &model.name],
                )
                .await
                .map_err(|e| err("read schema", &model.name, e))?;
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

    async fn add_columns(&self, model: &TableModel, columns: &[Column]) -> Result<(), LoadError> {
        if columns.is_empty() {
            return Ok(());
        }
        let adds: Vec<String> = columns.iter().map(|c| format!("ADD COLUMN IF NOT EXISTS {} {}", q(&c.name), sql_type(c.ty))).collect();
        let c = self.take().await?;
        let r = c.batch_execute(&format!("ALTER TABLE {} {}", self.table(model), adds.join(", "))).await.map_err(|e| err("add columns", &model.name, e));
        self.give(c).await;
        r
    }

    async fn write_batch(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        let tuples = CopyRows::encode(model, rows).map_err(|message| LoadError::Target {
            target: "postgres",
            op: "encode",
            table: model.name.clone(),
            message,
            retryable: false,
        })?;
        self.write_copy(model, tuples).await
    }

    fn takes_copy(&self) -> bool {
        true
    }

    async fn write_copy(&self, model: &TableModel, rows: CopyRows) -> Result<(), LoadError> {
        let mut c = self.take().await?;
        let r = self.write_once(&mut c, model, &rows.bytes()).await;
        self.stats.record(rows.len(), rows.len());
        self.give(c).await;
        r
    }

    async fn create_indexes(&self, model: &TableModel) -> Result<(), LoadError> {
        let mut c = self.take().await?;
        let r = self.create_indexes_once(&mut c, model).await;
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
        self.select(model, String::new(), Vec::new()).await
    }

    async fn read_keys(&self, model: &TableModel, rows: &[Row]) -> Result<Vec<Row>, LoadError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (filter, params) = key_filter(model, rows)?;
        self.select(model, filter, params).await
    }

    async fn delete_keys(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (filter, params) = key_filter(model, rows)?;
        let c = self.take().await?;
        let sql = format!("DELETE FROM {}{filter}", self.table(model));
        let r = c.execute_raw(&sql, params.iter().map(|p| p as &(dyn ToSql + Sync))).await.map_err(|e| err("delete", &model.name, e));
        self.give(c).await;
        r.map(drop)
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
