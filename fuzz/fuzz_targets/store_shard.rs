//! Feeds a whole shard directory made of arbitrary files to the store's recovery
//! (`streamcell-store`: `Shard::open`, which reads segment files, index files, `ACKED` and
//! `TRIM`).
//!
//! Input format (`docs/fuzzing.md`): one option byte (bit 0: the shard has a retention, which
//! changes how a missing front is detected), then up to 8 files, each
//! `tag:u8, name:u64 LE, len:u32 LE, len bytes` (cut short at the end of the input). The low 3
//! bits of `tag` give the kind: 0 a segment `<name>.log`, 1 an index `<name>.idx`, 2 `ACKED`,
//! 3 `TRIM`, 4 `ACKED.tmp`, 5 `<name>.log.tmp`, other kinds are skipped. Bit 7 of `tag` asks for
//! the file's checksums to be recomputed (`fix_segment`, `fix_index`, `fix_marker`, `fix_trim`),
//! so that mutated files pass their CRC32C checks. Seeds are real shard directories written by
//! the store (`seeds` binary).
//!
//! Asserts: nothing panics, however the files disagree (gaps between segments, index files
//! without segments or with stale lengths, a marker ahead of the log, a trim point past it);
//! reads keep the guarantees `probe_shard` checks; a directory that recovered once recovers
//! again. When no index file is given, also that no served batch lies in a range `damage()`
//! calls unreadable and that the second start serves the same batches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcell_fuzz::{
    fix_index, fix_marker, fix_segment, fix_trim, has_huge_seq_frame, has_max_generation_slot,
    open_twice, scratch_dir, skip_known, SHARD_ID,
};
use streamcell_store::marker::MARKER_FILE;
use streamcell_store::segment;

const MAX_FILES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&opts, mut rest)) = data.split_first() else {
        return;
    };
    let retention_secs = if opts & 1 == 1 { 3600 } else { 0 };
    let tmp = scratch_dir();
    let dir = tmp.path().join(SHARD_ID.to_string());
    std::fs::create_dir(&dir).expect("shard directory");
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut strict = true;
    for _ in 0..MAX_FILES {
        if rest.len() < 13 {
            break;
        }
        let tag = rest[0];
        let name = u64::from_le_bytes(rest[1..9].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(rest[9..13].try_into().expect("4 bytes")) as usize;
        rest = &rest[13..];
        let mut bytes = rest[..len.min(rest.len())].to_vec();
        rest = &rest[bytes.len()..];
        let fix = tag & 0x80 != 0;
        let file = match tag & 7 {
            0 => {
                if fix {
                    fix_segment(&mut bytes);
                }
                if skip_known() && has_huge_seq_frame(&bytes) {
                    return; // K4, K5 (docs/fuzzing.md)
                }
                segments.push(bytes.clone());
                segment::segment_file_name(name)
            }
            1 => {
                if fix {
                    fix_index(&mut bytes);
                }
                strict = false;
                segment::index_file_name(name)
            }
            2 => {
                if fix {
                    fix_marker(&mut bytes);
                }
                if skip_known() && has_max_generation_slot(&bytes) {
                    return; // K6 (docs/fuzzing.md)
                }
                MARKER_FILE.to_string()
            }
            3 => {
                if fix {
                    fix_trim(&mut bytes);
                }
                "TRIM".to_string()
            }
            4 => format!("{MARKER_FILE}.tmp"),
            5 => format!("{}.tmp", segment::segment_file_name(name)),
            _ => continue,
        };
        std::fs::write(dir.join(file), &bytes).expect("writing a shard file");
    }
    let files: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
    open_twice(&dir, retention_secs, &files, strict);
});
