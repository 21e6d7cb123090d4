//! The capacity lease: raise a provisioned table's read capacity for the export and put
//! it back — always.
//!
//! Order of operations (see ARCHITECTURE.md, "capacity restore is always attempted"):
//! 1. DescribeTable: the table must be ACTIVE; a decrease must be left today
//!    (`NumberOfDecreasesToday`, `--force` overrides).
//! 2. Write `_capacity.json` ([`CapacityLease`]) under the run prefix — BEFORE any change.
//! 3. Autoscaled tables: raise the scalable target's MinCapacity (else autoscaling undoes
//!    the raise); then UpdateTable and wait for ACTIVE.
//! 4. On the way out (success, error, shutdown): autoscaling bounds back first, then
//!    UpdateTable to the original read capacity, wait for ACTIVE, mark the lease
//!    `restored: true`.
//!
//! After a SIGKILL, [`restore_table`] (`crossdock export restore`, and every new export of
//! the table) finds unrestored leases and restores from the oldest.
//!
//! Application Auto Scaling is reached through the [`Autoscaler`] trait: the real SDK
//! client ([`AppAutoscaling`]), nothing ([`NoAutoscaling`]), or an in-memory
//! substitute for tests ([`FakeAutoscaling`]), since the local stack has no such service.

use crate::error::{ddb_error, invalid, s3_error, ExportError};
use crate::writer::{get_json, put_json};
use aws_sdk_dynamodb::types::{BillingMode as SdkBilling, ProvisionedThroughput, TableDescription, TableStatus};
use crossdock_core::layout::{DumpFile, DumpKey, ExportId};
use crossdock_core::manifest::{AutoscalingBounds, CapacityLease};
use crossdock_core::schema::{BillingMode, Throughput};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Access to a table's read-capacity autoscaling settings.
pub trait Autoscaler: Send + Sync {
    /// The table's read-capacity scalable target, if it is autoscaled.
    fn read_bounds<'a>(&'a self, table: &'a str) -> BoxFuture<'a, Result<Option<AutoscalingBounds>, ExportError>>;
    /// Sets the read-capacity scalable target's bounds.
    fn set_read_bounds<'a>(&'a self, table: &'a str, bounds: AutoscalingBounds) -> BoxFuture<'a, Result<(), ExportError>>;
}

/// The real Application Auto Scaling service.
#[derive(Debug, Clone)]
pub struct AppAutoscaling(pub aws_sdk_applicationautoscaling::Client);

impl AppAutoscaling {
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        AppAutoscaling(aws_sdk_applicationautoscaling::Client::new(conf))
    }

    /// Removes the table's read-capacity scalable target (test clean-up, decommissioning).
    pub async fn deregister_read(&self, table: &str) -> Result<(), ExportError> {
        use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
        self.0
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(format!("table/{table}"))
            .scalable_dimension(ScalableDimension::DynamoDbTableReadCapacityUnits)
            .send()
            .await
            .map_err(|e| ExportError::Autoscaling {
                table: table.into(),
                op: "DeregisterScalableTarget",
                message: aws_sdk_applicationautoscaling::error::DisplayErrorContext(&e).to_string(),
            })?;
        Ok(())
    }
}

impl Autoscaler for AppAutoscaling {
    fn read_bounds<'a>(&'a self, table: &'a str) -> BoxFuture<'a, Result<Option<AutoscalingBounds>, ExportError>> {
        use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
        Box::pin(async move {
            let out = self
                .0
                .describe_scalable_targets()
                .service_namespace(ServiceNamespace::Dynamodb)
                .resource_ids(format!("table/{table}"))
                .scalable_dimension(ScalableDimension::DynamoDbTableReadCapacityUnits)
                .send()
                .await
                .map_err(|e| ExportError::Autoscaling {
                    table: table.into(),
                    op: "DescribeScalableTargets",
                    message: aws_sdk_applicationautoscaling::error::DisplayErrorContext(&e).to_string(),
                })?;
            Ok(out.scalable_targets().first().map(|t| AutoscalingBounds {
                min_capacity: i64::from(t.min_capacity()),
                max_capacity: i64::from(t.max_capacity()),
            }))
        })
    }

