//! Harness additions for the load tests: write a relayed export (data parts +
//! `_SUCCESS`) straight into a fake-gcs bucket with crossdock_core's types, so the
//! loader is tested without the exporter or the relay; sample schemas and items with
//! every DynamoDB type.

use crossdock_core::item::{to_line, AttributeValue, Item};
use crossdock_core::layout::{DumpFile, ExportId, Timestamp};
use crossdock_core::manifest::TypeStats;
use crossdock_core::marker::{MarkerFile, SuccessMarker, Totals};
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

fn encoded_len(v: &AttributeValue) -> usize {
    let mut item = Item::new();
    item.insert(String::new(), v.clone());
    to_line(&item).len()
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
    let export = ExportId::new(batch, &schema.table, Timestamp::now()).expect("valid export id");
    let mut stats = TypeStats::default();
    for it in &items {
        stats.observe(it, encoded_len);
    }
    let per = items.len().div_ceil(files.max(1)).max(1);
    let mut marker_files = Vec::new();
    let mut totals = Totals::default();
    for (p, chunk) in items.chunks(per).enumerate() {
        let mut raw = Vec::new();
        for it in chunk {
            raw.extend(to_line(it).into_bytes());
            raw.push(b'\n');
        }
        let stored = crossdock_load::marker::compress(codec, &raw).await.expect("compress");
        let file = DumpFile::Part { segment: 0, part: p as u32, codec };
        let f = MarkerFile {
            name: file.s3_name(),
            segment: 0,
            part: p as u32,
            items: chunk.len() as u64,
            raw_bytes: raw.len() as u64,
            stored_bytes: stored.len() as u64,
            sha256: hex_sha(&raw),
            stored_crc32c: Some(crossdock_core::marker::Crc32c::of(&stored)),
        };
        put(client, bucket, &export.gcs_key(&file, codec), stored).await;
        totals.files += 1;
        totals.items += f.items;
        totals.raw_bytes += f.raw_bytes;
        totals.stored_bytes += f.stored_bytes;
        marker_files.push(f);
    }
    let marker = SuccessMarker {
        format_version: crossdock_core::FORMAT_VERSION,
        export: export.clone(),
        codec,
        schema,
        files: marker_files,
        totals,
        type_stats: stats,
        written_at: "2026-01-01T00:00:00Z".into(),
        written_by: "crossdock-tests".into(),
    };
    write_marker(client, bucket, &marker).await;
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
