//! The capacity lease: raise a provisioned table's read capacity for the export and put
//! it back — always, and only once its owner is done with it.
//!
//! One lease per table (`core::layout::capacity_lease_key`), whatever the batch, so every
//! export of the table meets it. It names its owner (run id, host, pid) and carries a
//! heartbeat the owner renews while it runs ([`Heartbeat`]).
//!
//! Order of operations (see ARCHITECTURE.md, "capacity restore is always attempted"):
//! 1. DescribeTable: the table must be ACTIVE; a decrease must be left today
//!    (`NumberOfDecreasesToday`, `--force` overrides).
//! 2. [`take`] the lease with a conditional write (`If-None-Match: *`, or `If-Match` over
//!    a restored lease) BEFORE any change: a live lease of another run refuses the raise
//!    ([`ExportError::LeaseHeld`], naming the owner); a stale one is restored first.
//! 3. Autoscaled tables: raise the scalable target's MinCapacity (else autoscaling undoes
//!    the raise); then UpdateTable and wait for ACTIVE.
//! 4. On the way out (success, error, shutdown, [`release`]): autoscaling bounds back
//!    first; a table without autoscaling gets its original read capacity by UpdateTable
//!    (an autoscaled one is left to autoscaling: [`restore_actions`]); then the lease is
//!    marked `restored: true`.
//!
//! Who may restore ([`standing`]): the owner, or anyone once the owner's heartbeat is
//! older than the lease's `stale_after_secs` (and its `held_until` has passed). A stale
//! lease is first claimed with an `If-Match` write, so of several restorers only one
//! acts. [`restore_table`] (`crossdock export restore`, and the start of every export)
//! leaves a live lease of another run alone and says so.
//!
//! Sharded exports: [`capacity_raise`] (`crossdock export capacity raise`) takes the lease
//! for a named run and exits with it held until `held_until`; the shards
//! (`--capacity-run`) renew its heartbeat while they scan; `crossdock export capacity
//! restore` (the run's own restore) releases it.
//!
//! Application Auto Scaling is reached through the [`Autoscaler`] trait: the real SDK
//! client ([`AppAutoscaling`]; moto serves it in the local stack), nothing
//! ([`NoAutoscaling`]), or an in-memory one for this module's unit tests.

use crate::error::{ddb_error, invalid, s3_error, ExportError};
use crate::s3::get_json_tagged;
use aws_sdk_dynamodb::types::{BillingMode as SdkBilling, ProvisionedThroughput, TableDescription, TableStatus};
use aws_sdk_s3::primitives::ByteStream;
use crossdock_core::layout::capacity_lease_key;
use crossdock_core::manifest::{AutoscalingBounds, CapacityLease, LeaseOwner};
use crossdock_core::schema::{BillingMode, Throughput};
use crossdock_core::stamp::{now_rfc3339, rfc3339};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
            Ok(out
                .scalable_targets()
                .first()
                .map(|t| AutoscalingBounds { min_capacity: i64::from(t.min_capacity()), max_capacity: i64::from(t.max_capacity()) }))
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

/// In-memory Application Auto Scaling for unit tests: holds scalable targets and
/// records every change.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeAutoscaling {
    targets: Mutex<std::collections::HashMap<String, AutoscalingBounds>>,
    history: Mutex<Vec<(String, AutoscalingBounds)>>,
}

#[cfg(test)]
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

#[cfg(test)]
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
    let throughput =
        if on_demand { None } else { pt.map(|p| Throughput { read: p.read_capacity_units().unwrap_or(0), write: p.write_capacity_units().unwrap_or(0) }) };
    Ok(TableInfo {
        name: table.into(),
        status: d.table_status().map_or_else(|| "UNKNOWN".into(), |s| s.as_str().to_string()),
        billing: if throughput.is_some() { BillingMode::Provisioned } else { BillingMode::PayPerRequest },
        throughput,
        decreases_today: pt.and_then(|p| p.number_of_decreases_today()).unwrap_or(0),
        last_decrease: pt.and_then(|p| p.last_decrease_date_time()).and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.secs()).ok()),
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

/// How long an owner's heartbeat may be silent before its lease counts as stale, unless
/// `--lease-stale-after` says otherwise.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(180);

