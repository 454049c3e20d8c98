//! Feeds arbitrary text to StreamCell's SQL front end (`streamcell-sql`): `parse` (what the
//! engine runs on every statement from gRPC, HTTP and the PostgreSQL door), `split` (what the
//! PostgreSQL door runs first, handing each piece to the engine) and `check_query_text` (the
//! limits check before text goes to another parser).
//!
//! The input is taken as UTF-8 when it is valid, else converted lossily (invalid sequences
//! become U+FFFD), so every input is SQL text. The calls run on a thread with the stack the
//! engine gives its query threads (`limits::THREAD_STACK_BYTES`, 16 MiB), as the depth limits
//! assume; the parsed statements are also formatted (`Debug`) and dropped there.
//!
//! Asserts: nothing panics or overflows the stack (a stack overflow aborts the process and is
//! reported as a crash); `parse` never returns an empty list; when `parse` accepts the text,
//! `split` accepts it too and cuts it into as many pieces as `parse` found statements, and
//! each piece parses on its own to exactly the statement `parse` found in its place (the
//! PostgreSQL door relies on this: it runs each piece separately).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcell_sql::limits::THREAD_STACK_BYTES;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(THREAD_STACK_BYTES)
            .spawn_scoped(s, || check(&text))
            .expect("spawning the parser thread")
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
});

fn check(text: &str) {
    let _ = streamcell_sql::check_query_text(text);
    let split = streamcell_sql::split(text);
    let parsed = streamcell_sql::parse(text);
    let Ok(statements) = parsed else {
        return;
    };
    assert!(
        !statements.is_empty(),
        "parse returned no statement and no error"
    );
    let _ = format!("{statements:?}");
    let pieces = match split {
        Ok(p) => p,
        Err(e) => panic!("parse accepts the text but split refuses it: {e}"),
    };
    assert_eq!(
        pieces.len(),
        statements.len(),
        "split cut {pieces:?} where parse found {} statements",
        statements.len()
    );
    for (piece, whole) in pieces.iter().zip(&statements) {
        match streamcell_sql::parse(piece) {
            Ok(alone) => assert!(
                alone.len() == 1 && &alone[0] == whole,
                "the piece {piece:?} parses to {alone:?} on its own, in the whole text to {whole:?}"
            ),
            Err(e) => panic!("the piece {piece:?} that split cut does not parse on its own: {e}"),
        }
    }
}
