//! What moves through a continuous pipeline: a [`Chunk`] of rows (and, once aggregated, the
//! group of each row), and the filter-mask rule every stage shares.

use arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array};

/// Rows moving through a pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// The rows.
    pub batch: RecordBatch,
    /// After an aggregate: the group id of each row.
    pub groups: Option<UInt32Array>,
    /// After an aggregate and a filter: groups whose new row the filter rejected (a view
    /// drops them).
    pub rejected: Vec<u32>,
}

impl Chunk {
    /// Rows straight from a source.
    pub(crate) fn new(batch: RecordBatch) -> Self {
        Chunk {
            batch,
            groups: None,
            rejected: Vec::new(),
        }
    }
}

/// A filter mask with NULL read as false.
pub(crate) fn null_as_false(mask: &BooleanArray) -> BooleanArray {
    if mask.null_count() == 0 {
        mask.clone()
    } else {
        arrow::compute::prep_null_mask_filter(mask)
    }
}
