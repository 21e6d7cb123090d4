//! Posts [`Notification`]s to a webhook (`--notify-url` of the relay and the loader).
//! Best effort: a failed post is logged and counted, never fails the work it reports on.
//! The payload is `crossdock_core::notify`; sending it is the binary's business, so no
//! phase's library depends on another for it.
//!
//! A webhook URL is a bearer secret (Slack's carries its token in the path), so it is
//! only ever logged through [`Redacted`], and HTTP errors are logged without the URL
//! they would otherwise repeat.

use crossdock_core::notify::Notification;
use crossdock_core::redact::{self, Redacted};
use std::time::Duration;

/// The relay's marker events, posted to a webhook.
pub struct Webhook(pub String);

impl crossdock_relay::Notifier for Webhook {
    fn notify(&self, n: Notification) -> futures::future::BoxFuture<'static, ()> {
        let url = self.0.clone();
        Box::pin(async move { post(&url, &n).await })
    }
}

/// Posts `n` as JSON to `url` (10 s timeout).
pub async fn post(url: &str, n: &Notification) {
    let result = reqwest::Client::new().post(url).timeout(Duration::from_secs(10)).json(n).send().await;
    let outcome = match result {
        Ok(r) if r.status().is_success() => "ok",
        Ok(r) => {
            tracing::warn!(url = %Redacted(url), status = %r.status(), event = ?n.event, "notification rejected by the webhook");
            "rejected"
        }
        Err(e) => {
            tracing::warn!(url = %Redacted(url), error = %error_text(e, url), event = ?n.event, "notification could not be posted");
            "failed"
        }
    };
    metrics::counter!("crossdock_notifications_total", "outcome" => outcome).increment(1);
}

/// The error's message and sources, with the URL taken out: reqwest puts it in its
/// own message, and a source (an invalid-URL error, a proxy error) may quote it again.
fn error_text(e: reqwest::Error, url: &str) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    redact::scrub(&text, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_do_not_repeat_the_url() {
        // Nothing listens on port 1: the connection is refused at once.
        let url = "http://127.0.0.1:1/services/T000/B000/SECRETTOKEN";
        let e = reqwest::Client::new().post(url).send().await.expect_err("port 1 refuses");
        assert!(e.to_string().contains("SECRETTOKEN"), "reqwest's own message names the URL: {e}");
        let text = error_text(e, url);
        assert!(!text.contains("SECRETTOKEN") && !text.contains("services"), "{text}");
    }
}
