//! `--watch`: GCS finalize notifications on Pub/Sub, filtered to `_SUCCESS` objects.
//! Pulls over Pub/Sub's gRPC API (gcloud-pubsub) with the process's Google sign-in
//! ([`crossdock_gcp::Gcp`]), or from the emulator at `PUBSUB_EMULATOR_HOST`; messages
//! are acknowledged only after their load succeeds, so a failed load is redelivered.
//!
//! The subscription is normally made beforehand (Terraform) and the watcher needs only
//! subscriber permissions (pull, acknowledge, modify the ack deadline): it never creates
//! a subscription that exists, and creates a missing one only when allowed.
//!
//! A marker being loaded is leased, not held for the subscription's whole ack deadline:
//! [`Watcher::hold`] renews a short lease ([`DEFAULT_LEASE_SECS`]) through
//! ModifyAckDeadline while the load runs, so a load of any length is never redelivered to
//! another watcher, and a watcher that dies hands its marker on within a lease. Markers
//! a watcher will not start at once are handed back ([`Watcher::release`]) for an idle
//! watcher to take.
//!
//! **Work items** spread one table over many watchers (`load --watch --fan-out`): a
//! watcher that pulls a marker publishes one message per file still to load to the same
//! topic ([`Watcher::publish_files`]), and every watcher on the subscription takes files
//! as it takes markers — leased, acknowledged after the file is loaded, redelivered to
//! another watcher when its holder dies. The loader's progress records and its
//! "whoever finds every file done finishes the table" rule do the rest.
//!
//! Every other notification (data parts, `_progress/…`, `_LOADED`, deletes) is
//! acknowledged at once and logged at debug level. Transient pull failures
//! (UNAVAILABLE, throttling, deadlines) are retried with a backoff; a subscription that
//! disappears is an error.

use crate::error::LoadError;
use base64::Engine as _;
use gcloud_googleapis::pubsub::v1::{AcknowledgeRequest, ModifyAckDeadlineRequest, PubsubMessage};
use gcloud_pubsub::subscription::{Subscription, SubscriptionConfig};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tonic::Code;

/// How long, by default, a pulled marker stays this watcher's without word from it
/// (`--lease-secs`); renewed every third of it while its load runs.
pub const DEFAULT_LEASE_SECS: u64 = 60;

/// Consecutive failed pulls tolerated (with backoff, about 2½ minutes in all) before
/// [`Watcher::next_work`] gives up.
const MAX_PULL_FAILURES: u32 = 10;

/// One pull waits this long for messages before it is asked again (the server may
/// hold a pull open much longer when nothing arrives).
const PULL_WAIT: Duration = Duration::from_secs(30);

/// A pull subscription on the bucket-notification topic.
#[derive(Clone)]
pub struct Watcher {
    subscription: Subscription,
    name: String,
    /// The topic work items are published to.
    topic: gcloud_pubsub::topic::Topic,
}

/// The attribute that marks a work item (value [`WORK_FILE`]).
pub const WORK_ATTRIBUTE: &str = "crossdock-work";
pub const WORK_FILE: &str = "file";

/// One file of a marker to load, as a message body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWork {
    pub marker: String,
    /// Data part name relative to the export directory, as the marker lists it.
    pub file: String,
}

/// What a pulled message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// A `_SUCCESS` finalize: load the marker (or fan it out).
    Marker(String),
    /// One file of a marker.
    File(FileWork),
}

impl Work {
    /// The work a message asks for; `None` for anything else (acknowledged and ignored).
    pub fn of(m: &PubsubMessage) -> Option<Work> {
        if m.attributes.get(WORK_ATTRIBUTE).map(String::as_str) == Some(WORK_FILE) {
            return serde_json::from_slice(&m.data).ok().map(Work::File);
        }
        ObjectEvent::from_message(m).filter(ObjectEvent::is_marker_finalize).map(|o| Work::Marker(o.url()))
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("subscription", &self.name).finish()
    }
}

fn retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted | Code::Internal | Code::Unknown)
}

fn err(op: &'static str, subscription: &str, s: &tonic::Status) -> LoadError {
    LoadError::PubSub { op, subscription: subscription.into(), message: format!("{:?}: {}", s.code(), s.message()), retryable: retryable(s.code()) }
}

