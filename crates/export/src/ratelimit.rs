//! Read-capacity rate limiting: a token bucket in RCU/s shared by every segment worker,
//! fed by the `ConsumedCapacity` DynamoDB reports, and the page-size (Limit) controller.
//!
//! A worker reserves its page's *estimated* cost before each Scan (waiting until the
//! bucket holds it), then settles the difference with the *actual* consumed capacity.
//! The bucket starts empty and holds at most `burst` RCU. DynamoDB consumes a page when
//! it serves it, which can be later than the reservation: a server that holds requests
//! and answers them together moves every page in flight into the same second. So what
//! DynamoDB consumes over any window of T seconds stays within
//! `rate × T + burst + workers × page` plus estimation error (one page in flight per
//! worker, reserved before the window). With the rate at [`RATE_SHARE`] of the budget,
//! a [`BURST_SECS`] burst and [`PAGES_PER_WORKER_SECOND`] pages, that is under the
//! budget for any window of 5 s or more.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Share of the budget the bucket refills at: 5 s at this rate, plus the burst, plus
/// the pages in flight, is 4.97 s of budget (see the module doc).
pub const RATE_SHARE: f64 = 0.95;
/// Seconds of budget the bucket holds.
pub const BURST_SECS: f64 = 0.1;
/// Pages per second each worker's share of the rate is cut into: the pages in flight,
/// one per worker, add up to `1 / PAGES_PER_WORKER_SECOND` s of the rate.
pub const PAGES_PER_WORKER_SECOND: f64 = 8.0;

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

    /// The bucket for a budget: refilled at [`RATE_SHARE`] of it, holding
    /// [`BURST_SECS`] of it (at least one eventual 4 KB read).
    pub fn for_budget(budget: Option<f64>) -> Self {
        let rate = budget.map(|b| b * RATE_SHARE);
        Self::new(rate, budget.map_or(1.0, |b| (b * BURST_SECS).max(0.5)))
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

    /// Per-worker page target for a rate: a worker's share of one second, cut into
    /// [`PAGES_PER_WORKER_SECOND`] pages, so reservations stay small against the bucket
    /// and the pages in flight stay small against the budget.
    pub fn for_budget(rate: Option<f64>, workers: u32) -> Self {
        Self::new(rate.map(|r| r / f64::from(workers.max(1)) / PAGES_PER_WORKER_SECOND))
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
        let mut p = PageSizer::for_budget(Some(800.0), 4); // 25 RCU per page
        assert_eq!(p.next().0, Some(FIRST_PAGE_ITEMS));
        p.observe(16, 2.0); // 0.125 RCU per item
        let (limit, est) = p.next();
        assert_eq!(limit, Some(200));
        assert!((est - 25.0).abs() < 1e-9);
        assert_eq!(PageSizer::for_budget(None, 4).next().0, None);
    }

    /// Eight workers against a server that answers at once for `fast`, then holds every
    /// request for `hold` and answers them all together, and again. Returns the average
    /// consumption it records (when it answers) and that of the busiest 5-s window, as
    /// shares of the budget.
    async fn stalling_server(fast: Duration, hold: Duration) -> (f64, f64) {
        const BUDGET: f64 = 750.0;
        const WORKERS: u32 = 8;
        let rl = std::sync::Arc::new(RateLimiter::for_budget(Some(BUDGET)));
        let (to_server, mut requests) = tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<()>>();
        let server = tokio::spawn(async move {
            loop {
                let phase = |d| Box::pin(tokio::time::sleep(d));
                let mut fast_phase = phase(fast);
                loop {
                    tokio::select! {
                        _ = &mut fast_phase => break,
                        r = requests.recv() => match r { Some(r) => { let _ = r.send(()); } None => return },
                    }
                }
                let mut held = Vec::new();
                let mut hold_phase = phase(hold);
                loop {
                    tokio::select! {
                        _ = &mut hold_phase => break,
                        r = requests.recv() => match r { Some(r) => held.push(r), None => return },
                    }
                }
                for r in held {
                    let _ = r.send(());
                }
            }
        });
        let end = Instant::now() + Duration::from_secs(60);
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (rl, to_server) = (rl.clone(), to_server.clone());
                tokio::spawn(async move {
                    let mut sizer = PageSizer::for_budget(rl.rate(), WORKERS);
                    while Instant::now() < end {
                        let (limit, estimate) = sizer.next();
                        rl.acquire(estimate).await;
                        let (answer, answered) = tokio::sync::oneshot::channel();
                        to_server.send(answer).expect("server runs");
                        answered.await.expect("answered");
                        // 2 KB items, eventually consistent: 0.25 RCU each.
                        let items = limit.unwrap_or(1000) as usize;
                        let actual = items as f64 * 0.25;
                        rl.settle(estimate, actual);
                        sizer.observe(items, actual);
                    }
                })
            })
            .collect();
        drop(to_server);
        for w in workers {
            w.await.expect("worker");
        }
        server.abort();
        let ps = rl.per_second();
        let full = &ps[1..ps.len() - 1];
        let average = full.iter().sum::<f64>() / full.len() as f64 / BUDGET;
        let busiest = ps.windows(5).map(|w| w.iter().sum::<f64>()).fold(0.0, f64::max) / (5.0 * BUDGET);
        (average, busiest)
    }

    #[tokio::test(start_paused = true)]
    async fn answers_a_server_bunches_keep_every_5_s_window_within_the_budget() {
        // (answering, holding) in ms; the first server never holds.
        for (fast, hold) in [(60_000, 1), (2_500, 500), (700, 300), (4_000, 1_000), (1_300, 150)] {
            let (average, busiest) = stalling_server(Duration::from_millis(fast), Duration::from_millis(hold)).await;
            let at = format!("answering for {fast} ms, holding for {hold} ms: average {:.1} %, busiest 5-s window {:.1} %", average * 100.0, busiest * 100.0);
            assert!(busiest <= 1.0, "{at}");
            // What a server that stalls cannot serve is its own doing; one that never
            // stalls gets the bucket's rate.
            if hold == 1 {
                assert!(average >= RATE_SHARE - 0.01, "{at}");
            }
        }
    }
}
