//! The loader's fast path from a DynamoDB JSON line straight to a row of the model:
//! plain lines scanned without serde ([`crate::linescan`]), others in one serde pass;
//! attribute names looked up borrowed, values decoded into cells of their column's
//! type, no [`Item`](crossdock_core::item::Item) in between. For
//! PostgreSQL the values go one step further, straight into a binary COPY tuple
//! ([`RowParser::parse_copy`]).
//!
//! It succeeds only on lines whose every attribute is present in the model with the
//! column's own type tag and builds exactly the row `parse_line` + `into_row` would;
//! anything else (a reject, a repeated name, a value of another type) returns `None`
//! (or `false`) and the caller takes the checked path, which also gives the reason.

use crate::linescan::{scan_plain, Scalar};
use crate::schema::{
    pg_escape, pg_needs_escape, stored_json, stored_text, to_decimal_text, to_float, to_int, to_numeric, Cell, Column, ColumnType, Row, TableModel, TargetKind,
};
use crate::sink::pgcopy;
use base64::Engine as _;
use bytes::{BufMut as _, BytesMut};
use crossdock_core::item::{parse_attrs_with, validate_number, AttributeValue, Text};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use std::collections::HashMap;
use std::fmt;

/// Parses lines into rows of one model.
pub struct RowParser<'m> {
    lookup: Lookup<'m>,
    copy: CopyFields,
}

/// Finds each attribute's column.
struct Lookup<'m> {
    model: &'m TableModel,
    columns: HashMap<&'m str, usize>,
    /// The column of each position in the last line: lines of one export mostly list
    /// attributes in the same order, so a string compare usually replaces a hash lookup.
    order: Vec<usize>,
}

impl Lookup<'_> {
    fn column(&mut self, at: usize, name: &str) -> Option<usize> {
        match self.order.get(at) {
            Some(&i) if self.model.columns[i].attribute == name => Some(i),
            _ => {
                let &i = self.columns.get(name)?;
                self.order.truncate(at);
                self.order.push(i);
                Some(i)
            }
        }
    }
}

impl<'m> RowParser<'m> {
    pub fn new(model: &'m TableModel) -> Self {
        let columns = model.columns.iter().enumerate().map(|(i, c)| (c.attribute.as_str(), i)).collect();
        RowParser { lookup: Lookup { model, columns, order: Vec::new() }, copy: CopyFields::default() }
    }

    /// The row of `line`, or `None` when the checked path must decide.
    pub fn parse(&mut self, line: &str) -> Option<Row> {
        let model = self.lookup.model;
        // Most lines are plain: scanned without serde (`linescan`).
        let mut cells = vec![None; model.columns.len()];
        let lookup = &mut self.lookup;
        let mut at = 0;
        let scanned = scan_plain(line, |name, value| {
            let Some(i) = lookup.column(at, name) else { return false };
            at += 1;
            let c = &model.columns[i];
            cells[i].is_none() && scalar_cell(c.ty, model.target, value).map(|cell| cells[i] = Some(cell)).is_some()
        });
        if !scanned {
            cells.fill(None);
            cells = parse_attrs_with(line, AttrsSeed { lookup: &mut self.lookup, values: Cells(cells) })?.0;
        }
        if model.columns.iter().zip(&cells).any(|(c, cell)| c.key && cell.is_none()) {
            return None;
        }
        // Collected in place: the cells' allocation becomes the row's.
        Some(cells.into_iter().map(|c| c.unwrap_or(Cell::Null)).collect())
    }

