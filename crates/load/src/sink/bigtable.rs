//! Bigtable: one row per item, row key = encoded partition key [+ encoded sort key],
//! one column family, one column per attribute (qualifier = attribute name). Each
//! row is written as DeleteFromRow + SetCell… so a re-load replaces it; MutateRows
//! requests stay ≤ 100,000 mutations; failed entries are retried; the server's
//! RateLimitInfo slows the writer down.
//!
//! Row key encoding (order-preserving, self-delimiting): strings and binary are the
//! raw bytes with `0x00` escaped as `0x00 0xFF`, followed by `0x00 0x01` unless last;
//! numbers use [`crate::decimal::Decimal::order_key`].
//! Cell values: `S` → UTF-8, `N` → the number's text exactly, `B` → raw bytes,
//! anything else → DynamoDB typed JSON. Cell timestamps are the export's timestamp,
//! so a repeated load writes the very same cell version.

use super::{BatchLimits, CallStats, Target};
use crate::decimal::Decimal;
use crate::error::LoadError;
use crate::schema::{Cell, Column, ColumnType, Row, TableModel, TargetKind};
use bigtable_rs::bigtable::{BigTable, BigTableConnection, RoutingMetadata as _};
use bigtable_rs::google::bigtable::v2::mutate_rows_request::Entry;
use bigtable_rs::google::bigtable::v2::mutation::{DeleteFromRow, Mutation as M, SetCell};
use bigtable_rs::google::bigtable::v2::read_rows_response::{self, cell_chunk::RowStatus};
use bigtable_rs::google::bigtable::v2::row_filter::{Chain, Filter};
use bigtable_rs::google::bigtable::v2::row_range::{EndKey, StartKey};
use bigtable_rs::google::bigtable::v2::{MutateRowsRequest, Mutation, ReadRowsRequest, RowFilter, RowRange, RowSet, SampleRowKeysRequest};
use crossdock_core::retry;
use futures::StreamExt as _;
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use std::collections::HashMap;
use std::time::Duration;

