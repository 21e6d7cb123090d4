//! The loader's typed errors. Every variant says what happened and where (bucket/key,
//! table, file), and whether retrying can help.

/// What went wrong while loading.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The marker, a data file, a bucket or a table does not exist.
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The marker URL or its contents are not usable.
    #[error("marker {url}: {reason}")]
    InvalidMarker { url: String, reason: String },
    /// A data file does not match the marker (size, checksum, codec, truncated stream).
    #[error("data file gs://{bucket}/{key} is corrupt: {reason}; nothing from it was written")]
    CorruptFile { bucket: String, key: String, reason: String },
    /// The destination table exists with a shape the export cannot be loaded into.
    #[error("table {table} in {target} exists and is not compatible with the export:\n{diff}")]
    Incompatible { target: String, table: String, diff: String },
    /// The export cannot be mapped to the target's schema rules.
    #[error("schema of {table}: {reason}")]
    Schema { table: String, reason: String },
    /// More rows could not be converted than `--max-errors` allows.
    #[error("{rejected} row(s) rejected, more than --max-errors {max}; rejects recorded in gs://{bucket}/{key}")]
    TooManyRejects { rejected: u64, max: u64, bucket: String, key: String },
    /// A call to the target failed. `retryable` is true for aborts, throttling and
    /// transient transport failures.
    #[error("{target} {op} on {table}: {message}")]
    Target { target: &'static str, op: &'static str, table: String, message: String, retryable: bool },
    /// A GCS call failed.
    #[error("GCS {op} gs://{bucket}/{key}: {message}")]
    Gcs { op: &'static str, bucket: String, key: String, message: String, retryable: bool },
    /// A Pub/Sub call (`--watch`) failed.
    #[error("Pub/Sub {op} {subscription}: {message}")]
    PubSub { op: &'static str, subscription: String, message: String, retryable: bool },
    /// The target holds a different number of rows than the marker promises.
    #[error("{target} table {table} has {actual} rows, expected {expected} (marker items {items} minus {rejected} rejected)")]
    CountMismatch { target: &'static str, table: String, expected: u64, actual: u64, items: u64, rejected: u64 },
    /// Signing in to Google Cloud for `service` failed; the source names the credential
    /// and the step (subject token, STS exchange, impersonation).
    #[error("{service}: {source}")]
    Auth {
        service: &'static str,
        #[source]
        source: Box<crossdock_gcp::AuthError>,
    },
    /// The pipeline does not give a target for the table's route.
    #[error("configuration: {0}")]
    Config(String),
    /// Shutdown was requested before the load finished; finished files are recorded.
    #[error("interrupted: {files_done} of {files_total} file(s) finished; rerun to continue")]
    Interrupted { files_done: usize, files_total: usize },
}

impl LoadError {
    /// Maps a sign-in error for `service` (`map_err(LoadError::auth("GCS"))`).
    pub fn auth(service: &'static str) -> impl FnOnce(crossdock_gcp::AuthError) -> LoadError {
        move |e| LoadError::Auth { service, source: Box::new(e) }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LoadError::Target { retryable: true, .. } | LoadError::Gcs { retryable: true, .. } | LoadError::PubSub { retryable: true, .. })
    }
}

pub type Result<T, E = LoadError> = std::result::Result<T, E>;
