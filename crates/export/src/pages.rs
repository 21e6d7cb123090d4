//! One segment of a parallel Scan as a sequence of pages under a shared RCU limiter:
//! each page's `Limit` follows the budget, its cost is reserved before the call and
//! settled with what DynamoDB reports, and throttling or transient failures back off
//! and are counted, never fatal. The export writes the pages to S3; `crossdock audit`
//! compares them with the target.

use crate::convert::{from_sdk_item, to_sdk_item};
use crate::error::{is_throttle, sdk_message, ExportError};
use crate::ratelimit::{PageSizer, RateLimiter};
use aws_sdk_dynamodb::types::{AttributeValue as Sdk, ReturnConsumedCapacity};
use crossdock_core::item::Item;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// Which segment to read, and what it shares with the other segments' readers.
pub struct Segment<'a> {
    pub ddb: &'a aws_sdk_dynamodb::Client,
    pub table: &'a str,
    pub segment: u32,
    pub total: u32,
    /// Readers sharing the limiter (the page size is a share of the budget).
    pub workers: u32,
    pub consistent: bool,
    pub limiter: &'a RateLimiter,
    pub cancel: &'a CancellationToken,
    /// Throttled or transiently failed calls, for the caller's summary.
    pub throttled: &'a AtomicU64,
    /// The counter those calls are also added to (the export's or the audit's).
    pub throttle_metric: &'static str,
}

/// A scanned item as the SDK returns it.
pub type ScannedItem = HashMap<String, Sdk>;

/// One Scan page: its items converted to core items, or as scanned (`Page<ScannedItem>`,
/// which the exporter writes in place).
#[derive(Debug)]
pub struct Page<I = Item> {
    pub items: Vec<I>,
    pub consumed_rcu: f64,
    /// Where the next page starts; `None` on the segment's last page.
    pub last_evaluated_key: Option<Item>,
}

/// A scanned item of `table` as a core item.
fn core_item(table: &str, item: ScannedItem) -> Result<Item, ExportError> {
    from_sdk_item(item).map_err(|u| ExportError::UnknownAttributeType { table: table.into(), attribute: u.attribute })
}

/// The pages of one segment, from its start or from a checkpoint's key.
pub struct Pages<'a> {
    seg: Segment<'a>,
    sizer: PageSizer,
    start: Option<HashMap<String, Sdk>>,
    finished: bool,
}

impl<'a> Pages<'a> {
    pub fn new(seg: Segment<'a>, start_after: Option<&Item>) -> Self {
        let sizer = PageSizer::for_budget(seg.limiter.rate(), seg.workers);
        Pages { start: start_after.map(to_sdk_item), sizer, seg, finished: false }
    }

    /// The next page of core items; `Ok(None)` after the last one, or once the cancel
    /// token fires (nothing is read after that; the caller tells the two apart by the
    /// token).
    pub async fn next(&mut self) -> Result<Option<Page>, ExportError> {
        let Some(page) = self.next_scanned().await? else { return Ok(None) };
        let table = self.seg.table;
        let items = page.items.into_iter().map(|i| core_item(table, i)).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Page { items, consumed_rcu: page.consumed_rcu, last_evaluated_key: page.last_evaluated_key }))
    }

    /// The next page with its items as scanned, like [`Pages::next`].
    pub async fn next_scanned(&mut self) -> Result<Option<Page<ScannedItem>>, ExportError> {
        let s = &self.seg;
        let mut attempt = 0u32;
        while !self.finished && !s.cancel.is_cancelled() {
            let (limit, estimate) = self.sizer.next();
            tokio::select! {
                _ = s.cancel.cancelled() => return Ok(None),
                _ = s.limiter.acquire(estimate) => {}
            }
            let request = s
                .ddb
                .scan()
                .table_name(s.table)
                .segment(s.segment as i32)
                .total_segments(s.total as i32)
                .consistent_read(s.consistent)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_limit(limit)
                .set_exclusive_start_key(self.start.clone());
            let result = tokio::select! {
                _ = s.cancel.cancelled() => {
                    s.limiter.release(estimate);
                    return Ok(None);
                }
                r = request.send() => r,
            };
            let out = match result {
                Ok(out) => out,
                Err(e) => {
                    s.limiter.settle(estimate, 0.0);
                    attempt += 1;
                    self.back_off_or_fail(&e, attempt).await?;
                    continue;
                }
            };
            let consumed = out.consumed_capacity().and_then(|c| c.capacity_units()).unwrap_or(estimate);
            s.limiter.settle(estimate, consumed);
            self.sizer.observe(out.items().len(), consumed);
            let last_evaluated_key = out.last_evaluated_key.clone().map(|k| core_item(s.table, k)).transpose()?;
            self.start = out.last_evaluated_key;
            self.finished = self.start.is_none();
            return Ok(Some(Page { items: out.items.unwrap_or_default(), consumed_rcu: consumed, last_evaluated_key }));
        }
        Ok(None)
    }

    /// Waits before the next try of a throttled or transiently failed call, or returns
    /// the error when it is neither (or transient failures keep coming).
    async fn back_off_or_fail<E, R>(&self, e: &aws_sdk_dynamodb::error::SdkError<E, R>, attempt: u32) -> Result<(), ExportError>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let s = &self.seg;
        let (code, message) = sdk_message(e);
        let transient =
            !matches!(e, aws_sdk_dynamodb::error::SdkError::ServiceError(_)) || matches!(code.as_deref(), Some("InternalServerError" | "ServiceUnavailable"));
        // Throttling is waited out without limit: the scan's rate limiter adapts to it.
        let throttled = is_throttle(code.as_deref());
        let policy = crossdock_core::retry::Policy::READ_PAGE;
        let outcome = crossdock_core::retry::failed("dynamodb", "scan", throttled || transient, throttled || policy.allows(attempt), &message);
        if outcome != crossdock_core::retry::Outcome::Retried {
            let err = crate::error::ddb_error(s.table, "Scan", e);
            return Err(match err {
                ExportError::DynamoDb { .. } | ExportError::TableNotFound { .. } => err,
                other => ExportError::DynamoDb { table: s.table.into(), op: "Scan", message: format!("{other}: {message}"), retryable: false },
            });
        }
        s.throttled.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(s.throttle_metric).increment(1);
        let wait = policy.delay(attempt);
        tracing::warn!(
            table = s.table,
            segment = s.segment,
            code = code.as_deref().unwrap_or("transport"),
            wait_ms = wait.as_millis() as u64,
            "scan throttled or failed transiently; backing off"
        );
        tokio::select! {
            _ = s.cancel.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        Ok(())
    }
}