pub struct BigtableTarget {
    project: String,
    instance: String,
    family: String,
    conn: BigTableConnection,
    /// Anonymous at the emulator, else the signed-in token for hand-made admin calls.
    gcp: crossdock_gcp::Gcp,
    emulator: Option<String>,
    /// Whether a missing table may be created (through the admin API).
    create_tables: bool,
    /// Cell timestamp (microseconds, millisecond granularity).
    timestamp_micros: i64,
    stats: CallStats,
    /// Tables this target created (a target serves one export's load): their rows can
    /// hold no cells but this export's, so writes need not clear the row first.
    created: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn err(op: &'static str, table: &str, message: String, retryable: bool) -> LoadError {
    LoadError::Target { target: "bigtable", op, table: table.into(), message, retryable }
}

fn bt_err(op: &'static str, table: &str, e: bigtable_rs::bigtable::Error) -> LoadError {
    let retryable = match &e {
        bigtable_rs::bigtable::Error::RpcError(s) => status_retryable(s),
        bigtable_rs::bigtable::Error::TimeoutError(_) | bigtable_rs::bigtable::Error::TransportError(_) => true,
        _ => false,
    };
    err(op, table, e.to_string(), retryable)
}

/// The Bigtable row key of a row of `model`.
pub fn row_key(model: &TableModel, row: &Row) -> Result<Vec<u8>, String> {
    let mut key = Vec::new();
    let n = model.primary_key.len();
    for (i, &col) in model.primary_key.iter().enumerate() {
        let last = i + 1 == n;
        let raw: &[u8] = match &row[col] {
            Cell::Str(s) => s.as_bytes(),
            Cell::Bytes(b) => b,
            Cell::Num(t) => {
                Decimal::parse(t).ok_or_else(|| format!("key {t:?} is not a number"))?.order_key(&mut key);
                continue;
            }
            other => return Err(format!("key cell {other:?} cannot be encoded")),
        };
        for &b in raw {
            key.push(b);
            if b == 0 {
                key.push(0xFF);
            }
        }
        if !last {
            key.extend_from_slice(&[0x00, 0x01]);
        }
    }
    if key.len() > crossdock_core::sizing::BIGTABLE_MAX_ROW_KEY_BYTES {
        return Err(format!("row key is {} bytes, more than Bigtable's {}", key.len(), crossdock_core::sizing::BIGTABLE_MAX_ROW_KEY_BYTES));
    }
    Ok(key)
}

fn cell_bytes(c: &Cell) -> Option<Vec<u8>> {
    match c {
        Cell::Null => None,
        Cell::Str(s) | Cell::Num(s) | Cell::Json(s) => Some(s.as_bytes().to_vec()),
        Cell::Bytes(b) => Some(b.clone()),
        // The Bigtable model only has the types above; keep the rest as typed JSON-ish text.
        other => Some(format!("{other:?}").into_bytes()),
    }
}

fn cell_from(ty: ColumnType, v: Vec<u8>) -> Result<Cell, String> {
    let text = |v: Vec<u8>| String::from_utf8(v).map_err(|e| e.to_string());
    Ok(match ty {
        ColumnType::String => Cell::Str(text(v)?),
        ColumnType::Numeric | ColumnType::DecimalText => Cell::Num(text(v)?),
        ColumnType::Bytes => Cell::Bytes(v),
        _ => Cell::Json(text(v)?),
    })
}

impl BigtableTarget {
    /// Connects to `project`/`instance` signed in through `gcp` (the emulator when
    /// `BIGTABLE_EMULATOR_HOST` is set). `timestamp_micros` is the cell version written;
    /// `create_tables` allows creating a missing table through the admin API.
    pub async fn connect(
        gcp: &crossdock_gcp::Gcp,
        project: &str,
        instance: &str,
        family: &str,
        timestamp_micros: i64,
        create_tables: bool,
    ) -> Result<BigtableTarget, LoadError> {
        let cfg = |e: bigtable_rs::bigtable::Error| LoadError::Config(format!("Bigtable {project}/{instance}: {e}"));
        let timeout = Some(Duration::from_secs(60));
        let access = gcp.bigtable().await.map_err(LoadError::auth("Bigtable"))?;
        let (conn, emulator) = match access {
            crossdock_gcp::BigtableAccess::Emulator(host) => {
                (BigTableConnection::new_with_emulator(&host, project, instance, false, 2, timeout).map_err(cfg)?, Some(host))
            }
            crossdock_gcp::BigtableAccess::Signed(tokens) => {
                (BigTableConnection::new_with_token_provider(project, instance, false, 2, timeout, tokens).map_err(cfg)?, None)
            }
        };
        Ok(BigtableTarget {
            project: project.into(),
            instance: instance.into(),
            family: family.into(),
            conn,
            gcp: gcp.clone(),
            emulator,
            create_tables,
            timestamp_micros: timestamp_micros - timestamp_micros % 1000,
            stats: CallStats::default(),
            created: Default::default(),
        })
    }

    fn client(&self) -> BigTable {
        self.conn.client()
    }

    /// The command that creates `table` as the loader would.
    fn create_command(&self, table: &str) -> String {
        format!("cbt -project {} -instance {} createtable {table} families={}:maxversions=1", self.project, self.instance, self.family)
    }

    /// An admin client (the emulator's, or Google's with the signed-in token) and the
    /// authorization value each request must carry (`None` at the emulator).
    async fn admin(
        &self,
        table: &str,
    ) -> Result<(admin::bigtable_table_admin_client::BigtableTableAdminClient<tonic::transport::Channel>, Option<String>), LoadError> {
        self.stats.admin_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (url, bearer) = match &self.emulator {
            Some(host) => (format!("http://{host}"), None),
            None => {
                let bearer = self.gcp.authorization().await.map_err(LoadError::auth("Bigtable admin"))?;
                ("https://bigtableadmin.googleapis.com".to_string(), Some(bearer))
            }
        };
        let mut endpoint = tonic::transport::Channel::from_shared(url).map_err(|e| err("admin", table, e.to_string(), false))?;
        if self.emulator.is_none() {
            let tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots().domain_name("bigtableadmin.googleapis.com");
            endpoint = endpoint.tls_config(tls).map_err(|e| err("admin", table, e.to_string(), false))?;
        }
        let channel = endpoint.connect().await.map_err(|e| err("admin", table, e.to_string(), true))?;
        Ok((admin::bigtable_table_admin_client::BigtableTableAdminClient::new(channel), bearer))
    }

