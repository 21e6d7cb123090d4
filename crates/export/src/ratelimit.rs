//! Read-capacity rate limiting: a token bucket in RCU/s shared by every segment worker,
//! fed by the `ConsumedCapacity` DynamoDB reports, and the page-size (Limit) controller.
//!
//! A worker reserves its page's *estimated* cost before each Scan (waiting until the
//! bucket holds it), then settles the difference with the *actual* consumed capacity.
//! The bucket starts empty and holds at most `burst` RCU, so consumption over any window
//! of T seconds stays within `rate × T + burst` plus estimation error, which the page
//! controller keeps small by sizing pages to a fraction of the per-worker budget.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket of read capacity units.
#[derive(Debug)]
pub struct RateLimiter {
    /// RCU per second; `None` = unlimited.
    rate: Option<f64>,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
    started: Instant,
    /// Consumed RCU per whole second since the start (index = second).
    per_second: Vec<f64>,
    consumed: f64,
}

impl RateLimiter {
    /// A bucket refilled at `rate` RCU/s (`None`: unlimited) holding at most `burst` RCU.
    pub fn new(rate: Option<f64>, burst: f64) -> Self {
        let now = Instant::now();
        RateLimiter {
            rate: rate.filter(|r| r.is_finite() && *r > 0.0),
            burst: burst.max(0.5),
            state: Mutex::new(State { tokens: 0.0, last: now, started: now, per_second: Vec::new(), consumed: 0.0 }),
        }
    }

    /// The bucket for a budget: refilled at 98 % of it (headroom for the burst and for
    /// estimates settled late, so no 5-s window exceeds the budget), holding a fifth of a
    /// second's worth (at least one eventual 4 KB read).
    pub fn for_budget(budget: Option<f64>) -> Self {
        let rate = budget.map(|b| b * 0.98);
        Self::new(rate, rate.map_or(1.0, |r| (r * 0.2).max(0.5)))
    }

    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another worker panicked; the numbers are still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long to wait before `estimate` RCU can be taken; takes them when the answer is
    /// zero.
    fn try_take(&self, estimate: f64) -> Duration {
        let Some(rate) = self.rate else { return Duration::ZERO };
        let mut s = self.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(s.last).as_secs_f64();
        s.tokens = (s.tokens + elapsed * rate).min(self.burst);
        s.last = now;
        let need = estimate.min(self.burst);
        if s.tokens >= need {
            s.tokens -= estimate;
            Duration::ZERO
        } else {
            Duration::from_secs_f64(((need - s.tokens) / rate).clamp(0.001, 5.0))
        }
    }

    /// Waits until `estimate` RCU are available and reserves them.
    pub async fn acquire(&self, estimate: f64) {
        loop {
            let wait = self.try_take(estimate);
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Settles a reservation of `estimate` with the `actual` consumed capacity, and
    /// records the consumption.
    pub fn settle(&self, estimate: f64, actual: f64) {
        let mut s = self.lock();
        if self.rate.is_some() {
            s.tokens += estimate - actual;
        }
        s.consumed += actual;
        let sec = s.started.elapsed().as_secs() as usize;
        if s.per_second.len() <= sec {
            s.per_second.resize(sec + 1, 0.0);
        }
        s.per_second[sec] += actual;
    }

    /// Gives back a reservation that was not used (the request was not sent).
    pub fn release(&self, estimate: f64) {
        if self.rate.is_some() {
            self.lock().tokens += estimate;
        }
    }

    /// Total consumed RCU so far.
    pub fn consumed(&self) -> f64 {
        self.lock().consumed
    }

    /// Consumed RCU in each second since the start.
    pub fn per_second(&self) -> Vec<f64> {
        self.lock().per_second.clone()
    }
}

/// Picks each Scan page's `Limit` from the cost per item seen so far, so one page costs
/// about `target_rcu` (and a page's estimate is close to its actual cost).
#[derive(Debug, Clone)]
pub struct PageSizer {
    target_rcu: Option<f64>,
    rcu_per_item: Option<f64>,
}

/// Items in the first page, before anything is known about item sizes.
const FIRST_PAGE_ITEMS: i32 = 16;
/// An eventually consistent 1 MB page costs 128 RCU; strongly consistent 256.
const MAX_PAGE_RCU: f64 = 128.0;

impl PageSizer {
    /// `target_rcu`: cost wanted per page (`None`: DynamoDB's 1 MB pages, no Limit).
    pub fn new(target_rcu: Option<f64>) -> Self {
        PageSizer { target_rcu: target_rcu.map(|t| t.clamp(0.5, MAX_PAGE_RCU)), rcu_per_item: None }
    }

    /// Per-worker page target for a budget: a quarter of a worker's share of one second,
    /// so reservations stay small against the bucket.
    pub fn for_budget(budget: Option<f64>, workers: u32) -> Self {
        Self::new(budget.map(|b| b / f64::from(workers.max(1)) / 4.0))
    }

    /// `(Limit, estimated RCU)` for the next page.
    pub fn next(&self) -> (Option<i32>, f64) {
        let Some(target) = self.target_rcu else {
            return (None, self.rcu_per_item.map_or(MAX_PAGE_RCU, |r| (r * 1000.0).min(MAX_PAGE_RCU)));
        };
        match self.rcu_per_item {
            None => (Some(FIRST_PAGE_ITEMS), target.min(FIRST_PAGE_ITEMS as f64 * 0.5)),
            Some(per) => {
                let limit = (target / per.max(1e-6)).floor().clamp(1.0, 100_000.0) as i32;
                (Some(limit), f64::from(limit) * per)
            }
        }
    }

    /// Records a page's item count and consumed capacity.
    pub fn observe(&mut self, items: usize, consumed: f64) {
        if items == 0 || consumed <= 0.0 {
            return;
        }
        let per = consumed / items as f64;
        self.rcu_per_item = Some(match self.rcu_per_item {
            None => per,
            Some(old) => old * 0.7 + per * 0.3,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_paces_consumption_to_the_rate() {
        let rl = RateLimiter::for_budget(Some(100.0));
        let start = tokio::time::Instant::now();
        // 50 pages of 10 RCU = 500 RCU at 100 RCU/s: about 5 s.
        for _ in 0..50 {
            rl.acquire(10.0).await;
            rl.settle(10.0, 10.0);
        }
        let secs = start.elapsed().as_secs_f64();
        assert!((4.7..=5.3).contains(&secs), "{secs}");
        assert_eq!(rl.consumed(), 500.0);
    }

    #[tokio::test(start_paused = true)]
    async fn under_estimates_are_paid_back() {
        let rl = RateLimiter::for_budget(Some(100.0));
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            rl.acquire(5.0).await;
            rl.settle(5.0, 50.0); // actual is 10x the estimate
        }
        let secs = start.elapsed().as_secs_f64();
        assert!(secs >= 4.4, "debt must slow the next pages: {secs}");
    }

    #[test]
    fn page_sizer_targets_cost_per_page() {
        let mut p = PageSizer::for_budget(Some(400.0), 4); // 25 RCU per page
        assert_eq!(p.next().0, Some(FIRST_PAGE_ITEMS));
        p.observe(16, 2.0); // 0.125 RCU per item
        let (limit, est) = p.next();
        assert_eq!(limit, Some(200));
        assert!((est - 25.0).abs() < 1e-9);
        assert_eq!(PageSizer::for_budget(None, 4).next().0, None);
    }
}
