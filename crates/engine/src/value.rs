//! Values between records and Arrow. Stream records are JSON objects (HStream's JSON flag: a
//! serialized `google.protobuf.Struct`, or a RAW record holding a JSON object); the engine
//! works on Arrow record batches; clients see rows as JSON objects again. This module owns
//! those conversions and the typing rules:
//!
//! - a stream without declared columns gets its schema inferred from its records: a field
//!   holding numbers is `FLOAT` (Float64: `Struct` numbers are doubles, which is why HStreamDB
//!   prints `max_len` as `10.0`), strings `STRING`, booleans `BOOLEAN`, and anything else
//!   (objects, arrays, or a field whose records disagree on the type) `STRING` holding JSON;
//! - a value that does not fit its column's type, or a missing field, is NULL.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, Schema,
    SchemaRef, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

use crate::error::{EngineError, Result};

/// One record as a JSON object (keys in the order they came).
pub(crate) type JsonRow = Map<String, Value>;

/// The JSON type a field was seen with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Number,
    String,
    Bool,
    Other,
}

/// Infers a schema from sample records: fields in order of first appearance, typed as the
/// module documentation says. Every field is nullable.
pub(crate) fn infer_schema<'a>(rows: impl IntoIterator<Item = &'a JsonRow>) -> Schema {
    let mut order: Vec<String> = Vec::new();
    let mut seen: HashMap<String, Option<Seen>> = HashMap::new();
    for row in rows {
        for (k, v) in row {
            let kind = match v {
                Value::Null => None,
                Value::Number(_) => Some(Seen::Number),
                Value::String(_) => Some(Seen::String),
                Value::Bool(_) => Some(Seen::Bool),
                Value::Array(_) | Value::Object(_) => Some(Seen::Other),
            };
            match seen.get_mut(k) {
                None => {
                    order.push(k.clone());
                    seen.insert(k.clone(), kind);
                }
                Some(slot) => match (*slot, kind) {
                    (_, None) => {}
                    (None, k) => *slot = k,
                    (Some(a), Some(b)) if a != b => *slot = Some(Seen::Other),
                    _ => {}
                },
            }
        }
    }
    let fields: Vec<Field> = order
        .into_iter()
        .map(|name| {
            let ty = match seen.get(&name).copied().flatten() {
                Some(Seen::Number) => DataType::Float64,
                Some(Seen::Bool) => DataType::Boolean,
                _ => DataType::Utf8,
            };
            Field::new(name, ty, true)
        })
        .collect();
    Schema::new(fields)
}

/// The same schema with every field nullable (batches built by the engine may hold NULLs
/// anywhere: a missing field, a failed conversion).
pub(crate) fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// The JSON value of one cell.
pub fn cell_value(array: &dyn Array, row: usize) -> Result<Value> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    // JSON has no infinities or NaN: they are shown as text, as PostgreSQL prints them.
    let float = |f: f64| match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    };
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => Value::from(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => Value::from(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::from(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            Value::Array(
                (0..list.len())
                    .map(|i| cell_value(list.as_ref(), i))
                    .collect::<Result<_>>()?,
            )
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>().value(row);
            Value::Array(
                (0..list.len())
                    .map(|i| cell_value(list.as_ref(), i))
                    .collect::<Result<_>>()?,
            )
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut m = Map::new();
            for (i, f) in fields.iter().enumerate() {
                m.insert(f.name().clone(), cell_value(s.column(i).as_ref(), row)?);
            }
            Value::Object(m)
        }
        // Timestamps, dates, intervals, decimals, binary: Arrow's display text.
        _ => {
            let opts = FormatOptions::default();
            let f = ArrayFormatter::try_new(array, &opts)?;
            Value::String(f.value(row).to_string())
        }
    })
}

/// One row of a batch as a JSON object, keys in column order.
pub(crate) fn row_object(batch: &RecordBatch, row: usize) -> Result<JsonRow> {
    let mut m = Map::with_capacity(batch.num_columns());
    for (i, field) in batch.schema().fields().iter().enumerate() {
        m.insert(
            field.name().clone(),
            cell_value(batch.column(i).as_ref(), row)?,
        );
    }
    Ok(m)
}

/// Renders a JSON value as the HStreamDB CLI prints rows: `{"product": "Apple", "max_len":
/// 20.0}` (a space after `:` and `,`).
pub(crate) fn render(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                // A string key always serializes.
                let _ = write!(out, "{}", Value::String(k.clone()));
                out.push_str(": ");
                render(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(v, out);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Every row of a batch rendered with [`render`].
pub fn render_rows(batch: &RecordBatch) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut s = String::new();
        render(&Value::Object(row_object(batch, row)?), &mut s);
        out.push(s);
    }
    Ok(out)
}

/// A `google.protobuf.Struct` read as what it is on the wire: a repeated entry message
/// (protobuf maps are encoded so), which keeps the fields in the order they were written.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OrderedStruct {
    /// The entries, in wire order.
    #[prost(message, repeated, tag = "1")]
    pub fields: Vec<StructEntry>,
}

/// One field of an [`OrderedStruct`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StructEntry {
    /// Field name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Field value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<prost_types::Value>,
}

