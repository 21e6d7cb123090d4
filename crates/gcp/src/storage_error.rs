//! What a failed GCS call means, for every GCS caller (the relay's copies and records,
//! the loader's reads): gone, worth retrying, or not.

use gcloud_storage::http::Error;

/// How a failed GCS call is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcsFailure {
    /// 404: the object (or bucket) is not there.
    NotFound,
    /// 408, 429, 5xx, or no answer at all (connect or read failure, timeout).
    Retryable,
    /// Any other answer (403, 400, a failed precondition, …) and failed sign-in: trying
    /// again gives the same result.
    Permanent,
}

/// The HTTP status of a GCS error response, if the service answered.
pub fn gcs_status(e: &Error) -> Option<u16> {
    match e {
        Error::Response(r) => Some(r.code),
        Error::RawResponse(r, _) | Error::HttpClient(r) => r.status().map(|s| s.as_u16()),
        _ => None,
    }
}

/// Whether a download failed while its body was being read — the answer was cut off
/// after its headers, below what the HTTP layer's retries see.
pub fn body_cut_off(e: &Error) -> bool {
    matches!(e, Error::HttpClient(r) if r.is_body() || r.is_decode())
}

/// The one rule for every GCS error.
pub fn gcs_failure(e: &Error) -> GcsFailure {
    match (e, gcs_status(e)) {
        (Error::TokenSource(_) | Error::InvalidRangeHeader(_), _) => GcsFailure::Permanent,
        (_, Some(404)) => GcsFailure::NotFound,
        (_, Some(s)) if crate::storage_http::transient_status(s) => GcsFailure::Retryable,
        (_, Some(_)) => GcsFailure::Permanent,
        // Transport failures and middleware errors: nothing was answered.
        (_, None) => GcsFailure::Retryable,
    }
}
