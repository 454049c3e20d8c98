//! Parameters of the extended query protocol (`$1`, `$2`, …): their values, sent in text or
//! binary form, become SQL literals in the statement's text before the engine parses it.
//! The engine has no placeholders of its own; a literal is always a complete token (a
//! quoted string, a checked number, `TRUE`/`FALSE` or `NULL`), so a value can never change
//! the statement's structure. Timestamps and dates become ISO-8601 strings, which the engine
//! reads as such where a timestamp is expected.

use pgwire::api::portal::Portal;
use pgwire::api::Type;

use crate::error::{PgError, Result};

/// The positions of `$n` placeholders in `sql` outside quotes and comments, as (byte start,
/// byte end, n).
pub fn placeholders(sql: &str) -> Vec<(usize, usize, usize)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                // A quoted string or identifier; a doubled quote stays inside.
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            // A dollar-quoted string, `$$…$$` or `$tag$…$tag$`: nothing inside is a
            // placeholder (else a value could close the quote and add a statement).
            b'$' if dollar_tag(&b[i..]).is_some()
                && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let tag_len = dollar_tag(&b[i..]).unwrap_or(1);
                let tag = &b[i..i + tag_len];
                i += tag_len;
                while i < b.len() && !b[i..].starts_with(tag) {
                    i += 1;
                }
                i += tag_len;
            }
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit)
                && !(i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let start = i;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if let Ok(n) = sql[start + 1..i].parse::<usize>() {
                    out.push((start, i, n));
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The type a statement gives each of its first `n` parameters by a cast written right after
/// it (`$1::text[]`, `$2::int8`, `$3 :: timestamptz`), as PostgreSQL infers it; `None` where
/// there is no such cast (or a type this door does not bind).
pub fn cast_types(sql: &str, n: usize) -> Vec<Option<Type>> {
    let mut out = vec![None; n];
    for (_, end, i) in placeholders(sql) {
        let Some(slot) = i.checked_sub(1).and_then(|k| out.get_mut(k)) else {
            continue;
        };
        let rest = sql[end..].trim_start();
        let Some(rest) = rest.strip_prefix("::") else {
            continue;
        };
        let rest = rest.trim_start();
        let word_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let mut name = rest[..word_end].to_ascii_lowercase();
        let mut after = rest[word_end..].trim_start();
        // Two-word names.
        for (first, second, whole) in [
            ("double", "precision", "float8"),
            ("character", "varying", "varchar"),
        ] {
            if name == first
                && after.len() >= second.len()
                && after[..second.len()].eq_ignore_ascii_case(second)
            {
                name = whole.to_string();
                after = after[second.len()..].trim_start();
            }
        }
        let array = after.starts_with("[]");
        if slot.is_none() {
            *slot = type_named(name.trim_start_matches("pg_catalog."), array);
        }
    }
    out
}

/// A PostgreSQL type by name (`int4`, `integer`, `text`, …), or its array type.
fn type_named(name: &str, array: bool) -> Option<Type> {
    let (one, many) = match name {
        "text" | "varchar" | "name" | "bpchar" | "char" | "character" => {
            (Type::TEXT, Type::TEXT_ARRAY)
        }
        "int2" | "smallint" => (Type::INT2, Type::INT2_ARRAY),
        "int4" | "int" | "integer" => (Type::INT4, Type::INT4_ARRAY),
        "int8" | "bigint" => (Type::INT8, Type::INT8_ARRAY),
        "oid" => (Type::OID, Type::OID_ARRAY),
        "float4" | "real" => (Type::FLOAT4, Type::FLOAT4_ARRAY),
        "float8" => (Type::FLOAT8, Type::FLOAT8_ARRAY),
        "bool" | "boolean" => (Type::BOOL, Type::BOOL_ARRAY),
        "numeric" | "decimal" if !array => (Type::NUMERIC, Type::NUMERIC),
        "timestamp" if !array => (Type::TIMESTAMP, Type::TIMESTAMP),
        "timestamptz" if !array => (Type::TIMESTAMPTZ, Type::TIMESTAMPTZ),
        "date" if !array => (Type::DATE, Type::DATE),
        "json" | "jsonb" if !array => (Type::JSON, Type::JSON),
        _ => return None,
    };
    Some(if array { many } else { one })
}

/// The length of the opening tag of a dollar-quoted string at the start of `b` (`$$`,
/// `$tag$`; a tag is an identifier that does not start with a digit), if one starts there.
fn dollar_tag(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'$') {
        return None;
    }
    let mut j = 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        if j == 1 && b[j].is_ascii_digit() {
            return None;
        }
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

/// The most parameters a statement may have: a Bind message counts them in 16 bits.
pub const MAX_PARAMETERS: usize = u16::MAX as usize;

/// How many parameters `sql` uses (its highest `$n`); more than [`MAX_PARAMETERS`] is an error
/// (`$2147483647` must not make the server allocate room for two billion).
pub fn count(sql: &str) -> Result<usize> {
    let n = placeholders(sql)
        .iter()
        .map(|&(_, _, n)| n)
        .max()
        .unwrap_or(0);
    if n > MAX_PARAMETERS {
        return Err(PgError::Engine(streamcell_engine::EngineError::Syntax(
            streamcell_sql::SqlError::TooLarge(format!(
                "parameter ${n}: a statement takes at most {MAX_PARAMETERS} parameters"
            )),
        )));
    }
    Ok(n)
}

/// `sql` with each `$n` replaced by `literals[n - 1]`.
pub fn substitute(sql: &str, literals: &[String]) -> Result<String> {
    let mut out = String::with_capacity(sql.len() + 16 * literals.len());
    let mut at = 0;
    for (start, end, n) in placeholders(sql) {
        let lit = n
            .checked_sub(1)
            .and_then(|i| literals.get(i))
            .ok_or_else(|| {
                PgError::BadParameter(format!(
                    "there is no parameter ${n} ({} given)",
                    literals.len()
                ))
            })?;
        out.push_str(&sql[at..start]);
        out.push_str(lit);
        at = end;
    }
    out.push_str(&sql[at..]);
    Ok(out)
}

/// A string as a SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The parameters of a bound portal as SQL literals, reading each value as `types[i]` (the
/// client's type where it gave one, the server's otherwise).
pub fn literals<S: Clone>(portal: &Portal<S>, types: &[Type]) -> Result<Vec<String>> {
    (0..portal.parameter_len())
        .map(|i| literal(portal, i, types.get(i).unwrap_or(&Type::UNKNOWN)))
        .collect()
}

fn bad(i: usize, t: &Type, e: impl std::fmt::Display) -> PgError {
    PgError::BadParameter(format!(
        "parameter ${}: not a valid {}: {e}",
        i + 1,
        t.name()
    ))
}

fn literal<S: Clone>(portal: &Portal<S>, i: usize, t: &Type) -> Result<String> {
    macro_rules! get {
        ($ty:ty, $pg:expr) => {
            portal.parameter::<$ty>(i, &$pg).map_err(|e| bad(i, t, e))?
        };
    }
    let lit = if *t == Type::INT2 {
        get!(i16, Type::INT2).map(|v| v.to_string())
    } else if *t == Type::INT4 {
        get!(i32, Type::INT4).map(|v| v.to_string())
    } else if *t == Type::INT8 {
        get!(i64, Type::INT8).map(|v| v.to_string())
    } else if *t == Type::OID {
        get!(u32, Type::OID).map(|v| v.to_string())
    } else if *t == Type::FLOAT4 {
        get!(f32, Type::FLOAT4).map(|v| float(f64::from(v)))
    } else if *t == Type::FLOAT8 {
        get!(f64, Type::FLOAT8).map(float)
    } else if *t == Type::BOOL {
        get!(bool, Type::BOOL).map(|v| if v { "TRUE".into() } else { "FALSE".into() })
    } else if *t == Type::TIMESTAMP {
        get!(chrono::NaiveDateTime, Type::TIMESTAMP)
            .map(|v| quote(&v.format("%Y-%m-%dT%H:%M:%S%.f").to_string()))
    } else if *t == Type::TIMESTAMPTZ {
        get!(chrono::DateTime<chrono::FixedOffset>, Type::TIMESTAMPTZ).map(|v| {
            let v = v.with_timezone(&chrono::Utc);
            quote(&v.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
        })
    } else if *t == Type::DATE {
        get!(chrono::NaiveDate, Type::DATE).map(|v| quote(&v.to_string()))
    } else if *t == Type::JSON || *t == Type::JSONB {
        get!(serde_json::Value, Type::JSON).map(|v| quote(&v.to_string()))
    } else if let Some(elem) = array_element(t) {
        return array_literal(portal, i, t, &elem);
    } else if *t == Type::NUMERIC {
        // Text form only (the binary NUMERIC layout is not decoded): checked as a number.
        match portal.parameter::<String>(i, &Type::TEXT) {
            Ok(Some(s)) => {
                s.trim()
                    .parse::<f64>()
                    .map_err(|e| bad(i, t, format!("{s:?}: {e}")))?;
                Some(s.trim().to_string())
            }
            Ok(None) => None,
            Err(e) => return Err(bad(i, t, e)),
        }
    } else {
        // text, varchar, unknown (psql's \bind, untyped drivers) and anything else: a string.
        let raw = portal.parameters.get(i).cloned().flatten();
        match raw {
            None => None,
            Some(bytes) => Some(quote(
                std::str::from_utf8(&bytes).map_err(|e| bad(i, t, e))?,
            )),
        }
    };
    Ok(lit.unwrap_or_else(|| "NULL".to_string()))
}

/// The element type of the array types parameters may have (`text[]`, `int8[]`, …).
fn array_element(t: &Type) -> Option<Type> {
    let pairs = [
        (Type::TEXT_ARRAY, Type::TEXT),
        (Type::VARCHAR_ARRAY, Type::TEXT),
        (Type::NAME_ARRAY, Type::TEXT),
        (Type::CHAR_ARRAY, Type::TEXT),
        (Type::BPCHAR_ARRAY, Type::TEXT),
        (Type::INT2_ARRAY, Type::INT2),
        (Type::INT4_ARRAY, Type::INT4),
        (Type::INT8_ARRAY, Type::INT8),
        (Type::OID_ARRAY, Type::OID),
        (Type::FLOAT4_ARRAY, Type::FLOAT4),
        (Type::FLOAT8_ARRAY, Type::FLOAT8),
        (Type::BOOL_ARRAY, Type::BOOL),
    ];
    pairs.into_iter().find(|(a, _)| a == t).map(|(_, e)| e)
}

/// An array parameter (`{r,v}` in text form, or PostgreSQL's binary array layout) as an
/// `ARRAY[…]` of element literals.
fn array_literal<S: Clone>(portal: &Portal<S>, i: usize, t: &Type, elem: &Type) -> Result<String> {
    macro_rules! items {
        ($ty:ty, $show:expr) => {
            portal
                .parameter::<Vec<Option<$ty>>>(i, t)
                .map_err(|e| bad(i, t, e))?
                .map(|v| {
                    v.into_iter()
                        .map(|x| x.map_or_else(|| "NULL".to_string(), $show))
                        .collect::<Vec<String>>()
                })
        };
    }
    let items = if *elem == Type::INT2 {
        items!(i16, |v| v.to_string())
    } else if *elem == Type::INT4 {
        items!(i32, |v| v.to_string())
    } else if *elem == Type::INT8 {
        items!(i64, |v| v.to_string())
    } else if *elem == Type::OID {
        items!(u32, |v| v.to_string())
    } else if *elem == Type::FLOAT4 {
        items!(f32, |v| float(f64::from(v)))
    } else if *elem == Type::FLOAT8 {
        items!(f64, float)
    } else if *elem == Type::BOOL {
        items!(bool, |v| if v { "TRUE".into() } else { "FALSE".into() })
    } else {
        items!(String, |v| quote(&v))
    };
    Ok(match items {
        None => "NULL".to_string(),
        Some(items) => format!("ARRAY[{}]", items.join(", ")),
    })
}

/// A float as a literal DataFusion reads back exactly (`NaN` and infinities as casts).
fn float(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v:?}");
        if s.contains(['.', 'e', 'E']) {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        format!("CAST({} AS DOUBLE)", quote(&v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_outside_quotes_and_comments_only() {
        let sql = "SELECT '$1', \"$2\", $1 -- $3\n, /* $4 */ $2, a$5, $10";
        let found: Vec<usize> = placeholders(sql).iter().map(|p| p.2).collect();
        assert_eq!(found, vec![1, 2, 10]);
        assert_eq!(count(sql).expect("few"), 10);
        assert_eq!(count("SELECT $65535").expect("the most"), 65535);
        assert!(count("SELECT $65536").is_err());
        assert!(count("SELECT $2147483647").is_err());
        assert!(
            count("SELECT $99999999999999999999999").is_ok(),
            "not a number: no parameter"
        );
        assert_eq!(count("SELECT 1").expect("none"), 0);
    }

    #[test]
    fn dollar_quoted_text_holds_no_placeholders() {
        let sql = "INSERT INTO t VALUES ($1, $$ $2 $$, $tag$ $3 $$ $tag$, $4)";
        let found: Vec<usize> = placeholders(sql).iter().map(|p| p.2).collect();
        assert_eq!(found, vec![1, 4]);
        // An unterminated dollar quote hides the rest (the statement then fails to parse).
        assert!(placeholders("SELECT $$ $1").is_empty());
        // `$1$` is not a tag (tags do not start with a digit): $1 is a placeholder.
        assert_eq!(placeholders("SELECT $1$").len(), 1);
    }

    #[test]
    fn substitution_keeps_values_whole() {
        let out = substitute(
            "SELECT * FROM s WHERE a = $1 AND b = $2",
            &[quote("x' OR '1'='1"), "5".into()],
        )
        .unwrap();
        assert_eq!(
            out,
            "SELECT * FROM s WHERE a = 'x'' OR ''1''=''1' AND b = 5"
        );
        assert!(substitute("SELECT $3", &["1".into()]).is_err());
    }

    #[test]
    fn casts_after_placeholders_type_them() {
        let t = cast_types(
            "SELECT $1::text[], $2 :: int8, CAST($3 AS int), $4::double precision, \
             $5::pg_catalog.bool, $6::character varying[], $7::mystery",
            7,
        );
        assert_eq!(
            t,
            vec![
                Some(Type::TEXT_ARRAY),
                Some(Type::INT8),
                None,
                Some(Type::FLOAT8),
                Some(Type::BOOL),
                Some(Type::TEXT_ARRAY),
                None
            ]
        );
        assert_eq!(
            cast_types("SELECT $2::int", 1),
            vec![None],
            "beyond n: ignored"
        );
    }

    #[test]
    fn floats_read_back_exactly() {
        assert_eq!(float(2.0), "2.0");
        assert_eq!(float(0.1), "0.1");
        assert!(float(f64::NAN).starts_with("CAST("));
    }
}
