//! The relay's typed errors. Each variant says what happened and where; [`RelayError::kind`]
//! is the low-cardinality label used for the `crossdock_relay_errors_total` metric and
//! [`RelayError::is_retryable`] decides whether a message is released for another try.

/// What went wrong while relaying.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration was refused by `build()`.
    #[error("invalid relay configuration: {0}")]
    Config(String),
    /// The S3 object named in an event does not exist (any more).
    #[error("s3://{bucket}/{key} not found")]
    SourceNotFound { bucket: String, key: String },
    /// S3 refused or failed a call.
    #[error("s3://{bucket}/{key}: {message}")]
    S3 { bucket: String, key: String, message: String, retryable: bool },
    /// The source could not be decoded (truncated or corrupt compressed file).
    #[error("s3://{bucket}/{key} is corrupt: {message}")]
    CorruptSource { bucket: String, key: String, message: String },
    /// GCS refused or failed a call.
    #[error("gs://{bucket}/{key}: {message}")]
    Gcs { bucket: String, key: String, message: String, retryable: bool },
    /// A JSON file of the export (schema, manifest) in GCS could not be parsed.
    #[error("gs://{bucket}/{key} is not a valid {what}: {message}")]
    BadExportFile { bucket: String, key: String, what: &'static str, message: String },
    /// The SHA-256 recorded for a relayed part differs from its manifest.
    #[error("gs://{bucket}/{key}: SHA-256 {stored} differs from the manifest's {manifest}")]
    ChecksumMismatch { bucket: String, key: String, stored: String, manifest: String },
    /// The bytes GCS stored for an upload are not the bytes the relay sent: the CRC32C
    /// GCS reports differs from the one computed while uploading (or GCS reported none).
    /// The object was deleted again; copying it once more may succeed.
    #[error("gs://{bucket}/{key}: stored CRC32C {reported} differs from the {sent} of the bytes uploaded; object deleted")]
    StoredChecksumMismatch { bucket: String, key: String, sent: String, reported: String },
    /// The copy moved no byte (S3 read, GCS upload) for the stall timeout and was
    /// abandoned; nothing of it counts as relayed, and another try may well succeed.
    #[error("copy of s3://{bucket}/{key} to {dst} stalled: no bytes moved for {idle_secs} s; abandoned")]
    Stalled { bucket: String, key: String, dst: String, idle_secs: u64 },
    /// An SQS call failed.
    #[error("SQS {queue}: {message}")]
    Sqs { queue: String, message: String },
    /// The queue does not exist (or not in this account and region).
    #[error("SQS queue {queue} does not exist: check --queue, the region (AWS_REGION) and the account")]
    QueueNotFound { queue: String },
    /// The compression thread failed.
    #[error("encoding s3://{bucket}/{key} failed: {message}")]
    Encode { bucket: String, key: String, message: String },
}

impl RelayError {
    /// Low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RelayError::Config(_) => "config",
            RelayError::SourceNotFound { .. } => "source_not_found",
            RelayError::S3 { .. } => "s3",
            RelayError::CorruptSource { .. } => "corrupt_source",
            RelayError::Gcs { .. } => "gcs",
            RelayError::BadExportFile { .. } => "bad_export_file",
            RelayError::ChecksumMismatch { .. } => "checksum_mismatch",
            RelayError::StoredChecksumMismatch { .. } => "stored_checksum_mismatch",
            RelayError::Stalled { .. } => "stalled",
            RelayError::Sqs { .. } => "sqs",
            RelayError::QueueNotFound { .. } => "queue_not_found",
            RelayError::Encode { .. } => "encode",
        }
    }

    /// Whether trying again later may succeed (network, throttling, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            RelayError::S3 { retryable, .. } | RelayError::Gcs { retryable, .. } => *retryable,
            RelayError::Sqs { .. } | RelayError::StoredChecksumMismatch { .. } | RelayError::Stalled { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn gcs(bucket: &str, key: &str, e: &gcloud_storage::http::Error) -> RelayError {
        let retryable = crossdock_gcp::gcs_failure(e) == crossdock_gcp::GcsFailure::Retryable;
        RelayError::Gcs { bucket: bucket.into(), key: key.into(), message: e.to_string(), retryable }
    }
}

pub(crate) use crossdock_gcp::gcs_status;
