//! `--watch`: GCS finalize notifications on Pub/Sub, filtered to `_SUCCESS` objects.
//! Uses Pub/Sub's REST API against the emulator (`PUBSUB_EMULATOR_HOST`); messages are
//! acknowledged only after their load succeeds, so a failed load is redelivered.
//!
//! A marker being loaded is leased, not held for the subscription's whole ack deadline:
//! [`Watcher::hold`] renews a short lease ([`DEFAULT_LEASE_SECS`]) while the load
//! runs, so a load of any length is never redelivered to another watcher, and a
//! watcher that dies hands its marker on within a lease. Markers a watcher will not start at once are handed
//! back ([`Watcher::release`]) for an idle watcher to take.
//!
//! Every other notification (data parts, `_progress/…`, `_LOADED`, deletes) is
//! acknowledged at once and logged at debug level. Transient pull failures (connection
//! errors, 5xx, 429) are retried with a backoff; a subscription that disappears is an
//! error.

use crate::error::LoadError;
use base64::Engine as _;
use serde_json::{json, Value};
use std::future::Future;
use std::time::Duration;

/// How long, by default, a pulled marker stays this watcher's without word from it
/// (`--lease-secs`); renewed every third of it while its load runs.
pub const DEFAULT_LEASE_SECS: u64 = 60;

/// Consecutive failed pulls tolerated (with backoff, about 2½ minutes in all) before
/// [`Watcher::next_markers`] gives up.
const MAX_PULL_FAILURES: u32 = 10;

/// A pull subscription on the bucket-notification topic.
#[derive(Debug, Clone)]
pub struct Watcher {
    http: reqwest::Client,
    base: String,
    subscription: String,
}

fn err(op: &'static str, what: &str, message: String) -> LoadError {
    LoadError::Gcs { op, bucket: "pubsub".into(), key: what.into(), message, retryable: true }
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
    pub fn of(message: &Value) -> Option<ObjectEvent> {
        let attrs = &message["attributes"];
        let event = attrs["eventType"].as_str().unwrap_or("OBJECT_FINALIZE").to_string();
        let (mut bucket, mut name) = (attrs["bucketId"].as_str().map(str::to_string), attrs["objectId"].as_str().map(str::to_string));
        if bucket.is_none() || name.is_none() {
            let data = base64::engine::general_purpose::STANDARD.decode(message["data"].as_str().unwrap_or_default()).ok()?;
            let obj: Value = serde_json::from_slice(&data).ok()?;
            bucket = obj["bucket"].as_str().map(str::to_string);
            name = obj["name"].as_str().map(str::to_string);
        }
        Some(ObjectEvent { event, bucket: bucket?, name: name? })
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

/// The `gs://` URL of a finalize message if it is a `_SUCCESS` marker.
pub fn marker_url(message: &Value) -> Option<String> {
    ObjectEvent::of(message).filter(ObjectEvent::is_marker_finalize).map(|o| o.url())
}

/// Backoff before pull retry `n` (1-based): 0.5 s doubling, at most 30 s.
fn pull_backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(6))).min(Duration::from_secs(30))
}

impl Watcher {
    /// Creates the subscription on `topic` if absent. Once this returns, every
    /// notification published to the topic is kept for this subscription.
    pub async fn new(project: &str, topic: &str, subscription: &str) -> Result<Watcher, LoadError> {
        let host = std::env::var("PUBSUB_EMULATOR_HOST")
            .map_err(|_| LoadError::Config("--watch uses the Pub/Sub REST API of the emulator: set PUBSUB_EMULATOR_HOST".into()))?;
        let w = Watcher {
            http: reqwest::Client::new(),
            base: format!("http://{host}/v1"),
            subscription: format!("projects/{project}/subscriptions/{subscription}"),
        };
        let resp = w
            .http
            .put(format!("{}/{}", w.base, w.subscription))
            .json(&json!({ "topic": format!("projects/{project}/topics/{topic}"), "ackDeadlineSeconds": 600 }))
            .send()
            .await
            .map_err(|e| err("subscribe", subscription, e.to_string()))?;
        let status = resp.status();
        if !status.is_success() && status.as_u16() != 409 {
            let body = resp.text().await.unwrap_or_default();
            return Err(if status.as_u16() == 404 {
                LoadError::NotFound { what: format!("Pub/Sub topic projects/{project}/topics/{topic}") }
            } else {
                err("subscribe", subscription, format!("{status}: {body}"))
            });
        }
        tracing::info!(subscription = %w.subscription, topic = %format!("projects/{project}/topics/{topic}"), created = status.is_success(), "watching for _SUCCESS finalizes");
        Ok(w)
    }

