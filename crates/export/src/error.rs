//! The exporter's typed errors: what happened, to which table/bucket/key.

use crossdock_core::layout::LayoutError;

/// Everything an export (or a restore) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Bad flags or configuration; nothing was touched.
    #[error("invalid {what}: {why}")]
    InvalidInput { what: &'static str, why: String },
    #[error("table {table:?} does not exist")]
    TableNotFound { table: String },
    #[error("bucket {bucket:?} does not exist or is not accessible")]
    BucketNotFound { bucket: String },
    /// The table is CREATING, UPDATING, … : its capacity cannot be changed now.
    #[error("table {table:?} is {status}, not ACTIVE; wait for it to become ACTIVE and retry (nothing was raised)")]
    TableNotActive { table: String, status: String },
    /// No capacity decrease would be left to restore with.
    #[error("table {table:?} has had {decreases_today} capacity decreases today; none would be left to restore the read capacity after the export. Rerun tomorrow, without a raise, or with --force (nothing was raised)")]
    NoDecreaseLeft { table: String, decreases_today: i64 },
    /// A DynamoDB call failed. `retryable` says whether rerunning may help.
    #[error("DynamoDB {op} on table {table:?} failed: {message}")]
    DynamoDb { table: String, op: &'static str, message: String, retryable: bool },
    /// An S3 call failed.
    #[error("S3 {op} of s3://{bucket}/{key} failed: {message}")]
    S3 { bucket: String, key: String, op: &'static str, message: String },
    /// The part's compressor failed (it writes to memory: only its own resources can).
    #[error("compressing data part s3://{bucket}/{key} failed")]
    Encode {
        bucket: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// Application Auto Scaling call failed.
    #[error("Application Auto Scaling {op} for table {table:?} failed: {message}")]
    Autoscaling { table: String, op: &'static str, message: String },
    /// A state file (lease, checkpoint) could not be decoded.
    #[error("s3://{bucket}/{key} is not a valid {what}: {why}")]
    Corrupt { bucket: String, key: String, what: &'static str, why: String },
    /// The table did not become ACTIVE in time.
    #[error("table {table:?} did not become ACTIVE within {secs} s (last status {status})")]
    Timeout { table: String, secs: u64, status: String },
    /// An item could not be converted (an attribute type this build does not know).
    #[error("table {table:?}: item has an attribute {attribute:?} of a type unknown to this build")]
    UnknownAttributeType { table: String, attribute: String },
    /// The capacity raised for the export could not be restored. The lease stays in S3.
    /// `export_error` is what ended the export before the restore failed (a scan or
    /// write error), its source: the operator needs both, the data error to rerun and
    /// the capacity one to act on now.
    #[error(
        "capacity of table {table:?} NOT restored ({cause}); lease at s3://{bucket}/{key}; run `crossdock export restore --table {table} --bucket {bucket}`{}",
        failed_before(.export_error)
    )]
    CapacityNotRestored {
        table: String,
        bucket: String,
        key: String,
        cause: String,
        #[source]
        export_error: Option<Box<ExportError>>,
    },
    /// Another run holds the table's capacity lease and is alive: this run must not
    /// raise (nor, sharded, restore) under it.
    #[error("table {table:?} is leased by another export: {why}; nothing was raised. Wait for that export to end; if it died, its lease turns stale and the next export or `crossdock export restore --table {table} --bucket {bucket}` restores it (lease s3://{bucket}/{key})")]
    LeaseHeld { table: String, bucket: String, key: String, owner: String, why: String },
    /// A data file of a DynamoDB native export does not have the checksum its manifest
    /// (or its single-part ETag) records: nothing of the adoption was written.
    #[error("s3://{bucket}/{key}: MD5 of its bytes is {actual}, but {recorded_in} records {expected}; the native export is damaged or was changed after it finished, so nothing was written (run the export again)")]
    ChecksumMismatch { bucket: String, key: String, expected: String, actual: String, recorded_in: &'static str },
    /// DynamoDB's native export ended without completing.
    #[error("native export {arn} of table {table:?} ended {status}: {code}: {message}")]
    NativeExportFailed { table: String, arn: String, status: String, code: String, message: String },
    /// The native export did not finish in time (it may still be running in AWS).
    #[error("native export {arn} of table {table:?} still {status} after {secs} s; once it completes, adopt it with `crossdock export adopt --table {table} --s3 {dest}/AWSDynamoDB/<export id>/`")]
    NativeExportPending {
        table: String,
        arn: String,
        status: String,
        secs: u64,
        /// `s3://bucket/prefix` the export writes under.
        dest: String,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl ExportError {
    /// Whether the error happened before anything was touched because of bad input (or
    /// a raise another live export's lease forbids).
    pub fn is_usage(&self) -> bool {
        matches!(self, ExportError::InvalidInput { .. } | ExportError::Layout(_) | ExportError::LeaseHeld { .. })
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, ExportError::TableNotFound { .. } | ExportError::BucketNotFound { .. })
    }
    /// Whether rerunning with `--resume` can finish the export: a service fault that
    /// outlasted the client's retries. Durable parts and checkpoints are kept, so the
    /// rerun continues after the last checkpoint.
    pub fn is_resumable(&self) -> bool {
        matches!(self, ExportError::S3 { .. } | ExportError::DynamoDb { retryable: true, .. })
    }
}

/// The note that introduces the export's own error, printed after the capacity one.
fn failed_before(export_error: &Option<Box<ExportError>>) -> &'static str {
    if export_error.is_some() {
        "; the export had failed before"
    } else {
        ""
    }
}

pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> ExportError {
    ExportError::InvalidInput { what, why: why.into() }
}

/// The error code and a readable message of an AWS SDK error.
pub(crate) fn sdk_message<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> (Option<String>, String)
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = match e {
        aws_sdk_dynamodb::error::SdkError::ServiceError(s) => s.err().code().map(str::to_string),
        _ => None,
    };
    (code, aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

/// Codes that mean "slow down", never fatal for a scan.
pub(crate) fn is_throttle(code: Option<&str>) -> bool {
    matches!(code, Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded" | "Throttling"))
}

pub(crate) fn ddb_error<E, R>(table: &str, op: &'static str, e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> ExportError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message) = sdk_message(e);
    if code.as_deref() == Some("ResourceNotFoundException") {
        return ExportError::TableNotFound { table: table.into() };
    }
    let retryable = !matches!(e, aws_sdk_dynamodb::error::SdkError::ServiceError(_))
        || is_throttle(code.as_deref())
        || matches!(code.as_deref(), Some("ResourceInUseException" | "InternalServerError" | "LimitExceededException"));
    ExportError::DynamoDb { table: table.into(), op, message, retryable }
}

pub(crate) fn s3_error<E, R>(bucket: &str, key: &str, op: &'static str, e: &aws_sdk_s3::error::SdkError<E, R>) -> ExportError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = match e {
        aws_sdk_s3::error::SdkError::ServiceError(s) => s.err().code().map(str::to_string),
        _ => None,
    };
    if code.as_deref() == Some("NoSuchBucket") {
        return ExportError::BucketNotFound { bucket: bucket.into() };
    }
    ExportError::S3 { bucket: bucket.into(), key: key.into(), op, message: aws_sdk_s3::error::DisplayErrorContext(e).to_string() }
}
