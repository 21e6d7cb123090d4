//! DynamoDB SDK values ↔ crossdock's [`crossdock_core::item`] values (from DynamoDB's
//! and DynamoDB Streams' SDKs alike).
//!
//! The SDK hands items over as hash maps, so attribute order is arbitrary; items are
//! converted with their attributes (and map keys) sorted by name, which makes a dump of
//! the same data byte-identical from run to run (stable checksums).

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Sdk;
use crossdock_core::item::{AttributeValue, Item};
use std::collections::HashMap;

/// An attribute whose type this build of the SDK does not know (`Unknown`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownType {
    /// Dotted path of the attribute.
    pub attribute: String,
}

/// One SDK attribute value, seen through its variant. DynamoDB's SDK and DynamoDB
/// Streams' SDK each generate their own (identical) `AttributeValue` enum; both convert
/// through [`from_sdk`], so an item reads the same from a scan and from a stream record.
#[derive(Debug)]
pub enum SdkView<'a, V> {
    S(&'a str),
    N(&'a str),
    B(&'a Blob),
    Bool(bool),
    Null,
    Ss(&'a [String]),
    Ns(&'a [String]),
    Bs(&'a [Blob]),
    L(&'a [V]),
    M(&'a HashMap<String, V>),
    /// A type newer than this build of the SDK.
    Unknown,
}

/// An SDK's DynamoDB attribute value.
pub trait SdkValue: Sized {
    fn view(&self) -> SdkView<'_, Self>;
}

/// The `SdkValue` of an SDK's `AttributeValue` enum (the variants are the same in each).
macro_rules! sdk_value {
    ($sdk:ty) => {
        impl SdkValue for $sdk {
            fn view(&self) -> SdkView<'_, Self> {
                type V = $sdk;
                match self {
                    V::S(s) => SdkView::S(s),
                    V::N(n) => SdkView::N(n),
                    V::B(b) => SdkView::B(b),
                    V::Bool(b) => SdkView::Bool(*b),
                    V::Null(_) => SdkView::Null,
                    V::Ss(v) => SdkView::Ss(v),
                    V::Ns(v) => SdkView::Ns(v),
                    V::Bs(v) => SdkView::Bs(v),
                    V::L(l) => SdkView::L(l),
                    V::M(m) => SdkView::M(m),
                    _ => SdkView::Unknown,
                }
            }
        }
    };
}

sdk_value!(aws_sdk_dynamodb::types::AttributeValue);
sdk_value!(aws_sdk_dynamodbstreams::types::AttributeValue);

/// SDK item → core item, attributes sorted by name.
pub fn from_sdk_item<V: SdkValue>(item: &HashMap<String, V>) -> Result<Item, UnknownType> {
    from_sdk_map(item, "")
}

fn from_sdk_map<V: SdkValue>(m: &HashMap<String, V>, path: &str) -> Result<indexmap::IndexMap<String, AttributeValue>, UnknownType> {
    let mut names: Vec<&String> = m.keys().collect();
    names.sort_unstable();
    let mut out = indexmap::IndexMap::with_capacity(m.len());
    for name in names {
        let p = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        out.insert(name.clone(), from_sdk(&m[name], &p)?);
    }
    Ok(out)
}

/// SDK value → core value; `path` names the attribute in the error.
pub fn from_sdk<V: SdkValue>(v: &V, path: &str) -> Result<AttributeValue, UnknownType> {
    Ok(match v.view() {
        SdkView::S(s) => AttributeValue::S(s.to_string()),
        SdkView::N(n) => AttributeValue::N(n.to_string()),
        SdkView::B(b) => AttributeValue::B(b.as_ref().to_vec()),
        SdkView::Bool(b) => AttributeValue::Bool(b),
        SdkView::Null => AttributeValue::Null,
        SdkView::Ss(v) => AttributeValue::Ss(v.to_vec()),
        SdkView::Ns(v) => AttributeValue::Ns(v.to_vec()),
        SdkView::Bs(v) => AttributeValue::Bs(v.iter().map(|b| b.as_ref().to_vec()).collect()),
        SdkView::L(l) => AttributeValue::L(l.iter().enumerate().map(|(i, x)| from_sdk(x, &format!("{path}[{i}]"))).collect::<Result<_, _>>()?),
        SdkView::M(m) => AttributeValue::M(from_sdk_map(m, path)?),
        SdkView::Unknown => return Err(UnknownType { attribute: path.to_string() }),
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
    use crossdock_core::item::{parse_line, to_line};

    #[test]
    fn every_type_round_trips_and_attributes_are_sorted() {
        let line = r#"{"Item":{"a":{"S":"x"},"b":{"N":"-1.5E3"},"c":{"B":"AAEC"},"d":{"BOOL":true},"e":{"NULL":true},"f":{"SS":["p","q"]},"g":{"NS":["1","2.5"]},"h":{"BS":["AA==","AQ=="]},"i":{"L":[{"S":"y"},{"M":{"k":{"N":"0"}}}]},"j":{"M":{"y":{"S":"2"},"x":{"S":"1"}}}}}"#;
        let item = parse_line(line, 1).expect("valid");
        let sdk = to_sdk_item(&item);
        let back = from_sdk_item(&sdk).expect("known types");
        // Maps come back sorted: j.x before j.y.
        assert_eq!(to_line(&back), line.replace(r#"{"y":{"S":"2"},"x":{"S":"1"}}"#, r#"{"x":{"S":"1"},"y":{"S":"2"}}"#));
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
        assert_eq!(from_sdk_item(&record), from_sdk_item(&scanned));
        assert_eq!(to_line(&from_sdk_item(&record).expect("known types")), line);
    }
}
