//! A basket's columns: the Arrow type of each SQL column type, the basket's schema, and a
//! query's batch cast to it. The line format itself (parsing lines into these columns,
//! writing them back) is the `streamcell-csv` crate.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use streamcell_csv::type_name;

use crate::error::{EngineError, Result};

/// The Arrow type a basket column of SQL type `t` has.
pub(super) fn column_type(t: &sqlparser::ast::DataType) -> Result<DataType> {
    use sqlparser::ast::DataType as S;
    Ok(match t {
        S::Int(_)
        | S::Integer(_)
        | S::BigInt(_)
        | S::SmallInt(_)
        | S::TinyInt(_)
        | S::Int64
        | S::Int32 => DataType::Int64,
        S::Float(_) | S::Double(_) | S::DoublePrecision | S::Real | S::Float64 | S::Decimal(_) => {
            DataType::Float64
        }
        S::Boolean | S::Bool => DataType::Boolean,
        S::Timestamp(_, _) | S::Datetime(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
        S::Date => DataType::Date32,
        S::String(_) | S::Text | S::Varchar(_) | S::CharacterVarying(_) | S::Char(_) => {
            DataType::Utf8
        }
        other => {
            return Err(EngineError::invalid(format!(
                "basket columns are INTEGER, DOUBLE, BOOLEAN, TIMESTAMP, DATE or STRING, not \
                 {other}"
            )))
        }
    })
}

/// A batch cast, column by column (by position), to a basket's schema.
pub(super) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(EngineError::invalid(format!(
            "the query gives {} columns, the basket has {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                return Ok(c.clone());
            }
            arrow::compute::cast(c, f.data_type()).map_err(|e| {
                EngineError::invalid(format!(
                    "column {}: cannot store {} as {}: {e}",
                    f.name(),
                    c.data_type(),
                    type_name(f.data_type())
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// An all-columns-nullable schema for a basket.
pub(super) fn schema_of(columns: &[(String, DataType)]) -> SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(
        columns
            .iter()
            .map(|(n, t)| arrow::datatypes::Field::new(n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}
