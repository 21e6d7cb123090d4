//! The fast path of [`super::parse_line`]: one serde pass from the line straight into
//! an [`Item`], with no `serde_json::Value` in between (about twice the speed; the
//! loader parses every line it loads).
//!
//! It accepts only what the checked path accepts and builds the same item; on any
//! doubt it fails without detail, and `parse_line` reparses the line on the checked
//! path, which names the line, the attribute path and the problem.

use super::{b64, validate_number, AttributeValue, Item, TypeTag, MAX_DEPTH};
use base64::Engine as _;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Parses `{"Item":{…}}`; `None` if the line needs the checked path.
pub(super) fn parse(line: &str) -> Option<Item> {
    parse_attrs_with(line, Attrs { depth: 0 })
}

/// Runs `seed` on the attribute map of a `{"Item":{…}}` line (the loader's row parser
/// decodes it straight into a row); `None` if the line is anything else.
pub fn parse_attrs_with<'de, S: DeserializeSeed<'de>>(line: &'de str, seed: S) -> Option<S::Value> {
    let mut de = serde_json::Deserializer::from_str(line);
    let value = ItemLine(seed).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

fn fail<E: serde::de::Error>() -> E {
    E::custom("")
}

/// `{"Item": X}` with X decoded by the inner seed, and nothing else in the object.
struct ItemLine<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for ItemLine<S> {
    type Value = S::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for ItemLine<S> {
    type Value = S::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("{\"Item\":{…}}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S::Value, A::Error> {
        let key: Text<'de> = map.next_key()?.ok_or_else(fail)?;
        if key.0 != "Item" {
            return Err(fail());
        }
        let value = map.next_value_seed(self.0)?;
        match map.next_key::<IgnoredAny>()? {
            None => Ok(value),
            Some(_) => Err(fail()),
        }
    }
}

/// A string, borrowed from the line when it has no escapes.
pub struct Text<'de>(pub std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(v.into()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(v.to_owned().into()))
            }
        }
        de.deserialize_str(V)
    }
}

/// An attribute map (`Item` itself or an `M` value).
struct Attrs {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Attrs {
    type Value = Item;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Item, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Attrs {
    type Value = Item;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut item = Item::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key::<String>()? {
            let v = map.next_value_seed(Typed { depth: self.depth })?;
            // A repeated name: the checked path decides (JSON leaves it open).
            if item.insert(name, v).is_some() {
                return Err(fail());
            }
        }
        Ok(item)
    }
}

/// One typed value `{"TAG": …}`.
struct Typed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Typed {
    type Value = AttributeValue;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<AttributeValue, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Typed {
    type Value = AttributeValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a typed value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AttributeValue, A::Error> {
        let tag: Text<'de> = map.next_key()?.ok_or_else(fail)?;
        let tag = TypeTag::parse(&tag.0).ok_or_else(fail)?;
        let number = |s: String| validate_number(&s).map(|()| s).map_err(|_| fail::<A::Error>());
        let bytes = |s: String| b64().decode(s).map_err(|_| fail::<A::Error>());
        let nested = self.depth + 1;
        if matches!(tag, TypeTag::L | TypeTag::M) && nested > MAX_DEPTH {
            return Err(fail());
        }
        let v = match tag {
            TypeTag::S => AttributeValue::S(map.next_value()?),
            TypeTag::N => AttributeValue::N(number(map.next_value()?)?),
            TypeTag::B => AttributeValue::B(bytes(map.next_value()?)?),
            TypeTag::Bool => AttributeValue::Bool(map.next_value()?),
            TypeTag::Null => match map.next_value()? {
                true => AttributeValue::Null,
                false => return Err(fail()),
            },
            TypeTag::Ss => AttributeValue::Ss(map.next_value()?),
            TypeTag::Ns => AttributeValue::Ns(map.next_value::<Vec<String>>()?.into_iter().map(number).collect::<Result<_, _>>()?),
            TypeTag::Bs => AttributeValue::Bs(map.next_value::<Vec<String>>()?.into_iter().map(bytes).collect::<Result<_, _>>()?),
            TypeTag::L => AttributeValue::L(map.next_value_seed(List { depth: nested })?),
            TypeTag::M => AttributeValue::M(map.next_value_seed(Attrs { depth: nested })?),
        };
        match map.next_key::<IgnoredAny>()? {
            None => Ok(v),
            Some(_) => Err(fail()),
        }
    }
}

/// The elements of an `L` value.
struct List {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for List {
    type Value = Vec<AttributeValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List {
    type Value = Vec<AttributeValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of typed values")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(v) = seq.next_element_seed(Typed { depth: self.depth })? {
            out.push(v);
        }
        Ok(out)
    }
}
