//! Binding and planning: turns a `SELECT` into a continuous pipeline. The query is planned by
//! DataFusion against the source's schema (names, types, functions, coercions), and the
//! logical plan is then compiled into the engine's own continuous stages (filter, project,
//! aggregate) that run on every micro-batch. Windows (`TUMBLE`, `HOP` in `FROM`) are taken
//! out of the SQL before DataFusion sees it: the source adds `window_start`/`window_end`
//! columns and the window joins the grouping key.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use sqlparser::ast::{
    self as sql, Expr, FunctionArg, FunctionArgExpr, GroupByExpr, Ident, ObjectName, SetExpr,
    TableFactor,
};

use crate::continuous::aggregate::AggregateStage;
use crate::continuous::stage::Stage;
use crate::continuous::window::{WindowSpec, WINDOW_END, WINDOW_START};
use crate::error::{EngineError, Result};
use crate::value::nullable;

/// What the `FROM` of a continuous query reads.
#[derive(Debug, Clone)]
pub(crate) struct SourceRef {
    /// The stream (the left side of a join).
    pub stream: String,
    /// Its window, if any.
    pub window: Option<WindowSpec>,
    /// A stream-stream join's right side and time bound.
    pub join: Option<JoinRef>,
}

/// The right side of a stream-stream join.
#[derive(Debug, Clone)]
pub(crate) struct JoinRef {
    /// The right stream.
    pub stream: String,
    /// `WITHIN (INTERVAL …)`, ms.
    pub within_ms: i64,
}

/// A `SELECT` with its source and window taken out, ready to plan once the source's schema
/// is known.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The query with `FROM` rewritten to the plain stream name (and the window columns added
    /// to `GROUP BY`).
    pub query: sql::Query,
    /// Its source.
    pub source: SourceRef,
}

/// A compiled continuous query.
pub(crate) struct Pipeline {
    /// Schema of the rows the source feeds in (the stream's columns, then the window columns).
    pub input_schema: SchemaRef,
    /// A stream-stream join the sources feed first (side 0: `input_schema`'s stream).
    pub join: Option<crate::continuous::join::JoinStage>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// Schema of the rows that come out.
    pub output_schema: SchemaRef,
    /// Whether the pipeline aggregates (its output is a changelog keyed by group).
    pub aggregates: bool,
    /// Names of the columns the plan refers to anywhere (sources need decode no others);
    /// `None`: every column.
    pub columns_read: Option<std::collections::HashSet<String>>,
}

/// Most memory the operators of one query (hash tables, sorts, joins) may hold; past it the
/// query fails with "Resources exhausted" instead of taking the machine's memory.
pub(crate) const MAX_QUERY_MEMORY_BYTES: usize = 1 << 30;

/// A session configured for StreamCell SQL: identifiers are case-sensitive, as in HStream;
/// its operators share a memory pool of [`MAX_QUERY_MEMORY_BYTES`].
pub(crate) fn session() -> SessionContext {
    let config = SessionConfig::new()
        .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
        .set_bool("datafusion.execution.coalesce_batches", false)
        .with_target_partitions(1)
        .with_information_schema(false);
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(YieldEverywhere));
    let state = match datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(MAX_QUERY_MEMORY_BYTES, 1.0)
        .build_arc()
    {
        Ok(rt) => state.with_runtime_env(rt),
        Err(e) => {
            tracing::warn!("a query runs without a memory limit: {e}");
            state
        }
    };
    let ctx = SessionContext::new_with_state(state.build());
    for udf in crate::json::udfs() {
        ctx.register_udf(udf);
    }
    for udaf in crate::continuous::topk::udafs() {
        ctx.register_udaf(udaf);
    }
    ctx
}

