//! The batch decoder: stream records straight into the Arrow columns of a schema. A JSON
//! record (a serialized `google.protobuf.Struct`) is walked on the wire and each field lands
//! in its column's builder, with no JSON object in between; a RAW record holding a JSON
//! object, or a row the engine already has, goes through [`BatchDecoder::push_row`]. Both
//! follow the typing rules of [`crate::value`]: a missing field, or a value that does not fit
//! its column, is NULL.
//!
//! This is the hot path of every continuous query (records in, batches out), so it avoids
//! allocation per record: field names are matched against the columns by position first (the
//! previous record's field at the same position), then by a hash lookup.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    new_null_array, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    RecordBatchOptions, StringBuilder,
};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, SchemaRef};
use serde_json::{Number, Value};
use streamcell_proto::wire::{Reader, WireError, WireValue};

use crate::error::Result;
use crate::value::{from_proto_value, JsonRow};

/// No column (a field name the schema does not have).
const NONE: usize = usize::MAX;

/// One field's value while a record is being decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell<'a> {
    /// The record has no such field.
    Missing,
    Null,
    Num(f64),
    Bool(bool),
    Str(&'a str),
    /// A list or object: its JSON text, an index into `BatchDecoder::other`.
    Other(u32),
}

/// Builds the Arrow columns of one schema from records.
pub(crate) struct BatchDecoder {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// Column of each field name read (names of skipped columns are not here).
    index: HashMap<Box<[u8]>, usize>,
    /// The field name at each position of the previous record, and its column.
    hint: Vec<(Box<[u8]>, usize)>,
    /// Storage for the current record's value per column (all `Missing` between records;
    /// lent out, with the record's lifetime, while a record is decoded).
    cells: Vec<Cell<'static>>,
    /// JSON text of the current record's list/object values.
    other: Vec<String>,
    times: Vec<i64>,
    /// Bytes of text in the last batch, to size the next one's buffers.
    text_bytes: usize,
}

enum Column {
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    /// Text, cast to the column's type (Utf8 itself, dates, timestamps…) when finished.
    Text(StringBuilder),
    /// A column the reader does not need: all NULL.
    Skipped,
}

impl Column {
    fn new(t: &DataType, rows: usize, text_bytes: usize) -> Self {
        match t {
            DataType::Float64 => Column::Float64(Float64Builder::with_capacity(rows)),
            DataType::Boolean => Column::Boolean(BooleanBuilder::with_capacity(rows)),
            DataType::Int64 => Column::Int64(Int64Builder::with_capacity(rows)),
            _ => Column::Text(StringBuilder::with_capacity(rows, text_bytes)),
        }
    }
}

impl BatchDecoder {
    /// A decoder for batches of `schema`.
    pub(crate) fn new(schema: &SchemaRef) -> Self {
        Self::with_columns(schema, |_| true)
    }

