//! The `/metrics` (Prometheus) and `/healthz` server of a command: one recorder per
//! process, every metric of the phase described, histograms with the phase's explicit
//! buckets (aggregatable across a fleet, unlike summaries).

use anyhow::Context as _;
use axum::{http::StatusCode, routing::get, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;

/// A phase's metric descriptions and histogram buckets.
pub struct Phase {
    pub metrics: &'static [(&'static str, &'static str)],
    pub buckets: &'static [(&'static str, &'static [f64])],
}

/// `--metrics-addr`: `off`, or an address to parse.
pub fn addr(flag: &str) -> anyhow::Result<Option<SocketAddr>> {
    if flag == "off" {
        return Ok(None);
    }
    flag.parse().map(Some).map_err(|e| crate::exit::fail(crate::exit::Code::Usage, format!("--metrics-addr {flag}: {e}")))
}

/// Installs the Prometheus recorder and serves `/metrics` and `/healthz` (answered by
/// `health`: status and body) on `addr`, in the background.
pub async fn serve(addr: SocketAddr, phase: Phase, health: impl Fn() -> (StatusCode, String) + Clone + Send + Sync + 'static) -> anyhow::Result<()> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in phase.buckets {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets).context("histogram buckets")?;
    }
    let handle = builder.install_recorder().context("installing the metrics recorder")?;
    // Every phase retries its calls under the one policy, so every phase has its counter.
    for (name, help) in phase.metrics.iter().chain(crossdock_core::retry::METRICS) {
        metrics::describe_counter!(*name, *help);
    }
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the metrics server to {addr}"))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics and /healthz");
    let app = Router::new().route("/metrics", get(move || std::future::ready(handle.render()))).route(
        "/healthz",
        get(move || {
            let h = health.clone();
            async move { h() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

/// The health of a command that has no liveness of its own to report.
pub fn alive() -> (StatusCode, String) {
    (StatusCode::OK, "ok\n".into())
}