    /// Appends the binary COPY tuple of `line` to `out` (exactly the bytes
    /// [`pgcopy::put_row`] writes for the row [`RowParser::parse`] returns); `false`,
    /// with `out` unchanged, when the checked path must decide. For a PostgreSQL model.
    pub fn parse_copy(&mut self, line: &str, out: &mut BytesMut) -> bool {
        let model = self.lookup.model;
        // Most lines are plain: scanned without serde (`linescan`).
        self.copy.reset(model.columns.len());
        let (lookup, copy) = (&mut self.lookup, &mut self.copy);
        let mut at = 0;
        let scanned = scan_plain(line, |name, value| {
            let Some(i) = lookup.column(at, name) else { return false };
            at += 1;
            copy.put(i, |out| put_scalar(model.columns[i].ty, value, out))
        });
        if !scanned {
            self.copy.reset(model.columns.len());
            if parse_attrs_with(line, AttrsSeed { lookup: &mut self.lookup, values: &mut self.copy }).is_none() {
                return false;
            }
        }
        self.copy.finish(model, out)
    }
}

/// A string, number or boolean as a cell of a column of type `ty`; `None` for any other
/// pairing, or a value the column cannot hold.
fn scalar_cell(ty: ColumnType, target: TargetKind, value: Scalar) -> Option<Cell> {
    let number = |n: &str| validate_number(n).ok();
    match (ty, value) {
        (ColumnType::String, Scalar::S(s)) => Some(Cell::Str(stored_text(target, s.to_owned()))),
        (ColumnType::Bool, Scalar::Bool(b)) => Some(Cell::Bool(b)),
        (ColumnType::Int64, Scalar::N(n)) => number(n).and_then(|_| to_int(n).ok()).map(Cell::Int),
        (ColumnType::Float64, Scalar::N(n)) => number(n).and_then(|_| to_float(n).ok()).map(Cell::Float),
        (ColumnType::Numeric, Scalar::N(n)) => number(n).and_then(|_| to_numeric(target, n.to_owned()).ok()).map(Cell::Num),
        (ColumnType::DecimalText, Scalar::N(n)) => number(n).and_then(|_| to_decimal_text(n).ok()).map(Cell::Num),
        _ => None,
    }
}

/// A value of one of the common column types straight from the line's text as a binary
/// COPY value; `false` for any other pairing of column type and value, or a value the
/// column cannot hold (the full parse then decides).
fn put_scalar(ty: ColumnType, value: Scalar, out: &mut BytesMut) -> bool {
    match (ty, value) {
        (ColumnType::String, Scalar::S(s)) => {
            if pg_needs_escape(s) {
                out.put_slice(pg_escape(s.to_owned()).as_bytes());
            } else {
                out.put_slice(s.as_bytes());
            }
            true
        }
        (ColumnType::Int64, Scalar::N(n)) => validate_number(n).is_ok() && to_int(n).map(|v| out.put_i64(v)).is_ok(),
        (ColumnType::Float64, Scalar::N(n)) => validate_number(n).is_ok() && to_float(n).map(|v| out.put_f64(v)).is_ok(),
        (ColumnType::Numeric, Scalar::N(n)) => validate_number(n).is_ok() && pgcopy::put_numeric(n, out).is_ok(),
        (ColumnType::Bool, Scalar::Bool(b)) => {
            out.put_u8(b.into());
            true
        }
        _ => false,
    }
}

fn fail<E: serde::de::Error>() -> E {
    E::custom("")
}

/// What a parse does with each attribute's value.
trait Values {
    /// Reads the value of column `i` from `map`; an error if the column had one.
    fn take<'de, A: MapAccess<'de>>(&mut self, map: &mut A, i: usize, column: &Column, target: TargetKind) -> Result<(), A::Error>;
}

/// Keeps each value as a cell.
struct Cells(Vec<Option<Cell>>);

impl Values for Cells {
    fn take<'de, A: MapAccess<'de>>(&mut self, map: &mut A, i: usize, column: &Column, target: TargetKind) -> Result<(), A::Error> {
        let cell = map.next_value_seed(CellSeed { column, target })?;
        match self.0[i].replace(cell) {
            None => Ok(()),
            Some(_) => Err(fail()),
        }
    }
}

