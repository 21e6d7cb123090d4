//! The files that describe an export's contents: per-attribute type statistics,
//! segment manifests (`manifests/seg-SSSSS-of-NNNNN.json`), exporter checkpoints and
//! the capacity lease (`_checkpoint/…`, `_capacity.json`).

use crate::item::{AttributeValue, Item, TypeTag};
use crate::schema::Throughput;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What was seen of one attribute across items.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeStats {
    /// Items where the attribute has each DynamoDB type.
    pub types: BTreeMap<TypeTag, u64>,
    /// `N` values that are not integers (have a fraction or a negative exponent).
    #[serde(default)]
    pub fractional_numbers: u64,
    /// Most digits before the decimal point among `N` values (decides INT64 vs NUMERIC).
    #[serde(default)]
    pub max_integer_digits: u32,
    /// Largest value seen, in bytes of its DynamoDB JSON text.
    #[serde(default)]
    pub max_value_bytes: u64,
}

/// Attribute name → statistics. Merged across parts, segments and the whole export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TypeStats(pub BTreeMap<String, AttributeStats>);

/// Integer digits of a DynamoDB number text and whether it has a fractional part
/// (`"1.25E1"` → `(2, true)`, `"100E-2"` → `(1, false)`). Exact: works on the digits.
pub fn number_shape(n: &str) -> (u32, bool) {
    let body = n.trim_start_matches(['-', '+']);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    // Position of the decimal point within `digits`, after dropping leading zeros.
    let unpadded = digits.trim_start_matches('0');
    let point = int.len() as i64 + exp - (digits.len() - unpadded.len()) as i64;
    let significant = unpadded.trim_end_matches('0');
    if significant.is_empty() {
        return (1, false); // zero
    }
    (point.clamp(0, i64::from(u32::MAX)) as u32, significant.len() as i64 > point)
}

impl TypeStats {
    /// Records one item.
    pub fn observe(&mut self, item: &Item, encoded_len: impl Fn(&AttributeValue) -> usize) {
        for (name, v) in item {
            let s = self.0.entry(name.clone()).or_default();
            *s.types.entry(v.type_tag()).or_default() += 1;
            s.max_value_bytes = s.max_value_bytes.max(encoded_len(v) as u64);
            let numbers: &[String] = match v {
                AttributeValue::N(n) => std::slice::from_ref(n),
                AttributeValue::Ns(ns) => ns,
                _ => &[],
            };
            for n in numbers {
                let (digits, fractional) = number_shape(n);
                s.max_integer_digits = s.max_integer_digits.max(digits);
                s.fractional_numbers += u64::from(fractional);
            }
        }
    }

    pub fn merge(&mut self, other: &TypeStats) {
        for (name, o) in &other.0 {
            let s = self.0.entry(name.clone()).or_default();
            for (t, c) in &o.types {
                *s.types.entry(*t).or_default() += c;
            }
            s.fractional_numbers += o.fractional_numbers;
            s.max_integer_digits = s.max_integer_digits.max(o.max_integer_digits);
            s.max_value_bytes = s.max_value_bytes.max(o.max_value_bytes);
        }
    }
}

/// One data part as listed in a manifest or marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartEntry {
    /// Name relative to the export directory, as written by the exporter
    /// (`data/seg-00000-part-00000.json`).
    pub name: String,
    pub items: u64,
    /// Size of the uncompressed DynamoDB JSON lines.
    pub bytes: u64,
    /// SHA-256 of the uncompressed bytes, lowercase hex.
    pub sha256: String,
}

/// Contents of `manifests/seg-SSSSS-of-NNNNN.json`, written when a segment completes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentManifest {
    pub format_version: u32,
    pub table: String,
    pub segment: u32,
    pub total_segments: u32,
    pub parts: Vec<PartEntry>,
    /// Sum of the parts' items and bytes.
    pub items: u64,
    pub bytes: u64,
    /// Read capacity consumed scanning this segment.
    pub consumed_rcu: f64,
    pub type_stats: TypeStats,
}

