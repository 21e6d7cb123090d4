//! Harness additions for the load tests: write a relayed export (data parts +
//! `_SUCCESS`) straight into a fake-gcs bucket with crossdock_core's types, so the
//! loader is tested without the exporter or the relay; sample schemas and items with
//! every DynamoDB type.

use crossdock_core::item::{AttributeValue, Item};
use crossdock_core::layout::ExportId;
use crossdock_core::marker::SuccessMarker;
use crossdock_core::schema::TableSchema;
use crossdock_core::Codec;
use gcloud_storage::http::objects::upload::{UploadObjectRequest, UploadType};
use gcloud_storage::http::objects::Object;

/// An export written into a GCS bucket.
#[derive(Debug, Clone)]
pub struct WrittenExport {
    pub export: ExportId,
    pub marker_url: String,
    pub marker: SuccessMarker,
    /// The items, in file order.
    pub items: Vec<Item>,
}

pub use crossdock_load::conformance::{all_types_items, sample_schema as schema};

/// Simple items: `pk` [+ `sk`], `status`, and `width` string attributes `a000…`.
pub fn wide_items(n: usize, width: usize, with_sort_key: bool) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let mut item = Item::new();
            item.insert("pk".into(), AttributeValue::S(format!("p{i:06}")));
            if with_sort_key {
                item.insert("sk".into(), AttributeValue::N((i % 5).to_string()));
            }
            item.insert("status".into(), AttributeValue::S(format!("s{}", i % 4)));
            for a in 0..width {
                item.insert(format!("a{a:03}"), AttributeValue::S(format!("v{i}-{a}")));
            }
            item
        })
        .collect()
}

/// Uploads an object (single-shot multipart).
pub async fn put(client: &gcloud_storage::client::Client, bucket: &str, key: &str, body: Vec<u8>) {
    let req = UploadObjectRequest { bucket: bucket.into(), ..Default::default() };
    let object = Object { name: key.into(), ..Default::default() };
    client.upload_object(&req, body, &UploadType::Multipart(Box::new(object))).await.unwrap_or_else(|e| panic!("upload gs://{bucket}/{key}: {e:?}"));
}

/// Reads an object, `None` if absent.
pub async fn get(client: &gcloud_storage::client::Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    use gcloud_storage::http::objects::{download::Range, get::GetObjectRequest};
    client.download_object(&GetObjectRequest { bucket: bucket.into(), object: key.into(), ..Default::default() }, &Range::default()).await.ok()
}

/// Lists object names under a prefix.
pub async fn list(client: &gcloud_storage::client::Client, bucket: &str, prefix: &str) -> Vec<String> {
    use gcloud_storage::http::objects::list::ListObjectsRequest;
    let page =
        client.list_objects(&ListObjectsRequest { bucket: bucket.into(), prefix: Some(prefix.into()), ..Default::default() }).await.expect("list objects");
    page.items.unwrap_or_default().into_iter().map(|o| o.name).collect()
}

/// Writes `items` as `files` data parts with `codec`, then the `_SUCCESS` marker
/// (type statistics computed from the items, as the exporter does).
pub async fn write_export(
    client: &gcloud_storage::client::Client,
    bucket: &str,
    batch: &str,
    schema: TableSchema,
    items: Vec<Item>,
    files: usize,
    codec: Codec,
) -> WrittenExport {
    let gcs = crossdock_load::gcs::Gcs::new(client.clone(), bucket);
    let marker = crossdock_load::conformance::write_export(&gcs, batch, schema, &items, files, codec).await;
    let export = marker.export.clone();
    WrittenExport { marker_url: format!("gs://{bucket}/{}", export.marker_key()), export, marker, items }
}

/// (Re)writes the `_SUCCESS` object of `marker`.
pub async fn write_marker(client: &gcloud_storage::client::Client, bucket: &str, marker: &SuccessMarker) {
    put(client, bucket, &marker.export.marker_key(), serde_json::to_vec_pretty(marker).expect("marker json")).await;
}

pub fn hex_sha(raw: &[u8]) -> String {
    crossdock_core::stamp::sha256_hex(raw)
}

/// A pipeline file for the local stack with the given relational target kind
/// (`postgres` or `spanner`), PG schema / Spanner database, and extra TOML appended.
pub fn pipeline_toml(relational: &str, pg_schema: &str, spanner_db: &str, extra: &str) -> String {
    let rel = match relational {
        "spanner" => format!("kind = \"spanner\"\ndatabase = \"{spanner_db}\""),
        _ => format!("kind = \"postgres\"\nurl = \"{}\"\nschema = \"{pg_schema}\"", crate::stack_var("CROSSDOCK_PG_URL")),
    };
    format!(
        "name = \"t\"\n[source]\nbucket = \"unused\"\n[relay]\ncodec = \"zstd\"\n[targets.relational]\n{rel}\n[targets.wide_column]\nkind = \"bigtable\"\nproject = \"{}\"\ninstance = \"{}\"\ncreate_tables = true\n{extra}\n",
        crate::gcp_project(),
        crate::bigtable_instance()
    )
}

/// The stack's Spanner emulator, on database `db`.
pub async fn spanner(db: &crate::resources::TempSpannerDb) -> crossdock_load::sink::spanner::SpannerTarget {
    crossdock_load::sink::spanner::SpannerTarget::connect(&crossdock_gcp::Gcp::from_env(), &db.path).await.expect("connect spanner")
}

/// The stack's PostgreSQL, tables in `schema`.
pub async fn postgres(schema: &crate::resources::TempPgSchema) -> crossdock_load::sink::postgres::PostgresTarget {
    crossdock_load::sink::postgres::PostgresTarget::connect(&crate::stack_var("CROSSDOCK_PG_URL"), &schema.name).await.expect("connect postgres")
}

/// The stack's Bigtable emulator (column family `d`, tables created on demand).
pub async fn bigtable() -> crossdock_load::sink::bigtable::BigtableTarget {
    crossdock_load::sink::bigtable::BigtableTarget::connect(
        &crossdock_gcp::Gcp::from_env(),
        &crate::gcp_project(),
        &crate::bigtable_instance(),
        "d",
        1_700_000_000_000_000,
        true,
    )
    .await
    .expect("connect bigtable")
}
