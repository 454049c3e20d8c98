//! The DataCell wire format: one event per `\n`-terminated line, fields separated by `,` in
//! the basket's column order, an empty field is NULL, a field may be double-quoted (`""` for a
//! quote inside). Receptors parse lines into a basket's Arrow builders ([`LineParser`]);
//! emitters write a batch's rows back as lines ([`write_rows`]).
//!
//! `TIMESTAMP` columns accept ISO-8601 text (`2024-01-02 03:04:05[.ffffff]`, `T` or space, an
//! optional `Z`) or an integer count of epoch microseconds (what the sensor sends); emitters
//! write them as epoch microseconds, so an actuator can measure latency from them.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Float64Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
};

use crate::error::{EngineError, Result};

/// A line that did not parse, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadLine {
    /// The reason.
    pub reason: String,
    /// The line as received (cut at 1 KiB).
    pub line: String,
}

/// Builds a basket's columns from CSV lines.
pub(super) struct LineParser {
    schema: SchemaRef,
    columns: Vec<Box<dyn ArrayBuilder>>,
    rows: usize,
    fields: Vec<(usize, usize, bool)>,
    unquoted: String,
}

impl LineParser {
    /// A parser for rows of `schema` (types as [`column_type`] gives them).
    pub(super) fn new(schema: &SchemaRef) -> Self {
        LineParser {
            schema: schema.clone(),
            columns: schema
                .fields()
                .iter()
                .map(|f| new_builder(f.data_type()))
                .collect(),
            rows: 0,
            fields: Vec::new(),
            unquoted: String::new(),
        }
    }

    /// Rows parsed since the last [`finish`](Self::finish).
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// Parses one line (without its `\n`; a trailing `\r` is ignored). A line that does not
    /// parse adds nothing and comes back as a [`BadLine`].
    pub(super) fn push_line(&mut self, line: &str) -> std::result::Result<(), BadLine> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let bad = |reason: String| BadLine {
            reason,
            line: cut(line),
        };
        split_fields(line, &mut self.fields).map_err(|r| bad(r.to_string()))?;
        if self.fields.len() != self.columns.len() {
            return Err(bad(format!(
                "{} fields, the basket has {} columns",
                self.fields.len(),
                self.columns.len()
            )));
        }
        // Check every field first, so a bad line leaves no half row behind.
        let mut values: Vec<Cell> = Vec::with_capacity(self.fields.len());
        for (i, &(start, end, quoted)) in self.fields.iter().enumerate() {
            let raw = &line[start..end];
            let text: &str = if quoted {
                self.unquoted.clear();
                self.unquoted.push_str(&raw.replace("\"\"", "\""));
                &self.unquoted
            } else {
                raw
            };
            let field = self.schema.field(i);
            let cell = parse_cell(field.data_type(), text, quoted).map_err(|e| {
                bad(format!(
                    "column {} ({}): {e}",
                    field.name(),
                    type_name(field.data_type())
                ))
            })?;
            values.push(cell);
        }
        for (b, v) in self.columns.iter_mut().zip(values) {
            append(b.as_mut(), v);
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows parsed so far as a batch; the parser starts over.
    pub(super) fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(|b| b.finish()).collect();
        let rows = std::mem::take(&mut self.rows);
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// A parsed field.
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Micros(i64),
    Days(i32),
}

fn new_builder(t: &DataType) -> Box<dyn ArrayBuilder> {
    match t {
        DataType::Int64 => Box::new(Int64Builder::new()),
        DataType::Float64 => Box::new(Float64Builder::new()),
        DataType::Boolean => Box::new(BooleanBuilder::new()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Box::new(TimestampMicrosecondBuilder::new())
        }
        DataType::Date32 => Box::new(Date32Builder::new()),
        _ => Box::new(StringBuilder::new()),
    }
}

fn append(b: &mut dyn ArrayBuilder, v: Cell) {
    let any = b.as_any_mut();
    if let Some(b) = any.downcast_mut::<Int64Builder>() {
        b.append_option(match v {
            Cell::Int(i) => Some(i),
            _ => None,
        });
    } else if let Some(b) = any.downcast_mut::<Float64Builder>() {
        b.append_option(match v {
            Cell::Float(f) => Some(f),
            _ => None,
        });
    } else if let Some(b) = any.downcast_mut::<BooleanBuilder>() {
        b.append_option(match v {
            Cell::Bool(x) => Some(x),
            _ => None,
        });
    } else if let Some(b) = any.downcast_mut::<TimestampMicrosecondBuilder>() {
        b.append_option(match v {
            Cell::Micros(x) => Some(x),
            _ => None,
        });
    } else if let Some(b) = any.downcast_mut::<Date32Builder>() {
        b.append_option(match v {
            Cell::Days(x) => Some(x),
            _ => None,
        });
    } else if let Some(b) = any.downcast_mut::<StringBuilder>() {
        match v {
            Cell::Text(s) => b.append_value(s),
            _ => b.append_null(),
        }
    }
}

fn parse_cell(t: &DataType, text: &str, quoted: bool) -> std::result::Result<Cell, String> {
    if text.is_empty() && !quoted {
        return Ok(Cell::Null);
    }
    let trimmed = text.trim();
    let not = |what: &str| format!("{text:?} is not {what}");
    Ok(match t {
        DataType::Int64 => Cell::Int(trimmed.parse().map_err(|_| not("an integer"))?),
        DataType::Float64 => Cell::Float(trimmed.parse().map_err(|_| not("a number"))?),
        DataType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Cell::Bool(true),
            "false" | "f" | "0" => Cell::Bool(false),
            _ => return Err(not("a boolean")),
        },
        DataType::Timestamp(TimeUnit::Microsecond, _) => Cell::Micros(
            parse_timestamp(trimmed)
                .ok_or_else(|| not("a timestamp (ISO-8601 or integer epoch microseconds)"))?,
        ),
        DataType::Date32 => {
            let days = arrow::compute::kernels::cast_utils::string_to_datetime(
                &chrono_utc(),
                &format!("{trimmed}T00:00:00"),
            )
            .ok()
            .map(|d| (d.timestamp().div_euclid(86_400)) as i32)
            .ok_or_else(|| not("a date (YYYY-MM-DD)"))?;
            Cell::Days(days)
        }
        _ => Cell::Text(text.to_string()),
    })
}

