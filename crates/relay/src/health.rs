//! Liveness behind `/healthz`. A relay is alive while its work advances, whatever the
//! work is: a receive returning, a visibility extension accepted, bytes of a copy
//! moving. Stamping only on receives would call a relay whose every permit is held by
//! a long copy "stuck" (the receive loop waits for a permit and does not poll), and a
//! liveness probe would then kill it mid-copy, again and again.
//!
//! The clock is tokio's, so tests drive it with paused time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Shared liveness: the receive loop, heartbeats and copies stamp it; `/healthz` reads
/// it with [`Health::check`].
#[derive(Debug, Clone)]
pub struct Health(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Milliseconds from `origin` to the last progress.
    last_progress_ms: AtomicU64,
    draining: AtomicBool,
    stale_after: Duration,
}

/// What `/healthz` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Something advanced within the window; `since` is the time since it did.
    Ok { since: Duration },
    /// Draining: no receives on purpose, bounded by the drain deadline.
    Draining,
    /// Nothing advanced for `since`, longer than the window.
    Stale { since: Duration },
}

impl HealthStatus {
    pub fn is_healthy(&self) -> bool {
        !matches!(self, HealthStatus::Stale { .. })
    }
}

impl Health {
    /// Liveness that turns stale after `stale_after` without progress. Creation counts
    /// as progress, so a relay that never manages a first receive still turns stale.
    pub fn new(stale_after: Duration) -> Self {
        Health(Arc::new(Inner { origin: Instant::now(), last_progress_ms: AtomicU64::new(0), draining: AtomicBool::new(false), stale_after }))
    }

    /// The window used by [`crate::RelaySettings::build`]: a long poll lasts ≤ 20 s and a
    /// heartbeat comes every visibility/3, so a minute plus the visibility timeout
    /// without any of them (or a byte of a copy) means the loop is wedged.
    pub fn window_for(visibility_secs: u32) -> Duration {
        Duration::from_secs(60 + u64::from(visibility_secs))
    }

    /// Records that the relay's work advanced now.
    pub fn progressed(&self) {
        let ms = Instant::now().saturating_duration_since(self.0.origin).as_millis() as u64;
        self.0.last_progress_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub(crate) fn set_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Time since the last progress (or since creation).
    pub fn since_progress(&self) -> Duration {
        let last = self.0.origin + Duration::from_millis(self.0.last_progress_ms.load(Ordering::Relaxed));
        Instant::now().saturating_duration_since(last)
    }

    pub fn check(&self) -> HealthStatus {
        if self.draining() {
            return HealthStatus::Draining;
        }
        let since = self.since_progress();
        if since > self.0.stale_after {
            HealthStatus::Stale { since }
        } else {
            HealthStatus::Ok { since }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stale_only_after_the_window_without_progress() {
        let h = Health::new(Duration::from_secs(90));
        assert!(h.check().is_healthy(), "creation counts as progress");
        tokio::time::advance(Duration::from_secs(80)).await;
        h.progressed();
        tokio::time::advance(Duration::from_secs(80)).await;
        assert_eq!(h.check(), HealthStatus::Ok { since: Duration::from_secs(80) });
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(h.check(), HealthStatus::Stale { since: Duration::from_secs(91) });
        h.progressed();
        assert!(h.check().is_healthy(), "progress makes it healthy again");
        tokio::time::advance(Duration::from_secs(600)).await;
        h.set_draining();
        assert_eq!(h.check(), HealthStatus::Draining);
    }
}
