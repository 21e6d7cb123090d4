//! From the marker's key schema and type statistics to a target-neutral table model,
//! and between DynamoDB items and rows of that model (both ways).
//!
//! Rules (also in the crate README):
//! - key attributes → primary-key columns typed by their attribute definition;
//! - an attribute seen with exactly one type (and never as `NULL`) → a typed column:
//!   `S` → string, `B` → bytes, `BOOL` → bool, `N` → int64 when every value is an
//!   integer of ≤ 18 digits, else an exact decimal (PostgreSQL: `numeric`, which holds
//!   every DynamoDB number; Spanner: `NUMERIC` when the statistics show every value
//!   within 29 integer and 9 fraction digits, else a `STRING` of the canonical decimal
//!   text, [`crate::decimal::Decimal::to_plain`]), `SS`/`NS`/`BS` → arrays; `FLOAT64`
//!   only for attributes the pipeline lists in `float64_attributes`;
//! - anything else (mixed types, `NULL`, `L`, `M`) → a JSON column holding the value in
//!   DynamoDB's typed JSON form (`{"L":[{"S":"a"}]}`), which keeps every type exactly;
//! - an absent attribute is SQL `NULL` (so `{"NULL":true}` and "absent" stay distinct).
//! - names: identifiers that are already valid are kept; others are encoded reversibly
//!   as `x_` + (`_` → `__`, any other byte outside `[A-Za-z0-9]` → `_hh`).
//! - PostgreSQL strings: `text` and `jsonb` cannot hold U+0000, which DynamoDB strings
//!   may contain, so a string that contains it (or starts with the escape mark) is
//!   stored escaped ([`pg_escape`]): in text columns, text arrays and every string and
//!   map key inside JSON.

use crate::decimal::{Decimal, SPANNER_NUMERIC_FRACTION_DIGITS, SPANNER_NUMERIC_INTEGER_DIGITS};
use crate::error::LoadError;
use crossdock_core::item::{AttributeValue, Item, TypeTag};
use crossdock_core::manifest::{AttributeStats, TypeStats};
use crossdock_core::schema::{Projection, TableSchema};

/// Which target a model is built for (types and identifier rules differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Spanner,
    Postgres,
    Bigtable,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Spanner => "spanner",
            TargetKind::Postgres => "postgres",
            TargetKind::Bigtable => "bigtable",
        }
    }
    fn max_ident(self) -> usize {
        match self {
            TargetKind::Spanner => 128,
            TargetKind::Postgres => 63,
            TargetKind::Bigtable => 50,
        }
    }
}

/// A column's type, target-neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ColumnType {
    Int64,
    Numeric,
    Float64,
    String,
    Bytes,
    Bool,
    StringArray,
    Int64Array,
    NumericArray,
    Float64Array,
    BytesArray,
    /// DynamoDB typed JSON of the value.
    Json,
    /// A number as its canonical decimal text in a string column, for numbers the
    /// target's NUMERIC cannot hold exactly (cells: [`Cell::Num`]).
    DecimalText,
    /// A number set as canonical decimal texts in a string array ([`Cell::NumArr`]).
    DecimalTextArray,
}

/// One column: which attribute it holds and how.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Column {
    /// DynamoDB attribute name.
    pub attribute: String,
    /// Identifier in the target (sanitised).
    pub name: String,
    pub ty: ColumnType,
    pub key: bool,
}

/// A secondary index of the model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IndexModel {
    pub source_name: String,
    pub name: String,
    /// Key columns (indices into `columns`).
    pub columns: Vec<usize>,
    /// Non-key columns carried by the index (projection).
    pub storing: Vec<usize>,
}

/// A table as the loader will create it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableModel {
    pub target: TargetKind,
    pub source_table: String,
    /// Table identifier in the target.
    pub name: String,
    pub columns: Vec<Column>,
    /// Partition key column, then sort key column.
    pub primary_key: Vec<usize>,
    pub indexes: Vec<IndexModel>,
    /// Largest row, in bytes of DynamoDB JSON (sum of per-attribute maxima).
    pub max_row_bytes: u64,
}

/// One value of a row, target-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    /// Number text; exact.
    Num(String),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Bool(bool),
    /// DynamoDB typed JSON text.
    Json(String),
    StrArr(Vec<String>),
    IntArr(Vec<i64>),
    NumArr(Vec<String>),
    FloatArr(Vec<f64>),
    BytesArr(Vec<Vec<u8>>),
}

/// A row: one cell per model column.
pub type Row = Vec<Cell>;