fn chrono_utc() -> arrow::array::timezone::Tz {
    // "+00:00" always parses.
    "+00:00"
        .parse()
        .unwrap_or_else(|_| unreachable!("UTC offset parses"))
}

/// Epoch microseconds from an integer, or from ISO-8601 text (UTC unless it says otherwise).
pub(super) fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(us) = text.parse::<i64>() {
        return Some(us);
    }
    let dt = arrow::compute::kernels::cast_utils::string_to_datetime(&chrono_utc(), text).ok()?;
    Some(dt.timestamp_micros())
}

/// Splits a line into `(start, end, quoted)` field ranges (quotes excluded).
fn split_fields(
    line: &str,
    out: &mut Vec<(usize, usize, bool)>,
) -> std::result::Result<(), &'static str> {
    out.clear();
    let bytes = line.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'"') {
            let start = i + 1;
            let mut j = start;
            loop {
                match bytes.get(j) {
                    None => return Err("a quoted field is not closed"),
                    Some(b'"') if bytes.get(j + 1) == Some(&b'"') => j += 2,
                    Some(b'"') => break,
                    Some(_) => j += 1,
                }
            }
            out.push((start, j, true));
            i = j + 1;
            match bytes.get(i) {
                None => return Ok(()),
                Some(b',') => i += 1,
                Some(_) => return Err("text after a quoted field"),
            }
        } else {
            let end = line[i..].find(',').map_or(line.len(), |p| i + p);
            out.push((i, end, false));
            if end == line.len() {
                return Ok(());
            }
            i = end + 1;
        }
    }
}

fn cut(line: &str) -> String {
    if line.len() <= 1024 {
        return line.to_string();
    }
    let mut end = 1024;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// The SQL name of a basket column type.
pub(super) fn type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Int64 => "INTEGER",
        DataType::Float64 => "DOUBLE",
        DataType::Boolean => "BOOLEAN",
        DataType::Timestamp(_, _) => "TIMESTAMP",
        DataType::Date32 => "DATE",
        _ => "STRING",
    }
}

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

/// Writes every row of `batch` as a CSV line (NULL as an empty field; text with `,`, `"` or a
/// line break quoted).
pub(super) fn write_rows(batch: &RecordBatch, out: &mut String) -> Result<()> {
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
            let f = arrow::util::display::ArrayFormatter::try_new(a, &Default::default())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SchemaRef {
        schema_of(&[
            ("id".into(), DataType::Int64),
            (
                "tag".into(),
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            ("name".into(), DataType::Utf8),
            ("x".into(), DataType::Float64),
        ])
    }

    #[test]
    fn lines_parse_into_columns_and_write_back() {
        let mut p = LineParser::new(&schema());
        p.push_line("1,1700000000000000,abc,1.5").unwrap();
        p.push_line("2,2024-01-02 03:04:05.25,\"a,\"\"b\"\"\",\r")
            .unwrap();
        p.push_line(",,,").unwrap();
        let b = p.finish().unwrap();
        assert_eq!(b.num_rows(), 3);
        let mut out = String::new();
        write_rows(&b, &mut out).unwrap();
        assert_eq!(
            out,
            "1,1700000000000000,abc,1.5\n2,1704164645250000,\"a,\"\"b\"\"\",\n,,,\n"
        );
    }

    #[test]
    fn bad_lines_say_why_and_leave_nothing() {
        let mut p = LineParser::new(&schema());
        let e = p.push_line("1,2,3").unwrap_err();
        assert!(
            e.reason.contains("3 fields, the basket has 4 columns"),
            "{e:?}"
        );
        let e = p.push_line("x,2,a,1").unwrap_err();
        assert!(e.reason.contains("column id (INTEGER)"), "{e:?}");
        let e = p.push_line("1,yesterday,a,1").unwrap_err();
        assert!(e.reason.contains("column tag (TIMESTAMP)"), "{e:?}");
        let e = p.push_line("1,2,\"open,1").unwrap_err();
        assert!(e.reason.contains("not closed"), "{e:?}");
        assert_eq!(p.rows(), 0);
        assert_eq!(p.finish().unwrap().num_rows(), 0);
    }
}