    fn set_read_bounds<'a>(&'a self, table: &'a str, b: AutoscalingBounds) -> BoxFuture<'a, Result<(), ExportError>> {
        use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
        Box::pin(async move {
            let clamp = |v: i64| i32::try_from(v).unwrap_or(i32::MAX);
            self.0
                .register_scalable_target()
                .service_namespace(ServiceNamespace::Dynamodb)
                .resource_id(format!("table/{table}"))
                .scalable_dimension(ScalableDimension::DynamoDbTableReadCapacityUnits)
                .min_capacity(clamp(b.min_capacity))
                .max_capacity(clamp(b.max_capacity))
                .send()
                .await
                .map_err(|e| ExportError::Autoscaling {
                    table: table.into(),
                    op: "RegisterScalableTarget",
                    message: aws_sdk_applicationautoscaling::error::DisplayErrorContext(&e).to_string(),
                })?;
            Ok(())
        })
    }
}

/// No autoscaling anywhere (`--no-autoscaling`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAutoscaling;

impl Autoscaler for NoAutoscaling {
    fn read_bounds<'a>(&'a self, _table: &'a str) -> BoxFuture<'a, Result<Option<AutoscalingBounds>, ExportError>> {
        Box::pin(async { Ok(None) })
    }
    fn set_read_bounds<'a>(&'a self, _table: &'a str, _b: AutoscalingBounds) -> BoxFuture<'a, Result<(), ExportError>> {
        Box::pin(async { Ok(()) })
    }
}

/// In-memory stand-in for Application Auto Scaling (the local stack has none): holds
/// scalable targets and records every change, for tests.
#[derive(Debug, Default)]
pub struct FakeAutoscaling {
    targets: Mutex<HashMap<String, AutoscalingBounds>>,
    history: Mutex<Vec<(String, AutoscalingBounds)>>,
}

impl FakeAutoscaling {
    /// Registers `table` as autoscaled with `bounds`.
    pub fn with_target(table: &str, bounds: AutoscalingBounds) -> Self {
        let f = FakeAutoscaling::default();
        f.targets.lock().unwrap_or_else(|p| p.into_inner()).insert(table.into(), bounds);
        f
    }
    pub fn bounds(&self, table: &str) -> Option<AutoscalingBounds> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).get(table).copied()
    }
    /// Every `set_read_bounds` call, in order.
    pub fn history(&self) -> Vec<(String, AutoscalingBounds)> {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Autoscaler for FakeAutoscaling {
    fn read_bounds<'a>(&'a self, table: &'a str) -> BoxFuture<'a, Result<Option<AutoscalingBounds>, ExportError>> {
        let b = self.bounds(table);
        Box::pin(async move { Ok(b) })
    }
    fn set_read_bounds<'a>(&'a self, table: &'a str, b: AutoscalingBounds) -> BoxFuture<'a, Result<(), ExportError>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).insert(table.into(), b);
        self.history.lock().unwrap_or_else(|p| p.into_inner()).push((table.into(), b));
        Box::pin(async { Ok(()) })
    }
}

/// What DescribeTable said, in the terms the exporter needs.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub status: String,
    pub billing: BillingMode,
    /// Provisioned capacity (`None` on demand).
    pub throughput: Option<Throughput>,
    pub decreases_today: i64,
    pub last_decrease: Option<time::OffsetDateTime>,
    pub size_bytes: u64,
    pub item_count: u64,
    /// The raw description (for `_schema.json`).
    pub description: TableDescription,
}

impl TableInfo {
    pub fn is_active(&self) -> bool {
        self.status == TableStatus::Active.as_str()
    }
}

