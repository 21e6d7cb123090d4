//! `crossdock relay`: runs the SQS-driven S3 → GCS relay until SIGTERM,
//! Ctrl-C, a spot interruption notice or `--until-idle`, serving `/metrics`
//! (Prometheus) and `/healthz` on `--metrics-addr`.

use crate::exit::{fail, Code};
use anyhow::Context;
use axum::http::StatusCode;
use crossdock_core::Codec;
use crossdock_relay::{HealthStatus, RelayError, RelaySettings};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Flags of `crossdock relay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// SQS queue URL receiving the source buckets' S3 event notifications.
    #[arg(long, env = "CROSSDOCK_RELAY_QUEUE")]
    queue: String,
    /// Pipeline file: its source bucket → relay bucket, prefix, codec, level and
    /// region (the flags below override it).
    #[arg(long)]
    pipeline: Option<std::path::PathBuf>,
    /// Source bucket and destination GCS bucket, `SRC=DST` (or `SRC` for the same
    /// name). Repeat for several buckets; events for other buckets are ignored.
    #[arg(long = "dst-bucket-map", value_name = "SRC=DST", required_unless_present = "pipeline")]
    dst_bucket_map: Vec<String>,
    /// Key prefix of the dumps in the source buckets (empty or ending with `/`; default:
    /// empty).
    #[arg(long)]
    prefix: Option<String>,
    /// Codec of relayed data parts (default: zstd).
    #[arg(long)]
    codec: Option<Codec>,
    /// Compression level (default: the codec's CLI default).
    #[arg(long)]
    level: Option<i32>,
    /// Messages (files) processed at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Compression parallelism per file (default: all cores): zstd worker threads, or
    /// gzip/bzip2 blocks in flight on the shared pool (one worker per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Upload request size in MiB (rounded down to a multiple of 256 KiB). Each file in
    /// flight buffers one request; 16 MiB is rclone's GCS default, and fewer, larger
    /// requests moved 1.5x the bytes of 8 MiB ones through fake-gcs-server.
    #[arg(long, default_value_t = crossdock_relay::DEFAULT_CHUNK_MIB as f64)]
    chunk_mib: f64,
    /// Upload budget of the whole process, KiB/s, shared by every file in flight (as
    /// rclone's --bwlimit): a pod's share of its node's network.
    #[arg(long)]
    rate_limit_kib: Option<u64>,
    /// Visibility timeout requested and renewed by the heartbeat (default: the queue's).
    #[arg(long)]
    visibility_timeout: Option<u32>,
    /// Long-poll wait, seconds (≤ 20).
    #[arg(long, default_value_t = 20)]
    wait_time: u32,
    /// Seconds a failed message stays invisible before it is retried.
    #[arg(long, default_value_t = 10)]
    retry_delay: u32,
    /// Seconds a copy may go without moving a byte (S3 read, GCS upload) before it is
    /// abandoned and its message retried; 0 never abandons one. Without it a hung
    /// connection keeps the message hidden for as long as its heartbeat runs.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    copy_stall_timeout: u64,
    /// Seconds to open a connection to GCS.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    gcs_connect_timeout: u64,
    /// Seconds a GCS request may wait for its response (from sending it, so longer than
    /// one upload request of --chunk-mib takes to send), then between reads of it.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    gcs_read_timeout: u64,
    /// Seconds a drain waits for in-flight copies before releasing their messages.
    #[arg(long, default_value_t = 100)]
    drain_deadline: u64,
    /// Exit after this many seconds with an empty queue and nothing in flight (on a
    /// terminal, with a progress bar: events against the queue's backlog, files copied,
    /// MB raw → stored).
    #[arg(long, value_name = "SECONDS")]
    until_idle: Option<u64>,
    /// No progress bar with --until-idle, even on a terminal.
    #[arg(long)]
    no_progress: bool,
    /// Instance metadata endpoint polled for spot interruption notices (default:
    /// AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254).
    #[arg(long)]
    imds_endpoint: Option<String>,
    /// Do not poll instance metadata for spot interruption notices.
    #[arg(long)]
    no_spot_poll: bool,
    /// Seconds between spot notice polls.
    #[arg(long, default_value_t = 5)]
    spot_poll: u64,
    /// Address of the `/metrics` and `/healthz` server (`off` to disable).
    #[arg(long, default_value = "0.0.0.0:9464")]
    metrics_addr: String,
    /// GCS JSON API endpoint (a private endpoint or a proxy), signed in to as Google's is.
    /// Anonymous access is only for the emulator, named by STORAGE_EMULATOR_HOST.
    #[arg(long, env = "CROSSDOCK_GCS_ENDPOINT")]
    gcs_endpoint: Option<String>,
    /// Name written as `written_by` in markers (default: host name and pid).
    #[arg(long)]
    instance_id: Option<String>,
    /// Webhook (Slack-compatible) that gets a JSON event for every marker this relay writes.
    // The URL is a bearer secret: `--help` must not show the value it read from the environment.
    #[arg(long, env = "CROSSDOCK_NOTIFY_URL", hide_env_values = true)]
    notify_url: Option<String>,
    /// AWS region (default: the pipeline's source region, else the AWS default chain:
    /// AWS_REGION, the profile).
    #[arg(long)]
    region: Option<String>,
}

fn bucket_map(entries: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for e in entries {
        let (src, dst) = e.split_once('=').unwrap_or((e.as_str(), e.as_str()));
        if src.is_empty() || dst.is_empty() {
            return Err(fail(Code::Usage, format!("--dst-bucket-map {e:?}: expected SRC=DST")));
        }
        m.insert(src.to_string(), dst.to_string());
    }
    Ok(m)
}

pub async fn run(mut args: Args) -> anyhow::Result<Code> {
    if let Some(path) = &args.pipeline {
        // The pipeline fills what the flags left out.
        let p = crate::pipeline::load_source(path)?;
        if args.dst_bucket_map.is_empty() {
            args.dst_bucket_map = vec![format!("{}={}", p.source.bucket, p.dst_bucket)];
        }
        args.prefix.get_or_insert(p.source.prefix);
        args.codec.get_or_insert(p.codec);
        args.level = args.level.or(Some(p.level));
        args.region = args.region.or(p.source.region);
    }
    let buckets = bucket_map(&args.dst_bucket_map)?;
    let mut s = RelaySettings::new(args.queue.clone(), buckets);
    s.prefix = args.prefix.clone().unwrap_or_default();
    s.codec = args.codec.unwrap_or(Codec::Zstd);
    s.level = args.level;
    s.concurrency = args.concurrency;
    s.threads = args.threads;
    s.chunk_size = (args.chunk_mib * 1024.0 * 1024.0) as usize;
    s.rate_limit = args.rate_limit_kib.map(|k| k * 1024);
    s.visibility_timeout_secs = args.visibility_timeout;
    s.wait_time_secs = args.wait_time;
    s.retry_delay_secs = args.retry_delay;
    s.drain_deadline_secs = args.drain_deadline;
    s.copy_stall_timeout_secs = args.copy_stall_timeout;
    s.until_idle_secs = args.until_idle;
    // The AWS SDKs' own variable for the endpoint, read as they read it.
    let imds =
        args.imds_endpoint.clone().or_else(|| std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT").ok()).unwrap_or_else(|| "http://169.254.169.254".to_string());
    s.imds_endpoint = (!args.no_spot_poll).then_some(imds);
    s.spot_poll_secs = args.spot_poll;
    s.instance_id = args.instance_id.clone();

    let conf = crate::aws::config(args.region.clone()).await;
    let s3 = crate::aws::s3(&conf);
    let sqs = crate::aws::sqs(&conf);
    let sqs_for_bar = sqs.clone();
    let timeouts = crossdock_relay::gcs::Timeouts {
        connect: Duration::from_secs(args.gcs_connect_timeout.max(1)),
        read: Duration::from_secs(args.gcs_read_timeout.max(1)),
    };
    let http = crossdock_relay::gcs::http_client(timeouts).context("GCS HTTP client")?;
    let gcs = {
        let gcp = crate::gcp().clone().with_storage_endpoint(args.gcs_endpoint.clone());
        let mut config = gcp.storage_config().await.context("GCS")?;
        // The client's default HTTP client has no timeouts: a hung connection would
        // wait forever. This one has them, and counts requests for /metrics.
        config.http = Some(http);
        gcloud_storage::client::Client::new(config)
    };
    let mut relay = match s.build(s3, sqs, gcs).await {
        Ok(r) => r,
        Err(e @ RelayError::Config(_)) => return Err(fail(Code::Usage, e.to_string())),
        Err(e @ RelayError::QueueNotFound { .. }) => return Err(fail(Code::NotFound, e.to_string())),
        Err(e) => return Err(anyhow::Error::new(e).context("starting the relay")),
    };
    relay.notifier = args.notify_url.clone().map(|url| std::sync::Arc::new(crate::notify::Webhook(url)) as std::sync::Arc<dyn crossdock_relay::Notifier>);
    let bar = (args.until_idle.is_some() && crate::bars::enabled(args.no_progress, false)).then(|| Bar::start(sqs_for_bar.clone(), args.queue.clone()));
    if let Some(b) = &bar {
        crate::serve::watch(b.counts.clone());
    }
    let serving = crate::serve::addr(&args.metrics_addr)?;
    if serving.is_none() && bar.is_some() {
        crate::serve::install_tap()?;
    }
    if let Some(addr) = serving {
        // Healthy while anything advances (receives, accepted heartbeats, copy bytes) and
        // while draining; the relay crate decides, see `crossdock_relay::health`.
        let health = relay.health.clone();
        let check = move || match health.check() {
            HealthStatus::Draining => (StatusCode::OK, "draining\n".to_string()),
            HealthStatus::Ok { .. } => (StatusCode::OK, "ok\n".to_string()),
            HealthStatus::Stale { since } => (StatusCode::SERVICE_UNAVAILABLE, format!("no progress (receive, heartbeat or copy) for {} s\n", since.as_secs())),
        };
        crate::serve::serve(addr, crate::serve::Phase { metrics: crossdock_relay::events::METRICS, buckets: &[] }, check).await?;
    }
    let result = crossdock_relay::run(relay, crate::shutdown::signal()).await;
    if let Some(b) = bar {
        b.finish();
    }
    let summary = result?;
    tracing::info!(
        messages = summary.messages,
        copied = summary.copied,
        skipped = summary.skipped,
        misrouted = summary.misrouted,
        failed = summary.failed,
        stalled = summary.stalled,
        markers = summary.markers_written,
        released = summary.released,
        "relay exited"
    );
    Ok(Code::Ok)
}

/// The relay's counters a progress bar shows: the same ones `/metrics` exports.
#[derive(Default)]
struct Counts {
    messages: Arc<AtomicU64>,
    files: Arc<AtomicU64>,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
}

impl crate::serve::Tap for Counts {
    fn counter(&self, key: &metrics::Key) -> Option<metrics::Counter> {
        let copied = || key.labels().any(|l| l.key() == "outcome" && l.value() == "copied");
        let n = match key.name() {
            "crossdock_relay_messages_total" => &self.messages,
            "crossdock_relay_objects_total" if copied() => &self.files,
            "crossdock_relay_bytes_in_total" => &self.bytes_in,
            "crossdock_relay_bytes_out_total" => &self.bytes_out,
            _ => return None,
        };
        Some(metrics::Counter::from_arc(n.clone()))
    }
}

/// `relay --until-idle` on a terminal: events (SQS messages, one per file written to the
/// dump bucket) handled against those plus the queue's backlog (visible and in flight,
/// polled), with files copied and MB raw → stored.
struct Bar {
    bar: indicatif::ProgressBar,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Bar {
    fn start(sqs: aws_sdk_sqs::Client, queue: String) -> Bar {
        let template = "{spinner} [{elapsed_precise}] [{wide_bar}] {human_pos}/{human_len} events ({per_sec}, ETA {eta}) {msg}";
        let bar = crate::bars::bar(true, Some(0), template);
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(Self::update(bar.clone(), counts.clone(), sqs, queue));
        Bar { bar, counts, task }
    }

    async fn update(bar: indicatif::ProgressBar, counts: Arc<Counts>, sqs: aws_sdk_sqs::Client, queue: String) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let mut backlog = 0u64;
        let mut ticks = 0u64;
        loop {
            // The backlog every 2 s (one cheap request), the counts every 250 ms.
            if ticks.is_multiple_of(8) {
                let attrs = sqs
                    .get_queue_attributes()
                    .queue_url(&queue)
                    .attribute_names(A::ApproximateNumberOfMessages)
                    .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await;
                if let Ok(a) = attrs {
                    let n = |k: A| a.attributes().and_then(|m| m.get(&k)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                    backlog = n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible);
                }
            }
            ticks += 1;
            Self::draw(&bar, &counts, backlog);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn draw(bar: &indicatif::ProgressBar, counts: &Counts, backlog: u64) {
        let done = counts.messages.load(Ordering::Relaxed);
        let mb = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / 1e6;
        bar.set_length(done + backlog);
        bar.set_position(done);
        bar.set_message(format!(
            "{} files copied, {:.1} MB raw → {:.1} MB stored",
            counts.files.load(Ordering::Relaxed),
            mb(&counts.bytes_in),
            mb(&counts.bytes_out)
        ));
    }

    /// The final counts, on their own line.
    fn finish(self) {
        self.task.abort();
        Self::draw(&self.bar, &self.counts, 0);
        crate::bars::finish(&self.bar);
    }
}
