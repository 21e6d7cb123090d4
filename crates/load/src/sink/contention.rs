//! Commits that back off from each other: a target whose commits abort when they meet
//! (Spanner's transactions; the emulator runs one at a time) runs them through a
//! [`Contention`], which retries an aborted commit at once, alone, under
//! [`Policy::COMMIT_ABORTED`], and after an abort of a concurrent commit runs the next
//! 1, 2, 4 … 64 commits one at a time ([`super::Pause`]; no clean commit resets it,
//! since contention lasts as long as the load). Writers that keep meeting stop aborting
//! each other; those that do not keep their concurrency.

use crossdock_core::retry::Policy;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug)]
pub(crate) struct Contention {
    concurrent: super::Pause,
    /// Concurrent commits hold it shared, the others alone.
    gate: tokio::sync::RwLock<()>,
}

impl Contention {
    pub(crate) fn new() -> Contention {
        Contention { concurrent: super::Pause::new(), gate: tokio::sync::RwLock::new(()) }
    }

    /// Runs `commit` until it succeeds, fails otherwise than `aborted`, or
    /// [`Policy::COMMIT_ABORTED`]'s attempts are spent (`service` names it in logs and
    /// metrics).
    pub(crate) async fn commit<E, F, Fut>(&self, service: &'static str, aborted: impl Fn(&E) -> bool, mut commit: F) -> Result<(), E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let tries = AtomicU32::new(0);
        let aborted = &aborted;
        Policy::COMMIT_ABORTED
            .run(service, "commit_aborted", aborted, || {
                // A retry runs alone too: concurrent commits would keep aborting it.
                let alone = tries.fetch_add(1, Ordering::Relaxed) > 0 || !self.concurrent.fast();
                let call = commit();
                async move {
                    let result = if alone {
                        let _sole = self.gate.write().await;
                        call.await
                    } else {
                        let _shared = self.gate.read().await;
                        call.await
                    };
                    if !alone && result.as_ref().is_err_and(aborted) {
                        let pause = self.concurrent.fast_failed();
                        tracing::debug!(service, serial_commits = pause, "commit aborted by another transaction: committing one at a time");
                    }
                    result
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A service that, like the Spanner emulator, aborts a commit that meets another.
    #[derive(Default)]
    struct OneAtATime {
        running: AtomicUsize,
        commits: AtomicUsize,
        aborts: AtomicUsize,
    }

    impl OneAtATime {
        async fn commit(&self) -> Result<(), String> {
            let others = self.running.fetch_add(1, Ordering::SeqCst);
            // On one thread with the clock paused, every writer's commit that is not
            // held back starts while this one waits.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let met = others > 0 || self.running.fetch_sub(1, Ordering::SeqCst) > 1;
            if others > 0 {
                self.running.fetch_sub(1, Ordering::SeqCst);
            }
            if met {
                self.aborts.fetch_add(1, Ordering::SeqCst);
                return Err("aborted".into());
            }
            self.commits.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    async fn writers(gate: &Contention, service: &OneAtATime, writers: usize, commits: usize) {
        let writer = || async {
            for _ in 0..commits {
                gate.commit("test", |e: &String| e == "aborted", || service.commit()).await.expect("every commit lands");
            }
        };
        futures::future::join_all((0..writers).map(|_| writer())).await;
    }

    #[tokio::test(start_paused = true)]
    async fn writers_whose_commits_abort_each_other_go_one_at_a_time_and_all_commit() {
        let (gate, service) = (Contention::new(), OneAtATime::default());
        writers(&gate, &service, 4, 25).await;
        assert_eq!(service.commits.load(Ordering::SeqCst), 100);
        // The four first commits meet and abort, and their retries run alone. Each
        // abort doubles the pause and each meeting aborts at least two commits, so
        // after at most four meetings 2 + 8 + 32 + 64 commits have run alone: more
        // than are left. (How many meet each time depends on the retries' jitter.)
        // Without the gate every commit would abort until its attempts were spent.
        let aborts = service.aborts.load(Ordering::SeqCst);
        assert!((4..=16).contains(&aborts), "{aborts} aborts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_writer_keeps_committing_without_a_pause() {
        let (gate, service) = (Contention::new(), OneAtATime::default());
        writers(&gate, &service, 1, 10).await;
        assert_eq!((service.commits.load(Ordering::SeqCst), service.aborts.load(Ordering::SeqCst)), (10, 0));
        assert!(gate.concurrent.fast(), "no abort, no pause");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_other_than_an_abort_is_not_retried() {
        let gate = Contention::new();
        let calls = AtomicUsize::new(0);
        let r = gate
            .commit(
                "test",
                |e: &String| e == "aborted",
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>("permission denied".to_string())
                },
            )
            .await;
        assert_eq!((r, calls.load(Ordering::SeqCst)), (Err("permission denied".into()), 1));
    }
}
