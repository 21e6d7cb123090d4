//! Harness for the catch-up (`crossdock sync`) tests: DynamoDB on moto (dynalite has no
//! streams), tables with a stream, Kinesis streams fed with records in DynamoDB's
//! Kinesis format, and reading a target back as items.

use crate::export::scan_items;
use crate::resources::cleanup;
use crate::{aws_config, stack_var, unique};
use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification, StreamViewType};
use crossdock_core::item::{AttributeValue, Item};
use crossdock_core::schema::{DynamoDbStream, KinesisStream, StreamInfo};
use crossdock_load::schema::{items_equal, typed_json, TableModel};
use crossdock_load::sink::Target;

/// moto's endpoint (`AWS_ENDPOINT_URL`), where DynamoDB has Streams.
pub fn moto_url() -> String {
    stack_var("AWS_ENDPOINT_URL")
}

/// DynamoDB on moto.
pub async fn moto_dynamodb() -> aws_sdk_dynamodb::Client {
    let conf = aws_config().await;
    aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&conf).endpoint_url(moto_url()).build())
}

/// Kinesis on moto.
pub async fn kinesis() -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&aws_config().await)
}

/// A table on moto's DynamoDB, deleted on drop.
pub struct MotoTable {
    pub name: String,
}

impl Drop for MotoTable {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(format!("moto table {name}"), async move {
            match moto_dynamodb().await.delete_table().table_name(&name).send().await {
                Ok(_) => Ok(()),
                Err(e) if format!("{e:?}").contains("ResourceNotFound") => Ok(()),
                Err(e) => Err(format!("{e:?}")),
            }
        });
    }
}

/// A Kinesis stream on moto, deleted on drop.
pub struct TempKinesis {
    pub name: String,
    pub arn: String,
}

impl TempKinesis {
    pub async fn new(prefix: &str, shards: i32) -> TempKinesis {
        let k = kinesis().await;
        let name = unique(prefix);
        k.create_stream().stream_name(&name).shard_count(shards).send().await.unwrap_or_else(|e| panic!("create stream {name}: {e:?}"));
        let d = k.describe_stream_summary().stream_name(&name).send().await.expect("describe stream");
        let arn = d.stream_description_summary().map(|s| s.stream_arn().to_string()).expect("stream arn");
        TempKinesis { name, arn }
    }

    /// Puts one record in DynamoDB's Kinesis record format (the key's `pk` as
    /// partition key, as DynamoDB hashes the key).
    pub async fn put_change(&self, table: &str, event: &str, keys: &Item, new_image: Option<&Item>, created_ms: i64) {
        let image = |it: &Item| serde_json::from_str::<serde_json::Value>(&crossdock_core::item::to_line(it)).expect("line")["Item"].clone();
        let mut dynamodb = serde_json::json!({ "ApproximateCreationDateTime": created_ms, "Keys": image(keys), "SizeBytes": 10 });
        if let Some(n) = new_image {
            dynamodb["NewImage"] = image(n);
        }
        let rec = serde_json::json!({
            "awsRegion": "us-east-1", "eventID": unique("e"), "eventName": event, "userIdentity": null,
            "recordFormat": "application/json", "tableName": table, "eventSource": "aws:dynamodb", "dynamodb": dynamodb,
        });
        let pk = match keys.get("pk") {
            Some(AttributeValue::S(s)) => s.clone(),
            other => panic!("keys without pk: {other:?}"),
        };
        kinesis()
            .await
            .put_record()
            .stream_name(&self.name)
            .partition_key(pk)
            .data(aws_sdk_kinesis::primitives::Blob::new(serde_json::to_vec(&rec).expect("json")))
            .send()
            .await
            .expect("put record");
    }
}

impl Drop for TempKinesis {
    fn drop(&mut self) {
        let name = self.name.clone();
        cleanup(format!("Kinesis stream {name}"), async move {
            kinesis().await.delete_stream().stream_name(&name).send().await.map(|_| ()).map_err(|e| format!("{e:?}"))
        });
    }
}

