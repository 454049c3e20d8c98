//! HStream SQL's JSON operators on columns holding JSON text (objects and arrays in
//! schemaless streams are such columns): `j -> 'key'` and `j -> 0` give the element as JSON
//! text, `j ->> 'key'` as plain text (a string without its quotes), and `j #> '{a,b}'` /
//! `j #>> '{a,b}'` follow a path. A missing key, an index out of range or text that is not
//! JSON give NULL. They are rewritten into the functions `json_get`/`json_get_text` (path
//! operators: `json_path`/`json_path_text`), registered in every session.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use serde_json::Value;
use sqlparser::ast::{self as sql, BinaryOperator, Expr, Ident, ObjectName};

/// The four JSON functions.
pub(crate) fn udfs() -> Vec<ScalarUDF> {
    let make = |name: &str, path: bool, text: bool| {
        create_udf(
            name,
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                Ok(ColumnarValue::Array(lookup(&arrays, path, text)))
            }),
        )
    };
    vec![
        make("json_get", false, false),
        make("json_get_text", false, true),
        make("json_path", true, false),
        make("json_path_text", true, true),
    ]
}

fn lookup(arrays: &[ArrayRef], path: bool, text: bool) -> ArrayRef {
    let docs = arrays[0].as_string::<i32>();
    let keys = arrays[1].as_string::<i32>();
    let mut out = StringBuilder::with_capacity(docs.len(), docs.len() * 8);
    for i in 0..docs.len() {
        if docs.is_null(i) || keys.is_null(i) {
            out.append_null();
            continue;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(docs.value(i)) else {
            out.append_null();
            continue;
        };
        let key = keys.value(i);
        let steps: Vec<&str> = if path {
            key.trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        } else {
            vec![key]
        };
        let mut found = true;
        for step in steps {
            let next = match &mut v {
                Value::Object(m) => m.remove(step),
                Value::Array(a) => step.parse::<i64>().ok().and_then(|ix| {
                    let len = a.len() as i64;
                    let ix = if ix < 0 { len + ix } else { ix };
                    (0..len).contains(&ix).then(|| a.swap_remove(ix as usize))
                }),
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => {
                    found = false;
                    break;
                }
            }
        }
        match (found, v) {
            (false, _) | (true, Value::Null) if text => out.append_null(),
            (false, _) => out.append_null(),
            (true, Value::String(s)) if text => out.append_value(s),
            (true, other) => out.append_value(other.to_string()),
        }
    }
    Arc::new(out.finish())
}

/// Rewrites the JSON operators of a query into the JSON functions.
pub(crate) fn rewrite_operators(query: &mut sql::Query) {
    let _ = sqlparser::ast::visit_expressions_mut(query, |e| {
        if let Expr::BinaryOp { left, op, right } = e {
            let name = match op {
                BinaryOperator::Arrow => Some("json_get"),
                BinaryOperator::LongArrow => Some("json_get_text"),
                BinaryOperator::HashArrow => Some("json_path"),
                BinaryOperator::HashLongArrow => Some("json_path_text"),
                _ => None,
            };
            if let Some(name) = name {
                let key = Expr::Cast {
                    kind: sql::CastKind::Cast,
                    expr: right.clone(),
                    data_type: sql::DataType::Varchar(None),
                    array: false,
                    format: None,
                };
                let args = vec![
                    sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(left.as_ref().clone())),
                    sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(key)),
                ];
                *e = Expr::Function(sql::Function {
                    name: ObjectName::from(vec![Ident::new(name)]),
                    uses_odbc_syntax: false,
                    parameters: sql::FunctionArguments::None,
                    args: sql::FunctionArguments::List(sql::FunctionArgumentList {
                        duplicate_treatment: None,
                        args,
                        clauses: vec![],
                    }),
                    filter: None,
                    null_treatment: None,
                    over: None,
                    within_group: vec![],
                });
            }
        }
        ControlFlow::<()>::Continue(())
    });
}