    /// Whether `table` exists, asked through the data API (a one-row read answers
    /// NOT_FOUND for a missing table), so a loader with data-only permissions can check.
    async fn table_exists(&self, table: &str) -> Result<bool, LoadError> {
        let mut client = self.client();
        let req = ReadRowsRequest {
            table_name: client.get_full_table_name(table),
            rows_limit: 1,
            filter: Some(RowFilter { filter: Some(Filter::StripValueTransformer(true)) }),
            ..Default::default()
        };
        match client.read_rows(req).await {
            Ok(_) => Ok(true),
            Err(bigtable_rs::bigtable::Error::RpcError(s)) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(e) => Err(bt_err("check table", table, e)),
        }
    }

    fn table_path(&self, table: &str) -> String {
        format!("projects/{}/instances/{}/tables/{table}", self.project, self.instance)
    }

    /// The mutations of one row: its cells, after a `DeleteFromRow` when `replace` (so
    /// cells of attributes the item no longer has do not survive).
    fn entry(&self, model: &TableModel, row: &Row, replace: bool) -> Result<Entry, String> {
        let key = row_key(model, row)?;
        let mut mutations = Vec::with_capacity(row.len() + 1);
        if replace {
            mutations.push(Mutation { mutation: Some(M::DeleteFromRow(DeleteFromRow {})) });
        }
        for (c, cell) in model.columns.iter().zip(row) {
            if let Some(value) = cell_bytes(cell) {
                mutations.push(Mutation {
                    mutation: Some(M::SetCell(SetCell {
                        family_name: self.family.clone(),
                        column_qualifier: c.attribute.as_bytes().to_vec(),
                        timestamp_micros: self.timestamp_micros,
                        value,
                    })),
                });
            }
        }
        Ok(Entry { row_key: key, mutations, idempotency: None })
    }

    /// Applies entries `0..n` (built by `build`) with MutateRows: entries that fail
    /// retryably are built and sent again (under [`retry::Policy::PARTIAL_WRITE`]), the server's
    /// flow-control hints are followed. Entries are built for each request rather than
    /// cloned: the request takes them, and most are never sent twice.
    async fn mutate(&self, model: &TableModel, n: usize, build: impl Fn(usize) -> Result<Entry, LoadError>) -> Result<(), LoadError> {
        let mut client = self.client();
        let table_name = client.get_full_table_name(&model.name);
        let policy = retry::Policy::PARTIAL_WRITE;
        let mut attempts = 0u32;
        let mut todo: Vec<usize> = (0..n).collect();
        while !todo.is_empty() {
            let entries = todo.iter().map(|&i| build(i)).collect::<Result<Vec<_>, _>>()?;
            let mutations: usize = entries.iter().map(|e| e.mutations.len()).sum();
            if mutations > crossdock_core::sizing::BIGTABLE_MAX_MUTATIONS {
                return Err(err("mutate rows", &model.name, format!("batch of {mutations} mutations exceeds the limit; lower the batch size"), false));
            }
            let sent = entries.len();
            let req = MutateRowsRequest { table_name: table_name.clone(), entries, ..Default::default() };
            let mut stream = client.mutate_rows(req).await.map_err(|e| bt_err("mutate rows", &model.name, e))?;
            self.stats.record(sent, mutations);
            let mut failed = Vec::new();
            let mut slow_down = None;
            let mut permanent = None;
            while let Some(resp) = stream.next().await {
                let resp = resp.map_err(|s| err("mutate rows", &model.name, s.message().to_string(), status_retryable(&s)))?;
                if let Some(rl) = resp.rate_limit_info {
                    if rl.factor > 0.0 && rl.factor < 1.0 {
                        slow_down = Some(rl.factor);
                    }
                }
                for e in resp.entries {
                    let code = e.status.as_ref().map_or(0, |s| s.code);
                    if code != 0 {
                        let retry = status_retryable(&tonic::Status::new(tonic::Code::from_i32(code), ""));
                        if retry {
                            failed.extend(todo.get(e.index as usize).copied());
                        } else {
                            permanent = Some(e.status.map(|s| s.message).unwrap_or_default());
                        }
                    }
                }
            }
            if let Some(m) = permanent {
                return Err(err("mutate rows", &model.name, m, false));
            }
            if let Some(f) = slow_down {
                // Server flow control: wait in proportion to how much it asks us to slow.
                tokio::time::sleep(Duration::from_millis(((1.0 - f) * 1000.0) as u64)).await;
            }
            if failed.is_empty() {
                if attempts > 0 {
                    retry::recovered("bigtable", "mutate_rows_entries", attempts);
                }
                return Ok(());
            }
            attempts += 1;
            self.stats.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let why = format!("{} of {sent} entries failed retryably", failed.len());
            if retry::failed("bigtable", "mutate_rows_entries", true, policy.allows(attempts), &why) != retry::Outcome::Retried {
                return Err(err("mutate rows", &model.name, format!("{why}, still after {attempts} attempts"), true));
            }
            failed.sort_unstable();
            todo = failed;
            tokio::time::sleep(policy.delay(attempts)).await;
        }
        Ok(())
    }

