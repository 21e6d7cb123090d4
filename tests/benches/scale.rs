//! `scripts/bench-scale --budget`: how throughput grows with processes when each
//! process has a fixed budget of its own, as on real nodes (a NIC, a target's quota),
//! instead of sharing this machine's cores.
//!
//! 1. One relay and one loader process, unthrottled: the per-process figures.
//! 2. 1, 2 and 4 relays on one queue, each with `--rate-limit-kib` (its upload budget),
//!    timed until the table's `_SUCCESS`; then 1, 2 and 4 loaders sharing the marker
//!    (`--shard i/N`), each with `--max-rows-per-sec`, timed until the last exits.
//!    Budgets are set so one process takes about `BENCH_SCALE_SECS` (30) and four stay
//!    well under what this machine does unthrottled: the ratios then measure the
//!    coordination (queue, records, markers), not CPU contention.
//! 3. GCS, S3 and SQS requests per file, counted by proxies in front of the servers.
//!
//! Writes the figures to `BENCH_SCALE_OUT` (`crossdock plan --from-bench` reads it).

use crossdock_core::sizing::{MeasuredFigures, Scaling};
use crossdock_tests::pipeline::Proc;
use crossdock_tests::proxy::FaultProxy;
use crossdock_tests::relay::{get, list_names, FakeExport, Wired};
use crossdock_tests::resources::{TempGcsBucket, TempPgSchema};
use std::path::Path;
use std::time::{Duration, Instant};

const FLEETS: [usize; 3] = [1, 2, 4];

struct Proxies {
    s3: FaultProxy,
    sqs: FaultProxy,
    gcs: FaultProxy,
}

impl Proxies {
    async fn start() -> Proxies {
        let aws = crossdock_tests::stack_var("AWS_ENDPOINT_URL");
        Proxies { s3: FaultProxy::start(&aws).await, sqs: FaultProxy::start(&aws).await, gcs: FaultProxy::gcs().await }
    }

    fn env(&self) -> [(&str, &str); 3] {
        [("AWS_ENDPOINT_URL_S3", self.s3.url.as_str()), ("AWS_ENDPOINT_URL_SQS", self.sqs.url.as_str()), ("STORAGE_EMULATOR_HOST", self.gcs.url.as_str())]
    }
}

struct RelayRun {
    seconds: f64,
    raw_bytes: u64,
    stored_bytes: u64,
    files: usize,
    /// (GCS requests, of which uploads; S3 requests; SQS requests)
    calls: (usize, usize, usize, usize),
    _wired: Wired,
}