    /// One pull (the emulator holds it open until messages arrive or its own timeout).
    async fn pull(&self) -> Result<Vec<Value>, LoadError> {
        let resp = self
            .http
            .post(format!("{}/{}:pull", self.base, self.subscription))
            .json(&json!({ "maxMessages": 10 }))
            .send()
            .await
            .map_err(|e| err("pull", &self.subscription, e.to_string()))?;
        let status = resp.status();
        if status.as_u16() == 404 {
            return Err(LoadError::NotFound { what: format!("Pub/Sub subscription {}", self.subscription) });
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(LoadError::Gcs {
                op: "pull",
                bucket: "pubsub".into(),
                key: self.subscription.clone(),
                message: format!("{status}: {body}"),
                retryable: status.is_server_error() || status.as_u16() == 429,
            });
        }
        let body: Value = resp.json().await.map_err(|e| err("pull", &self.subscription, e.to_string()))?;
        Ok(body["receivedMessages"].as_array().cloned().unwrap_or_default())
    }

    /// Waits for messages; returns (ack id, marker URL) for `_SUCCESS` finalizes and
    /// acknowledges every other message at once.
    pub async fn next_markers(&self) -> Result<Vec<(String, String)>, LoadError> {
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
                    tracing::warn!(subscription = %self.subscription, error = %e, attempt = failures, retry_in_ms = wait.as_millis() as u64, "pull failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            let mut ignore = Vec::new();
            for m in received {
                let ack = m["ackId"].as_str().unwrap_or_default().to_string();
                match ObjectEvent::of(&m["message"]) {
                    Some(o) if o.is_marker_finalize() => out.push((ack, o.url())),
                    Some(o) => {
                        tracing::debug!(object = %o.url(), event = %o.event, "not a _SUCCESS finalize: acknowledged");
                        ignore.push(ack);
                    }
                    None => {
                        tracing::debug!(message_id = %m["message"]["messageId"], "not a GCS object notification: acknowledged");
                        ignore.push(ack);
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
        let outcome = match self.set_deadline(ack_ids, lease).await {
            Ok(()) => "ok",
            Err(e) => {
                tracing::warn!(subscription = %self.subscription, error = %e, "could not renew a marker's lease; another watcher may load it too");
                "error"
            }
        };
        metrics::counter!("crossdock_load_watch_lease_renewals_total", "outcome" => outcome).increment(1);
    }

    /// Hands `ack_ids` back to the subscription for immediate redelivery.
    pub async fn release(&self, ack_ids: &[String]) -> Result<(), LoadError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        self.set_deadline(ack_ids, Duration::ZERO).await
    }

    /// Sets the ack deadline of `ack_ids` to `deadline` from now.
    async fn set_deadline(&self, ack_ids: &[String], deadline: Duration) -> Result<(), LoadError> {
        self.call("modifyAckDeadline", json!({ "ackIds": ack_ids, "ackDeadlineSeconds": deadline.as_secs() })).await
    }

    pub async fn ack(&self, ack_id: &str) -> Result<(), LoadError> {
        self.ack_all(&[ack_id.to_string()]).await
    }

    async fn ack_all(&self, ack_ids: &[String]) -> Result<(), LoadError> {
        self.call("acknowledge", json!({ "ackIds": ack_ids })).await
    }

    /// POSTs `body` to the subscription's `:method`; any non-2xx status is an error.
    async fn call(&self, method: &'static str, body: Value) -> Result<(), LoadError> {
        let resp = self
            .http
            .post(format!("{}/{}:{method}", self.base, self.subscription))
            .json(&body)
            .send()
            .await
            .map_err(|e| err(method, &self.subscription, e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(err(method, &self.subscription, format!("{status}: {body}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