/// This process as a (possible) lease holder.
#[derive(Debug, Clone)]
pub struct Holder {
    pub owner: LeaseOwner,
    /// Written into the leases this process takes; readers judge a lease by the value
    /// written in it, not by their own.
    pub stale_after: Duration,
}

impl Holder {
    /// `run_id: None` gives a fresh random id: an export process is its own run, so a
    /// rerun or `--resume` never mistakes a live predecessor's lease for its own.
    pub fn new(run_id: Option<&str>, stale_after: Duration) -> Holder {
        let run_id = run_id.map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_string);
        Holder { owner: LeaseOwner { run_id, host: hostname(), pid: std::process::id() }, stale_after }
    }

    pub fn run_id(&self) -> &str {
        &self.owner.run_id
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Six renewals per stale period: a lease turns stale only after several renewals in a
/// row were lost, never because of one slow request.
pub fn heartbeat_every(stale_after_secs: u64) -> Duration {
    (Duration::from_secs(stale_after_secs) / 6).max(Duration::from_millis(100))
}

/// What a stored lease means to one run at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// `restored: true`: no raise is in force.
    Restored,
    /// Held by the run asking.
    Own,
    /// Another run's, alive: heartbeat younger than its stale period, or `held_until`
    /// not passed.
    Live { heartbeat_age_secs: i64 },
    /// Another run's, silent for longer than its stale period: its owner is gone.
    Stale { heartbeat_age_secs: i64 },
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// The decision every lease reader makes: may `run_id` act on this lease now?
/// `Err` names a timestamp that does not parse.
pub fn standing(lease: &CapacityLease, run_id: &str, now: time::OffsetDateTime) -> Result<Standing, String> {
    if lease.restored {
        return Ok(Standing::Restored);
    }
    if lease.owner.run_id == run_id {
        return Ok(Standing::Own);
    }
    let beat = parse_time(&lease.heartbeat_at).ok_or_else(|| format!("heartbeat_at {:?} is not RFC 3339", lease.heartbeat_at))?;
    let age = (now - beat).whole_seconds();
    let period = i64::try_from(lease.stale_after_secs).unwrap_or(i64::MAX);
    let held = match &lease.held_until {
        Some(t) => now < parse_time(t).ok_or_else(|| format!("held_until {t:?} is not RFC 3339"))?,
        None => false,
    };
    Ok(if age < period || held { Standing::Live { heartbeat_age_secs: age } } else { Standing::Stale { heartbeat_age_secs: age } })
}

/// [`standing`] at the current time.
pub fn standing_now(lease: &CapacityLease, run_id: &str) -> Result<Standing, String> {
    standing(lease, run_id, time::OffsetDateTime::now_utc())
}

/// In words, for messages: whose lease, how fresh.
pub fn describe_lease(lease: &CapacityLease, s: Standing) -> String {
    let held = lease.held_until.as_deref().map(|t| format!(", held until {t}")).unwrap_or_default();
    match s {
        Standing::Restored => format!("restored ({})", lease.restored_by.as_deref().unwrap_or("by an earlier version")),
        Standing::Own => format!("held by this run, {}", lease.owner),
        Standing::Live { heartbeat_age_secs } => {
            format!("held by {}, last heartbeat {heartbeat_age_secs} s ago (stale after {} s{held})", lease.owner, lease.stale_after_secs)
        }
        Standing::Stale { heartbeat_age_secs } => {
            format!("stale: {} has not renewed it for {heartbeat_age_secs} s (stale after {} s{held})", lease.owner, lease.stale_after_secs)
        }
    }
}

/// A lease as stored, with the ETag a conditional write over it must match.
#[derive(Debug, Clone)]
pub struct HeldLease {
    pub key: String,
    pub etag: String,
    pub lease: CapacityLease,
}

/// The table's lease, if there is one.
pub async fn read_lease(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str, table: &str) -> Result<Option<HeldLease>, ExportError> {
    read_key(s3, bucket, &capacity_lease_key(prefix, table)?).await
}

async fn read_key(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<HeldLease>, ExportError> {
    let held = get_json_tagged::<CapacityLease>(s3, bucket, key, "capacity lease").await?;
    Ok(held.map(|(lease, etag)| HeldLease { key: key.into(), etag, lease }))
}

/// The precondition of a lease write.
enum Cond<'a> {
    /// No lease may exist (`If-None-Match: *`).
    Create,
    /// The lease must still be the one read (`If-Match: <ETag>`).
    Replace(&'a str),
}

/// Writes a lease under a precondition: `Ok(Some(etag))` written, `Ok(None)` someone
/// else wrote it first (412, or 409 for a create racing another).
async fn write_lease(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, lease: &CapacityLease, cond: Cond<'_>) -> Result<Option<String>, ExportError> {
    let body = serde_json::to_vec_pretty(lease).map_err(|e| ExportError::Corrupt {
        bucket: bucket.into(),
        key: key.into(),
        what: "capacity lease",
        why: e.to_string(),
    })?;
    let req = s3.put_object().bucket(bucket).key(key).content_type("application/json").body(ByteStream::from(body));
    let req = match cond {
        Cond::Create => req.if_none_match("*"),
        Cond::Replace(etag) => req.if_match(etag),
    };
    match req.send().await {
        Ok(out) => match out.e_tag() {
            Some(etag) => Ok(Some(etag.to_string())),
            // No ETag in the answer: read it back, a later conditional write needs it.
            None => Ok(read_key(s3, bucket, key).await?.map(|h| h.etag)),
        },
        Err(e) => {
            let lost = matches!(&e, aws_sdk_s3::error::SdkError::ServiceError(s)
                if matches!(s.raw().status().as_u16(), 409 | 412)
                    || matches!(aws_sdk_s3::error::ProvideErrorMetadata::code(s.err()), Some("PreconditionFailed" | "ConditionalRequestConflict")));
            if lost {
                Ok(None)
            } else {
                Err(s3_error(bucket, key, "PutObject", &e))
            }
        }
    }
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

/// How many times a conditional write is retried after losing a race, before giving up.
const RACES: usize = 8;

fn lease_held(ctx: &LeaseCtx<'_>, held: &HeldLease, s: Standing) -> ExportError {
    ExportError::LeaseHeld {
        table: held.lease.table.clone(),
        bucket: ctx.bucket.into(),
        key: held.key.clone(),
        owner: held.lease.owner.to_string(),
        why: describe_lease(&held.lease, s),
    }
}

fn corrupt_time(ctx: &LeaseCtx<'_>, key: &str, why: String) -> ExportError {
    ExportError::Corrupt { bucket: ctx.bucket.into(), key: key.into(), what: "capacity lease", why }
}

/// Takes the table's lease for `holder` (step 2) with a create-only write, so of two
/// exports racing for one table exactly one gets it; the other gets
/// [`ExportError::LeaseHeld`] naming the owner. A stale lease met on the way is
/// restored first (and reported). Nothing has been raised when this returns.
pub async fn take(
    ctx: &LeaseCtx<'_>,
    holder: &Holder,
    prefix: &str,
    info: &TableInfo,
    raised_to: Throughput,
    held_until: Option<time::OffsetDateTime>,
) -> Result<(HeldLease, Vec<RestoreReport>), ExportError> {
    let key = capacity_lease_key(prefix, &info.name)?;
    let mut original = info.throughput.unwrap_or(raised_to);
    let mut restored = Vec::new();
    for _ in 0..RACES {
        let now = time::OffsetDateTime::now_utc();
        let current = read_key(ctx.s3, ctx.bucket, &key).await?;
        let etag = match &current {
            None => None,
            Some(cur) => match standing(&cur.lease, holder.run_id(), now).map_err(|w| corrupt_time(ctx, &key, w))? {
                Standing::Restored => Some(cur.etag.clone()),
                // A retried step of the same run: the lease is already its own.
                Standing::Own => return Ok((cur.clone(), restored)),
                s @ Standing::Live { .. } => return Err(lease_held(ctx, cur, s)),
                s @ Standing::Stale { .. } => {
                    if let Some(r) = take_over_and_restore(ctx, holder, cur.clone(), describe_lease(&cur.lease, s)).await? {
                        restored.push(r);
                        // The table was raised by the stale lease: its capacity now is the original.
                        original = describe(ctx.ddb, &info.name).await?.throughput.unwrap_or(original);
                    }
                    continue;
                }
            },
        };
        let lease = CapacityLease {
            table: info.name.clone(),
            original,
            raised_to,
            autoscaling: ctx.autoscaler.read_bounds(&info.name).await?,
            taken_at: now_rfc3339(),
            restored: false,
            owner: holder.owner.clone(),
            heartbeat_at: now_rfc3339(),
            stale_after_secs: holder.stale_after.as_secs().max(1),
            held_until: held_until.map(rfc3339),
            restored_by: None,
        };
        let cond = etag.as_deref().map_or(Cond::Create, Cond::Replace);
        if let Some(etag) = write_lease(ctx.s3, ctx.bucket, &key, &lease, cond).await? {
            tracing::info!(table = %info.name, key = %key, owner = %lease.owner, original = original.read, raised_to = raised_to.read, autoscaled = lease.autoscaling.is_some(), "capacity lease taken");
            return Ok((HeldLease { key, etag, lease }, restored));
        }
        // Another run wrote the lease between our read and our write: read it again.
    }
    Err(ExportError::S3 { bucket: ctx.bucket.into(), key, op: "PutObject", message: format!("the lease kept changing under {RACES} attempts to take it") })
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

/// What a restore does to the table, from the lease alone: the autoscaling bounds back,
/// and a read capacity to set only for a table without autoscaling. With MinCapacity
/// back, autoscaling brings an autoscaled table down by itself once the export's reads
/// stop; forcing it would spend one of the day's few capacity decreases, and could cut
/// below what the application's traffic needs by then.
pub fn restore_actions(lease: &CapacityLease) -> (Option<AutoscalingBounds>, Option<i64>) {
    match lease.autoscaling {
        Some(b) => (Some(b), None),
        None => (None, Some(lease.original.read)),
    }
}

/// Puts the table back per the lease (step 4), without touching the lease itself.
pub async fn restore_capacity(ctx: &LeaseCtx<'_>, lease: &CapacityLease) -> Result<(), ExportError> {
    let (bounds, read) = restore_actions(lease);
    if let Some(b) = bounds {
        ctx.autoscaler.set_read_bounds(&lease.table, b).await?;
    }
    if let Some(read) = read {
        set_read(ctx, &lease.table, read).await?;
    }
    metrics::counter!("crossdock_export_capacity_changes_total", "direction" => "restore").increment(1);
    tracing::info!(table = %lease.table, to = lease.original.read, autoscaled = bounds.is_some(), "read capacity restored");
    Ok(())
}

/// Marks a lease restored, over concurrent renewals by other processes of the same run
/// (shards). `false` when it turned out to belong to another run meanwhile.
async fn mark_restored(ctx: &LeaseCtx<'_>, mut held: HeldLease, by: &str) -> Result<bool, ExportError> {
    let run_id = held.lease.owner.run_id.clone();
    for _ in 0..RACES {
        held.lease.restored = true;
        held.lease.restored_by = Some(by.to_string());
        if write_lease(ctx.s3, ctx.bucket, &held.key, &held.lease, Cond::Replace(&held.etag)).await?.is_some() {
            return Ok(true);
        }
        match read_key(ctx.s3, ctx.bucket, &held.key).await? {
            Some(cur) if cur.lease.restored => return Ok(true),
            Some(cur) if cur.lease.owner.run_id == run_id => held = cur,
            _ => return Ok(false),
        }
    }
    Err(ExportError::S3 {
        bucket: ctx.bucket.into(),
        key: held.key,
        op: "PutObject",
        message: format!("the lease kept changing under {RACES} attempts to mark it restored"),
    })
}

/// Restores a stale lease: first claims it (an `If-Match` write naming `holder` as
/// owner), so of several restorers only the one that won acts on the capacity, and
/// none undoes the raise of a lease taken after the stale one. `Ok(None)`: another run
/// got there first.
async fn take_over_and_restore(ctx: &LeaseCtx<'_>, holder: &Holder, stale: HeldLease, why: String) -> Result<Option<RestoreReport>, ExportError> {
    let mut claimed = stale.lease.clone();
    claimed.owner = holder.owner.clone();
    claimed.heartbeat_at = now_rfc3339();
    claimed.stale_after_secs = holder.stale_after.as_secs().max(1);
    claimed.held_until = None;
    let Some(etag) = write_lease(ctx.s3, ctx.bucket, &stale.key, &claimed, Cond::Replace(&stale.etag)).await? else {
        return Ok(None);
    };
    tracing::warn!(table = %claimed.table, key = %stale.key, previous = %stale.lease.owner, "{why}; restoring it");
    restore_capacity(ctx, &claimed).await?;
    let by = format!("{} ({why})", holder.owner);
    mark_restored(ctx, HeldLease { key: stale.key.clone(), etag, lease: claimed.clone() }, &by).await?;
    Ok(Some(report(&stale.key, &stale.lease, RestoreAction::Restored, why)))
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

/// Renews a held lease's heartbeat in the background until stopped.
#[derive(Debug)]
pub struct Heartbeat {
    state: Arc<Mutex<Beat>>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    // Dropped on an early return (an error before the lease is released): stop renewing,
    // so the lease can turn stale and be restored by the next run.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Debug)]
struct Beat {
    held: HeldLease,
    /// Why the lease is no longer this run's, once it is not.
    lost: Option<String>,
}

impl Heartbeat {
    /// Starts renewing `held` every sixth of its stale period. Shards of one run may
    /// renew the same lease: a renewal that loses to another of the same run re-reads
    /// and goes on; one that finds the lease restored or another run's stops.
    pub fn start(s3: aws_sdk_s3::Client, bucket: String, held: HeldLease) -> Heartbeat {
        let state = Arc::new(Mutex::new(Beat { held, lost: None }));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(beat(s3, bucket, state.clone(), cancel.clone()));
        Heartbeat { state, cancel, task: Some(task) }
    }

    /// Why the lease stopped being this run's, if it did.
    pub fn lost(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).lost.clone()
    }

    /// Stops renewing: the lease as last written, or why it was lost.
    pub async fn stop(mut self) -> Result<HeldLease, String> {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &b.lost {
            Some(why) => Err(why.clone()),
            None => Ok(b.held.clone()),
        }
    }
}

async fn beat(s3: aws_sdk_s3::Client, bucket: String, state: Arc<Mutex<Beat>>, cancel: CancellationToken) {
    let snapshot = || state.lock().unwrap_or_else(|p| p.into_inner()).held.clone();
    let every = heartbeat_every(snapshot().lease.stale_after_secs);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut held = snapshot();
        held.lease.heartbeat_at = now_rfc3339();
        match write_lease(&s3, &bucket, &held.key, &held.lease, Cond::Replace(&held.etag)).await {
            Ok(Some(etag)) => {
                held.etag = etag;
                state.lock().unwrap_or_else(|p| p.into_inner()).held = held;
                metrics::counter!("crossdock_export_lease_heartbeats_total", "outcome" => "renewed").increment(1);
            }
            Ok(None) => match read_key(&s3, &bucket, &held.key).await {
                // Another process of the same run renewed it: carry on from its version.
                Ok(Some(cur)) if cur.lease.owner.run_id == held.lease.owner.run_id && !cur.lease.restored => {
                    state.lock().unwrap_or_else(|p| p.into_inner()).held = cur;
                }
                other => {
                    let why = match other {
                        Ok(Some(cur)) if cur.lease.restored => {
                            format!("restored by {}", cur.lease.restored_by.as_deref().unwrap_or("another run"))
                        }
                        Ok(Some(cur)) => format!("taken over by {}", cur.lease.owner),
                        Ok(None) => "deleted".to_string(),
                        Err(e) => format!("changed, then unreadable: {e}"),
                    };
                    tracing::error!(key = %held.key, "capacity lease {why}: no longer renewing it, and this run will not restore it");
                    metrics::counter!("crossdock_export_lease_heartbeats_total", "outcome" => "lost").increment(1);
                    state.lock().unwrap_or_else(|p| p.into_inner()).lost = Some(why);
                    return;
                }
            },
            // Transient: the next beat retries; the lease turns stale only after several misses.
            Err(e) => {
                tracing::warn!(key = %held.key, error = %e, "capacity lease heartbeat failed; retrying");
                metrics::counter!("crossdock_export_lease_heartbeats_total", "outcome" => "error").increment(1);
            }
        }
    }
}

/// Ends a lease this run took: stops the heartbeat, restores the capacity and marks the
/// lease restored. A lease lost meanwhile (judged stale and restored by another run) is
/// not touched: that run restored it.
pub async fn release(ctx: &LeaseCtx<'_>, hb: Heartbeat, holder: &Holder) -> Result<RestoreReport, ExportError> {
    let (key, lease) = {
        let b = hb.state.lock().unwrap_or_else(|p| p.into_inner());
        (b.held.key.clone(), b.held.lease.clone())
    };
    if let Some(why) = hb.lost() {
        let _ = hb.stop().await;
        return Ok(report(&key, &lease, RestoreAction::Lost, why));
    }
    // Keep renewing while the capacity goes back (UpdateTable waits for ACTIVE), so no
    // other run takes the lease for stale meanwhile.
    restore_capacity(ctx, &lease).await?;
    match hb.stop().await {
        Ok(held) => {
            mark_restored(ctx, held, &format!("its owner, {}", holder.owner)).await?;
            Ok(report(&key, &lease, RestoreAction::Restored, format!("own lease of {}", holder.owner)))
        }
        Err(why) => Ok(report(&key, &lease, RestoreAction::Lost, why)),
    }
}

/// What [`restore_table`] did with a table's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreAction {
    /// The capacity is back (and the lease says `restored`).
    Restored,
    /// Another run's lease, alive: left alone.
    LeftLive,
    /// Restored before; nothing to do.
    AlreadyRestored,
    /// The table has no lease; nothing to do.
    NoLease,
    /// This run's lease was taken over (judged stale) and restored by another run.
    Lost,
}

/// What [`restore_table`] did, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub key: String,
    pub table: String,
    pub action: RestoreAction,
    /// Whose lease, how fresh its heartbeat: the reason for `action`.
    pub why: String,
    pub owner: Option<LeaseOwner>,
    /// The read capacity the lease recorded before the raise.
    pub restored_to: Option<i64>,
    /// Autoscaled: the bounds were put back and the capacity is left to autoscaling.
    pub autoscaled: bool,
}

fn report(key: &str, lease: &CapacityLease, action: RestoreAction, why: String) -> RestoreReport {
    RestoreReport {
        key: key.into(),
        table: lease.table.clone(),
        action,
        why,
        owner: Some(lease.owner.clone()),
        restored_to: Some(lease.original.read),
        autoscaled: lease.autoscaling.is_some(),
    }
}

/// Restores the table's lease if `holder` may: a stale lease always, its own lease when
/// `own` (`crossdock export capacity restore`). A live lease of another run is left
/// alone. Used by `crossdock export restore` (with a fresh run id: stale leases only)
/// and at the start of every export.
pub async fn restore_table(ctx: &LeaseCtx<'_>, holder: &Holder, prefix: &str, table: &str, own: bool) -> Result<RestoreReport, ExportError> {
    let key = capacity_lease_key(prefix, table)?;
    for _ in 0..RACES {
        let Some(cur) = read_key(ctx.s3, ctx.bucket, &key).await? else {
            return Ok(RestoreReport {
                key,
                table: table.into(),
                action: RestoreAction::NoLease,
                why: "the table has no capacity lease".into(),
                owner: None,
                restored_to: None,
                autoscaled: false,
            });
        };
        let s = standing(&cur.lease, holder.run_id(), time::OffsetDateTime::now_utc()).map_err(|w| corrupt_time(ctx, &key, w))?;
        let why = describe_lease(&cur.lease, s);
        match s {
            Standing::Restored => return Ok(report(&key, &cur.lease, RestoreAction::AlreadyRestored, why)),
            Standing::Own if own => {
                restore_capacity(ctx, &cur.lease).await?;
                let lease = cur.lease.clone();
                if mark_restored(ctx, cur, &format!("its owner's restore step, {}", holder.owner)).await? {
                    return Ok(report(&key, &lease, RestoreAction::Restored, "own lease".into()));
                }
            }
            Standing::Own | Standing::Live { .. } => return Ok(report(&key, &cur.lease, RestoreAction::LeftLive, why)),
            Standing::Stale { .. } => {
                if let Some(r) = take_over_and_restore(ctx, holder, cur, why).await? {
                    return Ok(r);
                }
            }
        }
        // Lost a race to another writer: judge the lease again.
    }
    Err(ExportError::S3 { bucket: ctx.bucket.into(), key, op: "PutObject", message: format!("the lease kept changing under {RACES} attempts to restore it") })
}

/// What `crossdock export capacity raise` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RaiseReport {
    pub table: String,
    pub run_id: String,
    pub key: String,
    /// `raised`; `already_held` (a retried step of the same run); `already_restored`
    /// (this run raised and restored before: not again); `not_needed` (on demand, or
    /// already at or above the target).
    pub action: &'static str,
    pub original: Option<Throughput>,
    pub raised_to: Option<Throughput>,
    pub held_until: Option<String>,
    /// A stale lease of a crashed run, restored before the raise.
    pub restored_stale: Vec<RestoreReport>,
}

/// `crossdock export capacity raise`: takes the table's lease for `holder`'s run and
/// raises, then returns with the lease still held, live until `hold` has passed or for
/// as long as the shards of the run (`--capacity-run`) renew its heartbeat. Running it
/// again for the same run is harmless.
pub async fn capacity_raise(
    ctx: &LeaseCtx<'_>,
    holder: &Holder,
    prefix: &str,
    table: &str,
    target: impl FnOnce(Option<Throughput>) -> Option<i64>,
    force: bool,
    hold: Duration,
) -> Result<RaiseReport, ExportError> {
    let key = capacity_lease_key(prefix, table)?;
    let mut out = RaiseReport {
        table: table.into(),
        run_id: holder.run_id().into(),
        key: key.clone(),
        action: "raised",
        original: None,
        raised_to: None,
        held_until: None,
        restored_stale: Vec::new(),
    };
    if let Some(cur) = read_key(ctx.s3, ctx.bucket, &key).await? {
        if cur.lease.owner.run_id == holder.run_id() {
            out.original = Some(cur.lease.original);
            out.raised_to = Some(cur.lease.raised_to);
            out.held_until = cur.lease.held_until.clone();
            if cur.lease.restored {
                out.action = "already_restored";
            } else {
                out.action = "already_held";
                raise(ctx, &cur).await?;
            }
            return Ok(out);
        }
    }
    let r = restore_table(ctx, holder, prefix, table, false).await?;
    match r.action {
        RestoreAction::Restored => out.restored_stale.push(r),
        RestoreAction::LeftLive => {
            return Err(ExportError::LeaseHeld {
                table: table.into(),
                bucket: ctx.bucket.into(),
                key,
                owner: r.owner.map(|o| o.to_string()).unwrap_or_default(),
                why: r.why,
            })
        }
        _ => {}
    }
    let info = describe(ctx.ddb, table).await?;
    if !info.is_active() {
        return Err(ExportError::TableNotActive { table: table.into(), status: info.status });
    }
    out.original = info.throughput;
    let Some(raised_to) = plan_raise(&info, target(info.throughput), force)? else {
        out.action = "not_needed";
        return Ok(out);
    };
    let until = time::OffsetDateTime::now_utc() + hold;
    let (held, stale) = take(ctx, holder, prefix, &info, raised_to, Some(until)).await?;
    out.restored_stale.extend(stale);
    out.original = Some(held.lease.original);
    out.raised_to = Some(raised_to);
    out.held_until = held.lease.held_until.clone();
    if let Err(e) = raise(ctx, &held).await {
        // Never leave a half-done raise behind a lease nobody will restore soon.
        return Err(match restore_table(ctx, holder, prefix, table, true).await {
            Ok(_) => e,
            Err(cause) => ExportError::CapacityNotRestored {
                table: table.into(),
                bucket: ctx.bucket.into(),
                key,
                cause: cause.to_string(),
                export_error: Some(Box::new(e)),
            },
        });
    }
    Ok(out)
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

    fn lease(run_id: &str, heartbeat_at: &str, held_until: Option<&str>) -> CapacityLease {
        CapacityLease {
            table: "Orders".into(),
            original: Throughput { read: 5, write: 5 },
            raised_to: Throughput { read: 40, write: 5 },
            autoscaling: None,
            taken_at: "2026-11-23T11:00:00Z".into(),
            restored: false,
            owner: LeaseOwner { run_id: run_id.into(), host: "h".into(), pid: 7 },
            heartbeat_at: heartbeat_at.into(),
            stale_after_secs: 180,
            held_until: held_until.map(str::to_string),
            restored_by: None,
        }
    }

    #[test]
    fn another_runs_lease_is_live_until_its_heartbeat_is_older_than_its_stale_period() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let fresh = lease("a", "2026-11-23T11:58:00Z", None);
        assert_eq!(standing(&fresh, "b", now), Ok(Standing::Live { heartbeat_age_secs: 120 }));
        let old = lease("a", "2026-11-23T11:57:00Z", None);
        assert_eq!(standing(&old, "b", now), Ok(Standing::Stale { heartbeat_age_secs: 180 }));
        // The lease's own period decides, not the reader's.
        let mut short = fresh.clone();
        short.stale_after_secs = 60;
        assert_eq!(standing(&short, "b", now), Ok(Standing::Stale { heartbeat_age_secs: 120 }));
    }

    #[test]
    fn own_and_restored_leases_are_judged_before_the_heartbeat() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let old = lease("a", "2026-11-23T09:00:00Z", None);
        assert_eq!(standing(&old, "a", now), Ok(Standing::Own), "stale or not, the owner may restore its own");
        let fresh = lease("a", "2026-11-23T11:59:59Z", None);
        assert_eq!(standing(&fresh, "a", now), Ok(Standing::Own));
        let mut done = fresh;
        done.restored = true;
        assert_eq!(standing(&done, "a", now), Ok(Standing::Restored));
        assert_eq!(standing(&done, "b", now), Ok(Standing::Restored));
    }

    #[test]
    fn held_until_keeps_a_silent_capacity_step_lease_live() {
        let now = datetime!(2026-11-23 12:00 UTC);
        let held = lease("step", "2026-11-23T10:00:00Z", Some("2026-11-23T12:30:00Z"));
        assert!(matches!(standing(&held, "other", now), Ok(Standing::Live { .. })));
        let expired = lease("step", "2026-11-23T10:00:00Z", Some("2026-11-23T11:00:00Z"));
        assert!(matches!(standing(&expired, "other", now), Ok(Standing::Stale { .. })));
        // A shard renewing after held_until keeps it live.
        let renewed = lease("step", "2026-11-23T11:59:30Z", Some("2026-11-23T11:00:00Z"));
        assert!(matches!(standing(&renewed, "other", now), Ok(Standing::Live { .. })));
        assert!(standing(&lease("a", "yesterday", None), "b", now).is_err());
    }

    #[test]
    fn heartbeats_come_six_times_per_stale_period() {
        assert_eq!(heartbeat_every(180), Duration::from_secs(30));
        assert_eq!(heartbeat_every(3), Duration::from_millis(500));
        assert_eq!(heartbeat_every(0), Duration::from_millis(100));
    }

    #[test]
    fn an_autoscaled_table_gets_its_bounds_back_and_no_forced_capacity() {
        let plain = lease("a", "2026-11-23T11:58:00Z", None);
        assert_eq!(restore_actions(&plain), (None, Some(5)));
        let mut scaled = plain;
        scaled.autoscaling = Some(AutoscalingBounds { min_capacity: 5, max_capacity: 20 });
        assert_eq!(restore_actions(&scaled), (Some(AutoscalingBounds { min_capacity: 5, max_capacity: 20 }), None));
    }

    #[tokio::test]
    async fn restoring_an_autoscaled_lease_sets_the_bounds_and_calls_no_dynamodb() {
        // Clients pointing nowhere: any DynamoDB call would fail the restore.
        let ddb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .build(),
        );
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .build(),
        );
        let original = AutoscalingBounds { min_capacity: 5, max_capacity: 20 };
        let fake = FakeAutoscaling::with_target("Orders", AutoscalingBounds { min_capacity: 40, max_capacity: 40 });
        let ctx = LeaseCtx { ddb: &ddb, s3: &s3, autoscaler: &fake, bucket: "b", active_timeout: Duration::from_secs(1) };
        let mut l = lease("a", "2026-11-23T11:58:00Z", None);
        l.autoscaling = Some(original);
        restore_capacity(&ctx, &l).await.expect("restored without DynamoDB");
        assert_eq!(fake.history(), vec![("Orders".to_string(), original)]);
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
