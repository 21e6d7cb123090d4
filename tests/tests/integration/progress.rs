//! Progress bars: on a terminal (a pty from script(1)) `crossdock load` shows rows against
//! the marker's items with files done and `crossdock export` bytes against the table's
//! size with items and RCU/s; never with `--output json` or `--no-progress`, nor when
//! stderr is not a terminal.

use crossdock_core::Codec;
use crossdock_tests::load::{schema, wide_items, write_export};
use crossdock_tests::pipeline::{work_dir, write_pipeline};
use crossdock_tests::resources::{TempBucket, TempGcsBucket, TempPgSchema, TempTable};

fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs the binary with stdout and stderr on a pseudo-terminal; (exit code, what the
/// terminal showed).
fn on_a_terminal(args: &[String]) -> (Option<i32>, String) {
    let mut cmd = quoted(&crossdock_tests::crossdock_bin().to_string_lossy());
    for a in args {
        cmd.push(' ');
        cmd.push_str(&quoted(a));
    }
    let out =
        std::process::Command::new("script").args(["-q", "-e", "-c", &cmd, "/dev/null"]).stdin(std::process::Stdio::null()).output().expect("run script(1)");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn load_bar_on_a_terminal_only_and_not_with_json_output() {
    let bucket = TempGcsBucket::new("progress").await;
    let table = crossdock_tests::unique_ident("prog");
    let export = write_export(&bucket.client, &bucket.name, "b1", schema(&table, false, true), wide_items(2_000, 3, false), 4, Codec::Zstd).await;
    let pg = TempPgSchema::new("progress").await;
    let dir = work_dir("progress");
    let pipeline = write_pipeline(&dir, "unused", &bucket.name, &pg.name, &[], "").to_string_lossy().into_owned();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["load", "--marker", &export.marker_url, "--pipeline", &pipeline].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let (code, screen) = on_a_terminal(&args(&[]));
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("2,000/2,000 rows (") && screen.contains("4/4 files\r\n"), "no final progress bar on its own line:\n{screen:?}");
    assert!(screen.contains("/s, ETA "), "{screen:?}");
    assert!(screen.contains("loaded into postgres table"), "{screen}");

    for extra in [&["--output", "json", "--force"][..], &["--no-progress", "--force"][..]] {
        let (code, screen) = on_a_terminal(&args(extra));
        assert_eq!(code, Some(0), "{extra:?}: {screen}");
        assert!(!screen.contains("/s, ETA") && !screen.contains(" files"), "{extra:?} drew a progress bar:\n{screen:?}");
        assert!(screen.contains("2000"), "{extra:?}: the load ran: {screen}");
    }

    // stderr to a pipe: no progress line.
    let out = std::process::Command::new(crossdock_tests::crossdock_bin()).args(args(&["--force"])).output().expect("run crossdock");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("/s, ETA") && !stderr.contains('\r'), "progress bar without a terminal:\n{stderr:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("2000 rows in target"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_bar_on_a_terminal_only() {
    let ddb = crossdock_tests::dynamodb().await;
    let table = TempTable::name("progexp");
    crossdock_tests::pipeline::create_table(&ddb, &table.name, false, false, 1000).await;
    crossdock_tests::export::fill(&ddb, &table.name, 500, 200, 4).await;
    let bucket = TempBucket::new("progexp").await;
    let args = |batch: &str| -> Vec<String> {
        ["export", "--no-autoscaling", "--table", &table.name, "--bucket", &bucket.name, "--batch", batch].iter().map(|s| s.to_string()).collect()
    };
    let (code, screen) = on_a_terminal(&args("b1"));
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("500 items, ") && screen.contains(" RCU/s") && screen.contains("/s, ETA "), "no progress bar:\n{screen:?}");
    // stderr to a pipe: no bar, the same summary.
    let out = std::process::Command::new(crossdock_tests::crossdock_bin()).args(args("b2")).output().expect("run crossdock");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("ETA") && !stderr.contains('\r'), "progress bar without a terminal:\n{stderr:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("500 items"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// `crossdock status --watch` on a terminal redraws its table in place (clear, then the
/// table) every --interval, coloured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_redraws_the_table_on_a_terminal() {
    let src = TempBucket::new("statw").await;
    let dst = TempGcsBucket::new("statw").await;
    let table = crossdock_tests::unique_ident("statw");
    write_export(&dst.client, &dst.name, "b1", schema(&table, false, false), wide_items(10, 2, false), 1, Codec::Zstd).await;
    let dir = work_dir("statw");
    let pipeline = write_pipeline(&dir, &src.name, &dst.name, "unused", &[], "").to_string_lossy().into_owned();
    let bin = quoted(&crossdock_tests::crossdock_bin().to_string_lossy());
    let cmd = format!("{bin} status --pipeline {} --watch --interval 1s", quoted(&pipeline));
    let mut child = std::process::Command::new("script")
        .args(["-q", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run script(1)");
    // Read the terminal until the table was drawn twice (or a minute passed), then stop.
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline && String::from_utf8_lossy(&seen).matches("\u{1b}[2J\u{1b}[H").count() < 3 {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        seen
    });
    let seen = reader.join().expect("reader");
    let _ = child.kill();
    let _ = child.wait();
    let screen = String::from_utf8_lossy(&seen);
    let rounds = screen.matches("\u{1b}[2J\u{1b}[H").count();
    assert!(rounds >= 2, "the table is redrawn in place ({rounds} rounds):\n{screen:?}");
    assert!(screen.matches("BATCH").count() >= 2 && screen.contains(&table), "{screen:?}");
    assert!(screen.contains("1 table(s): 1 exported") && screen.contains("\u{1b}[32m"), "totals, and colour on a terminal: {screen:?}");
}

/// `relay --until-idle` on a terminal: events handled against the queue's backlog, files
/// copied and MB raw → stored; no bar when stderr is not a terminal or with --no-progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_until_idle_bar_on_a_terminal_only() {
    use crossdock_tests::relay::{FakeExport, Wired};
    let w = Wired::new("progrelay", 30, None).await;
    let e = FakeExport::new("b1", "Bars", 2, 2, 2_000);
    e.put_all(&w.src.client, &w.src.name, "").await;
    let map = format!("{}={}", w.src.name, w.gcs.name);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> =
            ["relay", "--queue", &w.queue.url, "--dst-bucket-map", &map, "--until-idle", "2", "--wait-time", "1", "--no-spot-poll", "--metrics-addr", "off"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (code, screen) = on_a_terminal(&args(&[]));
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains(&format!("{} files copied, ", e.file_count())) && screen.contains(" MB raw → ") && screen.contains(" MB stored"), "{screen:?}");
    assert!(screen.contains(" events (") && screen.contains(", ETA "), "{screen:?}");
    let gcs = crossdock_tests::gcs().await;
    e.verify_in_gcs(&gcs, &w.gcs.name, Codec::Zstd).await;

    // The queue is drained now: these runs only idle, which is enough to show no bar.
    let (code, screen) = on_a_terminal(&args(&["--no-progress"]));
    assert_eq!(code, Some(0), "{screen}");
    assert!(!screen.contains(" events (") && !screen.contains("files copied"), "--no-progress drew a bar:\n{screen:?}");
    let out = std::process::Command::new(crossdock_tests::crossdock_bin()).args(args(&[])).output().expect("run crossdock");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(" events (") && !stderr.contains('\r'), "progress bar without a terminal:\n{stderr:?}");
}