/// Finds the source of a continuous query and rewrites its `FROM`. `within` holds the
/// `WITHIN (…)` bound of each join, in order.
pub(crate) fn prepare(query: &sql::Query, within: &[Expr]) -> Result<Prepared> {
    let mut query = query.clone();
    hstream_functions(&mut query)?;
    if query.with.is_some() {
        return Err(EngineError::invalid(
            "WITH (common table expressions) is not supported in continuous queries",
        ));
    }
    if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(EngineError::invalid(
            "ORDER BY and LIMIT are not supported in continuous queries (they never end); \
             use them in a pull query on a view",
        ));
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(EngineError::invalid(
            "a continuous query must be a single SELECT (no UNION, VALUES)",
        ));
    };
    if select.from.len() != 1 {
        return Err(EngineError::invalid(if select.from.is_empty() {
            "a continuous query needs a stream in FROM".to_string()
        } else {
            "a continuous query reads one stream (FROM a, b is not supported; joins need \
             JOIN … WITHIN)"
                .to_string()
        }));
    }
    let from = &mut select.from[0];
    let join = match from.joins.as_slice() {
        [] => None,
        [j] => {
            let TableFactor::Table {
                name, args: None, ..
            } = &j.relation
            else {
                return Err(EngineError::invalid(
                    "a stream-stream join joins two streams (no windows or subqueries)",
                ));
            };
            let bound = within.first().ok_or_else(|| {
                EngineError::invalid(
                    "a stream-stream join needs a time bound: … JOIN b ON … WITHIN (INTERVAL 1 \
                     MINUTE)",
                )
            })?;
            use sql::JoinOperator as J;
            match &j.join_operator {
                J::Join(_)
                | J::Inner(_)
                | J::Left(_)
                | J::LeftOuter(_)
                | J::Right(_)
                | J::RightOuter(_)
                | J::FullOuter(_) => {}
                other => {
                    return Err(EngineError::invalid(format!(
                        "{} is not supported in continuous queries (INNER, LEFT, RIGHT and FULL \
                         joins are)",
                        other_join_name(other)
                    )))
                }
            }
            Some(JoinRef {
                stream: object_name(name)?,
                within_ms: interval_ms(bound)?,
            })
        }
        _ => {
            return Err(EngineError::invalid(
                "a continuous query joins at most two streams",
            ))
        }
    };
    if join.is_none() && !within.is_empty() {
        return Err(EngineError::invalid("WITHIN (…) only follows a JOIN"));
    }
    let (stream, window) = match &mut from.relation {
        TableFactor::Table { name, args, .. } => match args.take() {
            None => (object_name(name)?, None),
            Some(targs) => {
                let func = object_name(name)?.to_ascii_uppercase();
                let (stream, window) = window_of(&func, &targs.args)?;
                *name = ObjectName::from(vec![Ident::new(stream.clone())]);
                (stream, Some(window))
            }
        },
        _ => {
            return Err(EngineError::invalid(
                "a continuous query reads a stream (or TUMBLE/HOP of a stream) in FROM; \
                 subqueries are not supported yet",
            ))
        }
    };
    if window.is_some() && join.is_some() {
        return Err(EngineError::invalid(
            "windows over a join are not supported yet",
        ));
    }
    if window.is_some() {
        // The window is part of every group: add window_start/window_end to GROUP BY.
        let has_aggregate = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
            || select_has_aggregate(select);
        if has_aggregate {
            if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
                for col in [WINDOW_START, WINDOW_END] {
                    let present = exprs
                        .iter()
                        .any(|e| matches!(e, Expr::Identifier(i) if i.value == col));
                    if !present {
                        exprs.push(Expr::Identifier(Ident::new(col)));
                    }
                }
            } else {
                return Err(EngineError::invalid("GROUP BY ALL is not supported"));
            }
        }
    }
    Ok(Prepared {
        query,
        source: SourceRef {
            stream,
            window,
            join,
        },
    })
}

/// A rough test for aggregate calls in a SELECT list (the planner decides for real; this only
/// decides whether the window columns join the grouping key).
pub(crate) fn select_has_aggregate(select: &sql::Select) -> bool {
    const AGGS: [&str; 7] = ["count", "sum", "avg", "min", "max", "topk", "topkdistinct"];
    let text = select
        .projection
        .iter()
        .map(|p| p.to_string().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    AGGS.iter().any(|a| {
        text.match_indices(a).any(|(i, _)| {
            let before_ok = i == 0
                || !text.as_bytes()[i - 1].is_ascii_alphanumeric()
                    && text.as_bytes()[i - 1] != b'_';
            let after = text[i + a.len()..].trim_start();
            before_ok && after.starts_with('(')
        })
    })
}

fn other_join_name(op: &sql::JoinOperator) -> &'static str {
    use sql::JoinOperator as J;
    match op {
        J::CrossJoin(_) => "CROSS JOIN",
        J::Semi(_) | J::LeftSemi(_) | J::RightSemi(_) => "a SEMI join",
        J::Anti(_) | J::LeftAnti(_) | J::RightAnti(_) => "an ANTI join",
        _ => "this join",
    }
}

