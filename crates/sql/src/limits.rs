//! Bounds on how much one statement may ask of the server, checked before anything builds a
//! tree from it or plans it.
//!
//! sqlparser parses a chain of binary operators (`1+1+…`, `a OR b OR …`) in a loop, so its
//! own recursion limit (50 nested sub-expressions) does not stop a statement of a few KB from
//! becoming an expression tree thousands of levels deep; dropping, visiting, planning or
//! evaluating such a tree recurses once per level and overflows a thread's stack, which
//! aborts the whole process. Three checks keep that from happening:
//!
//! 1. [`MAX_STATEMENT_BYTES`]: the text of one request.
//! 2. [`check_tokens`], before the parser runs: an upper bound of the expression depth the
//!    tokens can produce (operators since the last `,` at each open parenthesis level, summed
//!    over the levels), so no tree deeper than [`MAX_TOKEN_DEPTH`] is ever built.
//! 3. [`check_depth`], on the parsed statement: its exact expression depth, at most
//!    [`MAX_EXPRESSION_DEPTH`] (the visitor stops at the limit, so it never recurses deeper).
//!
//! The engine's threads (query threads and the server's runtime) are given stacks that
//! evaluate expressions of [`MAX_EXPRESSION_DEPTH`] levels with room to spare.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Query, Visit, Visitor};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan};

use crate::error::SqlError;

/// The longest SQL text one request may carry (4 MiB, the default gRPC message limit).
pub const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// The deepest expression a statement may contain: operators applied to operators
/// (`1+1+…+1` with 1,000 terms is 999 levels deep), nested function calls, casts and
/// sub-queries.
pub const MAX_EXPRESSION_DEPTH: usize = 1_000;

/// The token-level bound checked before parsing; looser than [`MAX_EXPRESSION_DEPTH`]
/// because it counts every keyword and operator of a list item (an over-estimate), but low
/// enough that the parsed tree can always be dropped and visited safely.
pub const MAX_TOKEN_DEPTH: usize = 4 * MAX_EXPRESSION_DEPTH;

/// The stack for a thread that plans or evaluates statements (see the module documentation).
/// With it, 999-level expressions run as pull and persistent queries and views on a debug
/// build (the tests in `tests/sql_limits.rs` and `tests/python/test_sql_limits.py`);
/// the default 2 MiB was not measured to suffice. It is reserved address space: pages are used
/// only as deep as a statement goes.
pub const THREAD_STACK_BYTES: usize = 16 << 20;

/// A position not known (line and column 0, as elsewhere in [`SqlError`]).
const UNKNOWN: Location = Location { line: 0, column: 0 };

/// Fails if `sql_text` is longer than [`MAX_STATEMENT_BYTES`].
pub fn check_size(sql_text: &str) -> Result<(), SqlError> {
    if sql_text.len() > MAX_STATEMENT_BYTES {
        return Err(SqlError::TooLarge(format!(
            "the SQL text is {} bytes; at most {MAX_STATEMENT_BYTES} are accepted",
            sql_text.len()
        )));
    }
    Ok(())
}

/// Fails if the tokens of one statement could produce an expression deeper than
/// [`MAX_TOKEN_DEPTH`].
///
/// For each parenthesis (or bracket) level it counts the tokens that can become an inner
/// node of an expression (operators, keywords, `::`) since the last `,` of that level; the
/// depth a leaf can reach is at most the sum of those counts over the open levels, plus the
/// number of levels. Closing a level folds its largest item into the enclosing one.
pub fn check_tokens(tokens: &[TokenWithSpan]) -> Result<(), SqlError> {
    /// One open parenthesis level.
    #[derive(Default)]
    struct Level {
        /// The deepest completed item of this level.
        best: usize,
        /// Operators in the current item.
        ops: usize,
        /// The deepest level closed inside the current item.
        inner: usize,
    }
    let mut stack = vec![Level::default()];
    for t in tokens {
        match &t.token {
            Token::LParen | Token::LBracket | Token::LBrace => stack.push(Level::default()),
            Token::RParen | Token::RBracket | Token::RBrace => {
                if stack.len() > 1 {
                    let done = stack.pop().unwrap_or_default();
                    let depth = done.best.max(done.ops + done.inner) + 1;
                    if let Some(outer) = stack.last_mut() {
                        outer.inner = outer.inner.max(depth);
                    }
                }
            }
            Token::Comma => {
                if let Some(l) = stack.last_mut() {
                    l.best = l.best.max(l.ops + l.inner);
                    l.ops = 0;
                    l.inner = 0;
                }
            }
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Period
            | Token::EOF => {}
            // Statements do not nest in one another.
            Token::SemiColon => stack = vec![Level::default()],
            Token::Word(w) if w.keyword == Keyword::NoKeyword || w.quote_style.is_some() => {}
            _ => {
                if let Some(l) = stack.last_mut() {
                    l.ops += 1;
                }
            }
        }
        // The deepest a leaf here can be: every open level's current item, plus the levels.
        let open: usize = stack.iter().map(|l| l.ops + 1).sum();
        if open > MAX_TOKEN_DEPTH {
            return Err(too_complex(t.span.start));
        }
    }
    Ok(())
}

