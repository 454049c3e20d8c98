//! A batch's rows as lines.

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::display::ArrayFormatter;
use arrow_schema::{DataType, TimeUnit};

use crate::Result;

/// Writes every row of `batch` as a CSV line ending in `\n` (NULL as an empty field; text
/// with `,`, `"` or a line break quoted, and the empty string as `""`). Fails only as
/// [`Error::Arrow`](crate::Error::Arrow), for a column of a type Arrow cannot display; the rows
/// before it are in `out` then.
pub fn write_rows(batch: &RecordBatch, out: &mut String) -> Result<()> {
    let columns: Vec<&ArrayRef> = batch.columns().iter().collect();
    for row in 0..batch.num_rows() {
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_cell(c.as_ref(), row, out)?;
        }
        out.push('\n');
    }
    Ok(())
}

fn write_cell(a: &dyn Array, row: usize, out: &mut String) -> Result<()> {
    if a.is_null(row) {
        return Ok(());
    }
    let _ = match a.data_type() {
        DataType::Int64 => write!(out, "{}", a.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => write!(out, "{}", a.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => write!(out, "{}", a.as_boolean().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            write!(
                out,
                "{}",
                a.as_primitive::<TimestampMicrosecondType>().value(row)
            )
        }
        DataType::Date32 => {
            let days = a.as_primitive::<Date32Type>().value(row);
            match Date32Type::to_naive_date_opt(days) {
                Some(d) => write!(out, "{d}"),
                None => write!(out, "{days}"),
            }
        }
        DataType::Utf8 => {
            let s = a.as_string::<i32>().value(row);
            quote_into(s, out);
            Ok(())
        }
        _ => {
            // Anything else a query produced: Arrow's display form.
            let f = ArrayFormatter::try_new(a, &Default::default())?;
            quote_into(&f.value(row).to_string(), out);
            Ok(())
        }
    };
    Ok(())
}

fn quote_into(s: &str, out: &mut String) {
    if s.is_empty() || s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}
