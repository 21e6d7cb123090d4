//! Failed calls of the AWS stream APIs (DynamoDB Streams, Kinesis) as [`SyncError`]s,
//! one rule for both: an unreadable position or a gone shard is `Expired` (re-export),
//! an expired iterator is asked for again, and transport failures and the given
//! throttling codes are retryable. Both SDKs re-export the same `SdkError`.

use crate::error::SyncError;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// "CODE: message", or the error's debug form when the service sent no code.
pub(crate) fn message<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(e: &SdkError<E, R>) -> String {
    match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
        None => format!("{e:?}"),
    }
}

/// Whether the call failed before the service answered (retry it).
pub(crate) fn transient<E, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_))
}

/// How one stream API names its errors.
pub(crate) struct Codes {
    /// The code for records beyond the retention, with the reason to report.
    pub trimmed: Option<(&'static str, &'static str)>,
    /// Codes worth retrying (throttling, internal errors).
    pub retryable: &'static [&'static str],
}

/// The [`SyncError`] for `op` on `shard` of `stream` (table `table`) failing with `e`.
pub(crate) fn stream_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    codes: &Codes,
    table: &str,
    stream: &str,
    op: &'static str,
    shard: &str,
    e: &SdkError<E, R>,
) -> SyncError {
    let code = e.code().unwrap_or_default();
    let expired = |reason: String| SyncError::Expired { table: table.into(), stream: stream.into(), shard: shard.into(), reason };
    match code {
        c if codes.trimmed.is_some_and(|(t, _)| t == c) => expired(format!("{op}: {} ({})", codes.trimmed.map_or("", |(_, r)| r), message(e))),
        "ResourceNotFoundException" => expired(format!("{op}: the shard or stream no longer exists ({})", message(e))),
        "ExpiredIteratorException" => SyncError::IteratorExpired { table: table.into(), shard: shard.into() },
        _ => SyncError::Source {
            table: table.into(),
            stream: stream.into(),
            shard: Some(shard.into()),
            op,
            retryable: transient(e) || codes.retryable.contains(&code),
            message: message(e),
        },
    }
}
