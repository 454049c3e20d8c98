//! The HStream SQL dialect as the seed and the HStreamDB reference write it, plus the DataCell
//! calls, and errors that point at the line and column of the problem.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

use sqlparser::ast::{self as sql, Expr, SetExpr, TableFactor};
use streamcell_sql::{parse, ObjectKind, SqlError, Statement};

fn one(text: &str) -> Statement {
    let mut v = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(v.len(), 1, "{text}");
    v.remove(0)
}

fn syntax_error(text: &str) -> (String, u64, u64) {
    match parse(text) {
        Err(SqlError::Syntax {
            message,
            line,
            column,
        }) => (message, line, column),
        other => panic!("{text}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn the_seed_session_parses() {
    // The "Cliente CLI SQL" session of the HStreamDB seed, verbatim.
    let session = r#"
INSERT INTO info (product, category) VALUES ("Apple", "Fruit");
INSERT INTO visit (product, user, length) VALUES ("Apple", "Alice", 10);
INSERT INTO visit (product, user, length) VALUES ("Apple", "Bob", 20);
INSERT INTO visit (product, user, length) VALUES ("Apple", "Caleb", 10);
SELECT * FROM info EMIT CHANGES;
SELECT product, MAX(length) AS max_len FROM visit GROUP BY product EMIT CHANGES;
"#;
    let stmts = parse(session).expect("seed session");
    assert_eq!(stmts.len(), 6);
    // Double-quoted values are strings there, not identifiers.
    let Statement::Sql(insert) = &stmts[0] else {
        panic!("insert: {:?}", stmts[0])
    };
    let sql::Statement::Insert(insert) = insert.as_ref() else {
        panic!()
    };
    let SetExpr::Values(values) = insert.source.as_ref().expect("values").body.as_ref() else {
        panic!()
    };
    let row: Vec<String> = values.rows[0].iter().map(|e| e.to_string()).collect();
    assert_eq!(row, vec!["'Apple'", "'Fruit'"]);
    let Statement::Sql(insert) = &stmts[1] else {
        panic!()
    };
    assert!(insert.to_string().contains("'Alice', 10"), "{insert}");
    match &stmts[5] {
        Statement::Select(s) => {
            assert!(s.emit_changes);
            assert!(s.query.to_string().contains("MAX(length) AS max_len"));
            assert!(s.query.to_string().contains("GROUP BY product"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pull_and_push_selects() {
    let Statement::Select(pull) = one("SELECT * FROM v WHERE x > 1") else {
        panic!()
    };
    assert!(!pull.emit_changes);
    let Statement::Select(push) = one("select a, count(*) from s group by a emit changes ;") else {
        panic!()
    };
    assert!(push.emit_changes);
    // EMIT is not swallowed as an alias.
    assert!(!push.query.to_string().to_lowercase().contains("emit"));
}

#[test]
fn windows_are_table_functions() {
    let Statement::Select(s) = one(
        "SELECT auction, COUNT(*), MAX(price), window_start FROM TUMBLE(bids, INTERVAL 10 SECOND) GROUP BY auction EMIT CHANGES",
    ) else {
        panic!()
    };
    let SetExpr::Select(body) = s.query.body.as_ref() else {
        panic!()
    };
    match &body.from[0].relation {
        TableFactor::Table { name, args, .. } => {
            assert_eq!(name.to_string().to_uppercase(), "TUMBLE");
            assert_eq!(args.as_ref().map(|a| a.args.len()), Some(2));
        }
        other => panic!("{other:?}"),
    }
    one("SELECT * FROM HOP(s, INTERVAL '10' SECOND, INTERVAL '5' SECOND) EMIT CHANGES");
    one("SELECT * FROM SESSION(s, INTERVAL 30 SECOND) EMIT CHANGES");
}

#[test]
fn joins_within_an_interval() {
    let Statement::Select(s) = one(
        "SELECT a.x, b.y FROM a INNER JOIN b ON a.k = b.k WITHIN (INTERVAL 1 MINUTE) \
         LEFT JOIN c ON a.k = c.k WITHIN (INTERVAL '5' SECOND) EMIT CHANGES",
    ) else {
        panic!()
    };
    assert_eq!(s.within.len(), 2);
    assert!(matches!(s.within[0], Expr::Interval(_)));
    let SetExpr::Select(body) = s.query.body.as_ref() else {
        panic!()
    };
    assert_eq!(body.from[0].joins.len(), 2);
    let (msg, line, col) =
        syntax_error("SELECT * FROM a JOIN b ON a.k = b.k WITHIN (INTERVAL 1 MINUTE EMIT CHANGES");
    assert!(msg.contains("WITHIN"), "{msg}");
    assert_eq!((line, col), (1, 44));
}

#[test]
fn create_stream_forms() {
    let Statement::CreateStream(c) = one("CREATE STREAM demo") else {
        panic!()
    };
    assert_eq!(c.name.to_string(), "demo");
    assert!(c.columns.is_empty() && c.as_select.is_none());
    let Statement::CreateStream(c) = one(
        "CREATE STREAM weather (city STRING, temperature FLOAT, at TIMESTAMP) WITH (REPLICATE = 3, DURATION = INTERVAL 7 DAY)",
    ) else {
        panic!()
    };
    assert_eq!(c.columns.len(), 3);
    assert_eq!(c.replicate, Some(3));
    assert!(c.duration.is_some());
    let Statement::CreateStream(c) = one(
        "CREATE STREAM hot AS SELECT city, temperature FROM weather WHERE temperature > 30 WITH (REPLICATE = 1)",
    ) else {
        panic!()
    };
    let q = c.as_select.expect("as select");
    assert!(q.query.to_string().contains("temperature > 30"));
    assert_eq!(c.replicate, Some(1));
    let (msg, ..) = syntax_error("CREATE STREAM s WITH (REPLICAS = 3)");
    assert!(msg.contains("REPLICAS"), "{msg}");
    let (msg, ..) = syntax_error("CREATE STREAM s WITH (REPLICATE = 0)");
    assert!(msg.contains("positive"), "{msg}");
}

#[test]
fn views_inserts_drops_shows_and_query_control() {
    assert!(matches!(
        one("CREATE VIEW v AS SELECT a, SUM(b) FROM s GROUP BY a"),
        Statement::CreateView { .. }
    ));
    match one(r#"INSERT INTO s VALUES '{"temperature": 22, "city": "Vigo"}'"#) {
        Statement::InsertJson { stream, json } => {
            assert_eq!(stream.to_string(), "s");
            assert!(json.contains("Vigo"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        one(r#"INSERT INTO s VALUES '{"a": 1}' :: JSONB"#),
        Statement::InsertJson { .. }
    ));
    assert!(matches!(
        one("INSERT INTO hot SELECT * FROM weather"),
        Statement::Sql(_)
    ));
    let name = |n: &str| sql::ObjectName::from(vec![sql::Ident::new(n)]);
    for (text, kind, object, if_exists) in [
        ("DROP STREAM s", ObjectKind::Stream, "s", false),
        ("DROP STREAM s IF EXISTS", ObjectKind::Stream, "s", true),
        ("DROP VIEW IF EXISTS v", ObjectKind::View, "v", true),
        ("drop query q1", ObjectKind::Query, "q1", false),
    ] {
        let expected = Statement::Drop {
            kind,
            name: name(object),
            if_exists,
        };
        assert_eq!(one(text), expected, "{text}");
    }
    assert_eq!(one("SHOW STREAMS"), Statement::Show(ObjectKind::Stream));
    assert_eq!(one("show queries"), Statement::Show(ObjectKind::Query));
    assert_eq!(one("SHOW VIEWS"), Statement::Show(ObjectKind::View));
    assert_eq!(one("TERMINATE ALL"), Statement::Terminate(None));
    assert!(matches!(
        one("TERMINATE QUERY q1"),
        Statement::Terminate(Some(_))
    ));
    assert!(matches!(one("PAUSE QUERY q1"), Statement::Pause(_)));
    assert!(matches!(one("RESUME QUERY q1"), Statement::Resume(_)));
    match one("EXPLAIN SELECT * FROM s EMIT CHANGES") {
        Statement::Explain(inner) => {
            assert!(matches!(*inner, Statement::Select(ref s) if s.emit_changes))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_datacell_example_parses() {
    // The DataCell seed's session, verbatim.
    let session = "
set optimizer = 'datacell_pipe';
create table datacell.bsktin (id integer, tag timestamp, payload integer);
call datacell.receptor('datacell.bsktin', 'localhost', 50500);
call datacell.emitter('datacell.bsktout', 'localhost', 50600);
call datacell.query('datacell.pass', 'insert into datacell.bsktout select * from datacell.bsktin;');
call datacell.receptor('datacell.bsktin', 'localhost', 50500,'tcp','active');
call datacell.resume();
select * from datacell.receptors();
";
    let stmts = parse(session).expect("datacell session");
    assert_eq!(stmts.len(), 8);
    for s in &stmts[..7] {
        assert!(matches!(s, Statement::Sql(_)), "{s:?}");
    }
    let Statement::Sql(call) = &stmts[4] else {
        panic!()
    };
    assert!(call
        .to_string()
        .contains("insert into datacell.bsktout select * from datacell.bsktin;"));
}

#[test]
fn errors_say_where() {
    let (msg, line, col) = syntax_error("SELECT * FROM s\nWHERE x >");
    assert!(msg.contains("EOF"), "{msg}");
    assert_eq!((line, col), (2, 10), "{msg}");
    let (msg, line, col2) = syntax_error("SELECT * FROM s EMIT CHANGES WITH (x = 1)");
    assert!(msg.contains("EMIT CHANGES must end"), "{msg}");
    assert_eq!((line, col2), (1, 17));
    let (msg, ..) = syntax_error("SHOW TABLESPACES");
    assert!(msg.contains("STREAMS"), "{msg}");
    let (msg, ..) = syntax_error("CREATE VIEW v AS SELECT 1 EMIT CHANGES");
    assert!(msg.contains("EMIT CHANGES only ends a SELECT"), "{msg}");
    assert!(matches!(parse("  ;  ; "), Err(SqlError::Empty)));
    let (msg, ..) = syntax_error("SELECT 'unterminated");
    assert!(!msg.is_empty());
}

#[test]
fn split_gives_each_statements_text() {
    let parts = streamcell_sql::split(
        "SET x = 1; -- a comment\nSELECT 'a;b' FROM s;\n\n;CREATE PROCEDURE p() BEGIN SELECT 1; END;  ",
    )
    .unwrap();
    assert_eq!(
        parts,
        vec![
            "SET x = 1".to_string(),
            "SELECT 'a;b' FROM s".to_string(),
            "CREATE PROCEDURE p() BEGIN SELECT 1; END".to_string(),
        ]
    );
    let unicode = streamcell_sql::split("SELECT 'ñandú' AS x;\n  SELECT 2").unwrap();
    assert_eq!(
        unicode,
        vec!["SELECT 'ñandú' AS x".to_string(), "SELECT 2".to_string()]
    );
}
