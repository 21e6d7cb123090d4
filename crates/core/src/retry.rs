//! The one retry policy: how long to wait before each retry, how many to make, and how
//! each retried call ends, logged and counted (`crossdock_retries_total`). Every call
//! site that retries — GCS requests (the HTTP middleware in `crossdock-gcp`),
//! resumable-upload chunks, the SQS heartbeat, target writes, scans, stream reads —
//! takes one of the [`Policy`] constants here, so every number lives in this file. The
//! AWS clients use the SDK's standard retry mode, configured from [`Policy::AWS`] once
//! in the binary, whose interceptor reports each retried call to
//! [`retried_by_client`].

use std::future::Future;
use std::time::Duration;

/// Metrics this module emits, for docs and the exporters' descriptions.
pub const METRICS: &[(&str, &str)] = &[(
    "crossdock_retries_total",
    "failed calls by service, operation and outcome: retried (a retry follows), recovered (a retry succeeded), gave_up (retryable, out of attempts), permanent (not retryable, surfaced at once)",
)];

/// How often and how patiently to retry: `attempts` calls in all, waiting
/// [`backoff`]`(n, base, max)` before retry `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Calls in all, the first included (1: no retry).
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

/// How long one batch write to a target (a COPY, a commit, a MutateRows call) may go
/// unanswered before it is abandoned and retried: a connection that stalls without
/// failing would otherwise hold the load forever. The largest batch the sizing allows
/// commits in seconds. Pipelines override it with `[batch] write_timeout_secs`.
pub const TARGET_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long opening a connection to a service (TCP, TLS, start-up) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Policy {
    /// A request to a cloud service (GCS, a target): five calls over about 10 s, as
    /// Google's and AWS's client libraries do for transient errors.
    pub const REQUEST: Policy = Policy { attempts: 5, base: Duration::from_millis(250), max: Duration::from_secs(8) };

    /// An AWS SDK call (S3, SQS, DynamoDB, Streams): more attempts than the SDK's default
    /// 3, so a burst of S3 `SlowDown`s or a DynamoDB hiccup does not end a multi-hour
    /// export. The SDK applies it with full jitter.
    pub const AWS: Policy = Policy { attempts: 8, base: Duration::from_millis(200), max: Duration::from_secs(10) };

    /// A batch written to a target (PostgreSQL, Spanner, Bigtable). The loader also
    /// halves the batch on each failure, so later tries are smaller.
    pub const TARGET_WRITE: Policy = Policy { attempts: 13, base: Duration::from_millis(100), max: Duration::from_millis(6_400) };

    /// A Spanner commit the server aborted: a lock conflict with another transaction
    /// (the emulator aborts any commit that meets another), which clears as soon as
    /// that transaction ends. Retried at once, as Google's client libraries retry
    /// aborted transactions, before it counts as a failed write under
    /// [`Policy::TARGET_WRITE`] (which also shrinks the batch).
    pub const COMMIT_ABORTED: Policy = Policy { attempts: 10, base: Duration::from_millis(10), max: Duration::from_secs(1) };

    /// The entries of a Bigtable MutateRows call that the server failed retryably while
    /// it applied the others: sent again, alone, soon (the call itself succeeded). Out
    /// of attempts, the batch fails and [`Policy::TARGET_WRITE`] takes over.
    pub const PARTIAL_WRITE: Policy = Policy { attempts: 9, base: Duration::from_millis(100), max: Duration::from_millis(3_200) };

    /// A change applied by sync: patient, since a run lasts days and restarts cost a
    /// replay.
    pub const SYNC_APPLY: Policy = Policy { attempts: 11, base: Duration::from_millis(200), max: Duration::from_secs(10) };

    /// A page of a DynamoDB scan or stream read that failed transiently (throttling is
    /// waited out without limit by the scan, and is not a failure).
    pub const READ_PAGE: Policy = Policy { attempts: 11, base: Duration::from_millis(100), max: Duration::from_secs(5) };

    /// The SQS heartbeat's visibility extensions. Callers cap `max` at a quarter of the
    /// heartbeat interval, well inside the visibility the last extension bought.
    pub const HEARTBEAT: Policy = Policy { attempts: 5, base: Duration::from_millis(250), max: Duration::from_secs(60) };

    /// The wait before retry number `attempt` (1 for the first retry), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        backoff(attempt, self.base, self.max, rand::random())
    }

    /// The wait before retry `attempt` of an HTTP call that got `status` (`None`: no
    /// answer — a reset, a lost reply, a timeout). A service asking to slow down
    /// ([`asks_to_slow_down`]) gets the full [`Policy::delay`]; anything else a tenth of
    /// it, so a broken connection is replaced at once instead of idling a copy for the
    /// backoff meant for an overloaded service.
    pub fn delay_after(&self, attempt: u32, status: Option<u16>) -> Duration {
        match status {
            Some(s) if asks_to_slow_down(s) => self.delay(attempt),
            _ => backoff(attempt, self.base / 10, self.max, rand::random()),
        }
    }

    /// Whether a call that failed for the `failures`-th time may be retried.
    pub fn allows(&self, failures: u32) -> bool {
        failures < self.attempts
    }

    /// Runs `call` until it succeeds, fails with an error `retryable` refuses, or the
    /// attempts are spent; every failure is reported through [`failed`] under
    /// `service`/`op`.
    pub async fn run<T, E, F, Fut>(&self, service: &'static str, op: &'static str, retryable: impl Fn(&E) -> bool, mut call: F) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut failures = 0u32;
        loop {
            match call().await {
                Ok(v) => {
                    if failures > 0 {
                        recovered(service, op, failures);
                    }
                    return Ok(v);
                }
                Err(e) => {
                    failures += 1;
                    let outcome = failed(service, op, retryable(&e), self.allows(failures), &e);
                    if outcome != Outcome::Retried {
                        return Err(e);
                    }
                    tokio::time::sleep(self.delay(failures)).await;
                }
            }
        }
    }
}