/// Encodes a name as a target identifier, reversibly (see the module docs).
pub fn sanitise(name: &str) -> String {
    let valid =
        name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !name.starts_with("x_");
    if valid {
        return name.to_string();
    }
    let mut out = String::from("x_");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else if b == b'_' {
            out.push_str("__");
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// Inverse of [`sanitise`]; `None` if `ident` is not an encoding.
pub fn unsanitise(ident: &str) -> Option<String> {
    let Some(rest) = ident.strip_prefix("x_") else {
        return Some(ident.to_string());
    };
    let b = rest.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            if b.get(i + 1) == Some(&b'_') {
                out.push(b'_');
                i += 2;
            } else {
                let hex = rest.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The column types (scalar, set) of a number attribute: exact unless `float64` (the
/// pipeline asked for it). Unknown fraction digits (older statistics) count as "may
/// not fit" a NUMERIC of limited scale.
fn number_type(target: TargetKind, s: &AttributeStats, float64: bool) -> (ColumnType, ColumnType) {
    if float64 {
        return (ColumnType::Float64, ColumnType::Float64Array);
    }
    if s.fractional_numbers == 0 && s.max_integer_digits <= 18 {
        return (ColumnType::Int64, ColumnType::Int64Array);
    }
    let fits_spanner = u64::from(s.max_integer_digits) <= SPANNER_NUMERIC_INTEGER_DIGITS
        && s.fraction_digits().is_some_and(|f| u64::from(f) <= SPANNER_NUMERIC_FRACTION_DIGITS);
    match target {
        TargetKind::Spanner if !fits_spanner => (ColumnType::DecimalText, ColumnType::DecimalTextArray),
        // PostgreSQL's numeric holds 131,072 digits before the point and 16,383 after;
        // DynamoDB's numbers need at most 126 and 167.
        _ => (ColumnType::Numeric, ColumnType::NumericArray),
    }
}

fn column_type(target: TargetKind, s: &AttributeStats, float64: bool) -> ColumnType {
    let present: Vec<TypeTag> = s.types.iter().filter(|(_, &c)| c > 0).map(|(t, _)| *t).collect();
    let [only] = present[..] else { return ColumnType::Json };
    if target == TargetKind::Bigtable {
        // Bigtable cells are bytes: strings, numbers (exact text) and binary are kept
        // raw; everything else as typed JSON.
        return match only {
            TypeTag::S => ColumnType::String,
            TypeTag::N => ColumnType::Numeric,
            TypeTag::B => ColumnType::Bytes,
            _ => ColumnType::Json,
        };
    }
    match only {
        TypeTag::S => ColumnType::String,
        TypeTag::B => ColumnType::Bytes,
        TypeTag::Bool => ColumnType::Bool,
        TypeTag::N => number_type(target, s, float64).0,
        TypeTag::Ss => ColumnType::StringArray,
        TypeTag::Ns => number_type(target, s, float64).1,
        TypeTag::Bs => ColumnType::BytesArray,
        TypeTag::Null | TypeTag::L | TypeTag::M => ColumnType::Json,
    }
}

fn ident(target: TargetKind, table: &str, name: &str) -> Result<String, LoadError> {
    let s = sanitise(name);
    if s.len() > target.max_ident() {
        return Err(LoadError::Schema {
            table: table.into(),
            reason: format!("name {name:?} becomes {s:?}, longer than {}'s {} characters", target.name(), target.max_ident()),
        });
    }
    Ok(s)
}

/// Two columns with one target identifier (Spanner's are case-insensitive).
fn collision(target: TargetKind, columns: &[Column]) -> Option<String> {
    let mut seen = std::collections::BTreeMap::new();
    for c in columns {
        let folded = if target == TargetKind::Spanner { c.name.to_ascii_lowercase() } else { c.name.clone() };
        if let Some(prev) = seen.insert(folded, c.attribute.clone()) {
            return Some(format!("attributes {prev:?} and {:?} map to the same {} column name", c.attribute, target.name()));
        }
    }
    None
}

impl TableModel {
    /// Builds the model of `schema` + `stats` for `target`; `destination` overrides
    /// the table name (used as given, after the same identifier check).
    pub fn infer(target: TargetKind, schema: &TableSchema, stats: &TypeStats, destination: Option<&str>) -> Result<TableModel, LoadError> {
        Self::infer_with(target, schema, stats, destination, &[])
    }

    /// [`Self::infer`] with the number attributes the pipeline stores as FLOAT64
    /// (`float64_attributes`; ignored on Bigtable, which keeps every number's text).
    pub fn infer_with(
        target: TargetKind,
        schema: &TableSchema,
        stats: &TypeStats,
        destination: Option<&str>,
        float64: &[String],
    ) -> Result<TableModel, LoadError> {
        let table = schema.table.clone();
        let bad = |reason: String| LoadError::Schema { table: table.clone(), reason };
        let float64: &[String] = if target == TargetKind::Bigtable { &[] } else { float64 };
        let hash = schema.hash_key().ok_or_else(|| bad("the key schema has no HASH key".into()))?;
        let mut key_names = vec![hash.to_string()];
        if let Some(r) = schema.range_key() {
            key_names.push(r.to_string());
        }
        let name = match destination {
            Some(d) => ident(target, &table, d)?,
            None if target == TargetKind::Bigtable => {
                let ok = table.len() <= 50 && table.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
                if ok {
                    table.clone()
                } else {
                    ident(target, &table, &table)?
                }
            }
            None => ident(target, &table, &table)?,
        };
        if let Some(k) = key_names.iter().find(|k| float64.contains(k)) {
            // Distinct numbers can round to one double: two items would become one row.
            return Err(bad(format!("key attribute {k:?} cannot be stored as FLOAT64 (float64_attributes): distinct numbers could become one key")));
        }
        let mut columns = Vec::new();
        for k in &key_names {
            let declared = schema.key_type(k).ok_or_else(|| bad(format!("key attribute {k:?} has no attribute definition")))?;
            let ty = match (target, declared) {
                (TargetKind::Bigtable, TypeTag::N) => ColumnType::Numeric,
                (_, TypeTag::S) => ColumnType::String,
                (_, TypeTag::B) => ColumnType::Bytes,
                (_, TypeTag::N) => number_type(target, stats.0.get(k).unwrap_or(&AttributeStats { max_integer_digits: 99, ..Default::default() }), false).0,
                (_, other) => return Err(bad(format!("key attribute {k:?} has type {} (keys are S, N or B)", other.as_str()))),
            };
            columns.push(Column { attribute: k.clone(), name: ident(target, &table, k)?, ty, key: true });
        }
        for (attr, s) in &stats.0 {
            if key_names.contains(attr) {
                continue;
            }
            columns.push(Column {
                attribute: attr.clone(),
                name: ident(target, &table, attr)?,
                ty: column_type(target, s, float64.contains(attr)),
                key: false,
            });
        }
        if let Some(reason) = collision(target, &columns) {
            return Err(bad(reason));
        }
        let position = |a: &str| columns.iter().position(|c| c.attribute == a);
        let mut indexes = Vec::new();
        if target != TargetKind::Bigtable {
            for ix in schema.global_secondary_indexes.iter().chain(&schema.local_secondary_indexes) {
                let mut cols = Vec::new();
                for k in &ix.key_schema {
                    match position(&k.name) {
                        Some(p) if matches!(columns[p].ty, ColumnType::Json) && target == TargetKind::Spanner => {
                            return Err(bad(format!("index {} key {:?} has mixed types; Spanner cannot index JSON", ix.name, k.name)))
                        }
                        Some(p) => cols.push(p),
                        // Never seen in the data: nothing to index on; skip the index key.
                        None => {}
                    }
                }
                if cols.is_empty() {
                    continue;
                }
                let storing: Vec<usize> = match &ix.projection {
                    Projection::KeysOnly => vec![],
                    Projection::All => (0..columns.len()).filter(|i| !cols.contains(i) && !columns[*i].key).collect(),
                    Projection::Include { attributes } => {
                        attributes.iter().filter_map(|a| position(a)).filter(|i| !cols.contains(i) && !columns[*i].key).collect()
                    }
                };
                let ix_name = ident(target, &table, &format!("{}_{}", name, ix.name))?;
                indexes.push(IndexModel { source_name: ix.name.clone(), name: ix_name, columns: cols, storing });
            }
        }
        let primary_key = (0..key_names.len()).collect();
        let max_row_bytes = stats.0.values().map(|s| s.max_value_bytes).sum::<u64>().max(1);
        Ok(TableModel { target, source_table: table, name, columns, primary_key, indexes, max_row_bytes })
    }

    /// Adds a nullable JSON column (DynamoDB typed JSON, as for mixed-type attributes)
    /// for an attribute the export's statistics do not know — one that first appears in
    /// the change stream — and returns it. The column is named as the loader would have
    /// named it; a name that collides with an existing column is an error.
    pub fn add_attribute(&mut self, attribute: &str) -> Result<Column, LoadError> {
        let bad = |reason: String| LoadError::Schema { table: self.source_table.clone(), reason };
        if self.columns.iter().any(|c| c.attribute == attribute) {
            return Err(bad(format!("attribute {attribute:?} already has a column")));
        }
        let column = Column { attribute: attribute.into(), name: ident(self.target, &self.source_table, attribute)?, ty: ColumnType::Json, key: false };
        self.columns.push(column.clone());
        if let Some(reason) = collision(self.target, &self.columns) {
            self.columns.pop();
            return Err(bad(reason));
        }
        Ok(column)
    }

    /// The attributes of `item` that have no column, in the item's order.
    pub fn unknown_attributes<'i>(&self, item: &'i Item) -> impl Iterator<Item = &'i str> + use<'i, '_> {
        item.keys().map(String::as_str).filter(|a| !self.columns.iter().any(|c| c.attribute == *a))
    }

    /// Spanner mutations one row costs (every column + every index entry's columns).
    pub fn spanner_mutations_per_row(&self) -> usize {
        let index_columns: Vec<usize> = self.indexes.iter().map(|i| i.columns.len() + i.storing.len() + self.primary_key.len()).collect();
        crossdock_core::sizing::spanner_mutations_per_row(self.columns.len(), &index_columns)
    }

    /// Converts one item to a row; `Err` is the reason it is rejected.
    pub fn to_row(&self, item: &Item) -> Result<Row, String> {
        self.into_row(item.clone())
    }

    /// [`Self::to_row`] taking the item, so strings and byte values move into the row
    /// instead of being copied (the loader's hot path).
    pub fn into_row(&self, mut item: Item) -> Result<Row, String> {
        let values: Vec<Option<AttributeValue>> = self.columns.iter().map(|c| item.swap_remove(&c.attribute)).collect();
        if let Some(name) = item.keys().next() {
            return Err(format!("attribute {name:?} is not in the marker's type statistics"));
        }
        let mut row = Vec::with_capacity(self.columns.len());
        for (c, v) in self.columns.iter().zip(values) {
            match v {
                None if c.key => return Err(format!("key attribute {:?} is missing", c.attribute)),
                None => row.push(Cell::Null),
                Some(v) => row.push(self.cell(c, v).map_err(|why| format!("attribute {:?}: {why}", c.attribute))?),
            }
        }
        Ok(row)
    }

    fn cell(&self, c: &Column, v: AttributeValue) -> Result<Cell, String> {
        use AttributeValue as A;
        let target = self.target;
        let wrong = |v: &AttributeValue| format!("{} value does not fit column {} of type {:?}", v.type_tag().as_str(), c.name, c.ty);
        Ok(match (c.ty, v) {
            (ColumnType::Json, v) => Cell::Json(stored_json(target, &v)),
            (ColumnType::String, A::S(s)) => Cell::Str(stored_text(target, s)),
            (ColumnType::Bytes, A::B(b)) => Cell::Bytes(b),
            (ColumnType::Bool, A::Bool(b)) => Cell::Bool(b),
            (ColumnType::Int64, A::N(n)) => Cell::Int(to_int(&n)?),
            (ColumnType::Numeric, A::N(n)) => Cell::Num(to_numeric(target, n)?),
            (ColumnType::DecimalText, A::N(n)) => Cell::Num(to_decimal_text(&n)?),
            (ColumnType::Float64, A::N(n)) => Cell::Float(to_float(&n)?),
            (ColumnType::StringArray, A::Ss(s)) => Cell::StrArr(s.into_iter().map(|s| stored_text(target, s)).collect()),
            (ColumnType::BytesArray, A::Bs(b)) => Cell::BytesArr(b),
            (ColumnType::Int64Array, A::Ns(ns)) => Cell::IntArr(ns.iter().map(|n| to_int(n)).collect::<Result<_, _>>()?),
            (ColumnType::NumericArray, A::Ns(ns)) => Cell::NumArr(ns.into_iter().map(|n| to_numeric(target, n)).collect::<Result<_, _>>()?),
            (ColumnType::DecimalTextArray, A::Ns(ns)) => Cell::NumArr(ns.iter().map(|n| to_decimal_text(n)).collect::<Result<_, _>>()?),
            (ColumnType::Float64Array, A::Ns(ns)) => Cell::FloatArr(ns.iter().map(|n| to_float(n)).collect::<Result<_, _>>()?),
            (_, v) => return Err(wrong(&v)),
        })
    }

    /// Converts a row read back from the target to the item it stands for.
    pub fn to_item(&self, row: &Row) -> Result<Item, String> {
        let mut item = Item::new();
        let pg = self.target == TargetKind::Postgres;
        for (c, cell) in self.columns.iter().zip(row) {
            let v = match cell {
                Cell::Null => continue,
                Cell::Int(i) => AttributeValue::N(i.to_string()),
                Cell::Num(n) => AttributeValue::N(n.clone()),
                Cell::Float(f) => AttributeValue::N(format_float(*f)),
                Cell::Str(s) if pg => AttributeValue::S(pg_unescape(s).map_err(|e| format!("column {}: {e}", c.name))?),
                Cell::Str(s) => AttributeValue::S(s.clone()),
                Cell::Bytes(b) => AttributeValue::B(b.clone()),
                Cell::Bool(b) => AttributeValue::Bool(*b),
                Cell::Json(j) => {
                    let mut v = parse_typed_json(j).map_err(|e| format!("column {}: {e}", c.name))?;
                    if pg {
                        map_strings(&mut v, &mut |s| pg_unescape(&s)).map_err(|e| format!("column {}: {e}", c.name))?;
                    }
                    v
                }
                Cell::StrArr(v) if pg => {
                    AttributeValue::Ss(v.iter().map(|s| pg_unescape(s)).collect::<Result<_, _>>().map_err(|e| format!("column {}: {e}", c.name))?)
                }
                Cell::StrArr(v) => AttributeValue::Ss(v.clone()),
                Cell::IntArr(v) => AttributeValue::Ns(v.iter().map(i64::to_string).collect()),
                Cell::NumArr(v) => AttributeValue::Ns(v.clone()),
                Cell::FloatArr(v) => AttributeValue::Ns(v.iter().map(|f| format_float(*f)).collect()),
                Cell::BytesArr(v) => AttributeValue::Bs(v.clone()),
            };
            item.insert(c.attribute.clone(), v);
        }
        Ok(item)
    }
}

pub(crate) fn to_int(n: &str) -> Result<i64, String> {
    // Plain integer text (the common case) parses directly; `1.5E3` and the like
    // go through the exact decimal.
    if let Ok(i) = n.parse::<i64>() {
        return Ok(i);
    }
    Decimal::parse(n).and_then(|d| d.to_i64()).ok_or_else(|| format!("number {n} does not fit a 64-bit integer column"))
}

/// Number text for a NUMERIC column (on Bigtable: the cell, the exact text as
/// exported). The codec has already checked it is a DynamoDB number, which
/// PostgreSQL's NUMERIC always holds; Spanner's is narrower, and a value outside it
/// (statistics that do not match the data) is a reject, never rounded.
pub(crate) fn to_numeric(target: TargetKind, n: String) -> Result<String, String> {
    match target {
        TargetKind::Spanner => {
            let d = Decimal::parse(&n).ok_or_else(|| format!("{n:?} is not a number"))?;
            if !d.fits_spanner_numeric() {
                return Err(format!(
                    "number {n} does not fit Spanner NUMERIC ({SPANNER_NUMERIC_INTEGER_DIGITS} integer and {SPANNER_NUMERIC_FRACTION_DIGITS} fractional digits)"
                ));
            }
            Ok(d.to_plain())
        }
        TargetKind::Postgres | TargetKind::Bigtable => Ok(n),
    }
}

/// Number text for a [`ColumnType::DecimalText`] column: the canonical decimal text,
/// so equal numbers are stored as equal strings.
pub(crate) fn to_decimal_text(n: &str) -> Result<String, String> {
    crate::decimal::canonical(n).ok_or_else(|| format!("{n:?} is not a number"))
}

pub(crate) fn to_float(n: &str) -> Result<f64, String> {
    n.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(|| format!("number {n} does not fit FLOAT64"))
}

fn format_float(f: f64) -> String {
    format!("{f:e}")
}

/// DynamoDB typed JSON of one value (`{"S":"x"}`).
pub fn typed_json(v: &AttributeValue) -> String {
    let mut item = Item::new();
    item.insert(String::new(), v.clone());
    let line = crossdock_core::item::to_line(&item);
    // `{"Item":{"":VALUE}}`
    line[12..line.len() - 2].to_string()
}

/// Inverse of [`typed_json`] (accepts any whitespace and key order).
pub fn parse_typed_json(text: &str) -> Result<AttributeValue, String> {
    let line = format!("{{\"Item\":{{\"\":{text}}}}}");
    let mut item = crossdock_core::item::parse_line(&line, 0).map_err(|e| e.to_string())?;
    item.swap_remove("").ok_or_else(|| "empty JSON value".to_string())
}

/// Marks a PostgreSQL string stored escaped. U+FFFF is a Unicode noncharacter, kept
/// for a program's internal use, so real text almost never starts with it, while
/// PostgreSQL accepts it in `text` and `jsonb` alike.
pub const PG_ESCAPE_MARK: char = '\u{FFFF}';

/// Whether PostgreSQL stores `s` escaped: it holds U+0000, or it starts with the mark
/// (escaped too, so that reading back can tell the two apart).
pub fn pg_needs_escape(s: &str) -> bool {
    s.starts_with(PG_ESCAPE_MARK) || s.as_bytes().contains(&0)
}

/// A DynamoDB string as PostgreSQL stores it: unchanged, unless [`pg_needs_escape`];
/// then the mark, followed by the string with `\` written `\\` and U+0000 written `\0`.
/// Reversible ([`pg_unescape`]) and injective, so escaped keys stay unique.
pub fn pg_escape(s: String) -> String {
    if !pg_needs_escape(&s) {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 8);
    out.push(PG_ESCAPE_MARK);
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out
}

/// Inverse of [`pg_escape`]; `Err` for text that starts with the mark but is not an
/// escape crossdock wrote.
pub fn pg_unescape(s: &str) -> Result<String, String> {
    let Some(body) = s.strip_prefix(PG_ESCAPE_MARK) else {
        return Ok(s.to_string());
    };
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('0') => out.push('\0'),
            other => return Err(format!("escaped string {s:?} has a bad escape \\{}", other.map(String::from).unwrap_or_default())),
        }
    }
    Ok(out)
}

/// A string as a column of `target` stores it.
pub(crate) fn stored_text(target: TargetKind, s: String) -> String {
    match target {
        TargetKind::Postgres => pg_escape(s),
        TargetKind::Spanner | TargetKind::Bigtable => s,
    }
}

/// A value as a JSON column of `target` stores it: typed JSON, on PostgreSQL with every
/// string and map key that needs it escaped (jsonb refuses `\u0000` as well).
pub(crate) fn stored_json(target: TargetKind, v: &AttributeValue) -> String {
    if target != TargetKind::Postgres || !any_string(v, &pg_needs_escape) {
        return typed_json(v);
    }
    let mut v = v.clone();
    // pg_escape cannot fail.
    let _ = map_strings(&mut v, &mut |s| Ok(pg_escape(s)));
    typed_json(&v)
}

/// Whether any string of `v` (S, an SS element, a map key, at any depth) matches.
fn any_string(v: &AttributeValue, f: &impl Fn(&str) -> bool) -> bool {
    use AttributeValue as A;
    match v {
        A::S(s) => f(s),
        A::Ss(ss) => ss.iter().any(|s| f(s)),
        A::L(l) => l.iter().any(|v| any_string(v, f)),
        A::M(m) => m.iter().any(|(k, v)| f(k) || any_string(v, f)),
        A::N(_) | A::B(_) | A::Bool(_) | A::Null | A::Ns(_) | A::Bs(_) => false,
    }
}

/// Replaces every string of `v` (as [`any_string`] finds them) by `f` of it.
fn map_strings(v: &mut AttributeValue, f: &mut impl FnMut(String) -> Result<String, String>) -> Result<(), String> {
    use AttributeValue as A;
    match v {
        A::S(s) => *s = f(std::mem::take(s))?,
        A::Ss(ss) => {
            for s in ss {
                *s = f(std::mem::take(s))?;
            }
        }
        A::L(l) => {
            for v in l {
                map_strings(v, f)?;
            }
        }
        A::M(m) => {
            let mut out = indexmap::IndexMap::with_capacity(m.len());
            for (k, mut v) in std::mem::take(m) {
                map_strings(&mut v, f)?;
                out.insert(f(k)?, v);
            }
            *m = out;
        }
        A::N(_) | A::B(_) | A::Bool(_) | A::Null | A::Ns(_) | A::Bs(_) => {}
    }
    Ok(())
}

/// Equality of items as DynamoDB sees them: numbers compared as exact decimals (never
/// through `f64`), sets as sets, maps regardless of order.
pub fn items_equal(a: &Item, b: &Item) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| values_equal(v, w)))
}

