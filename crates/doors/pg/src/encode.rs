//! Rows out: Arrow columns as PostgreSQL types and values, in the text or binary format each
//! column was asked for, and JSON-made listings (`SHOW STREAMS`, …) typed by what their
//! values hold.
//!
//! | Arrow | PostgreSQL |
//! |---|---|
//! | Boolean | `bool` |
//! | Int8, Int16, UInt8 | `int2` |
//! | Int32, UInt16 | `int4` |
//! | Int64, UInt32, UInt64 | `int8` (a UInt64 above 2^63-1 is an error) |
//! | Float16, Float32 | `float4` |
//! | Float64, Decimal | `float8` |
//! | Timestamp without / with time zone | `timestamp` / `timestamptz` (µs) |
//! | Date32, Date64 | `date` |
//! | Binary | `bytea` |
//! | List, Struct, Map | `json` |
//! | Utf8 and everything else | `text` (Arrow's display text) |

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Schema,
    TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::api::Type;
use pgwire::messages::data::DataRow;

use crate::error::{PgError, Result};

/// How a column is encoded: one PostgreSQL type and the Arrow type it is cast to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `bool`.
    Bool,
    /// `int2`.
    Int2,
    /// `int4`.
    Int4,
    /// `int8`.
    Int8,
    /// `float4`.
    Float4,
    /// `float8`.
    Float8,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    TimestampTz,
    /// `date`.
    Date,
    /// `bytea`.
    Bytea,
    /// `json`.
    Json,
    /// `text`.
    Text,
}

impl Kind {
    /// The kind an Arrow column is sent as.
    pub fn of(dt: &DataType) -> Kind {
        match dt {
            DataType::Boolean => Kind::Bool,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => Kind::Int2,
            DataType::Int32 | DataType::UInt16 => Kind::Int4,
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Kind::Int8,
            DataType::Float16 | DataType::Float32 => Kind::Float4,
            DataType::Float64 | DataType::Decimal128(..) | DataType::Decimal256(..) => Kind::Float8,
            DataType::Timestamp(_, None) => Kind::Timestamp,
            DataType::Timestamp(_, Some(_)) => Kind::TimestampTz,
            DataType::Date32 | DataType::Date64 => Kind::Date,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Kind::Bytea,
            DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..) => Kind::Json,
            _ => Kind::Text,
        }
    }

    /// The PostgreSQL type.
    pub fn pg_type(self) -> Type {
        match self {
            Kind::Bool => Type::BOOL,
            Kind::Int2 => Type::INT2,
            Kind::Int4 => Type::INT4,
            Kind::Int8 => Type::INT8,
            Kind::Float4 => Type::FLOAT4,
            Kind::Float8 => Type::FLOAT8,
            Kind::Timestamp => Type::TIMESTAMP,
            Kind::TimestampTz => Type::TIMESTAMPTZ,
            Kind::Date => Type::DATE,
            Kind::Bytea => Type::BYTEA,
            Kind::Json => Type::JSON,
            Kind::Text => Type::TEXT,
        }
    }

    /// The Arrow type a column is cast to before its values are read (`None`: read as is).
    fn arrow(self) -> Option<DataType> {
        Some(match self {
            Kind::Bool => DataType::Boolean,
            Kind::Int2 => DataType::Int16,
            Kind::Int4 => DataType::Int32,
            Kind::Int8 => DataType::Int64,
            Kind::Float4 => DataType::Float32,
            Kind::Float8 => DataType::Float64,
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::Date => DataType::Date32,
            Kind::Bytea => DataType::Binary,
            Kind::Json => return None,
            Kind::Text => DataType::Utf8,
        })
    }

    fn from_type(t: &Type) -> Kind {
        [
            Kind::Bool,
            Kind::Int2,
            Kind::Int4,
            Kind::Int8,
            Kind::Float4,
            Kind::Float8,
            Kind::Timestamp,
            Kind::TimestampTz,
            Kind::Date,
            Kind::Bytea,
            Kind::Json,
        ]
        .into_iter()
        .find(|k| &k.pg_type() == t)
        .unwrap_or(Kind::Text)
    }
}

/// The row description of `schema`, each column in the format the client asked for.
pub fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                Kind::of(f.data_type()).pg_type(),
                format.format_for(i),
            )
        })
        .collect()
}

