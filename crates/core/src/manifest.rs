//! The files that describe an export's contents: per-attribute type statistics,
//! segment manifests (`manifests/seg-SSSSS-of-NNNNN.json`), exporter checkpoints and
//! the capacity lease (`_checkpoint/…`, `_capacity.json`).

use crate::item::{AttributeValue, CoreValues, Entries, Item, TypeTag, ValueView, View};
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
    /// Most digits after the decimal point among `N` values (decides whether a
    /// NUMERIC of limited scale holds every value). Absent in statistics written
    /// before it was recorded: read it through [`AttributeStats::fraction_digits`],
    /// which says when it is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fraction_digits: Option<u32>,
    /// Largest value seen, in bytes of its DynamoDB JSON text.
    #[serde(default)]
    pub max_value_bytes: u64,
}

/// Attribute name → statistics. Merged across parts, segments and the whole export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TypeStats(pub BTreeMap<String, AttributeStats>);

impl AttributeStats {
    /// Most digits after the decimal point among the `N` values, `None` when unknown:
    /// statistics without `max_fraction_digits` that counted fractional numbers. With
    /// no fractional number every value is an integer, so the answer is 0 whatever
    /// the statistics' age.
    pub fn fraction_digits(&self) -> Option<u32> {
        if self.fractional_numbers == 0 {
            Some(0)
        } else {
            self.max_fraction_digits
        }
    }
}

/// Integer digits of a DynamoDB number text and whether it has a fractional part
/// (`"1.25E1"` → `(2, true)`, `"100E-2"` → `(1, false)`). Exact: works on the digits.
pub fn number_shape(n: &str) -> (u32, bool) {
    let (integer, fraction) = number_digits(n);
    (integer, fraction > 0)
}

/// Digits before and after the decimal point of a DynamoDB number text in plain
/// notation, without leading or trailing zeros (`"1.25E1"` → `(2, 1)`, `"1E-130"` →
/// `(0, 130)`, `"100E-2"` → `(1, 0)`). Exact: works on the digits.
pub fn number_digits(n: &str) -> (u32, u32) {
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
        return (1, 0); // zero
    }
    let clamp = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
    (clamp(point), clamp(significant.len() as i64 - point))
}

impl TypeStats {
    /// The statistics of `name`, new ones if it has none. The name is copied only the
    /// first time: this runs for every attribute of every item exported.
    fn entry(&mut self, name: &str) -> &mut AttributeStats {
        if !self.0.contains_key(name) {
            self.0.insert(name.to_string(), AttributeStats::default());
        }
        self.0.get_mut(name).expect("inserted above")
    }

    /// Records one item.
    pub fn observe(&mut self, item: &Item, encoded_len: impl Fn(&AttributeValue) -> usize) {
        self.observe_view::<CoreValues>(&Entries::Ordered(item), encoded_len)
    }

    /// Records one item held in any representation `R` reads (the exporter's SDK
    /// items). A value of an unknown type is not counted: writing its line has failed.
    pub fn observe_view<R: ValueView>(&mut self, item: &Entries<'_, R::Value>, encoded_len: impl Fn(&R::Value) -> usize) {
        for (name, v) in item.iter() {
            let Some(view) = R::view(v) else { continue };
            let s = self.entry(name);
            // Recorded from here on; stays unknown if merged statistics lacked it.
            s.max_fraction_digits = s.fraction_digits();
            *s.types.entry(view.type_tag()).or_default() += 1;
            s.max_value_bytes = s.max_value_bytes.max(encoded_len(v) as u64);
            let (one, set): (Option<&str>, &[String]) = match &view {
                View::N(n) => (Some(n), &[]),
                View::Ns(ns) => (None, ns),
                _ => (None, &[]),
            };
            for n in one.into_iter().chain(set.iter().map(String::as_str)) {
                let (digits, fraction) = number_digits(n);
                s.max_integer_digits = s.max_integer_digits.max(digits);
                s.fractional_numbers += u64::from(fraction > 0);
                s.max_fraction_digits = s.max_fraction_digits.map(|m| m.max(fraction));
            }
        }
    }