/// Creates a `pk` (S) table on moto, on demand, with a stream of `view` (or none);
/// returns it with the stream as the exporter records it.
pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, prefix: &str, view: Option<StreamViewType>) -> (MotoTable, Option<StreamInfo>) {
    let name = unique(prefix);
    let mut req = ddb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().expect("key"))
        .attribute_definitions(AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().expect("def"));
    if let Some(v) = view {
        req = req.stream_specification(StreamSpecification::builder().stream_enabled(true).stream_view_type(v).build().expect("spec"));
    }
    let out = req.send().await.unwrap_or_else(|e| panic!("create table {name}: {e:?}"));
    let d = out.table_description().expect("description");
    let stream = crossdock_export::stream::stream_of(d, &[]);
    (MotoTable { name }, stream)
}

/// The stream info of a Kinesis destination.
pub fn kinesis_info(arn: &str) -> StreamInfo {
    StreamInfo { dynamodb: None, kinesis: vec![KinesisStream { arn: arn.into(), precision: Some("MILLISECOND".into()) }] }
}

/// The DynamoDB stream of a recorded [`StreamInfo`].
pub fn dynamodb_stream(info: &Option<StreamInfo>) -> &DynamoDbStream {
    info.as_ref().and_then(|s| s.dynamodb.as_ref()).expect("table has a stream")
}

/// An item with every attribute the sync tests use: `pk` S, `n` N, `s` S, `tags` SS, `m` M.
pub fn item(pk: &str, n: i64) -> Item {
    let mut m = Item::new();
    m.insert("v".to_string(), AttributeValue::N(n.to_string()));
    let mut it = Item::new();
    it.insert("pk".into(), AttributeValue::S(pk.into()));
    it.insert("n".into(), AttributeValue::N(n.to_string()));
    it.insert("s".into(), AttributeValue::S(format!("{pk} at {n} é日本")));
    it.insert("tags".into(), AttributeValue::Ss(vec![format!("t{}", n % 3), "x".into()]));
    it.insert("m".into(), AttributeValue::M(m));
    it
}

/// The key of `pk`.
pub fn keys(pk: &str) -> Item {
    let mut it = Item::new();
    it.insert("pk".into(), AttributeValue::S(pk.into()));
    it
}

pub async fn put(ddb: &aws_sdk_dynamodb::Client, table: &str, it: &Item) {
    ddb.put_item().table_name(table).set_item(Some(crossdock_export::convert::to_sdk_item(it))).send().await.expect("put item");
}

pub async fn delete(ddb: &aws_sdk_dynamodb::Client, table: &str, pk: &str) {
    ddb.delete_item().table_name(table).set_key(Some(crossdock_export::convert::to_sdk_item(&keys(pk)))).send().await.expect("delete item");
}

/// Every item of the table (fresh Scan).
pub async fn scan(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<Item> {
    scan_items(ddb, table).await.into_iter().map(|it| crossdock_export::convert::from_sdk_item(it).expect("known types")).collect()
}

/// Every row of the target as items.
pub async fn read_back<T: Target>(t: &T, model: &TableModel) -> Vec<Item> {
    t.read_all(model).await.expect("read all").iter().map(|r| model.to_item(r).expect("decode row")).collect()
}

/// Panics naming the first difference between the source items and the target's.
pub fn assert_same(what: &str, source: &[Item], target: &[Item]) {
    let key = |i: &Item| typed_json(&i["pk"]);
    let mut src: std::collections::BTreeMap<String, &Item> = source.iter().map(|i| (key(i), i)).collect();
    let mut extra = Vec::new();
    for t in target {
        match src.remove(&key(t)) {
            Some(s) => assert!(items_equal(s, t), "{what}: item differs\nsource: {s:?}\ntarget: {t:?}"),
            None => extra.push(key(t)),
        }
    }
    assert!(extra.is_empty() && src.is_empty(), "{what}: extra in target {extra:?}, missing from target {:?}", src.keys().collect::<Vec<_>>());
}
