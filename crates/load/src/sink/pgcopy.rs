//! PostgreSQL's binary COPY format: the type of each column, each cell's encoding,
//! and tuples kept as bytes. The loader's converter encodes a file's lines straight
//! into tuples ([`crate::rowparse::RowParser::parse_copy`]) and the writers send
//! slices of them ([`CopyRows`]): no row of cells is built or freed per line, which
//! was a fifth of the loader's CPU (allocation, and frees contending across threads).
//! Every cell is encoded by the functions here, on both paths.

use crate::decimal::Decimal;
use crate::schema::{Cell, ColumnType, Row, TableModel};
use bytes::{BufMut as _, Bytes, BytesMut};
use std::ops::Range;
use std::sync::Arc;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// What precedes the tuples of a binary COPY: signature, flags, header extension.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// What follows them: a field count of -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// The binary COPY type of a column.
pub(crate) fn copy_type(t: ColumnType) -> Type {
    match t {
        ColumnType::Int64 => Type::INT8,
        ColumnType::Numeric => Type::NUMERIC,
        ColumnType::Json => Type::JSONB,
        ColumnType::String => Type::TEXT,
        ColumnType::Float64 => Type::FLOAT8,
        ColumnType::Bytes => Type::BYTEA,
        ColumnType::Bool => Type::BOOL,
        ColumnType::StringArray => Type::TEXT_ARRAY,
        ColumnType::NumericArray => Type::NUMERIC_ARRAY,
        ColumnType::Int64Array => Type::INT8_ARRAY,
        ColumnType::Float64Array => Type::FLOAT8_ARRAY,
        ColumnType::BytesArray => Type::BYTEA_ARRAY,
        ColumnType::DecimalText => Type::TEXT,
        ColumnType::DecimalTextArray => Type::TEXT_ARRAY,
    }
}

/// Number text in PostgreSQL's binary NUMERIC form: base-10000 digit groups aligned
/// on the decimal point, the weight of the first group, sign, and display scale.
pub(crate) fn put_numeric(text: &str, out: &mut BytesMut) -> Result<(), String> {
    let d = Decimal::parse(text).ok_or_else(|| format!("{text:?} is not a number"))?;
    if d.is_zero() {
        out.put_slice(&[0; 8]);
        return Ok(());
    }
    // Digit i stands for 10^(exp-1-i); group g holds the powers 4g … 4g+3.
    let n = d.digits.len() as i64;
    let first = (d.exp - 1).div_euclid(4);
    let last = (d.exp - n).div_euclid(4);
    let count = (first - last + 1) as usize;
    // A DynamoDB number has at most 38 digits: 11 groups. Text read from elsewhere may
    // have more.
    let (mut stack, mut heap) = ([0i16; 16], Vec::new());
    let groups: &mut [i16] = if count <= stack.len() {
        &mut stack[..count]
    } else {
        heap.resize(count, 0);
        &mut heap
    };
    for (i, &digit) in d.digits.iter().enumerate() {
        let p = d.exp - 1 - i as i64;
        groups[(first - p.div_euclid(4)) as usize] += i16::from(digit) * 10i16.pow(p.rem_euclid(4) as u32);
    }
    let weight = i16::try_from(first).map_err(|_| format!("number {text} is out of NUMERIC range"))?;
    let scale =
        u16::try_from(d.fraction_digits()).ok().filter(|s| *s <= 0x3FFF).ok_or_else(|| format!("number {text} has too many fraction digits for NUMERIC"))?;
    out.put_i16(count as i16);
    out.put_i16(weight);
    out.put_u16(if d.negative { 0x4000 } else { 0 });
    out.put_u16(scale);
    for &g in groups.iter() {
        out.put_i16(g);
    }
    Ok(())
}

/// A number cell: NUMERIC (also an element of NUMERIC[]), or its text in a text
/// column ([`ColumnType::DecimalText`], which the model never chooses on PostgreSQL
/// since NUMERIC holds every DynamoDB number, but a column of it must still work).
#[derive(Debug)]
struct PgNumeric<'a>(&'a str);

impl ToSql for PgNumeric<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::TEXT {
            return self.0.to_sql(ty, out);
        }
        put_numeric(self.0, out)?;
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC || *ty == Type::TEXT
    }
    to_sql_checked!();
}