    /// The rows in `[from, to)`, counted as [`Target::count_rows`] says.
    async fn count_range(&self, model: &TableModel, table_name: &str, from: Option<Vec<u8>>, to: Option<Vec<u8>>) -> Result<u64, LoadError> {
        let mut client = self.client();
        let mut counter = RowCounter::default();
        let mut failures = 0u32;
        loop {
            let req = count_request(table_name, from.as_deref(), to.as_deref(), counter.last_committed.as_deref());
            let failure = match stream_count(&mut client, req, &mut counter).await {
                Ok(()) => return Ok(counter.rows),
                Err(f) => f,
            };
            if counter.progressed {
                failures = 0;
            }
            failures += 1;
            let retryable = match &failure {
                CountFailure::Idle => true,
                CountFailure::Status(s) => status_retryable(s),
                CountFailure::Header(_) => false,
            };
            if !retryable || failures > COUNT_RETRIES {
                return Err(err("count rows", &model.name, format!("{failure} after {} rows counted", counter.rows), retryable));
            }
            tracing::warn!(table = %model.name, rows = counter.rows, attempt = failures, error = %failure, "row count stream broke; resuming after the last row counted");
            tokio::time::sleep(Duration::from_millis(200 << failures.min(5))).await;
        }
    }

    /// A row's cells of the table's family, in model column order.
    fn decode_row(&self, model: &TableModel, cells: Vec<bigtable_rs::bigtable::RowCell>) -> Result<Row, LoadError> {
        let mut row: Row = vec![Cell::Null; model.columns.len()];
        for c in cells {
            if c.family_name != self.family {
                continue;
            }
            if let Some(i) = model.columns.iter().position(|col| col.attribute.as_bytes() == c.qualifier.as_slice()) {
                row[i] = cell_from(model.columns[i].ty, c.value).map_err(|m| err("read", &model.name, m, false))?;
            }
        }
        Ok(row)
    }

