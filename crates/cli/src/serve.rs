//! The `/metrics` (Prometheus) and `/healthz` server of a command: one recorder per
//! process, every metric of the phase described, histograms with the phase's explicit
//! buckets (aggregatable across a fleet, unlike summaries).

use anyhow::Context as _;
use axum::{http::StatusCode, routing::get, Router};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// Counters a command watches itself (a progress bar fed by the phase's own
/// counters, so it shows what `/metrics` shows), beside or without `/metrics`.
pub trait Tap: Send + Sync + 'static {
    /// A counter of the tap's own for `key`, incremented along with the exported one;
    /// `None` for a key it does not watch.
    fn counter(&self, key: &Key) -> Option<Counter>;
}

static TAP: OnceLock<Arc<dyn Tap>> = OnceLock::new();

/// Makes `tap` see the process's counters. Call before [`serve`]; without a server,
/// [`install_tap`] then installs a recorder for it alone.
pub fn watch(tap: Arc<dyn Tap>) {
    let _ = TAP.set(tap);
}

/// Installs a recorder feeding only the tap (no `/metrics` server).
pub fn install_tap() -> anyhow::Result<()> {
    install(None)
}

/// The process's one recorder: Prometheus's when serving, and the tap when one watches.
fn install(prometheus: Option<PrometheusRecorder>) -> anyhow::Result<()> {
    metrics::set_global_recorder(Tee { prometheus, tap: TAP.get().cloned() }).map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))
}

struct Tee {
    prometheus: Option<PrometheusRecorder>,
    tap: Option<Arc<dyn Tap>>,
}

/// A counter incremented in two places.
struct Both(Counter, Counter);

impl metrics::CounterFn for Both {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.increment(value);
    }
    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.absolute(value);
    }
}

impl Recorder for Tee {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(p) = &self.prometheus {
            p.describe_counter(key, unit, description);
        }
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(p) = &self.prometheus {
            p.describe_gauge(key, unit, description);
        }
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if let Some(p) = &self.prometheus {
            p.describe_histogram(key, unit, description);
        }
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let exported = self.prometheus.as_ref().map_or_else(Counter::noop, |p| p.register_counter(key, metadata));
        match self.tap.as_ref().and_then(|t| t.counter(key)) {
            Some(watched) => Counter::from_arc(Arc::new(Both(exported, watched))),
            None => exported,
        }
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.prometheus.as_ref().map_or_else(Gauge::noop, |p| p.register_gauge(key, metadata))
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.prometheus.as_ref().map_or_else(Histogram::noop, |p| p.register_histogram(key, metadata))
    }
}

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
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    install(Some(recorder))?;
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
