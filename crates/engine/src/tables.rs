//! DataFusion tables whose rows are read when a plan runs, not when it is made. A DataCell
//! continuous query is planned once, when it is registered; each firing runs that plan on
//! the rows of that moment: the events the firing took from its baskets, a stream's history,
//! a view's rows, a catalog function's listing. Each source of rows implements [`Rows`]
//! where its data live.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::Result;

/// Where a [`LazyTable`]'s rows come from.
#[async_trait]
pub(crate) trait Rows: Send + Sync {
    /// The rows now, as batches of the table's schema.
    async fn rows(&self) -> Result<Vec<RecordBatch>>;
    /// What they are, for plans printed in errors and `EXPLAIN`.
    fn describe(&self) -> String;
}

/// A table of a fixed schema whose rows are fetched at each scan.
pub(crate) struct LazyTable {
    schema: SchemaRef,
    rows: Arc<dyn Rows>,
}

impl LazyTable {
    /// A table of `schema` reading `rows`.
    pub(crate) fn new(schema: SchemaRef, rows: Arc<dyn Rows>) -> Self {
        LazyTable { schema, rows }
    }
}

impl fmt::Debug for LazyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LazyTable({})", self.rows.describe())
    }
}

#[async_trait]
impl TableProvider for LazyTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches = self
            .rows
            .rows()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        for b in &batches {
            if b.schema().fields() != self.schema.fields() {
                return Err(DataFusionError::Execution(format!(
                    "{} changed its columns since the query was planned (now {}, planned {})",
                    self.rows.describe(),
                    column_list(&b.schema()),
                    column_list(&self.schema)
                )));
            }
        }
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}