/// Whether an HTTP status asks the caller to slow down (429 Too Many Requests, 503
/// Service Unavailable), as opposed to a one-off failure.
pub fn asks_to_slow_down(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// How one failed call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Retried,
    GaveUp,
    Permanent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Retried => "retried",
            Outcome::GaveUp => "gave_up",
            Outcome::Permanent => "permanent",
        }
    }
}

/// A call of `service`/`op` failed: decides whether it is retried (retryable and
/// attempts left), logs it and counts it. Call sites with their own loop use this and
/// [`recovered`] so that every retry in the process is counted the same way.
pub fn failed(service: &'static str, op: &'static str, retryable: bool, attempts_left: bool, error: &dyn std::fmt::Display) -> Outcome {
    let outcome = match (retryable, attempts_left) {
        (false, _) => Outcome::Permanent,
        (true, false) => Outcome::GaveUp,
        (true, true) => Outcome::Retried,
    };
    match outcome {
        Outcome::Retried => tracing::debug!(service, op, error = %error, "retrying"),
        Outcome::GaveUp => tracing::warn!(service, op, error = %error, "giving up after retries"),
        Outcome::Permanent => tracing::debug!(service, op, error = %error, "not retryable"),
    }
    metrics::counter!("crossdock_retries_total", "service" => service, "op" => op, "outcome" => outcome.as_str()).increment(1);
    outcome
}

/// A call of `service`/`op` succeeded after `failures` failed tries.
pub fn recovered(service: &'static str, op: &'static str, failures: u32) {
    tracing::debug!(service, op, failures, "succeeded after retrying");
    metrics::counter!("crossdock_retries_total", "service" => service, "op" => op, "outcome" => "recovered").increment(1);
}

/// A call that a client library retries itself (the AWS SDK, under [`Policy::AWS`])
/// ended after `attempts` tries: each failed try before the last counts as `retried`,
/// and the end as `recovered` or `gave_up`, as [`failed`] and [`recovered`] count the
/// calls crossdock retries. A call answered at its first try is not a retry and is
/// not counted.
pub fn retried_by_client(service: &str, op: &str, attempts: u32, succeeded: bool) {
    if attempts <= 1 {
        return;
    }
    let (service, op) = (service.to_ascii_lowercase(), op.to_string());
    metrics::counter!("crossdock_retries_total", "service" => service.clone(), "op" => op.clone(), "outcome" => "retried").increment(u64::from(attempts - 1));
    let outcome = if succeeded {
        tracing::debug!(service, op, attempts, "succeeded after retrying");
        "recovered"
    } else {
        tracing::warn!(service, op, attempts, "failed after retries");
        "gave_up"
    };
    metrics::counter!("crossdock_retries_total", "service" => service, "op" => op, "outcome" => outcome).increment(1);
}

