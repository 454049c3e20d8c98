//! DataCell's CSV line format, the text receptors read and emitters write (`docs/datacell.md`).
//!
//! One event per `\n`-terminated line; fields separated by `,` in the basket's column order;
//! an empty field is NULL; a field may be double-quoted, with `""` for a quote inside (an
//! empty quoted field `""` is the empty string, not NULL). A line given without its `\n` may
//! end in `\r`, which is ignored.
//!
//! Column types (a basket's columns, by their Arrow type; [`type_name`] gives the SQL name):
//!
//! | Arrow | SQL | read | written |
//! |---|---|---|---|
//! | `Int64` | `INTEGER` | a decimal integer, spaces around it ignored | decimal |
//! | `Float64` | `DOUBLE` | Rust's `f64` syntax (`1.5`, `-2e3`, `inf`, `NaN`), spaces ignored | the shortest text that reads back to the same value |
//! | `Boolean` | `BOOLEAN` | `true`/`t`/`1`, `false`/`f`/`0`, any case, spaces ignored | `true`, `false` |
//! | `Timestamp(Microsecond, _)` | `TIMESTAMP` | [`parse_timestamp`]: integer epoch microseconds or ISO-8601 text (UTC unless it names an offset, whatever the column's time zone), spaces ignored | integer epoch microseconds |
//! | `Date32` | `DATE` | `YYYY-MM-DD`, spaces ignored | `YYYY-MM-DD` |
//! | `Utf8` | `STRING` | the field as it is (unquoted: spaces kept) | quoted when empty or holding `,`, `"`, `\r` or `\n` |
//!
//! Timestamps are written as epoch microseconds so that an actuator can measure latency from
//! them. [`LineParser`] reads lines into a basket's Arrow builders; a line that does not parse
//! adds nothing. [`write_rows`] writes a batch's rows back as lines: what the parser read, it
//! reads again to the same values. (Text holding a line break is written quoted, but a reader
//! that splits lines at `\n`, as the receptors do, cannot read it back; such text never comes
//! from a line split at `\n`.) Columns of other types are written in Arrow's display form,
//! quoted as text.
//!
//! This crate depends on Arrow alone (not on DataFusion or the engine), so it builds in
//! seconds: the fuzz target `datacell_csv` (`docs/fuzzing.md`) uses it directly.

mod parse;
mod write;

pub use arrow_schema::ArrowError;
use arrow_schema::DataType;

pub use parse::{parse_timestamp, LineParser};
pub use write::write_rows;

/// What can go wrong reading or writing lines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line that did not parse ([`LineParser::push_line`]); it added nothing.
    #[error("{reason}: {line}")]
    BadLine {
        /// Why, naming the column and its SQL type when a field is at fault.
        reason: String,
        /// The line as received (cut at 1 KiB, then `…`).
        line: String,
    },
    /// Arrow refused to assemble or format a batch: [`LineParser::finish`] for a schema with a
    /// column type the format does not read (its fields are read as text), or a non-nullable
    /// column given an empty field; [`write_rows`] for a column Arrow cannot display.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The SQL name of a basket column type (`STRING` for any type the format reads as text).
pub fn type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Int64 => "INTEGER",
        DataType::Float64 => "DOUBLE",
        DataType::Boolean => "BOOLEAN",
        DataType::Timestamp(_, _) => "TIMESTAMP",
        DataType::Date32 => "DATE",
        _ => "STRING",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;
    use arrow_schema::{Field, Schema, SchemaRef, TimeUnit};

    use super::*;

    fn schema_of(columns: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn schema() -> SchemaRef {
        schema_of(&[
            ("id", DataType::Int64),
            ("tag", DataType::Timestamp(TimeUnit::Microsecond, None)),
            ("name", DataType::Utf8),
            ("x", DataType::Float64),
        ])
    }

    fn reason(e: Error) -> String {
        match e {
            Error::BadLine { reason, .. } => reason,
            other => panic!("not a bad line: {other:?}"),
        }
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
        let e = reason(p.push_line("1,2,3").unwrap_err());
        assert!(e.contains("3 fields, the basket has 4 columns"), "{e}");
        let e = reason(p.push_line("x,2,a,1").unwrap_err());
        assert!(e.contains("column id (INTEGER)"), "{e}");
        let e = reason(p.push_line("1,yesterday,a,1").unwrap_err());
        assert!(e.contains("column tag (TIMESTAMP)"), "{e}");
        let e = reason(p.push_line("1,2,\"open,1").unwrap_err());
        assert!(e.contains("not closed"), "{e}");
        assert_eq!(p.rows(), 0);
        assert_eq!(p.finish().unwrap().num_rows(), 0);
    }

    #[test]
    fn a_bad_line_shows_as_reason_then_line_cut_at_1_kib() {
        let mut p = LineParser::new(&schema());
        let e = p.push_line("1,2,3").unwrap_err();
        assert_eq!(e.to_string(), "3 fields, the basket has 4 columns: 1,2,3");
        let long = "é".repeat(1000);
        match p.push_line(&long).unwrap_err() {
            Error::BadLine { line, .. } => {
                assert_eq!(line, format!("{}…", "é".repeat(512)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_type_reads_and_writes() {
        let s = schema_of(&[
            ("i", DataType::Int64),
            ("f", DataType::Float64),
            ("b", DataType::Boolean),
            ("t", DataType::Timestamp(TimeUnit::Microsecond, None)),
            ("d", DataType::Date32),
            ("s", DataType::Utf8),
        ]);
        let mut p = LineParser::new(&s);
        p.push_line(" -7 , 2.5e1 , T ,2024-01-02T00:00:01Z, 2024-02-29 , a b ")
            .unwrap();
        p.push_line("\"1\",-0,0,1,1970-01-01,\"\"").unwrap();
        let b = p.finish().unwrap();
        let mut out = String::new();
        write_rows(&b, &mut out).unwrap();
        assert_eq!(
            out,
            "-7,25,true,1704153601000000,2024-02-29, a b \n1,-0,false,1,1970-01-01,\"\"\n"
        );
    }

    #[test]
    fn a_timestamp_column_may_have_a_time_zone() {
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into()));
        let mut p = LineParser::new(&schema_of(&[("t", tz.clone())]));
        p.push_line("1970-01-01 02:00:00+02:00").unwrap();
        p.push_line("1970-01-01 00:00:01").unwrap();
        let b = p.finish().unwrap();
        assert_eq!(b.column(0).data_type(), &tz);
        let t = b.column(0).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(t.values().to_vec(), vec![0, 1_000_000]);
    }

    #[test]
    fn a_column_of_another_type_is_read_as_text_and_refused_at_finish() {
        let mut p = LineParser::new(&schema_of(&[("x", DataType::Int32)]));
        p.push_line("12").unwrap();
        assert!(matches!(p.finish(), Err(Error::Arrow(_))));
    }

    #[test]
    fn type_names_are_the_sql_ones() {
        assert_eq!(type_name(&DataType::Date32), "DATE");
        assert_eq!(type_name(&DataType::LargeUtf8), "STRING");
    }
}
