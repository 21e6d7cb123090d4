//! A per-process budget — upload bytes per second (`relay --rate-limit-kib`), rows per
//! second (`load --max-rows-per-sec`) — shared by every task of the process, so a pod
//! keeps to its share of a NIC or of a production target however many files it has in
//! flight.
//!
//! Written here rather than taken from `governor`: its `until_n_ready` refuses a
//! request larger than the burst, and the relay's requests are whole upload chunks (up
//! to 64 MiB); a burst that large would let a process send far over its budget per
//! second. A pacer that starts each request once the budget of the ones before it is
//! spent needs no burst at all.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Spaces out units of work (bytes, rows) to `per_sec` on average.
#[derive(Debug)]
pub struct Pacer {
    per_sec: f64,
    /// When the budget of every request so far is spent.
    free_at: Mutex<Option<Instant>>,
}

impl Pacer {
    /// `None` for a budget of zero or less (no limit).
    pub fn new(per_sec: f64) -> Option<Pacer> {
        (per_sec > 0.0 && per_sec.is_finite()).then(|| Pacer { per_sec, free_at: Mutex::new(None) })
    }

    /// Reserves `units` and returns when their request may start: once the units
    /// reserved before are paid for. The request's own units are paid after it starts,
    /// so the first request of an idle process starts at once.
    pub fn reserve(&self, units: u64) -> Instant {
        let now = Instant::now();
        let mut free_at = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        let start = free_at.map_or(now, |t| t.max(now));
        *free_at = Some(start + Duration::from_secs_f64(units as f64 / self.per_sec));
        start
    }

    /// Waits for [`Pacer::reserve`]`(units)`.
    pub async fn take(&self, units: u64) {
        tokio::time::sleep_until(self.reserve(units)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_start_when_the_budget_of_the_ones_before_is_spent() {
        let p = std::sync::Arc::new(Pacer::new(100.0).expect("a budget"));
        let t0 = Instant::now();
        // Four tasks of 100 units each, at once: they start 0, 1, 2, 3 s in, whatever
        // their order, and a request larger than a second's budget is still taken.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move {
                    p.take(100).await;
                    Instant::now() - t0
                })
            })
            .collect();
        let mut started = Vec::new();
        for t in tasks {
            started.push(t.await.expect("task").as_secs());
        }
        started.sort();
        assert_eq!(started, [0, 1, 2, 3]);
        assert_eq!(p.reserve(1_000) - t0, Duration::from_secs(4), "a big request waits for the earlier ones");
        // An idle spell is not saved up: after it, requests are spaced again.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let now = Instant::now();
        assert_eq!(p.reserve(50), now);
        assert_eq!(p.reserve(50) - now, Duration::from_millis(500));
    }

    #[test]
    fn no_budget_is_no_limit() {
        assert!(Pacer::new(0.0).is_none());
        assert!(Pacer::new(-1.0).is_none());
        assert!(Pacer::new(f64::INFINITY).is_none());
    }
}
