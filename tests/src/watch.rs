//! Harness for the `load --watch` tests: Pub/Sub topics and subscriptions on the
//! stack's emulator (REST), and a private fake-gcs-server that publishes its finalize
//! events to a topic of the test's own.
//!
//! Why a private fake-gcs: the stack's one (`scripts/local-stack`) publishes every
//! object of every bucket to the shared `$CROSSDOCK_GCS_EVENTS_TOPIC`. A watcher skips
//! markers outside its pipeline's bucket, but on the shared topic it would still pull
//! (and acknowledge) every test's and benchmark's notifications, and a test could not
//! tell its own events from theirs. fake-gcs-server 1.54 has one event topic
//! per server (per-bucket notification configs came in 1.55) and the Pub/Sub emulator
//! ignores subscription filters, so a test gets its own server: same binary, same flags.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

fn pubsub_base() -> String {
    format!("http://{}/v1/projects/{}", crate::stack_var("PUBSUB_EMULATOR_HOST"), crate::gcp_project())
}

/// A Pub/Sub topic on the emulator; it and the subscriptions named through it are
/// deleted on drop.
pub struct PubsubTopic {
    /// The topic id (not the full path).
    pub name: String,
    /// Created by the test (deleted on drop), or the stack's.
    owned: bool,
    subscriptions: Mutex<Vec<String>>,
}