/// Encodes each value as a binary COPY field (length and value) into one buffer, in the
/// line's order; `spans` says where each column's field is.
#[derive(Default)]
struct CopyFields {
    bytes: BytesMut,
    spans: Vec<Option<std::ops::Range<usize>>>,
}

impl CopyFields {
    fn reset(&mut self, columns: usize) {
        self.bytes.clear();
        self.spans.clear();
        self.spans.resize(columns, None);
    }

    /// The field of column `i`, its value written by `value`; `false` if the column
    /// already has one or `value` fails.
    fn put(&mut self, i: usize, value: impl FnOnce(&mut BytesMut) -> bool) -> bool {
        if self.spans[i].is_some() {
            return false;
        }
        let at = self.bytes.len();
        self.bytes.put_i32(0);
        if !value(&mut self.bytes) {
            self.bytes.truncate(at);
            return false;
        }
        let len = (self.bytes.len() - at - 4) as i32;
        self.bytes[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.spans[i] = Some(at..self.bytes.len());
        true
    }

    /// Appends the tuple to `out`, unless a key column has no value.
    fn finish(&self, model: &TableModel, out: &mut BytesMut) -> bool {
        if model.columns.iter().zip(&self.spans).any(|(c, span)| c.key && span.is_none()) {
            return false;
        }
        out.put_i16(model.columns.len() as i16);
        for span in &self.spans {
            match span {
                // The field's length is part of its span.
                Some(r) => out.put_slice(&self.bytes[r.clone()]),
                None => out.put_i32(-1),
            }
        }
        true
    }
}

impl Values for &mut CopyFields {
    fn take<'de, A: MapAccess<'de>>(&mut self, map: &mut A, i: usize, column: &Column, target: TargetKind) -> Result<(), A::Error> {
        let mut read = Ok(());
        let put = self.put(i, |out| {
            read = map.next_value_seed(CopySeed { column, target, out });
            read.is_ok()
        });
        match (put, read) {
            (true, _) => Ok(()),
            (false, Err(e)) => Err(e),
            // The column already had a value.
            (false, Ok(())) => Err(fail()),
        }
    }
}

struct AttrsSeed<'p, 'm, V> {
    lookup: &'p mut Lookup<'m>,
    values: V,
}

impl<'de, V: Values> DeserializeSeed<'de> for AttrsSeed<'_, '_, V> {
    type Value = V;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<V, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de, V: Values> Visitor<'de> for AttrsSeed<'_, '_, V> {
    type Value = V;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute map")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<V, A::Error> {
        let mut at = 0;
        while let Some(name) = map.next_key::<Text<'de>>()? {
            let i = self.lookup.column(at, name.0.as_ref()).ok_or_else(fail)?;
            at += 1;
            let model = self.lookup.model;
            self.values.take(&mut map, i, &model.columns[i], model.target)?;
        }
        Ok(self.values)
    }
}

/// One typed value decoded into a cell of `column`'s type.
struct CellSeed<'c> {
    column: &'c Column,
    target: TargetKind,
}

impl<'de> DeserializeSeed<'de> for CellSeed<'_> {
    type Value = Cell;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Cell, D::Error> {
        if self.column.ty == ColumnType::Json {
            // Any type goes into a JSON column: decode the value whole, with the codec.
            let v = <AttributeValue as serde::Deserialize>::deserialize(de)?;
            return Ok(Cell::Json(stored_json(self.target, &v)));
        }
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CellSeed<'_> {
    type Value = Cell;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a typed value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Cell, A::Error> {
        let tag: Text<'de> = map.next_key()?.ok_or_else(fail)?;
        typed_cell(self.column, self.target, &tag.0, &mut map)
    }
}

