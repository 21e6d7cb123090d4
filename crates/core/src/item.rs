//! DynamoDB JSON item codec: the `{"Item":{…}}` line format of DynamoDB's native
//! S3 export, which crossdock's dumps also use.
//!
//! Parsing is lossless: numbers stay decimal strings (validated against DynamoDB's
//! 38-digit / exponent rules, never through `f64`), binary is decoded from base64 and
//! re-encoded identically, attribute order is kept. Writing produces the canonical
//! compact form, so `write(parse(line)) == line` for every line crossdock writes.

mod fast;
mod view;

pub use fast::{parse_attrs_with, Text};
pub use view::{within, write_item, CoreValues, Entries, ValueView, View};

use base64::Engine as _;
use indexmap::IndexMap;

/// Maximum nesting of L/M values DynamoDB accepts: a top-level attribute may hold 32
/// nested `L`/`M` values, the 33rd is refused. The exporter writes what DynamoDB
/// stored and the loader reads it through this codec, so this one constant is the
/// limit on both sides.
pub const MAX_DEPTH: usize = 32;

/// One DynamoDB item: attribute name → value, in the order seen.
pub type Item = IndexMap<String, AttributeValue>;

/// A DynamoDB attribute value, one variant per DynamoDB type tag.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    S(String),
    /// A number as its decimal text, exactly as DynamoDB returned it.
    N(String),
    B(Vec<u8>),
    Bool(bool),
    Null,
    Ss(Vec<String>),
    Ns(Vec<String>),
    Bs(Vec<Vec<u8>>),
    L(Vec<AttributeValue>),
    M(IndexMap<String, AttributeValue>),
}

/// DynamoDB's type tags, used for per-attribute type statistics and schema inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum TypeTag {
    S,
    N,
    B,
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "NULL")]
    Null,
    #[serde(rename = "SS")]
    Ss,
    #[serde(rename = "NS")]
    Ns,
    #[serde(rename = "BS")]
    Bs,
    L,
    M,
}

impl TypeTag {
    pub const ALL: [TypeTag; 10] =
        [TypeTag::S, TypeTag::N, TypeTag::B, TypeTag::Bool, TypeTag::Null, TypeTag::Ss, TypeTag::Ns, TypeTag::Bs, TypeTag::L, TypeTag::M];

    /// The tag as it appears in DynamoDB JSON (`"S"`, `"BOOL"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TypeTag::S => "S",
            TypeTag::N => "N",
            TypeTag::B => "B",
            TypeTag::Bool => "BOOL",
            TypeTag::Null => "NULL",
            TypeTag::Ss => "SS",
            TypeTag::Ns => "NS",
            TypeTag::Bs => "BS",
            TypeTag::L => "L",
            TypeTag::M => "M",
        }
    }

    pub fn parse(tag: &str) -> Option<TypeTag> {
        TypeTag::ALL.into_iter().find(|t| t.as_str() == tag)
    }
}

impl AttributeValue {
    pub fn type_tag(&self) -> TypeTag {
        match self {
            AttributeValue::S(_) => TypeTag::S,
            AttributeValue::N(_) => TypeTag::N,
            AttributeValue::B(_) => TypeTag::B,
            AttributeValue::Bool(_) => TypeTag::Bool,
            AttributeValue::Null => TypeTag::Null,
            AttributeValue::Ss(_) => TypeTag::Ss,
            AttributeValue::Ns(_) => TypeTag::Ns,
            AttributeValue::Bs(_) => TypeTag::Bs,
            AttributeValue::L(_) => TypeTag::L,
            AttributeValue::M(_) => TypeTag::M,
        }
    }
}

/// Serialises as DynamoDB JSON (`{"S":"x"}`), the form used in checkpoints.
impl serde::Serialize for AttributeValue {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let b64s = |bs: &[Vec<u8>]| bs.iter().map(|b| b64().encode(b)).collect::<Vec<_>>();
        let mut m = ser.serialize_map(Some(1))?;
        let tag = self.type_tag().as_str();
        match self {
            AttributeValue::S(v) | AttributeValue::N(v) => m.serialize_entry(tag, v)?,
            AttributeValue::B(v) => m.serialize_entry(tag, &b64().encode(v))?,
            AttributeValue::Bool(v) => m.serialize_entry(tag, v)?,
            AttributeValue::Null => m.serialize_entry(tag, &true)?,
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => m.serialize_entry(tag, v)?,
            AttributeValue::Bs(v) => m.serialize_entry(tag, &b64s(v))?,
            AttributeValue::L(v) => m.serialize_entry(tag, v)?,
            AttributeValue::M(v) => m.serialize_entry(tag, v)?,
        }
        m.end()
    }
}

