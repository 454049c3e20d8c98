//! A DataCell statement (`INSERT INTO <target> SELECT …`) planned once, when its continuous
//! query is registered ([`Step`]), and the rows each firing took from a consumed basket
//! ([`Taken`]), which the plan reads when it runs.

use std::sync::{Arc, Mutex};

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use super::lock;
use crate::error::{EngineError, Result};
use crate::tables::Rows;

/// One statement of a DataCell query, ready to run.
pub(crate) struct Step {
    /// Where its rows go.
    pub(crate) target: Target,
    /// How they are made.
    pub(crate) how: How,
}

/// How a [`Step`] makes its rows.
pub(crate) enum How {
    /// `insert into datacell.b select * from datacell.a` between baskets of the same
    /// columns: the batches move as they are, without a plan (the latency path).
    Move(String),
    /// A DataFusion plan, made once. `optimized` says whether it went through the optimizer
    /// already; a plan calling a function whose value depends on the moment it runs
    /// (`now()`) is optimized again at each firing, as the optimizer folds such calls into
    /// constants.
    Plan(Box<Planned>),
}

/// A statement's DataFusion plan.
pub(crate) struct Planned {
    /// The session its tables are registered in.
    pub(crate) ctx: SessionContext,
    /// The plan.
    pub(crate) plan: LogicalPlan,
    /// Optimized already.
    pub(crate) optimized: bool,
    /// Its column names.
    pub(crate) names: Vec<String>,
}

/// The rows a firing took from one consumed basket, for its plans to read.
#[derive(Default)]
pub(crate) struct Taken {
    basket: String,
    rows: Mutex<Vec<RecordBatch>>,
}

impl Taken {
    /// The slot of `basket`'s taken rows, empty.
    pub(crate) fn new(basket: &str) -> Self {
        Taken {
            basket: basket.to_string(),
            rows: Mutex::new(Vec::new()),
        }
    }

    /// The rows this firing took (`Vec::new()` once it is over).
    pub(crate) fn set(&self, rows: Vec<RecordBatch>) {
        *lock(&self.rows) = rows;
    }
}

#[async_trait]
impl Rows for Taken {
    async fn rows(&self) -> Result<Vec<RecordBatch>> {
        Ok(lock(&self.rows).clone())
    }

    fn describe(&self) -> String {
        format!("basket {:?} (the rows of this firing)", self.basket)
    }
}

/// Where an INSERT's rows go.
pub(crate) enum Target {
    Basket {
        name: String,
        schema: SchemaRef,
        columns: Vec<String>,
    },
    Stream {
        name: String,
        columns: Vec<String>,
    },
}

impl Target {
    /// The result batches shaped for the target: a basket's columns (by position, or by the
    /// INSERT's column list), or a stream's column names.
    pub(crate) fn shape(
        &self,
        names: &[String],
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        match self {
            Target::Basket {
                schema, columns, ..
            } => {
                if columns.is_empty() {
                    return batches
                        .iter()
                        .map(|b| super::columns::conform(b, schema))
                        .collect();
                }
                if columns.len() != names.len() {
                    return Err(EngineError::invalid(format!(
                        "{} columns named but the query gives {}",
                        columns.len(),
                        names.len()
                    )));
                }
                let positions = columns
                    .iter()
                    .map(|c| {
                        schema.index_of(c).map_err(|_| {
                            EngineError::invalid(format!("the basket has no column {c:?}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                batches
                    .iter()
                    .map(|b| {
                        let arrays: Vec<ArrayRef> = schema
                            .fields()
                            .iter()
                            .enumerate()
                            .map(|(i, f)| match positions.iter().position(|&p| p == i) {
                                Some(src) => b.column(src).clone(),
                                None => new_null_array(f.data_type(), b.num_rows()),
                            })
                            .collect();
                        let loose = RecordBatch::try_new_with_options(
                            Arc::new(arrow::datatypes::Schema::new(
                                arrays
                                    .iter()
                                    .zip(schema.fields())
                                    .map(|(a, f)| {
                                        arrow::datatypes::Field::new(
                                            f.name(),
                                            a.data_type().clone(),
                                            true,
                                        )
                                    })
                                    .collect::<Vec<_>>(),
                            )),
                            arrays,
                            &arrow::array::RecordBatchOptions::new()
                                .with_row_count(Some(b.num_rows())),
                        )?;
                        super::columns::conform(&loose, schema)
                    })
                    .collect()
            }
            Target::Stream { columns, .. } => {
                if columns.is_empty() {
                    return Ok(batches);
                }
                if columns.len() != names.len() {
                    return Err(EngineError::invalid(format!(
                        "{} columns named but the query gives {}",
                        columns.len(),
                        names.len()
                    )));
                }
                batches
                    .iter()
                    .map(|b| {
                        let schema = arrow::datatypes::Schema::new(
                            b.schema()
                                .fields()
                                .iter()
                                .zip(columns)
                                .map(|(f, c)| f.as_ref().clone().with_name(c))
                                .collect::<Vec<_>>(),
                        );
                        Ok(RecordBatch::try_new_with_options(
                            Arc::new(schema),
                            b.columns().to_vec(),
                            &arrow::array::RecordBatchOptions::new()
                                .with_row_count(Some(b.num_rows())),
                        )?)
                    })
                    .collect()
            }
        }
    }
}