fn num_eq(a: &str, b: &str) -> bool {
    crate::decimal::numbers_equal(a, b)
}

pub fn values_equal(a: &AttributeValue, b: &AttributeValue) -> bool {
    use AttributeValue as A;
    match (a, b) {
        (A::N(x), A::N(y)) => num_eq(x, y),
        (A::Ns(x), A::Ns(y)) => x.len() == y.len() && x.iter().all(|n| y.iter().any(|m| num_eq(n, m))),
        (A::Ss(x), A::Ss(y)) => {
            let (mut x, mut y) = (x.clone(), y.clone());
            x.sort();
            y.sort();
            x == y
        }
        (A::Bs(x), A::Bs(y)) => {
            let (mut x, mut y) = (x.clone(), y.clone());
            x.sort();
            y.sort();
            x == y
        }
        (A::L(x), A::L(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q)),
        (A::M(x), A::M(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w))),
        _ => a == b,
    }
}

/// Differences between the model and an existing table, one line each; empty when the
/// table is compatible. `existing` is (column name, type as the target spells it,
/// nullable); `ddl_type` spells the model's types the same way.
pub fn compat_diff(model: &TableModel, existing: &[(String, String, bool)], existing_pk: &[String], ddl_type: impl Fn(ColumnType) -> String) -> Vec<String> {
    let mut diff = Vec::new();
    for c in &model.columns {
        let want = ddl_type(c.ty);
        match existing.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(&c.name)) {
            None => diff.push(format!("- column {} {want} (attribute {:?}) is missing", c.name, c.attribute)),
            Some((_, have, _)) if !have.eq_ignore_ascii_case(&want) => diff.push(format!("~ column {}: table has {have}, export needs {want}", c.name)),
            Some(_) => {}
        }
    }
    for (n, t, nullable) in existing {
        if !nullable && !model.columns.iter().any(|c| c.name.eq_ignore_ascii_case(n)) {
            diff.push(format!("+ column {n} {t} NOT NULL is not in the export; rows could not be inserted"));
        }
    }
    let want_pk: Vec<&str> = model.primary_key.iter().map(|&i| model.columns[i].name.as_str()).collect();
    let same_pk = want_pk.len() == existing_pk.len() && want_pk.iter().zip(existing_pk).all(|(a, b)| a.eq_ignore_ascii_case(b));
    if !same_pk {
        diff.push(format!("~ primary key: table has ({}), export needs ({})", existing_pk.join(", "), want_pk.join(", ")));
    }
    diff
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crossdock_core::item::parse_line;
    use crossdock_core::schema::{AttributeDefinition, BillingMode, KeyElement, KeyRole, SecondaryIndex};

    pub(crate) fn schema() -> TableSchema {
        TableSchema {
            format_version: 1,
            table: "Orders.v2".into(),
            key_schema: vec![KeyElement { name: "pk".into(), role: KeyRole::Hash }, KeyElement { name: "sk".into(), role: KeyRole::Range }],
            attribute_definitions: vec![
                AttributeDefinition { name: "pk".into(), kind: TypeTag::S },
                AttributeDefinition { name: "sk".into(), kind: TypeTag::N },
                AttributeDefinition { name: "status".into(), kind: TypeTag::S },
            ],
            global_secondary_indexes: vec![SecondaryIndex {
                name: "by-status".into(),
                key_schema: vec![KeyElement { name: "status".into(), role: KeyRole::Hash }],
                projection: Projection::All,
            }],
            local_secondary_indexes: vec![],
            billing_mode: BillingMode::PayPerRequest,
            capacity_before: None,
            item_count_estimate: 0,
            size_bytes_estimate: 0,
            total_segments: 1,
            crossdock_version: "0.1.0".into(),
            stream: None,
        }
    }

    pub(crate) const LINES: [&str; 3] = [
        r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"status":{"S":"new"},"price":{"N":"12.50"},"big":{"N":"123456789012345678901234567890123456"},"n":{"N":"7"},"b":{"B":"AAE="},"t":{"BOOL":true},"ss":{"SS":["x","y"]},"ns":{"NS":["1","2"]},"bs":{"BS":["AA=="]},"l":{"L":[{"S":"a"},{"N":"1"}]},"m":{"M":{"k":{"NULL":true}}},"mixed":{"S":"s"},"nul":{"NULL":true},"odd name!":{"S":"x"}}}"#,
        r#"{"Item":{"pk":{"S":"b"},"sk":{"N":"2"},"mixed":{"N":"3"}}}"#,
        // U+0000 (and the escape mark) in a key, a string, a set, JSON strings and map keys.
        r#"{"Item":{"pk":{"S":"a\u0000b"},"sk":{"N":"3"},"status":{"S":"\u0000\\x"},"ss":{"SS":["x\u0000","\uffffy","z"]},"m":{"M":{"k\u0000":{"S":"v\u0000"},"\uffff":{"L":[{"S":"\\0"}]}}},"mixed":{"S":"\u0000"}}}"#,
    ];

    pub(crate) fn stats() -> TypeStats {
        let mut s = TypeStats::default();
        for (i, l) in LINES.iter().enumerate() {
            s.observe(&parse_line(l, i as u64).expect("valid"), |v| typed_json(v).len());
        }
        s
    }

    #[test]
    fn names_round_trip() {
        for n in ["plain", "Orders.v2", "odd name!", "x_y", "a__b", "日本", "1abc", "_lead", ""] {
            let s = sanitise(n);
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()), "{n:?} → {s:?}");
            assert_eq!(unsanitise(&s).as_deref(), Some(n), "{s}");
        }
        assert_eq!(sanitise("demo_orders"), "demo_orders");
    }

    #[test]
    fn types_follow_the_statistics() {
        let pg = TableModel::infer(TargetKind::Postgres, &schema(), &stats(), None).expect("model");
        let ty = |m: &TableModel, a: &str| m.columns.iter().find(|c| c.attribute == a).map(|c| c.ty);
        assert_eq!(pg.name, "x_Orders_2ev2");
        assert_eq!(ty(&pg, "sk"), Some(ColumnType::Int64));
        assert_eq!(ty(&pg, "price"), Some(ColumnType::Numeric));
        assert_eq!(ty(&pg, "big"), Some(ColumnType::Numeric));
        assert_eq!(ty(&pg, "n"), Some(ColumnType::Int64));
        assert_eq!(ty(&pg, "ns"), Some(ColumnType::Int64Array));
        assert_eq!(ty(&pg, "mixed"), Some(ColumnType::Json));
        assert_eq!(ty(&pg, "nul"), Some(ColumnType::Json));
        assert_eq!(ty(&pg, "l"), Some(ColumnType::Json));
        let sp = TableModel::infer(TargetKind::Spanner, &schema(), &stats(), None).expect("model");
        assert_eq!(ty(&sp, "big"), Some(ColumnType::DecimalText), "36 integer digits: more than Spanner NUMERIC holds");
        assert_eq!(ty(&sp, "price"), Some(ColumnType::Numeric));
        assert_eq!(sp.indexes.len(), 1);
        assert_eq!(sp.indexes[0].storing.len(), sp.columns.len() - 3);
        let bt = TableModel::infer(TargetKind::Bigtable, &schema(), &stats(), None).expect("model");
        assert_eq!(bt.name, "Orders.v2");
        assert!(bt.indexes.is_empty());
    }

    #[test]
    fn rows_round_trip_to_items() {
        for target in [TargetKind::Postgres, TargetKind::Bigtable] {
            let m = TableModel::infer(target, &schema(), &stats(), None).expect("model");
            for l in LINES {
                let item = parse_line(l, 1).expect("valid");
                let row = m.to_row(&item).expect("converts");
                let back = m.to_item(&row).expect("back");
                assert!(items_equal(&item, &back), "{target:?}\n{item:?}\n{back:?}");
            }
        }
    }

    fn number_stats(values: &[&str]) -> AttributeStats {
        let mut s = TypeStats::default();
        for (i, n) in values.iter().enumerate() {
            let line = format!(r#"{{"Item":{{"pk":{{"S":"{i}"}},"sk":{{"N":"1"}},"r":{{"N":"{n}"}}}}}}"#);
            s.observe(&parse_line(&line, 1).expect("valid"), |v| typed_json(v).len());
        }
        s.0["r"].clone()
    }

    fn number_column(target: TargetKind, values: &[&str], float64: &[&str]) -> ColumnType {
        let mut stats = TypeStats::default();
        stats.0.insert("r".into(), number_stats(values));
        let float64: Vec<String> = float64.iter().map(|a| a.to_string()).collect();
        let m = TableModel::infer_with(target, &schema(), &stats, None, &float64).expect("model");
        m.columns.iter().find(|c| c.attribute == "r").map(|c| c.ty).expect("column r")
    }

    #[test]
    fn number_columns_are_exact_unless_the_pipeline_asks_for_float64() {
        use ColumnType::*;
        use TargetKind::*;
        let cases: [(&[&str], ColumnType, ColumnType); 8] = [
            (&["7", "-123456789012345678"], Int64, Int64),
            (&["12.5", "99999999999999999999999999999.999999999"], Numeric, Numeric),
            // Ordinary doubles: more than 9 fraction digits.
            (&["0.7923361357004808", "1.5"], Numeric, DecimalText),
            (&["37.774929123456"], Numeric, DecimalText),
            (&["12345678901234567890123456789012345678"], Numeric, DecimalText),
            (&["1E-130"], Numeric, DecimalText),
            (&["9.9999999999999999999999999999999999999E+125"], Numeric, DecimalText),
            (&["-0.000000000000000000000000000000000001"], Numeric, DecimalText),
        ];
        for (values, pg, spanner) in cases {
            assert_eq!(number_column(Postgres, values, &[]), pg, "{values:?}");
            assert_eq!(number_column(Spanner, values, &[]), spanner, "{values:?}");
            assert_eq!(number_column(Bigtable, values, &[]), Numeric, "{values:?}");
            assert_eq!(number_column(Spanner, values, &["r"]), Float64, "{values:?}");
            assert_eq!(number_column(Postgres, values, &["r"]), Float64, "{values:?}");
            assert_eq!(number_column(Bigtable, values, &["r"]), Numeric, "Bigtable keeps the text: {values:?}");
        }
        assert_eq!(number_column(Spanner, &["1.5"], &["other"]), Numeric, "only the listed attribute");
        let e = TableModel::infer_with(Spanner, &schema(), &stats(), None, &["sk".to_string()]).expect_err("float key");
        assert!(e.to_string().contains("\"sk\"") && e.to_string().contains("FLOAT64"), "{e}");
    }

    #[test]
    fn older_statistics_without_fraction_digits_choose_exact_text_on_spanner() {
        let mut old = number_stats(&["1.5"]);
        old.max_fraction_digits = None;
        let ty = |target, r: &AttributeStats| {
            let stats = TypeStats([("r".to_string(), r.clone())].into());
            TableModel::infer(target, &schema(), &stats, None).expect("model").columns.iter().find(|c| c.attribute == "r").map(|c| c.ty)
        };
        assert_eq!(ty(TargetKind::Spanner, &old), Some(ColumnType::DecimalText), "unknown scale may not fit NUMERIC");
        assert_eq!(ty(TargetKind::Postgres, &old), Some(ColumnType::Numeric));
        // Old statistics of integers only are still known to have no fraction.
        old.fractional_numbers = 0;
        old.max_integer_digits = 25;
        assert_eq!(ty(TargetKind::Spanner, &old), Some(ColumnType::Numeric));
    }

    #[test]
    fn numbers_round_trip_exactly_on_every_target() {
        let values = [
            "12345678901234567890123456789012345678",
            "1E-130",
            "9.9999999999999999999999999999999999999E+125",
            "-0.000000000000000000000000000000000001",
            "37.774929123456",
            "0.7923361357004808",
            "1.50",
        ];
        let mut stats = TypeStats::default();
        stats.0.insert("r".into(), number_stats(&values));
        stats.0.insert("ns".into(), {
            let mut s = number_stats(&values);
            s.types = [(TypeTag::Ns, 1)].into();
            s
        });
        for target in [TargetKind::Spanner, TargetKind::Postgres, TargetKind::Bigtable] {
            let m = TableModel::infer(target, &schema(), &stats, None).expect("model");
            let mut parser = crate::rowparse::RowParser::new(&m);
            let set = values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",");
            for (i, n) in values.iter().enumerate() {
                let line = format!(r#"{{"Item":{{"pk":{{"S":"{i}"}},"sk":{{"N":"{n}"}},"r":{{"N":"{n}"}},"ns":{{"NS":[{set}]}}}}}}"#);
                let item = parse_line(&line, 1).expect("valid");
                // The key `sk` has no statistics, so it is exact on every target too.
                let row = m.to_row(&item).unwrap_or_else(|e| panic!("{target:?} {n}: {e}"));
                assert_eq!(parser.parse(&line).as_ref(), Some(&row), "{target:?}: the fast path agrees");
                let back = m.to_item(&row).expect("back");
                assert!(items_equal(&item, &back), "{target:?}\n{item:?}\n{back:?}");
                let AttributeValue::N(text) = &back["r"] else { panic!("r is a number") };
                let exact = match target {
                    // Spanner's cells are canonical text; PostgreSQL gets the exported
                    // text (sent as binary NUMERIC) and Bigtable keeps it as it is.
                    TargetKind::Spanner => crate::decimal::canonical(n).expect("number"),
                    TargetKind::Postgres | TargetKind::Bigtable => n.to_string(),
                };
                assert_eq!(text, &exact, "{target:?}");
            }
        }
    }

    #[test]
    fn verify_compares_numbers_exactly() {
        let n = |s: &str| AttributeValue::N(s.into());
        assert!(values_equal(&n("1.50"), &n("1.5")));
        assert!(values_equal(&n("1E2"), &n("100")));
        assert!(values_equal(&n("0.7923361357004808"), &n("7.923361357004808e-1")), "FLOAT64 read back, shortest text");
        // Equal as f64, not as decimals: a rounded value is a difference.
        assert!(!values_equal(&n("0.7923361357004808"), &n("7.9233613570048080001e-1")));
        assert!(!values_equal(&n("0.7923361357004808"), &n("0.792336136")));
        assert!(!values_equal(&n("12345678901234567890123456789012345678"), &n("1.2345678901234568e37")));
        let ns = |v: &[&str]| AttributeValue::Ns(v.iter().map(|s| s.to_string()).collect());
        assert!(values_equal(&ns(&["1E2", "1.50"]), &ns(&["1.5", "100"])));
        assert!(!values_equal(&ns(&["0.7923361357004808"]), &ns(&["7.9233613570048080001e-1"])));
        let l = |v: AttributeValue| AttributeValue::L(vec![v]);
        assert!(!values_equal(&l(n("1E-130")), &l(n("1.0000000000000000001E-130"))));
    }

    #[test]
    fn pg_escape_round_trips_and_keeps_strings_apart() {
        let strings = ["", "plain", "a\0b", "\0", "\0\0", "\\", "\\0", "\u{FFFF}", "\u{FFFF}\\0", "\u{FFFF}\0", "x\u{FFFF}", "a\\\0", "\0\\0", "日本\0"];
        let mut seen = std::collections::HashSet::new();
        for s in strings {
            let e = pg_escape(s.to_string());
            assert!(!e.contains('\0'), "{s:?} → {e:?}");
            assert_eq!(pg_unescape(&e).as_deref(), Ok(s), "{e:?}");
            assert!(seen.insert(e.clone()), "{s:?} → {e:?} collides");
            if !s.contains('\0') && !s.starts_with(PG_ESCAPE_MARK) {
                assert_eq!(e, s, "strings without U+0000 or the mark are kept as they are");
            }
        }
        assert_eq!(pg_escape("a\0b\\".into()), "\u{FFFF}a\\0b\\\\");
        for bad in ["\u{FFFF}a\\", "\u{FFFF}\\x"] {
            assert!(pg_unescape(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn postgres_rows_hold_no_nul_and_other_targets_keep_it() {
        let item = parse_line(LINES[2], 1).expect("valid");
        let pg = TableModel::infer(TargetKind::Postgres, &schema(), &stats(), None).expect("model");
        let row = pg.to_row(&item).expect("converts");
        assert_eq!(row[0], Cell::Str("\u{FFFF}a\\0b".into()));
        for cell in &row {
            let texts: Vec<&str> = match cell {
                Cell::Str(s) | Cell::Json(s) => vec![s],
                Cell::StrArr(v) => v.iter().map(String::as_str).collect(),
                _ => vec![],
            };
            for t in texts {
                assert!(!t.contains('\0') && !t.contains("\\u0000"), "{cell:?}");
            }
        }
        let bt = TableModel::infer(TargetKind::Bigtable, &schema(), &stats(), None).expect("model");
        assert_eq!(bt.to_row(&item).expect("converts")[0], Cell::Str("a\0b".into()));
        // What PostgreSQL gives back: jsonb re-spaced, the mark raw or escaped.
        let at = pg.columns.iter().position(|c| c.attribute == "m").expect("m");
        let Cell::Json(text) = &row[at] else { panic!("m is JSON") };
        let mut back = row.clone();
        back[at] = Cell::Json(text.replace(':', ": ").replace('\u{FFFF}', "\\uffff"));
        assert!(items_equal(&item, &pg.to_item(&back).expect("decodes")));
    }

    #[test]
    fn values_that_do_not_fit_are_rejected_with_a_reason() {
        let m = TableModel::infer(TargetKind::Postgres, &schema(), &stats(), None).expect("model");
        let item = parse_line(r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1.5"}}}"#, 1).expect("valid");
        let e = m.to_row(&item).expect_err("fraction in an INT64 key");
        assert!(e.contains("\"sk\"") && e.contains("64-bit integer"), "{e}");
        let item = parse_line(r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"n":{"S":"seven"}}}"#, 1).expect("valid");
        assert!(m.to_row(&item).expect_err("S in Int64").contains("does not fit"));
        let item = parse_line(r#"{"Item":{"pk":{"S":"a"},"sk":{"N":"1"},"new":{"S":"x"}}}"#, 1).expect("valid");
        assert!(m.to_row(&item).expect_err("unknown").contains("type statistics"));
    }

    #[test]
    fn compat_diff_names_each_problem() {
        let m = TableModel::infer(TargetKind::Postgres, &schema(), &stats(), None).expect("model");
        let ddl = |t: ColumnType| format!("{t:?}");
        let mut existing: Vec<(String, String, bool)> = m.columns.iter().map(|c| (c.name.clone(), ddl(c.ty), !c.key)).collect();
        let pk = vec!["pk".to_string(), "sk".to_string()];
        assert!(compat_diff(&m, &existing, &pk, ddl).is_empty());
        existing[2].1 = "Bool".into();
        existing.push(("extra".into(), "Int64".into(), false));
        let d = compat_diff(&m, &existing, &pk[..1], ddl);
        assert_eq!(d.len(), 3, "{d:?}");
    }
}