    pub fn merge(&mut self, other: &TypeStats) {
        for (name, o) in &other.0 {
            let s = self.entry(name);
            for (t, c) in &o.types {
                *s.types.entry(*t).or_default() += c;
            }
            // Unknown on either side (older statistics with fractions) stays unknown.
            s.max_fraction_digits = match (s.fraction_digits(), o.fraction_digits()) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
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

/// `_capacity.json`, one per table: created (create-only) BEFORE the exporter raises
/// capacity, renewed by its owner's heartbeat, so a second raising export of the table is
/// refused and a later `crossdock export restore` (or the next export) puts the table back
/// only once the owner is gone.
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
    /// Who holds the lease: only this run restores it while its heartbeat is fresh.
    pub owner: LeaseOwner,
    /// RFC 3339 time of the owner's last renewal.
    pub heartbeat_at: String,
    /// The owner counts as gone once its heartbeat is this many seconds old (and
    /// `held_until` has passed): then anyone may restore the lease.
    pub stale_after_secs: u64,
    /// RFC 3339 time until which the lease is live even without heartbeats: set by
    /// `crossdock export capacity raise`, whose process exits while the shards it raised
    /// for have not started yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<String>,
    /// Who restored it and why (`own run …`, `stale: …`), once `restored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_by: Option<String>,
}

/// The run holding a capacity lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseOwner {
    /// Random per process (or the id given to `export capacity raise`).
    pub run_id: String,
    pub host: String,
    pub pid: u32,
}

impl std::fmt::Display for LeaseOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {} (pid {} on {})", self.run_id, self.pid, self.host)
    }
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
    fn number_digits_count_both_sides_of_the_point() {
        let cases = [
            ("0", 1, 0),
            ("-123.000", 3, 0),
            ("12.5", 2, 1),
            ("0.7923361357004808", 0, 16),
            ("37.774929123456", 2, 12),
            ("1E-130", 0, 130),
            ("-0.000000000000000000000000000000000001", 0, 36),
            ("9.9999999999999999999999999999999999999E+125", 126, 0),
            ("1.2345678901234567890123456789012345678E-100", 0, 137),
            ("12345678901234567890123456789012345678", 38, 0),
            ("100E-2", 1, 0),
        ];
        for (n, integer, fraction) in cases {
            assert_eq!(number_digits(n), (integer, fraction), "{n}");
        }
    }

    #[test]
    fn fraction_digits_are_recorded_and_unknown_stays_unknown() {
        let item = |n: &str| parse_line(&format!(r#"{{"Item":{{"r":{{"N":"{n}"}},"s":{{"S":"x"}}}}}}"#), 1).expect("valid");
        let len = |_: &AttributeValue| 10;
        let mut new = TypeStats::default();
        for n in ["0.7923361357004808", "1.5", "7"] {
            new.observe(&item(n), len);
        }
        assert_eq!(new.0["r"].max_fraction_digits, Some(16));
        assert_eq!(new.0["r"].fraction_digits(), Some(16));
        assert_eq!(new.0["s"].fraction_digits(), Some(0));
        // Statistics written before the field existed parse, and say "unknown" only
        // when they counted fractions.
        let old: TypeStats = serde_json::from_str(
            r#"{"r":{"types":{"N":3},"fractional_numbers":2,"max_integer_digits":1,"max_value_bytes":9},
                "i":{"types":{"N":3},"fractional_numbers":0,"max_integer_digits":4,"max_value_bytes":9}}"#,
        )
        .expect("older statistics parse");
        assert_eq!((old.0["r"].fraction_digits(), old.0["i"].fraction_digits()), (None, Some(0)));
        let mut merged = new.clone();
        merged.merge(&old);
        assert_eq!(merged.0["r"].fraction_digits(), None, "old ∪ new: unknown");
        let mut merged = old.clone();
        merged.merge(&new);
        assert_eq!(merged.0["r"].fraction_digits(), None, "new ∪ old: unknown");
        merged.observe(&item("1.25"), len);
        assert_eq!(merged.0["r"].fraction_digits(), None, "observing more does not make it known");
        let mut fresh = TypeStats::default();
        fresh.merge(&new);
        assert_eq!(fresh, new, "merging into nothing copies");
        fresh.merge(&old);
        assert_eq!(fresh.0["i"].fraction_digits(), Some(0));
        // Round trip: unknown is written as absent, known as a number.
        let text = serde_json::to_string(&merged).expect("serialises");
        assert!(!text.contains("null"), "{text}");
        assert_eq!(serde_json::from_str::<TypeStats>(&text).expect("parses"), merged);
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
            owner: LeaseOwner { run_id: "7f3a9c2e51d04b88".into(), host: "ci-runner-12".into(), pid: 4242 },
            heartbeat_at: "2026-11-23T09:41:30Z".into(),
            stale_after_secs: 180,
            held_until: None,
            restored_by: None,
        };
        insta::assert_json_snapshot!("capacity_lease", l);
    }
}