    /// The rows of `rows` (every row when `None`), newest cell per column: the emulator
    /// does not apply GC on read.
    async fn read(&self, model: &TableModel, rows: Option<RowSet>) -> Result<Vec<(Vec<u8>, Vec<bigtable_rs::bigtable::RowCell>)>, LoadError> {
        let mut client = self.client();
        let filter = Filter::CellsPerColumnLimitFilter(1);
        let req = ReadRowsRequest {
            table_name: client.get_full_table_name(&model.name),
            rows,
            filter: Some(RowFilter { filter: Some(filter) }),
            ..Default::default()
        };
        let rows = client.read_rows(req).await.map_err(|e| bt_err("read", &model.name, e))?;
        Ok(rows)
    }
}

impl Target for BigtableTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Bigtable
    }

    fn destination(&self, model: &TableModel) -> String {
        format!("projects/{}/instances/{}/tables/{}", self.project, self.instance, model.name)
    }

    fn ddl(&self, model: &TableModel) -> Vec<String> {
        vec![format!("cbt -project {} -instance {} createtable {} families={}", self.project, self.instance, model.name, self.family)]
    }

    fn batch_limits(&self, model: &TableModel) -> BatchLimits {
        let max = crossdock_core::sizing::bigtable_rows_per_request(model.columns.len());
        BatchLimits {
            start: max.min(1_000),
            max,
            writers: 2,
            basis: format!(
                "{} SetCell + 1 DeleteFromRow per row → ≤ {max} rows per MutateRows (≤ {} mutations)",
                model.columns.len(),
                crossdock_core::sizing::BIGTABLE_MAX_MUTATIONS
            ),
        }
    }

    async fn ensure_table(&self, model: &TableModel) -> Result<bool, LoadError> {
        // An existing table is used as it is: the admin API (and its permission) is only
        // needed to create one.
        if self.table_exists(&model.name).await? {
            return Ok(false);
        }
        if !self.create_tables {
            return Err(LoadError::NotFound {
                what: format!(
                    "Bigtable table {} (the pipeline does not allow creating it: set create_tables = true on the target, or create it: {})",
                    self.table_path(&model.name),
                    self.create_command(&model.name)
                ),
            });
        }
        let (mut a, bearer) = self.admin(&model.name).await?;
        let authed = |msg| {
            let mut r = tonic::Request::new(msg);
            if let Some(b) = bearer.as_deref().and_then(|b| b.parse().ok()) {
                r.metadata_mut().insert("authorization", b);
            }
            r
        };
        let got = a.get_table(authed(admin::GetTableRequest { name: self.table_path(&model.name), view: admin::table::View::SchemaView as i32 })).await;
        match got {
            Ok(t) => {
                let t = t.into_inner();
                if t.column_families.contains_key(&self.family) {
                    Ok(false)
                } else {
                    let have: Vec<&String> = t.column_families.keys().collect();
                    Err(LoadError::Incompatible {
                        target: "bigtable".into(),
                        table: model.name.clone(),
                        diff: format!("- column family {:?} is missing (table has {have:?})", self.family),
                    })
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                let mut families = HashMap::new();
                families.insert(
                    self.family.clone(),
                    admin::ColumnFamily { gc_rule: Some(admin::GcRule { rule: Some(admin::gc_rule::Rule::MaxNumVersions(1)) }), ..Default::default() },
                );
                let req = admin::CreateTableRequest {
                    parent: format!("projects/{}/instances/{}", self.project, self.instance),
                    table_id: model.name.clone(),
                    table: Some(admin::Table { column_families: families, ..Default::default() }),
                    initial_splits: vec![],
                };
                let mut r = tonic::Request::new(req);
                if let Some(b) = bearer.as_deref().and_then(|b| b.parse().ok()) {
                    r.metadata_mut().insert("authorization", b);
                }
                match a.create_table(r).await {
                    Ok(_) => {
                        if let Ok(mut created) = self.created.lock() {
                            created.insert(model.name.clone());
                        }
                        Ok(true)
                    }
                    Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
                    Err(s) => {
                        Err(err("create table", &model.name, format!("{} (or create it yourself: {})", s.message(), self.create_command(&model.name)), false))
                    }
                }
            }
            Err(s) => Err(err("get table", &model.name, s.message().to_string(), status_retryable(&s))),
        }
    }

    async fn add_columns(&self, _model: &TableModel, _columns: &[Column]) -> Result<(), LoadError> {
        // Columns are cell qualifiers in the one family: nothing to declare.
        Ok(())
    }

    async fn write_batch(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        let replace = !self.created.lock().is_ok_and(|c| c.contains(&model.name));
        self.mutate(model, rows.len(), |i| self.entry(model, &rows[i], replace).map_err(|m| err("encode", &model.name, m, false))).await
    }

    async fn create_indexes(&self, _model: &TableModel) -> Result<(), LoadError> {
        Ok(())
    }

    /// A key-only scan (first cell of each row, value stripped) whose responses are
    /// counted as they stream in and dropped: memory does not grow with the table, and
    /// only a stream idle for [`READ_IDLE_TIMEOUT`] fails, however long the scan takes.
    /// The table is cut at the keys `SampleRowKeys` returns into up to [`COUNT_RANGES`]
    /// ranges, counted at once (a one-stream count of a large table took as long as
    /// its load). A broken stream resumes after the last row it counted.
    async fn count_rows(&self, model: &TableModel) -> Result<u64, LoadError> {
        let mut client = self.client();
        let table_name = client.get_full_table_name(&model.name);
        let samples = match client.sample_row_keys(SampleRowKeysRequest { table_name: table_name.clone(), ..Default::default() }).await {
            Ok(mut stream) => {
                let mut keys = Vec::new();
                while let Some(Ok(r)) = stream.next().await {
                    keys.push(r.row_key);
                }
                keys
            }
            // Counting in one range is slower, not wrong.
            Err(e) => {
                tracing::debug!(table = %model.name, error = %e, "no row key samples; counting in one range");
                Vec::new()
            }
        };
        let bounds = split_points(samples, COUNT_RANGES);
        // Range i runs from cut i-1 (or the start) to cut i (or the end).
        let ends = |i: usize| (i.checked_sub(1).map(|j| bounds[j].clone()), bounds.get(i).cloned());
        let counts = futures::future::try_join_all((0..=bounds.len()).map(ends).map(|(from, to)| self.count_range(model, &table_name, from, to))).await?;
        Ok(counts.into_iter().sum())
    }

    /// Bigtable has no count of its own: every key streams back.
    fn count_reads_every_row(&self) -> bool {
        true
    }

    async fn read_all(&self, model: &TableModel) -> Result<Vec<Row>, LoadError> {
        let rows = self.read(model, None).await?;
        rows.into_iter().map(|(_, cells)| self.decode_row(model, cells)).collect()
    }

    async fn read_keys(&self, model: &TableModel, rows: &[Row]) -> Result<Vec<Row>, LoadError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let row_keys = rows.iter().map(|r| row_key(model, r).map_err(|m| err("read", &model.name, m, false))).collect::<Result<Vec<_>, _>>()?;
        let found = self.read(model, Some(RowSet { row_keys, row_ranges: vec![] })).await?;
        found.into_iter().map(|(_, cells)| self.decode_row(model, cells)).collect()
    }

    async fn delete_keys(&self, model: &TableModel, rows: &[Row]) -> Result<(), LoadError> {
        let keys = rows.iter().map(|r| row_key(model, r).map_err(|m| err("encode", &model.name, m, false))).collect::<Result<Vec<_>, _>>()?;
        self.mutate(model, keys.len(), |i| {
            Ok(Entry { row_key: keys[i].clone(), mutations: vec![Mutation { mutation: Some(M::DeleteFromRow(DeleteFromRow {})) }], idempotency: None })
        })
        .await
    }

    async fn list_indexes(&self, _model: &TableModel) -> Result<Vec<String>, LoadError> {
        Ok(vec![])
    }

    fn stats(&self) -> &CallStats {
        &self.stats
    }
}