/// DescribeTable.
pub async fn describe(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<TableInfo, ExportError> {
    let out = ddb.describe_table().table_name(table).send().await.map_err(|e| ddb_error(table, "DescribeTable", &e))?;
    let Some(d) = out.table else { return Err(ExportError::TableNotFound { table: table.into() }) };
    let on_demand = d.billing_mode_summary().and_then(|b| b.billing_mode()) == Some(&SdkBilling::PayPerRequest);
    let pt = d.provisioned_throughput();
    let throughput = if on_demand {
        None
    } else {
        pt.map(|p| Throughput { read: p.read_capacity_units().unwrap_or(0), write: p.write_capacity_units().unwrap_or(0) })
    };
    Ok(TableInfo {
        name: table.into(),
        status: d.table_status().map_or_else(|| "UNKNOWN".into(), |s| s.as_str().to_string()),
        billing: if throughput.is_some() { BillingMode::Provisioned } else { BillingMode::PayPerRequest },
        throughput,
        decreases_today: pt.and_then(|p| p.number_of_decreases_today()).unwrap_or(0),
        last_decrease: pt
            .and_then(|p| p.last_decrease_date_time())
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.secs()).ok()),
        size_bytes: d.table_size_bytes().unwrap_or(0).max(0) as u64,
        item_count: d.item_count().unwrap_or(0).max(0) as u64,
        description: d,
    })
}

/// Whether a capacity decrease will be available to restore with: DynamoDB allows 4
/// decreases at any time in a UTC day, then one more per hour without a decrease, up to
/// 27 a day.
pub fn decrease_available(decreases_today: i64, last_decrease: Option<time::OffsetDateTime>, now: time::OffsetDateTime) -> bool {
    if decreases_today < 4 {
        return true;
    }
    decreases_today < 27 && last_decrease.is_none_or(|l| now - l >= time::Duration::hours(1))
}

/// Where a lease lives, and the clients to act on it.
#[derive(Clone)]
pub struct LeaseCtx<'a> {
    pub ddb: &'a aws_sdk_dynamodb::Client,
    pub s3: &'a aws_sdk_s3::Client,
    pub autoscaler: &'a dyn Autoscaler,
    pub bucket: &'a str,
    /// How long to wait for ACTIVE after an UpdateTable.
    pub active_timeout: Duration,
}

impl std::fmt::Debug for LeaseCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseCtx").field("bucket", &self.bucket).finish()
    }
}

/// A lease held by this process: where it is stored and what it says.
#[derive(Debug, Clone)]
pub struct HeldLease {
    pub key: String,
    pub lease: CapacityLease,
}

/// Checks that `target_read` can be leased now, without changing anything:
/// `Ok(None)` when no raise is needed (on demand, or already at/above the target).
pub fn plan_raise(info: &TableInfo, target_read: Option<i64>, force: bool) -> Result<Option<Throughput>, ExportError> {
    let (Some(target), Some(current)) = (target_read, info.throughput) else { return Ok(None) };
    if target <= current.read {
        return Ok(None);
    }
    if !force && !decrease_available(info.decreases_today, info.last_decrease, time::OffsetDateTime::now_utc()) {
        return Err(ExportError::NoDecreaseLeft { table: info.name.clone(), decreases_today: info.decreases_today });
    }
    if target > 40_000 * 1000 {
        return Err(invalid("raise", format!("{target} RCU is beyond any DynamoDB table's limit")));
    }
    Ok(Some(Throughput { read: target, write: current.write }))
}

/// Writes the lease (step 2). Nothing has been changed when this returns.
pub async fn take(
    ctx: &LeaseCtx<'_>,
    export: &ExportId,
    prefix: &str,
    info: &TableInfo,
    raised_to: Throughput,
) -> Result<HeldLease, ExportError> {
    let original = info.throughput.unwrap_or(raised_to);
    let autoscaling = ctx.autoscaler.read_bounds(&info.name).await?;
    let lease = CapacityLease {
        table: info.name.clone(),
        original,
        raised_to,
        autoscaling,
        taken_at: now_rfc3339(),
        restored: false,
    };
    let key = export.s3_key(prefix, &DumpFile::Capacity);
    put_json(ctx.s3, ctx.bucket, &key, &lease).await?;
    tracing::info!(table = %info.name, key = %key, original = original.read, raised_to = raised_to.read, autoscaled = autoscaling.is_some(), "capacity lease written");
    Ok(HeldLease { key, lease })
}

