//! Google sign-in through workload identity federation, end to end against loopback
//! stand-ins: a fake STS (+ impersonation endpoint) and an auth-checking proxy in front
//! of fake-gcs-server that refuses any request without the token STS minted. No
//! emulator variable is set for GCS in these processes: the endpoint comes from
//! CROSSDOCK_GCS_ENDPOINT, which is signed in to.

use crossdock_core::Codec;
use crossdock_tests::gauth::{aws_credential_source, FakeImdsV2, FakeSts, GrpcRecorder, Subject, AUDIENCE, IMDS_ADDR};
use crossdock_tests::load::{all_types_items, pipeline_toml, schema, write_export};
use crossdock_tests::pipeline::{work_dir, Proc};
use crossdock_tests::proxy::FaultProxy;
use crossdock_tests::relay::{FakeExport, RelayProcess, Wired};
use crossdock_tests::resources::{TempGcsBucket, TempPgSchema};
use std::time::Duration;

const SA: &str = "loader@crossdock-test.iam.gserviceaccount.com";

/// A file-source credential (the subject token in a file, as a Kubernetes projected
/// service-account token is) impersonating [`SA`].
fn file_credential(sts: &FakeSts, dir: &std::path::Path, subject: &str) -> std::path::PathBuf {
    let token_file = dir.join("subject-token");
    std::fs::write(&token_file, subject).expect("subject token");
    sts.credential_file(dir, "external-account.json", serde_json::json!({ "file": token_file }), Some(SA))
}

/// Environment of a child signed in with `cred` and reaching GCS only through `proxy`.
fn signed_env<'a>(cred: &'a str, proxy: &'a FaultProxy) -> Vec<(&'a str, &'a str)> {
    // An empty emulator variable counts as unset: the child must not fall back to the
    // emulator's anonymous access.
    vec![("STORAGE_EMULATOR_HOST", ""), ("CROSSDOCK_GCS_ENDPOINT", proxy.url.as_str()), ("GOOGLE_APPLICATION_CREDENTIALS", cred)]
}

async fn load_through(dir: &std::path::Path, name: &str, env: &[(&str, &str)], extra_env: &[(&str, &str)]) -> (std::process::ExitStatus, String, String) {
    load_without(dir, name, env, extra_env, &[]).await
}

