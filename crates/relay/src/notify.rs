//! Posts [`Notification`]s to a webhook (`--notify-url`). Best effort: a failed post is
//! logged and counted, never fails the work it reports on. The CLI's loader uses it too.

use crossdock_core::notify::Notification;
use std::time::Duration;

/// Posts `n` as JSON to `url` (10 s timeout).
pub async fn post(url: &str, n: &Notification) {
    let result = reqwest::Client::new().post(url).timeout(Duration::from_secs(10)).json(n).send().await;
    let outcome = match result {
        Ok(r) if r.status().is_success() => "ok",
        Ok(r) => {
            tracing::warn!(url, status = %r.status(), event = ?n.event, "notification rejected by the webhook");
            "rejected"
        }
        Err(e) => {
            tracing::warn!(url, error = %e, event = ?n.event, "notification could not be posted");
            "failed"
        }
    };
    metrics::counter!("crossdock_notifications_total", "outcome" => outcome).increment(1);
}
