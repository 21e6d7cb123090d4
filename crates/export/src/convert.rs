//! DynamoDB SDK values ↔ crossdock's [`crossdock_core::item`] values (from DynamoDB's
//! and DynamoDB Streams' SDKs alike).
//!
//! The SDK hands items over as hash maps, so attribute order is arbitrary; items are
//! converted with their attributes (and map keys) sorted by name, which makes a dump of
//! the same data byte-identical from run to run (stable checksums).

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Sdk;
use crossdock_core::item::{within, AttributeValue, Entries, Item, ValueView, View};
use std::collections::HashMap;

/// An attribute whose type this build of the SDK does not know (`Unknown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownType {
    /// Dotted path of the attribute.
    pub attribute: String,
}

/// One SDK attribute value, taken apart. DynamoDB's SDK and DynamoDB Streams' SDK each
/// generate their own (identical) `AttributeValue` enum; both convert through
/// [`from_sdk_item`], so an item reads the same from a scan and from a stream record.
#[derive(Debug)]
pub enum SdkParts<V> {
    S(String),
    N(String),
    B(Blob),
    Bool(bool),
    Null,
    Ss(Vec<String>),
    Ns(Vec<String>),
    Bs(Vec<Blob>),
    L(Vec<V>),
    M(HashMap<String, V>),
    /// A type newer than this build of the SDK.
    Unknown,
}

/// An SDK's DynamoDB attribute value.
pub trait SdkValue: Sized {
    fn into_parts(self) -> SdkParts<Self>;
}

/// The `SdkValue` of an SDK's `AttributeValue` enum (the variants are the same in each).
macro_rules! sdk_value {
    ($sdk:ty) => {
        impl SdkValue for $sdk {
            fn into_parts(self) -> SdkParts<Self> {
                type V = $sdk;
                match self {
                    V::S(s) => SdkParts::S(s),
                    V::N(n) => SdkParts::N(n),
                    V::B(b) => SdkParts::B(b),
                    V::Bool(b) => SdkParts::Bool(b),
                    V::Null(_) => SdkParts::Null,
                    V::Ss(v) => SdkParts::Ss(v),
                    V::Ns(v) => SdkParts::Ns(v),
                    V::Bs(v) => SdkParts::Bs(v),
                    V::L(l) => SdkParts::L(l),
                    V::M(m) => SdkParts::M(m),
                    _ => SdkParts::Unknown,
                }
            }
        }
    };
}

sdk_value!(aws_sdk_dynamodb::types::AttributeValue);
sdk_value!(aws_sdk_dynamodbstreams::types::AttributeValue);

/// Reads the values of scanned items in place: the exporter writes a page's items
/// straight into lines, with the same writer (and order) as core items.
#[derive(Debug, Clone, Copy)]
pub enum Scanned {}

impl ValueView for Scanned {
    type Value = Sdk;
    fn view(v: &Sdk) -> Option<View<'_, Sdk>> {
        Some(match v {
            Sdk::S(s) => View::S(s),
            Sdk::N(n) => View::N(n),
            Sdk::B(b) => View::B(b.as_ref()),
            Sdk::Bool(b) => View::Bool(*b),
            Sdk::Null(_) => View::Null,
            Sdk::Ss(v) => View::Ss(v),
            Sdk::Ns(v) => View::Ns(v),
            Sdk::Bs(v) => View::Bs(v.iter().map(Blob::as_ref).collect()),
            Sdk::L(l) => View::L(l),
            Sdk::M(m) => View::M(Entries::Unordered(m)),
            _ => return None,
        })
    }
}

/// SDK item → core item, attributes sorted by name. The item is taken apart, not
/// copied: its strings and bytes become the core item's (this is on the exporter's
/// per-item path).
pub fn from_sdk_item<V: SdkValue>(item: HashMap<String, V>) -> Result<Item, UnknownType> {
    from_sdk_map(item).map_err(|rel| UnknownType { attribute: rel })
}