/// Raises capacity per the lease (step 3).
pub async fn raise(ctx: &LeaseCtx<'_>, held: &HeldLease) -> Result<(), ExportError> {
    let l = &held.lease;
    if let Some(b) = l.autoscaling {
        let raised = AutoscalingBounds { min_capacity: l.raised_to.read, max_capacity: b.max_capacity.max(l.raised_to.read) };
        ctx.autoscaler.set_read_bounds(&l.table, raised).await?;
    }
    set_read(ctx, &l.table, l.raised_to.read).await?;
    metrics::counter!("crossdock_export_capacity_changes_total", "direction" => "raise").increment(1);
    tracing::info!(table = %l.table, from = l.original.read, to = l.raised_to.read, "read capacity raised");
    Ok(())
}

/// Restores the lease's original capacity (step 4) and marks it restored.
pub async fn restore(ctx: &LeaseCtx<'_>, held: &mut HeldLease) -> Result<(), ExportError> {
    let l = &held.lease;
    if let Some(b) = l.autoscaling {
        ctx.autoscaler.set_read_bounds(&l.table, b).await?;
    }
    set_read(ctx, &l.table, l.original.read).await?;
    held.lease.restored = true;
    put_json(ctx.s3, ctx.bucket, &held.key, &held.lease).await?;
    metrics::counter!("crossdock_export_capacity_changes_total", "direction" => "restore").increment(1);
    tracing::info!(table = %held.lease.table, to = held.lease.original.read, key = %held.key, "read capacity restored");
    Ok(())
}

