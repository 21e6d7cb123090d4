//! Harness additions for the relay tests: a source bucket wired to a queue through a
//! real S3 bucket notification (moto), a destination GCS bucket, fake exports built
//! with crossdock-core's types, and readers that decompress with the standard CLIs.

use crate::resources::{TempBucket, TempGcsBucket, TempQueue};
use crossdock_core::layout::{DumpFile, ExportId, Timestamp};
use crossdock_core::manifest::{PartEntry, SegmentManifest, TypeStats};
use crossdock_core::marker::SuccessMarker;
use crossdock_core::schema::{AttributeDefinition, BillingMode, KeyElement, KeyRole, TableSchema};
use crossdock_core::{Codec, TypeTag};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A source bucket whose ObjectCreated events go to `queue`, plus the GCS bucket the
/// relay writes to.
pub struct Wired {
    pub src: TempBucket,
    pub queue: TempQueue,
    pub dlq: Option<TempQueue>,
    pub gcs: TempGcsBucket,
}

/// Sends `bucket`'s ObjectCreated events to the queue `arn` (a real notification
/// configuration; moto then posts an `s3:TestEvent` first, as AWS does).
pub async fn notify(s3: &aws_sdk_s3::Client, bucket: &str, arn: &str) {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    let qc = QueueConfiguration::builder().queue_arn(arn).events(Event::S3ObjectCreated).build().expect("queue configuration");
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(NotificationConfiguration::builder().queue_configurations(qc).build())
        .send()
        .await
        .unwrap_or_else(|e| panic!("notification configuration on {bucket}: {e:?}"));
}

impl Wired {
    /// `visibility_secs` for the queue; with `max_receives`, a dead-letter queue
    /// takes messages received that many times.
    pub async fn new(prefix: &str, visibility_secs: u32, max_receives: Option<u32>) -> Wired {
        let src = TempBucket::new(prefix).await;
        let queue = TempQueue::new(prefix, visibility_secs).await;
        let dlq = match max_receives {
            Some(n) => {
                let dlq = TempQueue::new(&format!("{prefix}dlq"), 30).await;
                let policy = serde_json::json!({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": n.to_string()}).to_string();
                queue
                    .client
                    .set_queue_attributes()
                    .queue_url(&queue.url)
                    .attributes(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy, policy)
                    .send()
                    .await
                    .expect("redrive policy");
                Some(dlq)
            }
            None => None,
        };
        notify(&src.client, &src.name, &queue.arn).await;
        let gcs = TempGcsBucket::new(prefix).await;
        Wired { src, queue, dlq, gcs }
    }

    /// Relay settings for this wiring: short polls and retries, no spot poller.
    pub fn settings(&self) -> crossdock_relay::RelaySettings {
        let mut s = crossdock_relay::RelaySettings::new(self.queue.url.clone(), BTreeMap::from([(self.src.name.clone(), self.gcs.name.clone())]));
        s.wait_time_secs = 1;
        s.retry_delay_secs = 1;
        s.until_idle_secs = Some(4);
        s.threads = Some(2);
        s
    }

    /// A built relay for `settings`, on the stack's clients.
    pub async fn relay(&self, settings: crossdock_relay::RelaySettings) -> crossdock_relay::Relay {
        settings.build(crate::s3().await, crate::sqs().await, crate::gcs().await).await.expect("relay settings build")
    }

    /// Flags for the `crossdock relay` binary on this wiring.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "relay".into(),
            "--queue".into(),
            self.queue.url.clone(),
            "--dst-bucket-map".into(),
            format!("{}={}", self.src.name, self.gcs.name),
            "--wait-time".into(),
            "1".into(),
            "--retry-delay".into(),
            "1".into(),
            "--no-spot-poll".into(),
            "--metrics-addr".into(),
            "off".into(),
            "--threads".into(),
            "1".into(),
        ]
    }

