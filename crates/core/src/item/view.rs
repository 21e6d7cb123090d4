//! Read access to DynamoDB values whatever type holds them, so one writer encodes lines
//! (and one pass gathers type statistics) from crossdock's own [`AttributeValue`]s and
//! from an SDK's values alike. The exporter writes the SDK's Scan items straight into
//! lines: converting each item first was a sixth of its CPU.

use super::{b64, AttributeValue, TypeTag};
use base64::Engine as _;
use indexmap::IndexMap;
use std::collections::HashMap;

/// How the line writer reads one representation of DynamoDB values: crossdock's own
/// ([`CoreValues`]) or an SDK's (the exporter's). A type of its own, not a trait of the
/// value types, so a crate can name how to read values it does not own.
pub trait ValueView {
    type Value;
    /// The value's type and contents; `None` for a type this build does not know.
    fn view(v: &Self::Value) -> Option<View<'_, Self::Value>>;
}

/// Reads [`AttributeValue`]s.
#[derive(Debug, Clone, Copy)]
pub enum CoreValues {}

/// One value's type and contents, borrowed.
pub enum View<'a, V> {
    S(&'a str),
    N(&'a str),
    B(&'a [u8]),
    Bool(bool),
    Null,
    Ss(&'a [String]),
    Ns(&'a [String]),
    Bs(Vec<&'a [u8]>),
    L(&'a [V]),
    M(Entries<'a, V>),
}

impl<V> View<'_, V> {
    pub fn type_tag(&self) -> TypeTag {
        match self {
            View::S(_) => TypeTag::S,
            View::N(_) => TypeTag::N,
            View::B(_) => TypeTag::B,
            View::Bool(_) => TypeTag::Bool,
            View::Null => TypeTag::Null,
            View::Ss(_) => TypeTag::Ss,
            View::Ns(_) => TypeTag::Ns,
            View::Bs(_) => TypeTag::Bs,
            View::L(_) => TypeTag::L,
            View::M(_) => TypeTag::M,
        }
    }
}

/// An item's attributes or a map's entries: in their own order, or (an SDK's hash map)
/// written sorted by name, so the same data always gives the same line.
pub enum Entries<'a, V> {
    Ordered(&'a IndexMap<String, V>),
    Unordered(&'a HashMap<String, V>),
}

impl<'a, V> Entries<'a, V> {
    /// Every entry, in no particular order (for sums and statistics).
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a V)> {
        let (ordered, unordered) = match *self {
            Entries::Ordered(m) => (Some(m), None),
            Entries::Unordered(m) => (None, Some(m)),
        };
        let ordered = ordered.into_iter().flatten().map(|(k, v)| (k.as_str(), v));
        ordered.chain(unordered.into_iter().flatten().map(|(k, v)| (k.as_str(), v)))
    }
}

impl ValueView for CoreValues {
    type Value = AttributeValue;
    fn view(v: &AttributeValue) -> Option<View<'_, AttributeValue>> {
        Some(match v {
            AttributeValue::S(s) => View::S(s),
            AttributeValue::N(n) => View::N(n),
            AttributeValue::B(b) => View::B(b),
            AttributeValue::Bool(b) => View::Bool(*b),
            AttributeValue::Null => View::Null,
            AttributeValue::Ss(v) => View::Ss(v),
            AttributeValue::Ns(v) => View::Ns(v),
            AttributeValue::Bs(v) => View::Bs(v.iter().map(Vec::as_slice).collect()),
            AttributeValue::L(l) => View::L(l),
            AttributeValue::M(m) => View::M(Entries::Ordered(m)),
        })
    }
}

/// `outer` followed by the path `rel` inside it (`a` + `b` = `a.b`, `a` + `[0]` = `a[0]`,
/// `a` + `""` = `a`). Error paths are built this way on the way out of a failure, so a
/// good value allocates none.
pub fn within(outer: &str, rel: String) -> String {
    if rel.is_empty() {
        outer.to_string()
    } else if rel.starts_with('[') {
        format!("{outer}{rel}")
    } else {
        format!("{outer}.{rel}")
    }
}

/// Writes one item as a canonical DynamoDB JSON line (`{"Item":{…}}`, no newline).
/// Fails with the dotted path of a value whose type is unknown (`out` then holds part
/// of the line).
pub fn write_item<R: ValueView>(item: &Entries<'_, R::Value>, out: &mut String) -> Result<(), String> {
    out.push_str("{\"Item\":");
    write_entries::<R>(item, out)?;
    out.push('}');
    Ok(())
}

pub(super) fn write_str(s: &str, out: &mut String) {
    // Most strings need no escape: copied as they are, which is what serde_json writes.
    // A fold without early exit: the compiler vectorises it (long strings are common).
    if !s.bytes().fold(false, |hit, b| hit | (b == b'"') | (b == b'\\') | (b < 0x20)) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json's escaping is the canonical JSON one; writing into a String cannot fail.
    let mut buf = Vec::with_capacity(s.len() + 2);
    if serde_json::to_writer(&mut buf, s).is_ok() {
        out.push_str(&String::from_utf8_lossy(&buf));
    }
}

fn write_entries<R: ValueView>(entries: &Entries<'_, R::Value>, out: &mut String) -> Result<(), String> {
    fn pairs<'v, R: ValueView>(it: impl Iterator<Item = (&'v str, &'v R::Value)>, out: &mut String) -> Result<(), String>
    where
        R::Value: 'v,
    {
        out.push('{');
        for (i, (k, v)) in it.enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(k, out);
            out.push(':');
            write_value::<R>(v, out).map_err(|rel| within(k, rel))?;
        }
        out.push('}');
        Ok(())
    }
    match entries {
        Entries::Ordered(m) => pairs::<R>(m.iter().map(|(k, v)| (k.as_str(), v)), out),
        Entries::Unordered(m) => {
            let mut sorted: Vec<(&str, &R::Value)> = m.iter().map(|(k, v)| (k.as_str(), v)).collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
            pairs::<R>(sorted.into_iter(), out)
        }
    }
}

fn write_value<R: ValueView>(v: &R::Value, out: &mut String) -> Result<(), String> {
    let view = R::view(v).ok_or_else(String::new)?;
    out.push_str("{\"");
    out.push_str(view.type_tag().as_str());
    out.push_str("\":");
    match view {
        View::S(s) | View::N(s) => write_str(s, out),
        View::B(b) => write_str(&b64().encode(b), out),
        View::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        View::Null => out.push_str("true"),
        View::Ss(ss) | View::Ns(ss) => write_list(ss.iter().map(String::as_str), out),
        View::Bs(bs) => {
            let enc: Vec<String> = bs.iter().map(|b| b64().encode(b)).collect();
            write_list(enc.iter().map(String::as_str), out)
        }
        View::L(l) => {
            out.push('[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value::<R>(x, out).map_err(|rel| within(&format!("[{i}]"), rel))?;
            }
            out.push(']');
        }
        View::M(m) => write_entries::<R>(&m, out)?,
    }
    out.push('}');
    Ok(())
}

fn write_list<'a>(it: impl Iterator<Item = &'a str>, out: &mut String) {
    out.push('[');
    for (i, s) in it.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(s, out);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of a type the writer does not know, inside a list inside a map.
    struct Probe(Option<AttributeValue>, Vec<Probe>);
    enum Probes {}
    impl ValueView for Probes {
        type Value = Probe;
        fn view(p: &Probe) -> Option<View<'_, Probe>> {
            match &p.0 {
                Some(AttributeValue::L(_)) => Some(View::L(&p.1)),
                Some(AttributeValue::S(s)) => Some(View::S(s)),
                _ => None,
            }
        }
    }

    #[test]
    fn an_unknown_type_fails_with_its_path_and_hash_maps_are_written_sorted() {
        let list = Probe(Some(AttributeValue::L(vec![])), vec![Probe(Some(AttributeValue::S("x".into())), vec![]), Probe(None, vec![])]);
        let m = HashMap::from([("b".to_string(), list), ("a".to_string(), Probe(Some(AttributeValue::S("y".into())), vec![]))]);
        let mut out = String::new();
        assert_eq!(write_item::<Probes>(&Entries::Unordered(&m), &mut out), Err("b[1]".to_string()));
        assert!(out.starts_with(r#"{"Item":{"a":{"S":"y"},"b":{"L":[{"S":"x"},"#), "{out}");
    }

    #[test]
    fn paths_join_names_and_indexes() {
        assert_eq!(within("a", String::new()), "a");
        assert_eq!(within("a", "b".into()), "a.b");
        assert_eq!(within("a", "[0].c".into()), "a[0].c");
    }
}