/// A cell as a binary COPY value of its column's [`copy_type`].
impl ToSql for Cell {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(v) => v.to_sql(ty, out),
            Cell::Num(v) => PgNumeric(v).to_sql(ty, out),
            Cell::Json(v) => {
                // jsonb's binary form: format version 1, then the text.
                out.extend_from_slice(&[1]);
                out.extend_from_slice(v.as_bytes());
                Ok(IsNull::No)
            }
            Cell::Str(v) => v.as_str().to_sql(ty, out),
            Cell::Float(v) => v.to_sql(ty, out),
            Cell::Bytes(v) => v.as_slice().to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::StrArr(v) => v.to_sql(ty, out),
            Cell::NumArr(v) => v.iter().map(|n| PgNumeric(n)).collect::<Vec<_>>().to_sql(ty, out),
            Cell::IntArr(v) => v.to_sql(ty, out),
            Cell::FloatArr(v) => v.to_sql(ty, out),
            Cell::BytesArr(v) => v.to_sql(ty, out),
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// Appends `cell`'s value, without its length; `false` for NULL, which has none.
pub(crate) fn put_value(cell: &Cell, ty: ColumnType, out: &mut BytesMut) -> Result<bool, String> {
    Ok(matches!(cell.to_sql(&copy_type(ty), out).map_err(|e| e.to_string())?, IsNull::No))
}

/// Appends `cell` as one field (length, then value; -1 for NULL).
fn put_field(cell: &Cell, ty: ColumnType, out: &mut BytesMut) -> Result<(), String> {
    let at = out.len();
    out.put_i32(-1);
    if put_value(cell, ty, out)? {
        let len = (out.len() - at - 4) as i32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// Appends `row` as one tuple; on an error, `out` is as it was.
pub fn put_row(model: &TableModel, row: &Row, out: &mut BytesMut) -> Result<(), String> {
    let at = out.len();
    out.put_i16(model.columns.len() as i16);
    for (cell, c) in row.iter().zip(&model.columns) {
        if let Err(e) = put_field(cell, c.ty, out) {
            out.truncate(at);
            return Err(format!("column {}: {e}", c.name));
        }
    }
    Ok(())
}

/// Tuples, each ending where `ends` says, of which `rows` are this slice's: a batch is
/// a slice of its chunk, and a retried part of a batch a slice of that.
#[derive(Debug, Clone)]
pub struct CopyRows {
    tuples: Bytes,
    ends: Arc<[usize]>,
    rows: Range<usize>,
}

impl CopyRows {
    pub fn new(tuples: Bytes, ends: Vec<usize>) -> CopyRows {
        let rows = 0..ends.len();
        CopyRows { tuples, ends: ends.into(), rows }
    }

    /// `rows` of a model as tuples.
    pub fn encode(model: &TableModel, rows: &[Row]) -> Result<CopyRows, String> {
        let per_row = (model.max_row_bytes as usize).clamp(16, 4096);
        let mut out = BytesMut::with_capacity(rows.len() * per_row);
        let mut ends = Vec::with_capacity(rows.len());
        for row in rows {
            put_row(model, row, &mut out)?;
            ends.push(out.len());
        }
        Ok(CopyRows::new(out.freeze(), ends))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn start(&self, row: usize) -> usize {
        row.checked_sub(1).map_or(0, |r| self.ends[r])
    }

    /// Rows `range` of this slice (relative to it); clamped to its end.
    pub fn slice(&self, range: Range<usize>) -> CopyRows {
        let end = (self.rows.start + range.end).min(self.rows.end);
        let start = (self.rows.start + range.start).min(end);
        CopyRows { tuples: self.tuples.clone(), ends: self.ends.clone(), rows: start..end }
    }

    /// Takes the first `n` rows (fewer at the end) off this slice.
    pub fn take_front(&mut self, n: usize) -> CopyRows {
        let front = self.slice(0..n);
        self.rows.start = front.rows.end;
        front
    }

    /// The tuples' bytes, without header or trailer.
    pub fn bytes(&self) -> Bytes {
        self.tuples.slice(self.start(self.rows.start)..self.start(self.rows.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(text: &str) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut b = BytesMut::new();
        put_numeric(text, &mut b).expect("encodes");
        let w: Vec<i16> = b.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect();
        (w[0], w[1], w[2] as u16, w[3] as u16, w[4..].to_vec())
    }

    #[test]
    fn numeric_groups_align_on_the_decimal_point() {
        assert_eq!(numeric("12345.678"), (3, 1, 0, 3, vec![1, 2345, 6780]));
        assert_eq!(numeric("-0.00012"), (2, -1, 0x4000, 5, vec![1, 2000]));
        assert_eq!(numeric("100"), (1, 0, 0, 0, vec![100]));
        assert_eq!(numeric("1E+8"), (1, 2, 0, 0, vec![1]));
        assert_eq!(numeric("-0"), (0, 0, 0, 0, vec![]));
        assert_eq!(numeric("1e-130").1, -33);
        let long = format!("1{}.{}1", "0".repeat(60), "0".repeat(60));
        assert_eq!(numeric(&long).0, 32, "more groups than fit on the stack");
        assert!(put_numeric("abc", &mut BytesMut::new()).is_err());
    }

    #[test]
    fn slices_of_slices_are_the_tuples_they_name() {
        let ends = vec![3, 5, 9, 10];
        let rows = CopyRows::new(Bytes::from_static(b"aaabbccccd"), ends);
        assert_eq!(&rows.bytes()[..], b"aaabbccccd");
        let mut rest = rows.slice(1..4);
        assert_eq!((&rest.bytes()[..], rest.len()), (&b"bbccccd"[..], 3));
        assert_eq!(&rest.slice(1..2).bytes()[..], b"cccc");
        assert_eq!(&rest.slice(2..9).bytes()[..], b"d", "clamped to the slice");
        let front = rest.take_front(2);
        assert_eq!((&front.bytes()[..], &rest.bytes()[..]), (&b"bbcccc"[..], &b"d"[..]));
        assert!(rest.take_front(5).len() == 1 && rest.is_empty());
        assert!(rest.bytes().is_empty());
    }
}