/// The error paths below are built on the way out of a failed conversion, relative to
/// the value that failed (`""` for itself), so a good item allocates none.
fn from_sdk_map<V: SdkValue>(m: HashMap<String, V>) -> Result<indexmap::IndexMap<String, AttributeValue>, String> {
    let mut entries: Vec<(String, V)> = m.into_iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out = indexmap::IndexMap::with_capacity(entries.len());
    for (name, v) in entries {
        match from_sdk_value(v) {
            Ok(v) => {
                out.insert(name, v);
            }
            Err(rel) => return Err(within(&name, rel)),
        }
    }
    Ok(out)
}

fn from_sdk_value<V: SdkValue>(v: V) -> Result<AttributeValue, String> {
    Ok(match v.into_parts() {
        SdkParts::S(s) => AttributeValue::S(s),
        SdkParts::N(n) => AttributeValue::N(n),
        SdkParts::B(b) => AttributeValue::B(b.into_inner()),
        SdkParts::Bool(b) => AttributeValue::Bool(b),
        SdkParts::Null => AttributeValue::Null,
        SdkParts::Ss(v) => AttributeValue::Ss(v),
        SdkParts::Ns(v) => AttributeValue::Ns(v),
        SdkParts::Bs(v) => AttributeValue::Bs(v.into_iter().map(Blob::into_inner).collect()),
        SdkParts::L(l) => {
            let mut out = Vec::with_capacity(l.len());
            for (i, x) in l.into_iter().enumerate() {
                out.push(from_sdk_value(x).map_err(|rel| within(&format!("[{i}]"), rel))?);
            }
            AttributeValue::L(out)
        }
        SdkParts::M(m) => AttributeValue::M(from_sdk_map(m)?),
        SdkParts::Unknown => return Err(String::new()),
    })
}

/// Core item → SDK item (used for `ExclusiveStartKey` from checkpoints, and by tests).
pub fn to_sdk_item(item: &Item) -> HashMap<String, Sdk> {
    item.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()
}

