//! Feeds arbitrary bytes to DataCell's CSV line format (`streamcell-csv`) as a receptor reads
//! them, then writes the rows back as an emitter does and reads what it wrote.
//!
//! Input: byte 0 picks the basket (`% 8`: 0-5 one column of INTEGER, DOUBLE, BOOLEAN,
//! TIMESTAMP, DATE, STRING; 6 all six in that order; 7 STRING, INTEGER, STRING), the rest is
//! cut at `\n` into lines. A line that is not UTF-8 is left out, as the receptor refuses it
//! before parsing (`adapter.rs`, `line_of`); every other line goes to `LineParser::push_line`
//! (blank and `#` lines too: the receptor's filter of those is not part of the format).
//!
//! Asserts, besides "no panic":
//! - a line that parses adds exactly one row (`rows()` goes up by one); one that does not adds
//!   none and comes back as `Error::BadLine` with a reason and the line (as given without a
//!   trailing `\r`, cut after at most 1 KiB with `…`);
//! - `finish` assembles a valid batch (`validate_full`) of as many rows as lines parsed, equal
//!   to the batch of a second parser given only those lines: a bad line left nothing behind
//!   in any column;
//! - round trip (the crate's documentation: what the parser read, it reads again to the same
//!   values): `write_rows` writes one `\n`-terminated line per row, each line parses again, the
//!   values are the same (a DOUBLE bit for bit, except that every NaN equals every NaN: the
//!   text is `NaN` whatever its sign), and writing those rows again gives the same text.
#![no_main]

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use libfuzzer_sys::fuzz_target;
use streamcell_csv::{write_rows, Error, LineParser};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let schema = schema(pick);
    let mut parser = LineParser::new(&schema);
    let mut good: Vec<&str> = Vec::new();
    for bytes in text.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(bytes) else {
            continue;
        };
        let before = parser.rows();
        match parser.push_line(line) {
            Ok(()) => {
                assert_eq!(parser.rows(), before + 1, "{line:?} parsed, rows");
                good.push(line);
            }
            Err(Error::BadLine {
                reason,
                line: shown,
            }) => {
                assert_eq!(parser.rows(), before, "{line:?} refused ({reason}), rows");
                assert!(!reason.is_empty(), "{line:?} refused without a reason");
                check_shown(line, &shown);
            }
            Err(e) => panic!("push_line({line:?}) failed with {e:?}, not a bad line"),
        }
    }
    let batch = finish(&mut parser, good.len());

    // Only the lines that parsed, in a parser of their own: the same batch.
    let mut alone = LineParser::new(&schema);
    for line in &good {
        if let Err(e) = alone.push_line(line) {
            panic!("{line:?} parsed among the others, not alone: {e}");
        }
    }
    let alone = finish(&mut alone, good.len());
    assert_same(&batch, &alone, "the good lines alone");

    // Round trip.
    let written = write(&batch);
    assert_eq!(
        written.matches('\n').count(),
        batch.num_rows(),
        "write_rows wrote {written:?} for {} rows",
        batch.num_rows()
    );
    let mut again = LineParser::new(&schema);
    for (row, line) in written.split_terminator('\n').enumerate() {
        if let Err(e) = again.push_line(line) {
            panic!(
                "row {row} (from {:?}) written as {line:?} does not parse again: {e}",
                good[row]
            );
        }
    }
    let again = finish(&mut again, good.len());
    assert_same(&batch, &again, "the rows written and read again");
    assert_eq!(
        write(&again),
        written,
        "the rows read again are written differently"
    );
});

/// The basket byte 0 picks.
fn schema(pick: u8) -> SchemaRef {
    let every = [
        DataType::Int64,
        DataType::Float64,
        DataType::Boolean,
        DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Date32,
        DataType::Utf8,
    ];
    let types: Vec<DataType> = match usize::from(pick % 8) {
        k @ 0..=5 => vec![every[k].clone()],
        6 => every.to_vec(),
        _ => vec![DataType::Utf8, DataType::Int64, DataType::Utf8],
    };
    Arc::new(Schema::new(
        types
            .into_iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("c{i}"), t, true))
            .collect::<Vec<_>>(),
    ))
}

/// A refused line is shown as given (without one trailing `\r`), or its first 1021-1024
/// bytes then `…` when longer than 1 KiB.
fn check_shown(line: &str, shown: &str) {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() <= 1024 {
        assert_eq!(shown, line, "a refused line is shown as given");
    } else {
        let head = shown.strip_suffix('…');
        assert!(
            head.is_some_and(|h| h.len() > 1020 && h.len() <= 1024 && line.starts_with(h)),
            "a refused line of {} bytes is shown as {shown:?}",
            line.len()
        );
    }
}

fn finish(parser: &mut LineParser, rows: usize) -> RecordBatch {
    let batch = match parser.finish() {
        Ok(b) => b,
        Err(e) => panic!("finish failed after {rows} good lines: {e}"),
    };
    assert_eq!(batch.num_rows(), rows, "rows in the batch");
    assert_eq!(parser.rows(), 0, "finish starts over");
    for c in batch.columns() {
        if let Err(e) = c.to_data().validate_full() {
            panic!("an invalid {} column: {e}", c.data_type());
        }
    }
    batch
}

fn write(batch: &RecordBatch) -> String {
    let mut out = String::new();
    if let Err(e) = write_rows(batch, &mut out) {
        panic!("write_rows failed on a batch the parser built: {e}");
    }
    out
}

/// The same values; a DOUBLE compared bit for bit, any NaN equal to any NaN.
fn assert_same(a: &RecordBatch, b: &RecordBatch, what: &str) {
    assert_eq!(a.schema(), b.schema(), "{what}: schema");
    assert_eq!(a.num_rows(), b.num_rows(), "{what}: rows");
    for (i, (x, y)) in a.columns().iter().zip(b.columns()).enumerate() {
        if x.data_type() == &DataType::Float64 {
            let (x, y) = (
                x.as_primitive::<Float64Type>(),
                y.as_primitive::<Float64Type>(),
            );
            for row in 0..x.len() {
                let same = match (x.is_valid(row), y.is_valid(row)) {
                    (true, true) => {
                        let (p, q) = (x.value(row), y.value(row));
                        p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan())
                    }
                    (v, w) => v == w,
                };
                assert!(same, "{what}: column {i} row {row}: {x:?} and {y:?}");
            }
        } else {
            assert!(
                x.as_ref() == y.as_ref(),
                "{what}: column {i}: {x:?} and {y:?}"
            );
        }
    }
}
