//! PostgreSQL's catalogs made from StreamCell's streams, views and baskets, so `psql`'s `\d`
//! commands, Grafana's query editor and drivers' metadata calls see them.
//!
//! A statement that reads `pg_catalog` or `information_schema` (or calls one of their
//! functions, such as `current_database()`) runs here on DataFusion, over tables built at
//! that moment: `pg_namespace`, `pg_class`, `pg_attribute`, `pg_type`, `pg_database`,
//! `pg_roles`/`pg_user`, `pg_am`, `pg_settings`, the relation-related catalogs psql asks
//! about (empty: StreamCell has no indexes, constraints, triggers, policies, inheritance or
//! publications), and `information_schema.schemata`/`tables`/`columns`/`views`. Before
//! planning, PostgreSQL-only spellings are rewritten: `OPERATOR(pg_catalog.~)` to `~`,
//! `COLLATE pg_catalog.default` dropped, `pg_catalog.` prefixes dropped, casts to
//! `regclass`/`regtype`/`oid`/`name`/`"char"` made plain, and PostgreSQL's array literals in
//! text form (`'{r,v}'::text[]`, `= ANY('{r,v}')`) made arrays. A catalog query DataFusion
//! still cannot plan answers with its select list's columns and no rows (psql then prints an
//! empty section instead of failing; drivers read "not there").
//!
//! Streams and tables are relations of kind `r` in schema `public`, views `v`, baskets `r`
//! in schema `datacell`. Object ids are stable within one answer only.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Int16Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use streamcell_engine::{Engine, Relation};

use crate::compat::Settings;
use crate::encode::Kind;
use crate::error::{PgError, Result};

/// The database name StreamCell reports.
pub const DATABASE: &str = "streamcell";
/// The one role.
pub const ROLE: &str = "streamcell";

const NS_CATALOG: i32 = 11;
const NS_PUBLIC: i32 = 2200;
const NS_INFORMATION_SCHEMA: i32 = 13_000;
const NS_DATACELL: i32 = 16_300;
const ROLE_OID: i32 = 10;
const FIRST_RELATION_OID: i32 = 16_384;

/// Whether `sql` reads PostgreSQL's catalogs (and so runs here): a name in it (not a string
/// literal or a comment) is a catalog, a catalog schema or one of their functions. Text that
/// does not tokenize is not a catalog query (the engine reports the error).
pub fn is_catalog_query(sql: &str) -> bool {
    use sqlparser::tokenizer::{Token, Tokenizer};
    const NAMES: [&str; 23] = [
        "pg_advisory_unlock_all",
        "pg_advisory_unlock",
        "pg_advisory_unlock_shared",
        "current_setting",
        "pg_catalog",
        "information_schema",
        "pg_class",
        "pg_namespace",
        "pg_attribute",
        "pg_type",
        "pg_database",
        "pg_roles",
        "pg_user",
        "pg_settings",
        "pg_tables",
        "current_database",
        "current_schema",
        "current_user",
        "session_user",
        "pg_backend_pid",
        "has_table_privilege",
        "pg_is_in_recovery",
        "format_type",
    ];
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return false;
    };
    tokens.iter().any(|t| match t {
        Token::Word(w) => {
            let name = w.value.to_ascii_lowercase();
            NAMES.iter().any(|n| name.starts_with(n))
        }
        _ => false,
    })
}

/// `sql` with PostgreSQL-only spellings replaced by what DataFusion reads.
pub fn rewrite(sql: &str) -> String {
    let mut s = sql.to_string();
    for (from, to) in [
        ("OPERATOR(pg_catalog.~)", "~"),
        ("OPERATOR(pg_catalog.!~)", "!~"),
        ("OPERATOR(pg_catalog.~*)", "~*"),
        ("OPERATOR(pg_catalog.=)", "="),
        (" COLLATE pg_catalog.default", ""),
        ("pg_catalog.", ""),
        ("::regclass", ""),
        ("::regtype", ""),
        ("::regproc", ""),
        ("::regnamespace", ""),
        ("::oid", "::bigint"),
        ("::name", "::text"),
        ("::\"char\"", "::text"),
        ("::char", "::text"),
    ] {
        s = replace_ignore_case(&s, from, to);
    }
    s
}

fn replace_ignore_case(s: &str, from: &str, to: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let needle = from.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find(&needle) {
        out.push_str(&s[at..at + i]);
        out.push_str(to);
        at += i + needle.len();
    }
    out.push_str(&s[at..]);
    out
}

