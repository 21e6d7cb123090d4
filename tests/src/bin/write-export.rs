//! Writes exports for the benchmark scripts through the project's own code, so no
//! script builds `_schema.json`, a manifest or a `_SUCCESS` marker by hand.
//!
//! ```text
//! write-export s3 BUCKET BATCH TABLE TIMESTAMP PER_SEGMENT PART...
//!     Uploads the PART files (DynamoDB JSON lines, as they are) as the data parts of one
//!     export in s3://BUCKET/BATCH/TABLE/TIMESTAMP/, PER_SEGMENT parts to a segment in
//!     order, with the segment's manifest after its parts, after `_schema.json`. Prints
//!     {"raw_bytes": N, "objects": N, "keys": [...]} (keys in upload order).
//! write-export gcs BUCKET BATCH TABLE ITEMS FILES [INDEXED_ATTRIBUTE]
//!     Writes the items of the ITEMS file (DynamoDB JSON lines) as FILES uncompressed
//!     data parts of a new export in gs://BUCKET/, with its `_SUCCESS` marker (the
//!     loader's conformance writer), the table keyed by `pk` (with a keys-only GSI
//!     `by_ATTR` on the string attribute ATTR if given). Prints the marker's gs:// URL.
//! ```
//! Clients are the integration harness's: the local stack's endpoints from the
//! environment (`scripts/local-stack env`).

use anyhow::{bail, Context};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use crossdock_core::item::{parse_line, Item};
use crossdock_core::layout::{DumpFile, ExportId, Timestamp};
use crossdock_core::manifest::{PartEntry, SegmentCheckpoint, TypeStats};
use crossdock_core::schema::{AttributeDefinition, BillingMode, KeyElement, KeyRole, Projection, SecondaryIndex, TableSchema};
use crossdock_core::{Codec, TypeTag, FORMAT_VERSION};
use crossdock_export::s3::put_json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Parts up to this size go in one PutObject; larger ones as a multipart upload of
/// chunks this size, as the exporter's writer sends them.
const CHUNK: usize = 8 << 20;

fn schema(table: &str, total_segments: u32, indexed: Option<&str>) -> TableSchema {
    let mut attribute_definitions = vec![AttributeDefinition { name: "pk".into(), kind: TypeTag::S }];
    let mut global_secondary_indexes = Vec::new();
    if let Some(attr) = indexed {
        attribute_definitions.push(AttributeDefinition { name: attr.into(), kind: TypeTag::S });
        global_secondary_indexes.push(SecondaryIndex {
            name: format!("by_{attr}"),
            key_schema: vec![KeyElement { name: attr.into(), role: KeyRole::Hash }],
            projection: Projection::KeysOnly,
        });
    }
    TableSchema {
        format_version: FORMAT_VERSION,
        table: table.into(),
        key_schema: vec![KeyElement { name: "pk".into(), role: KeyRole::Hash }],
        attribute_definitions,
        global_secondary_indexes,
        local_secondary_indexes: vec![],
        billing_mode: BillingMode::PayPerRequest,
        capacity_before: None,
        item_count_estimate: 0,
        size_bytes_estimate: 0,
        total_segments,
        crossdock_version: crossdock_core::VERSION.into(),
        stream: None,
    }
}

/// Uploads a local file as `key`, streaming it in chunks; returns its manifest entry
/// (named `name`) and type statistics, measured as the exporter measures its parts.
async fn put_part(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, name: String, path: &str) -> anyhow::Result<(PartEntry, TypeStats)> {
    let mut file = tokio::fs::File::open(path).await.with_context(|| format!("opening {path}"))?;
    let (mut sha, mut stats, mut items, mut bytes) = (Sha256::new(), TypeStats::default(), 0u64, 0u64);
    let mut tail = Vec::new();
    let mut upload: Option<(String, Vec<CompletedPart>)> = None;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        (&mut file).take(CHUNK as u64).read_to_end(&mut chunk).await.with_context(|| format!("reading {path}"))?;
        let last = chunk.len() < CHUNK;
        sha.update(&chunk);
        bytes += chunk.len() as u64;
        // Whole lines of this chunk (with the end of the previous one) for the statistics.
        tail.extend_from_slice(&chunk);
        let cut = if last { tail.len() } else { tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
        for line in std::str::from_utf8(&tail[..cut]).with_context(|| format!("{path} is not UTF-8"))?.lines().filter(|l| !l.is_empty()) {
            items += 1;
            let item = parse_line(line, items).with_context(|| format!("{path}: line {items}"))?;
            stats.observe(&item, crossdock_export::writer::json_len::<crossdock_core::item::CoreValues>);
        }
        tail.drain(..cut);
        if last && upload.is_none() {
            s3.put_object().bucket(bucket).key(key).body(ByteStream::from(chunk)).send().await.with_context(|| format!("PutObject {key}"))?;
            break;
        }
        if upload.is_none() {
            let out = s3.create_multipart_upload().bucket(bucket).key(key).send().await.with_context(|| format!("CreateMultipartUpload {key}"))?;
            upload = Some((out.upload_id().unwrap_or_default().to_string(), Vec::new()));
        }
        if let Some((id, parts)) = upload.as_mut() {
            if !chunk.is_empty() || parts.is_empty() {
                let number = parts.len() as i32 + 1;
                let out = s3.upload_part().bucket(bucket).key(key).upload_id(id.as_str()).part_number(number).body(ByteStream::from(chunk)).send().await?;
                parts.push(CompletedPart::builder().set_e_tag(out.e_tag().map(str::to_string)).part_number(number).build());
            }
        }
        if last {
            break;
        }
    }
    if let Some((id, parts)) = upload {
        let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        s3.complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(done)
            .send()
            .await
            .with_context(|| format!("CompleteMultipartUpload {key}"))?;
    }
    Ok((PartEntry { name, items, bytes, sha256: hex::encode(sha.finalize()) }, stats))
}

