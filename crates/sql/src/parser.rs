//! The parser: HStream SQL and DataCell calls on top of sqlparser (DataFusion's `DFParser`
//! pattern). The input is tokenized once; then, per statement, the dialect's own pieces are
//! lifted out of the token stream (`EMIT CHANGES` at the end, `WITHIN (…)` after a join) and
//! HStream-only statements are parsed here, while everything else goes to sqlparser's
//! `GenericDialect`. `EMIT` must be handled before sqlparser sees it: it is not a keyword
//! there and would be read as an alias.

use sqlparser::ast::{self as sql, Expr, ObjectName, SetExpr, Value, ValueWithSpan};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Word};

use crate::ast::{CreateStream, ObjectKind, Select, Statement};
use crate::error::SqlError;
use crate::limits;

/// Parses one or more `;`-separated statements.
///
/// Statements larger or deeper than [`crate::limits`] allows are refused before any tree is
/// built from them.
pub fn parse(sql_text: &str) -> Result<Vec<Statement>, SqlError> {
    limits::check_size(sql_text)?;
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql_text)
        .tokenize_with_location()
        .map_err(|e| SqlError::at(e.message, e.location))?;
    let mut out = Vec::new();
    for stmt in split_statements(tokens) {
        let end = end_location(&stmt);
        limits::check_tokens(&stmt)?;
        let parsed = parse_one(stmt).map_err(|e| at_end_if_unplaced(e, end))?;
        check_statement_depth(&parsed)?;
        out.push(parsed);
    }
    if out.is_empty() {
        return Err(SqlError::Empty);
    }
    Ok(out)
}

/// The text of each `;`-separated statement (comments and blank statements dropped), for
/// front doors that look at a statement before the engine parses it (the PostgreSQL one
/// answers `SET`, `BEGIN`, … itself).
pub fn split(sql_text: &str) -> Result<Vec<String>, SqlError> {
    limits::check_size(sql_text)?;
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql_text)
        .tokenize_with_location()
        .map_err(|e| SqlError::at(e.message, e.location))?;
    // Byte offset of each line's start; columns count characters from 1.
    let mut line_starts = vec![0usize];
    line_starts.extend(sql_text.match_indices('\n').map(|(i, _)| i + 1));
    let offset = |l: Location| -> usize {
        let start = line_starts
            .get((l.line as usize).saturating_sub(1))
            .copied()
            .unwrap_or(sql_text.len());
        sql_text[start..]
            .char_indices()
            .nth((l.column as usize).saturating_sub(1))
            .map_or(sql_text.len(), |(i, _)| start + i)
    };
    Ok(split_statements(tokens)
        .into_iter()
        .filter_map(|stmt| {
            let (first, last) = (stmt.first()?, stmt.last()?);
            let (a, b) = (offset(first.span.start), offset(last.span.end));
            sql_text.get(a..b.max(a)).map(str::to_string)
        })
        .collect())
}

/// [`limits::check_depth`] over every sqlparser tree a statement holds.
fn check_statement_depth(stmt: &Statement) -> Result<(), SqlError> {
    let select = |s: &crate::ast::Select| -> Result<(), SqlError> {
        limits::check_depth(&s.query)?;
        s.within.iter().try_for_each(limits::check_depth)
    };
    match stmt {
        Statement::CreateStream(cs) => {
            cs.duration.iter().try_for_each(limits::check_depth)?;
            cs.as_select.iter().try_for_each(select)
        }
        Statement::CreateView { query, .. } | Statement::Select(query) => select(query),
        Statement::Explain(inner) => check_statement_depth(inner),
        Statement::CreateProcedure { body, .. } => body.iter().try_for_each(check_statement_depth),
        Statement::Sql(s) => limits::check_depth(s.as_ref()),
        Statement::InsertJson { .. }
        | Statement::Drop { .. }
        | Statement::Show(_)
        | Statement::Terminate(_)
        | Statement::Pause(_)
        | Statement::Resume(_)
        | Statement::Flush
        | Statement::CreateTableLike { .. } => Ok(()),
    }
}