/// `sql` with PostgreSQL's array literals in text form (`'{r,v}'::text[]`, `= ANY('{r,v}')`)
/// made `ARRAY[…]` (`streamcell_sql::arrays`); a malformed one is `22P02`, as in PostgreSQL.
fn array_literals(sql: &str) -> Result<String> {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let mut stmts = sqlparser::parser::Parser::parse_sql(&dialect, sql)
        .map_err(|e| PgError::Syntax(e.to_string()))?;
    streamcell_sql::arrays::rewrite_array_literals(&mut stmts).map_err(PgError::BadParameter)?;
    Ok(stmts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; "))
}

/// Wraps each scalar subquery's single unaggregated output in `max(…)`: PostgreSQL runs a
/// correlated scalar subquery that returns at most one row as is, DataFusion wants it
/// aggregated (psql's `\d` asks for column defaults and collations that way).
fn aggregate_scalar_subqueries(sql: &str) -> Option<String> {
    use sqlparser::ast::{
        Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
        GroupByExpr, ObjectName, SelectItem, SetExpr, VisitMut, VisitorMut,
    };
    use std::ops::ControlFlow;
    struct Wrap;
    impl VisitorMut for Wrap {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            let Expr::Subquery(q) = e else {
                return ControlFlow::Continue(());
            };
            let SetExpr::Select(select) = q.body.as_mut() else {
                return ControlFlow::Continue(());
            };
            // Over a catalog StreamCell keeps empty, the answer is NULL (0 for a count).
            let reads_empty = select.from.iter().any(|t| {
                std::iter::once(&t.relation)
                    .chain(t.joins.iter().map(|j| &j.relation))
                    .any(|r| match r {
                        sqlparser::ast::TableFactor::Table { name, .. } => {
                            name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                                EMPTY_CATALOGS.contains(&i.value.to_ascii_lowercase().as_str())
                            })
                        }
                        _ => false,
                    })
            });
            if reads_empty && select.projection.len() == 1 {
                let counts = select.projection[0]
                    .to_string()
                    .to_ascii_lowercase()
                    .starts_with("count(");
                *e = Expr::Value(
                    if counts {
                        sqlparser::ast::Value::Number("0".into(), false)
                    } else {
                        sqlparser::ast::Value::Null
                    }
                    .into(),
                );
                return ControlFlow::Continue(());
            }
            let grouped =
                !matches!(&select.group_by, GroupByExpr::Expressions(v, _) if v.is_empty());
            if select.projection.len() != 1 || grouped {
                return ControlFlow::Continue(());
            }
            let (inner, alias) = match &select.projection[0] {
                SelectItem::UnnamedExpr(x) => (x.clone(), None),
                SelectItem::ExprWithAlias { expr, alias } => (expr.clone(), Some(alias.clone())),
                _ => return ControlFlow::Continue(()),
            };
            if matches!(&inner, Expr::Function(_))
                && inner.to_string().to_ascii_lowercase().starts_with("count(")
            {
                return ControlFlow::Continue(());
            }
            let wrapped = Expr::Function(Function {
                name: ObjectName::from(vec![sqlparser::ast::Ident::new("max")]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(inner))],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
            select.projection[0] = match alias {
                Some(alias) => SelectItem::ExprWithAlias {
                    expr: wrapped,
                    alias,
                },
                None => SelectItem::UnnamedExpr(wrapped),
            };
            ControlFlow::Continue(())
        }

        /// Unaliased output columns that would share a name (two subqueries made `NULL`
        /// above, or a client's `SELECT NULL, NULL`) get distinct aliases: PostgreSQL allows
        /// the same name twice, DataFusion does not.
        fn post_visit_query(&mut self, q: &mut sqlparser::ast::Query) -> ControlFlow<()> {
            unique_names(q.body.as_mut());
            ControlFlow::Continue(())
        }
    }
    /// Each SELECT of a body (every branch of a UNION) gets distinct output names.
    fn unique_names(body: &mut SetExpr) {
        match body {
            SetExpr::SetOperation { left, right, .. } => {
                unique_names(left);
                unique_names(right);
            }
            SetExpr::Select(select) => {
                let mut seen = std::collections::HashSet::new();
                for item in &select.projection {
                    if let SelectItem::ExprWithAlias { alias, .. } = item {
                        seen.insert(alias.value.clone());
                    }
                }
                for item in select.projection.iter_mut() {
                    if let SelectItem::UnnamedExpr(e) = item {
                        let name = e.to_string();
                        if seen.insert(name.clone()) {
                            continue;
                        }
                        let mut n = 2;
                        while !seen.insert(format!("{name}_{n}")) {
                            n += 1;
                        }
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: sqlparser::ast::Ident::with_quote('"', format!("{name}_{n}")),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let mut stmts = sqlparser::parser::Parser::parse_sql(&dialect, sql).ok()?;
    let _ = stmts.visit(&mut Wrap);
    Some(
        stmts
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Runs a catalog query.
pub async fn run(
    engine: &Engine,
    settings: &Settings,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let relations = engine.relations().await?;
    let ctx = context(&relations, settings)?;
    let text = rewrite(sql);
    only_a_query(&text)?;
    let text = array_literals(&text)?;
    let text = aggregate_scalar_subqueries(&text).unwrap_or(text);
    // Read-only, also for what the text check above could miss: DataFusion's own SQL has
    // `COPY … TO`, `CREATE EXTERNAL TABLE` and `SET`, none of which a catalog query needs.
    let options = datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let result = match ctx.sql_with_options(&text, options).await {
        Ok(df) => {
            let logical = postgres_names(df.schema().as_arrow());
            df.collect().await.and_then(|batches| {
                // The batches' own types (a Utf8View where the plan said Utf8).
                let schema = batches
                    .first()
                    .map_or(logical, |b| postgres_names(&b.schema()));
                let batches = batches
                    .into_iter()
                    .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok((schema, batches))
            })
        }
        Err(e) => Err(e),
    };
    result.or_else(|e| {
        // Still answered with no rows: drivers probe catalogs at connect (psycopg's
        // TypeInfo reads pg_type.typdelim, asyncpg's type introspection calls set_config)
        // and treat an empty answer as "not there". Making this an error waits until those
        // probes are answered (issue 14).
        tracing::debug!(error = %e, sql = %text, "catalog query answered with no rows");
        empty_answer(&text).ok_or_else(|| {
            PgError::Unsupported(format!(
                "this catalog query is not supported by StreamCell: {e}"
            ))
        })
    })
}

/// Fails unless `sql` is one query (`SELECT`, `WITH`, `VALUES`, set operations) of bounded
/// size and depth: catalog queries run on DataFusion's SQL, which can also write files
/// (`COPY … TO`, `EXPLAIN ANALYZE COPY …`), define tables over files, or change settings.
fn only_a_query(sql: &str) -> Result<()> {
    streamcell_sql::check_query_text(sql).map_err(|e| PgError::Engine(e.into()))?;
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let stmts = sqlparser::parser::Parser::parse_sql(&dialect, sql)
        .map_err(|e| PgError::Syntax(e.to_string()))?;
    match stmts.as_slice() {
        [sqlparser::ast::Statement::Query(q)] => {
            streamcell_sql::limits::check_depth(q.as_ref()).map_err(|e| PgError::Engine(e.into()))
        }
        _ => Err(PgError::Unsupported(
            "only queries (SELECT) can read the catalogs".to_string(),
        )),
    }
}

/// Output columns named as PostgreSQL names them: an unaliased function call by the
/// function's name (`current_database`, not `current_database()`).
fn postgres_names(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let name = f.name();
                match name.find('(') {
                    Some(i) if i > 0 && name.ends_with(')') => {
                        let func = name[..i].rsplit('.').next().unwrap_or(&name[..i]);
                        f.as_ref().clone().with_name(func)
                    }
                    _ => f.as_ref().clone(),
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// The columns of a SELECT's list and no rows, for catalog queries DataFusion cannot plan.
fn empty_answer(sql: &str) -> Option<(SchemaRef, Vec<RecordBatch>)> {
    use sqlparser::ast::{SelectItem, SetExpr, Statement};
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let stmts = sqlparser::parser::Parser::parse_sql(&dialect, sql).ok()?;
    let Some(Statement::Query(q)) = stmts.first() else {
        return None;
    };
    // A UNION answers with its first branch's columns.
    let mut body = q.body.as_ref();
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_ref();
    }
    let SetExpr::Select(select) = body else {
        return None;
    };
    let mut fields = Vec::new();
    for item in &select.projection {
        let name = match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
            SelectItem::UnnamedExpr(sqlparser::ast::Expr::Identifier(i)) => i.value.clone(),
            SelectItem::UnnamedExpr(sqlparser::ast::Expr::CompoundIdentifier(parts)) => {
                parts.last().map(|p| p.value.clone()).unwrap_or_default()
            }
            SelectItem::UnnamedExpr(e) => e.to_string(),
            _ => return None,
        };
        fields.push(Field::new(name, DataType::Utf8, true));
    }
    Some((Arc::new(Schema::new(fields)), Vec::new()))
}

fn text(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

fn ints(v: Vec<i32>) -> ArrayRef {
    Arc::new(Int32Array::from(v))
}

fn bools(v: Vec<bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(v))
}

/// A table of the given columns; `cols` are (name, type, values).
fn table(cols: Vec<(&str, ArrayRef)>) -> Result<Arc<MemTable>> {
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), cols.into_iter().map(|(_, a)| a).collect())?;
    Ok(Arc::new(
        MemTable::try_new(schema, vec![vec![batch]])
            .map_err(|e| PgError::Internal(e.to_string()))?,
    ))
}

/// An empty table with text columns of these names.
fn empty(names: &[&str]) -> Result<Arc<MemTable>> {
    table(names.iter().map(|n| (*n, text(Vec::new()))).collect())
}

/// Catalogs StreamCell keeps empty (no indexes, constraints, triggers, policies,
/// inheritance, publications, …), with the columns psql reads.
const EMPTY_CATALOG_COLUMNS: &[(&str, &[&str])] = &[
    (
        "pg_index",
        &[
            "indexrelid",
            "indrelid",
            "indisprimary",
            "indisunique",
            "indisclustered",
            "indisvalid",
            "indisreplident",
            "indkey",
            "indnkeyatts",
            "indisexclusion",
            "indimmediate",
            "indnullsnotdistinct",
        ],
    ),
    (
        "pg_inherits",
        &["inhrelid", "inhparent", "inhseqno", "inhdetachpending"],
    ),
    (
        "pg_constraint",
        &[
            "oid",
            "conname",
            "conrelid",
            "contype",
            "condeferrable",
            "condeferred",
            "convalidated",
            "conindid",
            "confrelid",
            "conparentid",
            "conkey",
            "connamespace",
            "conislocal",
        ],
    ),
    (
        "pg_description",
        &["objoid", "classoid", "objsubid", "description"],
    ),
    (
        "pg_trigger",
        &[
            "oid",
            "tgrelid",
            "tgname",
            "tgisinternal",
            "tgenabled",
            "tgparentid",
            "tgfoid",
        ],
    ),
    (
        "pg_policy",
        &[
            "oid",
            "polrelid",
            "polname",
            "polpermissive",
            "polroles",
            "polqual",
            "polwithcheck",
            "polcmd",
        ],
    ),
    (
        "pg_statistic_ext",
        &[
            "oid",
            "stxrelid",
            "stxname",
            "stxnamespace",
            "stxkind",
            "stxkeys",
            "stxstattarget",
        ],
    ),
    (
        "pg_publication",
        &[
            "oid",
            "pubname",
            "puballtables",
            "pubinsert",
            "pubupdate",
            "pubdelete",
            "pubtruncate",
            "pubviaroot",
        ],
    ),
    (
        "pg_publication_rel",
        &["oid", "prpubid", "prrelid", "prqual", "prattrs"],
    ),
    ("pg_publication_namespace", &["oid", "pnpubid", "pnnspid"]),
    (
        "pg_rewrite",
        &[
            "oid",
            "rulename",
            "ev_class",
            "ev_type",
            "ev_enabled",
            "is_instead",
        ],
    ),
    ("pg_attrdef", &["oid", "adrelid", "adnum", "adbin"]),
    ("pg_collation", &["oid", "collname", "collnamespace"]),
    ("pg_foreign_table", &["ftrelid", "ftserver", "ftoptions"]),
    (
        "pg_partitioned_table",
        &["partrelid", "partstrat", "partnatts"],
    ),
    (
        "pg_proc",
        &[
            "oid",
            "proname",
            "pronamespace",
            "prokind",
            "prorettype",
            "proargtypes",
        ],
    ),
    (
        "pg_extension",
        &["oid", "extname", "extnamespace", "extversion"],
    ),
    (
        "pg_sequence",
        &["seqrelid", "seqtypid", "seqstart", "seqincrement"],
    ),
    (
        "pg_event_trigger",
        &["oid", "evtname", "evtevent", "evtenabled"],
    ),
    ("pg_tablespace", &["oid", "spcname", "spcowner"]),
    (
        "pg_matviews",
        &["schemaname", "matviewname", "matviewowner", "definition"],
    ),
    (
        "pg_indexes",
        &["schemaname", "tablename", "indexname", "indexdef"],
    ),
];

/// Their names.
const EMPTY_CATALOGS: &[&str] = &[
    "pg_index",
    "pg_inherits",
    "pg_constraint",
    "pg_description",
    "pg_trigger",
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_rewrite",
    "pg_attrdef",
    "pg_collation",
    "pg_foreign_table",
    "pg_partitioned_table",
    "pg_proc",
    "pg_extension",
    "pg_sequence",
    "pg_event_trigger",
    "pg_tablespace",
    "pg_matviews",
    "pg_indexes",
];

fn namespace_oid(schema: &str) -> i32 {
    if schema == streamcell_engine::datacell::SCHEMA {
        NS_DATACELL
    } else {
        NS_PUBLIC
    }
}

/// The PostgreSQL types StreamCell sends: (oid, name, length, category).
fn types() -> Vec<(i32, &'static str, i16, &'static str)> {
    vec![
        (16, "bool", 1, "B"),
        (17, "bytea", -1, "U"),
        (20, "int8", 8, "N"),
        (21, "int2", 2, "N"),
        (23, "int4", 4, "N"),
        (25, "text", -1, "S"),
        (26, "oid", 4, "N"),
        (114, "json", -1, "U"),
        (700, "float4", 4, "N"),
        (701, "float8", 8, "N"),
        (1043, "varchar", -1, "S"),
        (1082, "date", 4, "D"),
        (1114, "timestamp", 8, "D"),
        (1184, "timestamptz", 8, "D"),
        (1700, "numeric", -1, "N"),
    ]
}

/// `format_type`'s name of a type oid (`information_schema`'s `data_type` too).
fn type_display(oid: i64) -> Option<&'static str> {
    Some(match oid {
        16 => "boolean",
        17 => "bytea",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "real",
        701 => "double precision",
        1043 => "character varying",
        1082 => "date",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        1700 => "numeric",
        _ => return None,
    })
}

fn context(relations: &[Relation], settings: &Settings) -> Result<SessionContext> {
    let config = SessionConfig::new()
        .with_information_schema(false)
        .with_default_catalog_and_schema("datafusion", "pg_catalog")
        .set_bool("datafusion.sql_parser.enable_ident_normalization", true);
    let ctx = SessionContext::new_with_config(config);
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| PgError::Internal("no default catalog".into()))?;
    let pg = Arc::new(MemorySchemaProvider::new());
    let info = Arc::new(MemorySchemaProvider::new());
    catalog
        .register_schema("pg_catalog", pg.clone())
        .map_err(|e| PgError::Internal(e.to_string()))?;
    catalog
        .register_schema("information_schema", info.clone())
        .map_err(|e| PgError::Internal(e.to_string()))?;
    let reg = |schema: &Arc<MemorySchemaProvider>, name: &str, t: Arc<MemTable>| -> Result<()> {
        use datafusion::catalog::SchemaProvider;
        schema
            .register_table(name.to_string(), t)
            .map(|_| ())
            .map_err(|e| PgError::Internal(e.to_string()))
    };

    // pg_namespace
    let namespaces = [
        (NS_CATALOG, "pg_catalog"),
        (NS_PUBLIC, "public"),
        (NS_INFORMATION_SCHEMA, "information_schema"),
        (NS_DATACELL, streamcell_engine::datacell::SCHEMA),
    ];
    reg(
        &pg,
        "pg_namespace",
        table(vec![
            ("oid", ints(namespaces.iter().map(|n| n.0).collect())),
            (
                "nspname",
                text(namespaces.iter().map(|n| Some(n.1.to_string())).collect()),
            ),
            ("nspowner", ints(vec![ROLE_OID; namespaces.len()])),
            ("nspacl", text(vec![None; namespaces.len()])),
        ])?,
    )?;

    // pg_class and pg_attribute
    let n = relations.len();
    let oids: Vec<i32> = (0..n as i32).map(|i| FIRST_RELATION_OID + i).collect();
    reg(
        &pg,
        "pg_class",
        table(vec![
            ("oid", ints(oids.clone())),
            (
                "relname",
                text(relations.iter().map(|r| Some(r.name.clone())).collect()),
            ),
            (
                "relnamespace",
                ints(relations.iter().map(|r| namespace_oid(&r.schema)).collect()),
            ),
            (
                "relkind",
                text(
                    relations
                        .iter()
                        .map(|r| Some(if r.is_view { "v" } else { "r" }.to_string()))
                        .collect(),
                ),
            ),
            ("relowner", ints(vec![ROLE_OID; n])),
            (
                "relam",
                ints(
                    relations
                        .iter()
                        .map(|r| if r.is_view { 0 } else { 2 })
                        .collect(),
                ),
            ),
            ("reltype", ints(vec![0; n])),
            ("reloftype", ints(vec![0; n])),
            ("reltablespace", ints(vec![0; n])),
            ("reltoastrelid", ints(vec![0; n])),
            ("relpages", ints(vec![0; n])),
            (
                "reltuples",
                Arc::new(Float32Array::from(vec![-1.0f32; n])) as ArrayRef,
            ),
            (
                "relnatts",
                Arc::new(Int16Array::from(
                    relations
                        .iter()
                        .map(|r| r.columns.len() as i16)
                        .collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "relchecks",
                Arc::new(Int16Array::from(vec![0i16; n])) as ArrayRef,
            ),
            ("relhasindex", bools(vec![false; n])),
            ("relhasrules", bools(vec![false; n])),
            ("relhastriggers", bools(vec![false; n])),
            ("relhassubclass", bools(vec![false; n])),
            ("relrowsecurity", bools(vec![false; n])),
            ("relforcerowsecurity", bools(vec![false; n])),
            ("relispartition", bools(vec![false; n])),
            ("relisshared", bools(vec![false; n])),
            ("relpersistence", text(vec![Some("p".into()); n])),
            ("relreplident", text(vec![Some("d".into()); n])),
            ("reloptions", text(vec![None; n])),
            ("relacl", text(vec![None; n])),
            ("relpartbound", text(vec![None; n])),
        ])?,
    )?;
    let (mut a_rel, mut a_name, mut a_type, mut a_num) = (vec![], vec![], vec![], vec![]);
    for (r, oid) in relations.iter().zip(&oids) {
        for (i, (name, dt)) in r.columns.iter().enumerate() {
            a_rel.push(*oid);
            a_name.push(Some(name.clone()));
            a_type.push(Kind::of(dt).pg_type().oid() as i32);
            a_num.push(i as i16 + 1);
        }
    }
    let na = a_rel.len();
    reg(
        &pg,
        "pg_attribute",
        table(vec![
            ("attrelid", ints(a_rel.clone())),
            ("attname", text(a_name.clone())),
            ("atttypid", ints(a_type.clone())),
            ("atttypmod", ints(vec![-1; na])),
            (
                "attnum",
                Arc::new(Int16Array::from(a_num.clone())) as ArrayRef,
            ),
            (
                "attlen",
                Arc::new(Int16Array::from(vec![-1i16; na])) as ArrayRef,
            ),
            ("attnotnull", bools(vec![false; na])),
            ("atthasdef", bools(vec![false; na])),
            ("attisdropped", bools(vec![false; na])),
            ("attislocal", bools(vec![true; na])),
            ("attinhcount", ints(vec![0; na])),
            ("attidentity", text(vec![Some(String::new()); na])),
            ("attgenerated", text(vec![Some(String::new()); na])),
            ("attcollation", ints(vec![0; na])),
            ("attstorage", text(vec![Some("x".into()); na])),
            ("attcompression", text(vec![Some(String::new()); na])),
            ("attstattarget", ints(vec![-1; na])),
            ("attfdwoptions", text(vec![None; na])),
            ("attoptions", text(vec![None; na])),
            ("attacl", text(vec![None; na])),
        ])?,
    )?;

    // pg_type
    let t = types();
    let nt = t.len();
    reg(
        &pg,
        "pg_type",
        table(vec![
            ("oid", ints(t.iter().map(|x| x.0).collect())),
            (
                "typname",
                text(t.iter().map(|x| Some(x.1.to_string())).collect()),
            ),
            ("typnamespace", ints(vec![NS_CATALOG; nt])),
            ("typowner", ints(vec![ROLE_OID; nt])),
            (
                "typlen",
                Arc::new(Int16Array::from(t.iter().map(|x| x.2).collect::<Vec<_>>())) as ArrayRef,
            ),
            ("typtype", text(vec![Some("b".into()); nt])),
            (
                "typcategory",
                text(t.iter().map(|x| Some(x.3.to_string())).collect()),
            ),
            ("typisdefined", bools(vec![true; nt])),
            ("typrelid", ints(vec![0; nt])),
            ("typelem", ints(vec![0; nt])),
            ("typarray", ints(vec![0; nt])),
            ("typbasetype", ints(vec![0; nt])),
            ("typtypmod", ints(vec![-1; nt])),
            ("typnotnull", bools(vec![false; nt])),
            ("typcollation", ints(vec![0; nt])),
            ("typdefault", text(vec![None; nt])),
        ])?,
    )?;

    // Databases, roles, access methods, settings.
    reg(
        &pg,
        "pg_database",
        table(vec![
            ("oid", ints(vec![1])),
            ("datname", text(vec![Some(DATABASE.into())])),
            ("datdba", ints(vec![ROLE_OID])),
            ("encoding", ints(vec![6])),
            ("datcollate", text(vec![Some("C".into())])),
            ("datctype", text(vec![Some("C".into())])),
            ("daticulocale", text(vec![None])),
            ("daticurules", text(vec![None])),
            ("datlocprovider", text(vec![Some("c".into())])),
            ("datistemplate", bools(vec![false])),
            ("datallowconn", bools(vec![true])),
            ("datconnlimit", ints(vec![-1])),
            ("dattablespace", ints(vec![1663])),
            ("datacl", text(vec![None])),
        ])?,
    )?;
    for name in ["pg_roles", "pg_authid"] {
        reg(
            &pg,
            name,
            table(vec![
                ("oid", ints(vec![ROLE_OID])),
                ("rolname", text(vec![Some(ROLE.into())])),
                ("rolsuper", bools(vec![true])),
                ("rolinherit", bools(vec![true])),
                ("rolcreaterole", bools(vec![true])),
                ("rolcreatedb", bools(vec![true])),
                ("rolcanlogin", bools(vec![true])),
                ("rolreplication", bools(vec![false])),
                ("rolbypassrls", bools(vec![true])),
                ("rolconnlimit", ints(vec![-1])),
                ("rolvaliduntil", text(vec![None])),
                ("rolconfig", text(vec![None])),
            ])?,
        )?;
    }
    reg(
        &pg,
        "pg_user",
        table(vec![
            ("usename", text(vec![Some(ROLE.into())])),
            ("usesysid", ints(vec![ROLE_OID])),
            ("usesuper", bools(vec![true])),
            ("usecreatedb", bools(vec![true])),
        ])?,
    )?;
    reg(
        &pg,
        "pg_am",
        table(vec![
            ("oid", ints(vec![2])),
            ("amname", text(vec![Some("heap".into())])),
            ("amtype", text(vec![Some("t".into())])),
        ])?,
    )?;
    let settings: Vec<(String, String)> = settings
        .all()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    reg(
        &pg,
        "pg_settings",
        table(vec![
            (
                "name",
                text(settings.iter().map(|s| Some(s.0.clone())).collect()),
            ),
            (
                "setting",
                text(settings.iter().map(|s| Some(s.1.clone())).collect()),
            ),
        ])?,
    )?;
    let tables: Vec<&Relation> = relations.iter().filter(|r| !r.is_view).collect();
    let views: Vec<&Relation> = relations.iter().filter(|r| r.is_view).collect();
    let listing = |rels: &[&Relation], names: [&'static str; 4]| {
        table(vec![
            (
                names[0],
                text(rels.iter().map(|r| Some(r.schema.clone())).collect()),
            ),
            (
                names[1],
                text(rels.iter().map(|r| Some(r.name.clone())).collect()),
            ),
            (
                names[2],
                text(rels.iter().map(|_| Some(ROLE.to_string())).collect()),
            ),
            (names[3], text(rels.iter().map(|_| None).collect())),
        ])
    };
    reg(
        &pg,
        "pg_tables",
        listing(
            &tables,
            ["schemaname", "tablename", "tableowner", "tablespace"],
        )?,
    )?;
    reg(
        &pg,
        "pg_views",
        listing(
            &views,
            ["schemaname", "viewname", "viewowner", "definition"],
        )?,
    )?;
    // What psql asks about a relation and StreamCell does not have.
    for &(name, cols) in EMPTY_CATALOG_COLUMNS {
        reg(&pg, name, empty(cols)?)?;
    }

    // information_schema
    let schemas = [
        "public",
        streamcell_engine::datacell::SCHEMA,
        "pg_catalog",
        "information_schema",
    ];
    reg(
        &info,
        "schemata",
        table(vec![
            (
                "catalog_name",
                text(vec![Some(DATABASE.into()); schemas.len()]),
            ),
            (
                "schema_name",
                text(schemas.iter().map(|s| Some(s.to_string())).collect()),
            ),
            ("schema_owner", text(vec![Some(ROLE.into()); schemas.len()])),
        ])?,
    )?;
    reg(
        &info,
        "tables",
        table(vec![
            ("table_catalog", text(vec![Some(DATABASE.into()); n])),
            (
                "table_schema",
                text(relations.iter().map(|r| Some(r.schema.clone())).collect()),
            ),
            (
                "table_name",
                text(relations.iter().map(|r| Some(r.name.clone())).collect()),
            ),
            (
                "table_type",
                text(
                    relations
                        .iter()
                        .map(|r| Some(if r.is_view { "VIEW" } else { "BASE TABLE" }.to_string()))
                        .collect(),
                ),
            ),
            (
                "is_insertable_into",
                text(
                    relations
                        .iter()
                        .map(|r| Some(if r.is_view { "NO" } else { "YES" }.to_string()))
                        .collect(),
                ),
            ),
        ])?,
    )?;
    reg(
        &info,
        "views",
        table(vec![
            (
                "table_catalog",
                text(vec![Some(DATABASE.into()); views.len()]),
            ),
            (
                "table_schema",
                text(views.iter().map(|r| Some(r.schema.clone())).collect()),
            ),
            (
                "table_name",
                text(views.iter().map(|r| Some(r.name.clone())).collect()),
            ),
            ("view_definition", text(vec![None; views.len()])),
        ])?,
    )?;
    let (mut c_schema, mut c_table, mut c_name, mut c_pos, mut c_type, mut c_udt) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in relations {
        for (i, (name, dt)) in r.columns.iter().enumerate() {
            let t = Kind::of(dt).pg_type();
            c_schema.push(Some(r.schema.clone()));
            c_table.push(Some(r.name.clone()));
            c_name.push(Some(name.clone()));
            c_pos.push(i as i32 + 1);
            c_type.push(type_display(i64::from(t.oid())).map(str::to_string));
            c_udt.push(Some(t.name().to_string()));
        }
    }
    let nc = c_name.len();
    reg(
        &info,
        "columns",
        table(vec![
            ("table_catalog", text(vec![Some(DATABASE.into()); nc])),
            ("table_schema", text(c_schema)),
            ("table_name", text(c_table)),
            ("column_name", text(c_name)),
            ("ordinal_position", ints(c_pos)),
            ("column_default", text(vec![None; nc])),
            ("is_nullable", text(vec![Some("YES".into()); nc])),
            ("data_type", text(c_type)),
            ("udt_name", text(c_udt)),
            ("character_maximum_length", ints(vec![0; nc])),
            ("numeric_precision", ints(vec![0; nc])),
        ])?,
    )?;

    for f in functions(&settings) {
        ctx.register_udf(f);
    }
    Ok(ctx)
}

/// A catalog function: what it returns for any arguments, or how it computes it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgFunction {
    name: &'static str,
    signature: Signature,
    behaviour: Behaviour,
    /// The session's settings (for `current_setting`).
    settings: Vec<(String, String)>,
}

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Behaviour {
    Text(&'static str),
    NullText,
    True,
    False,
    Int(i64),
    FormatType,
    QuoteIdent,
    Zero,
    CurrentSetting,
    Version,
    /// `to_regtype(name)`: the type's oid, NULL for a type StreamCell does not have.
    ToRegtype,
}

fn functions(settings: &[(String, String)]) -> Vec<ScalarUDF> {
    let any = || {
        Signature::one_of(
            vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
            Volatility::Stable,
        )
    };
    let f = |name: &'static str, behaviour: Behaviour| {
        ScalarUDF::new_from_impl(PgFunction {
            name,
            signature: any(),
            behaviour,
            settings: if behaviour == Behaviour::CurrentSetting {
                settings.to_vec()
            } else {
                Vec::new()
            },
        })
    };
    vec![
        f("current_database", Behaviour::Text(DATABASE)),
        f("current_schema", Behaviour::Text("public")),
        f("current_user", Behaviour::Text(ROLE)),
        f("session_user", Behaviour::Text(ROLE)),
        f("current_role", Behaviour::Text(ROLE)),
        f("pg_get_userbyid", Behaviour::Text(ROLE)),
        f("pg_encoding_to_char", Behaviour::Text("UTF8")),
        f("pg_table_is_visible", Behaviour::True),
        f("pg_type_is_visible", Behaviour::True),
        f("has_table_privilege", Behaviour::True),
        f("has_schema_privilege", Behaviour::True),
        f("has_database_privilege", Behaviour::True),
        f("has_column_privilege", Behaviour::True),
        f("pg_is_in_recovery", Behaviour::False),
        f(
            "pg_backend_pid",
            Behaviour::Int(i64::from(std::process::id())),
        ),
        f("obj_description", Behaviour::NullText),
        f("col_description", Behaviour::NullText),
        f("shobj_description", Behaviour::NullText),
        f("pg_get_expr", Behaviour::NullText),
        f("pg_get_indexdef", Behaviour::NullText),
        f("pg_get_constraintdef", Behaviour::NullText),
        f("pg_get_viewdef", Behaviour::NullText),
        f("pg_get_triggerdef", Behaviour::NullText),
        f("pg_get_partkeydef", Behaviour::NullText),
        f("pg_relation_size", Behaviour::Zero),
        f("pg_total_relation_size", Behaviour::Zero),
        f("pg_table_size", Behaviour::Zero),
        f("pg_relation_is_publishable", Behaviour::False),
        f("pg_get_statisticsobjdef_columns", Behaviour::NullText),
        f("pg_get_ruledef", Behaviour::NullText),
        f("pg_get_function_result", Behaviour::NullText),
        f("pg_get_function_arguments", Behaviour::NullText),
        f("pg_get_serial_sequence", Behaviour::NullText),
        // ACLs and options are always NULL here.
        f("array_to_string", Behaviour::NullText),
        // StreamCell grants no advisory locks (pg_advisory_lock is not a function here), so a
        // session never holds one: releasing all is a no-op and releasing one is false, as
        // PostgreSQL answers for a lock not held (asyncpg's pool reset sends the first).
        f("pg_advisory_unlock_all", Behaviour::NullText),
        f("pg_advisory_unlock", Behaviour::False),
        f("pg_advisory_unlock_shared", Behaviour::False),
        f("to_regtype", Behaviour::ToRegtype),
        f("current_setting", Behaviour::CurrentSetting),
        f("version", Behaviour::Version),
        f("format_type", Behaviour::FormatType),
        f("quote_ident", Behaviour::QuoteIdent),
    ]
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(match self.behaviour {
            Behaviour::True | Behaviour::False => DataType::Boolean,
            Behaviour::Int(_) | Behaviour::Zero | Behaviour::ToRegtype => DataType::Int64,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let scalar = |v: ScalarValue| Ok(ColumnarValue::Scalar(v));
        match self.behaviour {
            Behaviour::Text(t) => scalar(ScalarValue::Utf8(Some(t.to_string()))),
            Behaviour::Version => scalar(ScalarValue::Utf8(Some(crate::compat::version()))),
            Behaviour::NullText => scalar(ScalarValue::Utf8(None)),
            Behaviour::True => scalar(ScalarValue::Boolean(Some(true))),
            Behaviour::False => scalar(ScalarValue::Boolean(Some(false))),
            Behaviour::Int(i) => scalar(ScalarValue::Int64(Some(i))),
            Behaviour::Zero => scalar(ScalarValue::Int64(Some(0))),
            Behaviour::ToRegtype => {
                let arrays = ColumnarValue::values_to_arrays(&args.args)?;
                let Some(first) = arrays.first() else {
                    return scalar(ScalarValue::Int64(None));
                };
                let names = arrow::compute::cast(first, &DataType::Utf8)?;
                let names = names
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| datafusion::error::DataFusionError::Internal("text".into()))?;
                let out: Int64Array = names
                    .iter()
                    .map(|n| {
                        let n = n?.trim().trim_matches('"').to_ascii_lowercase();
                        let n = n.strip_prefix("pg_catalog.").unwrap_or(&n);
                        let n = match n {
                            "integer" | "int" => "int4",
                            "bigint" => "int8",
                            "smallint" => "int2",
                            "boolean" => "bool",
                            "real" => "float4",
                            "double precision" => "float8",
                            "character varying" => "varchar",
                            other => other,
                        };
                        types()
                            .into_iter()
                            .find(|t| t.1 == n)
                            .map(|t| i64::from(t.0))
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            Behaviour::FormatType | Behaviour::QuoteIdent | Behaviour::CurrentSetting => {
                let arrays = ColumnarValue::values_to_arrays(&args.args)?;
                let Some(first) = arrays.first() else {
                    return scalar(ScalarValue::Utf8(None));
                };
                let out: StringArray = if self.behaviour == Behaviour::FormatType {
                    let oids = arrow::compute::cast(first, &DataType::Int64)?;
                    let oids = oids.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
                        datafusion::error::DataFusionError::Internal("oid".into())
                    })?;
                    oids.iter()
                        .map(|o| o.map(|o| type_display(o).unwrap_or("text").to_string()))
                        .collect()
                } else if self.behaviour == Behaviour::CurrentSetting {
                    let names = arrow::compute::cast(first, &DataType::Utf8)?;
                    let names = names
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| {
                            datafusion::error::DataFusionError::Internal("text".into())
                        })?;
                    names
                        .iter()
                        .map(|n| {
                            let n = n?.to_ascii_lowercase();
                            self.settings
                                .iter()
                                .find(|(k, _)| *k == n)
                                .map(|(_, v)| v.clone())
                        })
                        .collect()
                } else {
                    let names = arrow::compute::cast(first, &DataType::Utf8)?;
                    let names = names
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| {
                            datafusion::error::DataFusionError::Internal("text".into())
                        })?;
                    names.iter().map(|n| n.map(quote_ident)).collect()
                };
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
    }
}

/// PostgreSQL's `quote_ident`: quoted unless a plain lower-case identifier.
fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_spellings_are_rewritten() {
        let sql = "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) \
                   '^(s)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) \
                   AND c.oid = '16384'::pg_catalog.regclass";
        assert_eq!(
            rewrite(sql),
            "SELECT c.oid FROM pg_class c WHERE c.relname ~ '^(s)$' AND pg_table_is_visible(c.oid) \
             AND c.oid = '16384'"
        );
        assert!(is_catalog_query(sql));
        assert!(is_catalog_query("select current_database()"));
        assert!(!is_catalog_query("SELECT * FROM readings"));
        // Names in strings and comments are data, not catalogs.
        assert!(!is_catalog_query(
            "INSERT INTO notes (a) VALUES ('pg_type and current_user') -- pg_class"
        ));
        assert!(is_catalog_query("SELECT \"pg_class\".oid FROM pg_class"));
    }

    #[test]
    fn scalar_subqueries_are_aggregated() {
        let out = aggregate_scalar_subqueries(
            "SELECT a.x, (SELECT d.y FROM d WHERE d.k = a.k) AS y, (SELECT count(*) FROM d) FROM a",
        )
        .unwrap();
        assert_eq!(
            out,
            "SELECT a.x, (SELECT max(d.y) FROM d WHERE d.k = a.k) AS y, (SELECT count(*) FROM d) FROM a"
        );
    }

    #[test]
    fn identifiers_are_quoted_when_needed() {
        assert_eq!(quote_ident("readings"), "readings");
        assert_eq!(quote_ident("Readings"), "\"Readings\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn unplannable_catalog_queries_answer_their_columns() {
        let (schema, rows) =
            empty_answer("SELECT pol.polname, pol.polpermissive AS p, x FROM pg_policy pol")
                .unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["polname", "p", "x"]);
        assert!(rows.is_empty());
    }
}
