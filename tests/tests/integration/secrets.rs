//! Credentials never reach crossdock's output: a webhook URL's token and a PostgreSQL
//! password, whether given on the command line, through the environment or inline in
//! the pipeline file, appear in no log line, error or help text, whatever the format.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Stands for a Slack incoming-webhook token (the secret is the URL's path).
const TOKEN: &str = "SECRETTOKEN";
/// Nothing listens on port 1: posting fails at once with "connection refused".
const HOOK: &str = "http://127.0.0.1:1/services/T000/B000/SECRETTOKEN";
const PG_PASSWORD: &str = "PgSecretPw42";

fn pg_url(host_port: &str) -> String {
    format!("postgres://app:{PG_PASSWORD}@{host_port}/orders")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(crossdock_tests::unique("secrets"));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        TempDir(dir)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn pipeline(src: &str, dst: &str, pg_url: &str) -> String {
    format!("name = \"secrets\"\n[source]\nbucket = \"{src}\"\n[relay]\nbucket = \"{dst}\"\n[targets.relational]\nkind = \"postgres\"\nurl = \"{pg_url}\"\n")
}

/// A crossdock command that cannot reach any real service: GCS goes to a closed port,
/// and the test's own environment does not leak in a notify URL.
fn crossdock() -> Command {
    let mut c = Command::new(crossdock_tests::crossdock_bin());
    c.env("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1").env_remove("CROSSDOCK_NOTIFY_URL");
    c
}

/// Everything the process wrote, for the assertion messages and the checks.
fn text(out: &Output) -> String {
    format!("--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[track_caller]
fn assert_no_secret(out: &Output) {
    let all = text(out);
    for secret in [TOKEN, PG_PASSWORD] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
}

#[test]
fn a_failed_webhook_post_logs_neither_token_nor_password() {
    let dir = TempDir::new();
    // The PostgreSQL URL comes from the environment: its password is in the pipeline
    // once built, even though the file does not hold it.
    let p = dir.file("p.toml", &pipeline("dumps", "landing", "${CROSSDOCK_SECRETS_PG_URL}"));
    // Not a `_SUCCESS` key: the load fails before any network call but the webhook's.
    let marker = "gs://landing/b1/Orders/2026-11-23T06-00-00Z/part-00000-00000.jsonl";
    for format in ["text", "json"] {
        let out = crossdock()
            .args(["load", "--no-progress", "--marker", marker, "--notify-url", HOOK, "--pipeline"])
            .arg(&p)
            .env("CROSSDOCK_SECRETS_PG_URL", pg_url("127.0.0.1:1"))
            .env("CROSSDOCK_LOG_FORMAT", format)
            // Every crate's debug output too: a dependency logging the URL would leak it.
            .env("CROSSDOCK_LOG", "debug")
            .output()
            .expect("run crossdock load");
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let all = text(&out);
        // The post was attempted, failed, and was reported — by host only.
        assert!(all.contains("notification could not be posted") && all.contains("http://127.0.0.1:1/…"), "{format}:\n{all}");
        assert_no_secret(&out);
    }
}

#[test]
fn help_does_not_show_a_notify_url_from_the_environment() {
    for sub in ["load", "relay"] {
        let out = crossdock().args([sub, "--help"]).env("CROSSDOCK_NOTIFY_URL", HOOK).output().expect("run crossdock --help");
        assert!(out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("CROSSDOCK_NOTIFY_URL"), "{}", text(&out));
        assert_no_secret(&out);
    }
}

#[test]
fn pipeline_errors_do_not_echo_credentials() {
    let dir = TempDir::new();
    let validate = |name: &str, pg: &str| -> Output {
        let path = dir.file(name, &pipeline("dumps", "landing", pg));
        crossdock().args(["pipeline", "validate"]).arg(&path).env_remove("CROSSDOCK_SECRETS_UNSET").output().expect("run")
    };
    // A `${VAR}` that is not set, in a URL whose password is written inline.
    let out = validate("unset.toml", &format!("{}/${{CROSSDOCK_SECRETS_UNSET}}", pg_url("db.internal:5432")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CROSSDOCK_SECRETS_UNSET is not set") && err.contains("targets.relational.url"), "{}", text(&out));
    assert_no_secret(&out);
    // The URL pasted between the braces, and a brace never closed.
    for (name, pg) in [("pasted.toml", format!("${{{}}}", pg_url("db:5432"))), ("open.toml", format!("{}/${{DB", pg_url("db:5432")))] {
        let out = validate(name, &pg);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("targets.relational.url"), "{name}: {}", text(&out));
        assert_no_secret(&out);
    }
    // Valid: the summary names the targets' kinds, not their URLs.
    let out = validate("ok.toml", &pg_url("db:5432"));
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&out);
}

/// Needs the local stack (the buckets must exist for the check to reach PostgreSQL).
#[tokio::test]
async fn an_unreachable_target_is_named_without_its_password() {
    use crossdock_tests::resources::{TempBucket, TempGcsBucket};
    let src = TempBucket::new("secrets").await;
    let dst = TempGcsBucket::new("secrets").await;
    let dir = TempDir::new();
    let path: &Path = &dir.file("p.toml", &pipeline(&src.name, &dst.name, "${CROSSDOCK_SECRETS_PG_URL}"));
    let out = Command::new(crossdock_tests::crossdock_bin())
        .args(["pipeline", "validate", "--online"])
        .arg(path)
        .env("CROSSDOCK_SECRETS_PG_URL", pg_url("127.0.0.1:1"))
        .env("CROSSDOCK_LOG", "debug")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postgres target is not reachable") && err.contains("postgres://app:REDACTED@127.0.0.1:1/…"), "{}", text(&out));
    assert_no_secret(&out);
}
