//! The sqllogictest files of `slt/` over the PostgreSQL protocol, as `tokio-postgres` speaks
//! it: every record is prepared (Parse/Describe) and executed with binary results, the way
//! drivers run statements. Values are read by their PostgreSQL type and rendered as the
//! gRPC runner renders the JSON it gets, so one file of expectations holds both doors to the
//! same answers. An error's SQLSTATE is read back as the gRPC code of the same error kind
//! ([`grpc_code_of`]), so `statement error NotFound: …` also checks that the PostgreSQL door
//! sent `42P01`, not a catch-all.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;
mod sqllogic;

use chrono::{NaiveDate, NaiveDateTime};
use common::Server;
use serde_json::Value;
use sqllogic::{column_type, render, Door, SqlError};
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Row};

/// The gRPC code name the gRPC door gives the error kind that the PostgreSQL door sent as
/// `sqlstate` (the two doors' mappings, `code_of` and `sqlstate_of`, read together).
fn grpc_code_of(sqlstate: &str) -> &'static str {
    match sqlstate {
        "42P07" => "AlreadyExists",
        "42P01" | "42704" => "NotFound",
        "55000" => "FailedPrecondition",
        "57014" => "Cancelled",
        "57P01" => "Unavailable",
        "53000" => "ResourceExhausted",
        "XX001" => "DataLoss",
        "XX000" => "Internal",
        // syntax, invalid, undefined column, type mismatch, division by zero, not
        // supported, memory limit, statement too large or too deep
        "42601" | "42000" | "42703" | "42804" | "22012" | "0A000" | "53200" | "54000" | "54001" => {
            "InvalidArgument"
        }
        _ => "Unknown",
    }
}

/// A connection over the PostgreSQL protocol.
pub struct Pg {
    client: Client,
}

impl Door for Pg {
    const NAME: &'static str = "streamcell-pg";

    async fn connect(server: &Server) -> Result<Pg, SqlError> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=streamcell dbname=streamcell connect_timeout=10",
                server.pg_port
            ),
            NoTls,
        )
        .await
        .map_err(|e| SqlError(format!("connect: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Pg { client })
    }

    async fn execute(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        self.run_sql(sql).await
    }
}

fn sql_error(e: tokio_postgres::Error) -> SqlError {
    match e.as_db_error() {
        Some(db) => SqlError(format!(
            "{}: {}",
            grpc_code_of(db.code().code()),
            db.message()
        )),
        None => SqlError(format!("protocol: {e}")),
    }
}

/// Column `i` of `row` as the JSON value the gRPC door would have sent for it.
fn value_of(row: &Row, i: usize, ty: &Type) -> Result<Value, SqlError> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a Row,
        i: usize,
    ) -> Result<Option<T>, SqlError> {
        row.try_get::<_, Option<T>>(i)
            .map_err(|e| SqlError(format!("protocol: column {i}: {e}")))
    }
    // JSON has no infinities or NaN: the gRPC door sends them as strings, as PostgreSQL
    // prints them.
    let float = |x: f64| {
        serde_json::Number::from_f64(x).map_or_else(
            || {
                Value::String(
                    match (x.is_nan(), x > 0.0) {
                        (true, _) => "NaN",
                        (false, true) => "Infinity",
                        (false, false) => "-Infinity",
                    }
                    .into(),
                )
            },
            Value::Number,
        )
    };
    Ok(match *ty {
        Type::BOOL => get::<bool>(row, i)?.map_or(Value::Null, Value::Bool),
        Type::INT2 => get::<i16>(row, i)?.map_or(Value::Null, Value::from),
        Type::INT4 => get::<i32>(row, i)?.map_or(Value::Null, Value::from),
        Type::INT8 => get::<i64>(row, i)?.map_or(Value::Null, Value::from),
        // A REAL prints as its shortest f32 text, as a JSON writer of f32 does.
        Type::FLOAT4 => get::<f32>(row, i)?
            .and_then(|x| x.to_string().parse::<f64>().ok())
            .map_or(Value::Null, float),
        Type::FLOAT8 => get::<f64>(row, i)?.map_or(Value::Null, float),
        Type::TIMESTAMP => get::<NaiveDateTime>(row, i)?.map_or(Value::Null, |t| {
            Value::String(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }),
        Type::DATE => get::<NaiveDate>(row, i)?.map_or(Value::Null, |d| {
            Value::String(d.format("%Y-%m-%d").to_string())
        }),
        Type::JSON | Type::JSONB => match get::<String>(row, i)? {
            None => Value::Null,
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| SqlError(format!("protocol: column {i}: JSON {text}: {e}")))?,
        },
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            get::<String>(row, i)?.map_or(Value::Null, Value::String)
        }
        ref other => {
            return Err(SqlError(format!(
                "protocol: column {i} has type {other}, which this runner does not read"
            )))
        }
    })
}

impl Pg {
    async fn run_sql(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let stmt = self.client.prepare(sql).await.map_err(sql_error)?;
        let rows = self.client.query(&stmt, &[]).await.map_err(sql_error)?;
        let columns = stmt.columns();
        if columns.is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let mut values = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut out = Vec::with_capacity(columns.len());
            for (i, c) in columns.iter().enumerate() {
                out.push(value_of(row, i, c.type_())?);
            }
            values.push(out);
        }
        let types = (0..columns.len())
            .map(|i| {
                values
                    .iter()
                    .find_map(|r: &Vec<Value>| column_type(&r[i]))
                    .unwrap_or(DefaultColumnType::Any)
            })
            .collect();
        let rows = values
            .iter()
            .map(|r| r.iter().map(render).collect())
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_over_postgres() {
    sqllogic::run_all::<Pg>().await;
}