/// Deserialises DynamoDB JSON with the same validation as [`parse_line`].
impl<'de> serde::Deserialize<'de> for AttributeValue {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(de)?;
        parse_value(v, "", 0).map_err(|(path, kind)| serde::de::Error::custom(format!("attribute {path:?}: {kind}")))
    }
}

/// What was wrong with a line, without its position (see [`CodecError`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecErrorKind {
    #[error("not valid JSON ({0}); the line may be truncated")]
    Json(String),
    #[error("expected an object {{\"Item\":{{…}}}}")]
    NotAnItemLine,
    #[error("expected an object with exactly one type tag, e.g. {{\"S\":\"x\"}}")]
    NotATypedValue,
    #[error("unknown type tag {0:?}; expected one of S N B BOOL NULL SS NS BS L M")]
    UnknownTag(String),
    #[error("{tag} expects {expected}")]
    WrongShape { tag: &'static str, expected: &'static str },
    #[error("invalid base64: {0}")]
    Base64(String),
    #[error("invalid number {0:?}: {1}")]
    Number(String, &'static str),
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A line that could not be decoded: which line, which attribute (a path such as
/// `address.lines[2]`), and what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: attribute {attribute:?}: {kind}")]
pub struct CodecError {
    /// 1-based line number within the file being read (0 when not known).
    pub line: u64,
    /// Path of the attribute where decoding failed; empty for the line itself.
    pub attribute: String,
    pub kind: CodecErrorKind,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// Parses one DynamoDB JSON line (`{"Item":{…}}`). `line_no` is used only in errors.
pub fn parse_line(line: &str, line_no: u64) -> Result<Item, CodecError> {
    if let Some(item) = fast::parse(line) {
        return Ok(item);
    }
    checked_parse_line(line, line_no)
}

/// The checked path: through `serde_json::Value`, with errors naming the attribute.
fn checked_parse_line(line: &str, line_no: u64) -> Result<Item, CodecError> {
    let err = |attribute: String, kind| CodecError { line: line_no, attribute, kind };
    let value: serde_json::Value =
        serde_json::from_str(line.trim_end_matches(['\n', '\r'])).map_err(|e| err(String::new(), CodecErrorKind::Json(e.to_string())))?;
    let serde_json::Value::Object(mut top) = value else {
        return Err(err(String::new(), CodecErrorKind::NotAnItemLine));
    };
    if top.len() != 1 {
        return Err(err(String::new(), CodecErrorKind::NotAnItemLine));
    }
    let Some(serde_json::Value::Object(attrs)) = top.remove("Item") else {
        return Err(err(String::new(), CodecErrorKind::NotAnItemLine));
    };
    parse_map(attrs, "", 0).map_err(|(attribute, kind)| err(attribute, kind))
}

type PathError = (String, CodecErrorKind);

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn parse_map(attrs: serde_json::Map<String, serde_json::Value>, path: &str, depth: usize) -> Result<Item, PathError> {
    let mut item = Item::with_capacity(attrs.len());
    for (name, v) in attrs {
        let p = join(path, &name);
        let av = parse_value(v, &p, depth)?;
        item.insert(name, av);
    }
    Ok(item)
}

fn parse_value(v: serde_json::Value, path: &str, depth: usize) -> Result<AttributeValue, PathError> {
    use serde_json::Value as J;
    let fail = |kind| Err((path.to_string(), kind));
    let J::Object(obj) = v else {
        return fail(CodecErrorKind::NotATypedValue);
    };
    if obj.len() != 1 {
        return fail(CodecErrorKind::NotATypedValue);
    }
    let Some((tag, inner)) = obj.into_iter().next() else {
        return fail(CodecErrorKind::NotATypedValue);
    };
    let Some(t) = TypeTag::parse(&tag) else {
        return fail(CodecErrorKind::UnknownTag(tag));
    };
    let shape = |expected| (path.to_string(), CodecErrorKind::WrongShape { tag: t.as_str(), expected });
    let strings = |inner: J| -> Result<Vec<String>, PathError> {
        let J::Array(items) = inner else { return Err(shape("an array of strings")) };
        items
            .into_iter()
            .map(|i| match i {
                J::String(s) => Ok(s),
                _ => Err(shape("an array of strings")),
            })
            .collect()
    };
    let decode = |s: &str| b64().decode(s).map_err(|e| (path.to_string(), CodecErrorKind::Base64(e.to_string())));
    Ok(match t {
        TypeTag::S => match inner {
            J::String(s) => AttributeValue::S(s),
            _ => return Err(shape("a string")),
        },
        TypeTag::N => match inner {
            J::String(s) => {
                validate_number(&s).map_err(|why| (path.to_string(), CodecErrorKind::Number(s.clone(), why)))?;
                AttributeValue::N(s)
            }
            _ => return Err(shape("a number as a string")),
        },
        TypeTag::B => match inner {
            J::String(s) => AttributeValue::B(decode(&s)?),
            _ => return Err(shape("a base64 string")),
        },
        TypeTag::Bool => match inner {
            J::Bool(b) => AttributeValue::Bool(b),
            _ => return Err(shape("true or false")),
        },
        TypeTag::Null => match inner {
            J::Bool(true) => AttributeValue::Null,
            _ => return Err(shape("true")),
        },
        TypeTag::Ss => AttributeValue::Ss(strings(inner)?),
        TypeTag::Ns => {
            let ns = strings(inner)?;
            for n in &ns {
                validate_number(n).map_err(|why| (path.to_string(), CodecErrorKind::Number(n.clone(), why)))?;
            }
            AttributeValue::Ns(ns)
        }
        TypeTag::Bs => {
            let bs = strings(inner)?;
            AttributeValue::Bs(bs.iter().map(|s| decode(s)).collect::<Result<_, _>>()?)
        }
        TypeTag::L => {
            if depth + 1 > MAX_DEPTH {
                return fail(CodecErrorKind::TooDeep);
            }
            let J::Array(items) = inner else { return Err(shape("an array")) };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                out.push(parse_value(item, &format!("{path}[{i}]"), depth + 1)?);
            }
            AttributeValue::L(out)
        }
        TypeTag::M => {
            if depth + 1 > MAX_DEPTH {
                return fail(CodecErrorKind::TooDeep);
            }
            let J::Object(m) = inner else { return Err(shape("an object")) };
            AttributeValue::M(parse_map(m, path, depth + 1)?)
        }
    })
}

/// Checks a DynamoDB number: optional sign, digits with an optional fraction and
/// exponent, at most 38 significant digits, magnitude within 1E-130 ..= 9.99…E+125.
pub fn validate_number(s: &str) -> Result<(), &'static str> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err("no digits");
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number");
    }
    let exp: i64 = match exp {
        Some(e) => {
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad exponent");
            }
            e.parse().map_err(|_| "bad exponent")?
        }
        None => 0,
    };
    // The digits are int then frac; counted in place (this runs for every number loaded).
    let digits = || int.bytes().chain(frac.bytes());
    let total = int.len() + frac.len();
    let leading_zeros = digits().take_while(|&b| b == b'0').count();
    if leading_zeros == total {
        return Ok(()); // zero
    }
    let trailing_zeros = digits().rev().take_while(|&b| b == b'0').count();
    if total - leading_zeros - trailing_zeros > 38 {
        return Err("more than 38 significant digits");
    }
    // Decimal exponent of the leading significant digit.
    let magnitude = int.len() as i64 - 1 - leading_zeros as i64 + exp;
    if magnitude > 125 {
        return Err("larger than 9.9999999999999999999999999999999999999E+125");
    }
    if magnitude < -130 {
        return Err("smaller than 1E-130");
    }
    Ok(())
}

