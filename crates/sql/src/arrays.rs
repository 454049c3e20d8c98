//! PostgreSQL's array literals in their text form, read as arrays: `'{r,v}'::text[]`,
//! `CAST('{1,2}' AS int[])`, and a quoted literal where an array must stand (`x = ANY('{r,v}')`,
//! `x <> ALL('{a}')`). PostgreSQL resolves such a string to an array; sqlparser and DataFusion
//! see a string. [`rewrite_array_literals`] turns each into `ARRAY[…]` of its elements (cast to
//! the element type where one is named), so the planner sees a real array. The text form is
//! one-dimensional here: `{a,"b c",NULL,"\"q\""}` (quotes, backslash escapes, unquoted `NULL`).

use std::ops::ControlFlow;

use sqlparser::ast::{Array, CastKind, DataType, Expr, Value, ValueWithSpan, VisitMut, VisitorMut};

/// The elements of a one-dimensional array in PostgreSQL's text form (`None`: `NULL`), or why
/// it is not one.
pub fn parse_array_text(text: &str) -> Result<Vec<Option<String>>, String> {
    let t = text.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .ok_or_else(|| format!("malformed array literal: {text:?} (expected {{a,b,…}})"))?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let item = if chars.peek() == Some(&'"') {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => s.push(c),
                        None => return Err(format!("malformed array literal: {text:?}")),
                    },
                    Some('"') => break,
                    Some(c) => s.push(c),
                    None => {
                        return Err(format!(
                            "malformed array literal: {text:?} (unclosed quote)"
                        ))
                    }
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            Some(s)
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                chars.next();
                match c {
                    '{' | '}' | '"' => {
                        return Err(format!(
                            "malformed array literal: {text:?} (only one-dimensional arrays \
                             are read)"
                        ))
                    }
                    '\\' => match chars.next() {
                        Some(e) => s.push(e),
                        None => return Err(format!("malformed array literal: {text:?}")),
                    },
                    c => s.push(c),
                }
            }
            let s = s.trim_end().to_string();
            if s.is_empty() {
                return Err(format!(
                    "malformed array literal: {text:?} (an empty element)"
                ));
            }
            (!s.eq_ignore_ascii_case("NULL")).then_some(s)
        };
        out.push(item);
        match chars.next() {
            None => return Ok(out),
            Some(',') => {}
            Some(c) => {
                return Err(format!(
                    "malformed array literal: {text:?} (unexpected {c:?} after an element)"
                ))
            }
        }
    }
}

/// Rewrites PostgreSQL array literals in text form inside `node` into `ARRAY[…]`; the first
/// malformed one is the error.
pub fn rewrite_array_literals<V: VisitMut>(node: &mut V) -> Result<(), String> {
    match node.visit(&mut Rewrite) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Rewrite;

fn string_of(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s),
            ..
        }) => Some(s),
        _ => None,
    }
}

fn array_of(text: &str, element: Option<&DataType>) -> Result<Expr, String> {
    let elem = parse_array_text(text)?
        .into_iter()
        .map(|item| {
            let v: Expr = Expr::Value(
                match item {
                    Some(s) => Value::SingleQuotedString(s),
                    None => Value::Null,
                }
                .into(),
            );
            match element {
                Some(t) => Expr::Cast {
                    kind: CastKind::Cast,
                    expr: Box::new(v),
                    data_type: t.clone(),
                    array: false,
                    format: None,
                },
                None => v,
            }
        })
        .collect();
    Ok(Expr::Array(Array { elem, named: true }))
}

/// The element type of an array type (`text[]`, `ARRAY<int>`, `int ARRAY`).
fn element_type(t: &DataType) -> Option<&DataType> {
    match t {
        DataType::Array(def) => match def {
            sqlparser::ast::ArrayElemTypeDef::SquareBracket(inner, _)
            | sqlparser::ast::ArrayElemTypeDef::AngleBracket(inner)
            | sqlparser::ast::ArrayElemTypeDef::Parenthesis(inner) => Some(inner.as_ref()),
            sqlparser::ast::ArrayElemTypeDef::None => None,
        },
        _ => None,
    }
}

impl VisitorMut for Rewrite {
    type Break = String;

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<String> {
        let replaced = match e {
            Expr::Cast {
                expr, data_type, ..
            } if matches!(data_type, DataType::Array(_)) => {
                string_of(expr).map(|s| array_of(s, element_type(data_type)))
            }
            Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } => match string_of(right) {
                Some(s) => match array_of(s, None) {
                    Ok(a) => {
                        **right = a;
                        None
                    }
                    Err(err) => Some(Err(err)),
                },
                None => None,
            },
            _ => None,
        };
        match replaced {
            Some(Ok(new)) => *e = new,
            Some(Err(err)) => return ControlFlow::Break(err),
            None => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> Result<String, String> {
        let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| e.to_string())?;
        rewrite_array_literals(&mut stmts)?;
        Ok(stmts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    }

    #[test]
    fn the_text_form_reads_as_postgresql_writes_it() {
        let s = |v: &[Option<&str>]| v.iter().map(|x| x.map(str::to_string)).collect::<Vec<_>>();
        assert_eq!(
            parse_array_text("{r,p,v}").unwrap(),
            s(&[Some("r"), Some("p"), Some("v")])
        );
        assert_eq!(parse_array_text("{}").unwrap(), s(&[]));
        assert_eq!(
            parse_array_text(r#"{ "a b" , NULL,"NULL","q\"x",c\,d }"#).unwrap(),
            s(&[Some("a b"), None, Some("NULL"), Some("q\"x"), Some("c,d")])
        );
        assert_eq!(
            parse_array_text(r#"{r,p,""}"#).unwrap(),
            s(&[Some("r"), Some("p"), Some("")])
        );
        for bad in ["r,p", "{a,,b}", "{{1,2},{3,4}}", "{\"a}", "{a\"b}", "{a} x"] {
            assert!(parse_array_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn casts_and_any_operands_become_arrays() {
        assert_eq!(
            rewritten("SELECT '{1,2}'::int[]").unwrap(),
            "SELECT ARRAY[CAST('1' AS INT), CAST('2' AS INT)]"
        );
        assert_eq!(
            rewritten("SELECT 1 WHERE c.relkind = ANY('{r,p}')").unwrap(),
            "SELECT 1 WHERE c.relkind = ANY(ARRAY['r', 'p'])"
        );
        assert_eq!(
            rewritten("SELECT 'x' <> ALL('{a,NULL}')").unwrap(),
            "SELECT 'x' <> ALL(ARRAY['a', NULL])"
        );
        assert_eq!(
            rewritten("SELECT '{a}'").unwrap(),
            "SELECT '{a}'",
            "a plain string stays"
        );
        assert!(rewritten("SELECT 'x' = ANY('oops')").is_err());
    }
}