/// The object a GCS notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// `OBJECT_FINALIZE`, `OBJECT_DELETE`, … (`OBJECT_FINALIZE` when not given).
    pub event: String,
    pub bucket: String,
    pub name: String,
}

impl ObjectEvent {
    /// Reads the message's attributes (`eventType`, `bucketId`, `objectId`), or else
    /// its JSON_API_V1 payload (`bucket`, `name`). `None` if it names no object.
    pub fn from_parts(attributes: &HashMap<String, String>, data: &[u8]) -> Option<ObjectEvent> {
        let event = attributes.get("eventType").cloned().unwrap_or_else(|| "OBJECT_FINALIZE".into());
        let (mut bucket, mut name) = (attributes.get("bucketId").cloned(), attributes.get("objectId").cloned());
        if bucket.is_none() || name.is_none() {
            let obj: Value = serde_json::from_slice(data).ok()?;
            bucket = obj["bucket"].as_str().map(str::to_string);
            name = obj["name"].as_str().map(str::to_string);
        }
        Some(ObjectEvent { event, bucket: bucket?, name: name? })
    }

    /// [`ObjectEvent::from_parts`] of a pulled message.
    pub fn from_message(m: &PubsubMessage) -> Option<ObjectEvent> {
        ObjectEvent::from_parts(&m.attributes, &m.data)
    }

    /// [`ObjectEvent::from_parts`] of a message in Pub/Sub's JSON form (`attributes`,
    /// base64 `data`), as the REST API and `gcloud` show it.
    pub fn of(message: &Value) -> Option<ObjectEvent> {
        let attributes: HashMap<String, String> =
            message["attributes"].as_object().map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()).unwrap_or_default();
        let data = base64::engine::general_purpose::STANDARD.decode(message["data"].as_str().unwrap_or_default()).unwrap_or_default();
        ObjectEvent::from_parts(&attributes, &data)
    }

    /// `gs://bucket/name`.
    pub fn url(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.name)
    }

    /// A `_SUCCESS` object was written.
    pub fn is_marker_finalize(&self) -> bool {
        self.event == "OBJECT_FINALIZE" && (self.name == "_SUCCESS" || self.name.ends_with("/_SUCCESS"))
    }
}

/// The `gs://` URL of a finalize message (JSON form) if it is a `_SUCCESS` marker.
pub fn marker_url(message: &Value) -> Option<String> {
    ObjectEvent::of(message).filter(ObjectEvent::is_marker_finalize).map(|o| o.url())
}

/// Backoff before pull retry `n` (1-based): 0.5 s doubling, at most 30 s.
fn pull_backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(6))).min(Duration::from_secs(30))
}

/// No retries inside the client: [`Watcher::next_work`] retries with its own backoff,
/// and acknowledgements and lease renewals are retried by redelivery.
fn no_retry() -> Option<gcloud_gax::retry::RetrySetting> {
    Some(gcloud_gax::retry::RetrySetting { from_millis: 0, max_delay: None, factor: 1, take: 0, codes: vec![] })
}

