//! `scripts/bench faults`: the relay's MB/s on a network that fails (5% of GCS requests
//! answered 503, one in 40 reset before and one in 30 after GCS acted on it, S3 and SQS
//! with 503s and resets) against the same relay through the same proxies without
//! faults, in the same run; and the bytes it sent to GCS per byte stored. Each side is
//! the best of `BENCH_FAULT_RUNS` (3) runs of a fresh export of `BENCH_FAULT_PARTS`
//! (96) parts, `BENCH_FAULT_CONCURRENCY` (16) copies in flight. `BENCH_FAULT_ONLY`
//! (`aws`, `gcs`, `gcs503`, `gcsreset`, `gcslose`) keeps one kind of fault only, to see
//! which costs what.

use crossdock_tests::proxy::{any, Action, FaultProxy};
use crossdock_tests::relay::{get, list_names, FakeExport, RelayProcess, Wired};
use std::time::{Duration, Instant};

struct Run {
    seconds: f64,
    raw_bytes: u64,
    sent: u64,
    stored: u64,
}

async fn relay_once(faulty: bool, round: usize) -> Run {
    let w = Wired::new("benchfault", 30, None).await;
    // `BENCH_FAULT_PARTS` (96) parts of ~2 MiB in 1 MiB upload requests, over 4
    // segments: long enough that the run measures the copies, not a few backoff waits.
    let parts: u32 = std::env::var("BENCH_FAULT_PARTS").ok().and_then(|v| v.parse().ok()).unwrap_or(96);
    let e = FakeExport::new("bench", &format!("Faults{round}{}", if faulty { "f" } else { "c" }), 4, parts.div_ceil(4), 30_000);
    let raw_bytes: u64 = (0..e.segments).flat_map(|s| (0..e.parts_per_segment).map(move |p| (s, p))).map(|(s, p)| e.part_raw(s, p).len() as u64).sum();
    let aws = FaultProxy::start(&crossdock_tests::stack_var("AWS_ENDPOINT_URL")).await;
    let gcs = FaultProxy::gcs().await;
    // `BENCH_FAULT_ONLY=aws|gcs` faults one side only, to see which costs what.
    let only = std::env::var("BENCH_FAULT_ONLY").unwrap_or_default();
    if faulty && only != "gcs" {
        aws.every(20, Action::Status(503), any);
        aws.every(40, Action::Reset, any);
    }
    if faulty && only != "aws" {
        if only.is_empty() || only == "gcs" || only == "gcs503" {
            gcs.every(20, Action::Status(503), any);
        }
        if only.is_empty() || only == "gcs" || only == "gcsreset" {
            gcs.every(40, Action::Reset, any);
        }
        if only.is_empty() || only == "gcs" || only == "gcslose" {
            gcs.every(30, Action::Lose, any);
        }
    }
    e.put_all_concurrently(&w.src.client, &w.src.name, "", 16).await;
    let mut args = w.cli_args();
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        args.drain(i..i + 2);
    }
    // Copies in flight (`BENCH_FAULT_CONCURRENCY`, 16): a copy waiting out a backoff
    // leaves the cores to the others, as a relay sized for a faulty network would.
    let concurrency = std::env::var("BENCH_FAULT_CONCURRENCY").unwrap_or_else(|_| "16".into());
    args.extend(["--chunk-mib", "1", "--concurrency", &concurrency, "--threads", "2"].map(String::from));
    let log = std::env::temp_dir().join(format!("{}.log", crossdock_tests::unique("benchfault")));
    let env = [("AWS_ENDPOINT_URL_S3", aws.url.as_str()), ("AWS_ENDPOINT_URL_SQS", aws.url.as_str()), ("STORAGE_EMULATOR_HOST", gcs.url.as_str())];
    let started = Instant::now();
    let mut relay = RelayProcess::spawn_with_env(&args, &log, &env);
    let client = crossdock_tests::gcs().await;
    loop {
        if get(&client, &w.gcs.name, &e.export.marker_key()).await.is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no marker after 10 minutes; log {}", log.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    relay.signal("TERM");
    let _ = relay.wait(Duration::from_secs(60)).await;
    let mut stored = 0;
    for name in list_names(&client, &w.gcs.name).await {
        stored += get(&client, &w.gcs.name, &name).await.map_or(0, |o| o.size as u64);
    }
    Run { seconds, raw_bytes, sent: gcs.uploaded_bytes(), stored }
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BENCH_FAULT_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let (mut clean, mut faulty) = (Vec::new(), Vec::new());
    for round in 0..runs {
        clean.push(relay_once(false, round).await);
        faulty.push(relay_once(true, round).await);
    }
    let best = |runs: &[Run]| runs.iter().map(|r| r.raw_bytes as f64 / 1e6 / r.seconds).fold(0.0, f64::max);
    let (c, f) = (best(&clean), best(&faulty));
    let worst_sent = faulty.iter().map(|r| r.sent as f64 / r.stored as f64).fold(0.0, f64::max);
    println!("relay, fault-free (through the proxies): {c:.1} MB/s raw (best of {runs})");
    println!("relay, 5% 503s + resets + lost replies:  {f:.1} MB/s raw (best of {runs})");
    println!("bytes sent to GCS per byte stored under faults (worst run): {worst_sent:.3}");
    println!("ratio: {:.0}%", 100.0 * f / c);
}