/// Splits at top-level `;`, dropping whitespace and comments and empty statements. The `;`s
/// inside a `CREATE PROCEDURE … BEGIN … END` stay in it.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = Vec::new();
    let mut cur: Vec<TokenWithSpan> = Vec::new();
    let mut depth = 0usize;
    for t in tokens {
        let in_procedure = is_word(cur.first(), "CREATE")
            && (is_word(cur.get(1), "PROCEDURE")
                || is_word(cur.get(2), "PROCEDURE") && is_word(cur.get(1), "OR"));
        if in_procedure {
            if is_word(Some(&t), "BEGIN") {
                depth += 1;
            } else if is_word(Some(&t), "END") {
                depth = depth.saturating_sub(1);
            }
        }
        match t.token {
            Token::Whitespace(_) => {}
            Token::SemiColon if in_procedure && depth > 0 => cur.push(t),
            Token::SemiColon => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                depth = 0;
            }
            Token::EOF => {}
            _ => cur.push(t),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An error at the end of the input (sqlparser's "found: EOF") comes without a position:
/// place it just after the statement's last token.
fn at_end_if_unplaced(e: SqlError, end: Location) -> SqlError {
    match e {
        SqlError::Syntax {
            message, line: 0, ..
        } => SqlError::Syntax {
            message,
            line: end.line,
            column: end.column,
        },
        other => other,
    }
}

fn word(t: &TokenWithSpan) -> Option<&Word> {
    match &t.token {
        Token::Word(w) => Some(w),
        _ => None,
    }
}

fn is_word(t: Option<&TokenWithSpan>, text: &str) -> bool {
    t.and_then(word)
        .is_some_and(|w| w.quote_style.is_none() && w.value.eq_ignore_ascii_case(text))
}

fn end_location(tokens: &[TokenWithSpan]) -> Location {
    tokens
        .last()
        .map_or(Location { line: 0, column: 0 }, |t| t.span.end)
}

fn parser_for(tokens: Vec<TokenWithSpan>) -> Parser<'static> {
    static DIALECT: GenericDialect = GenericDialect {};
    Parser::new(&DIALECT).with_tokens_with_locations(tokens)
}

/// Fails if the parser has not consumed every token.
fn expect_end(p: &mut Parser<'_>) -> Result<(), SqlError> {
    let next = p.peek_token();
    if next.token == Token::EOF {
        Ok(())
    } else {
        Err(SqlError::at(
            format!("unexpected {} after the end of the statement", next.token),
            next.span.start,
        ))
    }
}

fn parse_one(mut tokens: Vec<TokenWithSpan>) -> Result<Statement, SqlError> {
    if is_word(tokens.first(), "EXPLAIN") {
        if tokens.len() == 1 {
            return Err(SqlError::at(
                "expected a statement after EXPLAIN",
                end_location(&tokens),
            ));
        }
        return Ok(Statement::Explain(Box::new(parse_one(
            tokens.split_off(1),
        )?)));
    }
    let emit_changes = strip_emit_changes(&mut tokens)?;
    let within = strip_within(&mut tokens)?;
    let first = tokens
        .first()
        .map(|t| t.span.start)
        .unwrap_or(Location { line: 0, column: 0 });
    let lead = |i: usize, text: &str| is_word(tokens.get(i), text);

    let stmt = if lead(0, "CREATE") && lead(1, "STREAM") {
        Statement::CreateStream(Box::new(parse_create_stream(tokens[2..].to_vec(), within)?))
    } else if lead(0, "SHOW") {
        let kind = match tokens
            .get(1)
            .and_then(word)
            .map(|w| w.value.to_ascii_uppercase())
        {
            Some(k) if k == "STREAMS" => ObjectKind::Stream,
            Some(k) if k == "QUERIES" => ObjectKind::Query,
            Some(k) if k == "VIEWS" => ObjectKind::View,
            _ => {
                return Err(SqlError::at(
                    "expected STREAMS, QUERIES or VIEWS after SHOW",
                    tokens
                        .get(1)
                        .map_or(end_location(&tokens), |t| t.span.start),
                ))
            }
        };
        if let Some(extra) = tokens.get(2) {
            return Err(SqlError::at(
                format!("unexpected {}", extra.token),
                extra.span.start,
            ));
        }
        Statement::Show(kind)
    } else if lead(0, "DROP") && (lead(1, "STREAM") || lead(1, "QUERY") || lead(1, "VIEW")) {
        let kind = if lead(1, "STREAM") {
            ObjectKind::Stream
        } else if lead(1, "QUERY") {
            ObjectKind::Query
        } else {
            ObjectKind::View
        };
        let mut p = parser_for(tokens[2..].to_vec());
        let mut if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = p.parse_object_name(false)?;
        if_exists |= p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        expect_end(&mut p)?;
        Statement::Drop {
            kind,
            name,
            if_exists,
        }
    } else if lead(0, "TERMINATE") {
        if lead(1, "ALL") && tokens.len() == 2 {
            Statement::Terminate(None)
        } else if lead(1, "QUERY") {
            Statement::Terminate(Some(single_name(&tokens[2..], &tokens)?))
        } else {
            return Err(SqlError::at(
                "expected QUERY <name> or ALL after TERMINATE",
                tokens
                    .get(1)
                    .map_or(end_location(&tokens), |t| t.span.start),
            ));
        }
    } else if (lead(0, "PAUSE") || lead(0, "RESUME")) && lead(1, "QUERY") {
        let name = single_name(&tokens[2..], &tokens)?;
        if lead(0, "PAUSE") {
            Statement::Pause(name)
        } else {
            Statement::Resume(name)
        }
    } else if lead(0, "CREATE") && lead(1, "PROCEDURE") {
        parse_create_procedure(&tokens)?
    } else if lead(0, "CREATE") && lead(1, "TABLE") && is_like_table(&tokens) {
        let mut p = parser_for(tokens[2..].to_vec());
        let name = p.parse_object_name(false)?;
        p.expect_token(&Token::LParen)?;
        p.expect_keyword(Keyword::LIKE)?;
        let like = p.parse_object_name(false)?;
        p.expect_token(&Token::RParen)?;
        expect_end(&mut p)?;
        Statement::CreateTableLike { name, like }
    } else if lead(0, "FLUSH") && tokens.len() == 1 {
        Statement::Flush
    } else if lead(0, "INSERT") && is_json_insert(&tokens) {
        parse_json_insert(&tokens)?
    } else {
        let mut p = parser_for(tokens.clone());
        let parsed = p.parse_statement()?;
        expect_end(&mut p)?;
        match parsed {
            sql::Statement::Query(query) => Statement::Select(Select {
                query,
                emit_changes,
                within,
            }),
            sql::Statement::CreateView(view) => Statement::CreateView {
                name: view.name,
                query: Select {
                    query: view.query,
                    emit_changes: false,
                    within,
                },
            },
            sql::Statement::Insert(mut insert) => {
                strings_for_quoted_values(&mut insert);
                Statement::Sql(Box::new(sql::Statement::Insert(insert)))
            }
            other => Statement::Sql(Box::new(other)),
        }
    };
    // EMIT CHANGES and WITHIN only make sense where they were consumed above.
    if emit_changes && !matches!(stmt, Statement::Select(_) | Statement::CreateStream(_)) {
        return Err(SqlError::at("EMIT CHANGES only ends a SELECT", first));
    }
    Ok(stmt)
}

/// `CREATE TABLE name ( LIKE …`: the tokens after the name start with `( LIKE`.
fn is_like_table(tokens: &[TokenWithSpan]) -> bool {
    let open = tokens.iter().position(|t| t.token == Token::LParen);
    open.is_some_and(|i| is_word(tokens.get(i + 1), "LIKE"))
}

/// `CREATE PROCEDURE name [()] BEGIN stmt; …; END`.
fn parse_create_procedure(tokens: &[TokenWithSpan]) -> Result<Statement, SqlError> {
    let begin = tokens
        .iter()
        .position(|t| is_word(Some(t), "BEGIN"))
        .ok_or_else(|| {
            SqlError::at(
                "expected BEGIN … END after CREATE PROCEDURE name()",
                end_location(tokens),
            )
        })?;
    let mut head = parser_for(tokens[2..begin].to_vec());
    let name = head.parse_object_name(false)?;
    if head.consume_token(&Token::LParen) {
        head.expect_token(&Token::RParen)?;
    }
    expect_end(&mut head)?;
    let Some(last) = tokens.last().filter(|t| is_word(Some(t), "END")) else {
        return Err(SqlError::at(
            "a procedure body ends with END",
            end_location(tokens),
        ));
    };
    let inner = &tokens[begin + 1..tokens.len() - 1];
    let mut body = Vec::new();
    let mut text = Vec::new();
    for stmt in inner.split(|t| t.token == Token::SemiColon) {
        if stmt.is_empty() {
            continue;
        }
        let end = end_location(stmt);
        let parsed = parse_one(stmt.to_vec()).map_err(|e| at_end_if_unplaced(e, end))?;
        text.push(
            stmt.iter()
                .map(|t| t.token.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        );
        body.push(parsed);
    }
    if body.is_empty() {
        return Err(SqlError::at(
            "the procedure has no statements",
            last.span.start,
        ));
    }
    Ok(Statement::CreateProcedure {
        name,
        body,
        text: text.join("; "),
    })
}

/// Removes a trailing `EMIT CHANGES`; true if it was there.
fn strip_emit_changes(tokens: &mut Vec<TokenWithSpan>) -> Result<bool, SqlError> {
    let n = tokens.len();
    if n >= 2 && is_word(tokens.get(n - 2), "EMIT") && is_word(tokens.get(n - 1), "CHANGES") {
        tokens.truncate(n - 2);
        return Ok(true);
    }
    // EMIT anywhere else is a mistake worth a precise message (e.g. EMIT CHANGES before WITH).
    if let Some(t) = tokens.iter().find(|t| is_word(Some(t), "EMIT")) {
        if tokens.iter().any(|t| is_word(Some(t), "SELECT")) {
            return Err(SqlError::at(
                "EMIT CHANGES must end the statement",
                t.span.start,
            ));
        }
    }
    Ok(false)
}

/// Removes every `WITHIN ( … )` (a join's time bound) and returns the expressions inside, in
/// order.
fn strip_within(tokens: &mut Vec<TokenWithSpan>) -> Result<Vec<Expr>, SqlError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !(is_word(tokens.get(i), "WITHIN")
            && tokens.get(i + 1).is_some_and(|t| t.token == Token::LParen))
        {
            i += 1;
            continue;
        }
        let mut depth = 0usize;
        let mut end = None;
        for (j, t) in tokens.iter().enumerate().skip(i + 1) {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return Err(SqlError::at(
                "WITHIN ( is not closed",
                tokens[i + 1].span.start,
            ));
        };
        let inner: Vec<TokenWithSpan> = tokens[i + 2..end].to_vec();
        if inner.is_empty() {
            return Err(SqlError::at(
                "WITHIN needs an interval, e.g. WITHIN (INTERVAL 10 SECOND)",
                tokens[i].span.start,
            ));
        }
        let mut p = parser_for(inner);
        let e = p.parse_expr()?;
        expect_end(&mut p)?;
        out.push(e);
        tokens.drain(i..=end);
    }
    Ok(out)
}