/// `_checkpoint/seg-SSSSS.json`: exporter progress within one segment, written after
/// each part is durable, so `--resume` continues after the last durable part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentCheckpoint {
    pub segment: u32,
    pub total_segments: u32,
    /// Parts durably written so far.
    pub parts: Vec<PartEntry>,
    /// `LastEvaluatedKey` after the last item of the last durable part; `None` with
    /// `done == false` means the segment has not started.
    pub last_evaluated_key: Option<Item>,
    pub done: bool,
    pub consumed_rcu: f64,
    pub type_stats: TypeStats,
}

/// The Application Auto Scaling settings of a table's read capacity, as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalingBounds {
    pub min_capacity: i64,
    pub max_capacity: i64,
}

/// `_capacity.json`: written BEFORE the exporter raises capacity, so a later
/// `crossdock export restore` (or the next export) can put the table back after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityLease {
    pub table: String,
    /// Capacity found before the raise.
    pub original: Throughput,
    /// Capacity requested for the export.
    pub raised_to: Throughput,
    /// Autoscaling bounds found before the raise, if the table is autoscaled.
    pub autoscaling: Option<AutoscalingBounds>,
    /// RFC 3339 time the lease was taken.
    pub taken_at: String,
    /// Set once the original capacity is back.
    pub restored: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::parse_line;

    #[test]
    fn number_shapes() {
        let cases = [
            ("0", 1, false),
            ("123", 3, false),
            ("-123.000", 3, false),
            ("12.5", 2, true),
            ("0.001", 0, true),
            ("1E+3", 4, false),
            ("1.5E1", 2, false),
            ("1.25E1", 2, true),
            ("15E-1", 1, true),
            ("100E-2", 1, false),
            ("12345678901234567890", 20, false),
        ];
        for (n, digits, fractional) in cases {
            assert_eq!(number_shape(n), (digits, fractional), "{n}");
        }
    }

    #[test]
    fn stats_count_types_and_merge() {
        let a = parse_line(r#"{"Item":{"id":{"S":"a"},"v":{"N":"10"}}}"#, 1).expect("valid");
        let b = parse_line(r#"{"Item":{"id":{"S":"b"},"v":{"S":"ten"},"f":{"NS":["1.5","20000"]}}}"#, 2).expect("valid");
        let len = |_: &AttributeValue| 10;
        let mut s1 = TypeStats::default();
        s1.observe(&a, len);
        let mut s2 = TypeStats::default();
        s2.observe(&b, len);
        s1.merge(&s2);
        assert_eq!(s1.0["id"].types[&TypeTag::S], 2);
        assert_eq!(s1.0["v"].types.len(), 2);
        assert_eq!((s1.0["f"].fractional_numbers, s1.0["f"].max_integer_digits), (1, 5));
        insta::assert_json_snapshot!("type_stats", s1);
    }

    #[test]
    fn manifest_checkpoint_and_lease_snapshots() {
        let item = parse_line(r#"{"Item":{"id":{"S":"a"}}}"#, 1).expect("valid");
        let part = PartEntry { name: "data/seg-00001-part-00000.json".into(), items: 2, bytes: 60, sha256: "ab".repeat(32) };
        let m = SegmentManifest {
            format_version: 1,
            table: "Orders".into(),
            segment: 1,
            total_segments: 4,
            parts: vec![part.clone()],
            items: 2,
            bytes: 60,
            consumed_rcu: 1.5,
            type_stats: TypeStats::default(),
        };
        insta::assert_json_snapshot!("segment_manifest", m);
        let c = SegmentCheckpoint {
            segment: 1,
            total_segments: 4,
            parts: vec![part],
            last_evaluated_key: Some(item),
            done: false,
            consumed_rcu: 1.5,
            type_stats: TypeStats::default(),
        };
        insta::assert_json_snapshot!("segment_checkpoint", c);
        let l = CapacityLease {
            table: "Orders".into(),
            original: Throughput { read: 500, write: 100 },
            raised_to: Throughput { read: 1000, write: 100 },
            autoscaling: Some(AutoscalingBounds { min_capacity: 100, max_capacity: 2000 }),
            taken_at: "2026-11-23T09:30:00Z".into(),
            restored: false,
        };
        insta::assert_json_snapshot!("capacity_lease", l);
    }
}
