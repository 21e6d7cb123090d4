//! Webhook notifications (`--notify-url`): one JSON body per event, Slack-compatible —
//! `text` is what a Slack incoming webhook shows; the other fields are for machines.

use crate::layout::ExportId;
use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    MarkerWritten,
    LoadFinished,
    LoadFailed,
}

/// The body posted to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub text: String,
    pub event: NotifyEvent,
    /// `gs://bucket/batch/table/timestamp/_SUCCESS`
    pub marker: String,
    pub details: serde_json::Value,
}

impl Notification {
    pub fn marker_written(bucket: &str, export: &ExportId, files: u64, items: u64) -> Self {
        let marker = format!("gs://{bucket}/{}", export.marker_key());
        Notification {
            text: format!(":white_check_mark: crossdock: {export} relayed — {files} file(s), {items} item(s); marker {marker}"),
            event: NotifyEvent::MarkerWritten,
            marker,
            details: serde_json::json!({ "table": export.table, "batch": export.batch, "files": files, "items": items }),
        }
    }

    pub fn load_finished(marker: &str, target: &str, destination: &str, rows: u64, expected: u64, rejected: u64) -> Self {
        Notification {
            text: format!(
                ":white_check_mark: crossdock: loaded {marker} into {target} table {destination} — {rows} row(s) ({expected} expected, {rejected} rejected)"
            ),
            event: NotifyEvent::LoadFinished,
            marker: marker.into(),
            details: serde_json::json!({ "target": target, "destination": destination, "rows": rows, "expected": expected, "rejected": rejected }),
        }
    }

    pub fn load_failed(marker: &str, error: &str) -> Self {
        Notification {
            text: format!(":x: crossdock: load of {marker} failed: {error}"),
            event: NotifyEvent::LoadFailed,
            marker: marker.into(),
            details: serde_json::json!({ "error": error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Timestamp;

    #[test]
    fn bodies_carry_slack_text_and_machine_fields() {
        let export = ExportId::new("b1", "Orders", Timestamp::parse("2026-11-23T09-30-00Z").expect("ts")).expect("id");
        let n = serde_json::to_value(Notification::marker_written("dst", &export, 3, 120)).expect("json");
        assert_eq!(n["event"], "marker_written");
        assert_eq!(n["marker"], "gs://dst/b1/Orders/2026-11-23T09-30-00Z/_SUCCESS");
        assert!(n["text"].as_str().is_some_and(|t| t.contains("120 item(s)")), "{n}");
        let f = serde_json::to_value(Notification::load_failed("gs://x/_SUCCESS", "boom")).expect("json");
        assert_eq!((f["event"].as_str(), f["details"]["error"].as_str()), (Some("load_failed"), Some("boom")));
    }
}