    /// A decoder for batches of `schema` that reads only the columns `read` accepts (by
    /// name); the others are NULL in every row. The fields of a record that are not read are
    /// still checked to be well-formed protobuf, but their content is not looked at.
    pub(crate) fn with_columns(schema: &SchemaRef, read: impl Fn(&str) -> bool) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| match read(f.name()) {
                true => Column::new(f.data_type(), 0, 0),
                false => Column::Skipped,
            })
            .collect::<Vec<_>>();
        let mut index = HashMap::with_capacity(columns.len());
        for (i, f) in schema.fields().iter().enumerate() {
            if !matches!(columns[i], Column::Skipped) {
                // The first of two same-named columns wins, as a name lookup would.
                index
                    .entry(f.name().as_bytes().to_vec().into_boxed_slice())
                    .or_insert(i);
            }
        }
        BatchDecoder {
            schema: schema.clone(),
            cells: vec![Cell::Missing; columns.len()],
            columns,
            index,
            hint: Vec::new(),
            other: Vec::new(),
            times: Vec::new(),
            text_bytes: 0,
        }
    }

    /// Records decoded since the last [`finish`](Self::finish).
    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }

    /// True when no record is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Adds a JSON record (a serialized `Struct`) published at `time_ms`. Returns false, and
    /// adds nothing, when the bytes are not a valid `Struct`.
    pub(crate) fn push_struct(&mut self, bytes: &[u8], time_ms: i64) -> bool {
        // Borrow the cell storage with this record's lifetime (an in-place collect: the
        // element types have the same layout, so no allocation).
        let mut cells: Vec<Cell<'_>> = std::mem::take(&mut self.cells)
            .into_iter()
            .map(|_| Cell::Missing)
            .collect();
        let ok = self.walk_struct(bytes, &mut cells).is_ok();
        if ok {
            self.append_cells(&cells);
            self.times.push(time_ms);
        }
        self.cells = cells.into_iter().map(|_| Cell::Missing).collect();
        self.other.clear();
        ok
    }

    /// Adds a record held as a JSON object.
    pub(crate) fn push_row(&mut self, row: &JsonRow, time_ms: i64) {
        for (i, field) in self.schema.fields().iter().enumerate() {
            let v = row.get(field.name());
            match &mut self.columns[i] {
                Column::Float64(b) => b.append_option(v.and_then(|v| match v {
                    Value::Number(n) => n.as_f64(),
                    _ => None,
                })),
                Column::Boolean(b) => b.append_option(v.and_then(Value::as_bool)),
                Column::Int64(b) => b.append_option(v.and_then(|v| match v {
                    Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(whole)),
                    _ => None,
                })),
                Column::Text(b) => match v {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::String(s)) => b.append_value(s),
                    Some(other) => b.append_value(other.to_string()),
                },
                Column::Skipped => {}
            }
        }
        self.times.push(time_ms);
    }

    /// The batch of everything added since the last call, and each row's publish time. The
    /// decoder is empty afterwards and can be reused.
    pub(crate) fn finish(&mut self) -> Result<(RecordBatch, Vec<i64>)> {
        let rows = self.times.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        let mut text_bytes = 0;
        for (column, field) in self.columns.iter_mut().zip(self.schema.fields()) {
            if matches!(column, Column::Skipped) {
                arrays.push(new_null_array(field.data_type(), rows));
                continue;
            }
            // The next batch is likely the size of this one: build it without regrowing.
            let fresh = Column::new(field.data_type(), rows, self.text_bytes);
            let array: ArrayRef = match std::mem::replace(column, fresh) {
                Column::Skipped => unreachable!("skipped columns are handled above"),
                Column::Float64(mut b) => Arc::new(b.finish()),
                Column::Boolean(mut b) => Arc::new(b.finish()),
                Column::Int64(mut b) => Arc::new(b.finish()),
                Column::Text(mut b) => {
                    let text = b.finish();
                    text_bytes = text_bytes.max(text.value_data().len());
                    if field.data_type() == &DataType::Utf8 {
                        Arc::new(text)
                    } else {
                        // Dates, times, timestamps, decimals…: from the value's text, with
                        // Arrow's casts (ISO-8601 text; a number is taken as text too). What
                        // does not parse is NULL.
                        cast_with_options(
                            &text,
                            field.data_type(),
                            &CastOptions {
                                safe: true,
                                ..Default::default()
                            },
                        )?
                    }
                }
            };
            arrays.push(array);
        }
        self.text_bytes = text_bytes;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        Ok((batch, std::mem::take(&mut self.times)))
    }

    /// Reads a `Struct`'s fields into `cells` (a repeated name keeps its last value, as
    /// protobuf map semantics say).
    fn walk_struct<'a>(
        &mut self,
        bytes: &'a [u8],
        cells: &mut [Cell<'a>],
    ) -> std::result::Result<(), WireError> {
        let mut fields = Reader::new(bytes);
        let mut position = 0usize;
        while let Some((number, entry)) = fields.next()? {
            if number != 1 {
                continue;
            }
            let mut entry = Reader::new(entry.bytes()?);
            let (mut key, mut value): (&[u8], _) = (&[], None);
            while let Some((number, v)) = entry.next()? {
                match number {
                    1 => key = v.bytes()?,
                    2 => value = Some(v.bytes()?),
                    _ => {}
                }
            }
            let column = self.column_of(position, key);
            position += 1;
            if column == NONE {
                // Not read: its name need not even be UTF-8-checked (a read column's name
                // equals the column's, so it is).
                continue;
            }
            cells[column] = match value {
                None => Cell::Null,
                Some(v) => self.read_value(v)?,
            };
        }
        Ok(())
    }

    /// The column named `key`, trying the name seen at this position last time first.
    fn column_of(&mut self, position: usize, key: &[u8]) -> usize {
        if let Some((name, column)) = self.hint.get(position) {
            if name.as_ref() == key {
                return *column;
            }
        }
        let found = self.index.get(key).copied().unwrap_or(NONE);
        let entry = (key.to_vec().into_boxed_slice(), found);
        if position < self.hint.len() {
            self.hint[position] = entry;
        } else {
            self.hint.push(entry);
        }
        found
    }

    /// One `google.protobuf.Value` (the last of its oneof fields wins).
    fn read_value<'a>(&mut self, bytes: &'a [u8]) -> std::result::Result<Cell<'a>, WireError> {
        let mut r = Reader::new(bytes);
        let mut cell = Cell::Null;
        while let Some((number, v)) = r.next()? {
            cell = match (number, v) {
                (1, WireValue::Varint(_)) => Cell::Null,
                (2, WireValue::Fixed64(bits)) => Cell::Num(f64::from_bits(bits)),
                (3, WireValue::Bytes(_)) => Cell::Str(v.str()?),
                (4, WireValue::Varint(b)) => Cell::Bool(b != 0),
                (5 | 6, WireValue::Bytes(_)) => {
                    // Nested values are rare: decode them fully (which also checks them).
                    use prost::Message;
                    let value =
                        prost_types::Value::decode(bytes).map_err(|_| WireError::Malformed)?;
                    self.other.push(from_proto_value(&value).to_string());
                    return Ok(Cell::Other((self.other.len() - 1) as u32));
                }
                (1..=6, _) => return Err(WireError::Malformed),
                _ => cell,
            };
        }
        Ok(cell)
    }

    /// Appends the current record's cells to the builders.
    fn append_cells(&mut self, cells: &[Cell<'_>]) {
        for (column, cell) in self.columns.iter_mut().zip(cells.iter()) {
            // Non-finite doubles are not JSON numbers: they read as NULL.
            let c = match *cell {
                Cell::Num(f) if !f.is_finite() => Cell::Null,
                c => c,
            };
            match column {
                Column::Float64(b) => b.append_option(match c {
                    Cell::Num(f) => Some(f),
                    _ => None,
                }),
                Column::Boolean(b) => b.append_option(match c {
                    Cell::Bool(v) => Some(v),
                    _ => None,
                }),
                Column::Int64(b) => b.append_option(match c {
                    Cell::Num(f) => whole(f),
                    _ => None,
                }),
                Column::Text(b) => match c {
                    Cell::Missing | Cell::Null => b.append_null(),
                    Cell::Str(s) => b.append_value(s),
                    Cell::Num(f) => match Number::from_f64(f) {
                        Some(n) => b.append_value(n.to_string()),
                        None => b.append_null(),
                    },
                    Cell::Bool(v) => b.append_value(if v { "true" } else { "false" }),
                    Cell::Other(i) => b.append_value(&self.other[i as usize]),
                },
                Column::Skipped => {}
            }
        }
    }
}