/// Decodes a serialized `Struct` into a JSON object, fields in wire order (a repeated key
/// keeps its first position and its last value, as protobuf's map semantics say).
pub(crate) fn decode_struct(bytes: &[u8]) -> Option<JsonRow> {
    use prost::Message;
    let s = OrderedStruct::decode(bytes).ok()?;
    let mut m = JsonRow::with_capacity(s.fields.len());
    for e in s.fields {
        let v = e.value.as_ref().map_or(Value::Null, from_proto_value);
        m.insert(e.key, v);
    }
    Some(m)
}

/// Encodes a JSON object as a serialized `Struct`, fields in the object's order.
pub(crate) fn encode_struct(m: &JsonRow) -> Vec<u8> {
    use prost::Message;
    OrderedStruct {
        fields: m
            .iter()
            .map(|(k, v)| StructEntry {
                key: k.clone(),
                value: Some(to_proto_value(v)),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// A JSON value from a protobuf `Struct` value (numbers are doubles).
pub(crate) fn from_proto_value(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => Value::Object(from_proto_struct(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_proto_value).collect()),
    }
}

/// A JSON object from a protobuf `Struct` (keys sorted: a `Struct` is a map).
pub(crate) fn from_proto_struct(s: &prost_types::Struct) -> JsonRow {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), from_proto_value(v)))
        .collect()
}

/// A protobuf `Struct` value from a JSON value.
pub(crate) fn to_proto_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_proto_value).collect(),
        }),
        Value::Object(m) => Kind::StructValue(to_proto_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A protobuf `Struct` from a JSON object.
pub fn to_proto_struct(m: &JsonRow) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), to_proto_value(v)))
            .collect(),
    }
}

/// The Arrow type of a declared column type (`CREATE STREAM s (col TYPE, …)`).
pub(crate) fn declared_type(t: &sqlparser::ast::DataType) -> Result<DataType> {
    use sqlparser::ast::DataType as S;
    Ok(match t {
        S::Int(_) | S::Integer(_) | S::BigInt(_) | S::SmallInt(_) | S::TinyInt(_) | S::Int64 => {
            DataType::Int64
        }
        S::Float(_) | S::Double(_) | S::DoublePrecision | S::Real | S::Float64 => DataType::Float64,
        S::Boolean | S::Bool => DataType::Boolean,
        S::String(_) | S::Text | S::Varchar(_) | S::CharacterVarying(_) | S::Char(_) => {
            DataType::Utf8
        }
        S::Date => DataType::Date32,
        S::Timestamp(_, _) | S::Datetime(_) => {
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None)
        }
        S::JSONB | S::JSON => DataType::Utf8,
        other => {
            return Err(EngineError::invalid(format!(
                "column type {other} is not supported (use INTEGER, FLOAT, BOOLEAN, STRING, \
                 DATE, TIMESTAMP or JSONB)"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonRow {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn inference_types_and_order() {
        let rows = [
            obj(json!({"product": "Apple", "length": 10, "ok": true, "n": null})),
            obj(json!({"length": 20.5, "extra": {"a": 1}, "mixed": 1})),
            obj(json!({"mixed": "x", "n": 3})),
        ];
        let s = infer_schema(rows.iter());
        let got: Vec<(String, DataType)> = s
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("product".into(), DataType::Utf8),
                ("length".into(), DataType::Float64),
                ("ok".into(), DataType::Boolean),
                ("n".into(), DataType::Float64),
                ("extra".into(), DataType::Utf8),
                ("mixed".into(), DataType::Utf8),
            ]
        );
    }

    #[test]
    fn missing_and_mistyped_values_are_null_and_rows_render_like_the_seed() {
        let rows = [
            obj(json!({"product": "Apple", "max_len": 10})),
            obj(json!({"product": 7, "max_len": "x"})),
            obj(json!({})),
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("product", DataType::Utf8, true),
            Field::new("max_len", DataType::Float64, true),
        ]));
        let refs: Vec<&JsonRow> = rows.iter().collect();
        let batch = crate::decode::rows_to_batch(&schema, &refs).expect("batch");
        assert_eq!(
            render_rows(&batch).expect("render"),
            vec![
                r#"{"product": "Apple", "max_len": 10.0}"#,
                r#"{"product": "7", "max_len": null}"#,
                r#"{"product": null, "max_len": null}"#,
            ]
        );
    }

    #[test]
    fn struct_round_trip() {
        let row = obj(json!({"a": 1.5, "b": "x", "c": [true, null], "d": {"e": 2.0}}));
        assert_eq!(from_proto_struct(&to_proto_struct(&row)), row);
    }

    #[test]
    fn ordered_struct_keeps_field_order_and_is_a_struct_on_the_wire() {
        use prost::Message;
        let row = obj(json!({"zeta": "Apple", "alpha": 2.0, "mid": null}));
        let bytes = encode_struct(&row);
        let back = decode_struct(&bytes).expect("decodes");
        assert_eq!(
            back.keys().collect::<Vec<_>>(),
            vec!["zeta", "alpha", "mid"]
        );
        assert_eq!(back, row);
        // Any protobuf library reads it as a Struct.
        let as_struct = prost_types::Struct::decode(bytes.as_slice()).expect("a Struct");
        assert_eq!(from_proto_struct(&as_struct), row);
    }
}