/// Core value → SDK value.
pub fn to_sdk(v: &AttributeValue) -> Sdk {
    match v {
        AttributeValue::S(s) => Sdk::S(s.clone()),
        AttributeValue::N(n) => Sdk::N(n.clone()),
        AttributeValue::B(b) => Sdk::B(Blob::new(b.clone())),
        AttributeValue::Bool(b) => Sdk::Bool(*b),
        AttributeValue::Null => Sdk::Null(true),
        AttributeValue::Ss(v) => Sdk::Ss(v.clone()),
        AttributeValue::Ns(v) => Sdk::Ns(v.clone()),
        AttributeValue::Bs(v) => Sdk::Bs(v.iter().map(|b| Blob::new(b.clone())).collect()),
        AttributeValue::L(l) => Sdk::L(l.iter().map(to_sdk).collect()),
        AttributeValue::M(m) => Sdk::M(m.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::json_len;
    use crossdock_core::item::{parse_line, to_line, write_item, CoreValues};
    use crossdock_core::manifest::TypeStats;

    #[test]
    fn every_type_round_trips_and_attributes_are_sorted() {
        let line = r#"{"Item":{"a":{"S":"x"},"b":{"N":"-1.5E3"},"c":{"B":"AAEC"},"d":{"BOOL":true},"e":{"NULL":true},"f":{"SS":["p","q"]},"g":{"NS":["1","2.5"]},"h":{"BS":["AA==","AQ=="]},"i":{"L":[{"S":"y"},{"M":{"k":{"N":"0"}}}]},"j":{"M":{"y":{"S":"2"},"x":{"S":"1"}}}}}"#;
        let item = parse_line(line, 1).expect("valid");
        let sdk = to_sdk_item(&item);
        let back = from_sdk_item(sdk).expect("known types");
        // Maps come back sorted: j.x before j.y.
        assert_eq!(to_line(&back), line.replace(r#"{"y":{"S":"2"},"x":{"S":"1"}}"#, r#"{"x":{"S":"1"},"y":{"S":"2"}}"#));
    }

    #[test]
    fn a_scanned_item_written_in_place_gives_the_line_of_its_conversion() {
        let line = r#"{"Item":{"z":{"S":"x"},"b":{"N":"-1.5E3"},"c":{"B":"AAEC"},"d":{"BOOL":false},"e":{"NULL":true},"f":{"SS":["p","q"]},"g":{"NS":["1","2.5"]},"h":{"BS":["AA==","AQ=="]},"i":{"L":[{"S":"y\"\u0001"},{"M":{"k":{"N":"0"},"a":{"L":[]}}}]},"j":{"M":{"y":{"S":"2"},"x":{"S":"1"}}}}}"#;
        let sdk = to_sdk_item(&parse_line(line, 1).expect("valid"));
        let mut in_place = String::new();
        write_item::<Scanned>(&Entries::Unordered(&sdk), &mut in_place).expect("known types");
        assert_eq!(in_place, to_line(&from_sdk_item(sdk.clone()).expect("known types")));
        assert!(in_place.starts_with(r#"{"Item":{"b":"#), "attributes sorted: {in_place}");
        let (mut from_sdk, mut from_core) = (TypeStats::default(), TypeStats::default());
        from_sdk.observe_view::<Scanned>(&Entries::Unordered(&sdk), json_len::<Scanned>);
        from_core.observe(&from_sdk_item(sdk).expect("known types"), json_len::<CoreValues>);
        assert_eq!(from_sdk, from_core);
    }

    #[test]
    fn a_stream_record_converts_as_the_scanned_item() {
        use aws_sdk_dynamodbstreams::types::AttributeValue as Stream;
        let record = HashMap::from([
            ("pk".to_string(), Stream::S("a".into())),
            (
                "m".to_string(),
                Stream::M(HashMap::from([("y".to_string(), Stream::Ns(vec!["2".into()])), ("x".to_string(), Stream::Bs(vec![Blob::new(vec![1])]))])),
            ),
            ("l".to_string(), Stream::L(vec![Stream::Null(true), Stream::Bool(false), Stream::B(Blob::new(vec![0, 255]))])),
        ]);
        let line = r#"{"Item":{"l":{"L":[{"NULL":true},{"BOOL":false},{"B":"AP8="}]},"m":{"M":{"x":{"BS":["AQ=="]},"y":{"NS":["2"]}}},"pk":{"S":"a"}}}"#;
        let scanned = to_sdk_item(&parse_line(line, 1).expect("valid"));
        assert_eq!(from_sdk_item(record.clone()), from_sdk_item(scanned));
        assert_eq!(to_line(&from_sdk_item(record).expect("known types")), line);
    }

    /// A value of a type the SDK does not know (the SDKs' own `Unknown` cannot be built).
    enum Fake {
        S,
        Unknown,
        L(Vec<Fake>),
        M(HashMap<String, Fake>),
    }

    impl SdkValue for Fake {
        fn into_parts(self) -> SdkParts<Self> {
            match self {
                Fake::S => SdkParts::S("x".into()),
                Fake::Unknown => SdkParts::Unknown,
                Fake::L(l) => SdkParts::L(l),
                Fake::M(m) => SdkParts::M(m),
            }
        }
    }

    #[test]
    fn an_unknown_type_is_named_by_its_path() {
        let nested = HashMap::from([
            ("ok".to_string(), Fake::S),
            ("m".to_string(), Fake::M(HashMap::from([("l".to_string(), Fake::L(vec![Fake::S, Fake::M(HashMap::from([("x".to_string(), Fake::Unknown)]))]))]))),
        ]);
        assert_eq!(from_sdk_item(nested).expect_err("unknown").attribute, "m.l[1].x");
        assert_eq!(from_sdk_item(HashMap::from([("top".to_string(), Fake::Unknown)])).expect_err("unknown").attribute, "top");
        assert_eq!(from_sdk_item(HashMap::from([("a".to_string(), Fake::L(vec![Fake::S, Fake::Unknown]))])).expect_err("unknown").attribute, "a[1]");
    }
}