/// A double as an integer, when it is one (and fits).
fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
}

/// Builds a record batch of `schema` from JSON rows. Missing fields and values that do not
/// fit their column are NULL (see [`BatchDecoder`]).
pub(crate) fn rows_to_batch(schema: &SchemaRef, rows: &[&JsonRow]) -> Result<RecordBatch> {
    let mut d = BatchDecoder::new(schema);
    for row in rows {
        d.push_row(row, 0);
    }
    Ok(d.finish()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{decode_struct, encode_struct};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use serde_json::json;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("n", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("i", DataType::Int64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn rows() -> Vec<JsonRow> {
        let values = [
            json!({"n": 1.5, "s": "x", "b": true, "i": 3, "t": "2024-01-02T03:04:05Z"}),
            json!({"s": 2, "n": "no", "extra": [1, {"a": null}], "i": 2.5}),
            json!({"b": false, "s": {"k": [true, "v"]}, "n": -0.0, "i": 9.5e18}),
            json!({"s": true, "n": null, "t": 1700000000000.0, "i": -4}),
            json!({}),
            json!({"s": "é ✓", "s2": 1, "n": 1e300}),
        ];
        values
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => m,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn structs_decode_exactly_as_json_rows_do() {
        let schema = schema();
        let rows = rows();
        let want = rows_to_batch(&schema, &rows.iter().collect::<Vec<_>>()).unwrap();
        let mut d = BatchDecoder::new(&schema);
        for (t, row) in rows.iter().enumerate() {
            // Through the wire (numbers become doubles) and back, as a stored record would.
            let bytes = encode_struct(row);
            assert!(d.push_struct(&bytes, t as i64));
        }
        let (got, times) = d.finish().unwrap();
        let via_json: Vec<JsonRow> = rows
            .iter()
            .map(|r| decode_struct(&encode_struct(r)).unwrap())
            .collect();
        let want_wire = rows_to_batch(&schema, &via_json.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(got, want_wire);
        assert_eq!(times, vec![0, 1, 2, 3, 4, 5]);
        // Numbers are doubles on the wire: a number in a text column reads `2.0`, not `2`;
        // double columns are the same either way.
        assert_eq!(got.column(0), want.column(0));
    }

    #[test]
    fn field_order_changes_and_repeats_use_the_right_columns() {
        let schema = schema();
        let mut d = BatchDecoder::new(&schema);
        let a = encode_struct(&rows()[0]);
        let b = encode_struct(&rows()[1]);
        for bytes in [&a, &b, &a, &b, &b, &a] {
            assert!(d.push_struct(bytes, 0));
        }
        let (got, _) = d.finish().unwrap();
        let r0 = decode_struct(&a).unwrap();
        let r1 = decode_struct(&b).unwrap();
        let want = rows_to_batch(&schema, &[&r0, &r1, &r0, &r1, &r1, &r0]).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn columns_not_read_are_null_and_the_others_unchanged() {
        let schema = schema();
        let rows: Vec<JsonRow> = rows()
            .iter()
            .map(|r| decode_struct(&encode_struct(r)).unwrap())
            .collect();
        let mut d = BatchDecoder::with_columns(&schema, |name| name == "s" || name == "i");
        for r in &rows {
            assert!(d.push_struct(&encode_struct(r), 0));
        }
        // Twice, so the second batch runs on the resized builders and the learnt positions.
        for r in &rows {
            assert!(d.push_struct(&encode_struct(r), 0));
        }
        let (got, _) = d.finish().unwrap();
        let doubled: Vec<&JsonRow> = rows.iter().chain(rows.iter()).collect();
        let want = rows_to_batch(&schema, &doubled).unwrap();
        for (i, f) in schema.fields().iter().enumerate() {
            if f.name() == "s" || f.name() == "i" {
                assert_eq!(got.column(i), want.column(i), "{}", f.name());
            } else {
                assert_eq!(got.column(i).null_count(), got.num_rows(), "{}", f.name());
            }
        }
    }

    #[test]
    fn invalid_structs_are_refused_and_leave_nothing_behind() {
        let schema = schema();
        let mut d = BatchDecoder::new(&schema);
        let good = encode_struct(&rows()[0]);
        for cut in 1..good.len() {
            let _ = d.push_struct(&good[..cut], 0);
        }
        assert!(!d.push_struct(&[0x0a, 0x05, 1], 0));
        assert!(!d.push_struct(b"not a struct at all \xff\xff", 0));
        let accepted = d.len();
        assert!(d.push_struct(&good, 9));
        let (batch, times) = d.finish().unwrap();
        assert_eq!(batch.num_rows(), accepted + 1);
        assert_eq!(times.last(), Some(&9));
        // Every accepted prefix decodes as prost decodes it.
        let mut d2 = BatchDecoder::new(&schema);
        for cut in 1..good.len() {
            if let Some(row) = decode_struct(&good[..cut]) {
                d2.push_row(&row, 0);
            }
        }
        d2.push_row(&decode_struct(&good).unwrap(), 9);
        assert_eq!(d2.finish().unwrap().0, batch);
    }
}
