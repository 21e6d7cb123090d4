//! The loader's fast path from a DynamoDB JSON line straight to a row of the model:
//! one serde pass, attribute names looked up borrowed, values decoded into cells of
//! their column's type, no [`Item`](crossdock_core::item::Item) in between.
//!
//! It succeeds only on lines whose every attribute is present in the model with the
//! column's own type tag and builds exactly the row `parse_line` + `into_row` would;
//! anything else (a reject, a repeated name, a value of another type) returns `None`
//! and the caller takes the checked path, which also gives the reason.

use crate::schema::{stored_json, stored_text, to_decimal_text, to_float, to_int, to_numeric, Cell, Column, ColumnType, Row, TableModel, TargetKind};
use base64::Engine as _;
use crossdock_core::item::{parse_attrs_with, validate_number, AttributeValue, Text};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use std::collections::HashMap;
use std::fmt;

/// Parses lines into rows of one model.
pub struct RowParser<'m> {
    model: &'m TableModel,
    columns: HashMap<&'m str, usize>,
    /// The column of each position in the last line: lines of one export mostly list
    /// attributes in the same order, so a string compare usually replaces a hash lookup.
    order: Vec<usize>,
}

impl<'m> RowParser<'m> {
    pub fn new(model: &'m TableModel) -> Self {
        RowParser { model, columns: model.columns.iter().enumerate().map(|(i, c)| (c.attribute.as_str(), i)).collect(), order: Vec::new() }
    }

    /// The row of `line`, or `None` when the checked path must decide.
    pub fn parse(&mut self, line: &str) -> Option<Row> {
        let cells = parse_attrs_with(line, AttrsSeed(self))?;
        if self.model.columns.iter().zip(&cells).any(|(c, cell)| c.key && cell.is_none()) {
            return None;
        }
        // Collected in place: the cells' allocation becomes the row's.
        Some(cells.into_iter().map(|c| c.unwrap_or(Cell::Null)).collect())
    }
}

fn fail<E: serde::de::Error>() -> E {
    E::custom("")
}

struct AttrsSeed<'p, 'm>(&'p mut RowParser<'m>);

impl<'de> DeserializeSeed<'de> for AttrsSeed<'_, '_> {
    type Value = Vec<Option<Cell>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AttrsSeed<'_, '_> {
    type Value = Vec<Option<Cell>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let p = self.0;
        let mut cells: Vec<Option<Cell>> = std::iter::repeat_with(|| None).take(p.model.columns.len()).collect();
        let mut at = 0;
        while let Some(name) = map.next_key::<Text<'de>>()? {
            let name = name.0.as_ref();
            let i = match p.order.get(at) {
                Some(&i) if p.model.columns[i].attribute == name => i,
                _ => {
                    let &i = p.columns.get(name).ok_or_else(fail)?;
                    p.order.truncate(at);
                    p.order.push(i);
                    i
                }
            };
            at += 1;
            let cell = map.next_value_seed(CellSeed { column: &p.model.columns[i], target: p.model.target })?;
            if cells[i].replace(cell).is_some() {
                return Err(fail());
            }
        }
        Ok(cells)
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
        let number = |n: &str| validate_number(n).map_err(|_| fail::<A::Error>());
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| fail::<A::Error>());
        let ok = |r: Result<Cell, String>| r.map_err(|_| fail::<A::Error>());
        let cell = match (self.column.ty, tag.0.as_ref()) {
            (ColumnType::String, "S") => Cell::Str(stored_text(self.target, map.next_value()?)),
            (ColumnType::Bool, "BOOL") => Cell::Bool(map.next_value()?),
            (ColumnType::Bytes, "B") => Cell::Bytes(b64(&map.next_value::<Text<'de>>()?.0)?),
            (ColumnType::Int64, "N") => {
                let n = map.next_value::<Text<'de>>()?;
                number(&n.0)?;
                ok(to_int(&n.0).map(Cell::Int))?
            }
            (ColumnType::Float64, "N") => {
                let n = map.next_value::<Text<'de>>()?;
                number(&n.0)?;
                ok(to_float(&n.0).map(Cell::Float))?
            }
            (ColumnType::Numeric, "N") => {
                let n: String = map.next_value()?;
                number(&n)?;
                ok(to_numeric(self.target, n).map(Cell::Num))?
            }
            (ColumnType::DecimalText, "N") => {
                let n = map.next_value::<Text<'de>>()?;
                number(&n.0)?;
                ok(to_decimal_text(&n.0).map(Cell::Num))?
            }
            (ColumnType::StringArray, "SS") => Cell::StrArr(map.next_value::<Vec<String>>()?.into_iter().map(|s| stored_text(self.target, s)).collect()),
            (ColumnType::BytesArray, "BS") => Cell::BytesArr(map.next_value::<Vec<Text<'de>>>()?.iter().map(|s| b64(&s.0)).collect::<Result<_, _>>()?),
            (ColumnType::Int64Array | ColumnType::Float64Array | ColumnType::NumericArray | ColumnType::DecimalTextArray, "NS") => {
                let ns: Vec<String> = map.next_value()?;
                for n in &ns {
                    number(n)?;
                }
                match self.column.ty {
                    ColumnType::Int64Array => Cell::IntArr(ns.iter().map(|n| to_int(n)).collect::<Result<_, _>>().map_err(|_| fail::<A::Error>())?),
                    ColumnType::Float64Array => Cell::FloatArr(ns.iter().map(|n| to_float(n)).collect::<Result<_, _>>().map_err(|_| fail::<A::Error>())?),
                    ColumnType::DecimalTextArray => {
                        Cell::NumArr(ns.iter().map(|n| to_decimal_text(n)).collect::<Result<_, _>>().map_err(|_| fail::<A::Error>())?)
                    }
                    _ => Cell::NumArr(ns.into_iter().map(|n| to_numeric(self.target, n)).collect::<Result<_, _>>().map_err(|_| fail::<A::Error>())?),
                }
            }
            _ => return Err(fail()),
        };
        match map.next_key::<IgnoredAny>()? {
            None => Ok(cell),
            Some(_) => Err(fail()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::{schema, stats, LINES};
    use crossdock_core::item::parse_line;

    /// Whenever the fast path answers, it answers exactly what the checked path does.
    #[test]
    fn rows_equal_the_checked_path_for_every_target() {
        for target in [TargetKind::Postgres, TargetKind::Spanner, TargetKind::Bigtable] {
            let m = TableModel::infer(target, &schema(), &stats(), None).expect("model");
            let mut p = RowParser::new(&m);
            for l in LINES.iter().chain(LINES.iter().rev()) {
                let checked = m.into_row(parse_line(l, 1).expect("valid")).expect("converts");
                assert_eq!(p.parse(l), Some(checked), "{target:?}: {l}");
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
        }
    }
}