impl PubsubTopic {
    pub async fn new(prefix: &str) -> PubsubTopic {
        let name = crate::unique(prefix);
        let url = format!("{}/topics/{name}", pubsub_base());
        let resp = reqwest::Client::new().put(&url).send().await.expect("pubsub emulator reachable");
        assert!(resp.status().is_success(), "PUT {url}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        PubsubTopic { name, owned: true, subscriptions: Mutex::new(Vec::new()) }
    }

    /// The stack's shared GCS events topic (not deleted on drop; its subscriptions are).
    pub fn stack_events() -> PubsubTopic {
        PubsubTopic { name: crate::stack_var("CROSSDOCK_GCS_EVENTS_TOPIC"), owned: false, subscriptions: Mutex::new(Vec::new()) }
    }

    /// `projects/P/topics/T`.
    pub fn path(&self) -> String {
        format!("projects/{}/topics/{}", crate::gcp_project(), self.name)
    }

    /// A unique subscription name (not created), deleted with the topic.
    pub fn subscription_name(&self, prefix: &str) -> String {
        let name = crate::unique(prefix);
        self.subscriptions.lock().expect("lock").push(name.clone());
        name
    }

    /// Creates a pull subscription named with [`PubsubTopic::subscription_name`].
    pub async fn subscribe(&self, prefix: &str) -> String {
        let name = self.subscription_name(prefix);
        let url = format!("{}/subscriptions/{name}", pubsub_base());
        let resp = reqwest::Client::new()
            .put(&url)
            .json(&serde_json::json!({ "topic": self.path(), "ackDeadlineSeconds": 60 }))
            .send()
            .await
            .expect("pubsub emulator reachable");
        assert!(resp.status().is_success(), "PUT {url}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
        name
    }
}

impl PubsubTopic {
    /// Publishes a GCS-style finalize notification for `gs://bucket/name`.
    pub async fn publish_finalize(&self, bucket: &str, name: &str) {
        let url = format!("{}/topics/{}:publish", pubsub_base(), self.name);
        let msg = serde_json::json!({ "messages": [{ "data": "", "attributes": { "eventType": "OBJECT_FINALIZE", "bucketId": bucket, "objectId": name } }] });
        let resp = reqwest::Client::new().post(&url).json(&msg).send().await.expect("pubsub emulator reachable");
        assert!(resp.status().is_success(), "POST {url}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
}

/// Whether a subscription exists, and on which topic (`projects/P/topics/T`).
pub async fn subscription_topic(subscription: &str) -> Option<String> {
    let resp = reqwest::get(format!("{}/subscriptions/{subscription}", pubsub_base())).await.expect("pubsub emulator reachable");
    if !resp.status().is_success() {
        return None;
    }
    let body: serde_json::Value = resp.json().await.expect("subscription json");
    body["topic"].as_str().map(str::to_string)
}

/// Pulls up to 100 messages (waiting at most `wait`) and acknowledges them; returns
/// their `message` objects.
pub async fn pull_and_ack(subscription: &str, wait: Duration) -> Vec<serde_json::Value> {
    let http = reqwest::Client::new();
    let base = format!("{}/subscriptions/{subscription}", pubsub_base());
    // The emulator holds an empty pull open for ~90 s: bound it.
    let resp = match tokio::time::timeout(wait, http.post(format!("{base}:pull")).json(&serde_json::json!({ "maxMessages": 100 })).send()).await {
        Ok(r) => r.expect("pull"),
        Err(_) => return vec![],
    };
    assert!(resp.status().is_success(), "pull {subscription}: {}", resp.status());
    let body: serde_json::Value = resp.json().await.expect("pull json");
    let received = body["receivedMessages"].as_array().cloned().unwrap_or_default();
    let acks: Vec<&str> = received.iter().filter_map(|m| m["ackId"].as_str()).collect();
    if !acks.is_empty() {
        let r = http.post(format!("{base}:acknowledge")).json(&serde_json::json!({ "ackIds": acks })).send().await.expect("ack");
        assert!(r.status().is_success(), "ack {subscription}: {}", r.status());
    }
    received.into_iter().map(|m| m["message"].clone()).collect()
}

/// Polls `subscription` with `returnImmediately` (no long poll left open to swallow a
/// message after the caller gives up) until a message arrives or `wait` passes; does
/// not acknowledge. Returns the received messages (ackId and message).
pub async fn poll_for(subscription: &str, wait: Duration) -> Vec<serde_json::Value> {
    let http = reqwest::Client::new();
    let url = format!("{}/subscriptions/{subscription}:pull", pubsub_base());
    let t0 = std::time::Instant::now();
    loop {
        let resp = http.post(&url).json(&serde_json::json!({ "maxMessages": 10, "returnImmediately": true })).send().await.expect("pull");
        assert!(resp.status().is_success(), "pull {subscription}: {}", resp.status());
        let body: serde_json::Value = resp.json().await.expect("pull json");
        let received = body["receivedMessages"].as_array().cloned().unwrap_or_default();
        if !received.is_empty() || t0.elapsed() >= wait {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Drop for PubsubTopic {
    fn drop(&mut self) {
        let subs = std::mem::take(&mut *self.subscriptions.lock().unwrap_or_else(|e| e.into_inner()));
        let topic = self.owned.then(|| self.name.clone());
        crate::resources::cleanup(format!("Pub/Sub topic {}", self.name), async move {
            let http = reqwest::Client::new();
            let base = pubsub_base();
            // 404: never created (e.g. the watcher did not start).
            for s in subs {
                let r = http.delete(format!("{base}/subscriptions/{s}")).send().await.map_err(|e| e.to_string())?;
                if !r.status().is_success() && r.status().as_u16() != 404 {
                    return Err(format!("delete subscription {s}: {}", r.status()));
                }
            }
            if let Some(t) = topic {
                let r = http.delete(format!("{base}/topics/{t}")).send().await.map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("delete topic {t}: {}", r.status()));
                }
            }
            Ok(())
        });
    }
}

/// A fake-gcs-server of the test's own (memory backend) publishing `finalize` events
/// to `topic` on the stack's Pub/Sub emulator, started as `scripts/local-stack` starts
/// the shared one. Killed on drop.
pub struct FakeGcs {
    /// `http://127.0.0.1:PORT`: the `STORAGE_EMULATOR_HOST` for processes using it.
    pub endpoint: String,
    pub client: gcloud_storage::client::Client,
    /// The server's output.
    pub log: PathBuf,
    child: std::process::Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl FakeGcs {
    pub async fn start(topic: &PubsubTopic, dir: &Path) -> FakeGcs {
        let bin = crate::stack_var("CROSSDOCK_FAKE_GCS_BIN");
        let pubsub = crate::stack_var("PUBSUB_EMULATOR_HOST");
        let log = dir.join("fake-gcs.log");
        // The port is free when chosen; another process may take it before the server
        // binds it, so try a few.
        for _ in 0..5 {
            let port = free_port();
            let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("fake-gcs log");
            let err = out.try_clone().expect("fake-gcs log");
            let mut child = std::process::Command::new(&bin)
                .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string(), "-backend", "memory"])
                .args(["-public-host", &format!("127.0.0.1:{port}"), "-external-url", &format!("http://127.0.0.1:{port}")])
                .args(["-event.pubsub-project-id", &crate::gcp_project(), "-event.pubsub-topic", &topic.name, "-event.list", "finalize"])
                .env("PUBSUB_EMULATOR_HOST", &pubsub)
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("start {bin}: {e}"));
            let endpoint = format!("http://127.0.0.1:{port}");
            let http = reqwest::Client::new();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let ok = http.get(format!("{endpoint}/storage/v1/b")).send().await.is_ok_and(|r| r.status().is_success());
                if ok {
                    let mut config = gcloud_storage::client::ClientConfig::default().anonymous();
                    config.storage_endpoint = endpoint.clone();
                    let client = gcloud_storage::client::Client::new(config);
                    return FakeGcs { endpoint, client, log, child };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("fake-gcs-server did not start; see {}:\n{}", log.display(), std::fs::read_to_string(&log).unwrap_or_default());
    }

    /// Creates a bucket (it goes with the server).
    pub async fn bucket(&self, prefix: &str) -> String {
        use gcloud_storage::http::buckets::insert::{BucketCreationConfig, InsertBucketParam, InsertBucketRequest};
        let name = crate::unique(prefix);
        self.client
            .insert_bucket(&InsertBucketRequest {
                name: name.clone(),
                param: InsertBucketParam { project: crate::gcp_project(), ..Default::default() },
                bucket: BucketCreationConfig::default(),
            })
            .await
            .unwrap_or_else(|e| panic!("create bucket {name} on {}: {e:?}", self.endpoint));
        name
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
