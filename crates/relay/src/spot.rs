//! Spot interruption notices: polls the EC2 instance metadata service for
//! `/latest/meta-data/spot/instance-action` (404 until AWS schedules the
//! interruption, then a JSON body about 2 minutes ahead). IMDSv2 is used when a
//! token can be had; the endpoint is configurable so tests can serve a notice.

use std::time::Duration;
use tracing::{debug, info};

/// Resolves with the notice body once the instance is scheduled for interruption.
/// Never resolves while the endpoint answers 404 or is unreachable.
pub async fn spot_notice(endpoint: String, interval: Duration) -> String {
    let base = endpoint.trim_end_matches('/').to_string();
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(2)).build() {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "no HTTP client for IMDS; spot notices are not watched");
            return std::future::pending().await;
        }
    };
    let mut warned = false;
    loop {
        let token = http
            .put(format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        let token = match token {
            Some(r) => r.text().await.ok(),
            None => None,
        };
        let mut req = http.get(format!("{base}/latest/meta-data/spot/instance-action"));
        if let Some(t) = &token {
            req = req.header("X-aws-ec2-metadata-token", t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                let body = r.text().await.unwrap_or_default();
                info!(notice = body, "spot interruption notice received");
                return body;
            }
            Ok(_) => {}
            Err(e) => {
                if !warned {
                    debug!(endpoint = base, error = %e, "instance metadata not reachable (not on EC2?); will keep polling");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}
