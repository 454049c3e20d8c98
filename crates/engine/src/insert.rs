//! Rows written into streams and tables by SQL: `INSERT … VALUES`, `INSERT … SELECT` and
//! HStreamDB's `INSERT INTO s VALUES '<json>'`. Rows are checked against the stream's declared
//! columns, then appended through the stream service ([`crate::writer`]).

use serde_json::Value;
use sqlparser::ast::{self as sql, Expr, SetExpr};

use crate::continuous::plan;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::value::{self, JsonRow};

impl Engine {
    /// `INSERT INTO s VALUES '<json>'`: one JSON object.
    pub(crate) async fn insert_json(&self, stream: &str, json: &str) -> Result<()> {
        let mut row = match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(EngineError::invalid(
                    "INSERT … VALUES '<json>' takes a JSON object",
                ))
            }
            Err(e) => return Err(EngineError::invalid(format!("invalid JSON: {e}"))),
        };
        self.ctx.conform_declared(stream, &mut row)?;
        crate::writer::append_rows(&self.ctx.service, stream, &[row], |_| Vec::new()).await?;
        Ok(())
    }

    /// `INSERT INTO s [(columns)] VALUES (…), …` or `INSERT INTO s SELECT …`.
    pub(crate) async fn insert_into_stream(&self, insert: sql::Insert) -> Result<()> {
        let stream = match &insert.table {
            sql::TableObject::TableName(n) => plan::object_name(n)?,
            other => return Err(EngineError::invalid(format!("cannot insert into {other}"))),
        };
        if self.ctx.catalog.get_stream(&stream)?.is_none() {
            return Err(EngineError::NotFound(format!(
                "stream {stream:?} does not exist (CREATE STREAM {stream}; first)"
            )));
        }
        let Some(source) = insert.source else {
            return Err(EngineError::invalid("INSERT needs VALUES or a SELECT"));
        };
        let columns: Vec<String> = insert.columns.iter().map(|c| c.to_string()).collect();
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].contains(c) {
                return Err(EngineError::invalid(format!("column {c:?} is given twice")));
            }
        }
        let rows = match source.body.as_ref() {
            SetExpr::Values(values) => {
                let columns = if columns.is_empty() {
                    match self.ctx.declared_schema(&stream)? {
                        Some(s) => s.fields().iter().map(|f| f.name().clone()).collect(),
                        None => {
                            return Err(EngineError::invalid(format!(
                                "stream {stream:?} has no declared columns: name them, \
                                 INSERT INTO {stream} (col, …) VALUES (…)"
                            )))
                        }
                    }
                } else {
                    columns
                };
                let mut rows = Vec::with_capacity(values.rows.len());
                for row in &values.rows {
                    if row.content.len() != columns.len() {
                        return Err(EngineError::invalid(format!(
                            "{} columns but {} values",
                            columns.len(),
                            row.content.len()
                        )));
                    }
                    let mut m = JsonRow::new();
                    let literals: Vec<Option<Value>> =
                        row.content.iter().map(|e| literal(e).ok()).collect();
                    // Casts, functions and arithmetic (`$1::VARCHAR`, `now()`, `-(2 * 3)`):
                    // the row is evaluated once by DataFusion; plain literals keep the text
                    // they were written as.
                    let evaluated = if literals.iter().any(Option::is_none) {
                        let mut one = values.clone();
                        one.rows = vec![row.clone()];
                        let mut q = (*source).clone();
                        *q.body = SetExpr::Values(one);
                        let (_, batches) = self.pull.run(&plan::session(), &q).await?;
                        let b = batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| {
                            EngineError::internal("a VALUES row evaluated to no row")
                        })?;
                        (0..b.num_columns())
                            .map(|i| value::cell_value(b.column(i).as_ref(), 0))
                            .collect::<Result<Vec<_>>>()?
                    } else {
                        Vec::new()
                    };
                    for (i, (c, v)) in columns.iter().zip(literals).enumerate() {
                        let v = match v {
                            Some(v) => v,
                            None => evaluated.get(i).cloned().ok_or_else(|| {
                                EngineError::internal("a VALUES row evaluated to too few columns")
                            })?,
                        };
                        m.insert(c.clone(), v);
                    }
                    self.ctx.conform_declared(&stream, &mut m)?;
                    rows.push(m);
                }
                rows
            }
            _ => {
                let ctx = plan::session();
                let (names, batches) = self.pull.run(&ctx, &source).await?;
                let mut rows = Vec::new();
                for b in &batches {
                    for r in 0..b.num_rows() {
                        let mut obj = value::row_object(b, r)?;
                        if !columns.is_empty() {
                            if columns.len() != names.len() {
                                return Err(EngineError::invalid(format!(
                                    "{} columns but the SELECT gives {}",
                                    columns.len(),
                                    names.len()
                                )));
                            }
                            obj = columns
                                .iter()
                                .zip(obj)
                                .map(|(c, (_, v))| (c.clone(), v))
                                .collect();
                        }
                        self.ctx.conform_declared(&stream, &mut obj)?;
                        rows.push(obj);
                    }
                }
                rows
            }
        };
        crate::writer::append_rows(&self.ctx.service, &stream, &rows, |_| Vec::new()).await?;
        Ok(())
    }
}

/// A JSON value from a literal in `VALUES`.
pub(crate) fn literal(e: &Expr) -> Result<Value> {
    use sql::Value as V;
    match e {
        Expr::Value(v) => match &v.value {
            V::Number(n, _) => {
                if let Ok(i) = n.parse::<i64>() {
                    Ok(Value::from(i))
                } else {
                    n.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| EngineError::invalid(format!("bad number {n}")))
                }
            }
            V::SingleQuotedString(s) | V::DoubleQuotedString(s) => Ok(Value::String(s.clone())),
            V::Boolean(b) => Ok(Value::Bool(*b)),
            V::Null => Ok(Value::Null),
            other => Err(EngineError::invalid(format!(
                "unsupported literal {other} in VALUES"
            ))),
        },
        Expr::UnaryOp {
            op: sql::UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(Value::from(-i))
                } else {
                    Ok(serde_json::Number::from_f64(-n.as_f64().unwrap_or(0.0))
                        .map_or(Value::Null, Value::Number))
                }
            }
            _ => Err(EngineError::invalid(format!("cannot negate {expr}"))),
        },
        Expr::Identifier(i) if i.quote_style == Some('"') => Ok(Value::String(i.value.clone())),
        Expr::Array(a) => Ok(Value::Array(
            a.elem.iter().map(literal).collect::<Result<_>>()?,
        )),
        other => Err(EngineError::invalid(format!(
            "VALUES takes literals (numbers, 'strings', TRUE, FALSE, NULL), not {other}"
        ))),
    }
}
