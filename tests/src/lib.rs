//! Test harness shared by crossdock's integration tests: clients for every service of
//! the local stack (`scripts/local-stack up`, then `eval "$(scripts/local-stack env)"`)
//! and per-test resources with unique names, so tests run in parallel and leave
//! nothing behind.
//!
//! Every helper reads the standard variables the stack's `env` prints; a missing one is
//! a clear panic telling you to start the stack — tests never silently skip.

pub mod export;
pub mod gauth;
pub mod load;
pub mod native;
pub mod pipeline;
pub mod proxy;
pub mod relay;
pub mod resources;
pub mod sync;
pub mod tcp;
pub mod watch;

use std::sync::atomic::{AtomicU32, Ordering};

/// Reads a variable the local stack exports, or panics with what to do.
pub fn stack_var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `scripts/local-stack up && eval \"$(scripts/local-stack env)\"` (scripts/test does this)"))
}

/// A name unique to this test process and call: lowercase, `[a-z0-9-]`, starts with a
/// letter, ≤ 40 chars, valid for buckets, queues, tables, databases and PG schemas
/// (use [`unique_ident`] where `-` is not allowed).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random::<u32>() % 0x10000;
    let mut p: String = prefix.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect::<String>().to_ascii_lowercase();
    if p.is_empty() {
        p.push('t');
    }
    format!("{p}-{}-{n}-{r:04x}", std::process::id())
}

/// A log file of its own for a spawned process, under the temp directory's `group`
/// folder (kept after the test, for reading when it fails).
pub fn tmp_log(group: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(group);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir.join(format!("{}.log", unique(name)))
}

/// [`unique`] with `_` instead of `-` (SQL identifiers).
pub fn unique_ident(prefix: &str) -> String {
    unique(prefix).replace('-', "_")
}

/// AWS configuration for the local stack (endpoints from `AWS_ENDPOINT_URL*`).
pub async fn aws_config() -> aws_config::SdkConfig {
    stack_var("AWS_ENDPOINT_URL");
    aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new("us-east-1")).load().await
}

pub async fn s3() -> aws_sdk_s3::Client {
    let conf = aws_config().await;
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build())
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&aws_config().await)
}

/// DynamoDB on dynalite (`AWS_ENDPOINT_URL_DYNAMODB`).
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    stack_var("AWS_ENDPOINT_URL_DYNAMODB");
    aws_sdk_dynamodb::Client::new(&aws_config().await)
}

/// GCS client for fake-gcs-server (`STORAGE_EMULATOR_HOST`), anonymous.
pub async fn gcs() -> gcloud_storage::client::Client {
    let endpoint = stack_var("STORAGE_EMULATOR_HOST");
    let mut config = gcloud_storage::client::ClientConfig::default().anonymous();
    config.storage_endpoint = endpoint;
    gcloud_storage::client::Client::new(config)
}

/// A PostgreSQL connection to the stack's database (`CROSSDOCK_PG_URL`).
pub async fn postgres() -> tokio_postgres::Client {
    let url = stack_var("CROSSDOCK_PG_URL");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// GCP project and Spanner instance of the stack.
pub fn gcp_project() -> String {
    stack_var("CROSSDOCK_GCP_PROJECT")
}
pub fn spanner_instance() -> String {
    stack_var("CROSSDOCK_SPANNER_INSTANCE")
}
pub fn bigtable_instance() -> String {
    std::env::var("CROSSDOCK_BIGTABLE_INSTANCE").unwrap_or_else(|_| "local".into())
}

/// Path of the built `crossdock` binary, for end-to-end tests.
pub fn crossdock_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("CROSSDOCK_BIN") {
        return p.into();
    }
    // tests/ is a workspace member: the binary is in the same target profile directory.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let bin = profile_dir.join("crossdock");
    assert!(bin.exists(), "{} not found: run `cargo build -p crossdock` first (scripts/test does)", bin.display());
    bin
}

/// A webhook receiver on loopback (`--notify-url` tests): collects the JSON bodies POSTed
/// to it and answers 200.
pub async fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then Content-Length bytes of body.
            let body = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            if let Some(body) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                sink.lock().expect("lock").push(body);
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
        }
    });
    (url, got)
}
