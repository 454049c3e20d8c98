//! The stream-stream join: `a [INNER|LEFT|RIGHT|FULL] JOIN b ON … WITHIN (INTERVAL …)`.
//! Each side's recent rows are buffered with their times, indexed by the equi-join key. A new
//! row of one side is matched against the other side's rows with the same key whose time is
//! within the bound (and that pass the rest of the `ON` condition); each match is emitted at
//! once. Rows leave a buffer when they fall out of the bound behind the watermark (the newest
//! time seen on either side); a row of an outer side that never matched is then emitted with
//! NULLs for the other side.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions,
};
use arrow::compute::{filter_record_batch, interleave};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::logical_expr::{Join, JoinType};
use datafusion::physical_expr::PhysicalExpr;

use crate::continuous::chunk::null_as_false;
use crate::error::{EngineError, Result};
use crate::value::nullable;

/// How far behind the watermark a buffered row may still match.
const JOIN_LATENESS_MS: i64 = 1000;

#[derive(Default)]
struct Side {
    /// Buffered batches (None once every row of it has expired).
    batches: Vec<Option<RecordBatch>>,
    /// Each buffered row's time, per batch.
    times: Vec<Vec<i64>>,
    /// Rows still buffered, per batch.
    live: Vec<Vec<bool>>,
    /// Key -> buffered rows `(batch, row)`.
    index: HashMap<OwnedRow, Vec<(u32, u32)>>,
    /// Key of each buffered row (None: a NULL key, which never matches).
    keys: Vec<Vec<Option<OwnedRow>>>,
    /// Rows that have matched at least once.
    matched: HashSet<(u32, u32)>,
}

/// The join operator.
pub(crate) struct JoinStage {
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    filter: Option<Arc<dyn PhysicalExpr>>,
    join_type: JoinType,
    within_ms: i64,
    converter: RowConverter,
    sides: [Side; 2],
    schemas: [SchemaRef; 2],
    out_schema: SchemaRef,
    watermark: i64,
}

impl JoinStage {
    /// Builds the operator for a logical join whose inputs have the given schemas.
    pub(crate) fn new(
        state: &datafusion::execution::SessionState,
        j: &Join,
        within_ms: i64,
    ) -> Result<Self> {
        match j.join_type {
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {}
            other => {
                return Err(EngineError::invalid(format!(
                    "{other} joins are not supported in continuous queries (INNER, LEFT, RIGHT \
                     and FULL are)"
                )))
            }
        }
        if j.on.is_empty() {
            return Err(EngineError::invalid(
                "a stream-stream join needs an equality between the two sides in ON (a.k = b.k)",
            ));
        }
        let mut left = Vec::new();
        let mut right = Vec::new();
        let mut fields = Vec::new();
        for (l, r) in &j.on {
            let lp = state.create_physical_expr(l.clone(), j.left.schema())?;
            let rp = state.create_physical_expr(r.clone(), j.right.schema())?;
            let lt = lp.data_type(j.left.schema().as_arrow())?;
            let rt = rp.data_type(j.right.schema().as_arrow())?;
            if lt != rt {
                return Err(EngineError::invalid(format!(
                    "join keys {l} ({lt}) and {r} ({rt}) have different types"
                )));
            }
            fields.push(SortField::new(lt));
            left.push(lp);
            right.push(rp);
        }
        let filter = j
            .filter
            .as_ref()
            .map(|f| state.create_physical_expr(f.clone(), &j.schema))
            .transpose()?;
        Ok(JoinStage {
            keys: [left, right],
            filter,
            join_type: j.join_type,
            within_ms,
            converter: RowConverter::new(fields)?,
            sides: [Side::default(), Side::default()],
            schemas: [
                nullable(j.left.schema().as_arrow()),
                nullable(j.right.schema().as_arrow()),
            ],
            out_schema: nullable(j.schema.as_arrow()),
            watermark: i64::MIN,
        })
    }

    /// Schema of a side's input.
    pub(crate) fn side_schema(&self, side: usize) -> SchemaRef {
        self.schemas[side].clone()
    }

