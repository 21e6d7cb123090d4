//! The `crossdock` binary itself: help, exit codes, pipeline validation.

use std::process::Command;

fn crossdock(args: &[&str]) -> std::process::Output {
    Command::new(crossdock_tests::crossdock_bin()).args(args).output().expect("run crossdock")
}

#[test]
fn help_lists_every_subcommand() {
    let out = crossdock(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["export", "relay", "load", "plan", "verify", "pipeline"] {
        assert!(text.contains(sub), "--help does not mention {sub}:\n{text}");
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