/// The one-part name of a stream, view or query.
pub(crate) fn object_name(name: &ObjectName) -> Result<String> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(|i| i.value.clone())
            .ok_or_else(|| EngineError::invalid(format!("{name} is not a valid name"))),
        _ => Err(EngineError::invalid(format!(
            "{name}: qualified names are not supported here"
        ))),
    }
}

fn window_of(func: &str, args: &[FunctionArg]) -> Result<(String, WindowSpec)> {
    let exprs: Vec<&Expr> = args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            other => Err(EngineError::invalid(format!(
                "{func}: unexpected argument {other}"
            ))),
        })
        .collect::<Result<_>>()?;
    let stream_of = |e: &Expr| match e {
        Expr::Identifier(i) => Ok(i.value.clone()),
        other => Err(EngineError::invalid(format!(
            "{func}: the first argument must be a stream name, not {other}"
        ))),
    };
    let column_of = |e: &Expr| match e {
        Expr::Identifier(i) => Ok(i.value.clone()),
        other => Err(EngineError::invalid(format!(
            "{func}: the time column must be a column name, not {other}"
        ))),
    };
    match (func, exprs.as_slice()) {
        ("TUMBLE" | "TUMBLING", [s, size, rest @ ..]) if rest.len() <= 1 => {
            let size_ms = interval_ms(size)?;
            Ok((
                stream_of(s)?,
                WindowSpec {
                    size_ms,
                    hop_ms: size_ms,
                    time_column: rest.first().map(|c| column_of(c)).transpose()?,
                    session_gap_ms: None,
                },
            ))
        }
        ("HOP" | "HOPPING", [s, size, hop, rest @ ..]) if rest.len() <= 1 => {
            let size_ms = interval_ms(size)?;
            let hop_ms = interval_ms(hop)?;
            if hop_ms > size_ms {
                return Err(EngineError::invalid(format!(
                    "HOP: the hop ({hop}) must not be longer than the window ({size})"
                )));
            }
            if size_ms / hop_ms > 1000 {
                return Err(EngineError::invalid(
                    "HOP: a record may fall in at most 1000 windows (size / hop)",
                ));
            }
            Ok((
                stream_of(s)?,
                WindowSpec {
                    size_ms,
                    hop_ms,
                    time_column: rest.first().map(|c| column_of(c)).transpose()?,
                    session_gap_ms: None,
                },
            ))
        }
        ("SESSION", [s, gap, rest @ ..]) if rest.len() <= 1 => {
            let gap_ms = interval_ms(gap)?;
            Ok((
                stream_of(s)?,
                WindowSpec {
                    size_ms: gap_ms,
                    hop_ms: gap_ms,
                    time_column: rest.first().map(|c| column_of(c)).transpose()?,
                    session_gap_ms: Some(gap_ms),
                },
            ))
        }
        ("SESSION", _) => Err(EngineError::invalid(
            "SESSION takes (stream, INTERVAL gap [, time_column])",
        )),
        ("SLIDING", _) => Err(EngineError::invalid(
            "SLIDING windows are not supported (TUMBLE, HOP and SESSION are)",
        )),
        ("TUMBLE" | "TUMBLING", _) => Err(EngineError::invalid(
            "TUMBLE takes (stream, INTERVAL size [, time_column])",
        )),
        ("HOP" | "HOPPING", _) => Err(EngineError::invalid(
            "HOP takes (stream, INTERVAL size, INTERVAL hop [, time_column])",
        )),
        _ => Err(EngineError::invalid(format!(
            "unknown table function {func} (windows are TUMBLE, HOP and SESSION)"
        ))),
    }
}

