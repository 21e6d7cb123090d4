//! `--watch`: GCS finalize notifications on Pub/Sub, filtered to `_SUCCESS` objects.
//! Uses Pub/Sub's REST API against the emulator (`PUBSUB_EMULATOR_HOST`); messages are
//! acknowledged only after their load succeeds, so a failed load is redelivered.

use crate::error::LoadError;
use base64::Engine as _;
use serde_json::{json, Value};

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

/// The `gs://` URL of a finalize message if it is a `_SUCCESS` marker.
pub fn marker_url(message: &Value) -> Option<String> {
    let attrs = &message["attributes"];
    let event = attrs["eventType"].as_str().unwrap_or("OBJECT_FINALIZE");
    if event != "OBJECT_FINALIZE" {
        return None;
    }
    let (mut bucket, mut name) = (attrs["bucketId"].as_str().map(str::to_string), attrs["objectId"].as_str().map(str::to_string));
    if bucket.is_none() || name.is_none() {
        let data = base64::engine::general_purpose::STANDARD.decode(message["data"].as_str().unwrap_or_default()).ok()?;
        let obj: Value = serde_json::from_slice(&data).ok()?;
        bucket = obj["bucket"].as_str().map(str::to_string);
        name = obj["name"].as_str().map(str::to_string);
    }
    let (bucket, name) = (bucket?, name?);
    (name == "_SUCCESS" || name.ends_with("/_SUCCESS")).then(|| format!("gs://{bucket}/{name}"))
}

impl Watcher {
    /// Creates the subscription on `topic` if absent.
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
        Ok(w)
    }

    /// Waits for messages; returns (ack id, marker URL) for `_SUCCESS` finalizes and
    /// acknowledges every other message at once.
    pub async fn next_markers(&self) -> Result<Vec<(String, String)>, LoadError> {
        loop {
            let resp: Value = self
                .http
                .post(format!("{}/{}:pull", self.base, self.subscription))
                .json(&json!({ "maxMessages": 10 }))
                .send()
                .await
                .map_err(|e| err("pull", &self.subscription, e.to_string()))?
                .json()
                .await
                .map_err(|e| err("pull", &self.subscription, e.to_string()))?;
            let mut out = Vec::new();
            let mut ignore = Vec::new();
            for m in resp["receivedMessages"].as_array().cloned().unwrap_or_default() {
                let ack = m["ackId"].as_str().unwrap_or_default().to_string();
                match marker_url(&m["message"]) {
                    Some(url) => out.push((ack, url)),
                    None => ignore.push(ack),
                }
            }
            for a in ignore {
                self.ack(&a).await?;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    pub async fn ack(&self, ack_id: &str) -> Result<(), LoadError> {
        self.http
            .post(format!("{}/{}:acknowledge", self.base, self.subscription))
            .json(&json!({ "ackIds": [ack_id] }))
            .send()
            .await
            .map_err(|e| err("ack", &self.subscription, e.to_string()))?;
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
    }
}