/// The rest of a typed value whose type tag has been read, as a cell of `column`'s
/// type; an error for a tag the column does not take.
fn typed_cell<'de, A: MapAccess<'de>>(column: &Column, target: TargetKind, tag: &str, map: &mut A) -> Result<Cell, A::Error> {
    let number = |n: &str| validate_number(n).map_err(|_| fail::<A::Error>());
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| fail::<A::Error>());
    let scalar = |v: Scalar| scalar_cell(column.ty, target, v).ok_or_else(fail::<A::Error>);
    let cell = match (column.ty, tag) {
        (ColumnType::String, "S") => scalar(Scalar::S(&map.next_value::<Text<'de>>()?.0))?,
        (ColumnType::Bool, "BOOL") => scalar(Scalar::Bool(map.next_value()?))?,
        (ColumnType::Int64 | ColumnType::Float64 | ColumnType::Numeric | ColumnType::DecimalText, "N") => scalar(Scalar::N(&map.next_value::<Text<'de>>()?.0))?,
        (ColumnType::Bytes, "B") => Cell::Bytes(b64(&map.next_value::<Text<'de>>()?.0)?),
        (ColumnType::StringArray, "SS") => Cell::StrArr(map.next_value::<Vec<String>>()?.into_iter().map(|s| stored_text(target, s)).collect()),
        (ColumnType::BytesArray, "BS") => Cell::BytesArr(map.next_value::<Vec<Text<'de>>>()?.iter().map(|s| b64(&s.0)).collect::<Result<_, _>>()?),
        (ColumnType::Int64Array | ColumnType::Float64Array | ColumnType::NumericArray | ColumnType::DecimalTextArray, "NS") => {
            let ns: Vec<String> = map.next_value()?;
            for n in &ns {
                number(n)?;
            }
            match column.ty {
                ColumnType::Int64Array => Cell::IntArr(ns.iter().map(|n| to_int(n)).collect::<Result<_, _>>().map_err(|_| fail::<A::Error>())?),
                ColumnType::Float64Array => Cell::FloatArr(ns.iter().map(|n| to_float(n)).collect::<Result<_, _>>().map_err(|_| fail::<A::Error>())?),
                ColumnType::DecimalTextArray => Cell::NumArr(ns.iter().map(|n| to_decimal_text(n)).collect::<Result<_, _>>().map_err(|_| fail::<A::Error>())?),
                _ => Cell::NumArr(ns.into_iter().map(|n| to_numeric(target, n)).collect::<Result<_, _>>().map_err(|_| fail::<A::Error>())?),
            }
        }
        _ => return Err(fail()),
    };
    match map.next_key::<IgnoredAny>()? {
        None => Ok(cell),
        Some(_) => Err(fail()),
    }
}

/// One typed value encoded as a binary COPY value of `column`'s type (its length is
/// [`CopyFields::put`]'s): strings and numbers of the common column types straight from
/// the line's text, everything else through its cell.
struct CopySeed<'c, 'o> {
    column: &'c Column,
    target: TargetKind,
    out: &'o mut BytesMut,
}

impl<'de> DeserializeSeed<'de> for CopySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        if self.column.ty == ColumnType::Json {
            let cell = CellSeed { column: self.column, target: self.target }.deserialize(de)?;
            return put_cell(&cell, self.column.ty, self.out);
        }
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CopySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a typed value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let tag: Text<'de> = map.next_key()?.ok_or_else(fail)?;
        let out = self.out;
        let put = match (self.column.ty, tag.0.as_ref()) {
            (ColumnType::String, "S") => put_scalar(self.column.ty, Scalar::S(&map.next_value::<Text<'de>>()?.0), out),
            (ColumnType::Int64 | ColumnType::Float64 | ColumnType::Numeric, "N") => {
                put_scalar(self.column.ty, Scalar::N(&map.next_value::<Text<'de>>()?.0), out)
            }
            (ColumnType::Bool, "BOOL") => put_scalar(self.column.ty, Scalar::Bool(map.next_value()?), out),
            (ty, tag) => {
                // It reads the value's closing brace too.
                let cell = typed_cell(self.column, self.target, tag, &mut map)?;
                return put_cell(&cell, ty, out);
            }
        };
        if !put {
            return Err(fail());
        }
        match map.next_key::<IgnoredAny>()? {
            None => Ok(()),
            Some(_) => Err(fail()),
        }
    }
}

/// A decoded cell's COPY value; an error for one it cannot encode, or a NULL (which is
/// no value: the checked path builds that row).
fn put_cell<E: serde::de::Error>(cell: &Cell, ty: ColumnType, out: &mut BytesMut) -> Result<(), E> {
    match pgcopy::put_value(cell, ty, out) {
        Ok(true) => Ok(()),
        _ => Err(fail()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::{schema, stats, LINES};
    use crossdock_core::item::parse_line;

    /// Whenever the fast path answers, it answers exactly what the checked path does.
    /// Plain lines (scanned without serde, `linescan`), one with a string PostgreSQL
    /// cannot hold as it is; the fixture's lines have sets and maps (parsed in full).
    const PLAIN: [&str; 2] = [
        r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"status":{"S":"new é"},"price":{"N":"12.50"},"n":{"N":"7"},"t":{"BOOL":true},"mixed":{"S":"s"}}}"#,
        "{\"Item\":{\"sk\":{\"N\":\"2E+1\"},\"pk\":{\"S\":\"\u{ffff}b\"},\"t\":{\"BOOL\":false},\"big\":{\"N\":\"-0.0001\"}}}",
    ];

    #[test]
    fn rows_equal_the_checked_path_for_every_target() {
        for l in PLAIN {
            assert!(scan_plain(l, |_, _| true), "{l}");
        }
        for target in [TargetKind::Postgres, TargetKind::Spanner, TargetKind::Bigtable] {
            let m = TableModel::infer(target, &schema(), &stats(), None).expect("model");
            let mut p = RowParser::new(&m);
            for l in LINES.iter().chain(LINES.iter().rev()).chain(&PLAIN) {
                let checked = m.into_row(parse_line(l, 1).expect("valid")).expect("converts");
                assert_eq!(p.parse(l), Some(checked), "{target:?}: {l}");
            }
        }
    }

    /// The COPY tuple of a line is the tuple of the row the checked path builds, and the
    /// fast paths take the same lines.
    #[test]
    fn copy_tuples_equal_the_checked_rows_encoded() {
        let m = TableModel::infer(TargetKind::Postgres, &schema(), &stats(), None).expect("model");
        let mut p = RowParser::new(&m);
        for l in LINES.iter().chain(LINES.iter().rev()).chain(&PLAIN) {
            let checked = m.into_row(parse_line(l, 1).expect("valid")).expect("converts");
            let mut expected = BytesMut::new();
            pgcopy::put_row(&m, &checked, &mut expected).expect("encodes");
            let mut out = BytesMut::from(&b"before"[..]);
            assert_eq!(p.parse_copy(l, &mut out), p.parse(l).is_some(), "{l}");
            if out.len() > 6 {
                assert_eq!(&out[6..], &expected[..], "{l}");
            }
        }
    }

    #[test]
    fn anything_doubtful_takes_the_checked_path() {
        let m = TableModel::infer(TargetKind::Postgres, &schema(), &stats(), None).expect("model");
        let mut p = RowParser::new(&m);
        for line in [
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"unknown":{"S":"x"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1.5"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"S":"1"}}}"#,
            r#"{"Item":{"sk":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"pk":{"S":"b"},"sk":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"b":{"B":"not base64!"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"n":{"N":"1e400"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"t":{"NULL":true}}}"#,
            r#"{"Item":{"pk":{"S":"a","N":"1"},"sk":{"N":"1"}}}"#,
            r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"}},"x":1}"#,
            r#"{"Item":{"pk":{"S":"a"#,
        ] {
            assert_eq!(p.parse(line), None, "{line}");
            let mut out = BytesMut::from(&b"kept"[..]);
            assert!(!p.parse_copy(line, &mut out), "{line}");
            assert_eq!(&out[..], b"kept");
        }
    }
}
