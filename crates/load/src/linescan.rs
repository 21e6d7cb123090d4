//! A scanner for the plainest lines of an export: `{"Item":{"name":{"S":"…"},…}}` with
//! no whitespace, no escape in any name or string, and only `S`, `N` and `BOOL` values
//! — what crossdock's exporter writes for most items. It hands out each attribute
//! borrowed from the line, without serde's per-token dispatch; on a line of any other
//! shape it stops and says so, and the caller parses that line in full. Written because
//! JSON parsing was the largest part of a PostgreSQL load's CPU: with it, a load of 1M
//! rows (`scripts/bench-load`) took 0.84 s of CPU instead of 1.14 s.

/// One attribute value of a plain line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    S(&'a str),
    N(&'a str),
    Bool(bool),
}

/// Calls `f` with each attribute of `line`, in order, if the line is plain (see the
/// module docs). `false` as soon as the line shows another shape, or `f` returns
/// `false`; `f` may then have seen some of the line's attributes.
pub fn scan_plain<'a>(line: &'a str, mut f: impl FnMut(&'a str, Scalar<'a>) -> bool) -> bool {
    let b = line.as_bytes();
    let Some(mut i) = line.strip_prefix(r#"{"Item":{"#).map(|_| 9) else { return false };
    if b.get(i) == Some(&b'}') {
        return &line[i..] == "}}";
    }
    loop {
        let Some(name) = string(line, &mut i) else { return false };
        if !expect(b, &mut i, br#":{""#) {
            return false;
        }
        let Some(tag_len) = b[i..].iter().position(|&c| c == b'"') else { return false };
        let tag = &b[i..i + tag_len];
        i += tag_len + 1;
        if !expect(b, &mut i, b":") {
            return false;
        }
        let value = match tag {
            b"S" => string(line, &mut i).map(Scalar::S),
            b"N" => string(line, &mut i).map(Scalar::N),
            b"BOOL" if expect(b, &mut i, b"true") => Some(Scalar::Bool(true)),
            b"BOOL" if expect(b, &mut i, b"false") => Some(Scalar::Bool(false)),
            _ => None,
        };
        let Some(value) = value else { return false };
        if !expect(b, &mut i, b"}") || !f(name, value) {
            return false;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return &line[i..] == "}}",
            _ => return false,
        }
    }
}

/// Skips `token` at `i` if it is there.
fn expect(b: &[u8], i: &mut usize, token: &[u8]) -> bool {
    let found = b[*i..].starts_with(token);
    if found {
        *i += token.len();
    }
    found
}

/// The string at `i` (`"…"`) when it has no escape (and so no control character: JSON
/// allows none unescaped); `None` otherwise.
fn string<'a>(line: &'a str, i: &mut usize) -> Option<&'a str> {
    let b = line.as_bytes();
    if b.get(*i) != Some(&b'"') {
        return None;
    }
    let start = *i + 1;
    let len = b[start..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if b[start + len] != b'"' {
        return None;
    }
    *i = start + len + 1;
    // Both ends are next to an ASCII quote: character boundaries.
    Some(&line[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(line: &str) -> Option<Vec<(&str, Scalar<'_>)>> {
        let mut seen = Vec::new();
        scan_plain(line, |n, v| {
            seen.push((n, v));
            true
        })
        .then_some(seen)
    }

    #[test]
    fn plain_lines_are_scanned_in_order() {
        let line = r#"{"Item":{"pk":{"S":"user#1 é"},"n":{"N":"-1.5E3"},"t":{"BOOL":true},"f":{"BOOL":false},"":{"S":""}}}"#;
        let want = vec![("pk", Scalar::S("user#1 é")), ("n", Scalar::N("-1.5E3")), ("t", Scalar::Bool(true)), ("f", Scalar::Bool(false)), ("", Scalar::S(""))];
        assert_eq!(scan(line), Some(want));
        assert_eq!(scan(r#"{"Item":{}}"#), Some(vec![]));
    }

    #[test]
    fn any_other_shape_is_left_to_the_full_parse() {
        for line in [
            r#"{"Item":{"pk":{"S":"a\"b"}}}"#,
            r#"{"Item":{"p\u006b":{"S":"a"}}}"#,
            "{\"Item\":{\"pk\":{\"S\":\"a\u{1}\"}}}",
            r#"{"Item": {"pk":{"S":"a"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"z":{"NULL":true}}}"#,
            r#"{"Item":{"pk":{"SS":["a"]}}}"#,
            r#"{"Item":{"pk":{"N":1}}}"#,
            r#"{"Item":{"pk":{"BOOL":"true"}}}"#,
            r#"{"Item":{"pk":{"S":"a","N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"a"}},"x":1}"#,
            r#"{"Item":{"pk":{"S":"a"}}} "#,
            r#"{"Item":{"pk":{"S":"a"}}"#,
            r#"{"Item":{"pk":{"S":"a"#,
            r#"{"Item":{"pk":{"S":"a"},}}"#,
            r#"{"Other":{}}"#,
            "",
        ] {
            assert_eq!(scan(line), None, "{line}");
        }
    }

    #[test]
    fn the_callback_can_stop_the_scan() {
        let mut calls = 0;
        assert!(!scan_plain(r#"{"Item":{"a":{"S":"x"},"b":{"S":"y"}}}"#, |_, _| {
            calls += 1;
            false
        }));
        assert_eq!(calls, 1);
    }
}