/// Longest wait for the next response of a ReadRows stream before the stream counts
/// as broken (the scan as a whole has no deadline).
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Consecutive broken streams, without a row counted in between, before counting fails.
const COUNT_RETRIES: u32 = 5;

/// Why one ReadRows stream of a count ended early.
#[derive(Debug)]
enum CountFailure {
    Status(tonic::Status),
    Idle,
    Header(String),
}

impl std::fmt::Display for CountFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CountFailure::Status(s) => write!(f, "{:?}: {}", s.code(), s.message()),
            CountFailure::Idle => write!(f, "no response for {} s", READ_IDLE_TIMEOUT.as_secs()),
            CountFailure::Header(m) => write!(f, "routing header: {m}"),
        }
    }
}

/// Counts the rows of a ReadRows response stream from its chunks: a row counts when
/// its CommitRow arrives (a row may span chunks and responses; a ResetRow only means
/// its chunks come again). Holds two row keys, never a row.
#[derive(Debug, Default)]
struct RowCounter {
    rows: u64,
    /// Key of the row being received.
    current: Vec<u8>,
    /// Key of the last row counted: a resumed scan starts after it.
    last_committed: Option<Vec<u8>>,
    /// Whether a row was counted since the flag was last cleared.
    progressed: bool,
}

impl RowCounter {
    fn feed(&mut self, chunks: &[read_rows_response::CellChunk]) {
        for c in chunks {
            if !c.row_key.is_empty() {
                self.current.clone_from(&c.row_key);
            }
            if let Some(RowStatus::CommitRow(true)) = c.row_status {
                self.rows += 1;
                self.progressed = true;
                self.last_committed = Some(std::mem::take(&mut self.current));
            }
        }
    }
}