/// The error for a statement past the depth limits, at `at`.
fn too_complex(at: Location) -> SqlError {
    SqlError::TooComplex {
        message: format!(
            "an expression is nested more than {MAX_EXPRESSION_DEPTH} levels deep (long chains \
             of operators such as `a + b + …` or `x OR y OR …` count one level per operator); \
             split it, or use IN (…) for long OR lists"
        ),
        line: at.line,
        column: at.column,
    }
}

/// Fails if anything in `node` (a statement or a part of one) nests expressions deeper than
/// [`MAX_EXPRESSION_DEPTH`]. Sub-queries count as levels too.
pub fn check_depth<V: Visit>(node: &V) -> Result<(), SqlError> {
    struct Depth {
        now: usize,
        /// Where the limit was passed.
        at: Option<Location>,
    }
    // `Break` is `()`: the derived visit code holds one `ControlFlow<Break>` per field in each
    // frame, and a larger type makes every level's frame several times larger.
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            self.now += 1;
            if self.now > MAX_EXPRESSION_DEPTH {
                self.at = Some(first_location(e));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.now += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut d = Depth { now: 0, at: None };
    match node.visit(&mut d) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(too_complex(d.at.unwrap_or(UNKNOWN))),
    }
}

/// Where an expression starts, found without recursion (`Spanned::span` walks the whole
/// subtree): the leftmost operand of a chain of operators, else the expression itself.
fn first_location(e: &Expr) -> Location {
    let mut e = e;
    loop {
        match e {
            Expr::BinaryOp { left, .. } => e = left,
            Expr::Identifier(i) => return i.span.start,
            Expr::CompoundIdentifier(parts) => {
                return parts.first().map_or(UNKNOWN, |i| i.span.start)
            }
            Expr::Value(v) => return v.span.start,
            _ => return UNKNOWN,
        }
    }
}

/// For front doors that hand SQL text to another parser (the PostgreSQL catalogs): fails if
/// the text is too large, or if any of its statements could nest deeper than the limits.
pub fn check_query_text(sql_text: &str) -> Result<(), SqlError> {
    check_size(sql_text)?;
    let tokens =
        sqlparser::tokenizer::Tokenizer::new(&sqlparser::dialect::GenericDialect {}, sql_text)
            .tokenize_with_location()
            .map_err(|e| SqlError::at(e.message, e.location))?;
    check_tokens(&tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::tokenizer::Tokenizer;

    fn tokens(sql: &str) -> Vec<TokenWithSpan> {
        Tokenizer::new(&GenericDialect {}, sql)
            .tokenize_with_location()
            .expect("tokenizes")
    }

    fn chain(op: &str, n: usize) -> String {
        vec!["x"; n].join(op)
    }

    #[test]
    fn long_lists_are_not_deep() {
        let values = vec!["(1, -2, 'a', 3.5)"; 20_000].join(", ");
        let sql = format!("INSERT INTO s (a, b, c, d) VALUES {values}");
        check_tokens(&tokens(&sql)).expect("20,000 rows are flat");
        let list = (0..20_000).map(|i| i.to_string()).collect::<Vec<_>>();
        let sql = format!("SELECT * FROM s WHERE a IN ({})", list.join(", "));
        check_tokens(&tokens(&sql)).expect("an IN list is flat");
    }

    #[test]
    fn operator_chains_are_bounded_before_parsing() {
        let sql = format!("SELECT {} FROM s", chain(" + ", MAX_TOKEN_DEPTH + 10));
        let e = check_tokens(&tokens(&sql)).expect_err("too deep");
        assert!(matches!(e, SqlError::TooComplex { line: 1, .. }), "{e:?}");
        // Nesting adds up across parentheses.
        let inner = chain(" OR ", MAX_TOKEN_DEPTH / 4);
        let sql = format!("SELECT * FROM s WHERE (({inner}) AND ({inner} AND ({inner} AND ({inner} AND ({inner})))))");
        check_tokens(&tokens(&sql)).expect_err("too deep in sum");
        // Siblings do not add up.
        let sql = format!("SELECT ({inner}), ({inner}), ({inner}), ({inner}), ({inner}) FROM s");
        check_tokens(&tokens(&sql)).expect("siblings are not nested");
    }
}