/// Writes one item as a canonical DynamoDB JSON line (`{"Item":{…}}`, no newline).
pub fn write_line(item: &Item, out: &mut String) {
    // Every core value has a known type: writing one cannot fail.
    let _ = view::write_item::<CoreValues>(&Entries::Ordered(item), out);
}

/// Convenience wrapper around [`write_line`].
pub fn to_line(item: &Item) -> String {
    let mut s = String::with_capacity(256);
    write_line(item, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_TYPES: &str = r#"{"Item":{"pk":{"S":"user#1"},"n":{"N":"12345678901234567890123456789012345678"},"tiny":{"N":"1E-130"},"neg":{"N":"-0.5"},"b":{"B":"AAEC/w=="},"t":{"BOOL":true},"f":{"BOOL":false},"z":{"NULL":true},"ss":{"SS":["a","b c"]},"ns":{"NS":["1","2.5"]},"bs":{"BS":["AA==","/w=="]},"l":{"L":[{"S":""},{"N":"0"},{"L":[]}]},"m":{"M":{"k.e y\"":{"S":"é 日本 \u0001"},"e":{"M":{}}}},"":{"S":"empty name"}}}"#;

    #[test]
    fn every_type_round_trips_byte_exact() {
        let item = parse_line(ALL_TYPES, 1).expect("valid line");
        assert_eq!(item.len(), 14);
        assert_eq!(item["n"], AttributeValue::N("12345678901234567890123456789012345678".into()));
        assert_eq!(item["tiny"], AttributeValue::N("1E-130".into()));
        assert_eq!(item["b"], AttributeValue::B(vec![0, 1, 2, 255]));
        assert_eq!(to_line(&item), ALL_TYPES);
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in ["", "plain", "é 日本 \u{7f}/", "quote\"", "back\\slash", "\u{0}\u{1f}\n\t", "mixed \"é\" \u{1}"] {
            let mut out = String::new();
            view::write_str(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).expect("serialises"), "{s:?}");
        }
    }

    fn error_of(line: &str) -> CodecError {
        match parse_line(line, 7) {
            Err(e) => e,
            Ok(item) => panic!("{line} parsed as {item:?}"),
        }
    }

    #[test]
    fn invalid_input_is_a_typed_error_naming_line_and_attribute() {
        let e = error_of(r#"{"Item":{"pk":{"S":"x"},"blob":{"B":"not base64!"}}}"#);
        assert_eq!((e.line, e.attribute.as_str()), (7, "blob"));
        assert!(matches!(e.kind, CodecErrorKind::Base64(_)), "{e}");

        let e = error_of(r#"{"Item":{"m":{"M":{"nums":{"NS":["1","two"]}}}}}"#);
        assert_eq!(e.attribute, "m.nums");
        assert!(matches!(e.kind, CodecErrorKind::Number(ref n, _) if n == "two"), "{e}");

        let e = error_of(r#"{"Item":{"l":{"L":[{"S":"a"},{"X":"b"}]}}}"#);
        assert_eq!(e.attribute, "l[1]");
        assert_eq!(e.kind, CodecErrorKind::UnknownTag("X".into()));

        let e = error_of(r#"{"Item":{"pk":{"S":"abc"#);
        assert_eq!(e.attribute, "");
        assert!(matches!(e.kind, CodecErrorKind::Json(_)));
        assert!(e.to_string().starts_with("line 7:"), "{e}");

        let e = error_of(r#"{"pk":{"S":"x"}}"#);
        assert_eq!(e.kind, CodecErrorKind::NotAnItemLine);

        let e = error_of(r#"{"Item":{"a":{"S":"x","N":"1"}}}"#);
        assert_eq!((e.attribute.as_str(), e.kind), ("a", CodecErrorKind::NotATypedValue));
        let e = error_of(r#"{"Item":{"a":{"NULL":false}}}"#);
        assert!(matches!(e.kind, CodecErrorKind::WrongShape { tag: "NULL", .. }), "{e}");
    }

    /// What JSON leaves open (repeated names) is decided by the checked path: the last
    /// value wins, as it always has.
    #[test]
    fn repeated_names_take_the_checked_path() {
        let line = r#"{"Item":{"a":{"S":"x"},"a":{"S":"y"}}}"#;
        assert_eq!(fast::parse(line), None);
        assert_eq!(parse_line(line, 1).expect("parses")["a"], AttributeValue::S("y".into()));
    }

    #[test]
    fn numbers_follow_dynamodb_limits() {
        for ok in ["0", "-0", "1E-130", "9.9999999999999999999999999999999999999E+125", "0.000123", "100", "1.5e3"] {
            assert_eq!(validate_number(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-", "1..2", "1e", "abc", "1E-131", "1E+126", "123456789012345678901234567890123456789", "NaN", "Infinity"] {
            assert!(validate_number(bad).is_err(), "{bad} accepted");
        }
        // Trailing zeros are not significant digits.
        assert_eq!(validate_number("12345678901234567890123456789012345678000"), Ok(()));
    }

    /// `levels` nested values around a leaf: lists, maps, or the two alternating.
    fn nest(levels: usize, wrap: impl Fn(usize, String) -> String) -> String {
        let mut v = String::from(r#"{"S":"leaf"}"#);
        for level in 0..levels {
            v = wrap(level, v);
        }
        format!(r#"{{"Item":{{"pk":{{"S":"k"}},"a":{v}}}}}"#)
    }

    /// DynamoDB's limit: 32 levels are accepted, 33 refused, by the fast path, the
    /// checked path and the serde form (checkpoints, JSON columns) alike.
    #[test]
    fn nesting_is_limited_to_32_levels() {
        let list = |_: usize, v: String| format!(r#"{{"L":[{v}]}}"#);
        let map = |_: usize, v: String| format!(r#"{{"M":{{"k":{v}}}}}"#);
        let mixed = |level: usize, v: String| if level.is_multiple_of(2) { list(level, v) } else { map(level, v) };
        let shapes: [&dyn Fn(usize, String) -> String; 3] = [&list, &map, &mixed];
        for wrap in shapes {
            let deepest = nest(MAX_DEPTH, wrap);
            let item = parse_line(&deepest, 1).unwrap_or_else(|e| panic!("{MAX_DEPTH} levels refused: {e}"));
            assert_eq!(fast::parse(&deepest).as_ref(), Some(&item), "the fast path accepts {MAX_DEPTH} levels");
            assert_eq!(checked_parse_line(&deepest, 1).as_ref(), Ok(&item));
            assert_eq!(to_line(&item), deepest);
            let value = serde_json::to_string(&item["a"]).expect("serialises");
            assert!(serde_json::from_str::<AttributeValue>(&value).is_ok(), "serde form refuses {MAX_DEPTH} levels");

            let too_deep = nest(MAX_DEPTH + 1, wrap);
            assert_eq!(fast::parse(&too_deep), None);
            let e = error_of(&too_deep);
            assert_eq!(e.kind, CodecErrorKind::TooDeep, "{e}");
            assert!(e.attribute.starts_with('a'), "{e}");
            let value = &too_deep[r#"{"Item":{"pk":{"S":"k"},"a":"#.len()..too_deep.len() - 2];
            assert!(serde_json::from_str::<AttributeValue>(value).is_err(), "serde form accepts {} levels", MAX_DEPTH + 1);
        }
        assert_eq!(MAX_DEPTH, 32);
    }

    /// Numbers DynamoDB accepts: up to 38 digits plain, or short mantissas with exponents.
    fn number() -> impl Strategy<Value = String> {
        let plain = ("-?[1-9][0-9]{0,20}", proptest::option::of("[0-9]{1,17}")).prop_map(|(int, frac)| frac.map_or(int.clone(), |f| format!("{int}.{f}")));
        let exponent = ("-?[1-9]", "[0-9]{0,4}", -125i32..=120).prop_map(|(d, f, e)| if f.is_empty() { format!("{d}E{e}") } else { format!("{d}.{f}e{e:+}") });
        prop_oneof![plain, exponent]
    }

    fn value() -> impl Strategy<Value = AttributeValue> {
        let leaf = prop_oneof![
            any::<String>().prop_map(AttributeValue::S),
            number().prop_map(AttributeValue::N),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(AttributeValue::B),
            any::<bool>().prop_map(AttributeValue::Bool),
            Just(AttributeValue::Null),
            proptest::collection::vec(any::<String>(), 1..4).prop_map(AttributeValue::Ss),
            proptest::collection::vec(number(), 1..4).prop_map(AttributeValue::Ns),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 1..4).prop_map(AttributeValue::Bs),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                proptest::collection::vec((any::<String>(), inner), 0..4).prop_map(|kv| AttributeValue::M(kv.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn serde_form_is_dynamodb_json() {
        let item = parse_line(ALL_TYPES, 1).expect("valid line");
        let json = serde_json::to_string(&item).expect("serialises");
        assert_eq!(format!("{{\"Item\":{json}}}"), ALL_TYPES);
        let back: Item = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, item);
        assert!(serde_json::from_str::<Item>(r#"{"a":{"N":"x"}}"#).is_err());
    }

    proptest! {
        #[test]
        fn write_then_parse_is_identity(attrs in proptest::collection::vec((any::<String>(), value()), 1..8)) {
            let item: Item = attrs.into_iter().collect();
            let line = to_line(&item);
            let back = parse_line(&line, 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &item);
            prop_assert_eq!(to_line(&back), line.clone());
            prop_assert_eq!(fast::parse(&line), Some(item));
        }
    }
}
