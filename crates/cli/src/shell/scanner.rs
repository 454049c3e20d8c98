//! Splitting SQL text into statements for `streamcell sql`: where a statement ends (a `;`
//! outside a string, a quoted identifier and a comment) and whether typed input is still
//! unfinished. It follows the tokenizer of the server's dialect (sqlparser's `GenericDialect`):
//! `'...'` strings with `''` for a quote (and backslash escapes in `E'...'` strings), `"..."`
//! and `` `...` `` identifiers with a doubled quote for a quote, `--` line comments and `/* */`
//! block comments, which nest.

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside strings, identifiers and comments.
    Code,
    /// In a `'...'` string; `backslash` when it is an `E'...'` string.
    Str { backslash: bool },
    /// In a quoted identifier closed by this character (`"` or `` ` ``).
    Quoted(char),
    /// In a `--` comment, up to the end of the line.
    LineComment,
    /// In a block comment, nested this deep.
    BlockComment(u32),
}

/// `text` cut into statements.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Split {
    /// The complete statements, in order: each one's text up to and including its `;`,
    /// without surrounding whitespace. Empty statements (only `;`, whitespace or comments) are
    /// left out.
    pub statements: Vec<String>,
    /// The text after the last statement's `;`, as it was.
    pub rest: String,
    /// Whether `rest` is an unfinished statement: it holds something other than whitespace and
    /// comments, or ends inside a string, a quoted identifier or a block comment.
    pub pending: bool,
}