/// [`load_through`] with the variables `unset` taken out of the child's environment.
async fn load_without(
    dir: &std::path::Path,
    name: &str,
    env: &[(&str, &str)],
    extra_env: &[(&str, &str)],
    unset: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let bucket = TempGcsBucket::new(name).await;
    let table = crossdock_tests::unique_ident("fed");
    let export = write_export(&bucket.client, &bucket.name, "b", schema(&table, true, true), all_types_items(40, true), 2, Codec::Zstd).await;
    let pg = TempPgSchema::new(name).await;
    let pipeline = dir.join(format!("{name}.toml"));
    std::fs::write(&pipeline, pipeline_toml("postgres", &pg.name, "", "")).expect("pipeline");
    let args: Vec<String> = vec![
        "load".into(),
        "--output".into(),
        "json".into(),
        "--marker".into(),
        export.marker_url.clone(),
        "--pipeline".into(),
        pipeline.display().to_string(),
    ];
    let mut all: Vec<(&str, &str)> = env.to_vec();
    all.extend_from_slice(extra_env);
    let mut p = Proc::spawn_without(dir, name, &args, &all, unset);
    let status = p.wait(Duration::from_secs(120)).await;
    let out = std::fs::read_to_string(&p.stdout).unwrap_or_default();
    (status, out, p.log_text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_load_and_validate_sign_in_with_a_file_sourced_external_account() {
    let subject = format!("oidc-{}", crossdock_tests::unique("subj"));
    let sts = FakeSts::start(Subject::Exact(subject.clone())).await;
    let dir = work_dir("gauth-file");
    let cred = file_credential(&sts, &dir, &subject);
    let cred_s = cred.display().to_string();
    let proxy = FaultProxy::requiring(&crossdock_tests::stack_var("STORAGE_EMULATOR_HOST"), &sts.sa_token).await;
    let env = signed_env(&cred_s, &proxy);

    // The relay copies a table through the proxy: every GCS call carries the token.
    let w = Wired::new("gauthrelay", 30, None).await;
    let e = FakeExport::new("fed", "Federated", 1, 2, 200);
    e.put_all(&w.src.client, &w.src.name, "").await;
    let mut args = w.cli_args();
    args.extend(["--until-idle", "3"].map(String::from));
    let log = dir.join("relay.log");
    let mut relay = RelayProcess::spawn_with_env(&args, &log, &env);
    let status = relay.wait(Duration::from_secs(120)).await.expect("the relay exits when idle");
    assert!(status.success(), "relay failed: {}", relay.log_text());
    e.verify_in_gcs(&crossdock_tests::gcs().await, &w.gcs.name, Codec::Zstd).await;
    assert!(proxy.authorized() > 0 && proxy.rejected() == 0, "authorized {} rejected {}: {}", proxy.authorized(), proxy.rejected(), relay.log_text());
    assert!(sts.exchanges() >= 1 && sts.impersonations() >= 1, "STS {} impersonation {}", sts.exchanges(), sts.impersonations());

    // A load reads its marker and files through the proxy too.
    let before = proxy.authorized();
    let (status, out, log) = load_through(&dir, "gauthload", &env, &[]).await;
    assert!(status.success(), "load failed: {log}\n{out}");
    let summary: serde_json::Value = serde_json::from_str(&out).expect("json summary");
    assert_eq!(summary["rows_in_target"], 40, "{summary}");
    assert!(proxy.authorized() > before && proxy.rejected() == 0);

    // validate --online names the identity it signed in as.
    let pipeline = crossdock_tests::pipeline::write_pipeline(&dir, &w.src.name, &w.gcs.name, "public", &["Federated"], "");
    let out = std::process::Command::new(crossdock_tests::crossdock_bin())
        .args(["pipeline", "validate", "--online"])
        .arg(&pipeline)
        .envs(env.iter().copied())
        .output()
        .expect("run validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("signed in as external account {AUDIENCE}")) && text.contains(&format!("impersonating {SA}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_fails_naming_the_file_and_the_sts_step() {
    let sts = FakeSts::start(Subject::Exact("the-right-token".into())).await;
    let dir = work_dir("gauth-wrong");
    let cred = file_credential(&sts, &dir, "a-token-from-somewhere-else");
    let cred_s = cred.display().to_string();
    let proxy = FaultProxy::requiring(&crossdock_tests::stack_var("STORAGE_EMULATOR_HOST"), &sts.sa_token).await;
    let env = signed_env(&cred_s, &proxy);

    let w = Wired::new("gauthwrong", 30, None).await;
    let mut args = w.cli_args();
    args.extend(["--until-idle", "3"].map(String::from));
    let log = dir.join("relay.log");
    let mut relay = RelayProcess::spawn_with_env(&args, &log, &env);
    let status = relay.wait(Duration::from_secs(60)).await.expect("the relay gives up at sign-in");
    let text = relay.log_text();
    assert!(!status.success(), "{text}");
    for want in ["STS token exchange at", &format!("{}/v1/token", sts.url), &cred_s, "external account"] {
        assert!(text.contains(want), "the error names {want:?}: {text}");
    }

    let (status, _, log) = load_through(&dir, "gauthwrongload", &env, &[]).await;
    assert!(!status.success());
    assert!(log.contains("GCS: Google sign-in as external account") && log.contains("STS token exchange"), "{log}");
    assert_eq!(proxy.authorized(), 0, "nothing reached GCS");
    assert!(!sts.refused().is_empty());

    // No credentials at all outside an emulator: an error saying so, never anonymous access.
    let home = dir.join("empty-home");
    std::fs::create_dir_all(&home).expect("home");
    let home_s = home.display().to_string();
    let none =
        [("STORAGE_EMULATOR_HOST", ""), ("CROSSDOCK_GCS_ENDPOINT", proxy.url.as_str()), ("GOOGLE_APPLICATION_CREDENTIALS", ""), ("HOME", home_s.as_str())];
    let (status, _, log) = load_through(&dir, "gauthnone", &none, &[]).await;
    assert!(!status.success());
    assert!(log.contains("no Google credentials"), "{log}");
    assert_eq!(proxy.authorized() + proxy.rejected(), 0, "no anonymous request was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_signs_in_with_an_aws_sourced_external_account() {
    let key = format!("AKID{}", crossdock_tests::unique("x").replace(['-', '_'], "").to_uppercase());
    let sts = FakeSts::start(Subject::Aws { access_key_id: key.clone() }).await;
    let dir = work_dir("gauth-aws");
    // No impersonation: the federated STS token itself is what GCS must see.
    let cred = sts.credential_file(&dir, "aws.json", aws_credential_source(), None);
    let cred_s = cred.display().to_string();
    let proxy = FaultProxy::requiring(&crossdock_tests::stack_var("STORAGE_EMULATOR_HOST"), &sts.sts_token).await;
    let env = signed_env(&cred_s, &proxy);
    let aws = [("AWS_ACCESS_KEY_ID", key.as_str()), ("AWS_SECRET_ACCESS_KEY", "secret"), ("AWS_SESSION_TOKEN", "session"), ("AWS_REGION", "eu-west-1")];
    let (status, out, log) = load_through(&dir, "gauthaws", &env, &aws).await;
    assert!(status.success(), "load failed: {log}\n{out}; STS refused {:?}", sts.refused());
    assert!(proxy.authorized() > 0 && proxy.rejected() == 0);
    assert!(sts.exchanges() >= 1 && sts.impersonations() == 0);

    // Signed by another key: STS refuses the subject token and the error says so.
    let other = [("AWS_ACCESS_KEY_ID", "AKIDSOMEONEELSE"), ("AWS_SECRET_ACCESS_KEY", "secret"), ("AWS_REGION", "eu-west-1")];
    let (status, _, log) = load_through(&dir, "gauthawsbad", &env, &other).await;
    assert!(!status.success());
    assert!(log.contains("STS token exchange") && log.contains("aws1"), "{log}");
}

/// The AWS source as on a bare EC2 instance: no AWS variables, so the region and the
/// role's credentials come from the instance metadata service, through an IMDSv2
/// session token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_signs_in_with_aws_credentials_from_the_instance_metadata_service() {
    let key = format!("AKIDIMDS{}", crossdock_tests::unique("x").replace(['-', '_'], "").to_uppercase());
    let Some(imds) = FakeImdsV2::start("relay-role", "eu-west-1", &key).await else {
        // Needs 169.254.169.254 on an interface, which only root can add.
        eprintln!("SKIPPED: cannot listen on {IMDS_ADDR}:80; run `scripts/local-stack up` as root to add the address to lo");
        return;
    };
    let sts = FakeSts::start(Subject::Aws { access_key_id: key.clone() }).await;
    let dir = work_dir("gauth-imds");
    let cred = sts.credential_file(&dir, "aws-imds.json", aws_credential_source(), None);
    let cred_s = cred.display().to_string();
    let proxy = FaultProxy::requiring(&crossdock_tests::stack_var("STORAGE_EMULATOR_HOST"), &sts.sts_token).await;
    let env = signed_env(&cred_s, &proxy);
    // The loader reads PostgreSQL and GCS only; no AWS variable may reach gcloud-auth.
    let unset = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"];
    let (status, out, log) = load_without(&dir, "gauthimds", &env, &[], &unset).await;
    assert!(status.success(), "load failed: {log}\n{out}; STS refused {:?}; IMDS served {:?}", sts.refused(), imds.served());
    assert!(proxy.authorized() > 0 && proxy.rejected() == 0);
    assert!(sts.exchanges() >= 1, "STS refused {:?}", sts.refused());
    let served = imds.served();
    assert_eq!(served.first().map(String::as_str), Some("PUT /latest/api/token 200"), "{served:?}");
    for want in ["GET /latest/meta-data/iam/security-credentials/relay-role 200", "GET /latest/meta-data/placement/availability-zone 200"] {
        assert!(served.iter().any(|s| s == want), "{want} not in {served:?}");
    }
    assert!(!served.iter().any(|s| s.ends_with(" 401")), "every GET carried the session token: {served:?}");
}

/// The gRPC clients: Spanner (data and admin) and Pub/Sub run on gcloud-gax channels
/// built from [`crossdock_gcp::Gcp::grpc_environment`]; Bigtable data goes through
/// bigtable_rs with [`crossdock_gcp::Gcp::bigtable_token_provider`], Bigtable admin
/// through [`crossdock_gcp::Gcp::authorization`]. Google's endpoints cannot be replaced
/// by a local one in those crates (fixed TLS roots and hosts), so the channels are
/// pointed at a recorder here, with the same environment and token source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_send_the_federated_token() {
    use gcloud_gax::conn::{ConnectionManager, ConnectionOptions};
    use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient;
    use gcloud_googleapis::spanner::v1::spanner_client::SpannerClient;
    let subject = "grpc-subject".to_string();
    let sts = FakeSts::start(Subject::Exact(subject.clone())).await;
    let dir = work_dir("gauth-grpc");
    let cred = file_credential(&sts, &dir, &subject);
    let gcp = crossdock_gcp::Gcp::from_env().with_credentials_file(&cred);
    let want = format!("Bearer {}", sts.sa_token);
    let recorder = GrpcRecorder::start().await;
    // A variable that is never set: the environment the clients get outside an emulator.
    let env = gcp.grpc_environment("CROSSDOCK_TEST_NO_EMULATOR").await.expect("signed in");
    let cm = ConnectionManager::new(1, "127.0.0.1", &recorder.url, &env, &ConnectionOptions::default()).await.expect("channel");
    let s = SpannerClient::new(cm.conn())
        .get_session(gcloud_googleapis::spanner::v1::GetSessionRequest { name: "projects/p/instances/i/databases/d/sessions/s".into() })
        .await;
    assert_eq!(s.expect_err("recorder answers UNIMPLEMENTED").code(), tonic::Code::Unimplemented);
    let p = SubscriberClient::new(cm.conn())
        .pull(gcloud_googleapis::pubsub::v1::PullRequest { subscription: "projects/p/subscriptions/s".into(), max_messages: 1, ..Default::default() })
        .await;
    assert_eq!(p.expect_err("recorder answers UNIMPLEMENTED").code(), tonic::Code::Unimplemented);
    let calls = recorder.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for (path, auth) in &calls {
        assert_eq!(auth.as_deref(), Some(want.as_str()), "{path}");
    }
    assert!(calls[0].0.ends_with("Spanner/GetSession") && calls[1].0.ends_with("Subscriber/Pull"), "{calls:?}");

    let bt = gcp.bigtable_token_provider().await.expect("bigtable tokens");
    let t = bt.token(&["https://www.googleapis.com/auth/bigtable.data"]).await.expect("token");
    assert_eq!(format!("Bearer {}", t.as_str()), want, "bigtable_rs sends `Bearer {{token}}`");
    assert_eq!(gcp.authorization().await.expect("admin token"), want);
    assert_eq!(sts.exchanges(), 1, "one sign-in serves every client");
    assert_eq!(gcp.identity().await.expect("identity").email.as_deref(), Some(SA));
}

/// Each step of a federated sign-in that can fail is named: the subject token (file
/// missing), the STS exchange (token refused) and the impersonation (not allowed).
#[tokio::test]
async fn sign_in_errors_name_the_failing_step() {
    let sts = FakeSts::start(Subject::Exact("right".into())).await;
    let dir = work_dir("gauth-steps");
    let sign_in =
        |cred: std::path::PathBuf| async move { crossdock_gcp::Gcp::from_env().with_credentials_file(cred).identity().await.expect_err("refused").to_string() };

    let gone = dir.join("no-such-token");
    let cred = sts.credential_file(&dir, "missing.json", serde_json::json!({ "file": gone }), Some(SA));
    let text = sign_in(cred).await;
    assert!(text.contains(&format!("getting the subject token from file {}", gone.display())), "{text}");

    let cred = file_credential(&sts, &dir, "wrong");
    let text = sign_in(cred).await;
    assert!(text.contains(&format!("STS token exchange at {}/v1/token", sts.url)) && text.contains("invalid_grant"), "{text}");

    let token_file = dir.join("subject-token");
    std::fs::write(&token_file, "right").expect("token");
    let denied = "denied@crossdock-test.iam.gserviceaccount.com";
    let cred = sts.credential_file(&dir, "denied.json", serde_json::json!({ "file": token_file }), Some(denied));
    let text = sign_in(cred).await;
    assert!(text.contains("service-account impersonation at") && text.contains(denied) && text.contains("PERMISSION_DENIED"), "{text}");

    let cred = dir.join("not-json.json");
    std::fs::write(&cred, "{ not json").expect("write");
    let text = sign_in(cred.clone()).await;
    assert!(text.contains(&format!("Google credentials {}: not a credential file", cred.display())), "{text}");
}
