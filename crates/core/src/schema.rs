//! `_schema.json`: what the exporter knew about the table when it started.
//! Written first in every export; carried into the `_SUCCESS` marker for the loader.

use crate::item::TypeTag;
use serde::{Deserialize, Serialize};

/// A key attribute's role (DynamoDB `KeyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyRole {
    /// Partition key.
    Hash,
    /// Sort key.
    Range,
}

/// One element of a key schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyElement {
    pub name: String,
    pub role: KeyRole,
}

/// A declared attribute (DynamoDB `AttributeDefinitions`): only key attributes have one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeDefinition {
    pub name: String,
    /// `S`, `N` or `B`.
    #[serde(rename = "type")]
    pub kind: TypeTag,
}

/// Which attributes an index carries besides its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum Projection {
    All,
    KeysOnly,
    Include { attributes: Vec<String> },
}

/// A global or local secondary index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondaryIndex {
    pub name: String,
    pub key_schema: Vec<KeyElement>,
    pub projection: Projection,
}

/// How the table is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BillingMode {
    Provisioned,
    PayPerRequest,
}

/// Read/write capacity units of a provisioned table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    pub read: i64,
    pub write: i64,
}

/// Contents of `_schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    /// Always 1 for this layout; bumped on incompatible changes.
    pub format_version: u32,
    pub table: String,
    pub key_schema: Vec<KeyElement>,
    pub attribute_definitions: Vec<AttributeDefinition>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<SecondaryIndex>,
    #[serde(default)]
    pub local_secondary_indexes: Vec<SecondaryIndex>,
    pub billing_mode: BillingMode,
    /// Provisioned capacity before the exporter raised it (`None` for on-demand).
    pub capacity_before: Option<Throughput>,
    /// DynamoDB's item count and size estimates (updated about every 6 hours).
    pub item_count_estimate: u64,
    pub size_bytes_estimate: u64,
    /// Number of parallel-scan segments; the export is complete with this many manifests.
    pub total_segments: u32,
    /// Version of crossdock that wrote the export.
    pub crossdock_version: String,
    /// The table's change streams when the export started, which `crossdock sync`
    /// replays onto the target; absent when the table had none (or the export predates
    /// this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamInfo>,
}

/// The change streams a table had when its export started.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamInfo {
    /// The table's DynamoDB stream (`LatestStreamArn`), if enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamodb: Option<DynamoDbStream>,
    /// Active Kinesis Data Streams destinations of the table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinesis: Vec<KinesisStream>,
}

/// A DynamoDB stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbStream {
    pub arn: String,
    /// `LatestStreamLabel`: the stream's creation time, which tells a re-enabled
    /// stream (whose earlier records are gone) from the one the export saw.
    pub label: String,
    /// `NEW_IMAGE`, `NEW_AND_OLD_IMAGES`, `OLD_IMAGE` or `KEYS_ONLY`.
    pub view_type: String,
}

/// A Kinesis Data Streams for DynamoDB destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisStream {
    pub arn: String,
    /// `MILLISECOND` or `MICROSECOND` (of `ApproximateCreationDateTime`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}

impl TableSchema {
    pub fn has_secondary_indexes(&self) -> bool {
        !self.global_secondary_indexes.is_empty() || !self.local_secondary_indexes.is_empty()
    }

    /// Partition key attribute name.
    pub fn hash_key(&self) -> Option<&str> {
        self.key_schema.iter().find(|k| k.role == KeyRole::Hash).map(|k| k.name.as_str())
    }

    /// Sort key attribute name, if any.
    pub fn range_key(&self) -> Option<&str> {
        self.key_schema.iter().find(|k| k.role == KeyRole::Range).map(|k| k.name.as_str())
    }

    /// Declared type of a key attribute.
    pub fn key_type(&self, name: &str) -> Option<TypeTag> {
        self.attribute_definitions.iter().find(|a| a.name == name).map(|a| a.kind)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_schema() -> TableSchema {
        let key = |name: &str, role| KeyElement { name: name.into(), role };
        TableSchema {
            format_version: 1,
            table: "Orders".into(),
            key_schema: vec![key("customer", KeyRole::Hash), key("order_id", KeyRole::Range)],
            attribute_definitions: vec![
                AttributeDefinition { name: "customer".into(), kind: TypeTag::S },
                AttributeDefinition { name: "order_id".into(), kind: TypeTag::N },
                AttributeDefinition { name: "status".into(), kind: TypeTag::S },
            ],
            global_secondary_indexes: vec![SecondaryIndex {
                name: "by_status".into(),
                key_schema: vec![key("status", KeyRole::Hash)],
                projection: Projection::KeysOnly,
            }],
            local_secondary_indexes: vec![SecondaryIndex {
                name: "by_total".into(),
                key_schema: vec![key("customer", KeyRole::Hash), key("total", KeyRole::Range)],
                projection: Projection::Include { attributes: vec!["status".into()] },
            }],
            billing_mode: BillingMode::Provisioned,
            capacity_before: Some(Throughput { read: 500, write: 100 }),
            item_count_estimate: 50_000,
            size_bytes_estimate: 150_000_000,
            total_segments: 4,
            crossdock_version: "0.1.0".into(),
            stream: None,
        }
    }

    #[test]
    fn schema_json_snapshot() {
        let s = sample_schema();
        insta::assert_json_snapshot!("schema", s);
        let back: TableSchema = serde_json::from_value(serde_json::to_value(&s).expect("ser")).expect("de");
        assert_eq!(back, s);
        assert_eq!((s.hash_key(), s.range_key(), s.key_type("order_id")), (Some("customer"), Some("order_id"), Some(TypeTag::N)));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(sample_schema()).expect("ser");
        v["extra"] = serde_json::json!(1);
        let e = serde_json::from_value::<TableSchema>(v).expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
    }
}