    /// Messages currently in the dead-letter queue (bodies), received and left there.
    pub async fn dlq_bodies(&self) -> Vec<String> {
        let Some(dlq) = &self.dlq else { return Vec::new() };
        let mut out = Vec::new();
        for _ in 0..5 {
            let r = dlq
                .client
                .receive_message()
                .queue_url(&dlq.url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive dlq");
            let ms = r.messages.unwrap_or_default();
            if ms.is_empty() {
                break;
            }
            out.extend(ms.into_iter().filter_map(|m| m.body));
        }
        out
    }
}

/// SHA-256 (lowercase hex) with the system's `sha256sum`.
pub fn sha256_hex(data: &[u8]) -> String {
    let out = pipe(&["sha256sum"], data);
    String::from_utf8_lossy(&out).split_whitespace().next().unwrap_or_default().to_string()
}

/// Runs `cmd` with `input` on stdin and returns stdout (panics on failure).
pub fn pipe(cmd: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Decompresses with the codec's standard CLI (`zstd`, `gzip`, `bzip2`).
pub fn decompress(codec: Codec, data: &[u8]) -> Vec<u8> {
    match codec {
        Codec::Zstd => pipe(&["zstd", "-d", "-c", "-q"], data),
        Codec::Gzip => pipe(&["gzip", "-d", "-c"], data),
        Codec::Bzip2 => pipe(&["bzip2", "-d", "-c"], data),
        Codec::None => data.to_vec(),
    }
}

/// A small, fake but well-formed table export: schema, parts, manifests.
#[derive(Debug, Clone)]
pub struct FakeExport {
    pub export: ExportId,
    pub segments: u32,
    pub parts_per_segment: u32,
    pub lines_per_part: u32,
    /// Codec the parts are stored with in S3 (`None`: plain `.json`).
    pub source_codec: Codec,
}

impl FakeExport {
    pub fn new(batch: &str, table: &str, segments: u32, parts_per_segment: u32, lines_per_part: u32) -> FakeExport {
        let ts = Timestamp::parse("2026-11-23T09-30-00Z").expect("timestamp");
        FakeExport { export: ExportId::new(batch, table, ts).expect("export id"), segments, parts_per_segment, lines_per_part, source_codec: Codec::None }
    }

    /// Raw (uncompressed) DynamoDB JSON lines of one part.
    pub fn part_raw(&self, segment: u32, part: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..self.lines_per_part {
            let pad = "x".repeat(((i * 7 + segment * 3 + part) % 50) as usize);
            writeln!(out, r#"{{"Item":{{"pk":{{"S":"{}-{segment}-{part}-{i}"}},"n":{{"N":"{i}"}},"pad":{{"S":"{pad}"}}}}}}"#, self.export.table)
                .expect("write");
        }
        out
    }

    pub fn schema(&self) -> TableSchema {
        TableSchema {
            format_version: 1,
            table: self.export.table.clone(),
            key_schema: vec![KeyElement { name: "pk".into(), role: KeyRole::Hash }],
            attribute_definitions: vec![AttributeDefinition { name: "pk".into(), kind: TypeTag::S }],
            global_secondary_indexes: vec![],
            local_secondary_indexes: vec![],
            billing_mode: BillingMode::PayPerRequest,
            capacity_before: None,
            item_count_estimate: 0,
            size_bytes_estimate: 0,
            total_segments: self.segments,
            crossdock_version: crossdock_core::VERSION.into(),
            stream: None,
        }
    }

    /// Every file as (relative name, S3 body), schema first, then per segment its
    /// parts and its manifest.
    pub fn files(&self) -> Vec<(DumpFile, Vec<u8>)> {
        let mut out = vec![(DumpFile::Schema, serde_json::to_vec_pretty(&self.schema()).expect("schema json"))];
        for s in 0..self.segments {
            let mut parts = Vec::new();
            for p in 0..self.parts_per_segment {
                let raw = self.part_raw(s, p);
                parts.push(PartEntry {
                    name: DumpFile::Part { segment: s, part: p, codec: Codec::None }.s3_name(),
                    items: u64::from(self.lines_per_part),
                    bytes: raw.len() as u64,
                    sha256: sha256_hex(&raw),
                });
                let stored = match self.source_codec {
                    Codec::Gzip => pipe(&["gzip", "-c"], &raw),
                    Codec::Zstd => pipe(&["zstd", "-c", "-q"], &raw),
                    Codec::Bzip2 => pipe(&["bzip2", "-c"], &raw),
                    Codec::None => raw,
                };
                out.push((DumpFile::Part { segment: s, part: p, codec: self.source_codec }, stored));
            }
            let m = SegmentManifest {
                format_version: 1,
                table: self.export.table.clone(),
                segment: s,
                total_segments: self.segments,
                items: parts.iter().map(|p| p.items).sum(),
                bytes: parts.iter().map(|p| p.bytes).sum(),
                parts,
                consumed_rcu: 0.0,
                type_stats: TypeStats::default(),
            };
            out.push((DumpFile::Manifest { segment: s, total: self.segments }, serde_json::to_vec_pretty(&m).expect("manifest json")));
        }
        out
    }

    /// Number of files the relay copies.
    pub fn file_count(&self) -> usize {
        1 + (self.segments * (self.parts_per_segment + 1)) as usize
    }

    /// Puts every file into `bucket` under `prefix` (one PutObject each).
    pub async fn put_all(&self, s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) {
        for (f, body) in self.files() {
            let key = self.export.s3_key(prefix, &f);
            s3.put_object().bucket(bucket).key(&key).body(body.into()).send().await.unwrap_or_else(|e| panic!("put {key}: {e:?}"));
        }
    }

    /// [`FakeExport::put_all`] with up to `at_once` PutObjects in flight, in the same
    /// order of starting (for exports of thousands of files).
    pub async fn put_all_concurrently(&self, s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str, at_once: usize) {
        use futures::StreamExt;
        let puts = self.files().into_iter().map(|(f, body)| {
            let key = self.export.s3_key(prefix, &f);
            async move {
                s3.put_object().bucket(bucket).key(&key).body(body.into()).send().await.unwrap_or_else(|e| panic!("put {key}: {e:?}"));
            }
        });
        futures::stream::iter(puts).buffer_unordered(at_once.max(1)).collect::<Vec<()>>().await;
    }

    /// Checks GCS holds every file intact (parts decompress to the exact raw bytes;
    /// schema and manifests byte-identical) and returns the parsed marker.
    pub async fn verify_in_gcs(&self, gcs: &gcloud_storage::client::Client, bucket: &str, codec: Codec) -> SuccessMarker {
        for (f, body) in self.files() {
            let name = self.export.gcs_key(&f, codec);
            let got = download(gcs, bucket, &name).await.unwrap_or_else(|| panic!("gs://{bucket}/{name} missing"));
            match f {
                DumpFile::Part { segment, part, .. } => {
                    assert_eq!(decompress(codec, &got), self.part_raw(segment, part), "gs://{bucket}/{name} decompresses to the source bytes")
                }
                _ => assert_eq!(got, body, "gs://{bucket}/{name} is a byte copy"),
            }
        }
        let marker = download(gcs, bucket, &self.export.marker_key()).await.unwrap_or_else(|| panic!("{} has no _SUCCESS", self.export));
        let marker: SuccessMarker = serde_json::from_slice(&marker).expect("marker parses");
        assert_eq!(marker.export, self.export);
        assert_eq!(marker.codec, codec);
        assert_eq!(marker.files.len() as u32, self.segments * self.parts_per_segment);
        assert_eq!(marker.totals.files, u64::from(self.segments * self.parts_per_segment));
        assert_eq!(marker.totals.items, u64::from(self.segments * self.parts_per_segment * self.lines_per_part));
        let raw_total: u64 =
            (0..self.segments).flat_map(|s| (0..self.parts_per_segment).map(move |p| (s, p))).map(|(s, p)| self.part_raw(s, p).len() as u64).sum();
        assert_eq!(marker.totals.raw_bytes, raw_total);
        for mf in &marker.files {
            let o = get(gcs, bucket, &format!("{}{}", self.export.dir(), mf.name)).await.expect("listed file exists");
            assert_eq!(mf.stored_bytes, o.size as u64, "{}", mf.name);
            assert_eq!(mf.sha256, sha256_hex(&self.part_raw(mf.segment, mf.part)));
        }
        marker
    }
}

pub async fn download(gcs: &gcloud_storage::client::Client, bucket: &str, name: &str) -> Option<Vec<u8>> {
    use gcloud_storage::http::objects::{download::Range, get::GetObjectRequest};
    gcs.download_object(&GetObjectRequest { bucket: bucket.into(), object: name.into(), ..Default::default() }, &Range::default()).await.ok()
}

pub async fn get(gcs: &gcloud_storage::client::Client, bucket: &str, name: &str) -> Option<gcloud_storage::http::objects::Object> {
    use gcloud_storage::http::objects::get::GetObjectRequest;
    gcs.get_object(&GetObjectRequest { bucket: bucket.into(), object: name.into(), ..Default::default() }).await.ok()
}

/// All object names in a GCS bucket.
pub async fn list_names(gcs: &gcloud_storage::client::Client, bucket: &str) -> Vec<String> {
    use gcloud_storage::http::objects::list::ListObjectsRequest;
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = gcs.list_objects(&ListObjectsRequest { bucket: bucket.into(), page_token: token, ..Default::default() }).await.expect("list");
        out.extend(page.items.unwrap_or_default().into_iter().map(|o| o.name));
        token = page.next_page_token;
        if token.is_none() {
            return out;
        }
    }
}

/// Waits (polling, up to `limit`) until `cond` holds; returns whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if std::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A tiny instance-metadata server: 404 for the spot notice until [`FakeImds::serve_notice`].
pub struct FakeImds {
    pub endpoint: String,
    notice: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FakeImds {
    pub async fn start() -> FakeImds {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let notice = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = notice.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let (status, body) = if req.starts_with("PUT /latest/api/token") {
                        ("200 OK", "test-token".to_string())
                    } else if req.contains("/latest/meta-data/spot/instance-action") && flag.load(std::sync::atomic::Ordering::SeqCst) {
                        ("200 OK", r#"{"action":"terminate","time":"2026-11-23T10:00:00Z"}"#.to_string())
                    } else {
                        ("404 Not Found", "Not Found".to_string())
                    };
                    let resp = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        FakeImds { endpoint, notice }
    }

    pub fn serve_notice(&self) {
        self.notice.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A `crossdock relay` process whose stderr goes to a log file.
pub struct RelayProcess {
    pub child: tokio::process::Child,
    pub log: std::path::PathBuf,
}

impl RelayProcess {
    /// Starts the real binary with `args`, appending its log to `log`.
    pub fn spawn(args: &[String], log: &std::path::Path) -> RelayProcess {
        RelayProcess::spawn_with_env(args, log, &[])
    }

    /// [`RelayProcess::spawn`] with extra environment variables (e.g. a
    /// `STORAGE_EMULATOR_HOST` pointing at a [`crate::proxy::FaultProxy`]).
    pub fn spawn_with_env(args: &[String], log: &std::path::Path, env: &[(&str, &str)]) -> RelayProcess {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let child = tokio::process::Command::new(crate::crossdock_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn crossdock relay");
        RelayProcess { child, log: log.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends a signal (`"TERM"`, `"KILL"`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill").success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Waits for the exit, up to `limit`; `None` if it is still running.
    pub async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait()).await.ok().map(|r| r.expect("wait"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
