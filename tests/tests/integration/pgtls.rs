//! PostgreSQL over TLS: the local stack's server has a certificate from the stack's own
//! CA (`CROSSDOCK_PG_CA`); `sslmode` and `sslrootcert` behave as in libpq.

use crossdock_load::schema::TargetKind;
use crossdock_load::sink::postgres::PostgresTarget;
use crossdock_load::sink::Target;
use crossdock_tests::resources::TempPgSchema;

fn url(params: &str) -> String {
    format!("{}?{params}", crossdock_tests::stack_var("CROSSDOCK_PG_URL"))
}

/// A CA the server's certificate does not come from.
fn other_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let ca = dir.join("other-ca.crt");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=not the stack's CA", "-keyout"])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ca
}

#[tokio::test]
async fn verify_full_against_the_stacks_ca_loads_and_a_wrong_ca_is_refused() {
    let schema = TempPgSchema::new("tls").await;
    let ca = crossdock_tests::stack_var("CROSSDOCK_PG_CA");
    let t = PostgresTarget::connect(&url(&format!("sslmode=verify-full&sslrootcert={ca}")), &schema.name).await.expect("verify-full with the stack's CA");
    let (model, items) = {
        let s = crossdock_tests::load::schema(&crossdock_tests::unique_ident("tls"), true, false);
        let items = crossdock_tests::load::all_types_items(20, true);
        let mut stats = crossdock_core::manifest::TypeStats::default();
        for i in &items {
            stats.observe(i, |v| crossdock_load::schema::typed_json(v).len());
        }
        (crossdock_load::schema::TableModel::infer(TargetKind::Postgres, &s, &stats, None).expect("model"), items)
    };
    t.ensure_table(&model).await.expect("table over TLS");
    let rows: Vec<_> = items.iter().map(|i| model.to_row(i).expect("row")).collect();
    t.write_batch(&model, &rows).await.expect("COPY over TLS");
    assert_eq!(t.count_rows(&model).await.expect("count"), 20);
    // `require` encrypts without checking the certificate, as libpq does.
    PostgresTarget::connect(&url("sslmode=require"), &schema.name).await.expect("require");

    let dir = std::env::temp_dir().join(crossdock_tests::unique("tls"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let wrong = other_ca(&dir);
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = PostgresTarget::connect(&url(&format!("sslmode={mode}&sslrootcert={}", wrong.display())), &schema.name)
            .await
            .err()
            .unwrap_or_else(|| panic!("{mode} with a wrong CA was accepted"));
        let text = e.to_string();
        assert!(text.contains("certificate") || text.contains("UnknownIssuer"), "{mode}: {text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