/// Ranges counted at once.
const COUNT_RANGES: usize = 8;

/// Up to `ranges - 1` keys, evenly spaced among the sorted, distinct non-empty
/// `samples`, that cut the table into ranges.
fn split_points(mut samples: Vec<Vec<u8>>, ranges: usize) -> Vec<Vec<u8>> {
    samples.retain(|k| !k.is_empty());
    samples.sort_unstable();
    samples.dedup();
    let cuts = ranges.saturating_sub(1).min(samples.len());
    (1..=cuts).map(|i| samples[i * samples.len() / (cuts + 1)].clone()).collect()
}

/// A key-only read of the rows in `[from, to)` (unbounded where `None`), starting
/// after `after` when resuming.
fn count_request(table_name: &str, from: Option<&[u8]>, to: Option<&[u8]>, after: Option<&[u8]>) -> ReadRowsRequest {
    let filter = Filter::Chain(Chain {
        filters: vec![RowFilter { filter: Some(Filter::CellsPerRowLimitFilter(1)) }, RowFilter { filter: Some(Filter::StripValueTransformer(true)) }],
    });
    let start_key = match (after, from) {
        (Some(k), _) => Some(StartKey::StartKeyOpen(k.to_vec())),
        (None, Some(k)) => Some(StartKey::StartKeyClosed(k.to_vec())),
        (None, None) => None,
    };
    let end_key = to.map(|k| EndKey::EndKeyOpen(k.to_vec()));
    let rows = (start_key.is_some() || end_key.is_some()).then(|| RowSet { row_keys: vec![], row_ranges: vec![RowRange { start_key, end_key }] });
    ReadRowsRequest { table_name: table_name.into(), rows, filter: Some(RowFilter { filter: Some(filter) }), ..Default::default() }
}

/// Runs one ReadRows stream to its end, feeding `counter`. bigtable_rs's own
/// `read_rows` collects every row and bounds the whole call by the connection timeout,
/// so the stream is read here from the generated client.
async fn stream_count(client: &mut BigTable, req: ReadRowsRequest, counter: &mut RowCounter) -> Result<(), CountFailure> {
    counter.progressed = false;
    // What bigtable_rs adds to each table call: Cloud Bigtable routes on it.
    let routing = tonic::metadata::MetadataValue::try_from(req.get_routing_header()).map_err(|e| CountFailure::Header(e.to_string()))?;
    let mut request = tonic::Request::new(req);
    request.metadata_mut().insert("x-goog-request-params", routing);
    let call = client.get_client().read_rows(request);
    let mut stream = match tokio::time::timeout(READ_IDLE_TIMEOUT, call).await {
        Ok(r) => r.map_err(CountFailure::Status)?.into_inner(),
        Err(_) => return Err(CountFailure::Idle),
    };
    loop {
        match tokio::time::timeout(READ_IDLE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(resp))) => counter.feed(&resp.chunks),
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(s)) => return Err(CountFailure::Status(s)),
            Err(_) => return Err(CountFailure::Idle),
        }
    }
}

/// Bigtable's clients also retry `Internal` (the service's stream resets arrive as it).
fn status_retryable(s: &tonic::Status) -> bool {
    super::grpc_retryable(s, &[tonic::Code::Internal])
}

