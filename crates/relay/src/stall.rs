//! Stall detection for one copy. A copy whose S3 download or GCS upload stops moving
//! bytes (a connection that hangs without being reset) would otherwise wait forever,
//! while the message's visibility heartbeat keeps it hidden from every other relay.
//! [`watch`] abandons such a copy once nothing moved for the stall timeout; the copy
//! then fails with a retryable error and its message goes back to the queue.
//!
//! The clock is tokio's, so tests drive it with paused time.

use crate::health::Health;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// When one copy last moved bytes. Stamped by the read stage (bytes from S3) and the
/// upload stage (bytes handed to a GCS request, a request answered); each stamp is
/// also progress for the relay's liveness.
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Arc<Inner>,
    health: Option<Health>,
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Milliseconds from `origin` to the last progress (or to the end of a planned pause).
    last_ms: AtomicU64,
}

impl Progress {
    /// A copy starting now; stamps also go to `health`.
    pub fn new(health: Health) -> Self {
        Progress { inner: Arc::new(Inner { origin: Instant::now(), last_ms: AtomicU64::new(0) }), health: Some(health) }
    }

    /// A copy starting now, not tied to the relay's liveness (tests, tools).
    pub fn detached() -> Self {
        Progress { inner: Arc::new(Inner { origin: Instant::now(), last_ms: AtomicU64::new(0) }), health: None }
    }

    /// Bytes moved now.
    pub fn moved(&self) {
        self.stamp(Instant::now());
        if let Some(h) = &self.health {
            h.progressed();
        }
    }

    /// The copy waits on purpose until `until` (the upload rate limit): the quiet time
    /// before it is not a stall.
    pub fn quiet_until(&self, until: Instant) {
        self.stamp(until);
    }

    fn stamp(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.inner.origin).as_millis() as u64;
        self.inner.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.inner.origin + Duration::from_millis(self.inner.last_ms.load(Ordering::Relaxed))
    }

    /// Time since the last progress (zero during a planned pause).
    pub fn idle(&self) -> Duration {
        Instant::now().saturating_duration_since(self.last())
    }
}

/// A copy that moved no byte for `idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    pub idle: Duration,
}

/// Runs `fut` to its end, unless `progress` shows no movement for `timeout` first:
/// then `fut` is dropped (its requests with it) and [`Stalled`] returned. `None`
/// disables the watch.
pub async fn watch<F: Future>(progress: &Progress, timeout: Option<Duration>, fut: F) -> Result<F::Output, Stalled> {
    let Some(timeout) = timeout.filter(|t| !t.is_zero()) else { return Ok(fut.await) };
    let mut fut = std::pin::pin!(fut);
    loop {
        // Sleep until the moment the copy would have been quiet for `timeout`, then look
        // again: progress made meanwhile moves that moment on.
        let due = progress.last() + timeout;
        tokio::select! {
            biased;
            out = &mut fut => return Ok(out),
            _ = tokio::time::sleep_until(due) => {
                let idle = progress.idle();
                if idle >= timeout {
                    return Err(Stalled { idle });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(120));

    /// A copy that stamps progress every `every`, `times` times, then returns.
    async fn trickle(p: Progress, every: Duration, times: u32) -> u32 {
        for _ in 0..times {
            tokio::time::sleep(every).await;
            p.moved();
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_copy_that_keeps_moving_is_never_abandoned() {
        let p = Progress::detached();
        // Two hours, a few bytes every 119 s: never quiet for the whole timeout.
        let out = watch(&p, TIMEOUT, trickle(p.clone(), Duration::from_secs(119), 60)).await;
        assert_eq!(out, Ok(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_that_never_moves_is_abandoned_at_the_timeout() {
        let p = Progress::detached();
        let start = Instant::now();
        let out = watch(&p, TIMEOUT, std::future::pending::<()>()).await;
        assert_eq!(out, Err(Stalled { idle: Duration::from_secs(120) }));
        assert_eq!(start.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_that_stops_moving_is_abandoned_one_timeout_after_its_last_byte() {
        let p = Progress::detached();
        let start = Instant::now();
        let copy = {
            let p = p.clone();
            async move {
                trickle(p, Duration::from_secs(30), 10).await;
                // Then a connection that hangs without being reset.
                std::future::pending::<u32>().await
            }
        };
        let out = watch(&p, TIMEOUT, copy).await;
        assert_eq!(out, Err(Stalled { idle: Duration::from_secs(120) }));
        assert_eq!(start.elapsed(), Duration::from_secs(300 + 120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_planned_pause_is_not_a_stall() {
        let p = Progress::detached();
        let copy = {
            let p = p.clone();
            async move {
                // The rate limit holds the next request back for 10 minutes.
                let until = Instant::now() + Duration::from_secs(600);
                p.quiet_until(until);
                tokio::time::sleep_until(until).await;
                p.moved();
                "done"
            }
        };
        assert_eq!(watch(&p, TIMEOUT, copy).await, Ok("done"));
        // Quiet after the pause counts again.
        let out = watch(&p, TIMEOUT, std::future::pending::<&str>()).await;
        assert_eq!(out, Err(Stalled { idle: Duration::from_secs(120) }));
    }

    #[tokio::test(start_paused = true)]
    async fn no_timeout_or_zero_disables_the_watch() {
        for timeout in [None, Some(Duration::ZERO)] {
            let p = Progress::detached();
            let late = async {
                tokio::time::sleep(Duration::from_secs(86_400)).await;
                1
            };
            assert_eq!(watch(&p, timeout, late).await, Ok(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn progress_counts_for_liveness() {
        let health = Health::new(Duration::from_secs(90));
        let p = Progress::new(health.clone());
        tokio::time::advance(Duration::from_secs(80)).await;
        p.moved();
        tokio::time::advance(Duration::from_secs(80)).await;
        assert!(health.check().is_healthy(), "{:?}", health.check());
    }
}
