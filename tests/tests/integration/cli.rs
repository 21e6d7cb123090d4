//! The `crossdock` binary itself: completions, man page, exit codes, pipeline validation
//! (each command's `--help` is a snapshot test in the binary's crate).

use std::process::Command;

fn crossdock(args: &[&str]) -> std::process::Output {
    Command::new(crossdock_tests::crossdock_bin()).args(args).output().expect("run crossdock")
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let bin = crossdock_tests::crossdock_bin();
    let complete = |line: &str| -> Vec<String> {
        let words: Vec<&str> = line.split(' ').collect();
        let script = format!(
            r#"source <("{}" completions bash); COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE="{line}"; COMP_POINT={}; _crossdock crossdock "{}" "{}"; printf '%s\n' "${{COMPREPLY[@]}}""#,
            bin.display(),
            words.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(" "),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let out = Command::new("bash").arg("-c").arg(&script).output().expect("run bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    };
    let subs = complete("crossdock s");
    assert!(subs.contains(&"status".to_string()) && subs.contains(&"sync".to_string()) && !subs.contains(&"load".to_string()), "{subs:?}");
    let flags = complete("crossdock status --wa");
    assert_eq!(flags, vec!["--watch".to_string()]);
}

#[test]
fn the_man_page_names_every_subcommand() {
    let out = crossdock(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH crossdock 1"), "{page}");
    for sub in ["export", "relay", "load", "verify", "sync", "audit", "status", "plan", "pipeline", "completions"] {
        assert!(page.contains(&format!("crossdock\\-{sub}(1)")), "the man page does not list {sub}:\n{page}");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = crossdock(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn pipeline_validate_accepts_the_shipped_pipelines_and_names_bad_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let demo = root.join("pipelines/demo.toml");
    let out = Command::new(crossdock_tests::crossdock_bin())
        .args(["pipeline", "validate"])
        .arg(&demo)
        .env("CROSSDOCK_PG_URL", "postgres://x")
        .env("CROSSDOCK_GCP_PROJECT", "p")
        .env("CROSSDOCK_SPANNER_INSTANCE", "projects/p/instances/i")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let dir = std::env::temp_dir().join(crossdock_tests::unique("pipeline"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(&demo).expect("demo pipeline").replacen("[source]", "[source]\nbukket = \"x\"", 1);
    std::fs::write(&bad, text).expect("write");
    let out = crossdock(&["pipeline", "validate", bad.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `bukket`") && err.contains("bad.toml"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn pipeline_validate_online_connects_to_every_endpoint() {
    use crossdock_tests::resources::{TempBucket, TempGcsBucket};
    let src = TempBucket::new("online").await;
    let dst = TempGcsBucket::new("online").await;
    let dir = std::env::temp_dir().join(crossdock_tests::unique("online"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let pipeline = |pg_url: &str| {
        format!(
            "name = \"online\"\n[source]\nbucket = \"{}\"\n[relay]\nbucket = \"{}\"\n[targets.relational]\nkind = \"postgres\"\nurl = \"{pg_url}\"\n[targets.wide_column]\nkind = \"bigtable\"\nproject = \"${{CROSSDOCK_GCP_PROJECT}}\"\ninstance = \"local\"\n",
            src.name, dst.name
        )
    };
    let validate = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write pipeline");
        Command::new(crossdock_tests::crossdock_bin()).args(["pipeline", "validate", "--online"]).arg(&path).output().expect("run")
    };
    let ok = validate("ok.toml", pipeline("${CROSSDOCK_PG_URL}"));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    // Nothing listens on port 1: the unreachable target is named, exit 3.
    let bad = validate("bad.toml", pipeline("postgres://postgres@127.0.0.1:1/x"));
    assert_eq!(bad.status.code(), Some(3));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("postgres target is not reachable") && err.contains("bad.toml"), "{err}");

    let no_bucket = validate("nobucket.toml", pipeline("${CROSSDOCK_PG_URL}").replacen(&src.name, "no-such-bucket-online", 1));
    assert_eq!(no_bucket.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&no_bucket.stderr).contains("s3://no-such-bucket-online"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `--profile` takes credentials the way the aws CLI does: here from a profile's
/// `credential_process`, with no key in the environment. Without the profile the same
/// command has no credentials and fails.
#[tokio::test]
async fn aws_profile_with_credential_process_signs_requests() {
    let queue = crossdock_tests::resources::TempQueue::new("profile", 30).await;
    let dir = std::env::temp_dir().join(crossdock_tests::unique("profile"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let called = dir.join("called");
    std::fs::write(
        dir.join("creds.sh"),
        format!("#!/bin/sh\ntouch '{}'\necho '{{\"Version\":1,\"AccessKeyId\":\"AKIDPROFILE\",\"SecretAccessKey\":\"profile-secret\"}}'\n", called.display()),
    )
    .expect("write credential process");
    std::fs::write(dir.join("config"), format!("[profile crossdock-test]\ncredential_process = /bin/sh {}\n", dir.join("creds.sh").display()))
        .expect("write config");
    let relay = |profile: Option<&str>| {
        let mut c = Command::new(crossdock_tests::crossdock_bin());
        if let Some(p) = profile {
            c.args(["--profile", p]);
        }
        c.args([
            "relay",
            "--queue",
            &queue.url,
            "--dst-bucket-map",
            "src=dst",
            "--wait-time",
            "1",
            "--until-idle",
            "1",
            "--no-spot-poll",
            "--metrics-addr",
            "off",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run crossdock")
    };
    let out = relay(Some("crossdock-test"));
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    assert!(called.exists(), "the profile's credential_process was not run");
    std::fs::remove_file(&called).expect("reset");
    let out = relay(None);
    assert!(!out.status.success(), "no credentials, yet the relay succeeded: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!called.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// The relay's documented codes for a queue: one that does not exist is "not found"
/// (3) with a message naming it, one that cannot be reached is a failure (1), never a
/// usage error.
#[test]
fn a_missing_queue_exits_3_and_an_unreachable_one_1() {
    let endpoint = crossdock_tests::stack_var("AWS_ENDPOINT_URL");
    let relay = |queue: &str| crossdock(&["relay", "--queue", queue, "--dst-bucket-map", "a=b", "--until-idle", "1", "--metrics-addr", "off"]);
    let missing = relay(&format!("{endpoint}/123456789012/no-such-queue"));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(3), "{err}");
    assert!(err.contains("no-such-queue does not exist") && !err.contains("ServiceError"), "{err}");
    let unreachable = Command::new(crossdock_tests::crossdock_bin())
        .args(["relay", "--queue", "http://127.0.0.1:1/123456789012/q", "--dst-bucket-map", "a=b", "--until-idle", "1", "--metrics-addr", "off"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .expect("run");
    assert_eq!(unreachable.status.code(), Some(1), "{}", String::from_utf8_lossy(&unreachable.stderr));
}

/// Every flag reads `CROSSDOCK_<COMMAND>_<FLAG>`: an export configured by variables only
/// (a switch, a number, the table) runs as the flags would make it; a flag on the
/// command line beats its variable, and a variable beats the pipeline file.
#[tokio::test]
async fn a_variable_sets_its_flag_the_command_line_beats_it_and_it_beats_the_pipeline() {
    use crossdock_tests::resources::{TempBucket, TempTable};
    let ddb = crossdock_tests::dynamodb().await;
    let table = TempTable::name("envvar");
    crossdock_tests::pipeline::create_table(&ddb, &table.name, false, false, 100).await;
    let bucket = TempBucket::new("envvar").await;
    let dir = crossdock_tests::pipeline::work_dir("envvar");
    let pipeline = crossdock_tests::pipeline::write_pipeline(&dir, &bucket.name, "unused", "unused", &[], "");
    let text = std::fs::read_to_string(&pipeline).expect("pipeline").replacen("prefix = \"\"", "prefix = \"from-pipeline/\"", 1);
    std::fs::write(&pipeline, text).expect("write pipeline");
    let export = |args: &[&str], vars: &[(&str, &str)]| {
        let mut c = Command::new(crossdock_tests::crossdock_bin());
        c.args(["export", "--no-autoscaling"]).args(args);
        c.env("CROSSDOCK_EXPORT_TABLE", &table.name).env("CROSSDOCK_EXPORT_BATCH", "b1").env("CROSSDOCK_EXPORT_DRY_RUN", "true");
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c.output().expect("run crossdock");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{args:?} {vars:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let segments = |plan: &str| plan.lines().find(|l| l.trim_start().starts_with("segments")).map(|l| l.trim().to_string()).unwrap_or_default();
    let destination = |plan: &str| plan.lines().find(|l| l.trim_start().starts_with("destination")).map(|l| l.trim().to_string()).unwrap_or_default();

    // Variables only: a dry run (nothing exported) of the table, batch and segments they name.
    let plan = export(&["--bucket", &bucket.name], &[("CROSSDOCK_EXPORT_SEGMENTS", "6")]);
    assert!(plan.contains(&format!("plan for table {} (nothing changed)", table.name)), "{plan}");
    assert!(segments(&plan).contains(" of 6 ("), "{plan}");
    assert!(destination(&plan).contains(&format!("s3://{}/b1/{}/", bucket.name, table.name)), "{plan}");
    let listed = crossdock_tests::s3().await.list_objects_v2().bucket(&bucket.name).send().await.expect("list");
    assert_eq!(listed.key_count(), Some(0), "a dry run by variable writes nothing");

    // The command line beats the variable.
    let plan = export(&["--bucket", &bucket.name, "--segments", "3"], &[("CROSSDOCK_EXPORT_SEGMENTS", "6")]);
    assert!(segments(&plan).contains(" of 3 ("), "{plan}");

    // Variable over pipeline over default: the prefix.
    let pipeline = pipeline.to_string_lossy().into_owned();
    let plan = export(&["--pipeline", &pipeline], &[]);
    assert!(destination(&plan).contains(&format!("s3://{}/from-pipeline/b1/", bucket.name)), "{plan}");
    let plan = export(&["--pipeline", &pipeline], &[("CROSSDOCK_EXPORT_PREFIX", "from-variable/")]);
    assert!(destination(&plan).contains(&format!("s3://{}/from-variable/b1/", bucket.name)), "{plan}");
    let plan = export(&["--pipeline", &pipeline, "--prefix", "from-flag/"], &[("CROSSDOCK_EXPORT_PREFIX", "from-variable/")]);
    assert!(destination(&plan).contains(&format!("s3://{}/from-flag/b1/", bucket.name)), "{plan}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A variable counts as given: one that conflicts with a flag on the command line is a
/// usage error naming both, as two conflicting flags are (nothing is touched).
#[test]
fn a_variable_that_conflicts_with_a_flag_is_a_usage_error() {
    let out = Command::new(crossdock_tests::crossdock_bin())
        .args(["export", "--table", "T", "--bucket", "b", "--batch", "b1", "--capacity-run", "run1"])
        .env("CROSSDOCK_EXPORT_RAISE_TO", "400")
        .output()
        .expect("run crossdock");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--capacity-run") && err.contains("--raise-to"), "{err}");
}

/// `plan --from-bench` with a 1 TB what-if: every phase fits the deadline with the
/// processes it names, sized from the measured figures, not the built-in ones.
#[tokio::test]
async fn a_plan_from_measured_figures_fits_each_phase_into_the_deadline() {
    use crossdock_tests::resources::TempTable;
    let ddb = crossdock_tests::dynamodb().await;
    let table = TempTable::name("planbig");
    crossdock_tests::pipeline::create_table(&ddb, &table.name, false, true, 100).await;
    let dir = crossdock_tests::pipeline::work_dir("planbig");
    let pipeline = crossdock_tests::pipeline::write_pipeline(&dir, "unused", "unused", "unused", &[&table.name], "").to_string_lossy().into_owned();
    let figures = dir.join("figures.json");
    let measured = serde_json::json!({
        "relay_mb_per_sec": 40.0,
        "loader_rows_per_sec": 20000.0,
        "relay_scaling": [{"processes": 1, "speedup": 1.0}, {"processes": 4, "speedup": 3.6}],
        "loader_scaling": [{"processes": 1, "speedup": 1.0}, {"processes": 4, "speedup": 3.2}],
        "measured_on": "this test"
    });
    std::fs::write(&figures, measured.to_string()).expect("figures");
    let plan = |extra: &[&str]| {
        let assume = format!("{}=1TB:4000000000", table.name);
        let mut args = vec!["plan", "--pipeline", &pipeline, "--deadline", "6h", "--max-rcu", "200000", "--assume", &assume];
        args.extend(extra);
        crossdock(&args)
    };

    let out = plan(&["--from-bench", &figures.to_string_lossy(), "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let t = &json["tables"][0];
    assert_eq!(t["size_bytes"], 1_000_000_000_000u64, "{t}");
    let half = 3.0 * 3600.0;
    assert!(t["export_secs"].as_f64().unwrap_or(f64::MAX) <= half, "{t}");
    assert!(t["load_secs"].as_f64().unwrap_or(f64::MAX) <= half, "{t}");
    // 1 TB in 3 h is 92.6 MB/s: 40 × 0.9 a relay, so 3; 370,370 rows/s at 16,000 a loader, so 24.
    assert_eq!((t["relay_instances"].as_u64(), t["loader_processes"].as_u64()), (Some(3), Some(24)), "{t}");

    let text = plan(&["--from-bench", &figures.to_string_lossy()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("fits its half of the deadline") && text.contains("with 24 process(es) fits the other half"), "{text}");
    assert!(text.contains("figures measured (this test)"), "{text}");

    // Figures of another shape are refused, naming the file.
    std::fs::write(&figures, "{\"relay\": 1}").expect("figures");
    let bad = plan(&["--from-bench", &figures.to_string_lossy()]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("figures.json") && err.contains("bench-scale"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