#[cfg(test)]
mod tests {
    use super::*;
    use read_rows_response::CellChunk;

    fn chunk(key: &[u8], status: Option<RowStatus>) -> CellChunk {
        CellChunk {
            row_key: key.to_vec(),
            family_name: (!key.is_empty()).then(|| "d".into()),
            qualifier: (!key.is_empty()).then(|| b"q".to_vec()),
            row_status: status,
            ..Default::default()
        }
    }

    #[test]
    fn rows_count_on_commit_across_chunks_and_responses() {
        let mut c = RowCounter::default();
        c.feed(&[chunk(b"a", Some(RowStatus::CommitRow(true))), chunk(b"b", None)]);
        assert_eq!((c.rows, c.last_committed.as_deref()), (1, Some(&b"a"[..])));
        // Row b ends in the next response; row c is reset, sent again, then committed.
        c.feed(&[chunk(b"", Some(RowStatus::CommitRow(true))), chunk(b"c", None), chunk(b"", Some(RowStatus::ResetRow(true)))]);
        c.feed(&[chunk(b"c", Some(RowStatus::CommitRow(true)))]);
        assert_eq!((c.rows, c.last_committed.as_deref()), (3, Some(&b"c"[..])));
        assert!(c.progressed);
        // An empty response (the server reporting scan progress) counts nothing.
        c.feed(&[]);
        assert_eq!(c.rows, 3);
    }

    #[test]
    fn a_resumed_count_starts_after_the_last_row_counted() {
        let whole = count_request("projects/p/instances/i/tables/t", None, None, None);
        assert_eq!(whole.rows, None);
        let Some(RowFilter { filter: Some(Filter::Chain(chain)) }) = &whole.filter else { panic!("{:?}", whole.filter) };
        assert_eq!(chain.filters.len(), 2, "first cell only, value stripped");
        let rest = count_request("projects/p/instances/i/tables/t", Some(b"a"), None, Some(b"k\x00"));
        let range = &rest.rows.as_ref().expect("a row set").row_ranges[0];
        assert_eq!(range.start_key, Some(StartKey::StartKeyOpen(b"k\x00".to_vec())));
        assert_eq!(range.end_key, None);
        assert_eq!(rest.get_routing_header(), "table_name=projects%2Fp%2Finstances%2Fi%2Ftables%2Ft&app_profile_id=");
    }

    #[test]
    fn the_count_is_cut_into_ranges_at_sampled_keys_that_cover_the_table_once() {
        let samples: Vec<Vec<u8>> = ["k9", "k1", "", "k5", "k3", "k5", "k7"].iter().map(|k| k.as_bytes().to_vec()).collect();
        let cuts = split_points(samples.clone(), 3);
        assert_eq!(cuts, vec![b"k3".to_vec(), b"k7".to_vec()], "evenly spaced among k1 k3 k5 k7 k9");
        assert!(split_points(samples.clone(), 1).is_empty());
        assert_eq!(split_points(samples, 100).len(), 5, "no more cuts than distinct keys");
        // First range: from the start, up to (not including) the first cut.
        let first = count_request("t", None, Some(b"k3"), None);
        let r = &first.rows.as_ref().expect("a row set").row_ranges[0];
        assert_eq!((r.start_key.as_ref(), r.end_key.as_ref()), (None, Some(&EndKey::EndKeyOpen(b"k3".to_vec()))));
        // A middle range includes its first key, and keeps its end when resumed.
        let mid = count_request("t", Some(b"k3"), Some(b"k7"), None);
        assert_eq!(mid.rows.as_ref().expect("rows").row_ranges[0].start_key, Some(StartKey::StartKeyClosed(b"k3".to_vec())));
        let resumed = count_request("t", Some(b"k3"), Some(b"k7"), Some(b"k4"));
        let r = &resumed.rows.as_ref().expect("rows").row_ranges[0];
        assert_eq!((r.start_key.as_ref(), r.end_key.as_ref()), (Some(&StartKey::StartKeyOpen(b"k4".to_vec())), Some(&EndKey::EndKeyOpen(b"k7".to_vec()))));
    }
}