/// Milliseconds in an `INTERVAL n UNIT` (or `INTERVAL 'n' UNIT`, `INTERVAL 'n UNIT'`).
pub(crate) fn interval_ms(e: &Expr) -> Result<i64> {
    let bad = || {
        EngineError::invalid(format!(
            "expected an interval such as INTERVAL 10 SECOND, found {e}"
        ))
    };
    let Expr::Interval(iv) = e else {
        return Err(bad());
    };
    let raw = match iv.value.as_ref() {
        Expr::Value(v) => match &v.value {
            sql::Value::Number(n, _) => n.clone(),
            sql::Value::SingleQuotedString(s) => s.clone(),
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    let words: Vec<&str> = raw.split_whitespace().collect();
    let (num, unit_text) = match (&iv.leading_field, words.as_slice()) {
        (Some(f), [n]) => (n.to_string(), f.to_string()),
        (None, [n, u]) => (n.to_string(), u.to_string()),
        _ => return Err(bad()),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit_text.to_ascii_uppercase();
    let unit_ms: f64 = match unit.trim_end_matches('S') {
        "MILLISECOND" => 1.0,
        "SECOND" => 1e3,
        "MINUTE" => 60e3,
        "HOUR" => 3600e3,
        "DAY" => 86_400e3,
        "WEEK" => 7.0 * 86_400e3,
        "MONTH" => 30.0 * 86_400e3,
        "YEAR" => 365.0 * 86_400e3,
        _ => return Err(bad()),
    };
    let ms = n * unit_ms;
    if !(1.0..1e15).contains(&ms) {
        return Err(EngineError::invalid(format!(
            "interval {e} must be at least 1 millisecond"
        )));
    }
    Ok(ms as i64)
}

/// The schema the source feeds into the pipeline: the stream's columns, plus the window
/// columns for a windowed query.
pub(crate) fn input_schema(
    stream_schema: &Schema,
    window: Option<&WindowSpec>,
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = stream_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    if window.is_some() {
        for name in [WINDOW_START, WINDOW_END] {
            if stream_schema.field_with_name(name).is_ok() {
                return Err(EngineError::invalid(format!(
                    "the stream has a column named {name}, which a window adds too"
                )));
            }
            fields.push(Field::new(
                name,
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Plans `query` (already [`prepare`]d) with DataFusion over empty tables of the source
/// schemas (a join has two), and returns the analyzed logical plan.
pub(crate) async fn logical_plan(
    ctx: &SessionContext,
    tables: &[(String, SchemaRef)],
    query: &sql::Query,
) -> Result<LogicalPlan> {
    for (table, schema) in tables {
        let reference = datafusion::common::TableReference::bare(table.as_str());
        if ctx.table_exist(reference.clone())? {
            continue;
        }
        let empty = datafusion::datasource::MemTable::try_new(schema.clone(), vec![vec![]])?;
        ctx.register_table(reference, Arc::new(empty))?;
    }
    let state = ctx.state();
    let stmt = DfStatement::Statement(Box::new(sql::Statement::Query(Box::new(query.clone()))));
    let plan = state.statement_to_plan(stmt).await?;
    let analyzed = state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})?;
    // Expression simplification only (some functions, such as coalesce, exist only in a
    // simplified form at execution); no other rewrite, so the plan keeps its shape.
    use datafusion::common::tree_node::TreeNode;
    use datafusion::optimizer::OptimizerRule;
    let rule = datafusion::optimizer::simplify_expressions::SimplifyExpressions::new();
    let simplified = analyzed.transform_up(|p| rule.rewrite(p, &state))?.data;
    // A join's `a.k = b.k` conjuncts become its equi-join keys (the join operator indexes
    // its buffers by them).
    let equi = datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate::new();
    let plan = simplified.transform_up(|p| equi.rewrite(p, &state))?.data;
    Ok(plan)
}

/// Compiles an analyzed logical plan into continuous stages. `per_row`: an aggregate emits
/// one updated row per input row (`EMIT CHANGES`) rather than one per changed group;
/// `within_ms`: the bound of the stream-stream join in `FROM`, if any.
pub(crate) fn compile(
    ctx: &SessionContext,
    plan: &LogicalPlan,
    input_schema: SchemaRef,
    per_row: bool,
    within_ms: Option<i64>,
) -> Result<Pipeline> {
    let state = ctx.state();
    let mut stages = Vec::new();
    let mut aggregates = false;
    let mut join = None;
    compile_node(
        &state,
        plan,
        per_row,
        &mut stages,
        &mut aggregates,
        within_ms,
        &mut join,
    )?;
    if within_ms.is_some() && join.is_none() {
        return Err(EngineError::internal("the join was not planned as a join"));
    }
    let input_schema = match &join {
        Some(j) => j.side_schema(0),
        None => input_schema,
    };
    Ok(Pipeline {
        join,
        input_schema,
        stages,
        output_schema: nullable(plan.schema().as_arrow()),
        aggregates,
        columns_read: columns_read(plan),
    })
}

/// The names of every column any expression of the plan (or of its subqueries) refers to,
/// and of its output. A superset of what the sources must provide (a name is taken whatever
/// its qualifier), which is what matters: a column left out would read as NULL. `None`: all.
fn columns_read(plan: &LogicalPlan) -> Option<std::collections::HashSet<String>> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut names: std::collections::HashSet<String> = plan
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            for c in e.column_refs() {
                names.insert(c.name.clone());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    Some(names)
}

fn physical(
    state: &datafusion::execution::SessionState,
    e: &datafusion::logical_expr::Expr,
    schema: &datafusion::common::DFSchema,
) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(state.create_physical_expr(e.clone(), schema)?)
}

fn compile_node(
    state: &datafusion::execution::SessionState,
    plan: &LogicalPlan,
    per_row: bool,
    stages: &mut Vec<Stage>,
    aggregates: &mut bool,
    within_ms: Option<i64>,
    join: &mut Option<crate::continuous::join::JoinStage>,
) -> Result<()> {
    match plan {
        LogicalPlan::Join(j) => {
            let Some(within) = within_ms else {
                return Err(EngineError::invalid(
                    "joins are not supported in continuous queries without WITHIN (…)",
                ));
            };
            if join.is_some() || !stages.is_empty() {
                return Err(EngineError::invalid("a continuous query joins once"));
            }
            for side in [&j.left, &j.right] {
                let mut node = side.as_ref();
                while let LogicalPlan::SubqueryAlias(a) = node {
                    node = a.input.as_ref();
                }
                match node {
                    LogicalPlan::TableScan(scan) if scan.projection.is_none() => {}
                    _ => {
                        return Err(EngineError::invalid(
                            "each side of a stream-stream join must be a stream",
                        ))
                    }
                }
            }
            *join = Some(crate::continuous::join::JoinStage::new(state, j, within)?);
            Ok(())
        }
        LogicalPlan::TableScan(scan) => {
            if !scan.filters.is_empty() || scan.fetch.is_some() {
                return Err(EngineError::internal("unexpected pushed-down scan"));
            }
            if let Some(proj) = &scan.projection {
                let exprs = proj
                    .iter()
                    .map(|&i| {
                        Arc::new(datafusion::physical_expr::expressions::Column::new(
                            scan.source.schema().field(i).name(),
                            i,
                        )) as Arc<dyn PhysicalExpr>
                    })
                    .collect();
                stages.push(Stage::Project {
                    exprs,
                    schema: nullable(scan.projected_schema.as_arrow()),
                });
            }
            Ok(())
        }
        LogicalPlan::SubqueryAlias(a) => compile_node(
            state, &a.input, per_row, stages, aggregates, within_ms, join,
        ),
        LogicalPlan::Projection(p) => {
            compile_node(
                state, &p.input, per_row, stages, aggregates, within_ms, join,
            )?;
            let exprs = p
                .expr
                .iter()
                .map(|e| physical(state, e, p.input.schema()))
                .collect::<Result<Vec<_>>>()?;
            stages.push(Stage::Project {
                exprs,
                schema: nullable(p.schema.as_arrow()),
            });
            Ok(())
        }
        LogicalPlan::Filter(f) => {
            compile_node(
                state, &f.input, per_row, stages, aggregates, within_ms, join,
            )?;
            stages.push(Stage::Filter(physical(
                state,
                &f.predicate,
                f.input.schema(),
            )?));
            Ok(())
        }
        LogicalPlan::Aggregate(a) => {
            compile_node(
                state, &a.input, per_row, stages, aggregates, within_ms, join,
            )?;
            if *aggregates {
                return Err(EngineError::invalid(
                    "an aggregate over an aggregate is not supported in a continuous query",
                ));
            }
            *aggregates = true;
            let stage = AggregateStage::new(state, a, per_row)?;
            stages.push(Stage::Aggregate(Box::new(stage)));
            Ok(())
        }
        LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => Err(EngineError::invalid(
            "ORDER BY and LIMIT are not supported in continuous queries",
        )),
        LogicalPlan::Distinct(_) => Err(EngineError::invalid(
            "SELECT DISTINCT is not supported in continuous queries (use GROUP BY)",
        )),
        LogicalPlan::Window(_) => Err(EngineError::invalid(
            "window functions (… OVER (…)) are not supported in continuous queries; \
             use TUMBLE or HOP in FROM",
        )),
        other => Err(EngineError::invalid(format!(
            "{} is not supported in a continuous query",
            other.display()
        ))),
    }
}

/// HStream SQL's function names that DataFusion spells differently (same arguments).
const RENAMED_FUNCTIONS: [(&str, &str); 13] = [
    ("to_lower", "lower"),
    ("to_upper", "upper"),
    ("left_trim", "ltrim"),
    ("right_trim", "rtrim"),
    ("strlen", "character_length"),
    ("sign", "signum"),
    ("log", "ln"),
    ("array_contain", "array_has"),
    ("array_remove", "array_remove_all"),
    ("array_join", "array_to_string"),
    ("split", "string_to_array"),
    ("datetostring", "to_char"),
    ("stringtodate", "to_timestamp"),
];

/// Rewrites HStream SQL's functions into DataFusion's: renamed functions (`TO_UPPER` →
/// `upper`, `STRLEN` → `character_length`, `LOG` → `ln` (natural, as in HStream), …) and
/// `TO_STR(x)` → `CAST(x AS VARCHAR)`.
pub(crate) fn hstream_functions(query: &mut sql::Query) -> Result<()> {
    use std::ops::ControlFlow;
    crate::json::rewrite_operators(query);
    let mut unsupported: Option<String> = None;
    let _ = sqlparser::ast::visit_expressions_mut(query, |e| {
        if let Expr::Function(f) = e {
            let [part] = f.name.0.as_slice() else {
                return ControlFlow::<()>::Continue(());
            };
            let Some(ident) = part.as_ident() else {
                return ControlFlow::Continue(());
            };
            if ident.quote_style.is_some() {
                return ControlFlow::Continue(());
            }
            let lower = ident.value.to_ascii_lowercase();
            if lower == "to_str" {
                if let sql::FunctionArguments::List(list) = &f.args {
                    if let [sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(arg))] =
                        list.args.as_slice()
                    {
                        *e = Expr::Cast {
                            kind: sql::CastKind::Cast,
                            expr: Box::new(arg.clone()),
                            data_type: sql::DataType::Varchar(None),
                            array: false,
                            format: None,
                        };
                        return ControlFlow::Continue(());
                    }
                }
                unsupported = Some("TO_STR takes one argument".into());
                return ControlFlow::Break(());
            }
            if let Some((_, to)) = RENAMED_FUNCTIONS.iter().find(|(from, _)| *from == lower) {
                f.name = ObjectName::from(vec![Ident::new(*to)]);
            }
        }
        ControlFlow::Continue(())
    });
    match unsupported {
        Some(m) => Err(EngineError::invalid(m)),
        None => Ok(()),
    }
}

/// A physical optimizer rule, run after DataFusion's own: every operator's output stream
/// spends tokio's cooperative budget for each batch it yields (DataFusion's
/// `CooperativeExec` over it). DataFusion's own `EnsureCooperative` covers the leaves, but
/// an operator that makes many batches from few (a cross or nested-loop join, `unnest`)
/// can keep its consumer polling it for as long as the whole query runs without ever
/// returning to the runtime; a pull query whose caller left (a cancel, a
/// `statement_timeout`, a dropped connection) is aborted only when its task yields, so such
/// a query went on computing to its end. With the budget spent at every operator, the task
/// yields at least every 128 batches wherever the work is, and an abort takes effect then.
#[derive(Debug)]
struct YieldEverywhere;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for YieldEverywhere {
    fn optimize(
        &self,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::physical_plan::coop::CooperativeExec;
        use datafusion::physical_plan::ExecutionPlan as _;
        plan.transform_up(|node| {
            if node.children().is_empty() || node.name() == CooperativeExec::static_name() {
                Ok(Transformed::no(node))
            } else {
                Ok(Transformed::yes(Arc::new(CooperativeExec::new(node))))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "streamcell_yield_everywhere"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use datafusion::execution::SendableRecordBatchStream;

    use super::session;

    /// One `poll_next` of `stream`, as the task running it would make.
    struct PollOnce<'a>(&'a mut SendableRecordBatchStream);

    impl Future for PollOnce<'_> {
        type Output = Poll<bool>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Poll<bool>> {
            Poll::Ready(self.0.as_mut().poll_next(cx).map(|b| b.is_some()))
        }
    }

    /// A join that makes many batches from few gives the runtime its turn back long before
    /// the query ends (so an abort of its task takes effect), instead of computing the whole
    /// count in its first poll.
    #[tokio::test]
    async fn a_long_join_yields_to_the_runtime() {
        let ctx = session();
        let df = ctx
            .sql(
                "SELECT count(*) FROM (SELECT unnest(range(1, 3000)) AS a) x \
                 CROSS JOIN (SELECT unnest(range(1, 3000)) AS b) y WHERE a % 7 = b % 5",
            )
            .await
            .expect("plan");
        let mut stream = df.execute_stream().await.expect("stream");
        let first = PollOnce(&mut stream).await;
        assert!(
            first.is_pending(),
            "the whole query ran in one poll without yielding: {first:?}"
        );
    }
}
