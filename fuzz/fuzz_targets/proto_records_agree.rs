//! Feeds arbitrary bytes, as a decompressed `BatchHStreamRecords`, to the two decoders that
//! read a stored batch's records (`streamcell-proto`): `records::visit_records`, the borrowing
//! walk the engine's push and persistent queries use and, since the fix of K3, the server's
//! append check (`streamcell-service`, `batch::check`: a batch it reads is stored), and
//! prost's `BatchHStreamRecords::decode`, which subscriptions, reads and
//! `records::decode_payload` use on the same stored bytes.
//!
//! Asserts: nothing panics; whatever `visit_records` accepts, prost decodes too, to the same
//! records in the same order, each with the flag prost's accessor gives (`RAW` for a record
//! without a header, `JSON` for a value outside the enum) and the same payload; and whatever
//! prost decodes but `visit_records` refuses holds one of the two forms it documents as
//! refused (a group, `attributes` not length-delimited), found by an independent walk here,
//! and is refused for that reason. A batch the server stores but the engine cannot walk, or
//! walks to other records, would fail or change every query that reads it (K3 in
//! `docs/fuzzing.md`, fixed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use streamcell_proto::api::h_stream_record_header::Flag;
use streamcell_proto::api::BatchHStreamRecords;
use streamcell_proto::records::{self, RecordsProblem};

fuzz_target!(|data: &[u8]| {
    let mut seen: Vec<(Flag, &[u8])> = Vec::new();
    let walked = records::visit_records(data, |flag, payload| seen.push((flag, payload)));
    let batch = match BatchHStreamRecords::decode(data) {
        Ok(batch) => batch,
        Err(e) => {
            assert!(
                walked.is_err(),
                "visit_records reads {} records from a batch prost refuses ({e})",
                seen.len()
            );
            return;
        }
    };
    let want: Vec<(Flag, &[u8])> = batch
        .records
        .iter()
        .map(|r| {
            (
                r.header.as_ref().map_or(Flag::Raw, |h| h.flag()),
                &r.payload[..],
            )
        })
        .collect();
    match walked {
        Ok(()) => assert_eq!(seen, want, "visit_records and prost see different records"),
        Err(e) => {
            assert!(
                matches!(
                    e.problem,
                    RecordsProblem::Group
                        | RecordsProblem::WrongWireType {
                            field: "attributes",
                            ..
                        }
                ),
                "prost decodes {} records but visit_records refuses the batch: {e}",
                want.len()
            );
            assert!(
                refused_form(data, 0),
                "visit_records refuses ({e}) a batch without a group or a non-length-delimited \
                 `attributes` on its path"
            );
        }
    }
});

/// Whether the walk `visit_records` makes (batch, record, header, attribute entry) meets a
/// form it refuses although prost reads it: a field of wire type 3 or 4 (a deprecated group,
/// which prost skips), or the header's `attributes` (field 2) with another wire type than
/// length-delimited (prost 0.14's map decoding does not check it and reads the value as a
/// length). `depth` 0: the batch, 1: a record, 2: a header, 3: an attribute entry.
fn refused_form(mut b: &[u8], depth: u8) -> bool {
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else {
            return false;
        };
        let (field, wire) = (key >> 3, key & 7);
        if depth == 2 && field == 2 && wire != 2 {
            return true;
        }
        match wire {
            0 => {
                if varint(&mut b).is_none() {
                    return false;
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if b.len() < n {
                    return false;
                }
                b = &b[n..];
            }
            2 => {
                let Some(len) = varint(&mut b).and_then(|l| usize::try_from(l).ok()) else {
                    return false;
                };
                if len > b.len() {
                    return false;
                }
                let (v, rest) = b.split_at(len);
                b = rest;
                let inner = matches!((depth, field), (0, 1) | (1, 1) | (2, 2));
                if inner && refused_form(v, depth + 1) {
                    return true;
                }
            }
            3 | 4 => return true,
            _ => return false,
        }
    }
    false
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&x, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(x & 0x7f) << (7 * i);
        if x < 0x80 {
            return Some(v);
        }
    }
    None
}
