//! The sqllogictest files of `slt/` over the `StreamCellSql/Execute` gRPC call that
//! `streamcell sql` speaks (rows come back as JSON objects). The runner, the rendering and the
//! files are shared with `sqllogic_pg.rs`: see `sqllogic/mod.rs`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;
mod sqllogic;

use std::fmt;

use common::Server;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use sqllogic::{column_type, render, Door, SqlError};
use sqllogictest::{DBOutput, DefaultColumnType};
use streamcell_proto::sqlapi::execute_response::Item;
use streamcell_proto::sqlapi::stream_cell_sql_client::StreamCellSqlClient;
use streamcell_proto::sqlapi::ExecuteRequest;
use tonic::transport::Channel;

fn status_error(s: tonic::Status) -> SqlError {
    SqlError(format!("{:?}: {}", s.code(), s.message()))
}

/// One row as the server sent it: `(column, value)` in order, duplicate names kept.
struct OrderedRow(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedRow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedRow, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(OrderedRow(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The rows of one statement that returned rows.
struct RowSet {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// A connection to the server's SQL service.
pub struct StreamCell {
    client: StreamCellSqlClient<Channel>,
}

impl StreamCell {
    async fn run_sql(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let mut stream = self
            .client
            .execute(ExecuteRequest { sql: sql.into() })
            .await
            .map_err(status_error)?
            .into_inner();
        // The output of the statement being received, and of the last one finished.
        let mut current: Option<RowSet> = None;
        let mut last: Option<RowSet> = None;
        let mut finished = 0usize;
        while let Some(msg) = stream.message().await.map_err(status_error)? {
            match msg.item {
                Some(Item::Columns(c)) => {
                    current = Some(RowSet {
                        columns: c.names,
                        rows: Vec::new(),
                    })
                }
                Some(Item::Rows(r)) => {
                    let set = current.as_mut().ok_or_else(|| {
                        SqlError("protocol: rows before their columns".to_string())
                    })?;
                    for json in r.json {
                        let row: OrderedRow = serde_json::from_str(&json)
                            .map_err(|e| SqlError(format!("protocol: row {json}: {e}")))?;
                        let names: Vec<&str> = row.0.iter().map(|(k, _)| k.as_str()).collect();
                        if names != set.columns {
                            return Err(SqlError(format!(
                                "protocol: row {json} does not have the columns {:?}",
                                set.columns
                            )));
                        }
                        set.rows.push(row.0.into_iter().map(|(_, v)| v).collect());
                    }
                }
                Some(Item::Done(_)) => {
                    last = current.take();
                    finished += 1;
                }
                None => {}
            }
        }
        if current.is_some() || finished == 0 {
            return Err(SqlError(
                "protocol: the call ended before its statement was done".to_string(),
            ));
        }
        Ok(match last {
            None => DBOutput::StatementComplete(0),
            Some(set) => {
                let types = (0..set.columns.len())
                    .map(|i| {
                        set.rows
                            .iter()
                            .find_map(|r| column_type(&r[i]))
                            .unwrap_or(DefaultColumnType::Any)
                    })
                    .collect();
                let rows = set
                    .rows
                    .iter()
                    .map(|r| r.iter().map(render).collect())
                    .collect();
                DBOutput::Rows { types, rows }
            }
        })
    }
}

impl Door for StreamCell {
    const NAME: &'static str = "streamcell";

    async fn connect(server: &Server) -> Result<StreamCell, SqlError> {
        Ok(StreamCell {
            client: server.sql_client().await,
        })
    }

    async fn execute(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        self.run_sql(sql).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    sqllogic::run_all::<StreamCell>().await;
}