/// The rows of `batch` as `DataRow`s described by `fields` (from [`fields`] of its schema);
/// `timestamptz` values are given in the session's time zone `tz`.
pub fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    tz: Tz,
) -> Result<Vec<DataRow>> {
    if batch.num_columns() != fields.len() {
        return Err(PgError::Internal(format!(
            "a batch of {} columns for a row description of {}",
            batch.num_columns(),
            fields.len()
        )));
    }
    let mut cols: Vec<(Kind, ArrayRef)> = Vec::with_capacity(fields.len());
    for (col, f) in batch.columns().iter().zip(fields.iter()) {
        let kind = Kind::from_type(f.datatype());
        let col = match kind.arrow() {
            Some(t) if col.data_type() != &t => {
                let options = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(col, &t, &options)?
            }
            _ => col.clone(),
        };
        cols.push((kind, col));
    }
    let mut enc = DataRowEncoder::new(fields.clone());
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (kind, col) in &cols {
            encode_cell(&mut enc, *kind, col.as_ref(), row, tz)?;
        }
        out.push(enc.take_row());
    }
    Ok(out)
}

fn encode_cell(
    enc: &mut DataRowEncoder,
    kind: Kind,
    col: &dyn Array,
    row: usize,
    tz: Tz,
) -> Result<()> {
    let null = col.is_null(row);
    match kind {
        Kind::Bool => enc.encode_field(&(!null).then(|| col.as_boolean().value(row)))?,
        Kind::Int2 => {
            enc.encode_field(&(!null).then(|| col.as_primitive::<Int16Type>().value(row)))?
        }
        Kind::Int4 => {
            enc.encode_field(&(!null).then(|| col.as_primitive::<Int32Type>().value(row)))?
        }
        Kind::Int8 => {
            enc.encode_field(&(!null).then(|| col.as_primitive::<Int64Type>().value(row)))?
        }
        Kind::Float4 => {
            enc.encode_field(&(!null).then(|| col.as_primitive::<Float32Type>().value(row)))?
        }
        Kind::Float8 => {
            enc.encode_field(&(!null).then(|| col.as_primitive::<Float64Type>().value(row)))?
        }
        Kind::Timestamp | Kind::TimestampTz => {
            let v = if null {
                None
            } else {
                let us = col.as_primitive::<TimestampMicrosecondType>().value(row);
                Some(DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| {
                    PgError::Internal(format!("timestamp {us} µs is out of range"))
                })?)
            };
            if kind == Kind::Timestamp {
                enc.encode_field(&v.map(|d| d.naive_utc()))?
            } else {
                // The instant with the session zone's offset at that instant, as PostgreSQL
                // sends it (`2026-03-29 03:00:00+02` in Europe/Madrid).
                enc.encode_field(&v.map(|d| d.with_timezone(&tz).fixed_offset()))?
            }
        }
        Kind::Date => {
            let v = if null {
                None
            } else {
                let days = col.as_primitive::<Date32Type>().value(row);
                // 719,163 days from 0001-01-01 (CE day 1) to 1970-01-01.
                Some(
                    NaiveDate::from_num_days_from_ce_opt(days + 719_163)
                        .ok_or_else(|| PgError::Internal(format!("date {days} is out of range")))?,
                )
            };
            enc.encode_field(&v)?
        }
        Kind::Bytea => enc.encode_field(&(!null).then(|| col.as_binary::<i32>().value(row)))?,
        Kind::Json => {
            let v = if null {
                None
            } else {
                Some(streamcell_engine::cell_value(col, row)?)
            };
            enc.encode_field(&v)?
        }
        Kind::Text => enc.encode_field(&(!null).then(|| col.as_string::<i32>().value(row)))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::Field;
    use pgwire::api::results::FieldFormat;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(7), None])),
                Arc::new(StringArray::from(vec![Some("a'b"), Some("")])),
                Arc::new(TimestampMillisecondArray::from(vec![Some(1_500), None])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn arrow_types_get_postgres_types() {
        let f = fields(&batch().schema(), &Format::UnifiedText);
        let types: Vec<Type> = f.iter().map(|f| f.datatype().clone()).collect();
        assert_eq!(types, vec![Type::INT8, Type::TEXT, Type::TIMESTAMP]);
        assert_eq!(Kind::of(&DataType::UInt8), Kind::Int2);
        assert_eq!(Kind::of(&DataType::Decimal128(10, 2)), Kind::Float8);
    }

    #[test]
    fn text_and_binary_rows_encode_every_column_and_nulls() {
        let b = batch();
        for format in [Format::UnifiedText, Format::UnifiedBinary] {
            let f = Arc::new(fields(&b.schema(), &format));
            let rows = encode_batch(&b, &f, Tz::UTC).unwrap();
            assert_eq!(rows.len(), 2);
            assert!(rows.iter().all(|r| r.field_count == 3));
        }
        let f = Arc::new(fields(&b.schema(), &Format::UnifiedText));
        assert_eq!(f[2].format(), FieldFormat::Text);
    }
}
