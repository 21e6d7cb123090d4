//! crossdock-relay: the SQS-driven, spot-safe S3 → compress → GCS copier.
//!
//! S3 event notifications arrive on an SQS queue; each dump file they name is
//! streamed from S3, re-encoded with the chosen codec and uploaded to GCS under the
//! same relative name ([`crossdock_core::layout`]); after each durable copy the
//! table export is checked with [`crossdock_core::marker::check_complete`] and its
//! `_SUCCESS` marker written exactly once. See `README.md` for the modules.
//!
//! Entry point: [`RelaySettings::build`] → [`Relay`] → [`run`]`(relay, shutdown)`.
// Libraries report through their return values and tracing, never the terminal or exit.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr, clippy::exit))]

pub mod complete;
pub mod consumer;
pub mod copy;
pub mod encode;
pub mod error;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod gcs;
pub mod health;
pub mod queue;
pub mod s3_event;
pub mod source;
pub mod spot;
pub mod stall;

pub use consumer::{run, DrainReason, Summary};
pub use error::RelayError;
pub use health::{Health, HealthStatus};

use crossdock_core::Codec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The relay's settings (from flags or a file). Validated by [`RelaySettings::build`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// URL of the SQS queue that receives the source buckets' event notifications.
    pub queue_url: String,
    /// Source S3 bucket → destination GCS bucket. Events for other buckets are not
    /// copied and not deleted: they go back to the queue and, repeated, to its DLQ.
    pub buckets: BTreeMap<String, String>,
    /// Key prefix of the dumps in the source buckets: empty or ending with `/`. Events
    /// for keys outside it are not copied and not deleted (see `buckets`).
    #[serde(default)]
    pub prefix: String,
    /// Codec of relayed data parts.
    #[serde(default)]
    pub codec: Codec,
    /// Compression level (default: the codec's CLI default).
    #[serde(default)]
    pub level: Option<i32>,
    /// Messages processed at once.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// Compression parallelism per file (default: the machine's cores): zstd worker
    /// threads, or gzip/bzip2 blocks in flight on the shared pool (one worker per core).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Upload request size in bytes; rounded down to a multiple of 256 KiB.
    #[serde(default = "defaults::chunk_size")]
    pub chunk_size: usize,
    /// Upload budget of the whole process, bytes per second, shared by every file in
    /// flight (none by default): a pod's share of its node's network.
    #[serde(default)]
    pub rate_limit: Option<u64>,
    /// Visibility timeout requested on receive and renewed by the heartbeat
    /// (default: the queue's own).
    #[serde(default)]
    pub visibility_timeout_secs: Option<u32>,
    /// Long-poll wait (≤ 20 s).
    #[serde(default = "defaults::wait_time")]
    pub wait_time_secs: u32,
    /// Visibility given to a message whose processing failed, before it is retried.
    #[serde(default = "defaults::retry_delay")]
    pub retry_delay_secs: u32,
    /// A copy that moves no byte (S3 read, GCS upload) for this many seconds is
    /// abandoned and its message retried, rather than held by its heartbeat forever; 0
    /// never abandons one.
    #[serde(default = "defaults::copy_stall_timeout")]
    pub copy_stall_timeout_secs: u64,
    /// How long a drain waits for in-flight copies before abandoning them.
    #[serde(default = "defaults::drain_deadline")]
    pub drain_deadline_secs: u64,
    /// Stop after this many seconds with nothing received and nothing in flight.
    #[serde(default)]
    pub until_idle_secs: Option<u64>,
    /// Instance metadata endpoint polled for spot interruption notices; `None`
    /// disables the poller.
    #[serde(default)]
    pub imds_endpoint: Option<String>,
    /// Seconds between spot notice polls.
    #[serde(default = "defaults::spot_poll")]
    pub spot_poll_secs: u64,
    /// Name recorded as `written_by` in markers (default: host name and pid).
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// MiB per upload request unless configured: rclone's GCS default; fewer, larger requests
/// moved 1.5× the bytes of 8 MiB ones through fake-gcs-server.
pub const DEFAULT_CHUNK_MIB: usize = 16;

mod defaults {
    pub fn concurrency() -> usize {
        4
    }
    pub fn chunk_size() -> usize {
        super::DEFAULT_CHUNK_MIB << 20
    }
    pub fn wait_time() -> u32 {
        20
    }
    pub fn retry_delay() -> u32 {
        10
    }
    pub fn drain_deadline() -> u64 {
        100
    }
    pub fn copy_stall_timeout() -> u64 {
        120
    }
    pub fn spot_poll() -> u64 {
        5
    }
}

