//! DynamoDB SDK values ↔ crossdock's [`crossdock_core::item`] values.
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

/// SDK item → core item, attributes sorted by name.
pub fn from_sdk_item(item: &HashMap<String, Sdk>) -> Result<Item, UnknownType> {
    from_sdk_map(item, "")
}

fn from_sdk_map(m: &HashMap<String, Sdk>, path: &str) -> Result<indexmap::IndexMap<String, AttributeValue>, UnknownType> {
    let mut names: Vec<&String> = m.keys().collect();
    names.sort_unstable();
    let mut out = indexmap::IndexMap::with_capacity(m.len());
    for name in names {
        let p = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        out.insert(name.clone(), from_sdk(&m[name], &p)?);
    }
    Ok(out)
}

/// SDK value → core value.
pub fn from_sdk(v: &Sdk, path: &str) -> Result<AttributeValue, UnknownType> {
    Ok(match v {
        Sdk::S(s) => AttributeValue::S(s.clone()),
        Sdk::N(n) => AttributeValue::N(n.clone()),
        Sdk::B(b) => AttributeValue::B(b.as_ref().to_vec()),
        Sdk::Bool(b) => AttributeValue::Bool(*b),
        Sdk::Null(_) => AttributeValue::Null,
        Sdk::Ss(v) => AttributeValue::Ss(v.clone()),
        Sdk::Ns(v) => AttributeValue::Ns(v.clone()),
        Sdk::Bs(v) => AttributeValue::Bs(v.iter().map(|b| b.as_ref().to_vec()).collect()),
        Sdk::L(l) => AttributeValue::L(l.iter().enumerate().map(|(i, x)| from_sdk(x, &format!("{path}[{i}]"))).collect::<Result<_, _>>()?),
        Sdk::M(m) => AttributeValue::M(from_sdk_map(m, path)?),
        _ => return Err(UnknownType { attribute: path.to_string() }),
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
}