fn single_name(rest: &[TokenWithSpan], all: &[TokenWithSpan]) -> Result<ObjectName, SqlError> {
    if rest.is_empty() {
        return Err(SqlError::at("expected a name", end_location(all)));
    }
    let mut p = parser_for(rest.to_vec());
    let name = p.parse_object_name(false)?;
    expect_end(&mut p)?;
    Ok(name)
}

fn parse_create_stream(
    rest: Vec<TokenWithSpan>,
    within: Vec<Expr>,
) -> Result<CreateStream, SqlError> {
    let mut p = parser_for(rest);
    let name = p.parse_object_name(false)?;
    let mut columns = Vec::new();
    if p.peek_token().token == Token::LParen {
        let (cols, constraints) = p.parse_columns()?;
        if !constraints.is_empty() {
            let t = p.peek_token();
            return Err(SqlError::at("a stream has no constraints", t.span.start));
        }
        columns = cols;
    }
    let mut as_select = None;
    if p.parse_keyword(Keyword::AS) {
        let query = p.parse_query()?;
        as_select = Some(Select {
            query,
            emit_changes: true,
            within,
        });
    }
    let (mut replicate, mut duration) = (None, None);
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        loop {
            let key = p.next_token();
            let Some(k) = word(&key).map(|w| w.value.to_ascii_uppercase()) else {
                return Err(SqlError::at(
                    format!("expected an option name, found {}", key.token),
                    key.span.start,
                ));
            };
            p.expect_token(&Token::Eq)?;
            match k.as_str() {
                "REPLICATE" => {
                    let t = p.next_token();
                    match &t.token {
                        Token::Number(n, _) => match n.parse::<u64>() {
                            Ok(v) if v > 0 => replicate = Some(v),
                            _ => {
                                return Err(SqlError::at(
                                    format!("REPLICATE must be a positive integer, got {n}"),
                                    t.span.start,
                                ))
                            }
                        },
                        other => {
                            return Err(SqlError::at(
                                format!("REPLICATE must be a positive integer, got {other}"),
                                t.span.start,
                            ))
                        }
                    }
                }
                "DURATION" => duration = Some(p.parse_expr()?),
                other => {
                    return Err(SqlError::at(
                        format!("unknown stream option {other}: expected REPLICATE or DURATION"),
                        key.span.start,
                    ))
                }
            }
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen)?;
    }
    expect_end(&mut p)?;
    Ok(CreateStream {
        name,
        columns,
        replicate,
        duration,
        as_select,
    })
}