impl RelaySettings {
    /// Settings with every default, for `queue_url` and one bucket mapping.
    pub fn new(queue_url: impl Into<String>, buckets: BTreeMap<String, String>) -> Self {
        RelaySettings {
            queue_url: queue_url.into(),
            buckets,
            prefix: String::new(),
            codec: Codec::default(),
            level: None,
            concurrency: defaults::concurrency(),
            threads: None,
            chunk_size: defaults::chunk_size(),
            rate_limit: None,
            visibility_timeout_secs: None,
            wait_time_secs: defaults::wait_time(),
            retry_delay_secs: defaults::retry_delay(),
            copy_stall_timeout_secs: defaults::copy_stall_timeout(),
            drain_deadline_secs: defaults::drain_deadline(),
            until_idle_secs: None,
            imds_endpoint: None,
            spot_poll_secs: defaults::spot_poll(),
            instance_id: None,
        }
    }

    /// Validates the settings, reads the queue's visibility timeout if none was given,
    /// and returns the runtime object.
    pub async fn build(self, s3: aws_sdk_s3::Client, sqs: aws_sdk_sqs::Client, gcs: gcloud_storage::client::Client) -> Result<Relay, RelayError> {
        let queue = queue::Queue::sqs(sqs, self.queue_url.clone());
        self.build_on(source::Source::s3(s3), queue, gcs::Gcs::new(gcs)).await
    }

    /// [`RelaySettings::build`] on given sides (S3, SQS, GCS): the real services, or
    /// ones in memory in tests. The queue's URL is the settings'.
    pub async fn build_on(self, source: source::Source, queue: queue::Queue, gcs: gcs::Gcs) -> Result<Relay, RelayError> {
        let bad = |m: String| RelayError::Config(m);
        if self.queue_url.is_empty() {
            return Err(bad("the queue URL is empty".into()));
        }
        if self.buckets.is_empty() {
            return Err(bad("no source bucket configured (--dst-bucket-map SRC=DST)".into()));
        }
        crossdock_core::layout::validate_prefix(&self.prefix).map_err(|e| bad(e.to_string()))?;
        let level = self.codec.level(self.level).map_err(|e| bad(e.to_string()))?;
        if self.concurrency == 0 {
            return Err(bad("concurrency must be at least 1".into()));
        }
        if self.wait_time_secs > 20 {
            return Err(bad(format!("wait time {} s is above SQS's 20 s long-poll limit", self.wait_time_secs)));
        }
        let chunk_size = self.chunk_size / copy::CHUNK_QUANTUM * copy::CHUNK_QUANTUM;
        if chunk_size == 0 {
            return Err(bad(format!("chunk size {} is below 256 KiB", self.chunk_size)));
        }
        let threads = self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
        let visibility = match self.visibility_timeout_secs {
            Some(v) => v,
            None => queue.visibility_timeout().await?.unwrap_or(30),
        };
        if !(1..=43_200).contains(&visibility) {
            return Err(bad(format!("visibility timeout {visibility} s must be 1..=43200")));
        }
        let instance_id = self.instance_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").ok().or_else(|| std::fs::read_to_string("/etc/hostname").ok()).unwrap_or_else(|| "relay".into());
            format!("{}-{}", host.trim(), std::process::id())
        });
        let health = Health::new(Health::window_for(visibility));
        let copier = copy::Copier {
            source,
            gcs,
            encode: encode::EncodeParams { codec: self.codec, level, threads },
            chunk_size,
            rate_limit: self.rate_limit.and_then(|r| crossdock_core::pace::Pacer::new(r as f64)).map(Arc::new),
            locks: Arc::default(),
            progress: health.clone(),
            stall_timeout: (self.copy_stall_timeout_secs > 0).then(|| Duration::from_secs(self.copy_stall_timeout_secs)),
        };
        Ok(Relay { settings: self, queue, copier, visibility, instance_id, health, completion: complete::Completion::default(), notifier: None })
    }
}

/// A validated relay, ready to [`run`].
pub struct Relay {
    pub settings: RelaySettings,
    pub queue: queue::Queue,
    /// The copy stages, with the S3 and GCS sides.
    pub copier: copy::Copier,
    /// Visibility timeout (seconds) requested and renewed.
    pub visibility: u32,
    pub instance_id: String,
    pub health: Health,
    /// What this process has seen of each export's files (keeps completion checks cheap).
    pub completion: complete::Completion,
    /// Told of every marker this relay writes (the binary's `--notify-url` webhook).
    pub notifier: Option<Arc<dyn Notifier>>,
}

/// Receives an event for every marker the relay writes. Best effort: it is awaited
/// after the marker is durable and cannot fail the copy it reports on.
pub trait Notifier: Send + Sync {
    fn notify(&self, n: crossdock_core::notify::Notification) -> futures::future::BoxFuture<'static, ()>;
}

impl Relay {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.visibility) * 1000 / 3).max(Duration::from_millis(300))
    }
}