/// Sets the table's read capacity (keeping its current write capacity), waiting for
/// ACTIVE before and after. A no-op when it already has that value.
async fn set_read(ctx: &LeaseCtx<'_>, table: &str, read: i64) -> Result<(), ExportError> {
    for attempt in 0..10u32 {
        let info = wait_active(ctx.ddb, table, ctx.active_timeout).await?;
        let Some(current) = info.throughput else { return Ok(()) };
        if current.read == read {
            return Ok(());
        }
        let pt = ProvisionedThroughput::builder()
            .read_capacity_units(read)
            .write_capacity_units(current.write)
            .build()
            .map_err(|e| invalid("throughput", e.to_string()))?;
        match ctx.ddb.update_table().table_name(table).provisioned_throughput(pt).send().await {
            Ok(_) => {
                wait_active(ctx.ddb, table, ctx.active_timeout).await?;
                return Ok(());
            }
            Err(e) => {
                let err = ddb_error(table, "UpdateTable", &e);
                // ResourceInUse (autoscaling or another change in flight): wait and retry.
                let retry = matches!(&err, ExportError::DynamoDb { retryable: true, .. }) && attempt < 9;
                if !retry {
                    return Err(err);
                }
                tracing::warn!(table, error = %err, "UpdateTable refused for now; retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt + 1))).await;
            }
        }
    }
    Err(ExportError::DynamoDb { table: table.into(), op: "UpdateTable", message: "gave up after 10 attempts".into(), retryable: true })
}

/// Polls DescribeTable until the table is ACTIVE.
pub async fn wait_active(ddb: &aws_sdk_dynamodb::Client, table: &str, timeout: Duration) -> Result<TableInfo, ExportError> {
    let start = tokio::time::Instant::now();
    loop {
        let info = describe(ddb, table).await?;
        if info.is_active() {
            return Ok(info);
        }
        if start.elapsed() >= timeout {
            return Err(ExportError::Timeout { table: table.into(), secs: timeout.as_secs(), status: info.status });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What [`restore_table`] did with one lease.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub key: String,
    pub table: String,
    pub restored_to: i64,
    /// Whether an UpdateTable was needed (false: a newer lease, superseded by an older one).
    pub applied: bool,
}

/// Finds every unrestored lease of `table` under `prefix` (in `batch` only, if given) and
/// restores the table to the oldest lease's original capacity, marking them all restored.
pub async fn restore_table(
    ctx: &LeaseCtx<'_>,
    prefix: &str,
    table: &str,
    batch: Option<&str>,
) -> Result<Vec<RestoreReport>, ExportError> {
    let mut leases = find_unrestored(ctx.s3, ctx.bucket, prefix, table, batch).await?;
    // Oldest first: its `original` is the capacity before any of the crashed runs.
    leases.sort_by(|a, b| a.lease.taken_at.cmp(&b.lease.taken_at).then(a.key.cmp(&b.key)));
    let mut reports = Vec::new();
    for (i, mut held) in leases.into_iter().enumerate() {
        let applied = i == 0;
        if applied {
            restore(ctx, &mut held).await?;
        } else {
            held.lease.restored = true;
            put_json(ctx.s3, ctx.bucket, &held.key, &held.lease).await?;
        }
        reports.push(RestoreReport { key: held.key, table: table.into(), restored_to: held.lease.original.read, applied });
    }
    Ok(reports)
}

/// Unrestored `_capacity.json` leases of a table.
pub async fn find_unrestored(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    table: &str,
    batch: Option<&str>,
) -> Result<Vec<HeldLease>, ExportError> {
    let batches: Vec<String> = match batch {
        Some(b) => vec![b.to_string()],
        None => list(s3, bucket, prefix, Some("/")).await?.1.into_iter().filter_map(|p| {
            p.strip_prefix(prefix).and_then(|r| r.strip_suffix('/')).map(str::to_string)
        }).collect(),
    };
    let mut out = Vec::new();
    for b in batches {
        let (keys, _) = list(s3, bucket, &format!("{prefix}{b}/{table}/"), None).await?;
        for key in keys {
            let Ok(parsed) = DumpKey::from_s3_key(prefix, &key) else { continue };
            if parsed.file != DumpFile::Capacity || parsed.export.table != table {
                continue;
            }
            if let Some(lease) = get_json::<CapacityLease>(s3, bucket, &key, "capacity lease").await? {
                if !lease.restored {
                    out.push(HeldLease { key, lease });
                }
            }
        }
    }
    Ok(out)
}

/// Lists keys (and common prefixes with a delimiter) under a prefix.
pub(crate) async fn list(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
) -> Result<(Vec<String>, Vec<String>), ExportError> {
    let mut keys = Vec::new();
    let mut prefixes = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| s3_error(bucket, prefix, "ListObjectsV2", &e))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        prefixes.extend(page.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_string)));
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return Ok((keys, prefixes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn decreases_four_any_time_then_hourly() {
        let now = datetime!(2026-11-23 12:00 UTC);
        assert!(decrease_available(0, None, now));
        assert!(decrease_available(3, Some(now), now));
        assert!(!decrease_available(4, Some(datetime!(2026-11-23 11:30 UTC)), now));
        assert!(decrease_available(4, Some(datetime!(2026-11-23 10:59 UTC)), now));
        assert!(!decrease_available(27, Some(datetime!(2026-11-23 01:00 UTC)), now));
    }

    #[tokio::test]
    async fn fake_autoscaling_records_changes() {
        let f = FakeAutoscaling::with_target("t1x", AutoscalingBounds { min_capacity: 5, max_capacity: 50 });
        assert_eq!(f.read_bounds("t1x").await.ok().flatten().map(|b| b.min_capacity), Some(5));
        assert_eq!(f.read_bounds("other").await.ok().flatten(), None);
        f.set_read_bounds("t1x", AutoscalingBounds { min_capacity: 100, max_capacity: 100 }).await.ok();
        assert_eq!(f.history().len(), 1);
        assert_eq!(f.bounds("t1x").map(|b| b.min_capacity), Some(100));
    }
}