/// `INSERT INTO name VALUES '<text>' [:: JSONB]`.
fn is_json_insert(tokens: &[TokenWithSpan]) -> bool {
    let Some(v) = tokens.iter().position(|t| is_word(Some(t), "VALUES")) else {
        return false;
    };
    matches!(
        tokens.get(v + 1).map(|t| &t.token),
        Some(Token::SingleQuotedString(_))
    )
}

fn parse_json_insert(tokens: &[TokenWithSpan]) -> Result<Statement, SqlError> {
    let mut p = parser_for(tokens.to_vec());
    p.expect_keyword(Keyword::INSERT)?;
    p.expect_keyword(Keyword::INTO)?;
    let stream = p.parse_object_name(false)?;
    p.expect_keyword(Keyword::VALUES)?;
    let t = p.next_token();
    let Token::SingleQuotedString(json) = t.token else {
        return Err(SqlError::at(
            "expected a JSON string after VALUES",
            t.span.start,
        ));
    };
    if p.consume_token(&Token::DoubleColon) {
        let ty = p.next_token();
        if !is_word(Some(&ty), "JSONB") && !is_word(Some(&ty), "JSON") {
            return Err(SqlError::at(
                format!("expected JSONB after ::, found {}", ty.token),
                ty.span.start,
            ));
        }
    }
    expect_end(&mut p)?;
    Ok(Statement::InsertJson { stream, json })
}

/// In `INSERT … VALUES (…)`, HStream SQL (and the seed) writes strings in double quotes:
/// `VALUES ("Apple", "Fruit")`. Standard SQL reads those as identifiers; here they are values.
fn strings_for_quoted_values(insert: &mut sql::Insert) {
    let Some(source) = insert.source.as_mut() else {
        return;
    };
    if let SetExpr::Values(values) = source.body.as_mut() {
        for row in &mut values.rows {
            for e in row.iter_mut() {
                if let Expr::Identifier(id) = e {
                    if id.quote_style == Some('"') {
                        *e = Expr::Value(ValueWithSpan::from(Value::SingleQuotedString(
                            id.value.clone(),
                        )));
                    }
                }
            }
        }
    }
}