    /// The current watermark.
    pub(crate) fn watermark(&self) -> Option<i64> {
        (self.watermark != i64::MIN).then_some(self.watermark)
    }

    /// Feeds rows of one side (with their times); returns the joined rows they produce,
    /// then the outer rows of rows that expired.
    pub(crate) fn push(
        &mut self,
        side: usize,
        batch: RecordBatch,
        times: &[i64],
    ) -> Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        let key_cols = self.keys[side]
            .iter()
            .map(|e| Ok(e.evaluate(&batch)?.into_array(n)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let rows = self.converter.convert_columns(&key_cols)?;
        let key_null = |i: usize| key_cols.iter().any(|c| c.is_null(i));
        let b = self.sides[side].batches.len() as u32;
        let other = 1 - side;
        // Candidate pairs: (this side's row, other side's (batch, row)).
        let mut pairs: Vec<(u32, (u32, u32))> = Vec::new();
        let mut keys = Vec::with_capacity(n);
        for (i, &t) in times.iter().enumerate().take(n) {
            if key_null(i) {
                keys.push(None);
                continue;
            }
            let key = rows.row(i).owned();
            if let Some(refs) = self.sides[other].index.get(&key) {
                for &(ob, or) in refs {
                    let ot = self.sides[other].times[ob as usize][or as usize];
                    if (ot - t).abs() <= self.within_ms {
                        pairs.push((i as u32, (ob, or)));
                    }
                }
            }
            keys.push(Some(key));
        }
        // Buffer the new rows.
        {
            let s = &mut self.sides[side];
            for (i, k) in keys.iter().enumerate() {
                if let Some(k) = k {
                    s.index.entry(k.clone()).or_default().push((b, i as u32));
                }
            }
            s.batches.push(Some(batch));
            s.times.push(times.to_vec());
            s.live.push(vec![true; n]);
            s.keys.push(keys);
        }
        if !pairs.is_empty() {
            let (joined, kept) = self.joined(side, b, &pairs)?;
            for (i, (r, o)) in pairs.iter().enumerate() {
                if kept[i] {
                    self.sides[side].matched.insert((b, *r));
                    self.sides[other].matched.insert(*o);
                }
            }
            if joined.num_rows() > 0 {
                out.push(joined);
            }
        }
        let newest = times.iter().copied().max().unwrap_or(i64::MIN);
        self.watermark = self.watermark.max(newest);
        out.extend(self.expire()?);
        Ok(out)
    }

    /// Builds the joined rows of `pairs` and applies the residual condition; returns the rows
    /// kept and, per pair, whether it was kept.
    fn joined(
        &self,
        side: usize,
        b: u32,
        pairs: &[(u32, (u32, u32))],
    ) -> Result<(RecordBatch, Vec<bool>)> {
        let other = 1 - side;
        let this_refs: Vec<(usize, usize)> = pairs
            .iter()
            .map(|(r, _)| (b as usize, *r as usize))
            .collect();
        let other_refs: Vec<(usize, usize)> = pairs
            .iter()
            .map(|(_, (ob, or))| (*ob as usize, *or as usize))
            .collect();
        let this_cols = self.gather(side, &this_refs)?;
        let other_cols = self.gather(other, &other_refs)?;
        let mut columns = Vec::new();
        if side == 0 {
            columns.extend(this_cols);
            columns.extend(other_cols);
        } else {
            columns.extend(other_cols);
            columns.extend(this_cols);
        }
        let batch = RecordBatch::try_new_with_options(
            self.out_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(pairs.len())),
        )?;
        match &self.filter {
            None => Ok((batch, vec![true; pairs.len()])),
            Some(f) => {
                let m = f.evaluate(&batch)?.into_array(pairs.len())?;
                let m = m
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| EngineError::invalid("a join condition must be BOOLEAN"))?;
                let m = null_as_false(m);
                let kept = (0..m.len()).map(|i| m.value(i)).collect();
                Ok((filter_record_batch(&batch, &m)?, kept))
            }
        }
    }

    /// The columns of the given buffered rows of one side.
    fn gather(&self, side: usize, refs: &[(usize, usize)]) -> Result<Vec<ArrayRef>> {
        let s = &self.sides[side];
        let ncols = self.schemas[side].fields().len();
        let mut out = Vec::with_capacity(ncols);
        // Only the batches referenced, renumbered.
        let mut used: Vec<usize> = refs.iter().map(|(b, _)| *b).collect();
        used.sort_unstable();
        used.dedup();
        let pos: HashMap<usize, usize> = used.iter().enumerate().map(|(i, b)| (*b, i)).collect();
        let idx: Vec<(usize, usize)> = refs.iter().map(|(b, r)| (pos[b], *r)).collect();
        for c in 0..ncols {
            let arrays: Vec<&dyn Array> = used
                .iter()
                .map(|b| {
                    s.batches[*b]
                        .as_ref()
                        .map(|batch| batch.column(c).as_ref())
                        .ok_or_else(|| EngineError::internal("join row of a dropped batch"))
                })
                .collect::<Result<_>>()?;
            out.push(interleave(&arrays, &idx)?);
        }
        Ok(out)
    }

    /// Drops rows that fell behind the watermark by more than the bound, returning the outer
    /// rows of those that never matched.
    fn expire(&mut self) -> Result<Vec<RecordBatch>> {
        let cutoff = self
            .watermark
            .saturating_sub(self.within_ms + JOIN_LATENESS_MS);
        let mut out = Vec::new();
        for side in 0..2 {
            let outer = matches!(
                (side, self.join_type),
                (0, JoinType::Left | JoinType::Full) | (1, JoinType::Right | JoinType::Full)
            );
            let mut unmatched: Vec<(usize, usize)> = Vec::new();
            let s = &mut self.sides[side];
            for b in 0..s.batches.len() {
                if s.batches[b].is_none() {
                    continue;
                }
                let mut any_live = false;
                for r in 0..s.times[b].len() {
                    if !s.live[b][r] {
                        continue;
                    }
                    if s.times[b][r] < cutoff {
                        s.live[b][r] = false;
                        if let Some(k) = &s.keys[b][r] {
                            if let Some(v) = s.index.get_mut(k) {
                                v.retain(|x| *x != (b as u32, r as u32));
                                if v.is_empty() {
                                    s.index.remove(k);
                                }
                            }
                        }
                        if outer && !s.matched.remove(&(b as u32, r as u32)) {
                            unmatched.push((b, r));
                        } else {
                            s.matched.remove(&(b as u32, r as u32));
                        }
                    } else {
                        any_live = true;
                    }
                }
                if !any_live && !unmatched.iter().any(|(ub, _)| *ub == b) {
                    s.batches[b] = None;
                }
            }
            if !unmatched.is_empty() {
                out.push(self.outer_rows(side, &unmatched)?);
                let s = &mut self.sides[side];
                for (b, _) in &unmatched {
                    if s.live[*b].iter().all(|l| !l) {
                        s.batches[*b] = None;
                    }
                }
            }
        }
        Ok(out)
    }

    fn outer_rows(&self, side: usize, refs: &[(usize, usize)]) -> Result<RecordBatch> {
        let cols = self.gather(side, refs)?;
        let other = 1 - side;
        let nulls: Vec<ArrayRef> = self.schemas[other]
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), refs.len()))
            .collect();
        let columns = if side == 0 {
            cols.into_iter().chain(nulls).collect()
        } else {
            nulls.into_iter().chain(cols).collect()
        };
        Ok(RecordBatch::try_new_with_options(
            self.out_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(refs.len())),
        )?)
    }

    /// The buffered rows of both sides, with their times and whether they matched, as two
    /// length-prefixed Arrow IPC streams (for a checkpoint).
    pub(crate) fn snapshot(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for side in 0..2 {
            let s = &self.sides[side];
            let mut refs = Vec::new();
            let mut times = Vec::new();
            let mut matched = Vec::new();
            for b in 0..s.batches.len() {
                if s.batches[b].is_none() {
                    continue;
                }
                for r in 0..s.live[b].len() {
                    if s.live[b][r] {
                        refs.push((b, r));
                        times.push(s.times[b][r]);
                        matched.push(s.matched.contains(&(b as u32, r as u32)));
                    }
                }
            }
            let mut columns = if refs.is_empty() {
                self.schemas[side]
                    .fields()
                    .iter()
                    .map(|f| arrow::array::new_empty_array(f.data_type()))
                    .collect()
            } else {
                self.gather(side, &refs)?
            };
            let mut fields: Vec<arrow::datatypes::Field> = self.schemas[side]
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| f.as_ref().clone().with_name(format!("c{i}")))
                .collect();
            fields.push(arrow::datatypes::Field::new(
                "__time",
                arrow::datatypes::DataType::Int64,
                false,
            ));
            fields.push(arrow::datatypes::Field::new(
                "__matched",
                arrow::datatypes::DataType::Boolean,
                false,
            ));
            columns.push(Arc::new(arrow::array::Int64Array::from(times)));
            columns.push(Arc::new(BooleanArray::from(matched)));
            let schema = Arc::new(arrow::datatypes::Schema::new(fields));
            let batch = RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(refs.len())),
            )?;
            let mut bytes = Vec::new();
            {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &schema)?;
                w.write(&batch)?;
                w.finish()?;
            }
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend(bytes);
        }
        Ok(out)
    }

    /// Restores buffers saved by [`snapshot`](Self::snapshot) into an empty operator.
    pub(crate) fn restore(&mut self, mut bytes: &[u8]) -> Result<()> {
        for side in 0..2 {
            if bytes.len() < 8 {
                return Err(EngineError::internal("join checkpoint is truncated"));
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&bytes[..8]);
            let len = u64::from_le_bytes(len) as usize;
            let body = bytes
                .get(8..8 + len)
                .ok_or_else(|| EngineError::internal("join checkpoint is truncated"))?;
            bytes = &bytes[8 + len..];
            let reader = arrow::ipc::reader::StreamReader::try_new(body, None)?;
            for batch in reader {
                let batch = batch?;
                let n = batch.num_rows();
                let ncols = self.schemas[side].fields().len();
                if batch.num_columns() != ncols + 2 || n == 0 {
                    if batch.num_columns() != ncols + 2 {
                        return Err(EngineError::internal(
                            "join checkpoint does not match the query",
                        ));
                    }
                    continue;
                }
                let times: Vec<i64> = batch
                    .column(ncols)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec();
                let matched = batch.column(ncols + 1).as_boolean().clone();
                let rows = RecordBatch::try_new_with_options(
                    self.schemas[side].clone(),
                    batch.columns()[..ncols].to_vec(),
                    &RecordBatchOptions::new().with_row_count(Some(n)),
                )?;
                let key_cols = self.keys[side]
                    .iter()
                    .map(|e| Ok(e.evaluate(&rows)?.into_array(n)?))
                    .collect::<Result<Vec<ArrayRef>>>()?;
                let conv = self.converter.convert_columns(&key_cols)?;
                let b = self.sides[side].batches.len() as u32;
                let s = &mut self.sides[side];
                let mut keys = Vec::with_capacity(n);
                for i in 0..n {
                    if key_cols.iter().any(|c| c.is_null(i)) {
                        keys.push(None);
                        continue;
                    }
                    let k = conv.row(i).owned();
                    s.index.entry(k.clone()).or_default().push((b, i as u32));
                    keys.push(Some(k));
                    if matched.value(i) {
                        s.matched.insert((b, i as u32));
                    }
                }
                s.batches.push(Some(rows));
                s.times.push(times.clone());
                s.live.push(vec![true; n]);
                s.keys.push(keys);
                if let Some(&t) = times.iter().max() {
                    self.watermark = self.watermark.max(t);
                }
            }
        }
        Ok(())
    }
}
