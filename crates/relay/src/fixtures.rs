//! Test exports: a schema, data parts of DynamoDB JSON lines and the manifests that
//! list them, as the exporter writes them to S3, for the relay's unit tests.

use crossdock_core::layout::{DumpFile, ExportId, Timestamp};
use crossdock_core::manifest::{PartEntry, SegmentManifest, TypeStats};
use crossdock_core::schema::{AttributeDefinition, BillingMode, KeyElement, KeyRole, TableSchema};
use crossdock_core::{Codec, TypeTag};
use sha2::{Digest, Sha256};

pub fn export() -> ExportId {
    ExportId::new("b1", "Orders", Timestamp::parse("2026-11-30T00-00-00Z").expect("ts")).expect("id")
}

pub fn schema(total_segments: u32) -> TableSchema {
    TableSchema {
        format_version: 1,
        table: "Orders".into(),
        key_schema: vec![KeyElement { name: "pk".into(), role: KeyRole::Hash }],
        attribute_definitions: vec![AttributeDefinition { name: "pk".into(), kind: TypeTag::S }],
        global_secondary_indexes: vec![],
        local_secondary_indexes: vec![],
        billing_mode: BillingMode::Provisioned,
        capacity_before: None,
        item_count_estimate: 0,
        size_bytes_estimate: 0,
        total_segments,
        crossdock_version: "test".into(),
        stream: None,
    }
}

/// One file of an export in S3: its key under `prefix` and its bytes.
#[derive(Debug, Clone)]
pub struct S3File {
    pub key: String,
    pub bytes: Vec<u8>,
}

/// The S3 files of an export of `segments` × `parts` parts of `items` items each, in
/// the order the exporter writes them: the schema, then each segment's parts followed
/// by its manifest.
pub fn s3_export(prefix: &str, segments: u32, parts: u32, items: u32) -> Vec<S3File> {
    let e = export();
    let mut out = vec![S3File { key: e.s3_key(prefix, &DumpFile::Schema), bytes: json(&schema(segments)) }];
    for segment in 0..segments {
        let mut entries = Vec::new();
        for part in 0..parts {
            let file = DumpFile::Part { segment, part, codec: Codec::None };
            let bytes: Vec<u8> = (0..items).map(|i| format!("{{\"Item\":{{\"pk\":{{\"S\":\"{segment}-{part}-{i}\"}}}}}}\n")).collect::<String>().into_bytes();
            entries.push(PartEntry { name: file.s3_name(), items: u64::from(items), bytes: bytes.len() as u64, sha256: hex::encode(Sha256::digest(&bytes)) });
            out.push(S3File { key: e.s3_key(prefix, &file), bytes });
        }
        let m = SegmentManifest {
            format_version: 1,
            table: "Orders".into(),
            segment,
            total_segments: segments,
            items: entries.iter().map(|p| p.items).sum(),
            bytes: entries.iter().map(|p| p.bytes).sum(),
            parts: entries,
            consumed_rcu: 0.0,
            type_stats: TypeStats::default(),
        };
        out.push(S3File { key: e.s3_key(prefix, &DumpFile::Manifest { segment, total: segments }), bytes: json(&m) });
    }
    out
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("serialisable")
}