async fn to_s3(args: &[String]) -> anyhow::Result<()> {
    let [bucket, batch, table, timestamp, per_segment, parts @ ..] = args else {
        bail!("usage: write-export s3 BUCKET BATCH TABLE TIMESTAMP PER_SEGMENT PART...")
    };
    let per_segment: usize = per_segment.parse().context("PER_SEGMENT")?;
    if per_segment == 0 || parts.is_empty() {
        bail!("PER_SEGMENT must be at least 1, with at least one PART");
    }
    let export = ExportId::new(batch, table, Timestamp::parse(timestamp)?)?;
    let segments = parts.chunks(per_segment).count() as u32;
    let s3 = crossdock_tests::s3().await;
    let mut keys = Vec::new();
    let schema_key = export.s3_key("", &DumpFile::Schema);
    put_json(&s3, bucket, &schema_key, &schema(table, segments, None)).await?;
    keys.push(schema_key);
    let mut raw_bytes = 0;
    for (segment, paths) in parts.chunks(per_segment).enumerate() {
        let segment = segment as u32;
        let (mut entries, mut type_stats) = (Vec::new(), TypeStats::default());
        for (part, path) in paths.iter().enumerate() {
            let file = DumpFile::Part { segment, part: part as u32, codec: Codec::None };
            let key = export.s3_key("", &file);
            let (entry, stats) = put_part(&s3, bucket, &key, file.s3_name(), path).await?;
            raw_bytes += entry.bytes;
            type_stats.merge(&stats);
            entries.push(entry);
            keys.push(key);
        }
        // The exporter's own manifest of a finished segment.
        let done = SegmentCheckpoint { segment, total_segments: segments, parts: entries, last_evaluated_key: None, done: true, consumed_rcu: 0.0, type_stats };
        let manifest = crossdock_export::scan::manifest(table, &done);
        let key = export.s3_key("", &DumpFile::Manifest { segment, total: segments });
        put_json(&s3, bucket, &key, &manifest).await?;
        keys.push(key);
    }
    println!("{}", serde_json::json!({"raw_bytes": raw_bytes, "objects": keys.len(), "keys": keys}));
    Ok(())
}

async fn to_gcs(args: &[String]) -> anyhow::Result<()> {
    let (bucket, batch, table, items_path, files, indexed) = match args {
        [b, batch, t, i, f] => (b, batch, t, i, f, None),
        [b, batch, t, i, f, attr] => (b, batch, t, i, f, Some(attr.as_str())),
        _ => bail!("usage: write-export gcs BUCKET BATCH TABLE ITEMS FILES [INDEXED_ATTRIBUTE]"),
    };
    let files: usize = files.parse().context("FILES")?;
    let text = std::fs::read_to_string(items_path).with_context(|| format!("reading {items_path}"))?;
    let items = text.lines().filter(|l| !l.is_empty()).enumerate().map(|(i, l)| parse_line(l, i as u64 + 1)).collect::<Result<Vec<Item>, _>>()?;
    let gcs = crossdock_load::gcs::Gcs::new(crossdock_tests::gcs().await, bucket.as_str());
    let marker = crossdock_load::conformance::write_export(&gcs, batch, schema(table, 1, indexed), &items, files, Codec::None).await;
    println!("gs://{bucket}/{}", marker.export.marker_key());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((mode, rest)) if mode == "s3" => to_s3(rest).await,
        Some((mode, rest)) if mode == "gcs" => to_gcs(rest).await,
        _ => bail!("usage: write-export s3 … | write-export gcs … (see the source's header)"),
    }
}
