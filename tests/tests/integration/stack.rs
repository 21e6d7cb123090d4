//! The local stack answers through the same Rust clients crossdock uses: one real call
//! per service, each checked for a real outcome.

use crossdock_tests::resources::*;

#[tokio::test]
async fn s3_bucket_round_trip() {
    let b = TempBucket::new("stack").await;
    b.client.put_object().bucket(&b.name).key("a b+c.txt").body(b"hello".to_vec().into()).send().await.expect("put");
    let got = b.client.get_object().bucket(&b.name).key("a b+c.txt").send().await.expect("get");
    let body = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(&body[..], b"hello");
}

#[tokio::test]
async fn sqs_send_receive() {
    let q = TempQueue::new("stack", 30).await;
    q.client.send_message().queue_url(&q.url).message_body("ping").send().await.expect("send");
    let got = q.client.receive_message().queue_url(&q.url).wait_time_seconds(2).send().await.expect("receive");
    assert_eq!(got.messages().first().and_then(|m| m.body()), Some("ping"));
}

#[tokio::test]
async fn dynamodb_create_and_describe() {
    use aws_sdk_dynamodb::types::*;
    let t = TempTable::name("stack");
    let ddb = crossdock_tests::dynamodb().await;
    ddb.create_table()
        .table_name(&t.name)
        .attribute_definitions(AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().expect("def"))
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().expect("key"))
        .provisioned_throughput(ProvisionedThroughput::builder().read_capacity_units(5).write_capacity_units(5).build().expect("tp"))
        .send()
        .await
        .expect("create table");
    let d = ddb.describe_table().table_name(&t.name).send().await.expect("describe");
    let rcu = d.table().and_then(|t| t.provisioned_throughput()).and_then(|p| p.read_capacity_units());
    assert_eq!(rcu, Some(5));
}

#[tokio::test]
async fn gcs_upload_and_read() {
    use gcloud_storage::http::objects::{download::Range, get::GetObjectRequest, upload::*};
    let b = TempGcsBucket::new("stack").await;
    let upload = UploadType::Simple(Media::new("dir/x.json"));
    b.client.upload_object(&UploadObjectRequest { bucket: b.name.clone(), ..Default::default() }, b"{}".to_vec(), &upload).await.expect("upload");
    let got = b
        .client
        .download_object(&GetObjectRequest { bucket: b.name.clone(), object: "dir/x.json".into(), ..Default::default() }, &Range::default())
        .await
        .expect("download");
    assert_eq!(got, b"{}");
}

#[tokio::test]
async fn postgres_schema_and_query() {
    let s = TempPgSchema::new("stack").await;
    let pg = crossdock_tests::postgres().await;
    pg.batch_execute(&format!("CREATE TABLE \"{}\".t (v int); INSERT INTO \"{}\".t VALUES (41)", s.name, s.name)).await.expect("ddl");
    let row = pg.query_one(&format!("SELECT v + 1 FROM \"{}\".t", s.name), &[]).await.expect("query");
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test]
async fn spanner_database_query() {
    let db = TempSpannerDb::new("stack").await;
    let client = gcloud_spanner::client::Client::new(db.path.clone(), gcloud_spanner::client::ClientConfig::default())
        .await
        .expect("spanner client (SPANNER_EMULATOR_HOST)");
    let mut tx = client.single().await.expect("read-only transaction");
    let mut rows = tx.query(gcloud_spanner::statement::Statement::new("SELECT 40 + 2")).await.expect("query");
    let row = rows.next().await.expect("row").expect("one row");
    assert_eq!(row.column::<i64>(0).expect("int64"), 42);
    client.close().await;
}

#[tokio::test]
async fn bigtable_write_and_read() {
    use bigtable_rs::bigtable::BigTableConnection;
    use bigtable_rs::google::bigtable::v2::{mutation, MutateRowRequest, Mutation, ReadRowsRequest, RowSet};
    let t = TempBigtable::new("stack", &["d"]);
    let conn = BigTableConnection::new(&crossdock_tests::gcp_project(), &crossdock_tests::bigtable_instance(), false, 1, None)
        .await
        .expect("bigtable connection (BIGTABLE_EMULATOR_HOST)");
    let mut bt = conn.client();
    let table_name = bt.get_full_table_name(&t.name);
    bt.mutate_row(MutateRowRequest {
        table_name: table_name.clone(),
        row_key: b"row1".to_vec(),
        mutations: vec![Mutation {
            mutation: Some(mutation::Mutation::SetCell(mutation::SetCell {
                family_name: "d".into(),
                column_qualifier: b"c".to_vec(),
                timestamp_micros: -1,
                value: b"v".to_vec(),
            })),
        }],
        ..Default::default()
    })
    .await
    .expect("mutate row");
    let rows = bt
        .read_rows(ReadRowsRequest { table_name, rows: Some(RowSet { row_keys: vec![b"row1".to_vec()], row_ranges: vec![] }), ..Default::default() })
        .await
        .expect("read rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1[0].value, b"v");
}

#[tokio::test]
async fn pubsub_topic_exists() {
    let host = crossdock_tests::stack_var("PUBSUB_EMULATOR_HOST");
    let topic = crossdock_tests::stack_var("CROSSDOCK_GCS_EVENTS_TOPIC");
    let url = format!("http://{host}/v1/projects/{}/topics/{topic}", crossdock_tests::gcp_project());
    let resp = reqwest::get(&url).await.expect("pubsub emulator reachable");
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["name"].as_str().is_some_and(|n| n.ends_with(&topic)), "{body}");
}
