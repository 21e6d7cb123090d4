//! Exit codes through the real binary (`crates/cli/src/exit.rs` is their table). Each code
//! has an end-to-end test: 0 everywhere; 1 `cli::a_missing_queue_exits_3_and_an_unreachable_one_1`;
//! 2 `cli::bad_flags_are_usage_errors`, `cli::a_variable_that_conflicts_with_a_flag_is_a_usage_error`;
//! 3 below and in `cli`; 4 below; 5 `export::s3_failing_for_good_mid_upload_…`,
//! `pipeline` (SIGTERM); 7 `audit`.

use crossdock_tests::export::{create_table, fill, lease, read_capacity, wait_lease_stale};
use crossdock_tests::pipeline::{work_dir, Proc};
use crossdock_tests::proxy::{part_put, Action, FaultProxy};
use crossdock_tests::resources::{TempBucket, TempTable};
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn a_missing_table_exits_3_naming_it() {
    let bucket = TempBucket::new("exit3").await;
    let table = crossdock_tests::unique("nosuchtable");
    let out = Command::new(crossdock_tests::crossdock_bin())
        .args(["export", "--no-autoscaling", "--table", &table, "--bucket", &bucket.name, "--batch", "b1"])
        .output()
        .expect("run crossdock");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&table) && err.contains("does not exist"), "{err}");
}

/// Exit 4: the export fails (its data part cannot be written) and then its capacity
/// lease cannot be marked restored. The printed error names both: what to do now (the
/// capacity) and why the export stopped (the data). `export restore` then finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_not_restored_exits_4_with_the_export_error_that_preceded_it() {
    let ddb = crossdock_tests::dynamodb().await;
    let s3 = crossdock_tests::s3().await;
    let table = TempTable::name("exit4");
    create_table(&ddb, &table.name, 5, 5).await;
    fill(&ddb, &table.name, 200, 100, 4).await;
    let bucket = TempBucket::new("exit4").await;
    let dir = work_dir("exit4");
    let proxy = FaultProxy::s3().await;
    // Every data part write is refused; so is every lease write after the one taking it
    // (the restore marks the lease restored with a write).
    proxy.rule(0, Action::Status(403), part_put);
    proxy.rule(1, Action::Status(403), |m, p| m == "PUT" && p.contains("/_leases/"));
    let args: Vec<String> =
        ["export", "--no-autoscaling", "--no-progress", "--table", &table.name, "--bucket", &bucket.name, "--batch", "b1", "--segments", "1"]
            .iter()
            // A short stale period, so `export restore` may act soon after (the failing
            // heartbeats in between are only warnings).
            .chain(&["--raise-to", "50", "--lease-stale-after", "3"])
            .map(|s| s.to_string())
            .collect();
    let mut child = Proc::spawn_with_env(&dir, "export", &args, &[("AWS_ENDPOINT_URL_S3", &proxy.url)]);
    let status = child.wait(Duration::from_secs(180)).await;
    let log = child.log_text();
    assert_eq!(status.code(), Some(4), "{}", child.log_tail());
    assert!(proxy.faulted() >= 2, "both faults were met: {}", proxy.faulted());
    let error = log.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("an error line:\n{log}"));
    assert!(error.contains("NOT restored") && error.contains("crossdock export restore"), "the capacity error and what to do: {error}");
    assert!(error.contains("the export had failed before") && error.contains("/data/"), "and the data error before it: {error}");
    assert!(lease(&s3, &bucket.name, &table.name).await.is_some_and(|l| !l.restored), "the lease is left for `export restore`");

    drop(proxy);
    wait_lease_stale(&s3, &bucket.name, &table.name, Duration::from_secs(30)).await;
    let out = Command::new(crossdock_tests::crossdock_bin())
        .args(["export", "restore", "--no-autoscaling", "--table", &table.name, "--bucket", &bucket.name])
        .output()
        .expect("run restore");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(lease(&s3, &bucket.name, &table.name).await.is_some_and(|l| l.restored), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(read_capacity(&ddb, &table.name).await, 5);
    std::fs::remove_dir_all(&dir).ok();
}
