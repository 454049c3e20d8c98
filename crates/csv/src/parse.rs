//! Lines into a basket's Arrow builders.

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::timezone::Tz;
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_cast::parse::string_to_datetime;
use arrow_schema::{DataType, SchemaRef, TimeUnit};

use crate::{type_name, Error, Result};

/// Builds a basket's columns from CSV lines.
///
/// The schema's columns should be nullable (an empty field is NULL) and of the types the
/// format reads (the table in the crate's documentation); a column of another type is read as
/// text, which [`finish`](Self::finish) then refuses.
pub struct LineParser {
    schema: SchemaRef,
    columns: Vec<Box<dyn ArrayBuilder>>,
    rows: usize,
    fields: Vec<(usize, usize, bool)>,
    unquoted: String,
}

impl LineParser {
    /// A parser for rows of `schema`.
    pub fn new(schema: &SchemaRef) -> Self {
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
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Parses one line (without its `\n`; a trailing `\r` is ignored) into one row. A line that
    /// does not parse adds nothing and comes back as [`Error::BadLine`] (the only error this
    /// returns).
    pub fn push_line(&mut self, line: &str) -> Result<()> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let bad = |reason: String| Error::BadLine {
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

    /// The rows parsed so far as a batch; the parser starts over. Fails only as
    /// [`Error::Arrow`] (see there).
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(|b| b.finish()).collect();
        let rows = std::mem::take(&mut self.rows);
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
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
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            Box::new(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
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
            let days = string_to_datetime(&utc(), &format!("{trimmed}T00:00:00"))
                .ok()
                .map(|d| (d.timestamp().div_euclid(86_400)) as i32)
                .ok_or_else(|| not("a date (YYYY-MM-DD)"))?;
            Cell::Days(days)
        }
        _ => Cell::Text(text.to_string()),
    })
}

fn utc() -> Tz {
    // "+00:00" always parses.
    "+00:00"
        .parse()
        .unwrap_or_else(|_| unreachable!("UTC offset parses"))
}

/// Epoch microseconds from an integer, or from ISO-8601 text (`2024-01-02 03:04:05[.ffffff]`,
/// `T` or a space between date and time, UTC unless it says otherwise, e.g. `Z` or `+02:00`).
/// What a `TIMESTAMP` field holds, after its spaces are trimmed.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(us) = text.parse::<i64>() {
        return Some(us);
    }
    let dt = string_to_datetime(&utc(), text).ok()?;
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
