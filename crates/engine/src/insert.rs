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
        // VALUES with ORDER BY, LIMIT, OFFSET, FETCH or WITH is a query like any other.
        let plain_values = source.with.is_none()
            && source.order_by.is_none()
            && source.limit_clause.is_none()
            && source.fetch.is_none();
        let rows = match source.body.as_ref() {
            SetExpr::Values(values) if plain_values => {
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
                for row in &values.rows {
                    if row.content.len() != columns.len() {
                        return Err(EngineError::invalid(format!(
                            "{} columns but {} values",
                            columns.len(),
                            row.content.len()
                        )));
                    }
                }
                // Plain literals keep the text they were written as; the rows with anything
                // else (casts such as `$1::VARCHAR`, functions, arithmetic) are evaluated by
                // DataFusion in one plan.
                let literals: Vec<Vec<Option<Value>>> = values
                    .rows
                    .iter()
                    .map(|row| row.content.iter().map(|e| literal(e).ok()).collect())
                    .collect();
                let needs: Vec<usize> = (0..literals.len())
                    .filter(|&r| literals[r].iter().any(Option::is_none))
                    .collect();
                let evaluated = self.evaluate_rows(&source, values, &needs).await?;
                let mut rows = Vec::with_capacity(values.rows.len());
                let mut next = evaluated.into_iter();
                for lits in literals {
                    let computed = if lits.iter().any(Option::is_none) {
                        next.next().ok_or_else(|| {
                            EngineError::internal("VALUES evaluated to too few rows")
                        })?
                    } else {
                        Vec::new()
                    };
                    let mut m = JsonRow::new();
                    for (i, (c, v)) in columns.iter().zip(lits).enumerate() {
                        let v = match v {
                            Some(v) => v,
                            None => computed.get(i).cloned().ok_or_else(|| {
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

    /// The rows `which` of `values`, evaluated by DataFusion in one plan (in order, every
    /// column); rows whose types do not unify with the others' are evaluated one by one.
    async fn evaluate_rows(
        &self,
        source: &sql::Query,
        values: &sql::Values,
        which: &[usize],
    ) -> Result<Vec<Vec<Value>>> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        // The query without its rows, so that each plan below copies only the rows it runs.
        let mut shell = values.clone();
        shell.rows.clear();
        let mut query = source.clone();
        *query.body = SetExpr::Values(shell);
        let plan = |rows: &[usize]| {
            let mut q = query.clone();
            if let SetExpr::Values(v) = q.body.as_mut() {
                v.rows = rows.iter().map(|&r| values.rows[r].clone()).collect();
            }
            q
        };
        let collect = |batches: Vec<arrow::array::RecordBatch>| -> Result<Vec<Vec<Value>>> {
            let mut out = Vec::new();
            for b in &batches {
                for r in 0..b.num_rows() {
                    out.push(
                        (0..b.num_columns())
                            .map(|i| value::cell_value(b.column(i).as_ref(), r))
                            .collect::<Result<Vec<_>>>()?,
                    );
                }
            }
            Ok(out)
        };
        match self.pull.run(&plan::session(), &plan(which)).await {
            Ok((_, batches)) => {
                let out = collect(batches)?;
                if out.len() == which.len() {
                    return Ok(out);
                }
                Err(EngineError::internal(
                    "VALUES evaluated to a different number of rows",
                ))
            }
            // One row at a time: each row's own types, and the error names the row at fault.
            Err(_) if which.len() > 1 => {
                let mut out = Vec::with_capacity(which.len());
                for &r in which {
                    let (_, batches) = self.pull.run(&plan::session(), &plan(&[r])).await?;
                    out.extend(collect(batches)?);
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
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