/// The wait before retry number `attempt` (1 for the first retry): `base` doubled per
/// attempt up to `max`, with equal jitter — half of the step fixed, half scaled by
/// `unit_random` (a uniform draw from `[0, 1)`, passed in so the rule is testable). A
/// fleet of throttled workers then spreads out instead of retrying in lockstep, and
/// each still waits at least half its step.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit_random: f64) -> Duration {
    let step = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    let r = if unit_random.is_finite() { unit_random.clamp(0.0, 1.0) } else { 0.0 };
    step / 2 + step.mul_f64(r / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_base_and_stops_at_max() {
        let at = |n| backoff(n, 100 * MS, 2_000 * MS, 1.0);
        assert_eq!([at(1), at(2), at(3), at(5), at(6), at(40)], [100 * MS, 200 * MS, 400 * MS, 1_600 * MS, 2_000 * MS, 2_000 * MS]);
    }

    #[test]
    fn jitter_spans_the_upper_half_of_the_step() {
        assert_eq!(backoff(3, 100 * MS, 10_000 * MS, 0.0), 200 * MS);
        assert_eq!(backoff(3, 100 * MS, 10_000 * MS, 0.5), 300 * MS);
        assert_eq!(backoff(3, 100 * MS, 10_000 * MS, f64::NAN), 200 * MS);
        assert_eq!(backoff(0, 100 * MS, 10_000 * MS, 1.0), 100 * MS, "attempt 0 is treated as the first");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_failures_until_success_and_surfaces_permanent_ones_at_once() {
        let calls = Cell::new(0);
        let started = tokio::time::Instant::now();
        let got: Result<u32, String> = Policy::REQUEST
            .run(
                "test",
                "op",
                |e: &String| e == "503",
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move {
                        if n < 3 {
                            Err("503".to_string())
                        } else {
                            Ok(n)
                        }
                    }
                },
            )
            .await;
        assert_eq!(got, Ok(3));
        let waited = started.elapsed();
        assert!(waited >= 125 * MS + 250 * MS && waited <= 250 * MS + 500 * MS, "two jittered waits: {waited:?}");

        calls.set(0);
        let got: Result<u32, String> = Policy::REQUEST
            .run(
                "test",
                "op",
                |e: &String| e == "503",
                || {
                    calls.set(calls.get() + 1);
                    async { Err("403".to_string()) }
                },
            )
            .await;
        assert_eq!((got, calls.get()), (Err("403".into()), 1), "a permanent error is not retried");

        calls.set(0);
        let got: Result<u32, String> = Policy::REQUEST
            .run(
                "test",
                "op",
                |_: &String| true,
                || {
                    calls.set(calls.get() + 1);
                    async { Err("503".to_string()) }
                },
            )
            .await;
        assert_eq!((got, calls.get()), (Err("503".into()), 5), "gives up after the policy's attempts");
    }

    #[test]
    fn a_service_asking_to_slow_down_gets_the_full_wait_and_a_lost_connection_a_tenth() {
        let p = Policy::REQUEST;
        for status in [Some(429), Some(503)] {
            assert!(p.delay_after(1, status) >= 125 * MS, "{status:?}");
        }
        for status in [None, Some(500), Some(408)] {
            assert!(p.delay_after(1, status) <= 25 * MS, "{status:?}");
        }
    }

    #[test]
    fn each_failure_ends_in_one_outcome() {
        assert_eq!(failed("s", "o", true, true, &"e"), Outcome::Retried);
        assert_eq!(failed("s", "o", true, false, &"e"), Outcome::GaveUp);
        assert_eq!(failed("s", "o", false, true, &"e"), Outcome::Permanent);
    }
}