async fn relay(dir: &Path, export: &FakeExport, processes: usize, budget_kib: Option<u64>, round: &str) -> RelayRun {
    let w = Wired::new("benchscale", 60, None).await;
    let raw_bytes: u64 =
        (0..export.segments).flat_map(|s| (0..export.parts_per_segment).map(move |p| (s, p))).map(|(s, p)| export.part_raw(s, p).len() as u64).sum();
    export.put_all_concurrently(&w.src.client, &w.src.name, "", 16).await;
    let proxies = Proxies::start().await;
    let mut args = w.cli_args();
    args.extend(["--concurrency", "4", "--chunk-mib", "1"].map(String::from));
    if let Some(k) = budget_kib {
        args.extend(["--rate-limit-kib".to_string(), k.to_string()]);
    }
    let started = Instant::now();
    let mut fleet: Vec<Proc> = (0..processes).map(|i| Proc::spawn_with_env(dir, &format!("relay-{round}-{i}"), &args, &proxies.env())).collect();
    let client = crossdock_tests::gcs().await;
    let marker = export.export.marker_key();
    while get(&client, &w.gcs.name, &marker).await.is_none() {
        assert!(started.elapsed() < Duration::from_secs(900), "no _SUCCESS after 15 minutes; logs in {}", dir.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let calls = (proxies.gcs.requests().0, proxies.gcs.requests().1, proxies.s3.requests().0, proxies.sqs.requests().0);
    for p in &fleet {
        p.signal("TERM");
    }
    for p in &mut fleet {
        p.wait(Duration::from_secs(60)).await;
    }
    let mut stored_bytes = 0;
    for name in list_names(&client, &w.gcs.name).await {
        stored_bytes += get(&client, &w.gcs.name, &name).await.map_or(0, |o| o.size as u64);
    }
    RelayRun { seconds, raw_bytes, stored_bytes, files: export.file_count(), calls, _wired: w }
}

struct LoadRun {
    seconds: f64,
    rows: u64,
    gcs_calls: usize,
}

async fn load(dir: &Path, bucket: &str, marker: &str, processes: usize, budget: Option<u64>, round: &str) -> LoadRun {
    let schema = TempPgSchema::new("benchscale").await;
    let pipeline = dir.join(format!("pipeline-{round}.toml"));
    std::fs::write(
        &pipeline,
        format!(
            "name = \"scale\"\nroute = \"relational\"\n[source]\nbucket = \"unused\"\n[relay]\ncodec = \"zstd\"\n[targets.relational]\nkind = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\n",
            crossdock_tests::stack_var("CROSSDOCK_PG_URL"),
            schema.name
        ),
    )
    .expect("pipeline file");
    let gcs = FaultProxy::gcs().await;
    let started = Instant::now();
    let mut loaders: Vec<Proc> = (0..processes)
        .map(|i| {
            let mut args: Vec<String> =
                ["load", "--output", "json", "--no-progress", "--marker", &format!("gs://{bucket}/{marker}"), "--pipeline", &pipeline.to_string_lossy()]
                    .map(String::from)
                    .into();
            if processes > 1 {
                args.extend(["--shard".to_string(), format!("{i}/{processes}")]);
            }
            if let Some(r) = budget {
                args.extend(["--max-rows-per-sec".to_string(), r.to_string()]);
            }
            Proc::spawn_with_env(dir, &format!("load-{round}-{i}"), &args, &[("STORAGE_EMULATOR_HOST", gcs.url.as_str())])
        })
        .collect();
    let mut rows = 0;
    for p in &mut loaders {
        let st = p.wait(Duration::from_secs(900)).await;
        assert!(st.success(), "{}: {st}\n{}", p.name, p.log_tail());
        rows = rows.max(p.json()["rows_in_target"].as_u64().unwrap_or(0));
    }
    LoadRun { seconds: started.elapsed().as_secs_f64(), rows, gcs_calls: gcs.requests().0 }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let secs: f64 = env_or("BENCH_SCALE_SECS", 30.0);
    let lines: u32 = env_or("BENCH_SCALE_LINES", 10_000);
    let out = std::env::var("BENCH_SCALE_OUT").unwrap_or_else(|_| "bench-scale.json".into());
    let dir = std::env::temp_dir().join(crossdock_tests::unique("bench-scale"));
    std::fs::create_dir_all(&dir).expect("log dir");
    // 4 segments of 12 parts: 53 files to relay, 48 of them data.
    let export = |round: &str| FakeExport::new("bench", &format!("Scale{round}"), 4, 12, lines);

    // 1. One process each, unthrottled.
    let free = relay(&dir, &export("free"), 1, None, "free").await;
    // The loaders' input: an export with typed columns (the exporter's type statistics
    // in its marker), 48 data files.
    let rows: usize = env_or("BENCH_SCALE_ROWS", 400_000);
    let input = TempGcsBucket::new("benchscale").await;
    let written = crossdock_tests::load::write_export(
        &input.client,
        &input.name,
        "bench",
        crossdock_tests::load::schema("ScaleLoad", false, true),
        crossdock_tests::load::wide_items(rows, 4, false),
        48,
        crossdock_core::Codec::Zstd,
    )
    .await;
    let marker = written.export.marker_key();
    let free_load = load(&dir, &input.name, &marker, 1, None, "free").await;
    let relay_mb = free.raw_bytes as f64 / 1e6 / free.seconds;
    let load_rows = free_load.rows as f64 / free_load.seconds;
    println!(
        "one relay, unthrottled:  {relay_mb:.1} MB/s raw ({} files, {:.1} MB stored of {:.1} MB raw)",
        free.files,
        free.stored_bytes as f64 / 1e6,
        free.raw_bytes as f64 / 1e6
    );
    println!("one loader, unthrottled: {load_rows:.0} rows/s ({} rows into PostgreSQL)", free_load.rows);

    // 2. Budgets: one process takes about `secs`, four at most a sixth of the
    //    unthrottled rate each.
    let stored_rate = free.stored_bytes as f64 / free.seconds;
    let budget_kib = ((free.stored_bytes as f64 / secs).min(stored_rate / 6.0) / 1024.0).max(1.0) as u64;
    let budget_rows = ((free_load.rows as f64 / secs).min(load_rows / 6.0)).max(1.0) as u64;
    println!("budgets per process: {budget_kib} KiB/s uploaded (relay), {budget_rows} rows/s (loader)");

    let mut relays = Vec::new();
    for n in FLEETS {
        let r = relay(&dir, &export(&format!("r{n}")), n, Some(budget_kib), &format!("r{n}")).await;
        let mbs = r.raw_bytes as f64 / 1e6 / r.seconds;
        let (gcs, uploads, s3, sqs) = r.calls;
        let per = |c: usize| c as f64 / r.files as f64;
        println!(
            "relays {n}: {mbs:.2} MB/s raw in {:.1} s; per file: {:.2} GCS requests ({:.2} of them not uploads), {:.2} S3, {:.2} SQS",
            r.seconds,
            per(gcs),
            per(gcs - uploads),
            per(s3),
            per(sqs)
        );
        relays.push((n, mbs));
    }
    let mut loads = Vec::new();
    for n in FLEETS {
        let l = load(&dir, &input.name, &marker, n, Some(budget_rows), &format!("l{n}")).await;
        let rate = l.rows as f64 / l.seconds;
        println!("loaders {n}: {rate:.0} rows/s in {:.1} s; {:.2} GCS requests per data file", l.seconds, l.gcs_calls as f64 / 48.0);
        loads.push((n, rate));
    }
    let scaling =
        |runs: &[(usize, f64)]| -> Vec<Scaling> { runs.iter().map(|&(n, rate)| Scaling { processes: n as u32, speedup: rate / runs[0].1 }).collect() };
    let figures = MeasuredFigures {
        relay_mb_per_sec: relay_mb,
        loader_rows_per_sec: load_rows,
        relay_scaling: scaling(&relays),
        loader_scaling: scaling(&loads),
        measured_on: format!("scripts/bench-scale --budget, local stack, {} cores", std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    for (what, s) in [("relay", &figures.relay_scaling), ("loader", &figures.loader_scaling)] {
        for x in s.iter().skip(1) {
            println!("{what} scaling at {}: {:.2}x", x.processes, x.speedup);
        }
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&figures).expect("json")).expect("write figures");
    println!("figures for `crossdock plan --from-bench`: {out}");
}