impl Watcher {
    /// Opens `subscription` on `topic` in `project`. An existing subscription is used
    /// as it is; a missing one is created when `create` allows it, else an error naming
    /// it and the command that creates it. Once this returns, every notification
    /// published to the topic is kept for this subscription.
    pub async fn new(gcp: &crossdock_gcp::Gcp, project: &str, topic: &str, subscription: &str, create: bool) -> Result<Watcher, LoadError> {
        let config = gcp.pubsub_config(project).await.map_err(LoadError::auth("Pub/Sub"))?;
        let name = format!("projects/{project}/subscriptions/{subscription}");
        let topic_path = format!("projects/{project}/topics/{topic}");
        let client = gcloud_pubsub::client::Client::new(config).await.map_err(|e| LoadError::PubSub {
            op: "connect",
            subscription: name.clone(),
            message: e.to_string(),
            retryable: true,
        })?;
        let sub = client.subscription(&name);
        // Reading the subscription needs pubsub.subscriptions.get, which the subscriber
        // role lacks: PERMISSION_DENIED means "ask no more and pull", and a pull on a
        // missing subscription still says NOT_FOUND.
        let exists = match sub.exists(no_retry()).await {
            Ok(e) => Some(e),
            Err(s) if s.code() == Code::PermissionDenied => None,
            Err(s) => return Err(err("get subscription", &name, &s)),
        };
        let mut created = false;
        if exists == Some(false) {
            if !create {
                return Err(LoadError::NotFound {
                    what: format!(
                        "Pub/Sub subscription {name} (this watcher may not create it; create it with: gcloud pubsub subscriptions create {subscription} --project {project} --topic {topic} --ack-deadline 600)"
                    ),
                });
            }
            let cfg = SubscriptionConfig { ack_deadline_seconds: 600, ..Default::default() };
            match sub.create(&topic_path, cfg, no_retry()).await {
                Ok(()) => created = true,
                // Another watcher made it first.
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) if s.code() == Code::NotFound => return Err(LoadError::NotFound { what: format!("Pub/Sub topic {topic_path}") }),
                Err(s) => return Err(err("create subscription", &name, &s)),
            }
        }
        tracing::info!(subscription = %name, topic = %topic_path, created, "watching for _SUCCESS finalizes");
        Ok(Watcher { subscription: sub, name, topic: client.topic(&topic_path) })
    }

    /// One pull; nothing if no message came within [`PULL_WAIT`].
    async fn pull(&self) -> Result<Vec<gcloud_pubsub::subscriber::ReceivedMessage>, LoadError> {
        match tokio::time::timeout(PULL_WAIT, self.subscription.pull(10, no_retry())).await {
            Err(_) => Ok(Vec::new()),
            Ok(Ok(m)) => Ok(m),
            Ok(Err(s)) if s.code() == Code::NotFound => Err(LoadError::NotFound { what: format!("Pub/Sub subscription {}", self.name) }),
            Ok(Err(s)) => Err(err("pull", &self.name, &s)),
        }
    }

    /// Waits for messages; returns (ack id, work) for `_SUCCESS` finalizes and work
    /// items, and acknowledges every other message at once.
    pub async fn next_work(&self) -> Result<Vec<(String, Work)>, LoadError> {
        let mut failures = 0u32;
        loop {
            let received = match self.pull().await {
                Ok(r) => {
                    failures = 0;
                    r
                }
                Err(e) if e.is_retryable() && failures < MAX_PULL_FAILURES => {
                    failures += 1;
                    let wait = pull_backoff(failures);
                    tracing::warn!(subscription = %self.name, error = %e, attempt = failures, retry_in_ms = wait.as_millis() as u64, "pull failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            let mut ignore = Vec::new();
            for m in received {
                if let Some(work) = Work::of(&m.message) {
                    out.push((m.ack_id, work));
                    continue;
                }
                match ObjectEvent::from_message(&m.message) {
                    Some(o) => {
                        tracing::debug!(object = %o.url(), event = %o.event, "not a _SUCCESS finalize: acknowledged");
                        ignore.push(m.ack_id);
                    }
                    None => {
                        tracing::debug!(message_id = %m.message.message_id, "not a GCS object notification: acknowledged");
                        ignore.push(m.ack_id);
                    }
                }
            }
            if !ignore.is_empty() {
                self.ack_all(&ignore).await?;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs `work` while leasing `ack_id`: its deadline is set to `lease` first (not
    /// the subscription's longer one), then renewed every third of it. A failed
    /// renewal is logged and counted and the work goes on: at worst the marker is
    /// redelivered and loaded again, which the loader's progress records make cheap.
    pub async fn hold<F: Future>(&self, ack_id: &str, lease: Duration, work: F) -> F::Output {
        let ids = [ack_id.to_string()];
        self.renew(&ids, lease).await;
        let every = lease / 3;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => self.renew(&ids, lease).await,
            }
        }
    }

    async fn renew(&self, ack_ids: &[String], lease: Duration) {
        let outcome = self.set_deadline(ack_ids, lease).await;
        crate::events::lease_renewed(&self.name, outcome.as_ref().err().map(|e| e.to_string()).as_deref());
    }

    /// Hands `ack_ids` back to the subscription for immediate redelivery.
    pub async fn release(&self, ack_ids: &[String]) -> Result<(), LoadError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        self.set_deadline(ack_ids, Duration::ZERO).await
    }

    /// Sets the ack deadline of `ack_ids` to `deadline` from now (ModifyAckDeadline).
    async fn set_deadline(&self, ack_ids: &[String], deadline: Duration) -> Result<(), LoadError> {
        let req =
            ModifyAckDeadlineRequest { subscription: self.name.clone(), ack_ids: ack_ids.to_vec(), ack_deadline_seconds: deadline.as_secs().min(600) as i32 };
        self.subscription.get_client().modify_ack_deadline(req, no_retry()).await.map(drop).map_err(|s| err("modify ack deadline", &self.name, &s))
    }

    /// Publishes one work item per file of `marker` to the watched topic (in requests of
    /// at most 500 messages); returns how many.
    pub async fn publish_files(&self, marker: &str, files: &[String]) -> Result<usize, LoadError> {
        let publisher = self.topic.new_publisher(None);
        let topic = self.topic.fully_qualified_name().to_string();
        for chunk in files.chunks(500) {
            let messages = chunk
                .iter()
                .map(|file| PubsubMessage {
                    data: serde_json::to_vec(&FileWork { marker: marker.into(), file: file.clone() }).unwrap_or_default(),
                    attributes: HashMap::from([(WORK_ATTRIBUTE.to_string(), WORK_FILE.to_string())]),
                    ..Default::default()
                })
                .collect();
            publisher.publish_immediately(messages, None).await.map_err(|s| err("publish", &topic, &s))?;
        }
        Ok(files.len())
    }

    pub async fn ack(&self, ack_id: &str) -> Result<(), LoadError> {
        self.ack_all(&[ack_id.to_string()]).await
    }

    async fn ack_all(&self, ack_ids: &[String]) -> Result<(), LoadError> {
        let req = AcknowledgeRequest { subscription: self.name.clone(), ack_ids: ack_ids.to_vec() };
        self.subscription.get_client().acknowledge(req, no_retry()).await.map(drop).map_err(|s| err("acknowledge", &self.name, &s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_success_finalizes_are_markers() {
        let m = json!({"attributes": {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "x/T/2026-01-01T00-00-00Z/_SUCCESS"}});
        assert_eq!(marker_url(&m).as_deref(), Some("gs://b/x/T/2026-01-01T00-00-00Z/_SUCCESS"));
        let m = json!({"attributes": {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "x/T/ts/data/seg-00000-part-00000.json"}});
        assert_eq!(marker_url(&m), None);
        let data = base64::engine::general_purpose::STANDARD.encode(r#"{"bucket":"b","name":"a/_SUCCESS"}"#);
        assert_eq!(marker_url(&json!({"data": data})).as_deref(), Some("gs://b/a/_SUCCESS"));
        let m = json!({"attributes": {"eventType": "OBJECT_DELETE", "bucketId": "b", "objectId": "a/_SUCCESS"}});
        assert_eq!(marker_url(&m), None);
        for name in ["a/_SUCCESS.tmp", "a/x_SUCCESS", "a/_SUCCESS/b", "a/_LOADED"] {
            let m = json!({"attributes": {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": name}});
            assert_eq!(marker_url(&m), None, "{name}");
        }
    }

    #[test]
    fn object_events_name_what_was_ignored() {
        let m = json!({"attributes": {"eventType": "OBJECT_DELETE", "bucketId": "b", "objectId": "a/_SUCCESS"}});
        let o = ObjectEvent::of(&m).expect("names an object");
        assert_eq!((o.url().as_str(), o.event.as_str(), o.is_marker_finalize()), ("gs://b/a/_SUCCESS", "OBJECT_DELETE", false));
        assert_eq!(ObjectEvent::of(&json!({"attributes": {}, "data": "bm90IGpzb24="})), None);
        assert_eq!(ObjectEvent::of(&json!({})), None);
    }

    #[test]
    fn pull_backoff_doubles_and_is_capped() {
        assert_eq!(pull_backoff(1), Duration::from_millis(500));
        assert_eq!(pull_backoff(2), Duration::from_secs(1));
        assert_eq!(pull_backoff(7), Duration::from_secs(30));
        assert_eq!(pull_backoff(40), Duration::from_secs(30));
        let total: Duration = (1..=MAX_PULL_FAILURES).map(pull_backoff).sum();
        assert!(total > Duration::from_secs(60) && total < Duration::from_secs(300), "{total:?}");
    }
}
