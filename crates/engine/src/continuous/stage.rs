//! Continuous stages: what a compiled query does to each micro-batch. Filters and projections
//! are stateless (DataFusion physical expressions evaluated on the batch); the aggregate keeps
//! state across batches (see `aggregate`). A chunk carries, next to its rows, the group of
//! each row once it has been aggregated, so a view can tell which group a row updates and
//! which groups a `HAVING` filter removes.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array};
use arrow::compute::{filter, filter_record_batch, kernels::cast::cast};
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use crate::continuous::aggregate::AggregateStage;
use crate::continuous::chunk::{null_as_false, Chunk};
use crate::error::{EngineError, Result};

/// One stage of a continuous pipeline.
pub(crate) enum Stage {
    /// Keeps the rows for which the predicate is true (`WHERE`, `HAVING`).
    Filter(Arc<dyn PhysicalExpr>),
    /// Computes the output columns.
    Project {
        /// One expression per output column.
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        /// The output schema.
        schema: SchemaRef,
    },
    /// `GROUP BY` with aggregates (stateful).
    Aggregate(Box<AggregateStage>),
}

impl Stage {
    /// Runs the stage on a chunk.
    pub(crate) fn apply(&mut self, chunk: Chunk) -> Result<Chunk> {
        match self {
            Stage::Filter(pred) => {
                let n = chunk.batch.num_rows();
                let mask = pred.evaluate(&chunk.batch)?.into_array(n)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| {
                        EngineError::invalid(format!(
                            "a filter condition must be BOOLEAN, not {}",
                            mask.data_type()
                        ))
                    })?
                    .clone();
                // NULL counts as false.
                let mask = null_as_false(&mask);
                let batch = filter_record_batch(&chunk.batch, &mask)?;
                let mut rejected = chunk.rejected;
                let groups = match chunk.groups {
                    Some(g) => {
                        for (i, keep) in mask.iter().enumerate() {
                            if keep != Some(true) {
                                rejected.push(g.value(i));
                            }
                        }
                        let kept = filter(&g, &mask)?;
                        Some(
                            kept.as_any()
                                .downcast_ref::<UInt32Array>()
                                .ok_or_else(|| EngineError::internal("group ids lost their type"))?
                                .clone(),
                        )
                    }
                    None => None,
                };
                Ok(Chunk {
                    batch,
                    groups,
                    rejected,
                })
            }
            Stage::Project { exprs, schema } => {
                let n = chunk.batch.num_rows();
                let mut columns: Vec<ArrayRef> = Vec::with_capacity(exprs.len());
                for (e, field) in exprs.iter().zip(schema.fields()) {
                    let mut col = e.evaluate(&chunk.batch)?.into_array(n)?;
                    if col.data_type() != field.data_type() {
                        col = cast(&col, field.data_type())?;
                    }
                    columns.push(col);
                }
                let batch = RecordBatch::try_new_with_options(
                    schema.clone(),
                    columns,
                    &RecordBatchOptions::new().with_row_count(Some(n)),
                )?;
                Ok(Chunk {
                    batch,
                    groups: chunk.groups,
                    rejected: chunk.rejected,
                })
            }
            Stage::Aggregate(agg) => agg.apply(&chunk.batch),
        }
    }
}

/// Runs every stage on a batch.
pub(crate) fn run_stages(stages: &mut [Stage], batch: RecordBatch) -> Result<Chunk> {
    let mut chunk = Chunk::new(batch);
    for stage in stages.iter_mut() {
        if chunk.batch.num_rows() == 0 && chunk.rejected.is_empty() {
            break;
        }
        chunk = stage.apply(chunk)?;
    }
    Ok(chunk)
}