/// Cuts `text` into complete statements and what follows the last one.
pub(super) fn split(text: &str) -> Split {
    let mut out = Split::default();
    let mut state = State::Code;
    // Byte offset where the current statement starts, and whether it has any content yet.
    let mut start = 0;
    let mut content = false;
    // The two characters before the current one (to recognise an `E'...'` string).
    let (mut prev, mut prev2): (Option<char>, Option<char>) = (None, None);
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        match state {
            State::Code => match c {
                ';' => {
                    if content {
                        out.statements.push(text[start..=i].trim().to_string());
                    }
                    start = i + 1;
                    content = false;
                }
                '\'' => {
                    let escape_prefix = matches!(prev, Some('e' | 'E'))
                        && !prev2.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '$');
                    state = State::Str {
                        backslash: escape_prefix,
                    };
                    content = true;
                }
                '"' | '`' => {
                    state = State::Quoted(c);
                    content = true;
                }
                '-' if next == Some('-') => {
                    chars.next();
                    state = State::LineComment;
                }
                '/' if next == Some('*') => {
                    chars.next();
                    state = State::BlockComment(1);
                }
                c if c.is_whitespace() => {}
                _ => content = true,
            },
            State::Str { backslash } => {
                if backslash && c == '\\' {
                    chars.next();
                } else if c == '\'' {
                    if next == Some('\'') {
                        chars.next();
                    } else {
                        state = State::Code;
                    }
                }
            }
            State::Quoted(q) => {
                if c == q {
                    if next == Some(q) {
                        chars.next();
                    } else {
                        state = State::Code;
                    }
                }
            }
            State::LineComment => {
                if c == '\n' {
                    state = State::Code;
                }
            }
            State::BlockComment(depth) => {
                if c == '/' && next == Some('*') {
                    chars.next();
                    state = State::BlockComment(depth + 1);
                } else if c == '*' && next == Some('/') {
                    chars.next();
                    state = if depth <= 1 {
                        State::Code
                    } else {
                        State::BlockComment(depth - 1)
                    };
                }
            }
        }
        // Characters consumed as part of a pair above never start an `E'` prefix, so looking
        // only at the last character seen here is enough.
        prev2 = prev;
        prev = Some(c);
    }
    out.rest = text[start..].to_string();
    out.pending = content
        || matches!(
            state,
            State::Str { .. } | State::Quoted(_) | State::BlockComment(_)
        );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `text` is complete: ignoring trailing whitespace and comments, it ends with a
    /// `;` outside strings, quoted identifiers and comments (empty text is complete too).
    fn is_complete(text: &str) -> bool {
        !split(text).pending
    }

    fn stmts(text: &str) -> Vec<String> {
        split(text).statements
    }

    #[test]
    fn one_and_several_statements() {
        assert_eq!(stmts("SELECT 1;"), ["SELECT 1;"]);
        assert_eq!(
            stmts("  INSERT INTO s (a) VALUES (1);\nSELECT 1 ;  "),
            ["INSERT INTO s (a) VALUES (1);", "SELECT 1 ;"]
        );
        let s = split("SELECT 1; SELECT 2");
        assert_eq!(s.statements, ["SELECT 1;"]);
        assert_eq!(s.rest, " SELECT 2");
        assert!(s.pending);
    }

    #[test]
    fn empty_statements_are_dropped() {
        assert_eq!(stmts(";;  ; -- c\n;/* x */;"), Vec::<String>::new());
        assert!(is_complete(""));
        assert!(is_complete("   \n\t"));
        assert!(is_complete(";"));
    }

    #[test]
    fn semicolon_in_string() {
        let s = split("INSERT INTO s (a) VALUES ('x;y');");
        assert_eq!(s.statements, ["INSERT INTO s (a) VALUES ('x;y');"]);
        assert!(!s.pending);
        // An open string is unfinished, whatever it holds.
        assert!(!is_complete("SELECT 'a;"));
        assert!(!is_complete("SELECT 'a;\n"));
        assert!(is_complete("SELECT 'a;\nb';"));
    }

    #[test]
    fn doubled_quotes_stay_in_the_string() {
        assert_eq!(stmts("SELECT 'it''s; ok';"), ["SELECT 'it''s; ok';"]);
        assert!(!is_complete("SELECT 'it''s;"));
        assert!(is_complete("SELECT '';"));
        assert_eq!(
            stmts("SELECT '''';SELECT 2;"),
            ["SELECT '''';", "SELECT 2;"]
        );
    }

    #[test]
    fn backslash_escapes_only_in_e_strings() {
        // A plain string ends at the quote after the backslash.
        assert_eq!(
            stmts(r"SELECT 'a\'; SELECT 2;"),
            [r"SELECT 'a\';", "SELECT 2;"]
        );
        // In E'...' the backslash escapes the quote.
        assert!(!is_complete(r"SELECT E'a\'; SELECT 2;"));
        assert_eq!(
            stmts(r"SELECT e'a\';b'; SELECT 2;"),
            [r"SELECT e'a\';b';", "SELECT 2;"]
        );
        // `name'...'` is not an E string: the E belongs to an identifier.
        assert_eq!(
            stmts(r"SELECT type'a\'; SELECT 2;"),
            [r"SELECT type'a\';", "SELECT 2;"]
        );
    }

    #[test]
    fn quoted_identifiers() {
        assert_eq!(
            stmts(r#"SELECT "a;b", `c;d` FROM "s""; x";"#),
            [r#"SELECT "a;b", `c;d` FROM "s""; x";"#]
        );
        assert!(!is_complete(r#"SELECT "a;"#));
        assert!(!is_complete("SELECT `a;"));
        // A quote of the other kind does not close the identifier.
        assert!(!is_complete(r#"SELECT "a';"#));
        assert!(!is_complete(r#"SELECT 'a";"#));
    }

    #[test]
    fn line_comments() {
        assert!(is_complete("SELECT 1; -- trailing comment"));
        assert!(is_complete("SELECT 1; -- trailing comment\n  \n"));
        assert!(!is_complete("SELECT 1 -- not the end;"));
        assert!(!is_complete("SELECT 1 -- not the end;\n"));
        assert_eq!(
            stmts("SELECT 1 -- a ; in a comment\n;"),
            ["SELECT 1 -- a ; in a comment\n;"]
        );
        // A comment before a statement is kept with it.
        assert_eq!(stmts("-- hello\nSELECT 1;"), ["-- hello\nSELECT 1;"]);
        // A single '-' is an operator.
        assert_eq!(stmts("SELECT 2 - 1;"), ["SELECT 2 - 1;"]);
        // '--' inside a string is not a comment.
        assert_eq!(
            stmts("SELECT '--'; SELECT 2;"),
            ["SELECT '--';", "SELECT 2;"]
        );
        let s = split("SELECT 1; -- done\n");
        assert!(!s.pending);
        assert_eq!(s.rest, " -- done\n");
    }

    #[test]
    fn block_comments() {
        assert!(!is_complete("SELECT 1 /* ; */"));
        assert!(is_complete("SELECT 1 /* ; */;"));
        assert!(is_complete("SELECT 1; /* trailing */"));
        assert!(!is_complete("SELECT 1; /* unterminated"));
        assert!(!is_complete("/* open ;"));
        assert_eq!(
            stmts("/* a; */ SELECT /* b; */ 1;"),
            ["/* a; */ SELECT /* b; */ 1;"]
        );
        // Block comments nest, as in the server's dialect.
        assert!(!is_complete("SELECT 1 /* outer /* inner */ still ; */"));
        assert!(is_complete("SELECT 1 /* outer /* inner */ still ; */;"));
        // '/' alone is division; '*/' outside a comment is just characters.
        assert_eq!(stmts("SELECT 4 / 2;"), ["SELECT 4 / 2;"]);
        // Quotes inside a comment do not open strings.
        assert!(is_complete("SELECT 1; /* it's */"));
        assert!(is_complete("SELECT 1; -- it's\n"));
    }

    #[test]
    fn multi_line_input_grows_until_complete() {
        let mut buf = String::new();
        for (line, complete) in [
            ("SELECT product,", false),
            ("  'a;b' AS s -- ;", false),
            ("FROM sales", false),
            ("/* many", false),
            ("lines; */", false),
            ("EMIT CHANGES;", true),
        ] {
            buf.push_str(line);
            buf.push('\n');
            assert_eq!(is_complete(&buf), complete, "after {line:?}");
        }
        assert_eq!(
            stmts(&buf),
            ["SELECT product,\n  'a;b' AS s -- ;\nFROM sales\n/* many\nlines; */\nEMIT CHANGES;"]
        );
    }

    #[test]
    fn non_ascii_text() {
        assert_eq!(
            stmts("INSERT INTO s (n) VALUES ('über;ß'); SELECT \"ñ\";"),
            ["INSERT INTO s (n) VALUES ('über;ß');", "SELECT \"ñ\";"]
        );
        let s = split("SELECT 'é';  ünfinished");
        assert_eq!(s.rest, "  ünfinished");
        assert!(s.pending);
    }
}
