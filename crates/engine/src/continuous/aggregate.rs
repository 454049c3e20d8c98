//! The continuous aggregate: `GROUP BY` state kept across micro-batches. Each group has one
//! DataFusion `Accumulator` per aggregate call (mergeable, serializable state). With
//! `EMIT CHANGES` the stage emits the group's new row after every input row, exactly as
//! HStreamDB does (`max_len` 10.0, 20.0, 20.0 for lengths 10, 20, 10); otherwise it updates
//! each group once per micro-batch and emits one row per changed group.
//!
//! A snapshot (group keys plus each accumulator's state, as an Arrow IPC stream) is what a
//! checkpoint saves and what a restart merges back.

use std::sync::Arc;

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions,
    TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{cast, filter, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Accumulator, Aggregate};
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use datafusion::physical_expr::PhysicalExpr;

use crate::continuous::chunk::Chunk;
use crate::continuous::session::{Assigned, Sessions};
use crate::error::{EngineError, Result};
use crate::value::nullable;

struct AggCall {
    func: Arc<AggregateFunctionExpr>,
    args: Vec<Arc<dyn PhysicalExpr>>,
    filter: Option<Arc<dyn PhysicalExpr>>,
}

/// `GROUP BY` state and its update rules.
pub(crate) struct AggregateStage {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    calls: Vec<AggCall>,
    converter: RowConverter,
    /// Group id by the group key's row bytes (a fast non-cryptographic hash: the keys are
    /// not attacker-chosen table sizes, and DataFusion uses the same map).
    index: datafusion::common::HashMap<Box<[u8]>, u32>,
    keys: Rows,
    accumulators: Vec<Vec<Box<dyn Accumulator>>>,
    /// Scratch for grouping a micro-batch's rows: per group id, its position among the
    /// groups the batch touches (`u32::MAX` between batches).
    slot: Vec<u32>,
    schema: SchemaRef,
    per_row: bool,
    /// Session windows, when the source is `SESSION(…)`.
    session: Option<SessionWindows>,
    /// Groups of sessions merged into others during a batch (dropped at its end).
    merged_groups: Vec<u32>,
}

/// A batch put into sessions: the rows kept, their group columns (session ids in the window
/// columns) and each row's session bounds `(start, end)` as of that row.
type SessionRows = (RecordBatch, Vec<ArrayRef>, Vec<(i64, i64)>);

/// How an aggregate over `SESSION(…)` keeps its sessions (see [`crate::session`]).
struct SessionWindows {
    sessions: Sessions,
    /// Positions of `window_start` and `window_end` among the group columns.
    start_col: usize,
    end_col: usize,
    /// The other group columns (the session key) and their row encoding.
    key_cols: Vec<usize>,
    key_converter: RowConverter,
    /// Records whose session would already be closed at this watermark are dropped.
    watermark: i64,
}

impl AggregateStage {
    /// Builds the stage for a logical `Aggregate`.
    pub(crate) fn new(
        state: &datafusion::execution::SessionState,
        agg: &Aggregate,
        per_row: bool,
    ) -> Result<Self> {
        let input_schema = agg.input.schema();
        let group_exprs = agg
            .group_expr
            .iter()
            .map(|e| {
                if matches!(e, datafusion::logical_expr::Expr::GroupingSet(_)) {
                    return Err(EngineError::invalid(
                        "GROUPING SETS, CUBE and ROLLUP are not supported in continuous queries",
                    ));
                }
                Ok(state.create_physical_expr(e.clone(), input_schema)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let physical_input = input_schema.as_arrow();
        let mut calls = Vec::new();
        for e in &agg.aggr_expr {
            let planning = datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default();
            let lowered = LoweredAggregateBuilder::new(
                e,
                input_schema,
                physical_input,
                state.execution_props(),
                &planning,
            )
            .build()?;
            let (func, filter) = (lowered.aggregate, lowered.filter);
            if !lowered.order_bys.is_empty() {
                return Err(EngineError::invalid(
                    "ORDER BY inside an aggregate call is not supported in continuous queries",
                ));
            }
            let args = func.expressions();
            calls.push(AggCall { func, args, filter });
        }
        let schema = nullable(agg.schema.as_arrow());
        let sort_fields = schema.fields()[..group_exprs.len()]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let converter = RowConverter::new(sort_fields)?;
        let keys = converter.empty_rows(0, 0);
        Ok(AggregateStage {
            group_exprs,
            calls,
            converter,
            index: datafusion::common::HashMap::default(),
            slot: Vec::new(),
            keys,
            accumulators: Vec::new(),
            schema,
            per_row,
            session: None,
            merged_groups: Vec::new(),
        })
    }

    /// Makes this an aggregate over session windows of `gap_ms`: its input's `window_start`
    /// and `window_end` hold each record's event time, and both must be group columns.
    pub(crate) fn use_sessions(&mut self, gap_ms: i64, lateness_ms: i64) -> Result<()> {
        let (Some(start_col), Some(end_col)) = (
            self.key_index(crate::continuous::window::WINDOW_START),
            self.key_index(crate::continuous::window::WINDOW_END),
        ) else {
            return Err(EngineError::invalid(
                "SESSION windows need GROUP BY window_start, window_end (a session exists only \
                 as a group of records)",
            ));
        };
        let key_cols: Vec<usize> = (0..self.group_exprs.len())
            .filter(|&c| c != start_col && c != end_col)
            .collect();
        let key_converter = RowConverter::new(
            key_cols
                .iter()
                .map(|&c| SortField::new(self.schema.field(c).data_type().clone()))
                .collect(),
        )?;
        self.session = Some(SessionWindows {
            sessions: Sessions::new(gap_ms, lateness_ms),
            start_col,
            end_col,
            key_cols,
            key_converter,
            watermark: i64::MIN,
        });
        Ok(())
    }

    /// The watermark before the next batch (session windows drop records that are too late).
    pub(crate) fn set_watermark(&mut self, watermark: Option<i64>) {
        if let (Some(s), Some(wm)) = (self.session.as_mut(), watermark) {
            s.watermark = wm;
        }
    }

    /// Session windows: puts each row in its session. Returns the rows kept (late ones are
    /// dropped), their group columns with the session id in both window columns, and each
    /// kept row's session bounds as of that row. Sessions a row bridges are merged, their
    /// groups folded into the surviving one.
    fn assign_sessions(
        &mut self,
        batch: &RecordBatch,
        mut keys: Vec<ArrayRef>,
    ) -> Result<SessionRows> {
        let n = batch.num_rows();
        let Some(sw) = self.session.as_mut() else {
            return Err(EngineError::internal("not a session aggregate"));
        };
        let times = cast(
            &keys[sw.start_col],
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let times = times.as_primitive::<TimestampMillisecondType>();
        let key_rows = sw.key_converter.convert_columns(
            &sw.key_cols
                .iter()
                .map(|&c| keys[c].clone())
                .collect::<Vec<_>>(),
        )?;
        let mut keep = Vec::with_capacity(n);
        let mut ids: Vec<i64> = Vec::with_capacity(n);
        let mut bounds = Vec::with_capacity(n);
        let mut merges: Vec<(usize, i64, i64)> = Vec::new();
        let keyed = !sw.key_cols.is_empty();
        for row in 0..n {
            if times.is_null(row) {
                keep.push(false);
                continue;
            }
            // Without other group columns every record has the same (empty) key.
            let (t, wm) = (times.value(row), sw.watermark);
            let assigned = match keyed {
                true => sw.sessions.assign(key_rows.row(row).as_ref(), t, wm),
                false => sw.sessions.assign(&[], t, wm),
            };
            match assigned {
                Assigned::Late => keep.push(false),
                Assigned::Session {
                    id,
                    bounds: b,
                    merged,
                } => {
                    keep.push(true);
                    ids.push(id);
                    bounds.push((b.start, b.end));
                    merges.extend(merged.into_iter().map(|m| (row, m, id)));
                }
            }
        }
        let (start_col, end_col) = (sw.start_col, sw.end_col);
        // A session merged away later in the batch: its earlier rows go to the survivor.
        let into: HashMap<i64, i64> = merges.iter().map(|&(_, from, to)| (from, to)).collect();
        let resolve = |mut id: i64| {
            while let Some(&to) = into.get(&id) {
                id = to;
            }
            id
        };
        for id in ids.iter_mut() {
            *id = resolve(*id);
        }
        for &(row, from, to) in &merges {
            self.fold_session_group(&keys, row, from, resolve(to))?;
        }
        let mask = BooleanArray::from(keep);
        let batch = arrow::compute::filter_record_batch(batch, &mask)?;
        for (c, k) in keys.iter_mut().enumerate() {
            *k = if c == start_col || c == end_col {
                cast(
                    &TimestampMillisecondArray::from(ids.clone()),
                    self.schema.field(c).data_type(),
                )?
            } else {
                filter(k.as_ref(), &mask)?
            };
        }
        Ok((batch, keys, bounds))
    }

    /// Folds the group of session `from` (key of row `row`) into the group of session `to`.
    fn fold_session_group(
        &mut self,
        keys: &[ArrayRef],
        row: usize,
        from: i64,
        to: i64,
    ) -> Result<()> {
        let Some(sw) = self.session.as_ref() else {
            return Ok(());
        };
        let (start_col, end_col) = (sw.start_col, sw.end_col);
        let key_of = |id: i64| -> Result<Vec<ArrayRef>> {
            keys.iter()
                .enumerate()
                .map(|(c, k)| {
                    Ok(if c == start_col || c == end_col {
                        cast(
                            &TimestampMillisecondArray::from(vec![id]),
                            self.schema.field(c).data_type(),
                        )?
                    } else {
                        k.slice(row, 1)
                    })
                })
                .collect()
        };
        let from_key = key_of(from)?;
        let rows = self.converter.convert_columns(&from_key)?;
        let Some(&g_from) = self.index.get(rows.row(0).as_ref()) else {
            // The session had no group yet (it began in this batch).
            return Ok(());
        };
        let g_to = self.group_ids(&key_of(to)?, 1)?[0];
        for (c, call) in self.calls.iter().enumerate() {
            let state = self.accumulators[g_from as usize][c].state()?;
            let arrays = state
                .iter()
                .map(|v| v.to_array_of_size(1))
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            self.accumulators[g_to as usize][c].merge_batch(&arrays)?;
            // The folded group is dropped at the end of the batch; keep it valid until then.
            self.accumulators[g_from as usize][c] = call.func.create_accumulator()?;
        }
        self.merged_groups.push(g_from);
        Ok(())
    }

    /// Session windows: the window columns of `columns` (group columns holding session ids)
    /// replaced by the sessions' bounds.
    fn session_bounds(&self, columns: &mut [ArrayRef]) -> Result<()> {
        let Some(sw) = self.session.as_ref() else {
            return Ok(());
        };
        if columns.is_empty() {
            return Ok(());
        }
        let ids = cast(
            &columns[sw.start_col],
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let ids = ids.as_primitive::<TimestampMillisecondType>();
        let (mut starts, mut ends) = (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
        for i in 0..ids.len() {
            let b = (!ids.is_null(i))
                .then(|| sw.sessions.bounds(ids.value(i)))
                .flatten();
            starts.push(b.map(|b| b.start));
            ends.push(b.map(|b| b.end));
        }
        columns[sw.start_col] = cast(
            &TimestampMillisecondArray::from(starts),
            self.schema.field(sw.start_col).data_type(),
        )?;
        columns[sw.end_col] = cast(
            &TimestampMillisecondArray::from(ends),
            self.schema.field(sw.end_col).data_type(),
        )?;
        Ok(())
    }

    /// Drops the groups of windows closed at `watermark` (end + `lateness_ms` at or before
    /// it), returning how many.
    pub(crate) fn evict_windows(&mut self, watermark: i64, lateness_ms: i64) -> Result<usize> {
        if let Some(sw) = self.session.as_mut() {
            let start_col = sw.start_col;
            let closed = sw.sessions.forget_closed(watermark);
            if closed.is_empty() {
                return Ok(0);
            }
            return self.evict(|keys: &[ArrayRef], g| {
                let ids = keys[start_col].as_primitive::<TimestampMillisecondType>();
                !ids.is_null(g) && closed.contains(&ids.value(g))
            });
        }
        let Some(end_col) = self.key_index(crate::continuous::window::WINDOW_END) else {
            return Ok(0);
        };
        self.evict(|keys: &[ArrayRef], g| {
            let ends = keys[end_col].as_primitive::<TimestampMillisecondType>();
            !ends.is_null(g) && ends.value(g) + lateness_ms <= watermark
        })
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.calls
            .iter()
            .map(|c| Ok(c.func.create_accumulator()?))
            .collect()
    }

    /// The group id of every row, creating groups as needed.
    fn group_ids(&mut self, key_columns: &[ArrayRef], n: usize) -> Result<Vec<u32>> {
        if key_columns.is_empty() {
            if self.accumulators.is_empty() {
                let accs = self.new_accumulators()?;
                self.accumulators.push(accs);
            }
            return Ok(vec![0; n]);
        }
        let rows = self.converter.convert_columns(key_columns)?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let row = rows.row(i);
            let id = match self.index.get(row.as_ref()) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(self.accumulators.len()).map_err(|_| {
                        EngineError::invalid("a continuous aggregate may hold at most 2^32 groups")
                    })?;
                    let accs = self.new_accumulators()?;
                    self.accumulators.push(accs);
                    self.keys.push(row);
                    self.index.insert(row.as_ref().into(), id);
                    id
                }
            };
            ids.push(id);
        }
        Ok(ids)
    }

    /// Evaluates each call's arguments, with rows its `FILTER` rejects turned off.
    fn call_inputs(
        &self,
        batch: &RecordBatch,
    ) -> Result<Vec<(Vec<ArrayRef>, Option<BooleanArray>)>> {
        let n = batch.num_rows();
        self.calls
            .iter()
            .map(|c| {
                let args = c
                    .args
                    .iter()
                    .map(|a| Ok(a.evaluate(batch)?.into_array(n)?))
                    .collect::<Result<Vec<_>>>()?;
                let mask = match &c.filter {
                    None => None,
                    Some(f) => {
                        let m = f.evaluate(batch)?.into_array(n)?;
                        let m = m
                            .as_any()
                            .downcast_ref::<BooleanArray>()
                            .ok_or_else(|| {
                                EngineError::invalid("FILTER (WHERE …) must be BOOLEAN")
                            })?
                            .clone();
                        Some(crate::continuous::chunk::null_as_false(&m))
                    }
                };
                Ok((args, mask))
            })
            .collect()
    }

    /// Feeds a batch; returns the updated rows.
    pub(crate) fn apply(&mut self, batch: &RecordBatch) -> Result<Chunk> {
        let chunk = self.apply_rows(batch);
        // Groups of sessions merged into others go, whatever happened to the batch.
        if !self.merged_groups.is_empty() {
            let gone = std::mem::take(&mut self.merged_groups);
            self.evict_groups(&gone)?;
        }
        chunk
    }

    fn apply_rows(&mut self, batch: &RecordBatch) -> Result<Chunk> {
        let n = batch.num_rows();
        let mut key_columns = self
            .group_exprs
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
            .collect::<Result<Vec<_>>>()?;
        let mut row_bounds = None;
        let sessioned;
        let batch = if self.session.is_some() {
            let (b, k, bounds) = self.assign_sessions(batch, key_columns)?;
            key_columns = k;
            row_bounds = Some(bounds);
            sessioned = b;
            &sessioned
        } else {
            batch
        };
        let n = batch.num_rows();
        let ids = self.group_ids(&key_columns, n)?;
        let inputs = self.call_inputs(batch)?;
        let ncalls = self.calls.len();
        if self.per_row {
            let mut values: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); ncalls];
            for (row, &id) in ids.iter().enumerate() {
                for (c, (args, mask)) in inputs.iter().enumerate() {
                    let acc = &mut self.accumulators[id as usize][c];
                    if mask.as_ref().is_none_or(|m| m.value(row)) {
                        let one: Vec<ArrayRef> = args.iter().map(|a| a.slice(row, 1)).collect();
                        acc.update_batch(&one)?;
                    }
                    values[c].push(acc.evaluate()?);
                }
            }
            let mut columns = key_columns;
            if let (Some(bounds), Some(sw)) = (row_bounds, self.session.as_ref()) {
                // Each row shows its session as it was after that row.
                let (starts, ends): (Vec<i64>, Vec<i64>) = bounds.into_iter().unzip();
                columns[sw.start_col] = Arc::new(TimestampMillisecondArray::from(starts));
                columns[sw.end_col] = Arc::new(TimestampMillisecondArray::from(ends));
            }
            for v in values {
                columns.push(if v.is_empty() {
                    arrow::array::new_empty_array(self.schema.field(columns.len()).data_type())
                } else {
                    ScalarValue::iter_to_array(v)?
                });
            }
            let batch = self.output(columns, n)?;
            Ok(Chunk {
                batch,
                groups: Some(UInt32Array::from(ids)),
                rejected: Vec::new(),
            })
        } else {
            // The touched groups in order of first appearance, and the rows sorted by group
            // (a counting sort), so each argument column is gathered once and every group
            // updates from a zero-copy slice of it.
            let mut order: Vec<u32> = Vec::new();
            let mut local: Vec<u32> = Vec::with_capacity(n);
            if self.slot.len() < self.accumulators.len() {
                self.slot.resize(self.accumulators.len(), u32::MAX);
            }
            for &id in &ids {
                let slot = &mut self.slot[id as usize];
                if *slot == u32::MAX {
                    *slot = order.len() as u32;
                    order.push(id);
                }
                local.push(*slot);
            }
            for &id in &order {
                self.slot[id as usize] = u32::MAX;
            }
            let mut starts = vec![0usize; order.len() + 1];
            for &l in &local {
                starts[l as usize + 1] += 1;
            }
            for g in 0..order.len() {
                starts[g + 1] += starts[g];
            }
            let mut fill = starts.clone();
            let mut perm = vec![0u32; n];
            for (row, &l) in local.iter().enumerate() {
                perm[fill[l as usize]] = row as u32;
                fill[l as usize] += 1;
            }
            let perm = UInt32Array::from(perm);
            for (c, (args, mask)) in inputs.iter().enumerate() {
                let sorted: Vec<ArrayRef> = args
                    .iter()
                    .map(|a| Ok(take(a.as_ref(), &perm, None)?))
                    .collect::<Result<_>>()?;
                let sorted_mask = match mask {
                    Some(m) => Some(
                        take(m, &perm, None)?
                            .as_any()
                            .downcast_ref::<BooleanArray>()
                            .ok_or_else(|| EngineError::internal("mask lost its type"))?
                            .clone(),
                    ),
                    None => None,
                };
                for (g, &id) in order.iter().enumerate() {
                    let (start, len) = (starts[g], starts[g + 1] - starts[g]);
                    let mut sel: Vec<ArrayRef> =
                        sorted.iter().map(|a| a.slice(start, len)).collect();
                    if let Some(m) = &sorted_mask {
                        let m = m.slice(start, len);
                        sel = sel
                            .iter()
                            .map(|a| Ok(filter(a.as_ref(), &m)?))
                            .collect::<Result<_>>()?;
                    }
                    self.accumulators[id as usize][c].update_batch(&sel)?;
                }
            }
            self.rows_for(&order)
        }
    }

    /// The current rows of the given groups.
    pub(crate) fn rows_for(&mut self, ids: &[u32]) -> Result<Chunk> {
        let mut columns: Vec<ArrayRef> = if self.group_exprs.is_empty() {
            Vec::new()
        } else {
            self.converter
                .convert_rows(ids.iter().map(|&id| self.keys.row(id as usize)))?
        };
        self.session_bounds(&mut columns)?;
        for c in 0..self.calls.len() {
            let vals = ids
                .iter()
                .map(|&id| self.accumulators[id as usize][c].evaluate())
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            columns.push(if vals.is_empty() {
                arrow::array::new_empty_array(self.schema.field(columns.len()).data_type())
            } else {
                ScalarValue::iter_to_array(vals)?
            });
        }
        let batch = self.output(columns, ids.len())?;
        Ok(Chunk {
            batch,
            groups: Some(UInt32Array::from(ids.to_vec())),
            rejected: Vec::new(),
        })
    }

    /// Every group's current row.
    pub(crate) fn all_rows(&mut self) -> Result<Chunk> {
        let ids: Vec<u32> = (0..self.accumulators.len() as u32).collect();
        self.rows_for(&ids)
    }

    fn output(&self, mut columns: Vec<ArrayRef>, n: usize) -> Result<RecordBatch> {
        for (col, field) in columns.iter_mut().zip(self.schema.fields()) {
            if col.data_type() != field.data_type() {
                *col = cast(col, field.data_type())?;
            }
        }
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// The state of every group as an Arrow IPC stream: the key columns, then each call's
    /// state fields.
    pub(crate) fn snapshot(&mut self) -> Result<Vec<u8>> {
        let ngroups = self.accumulators.len();
        let mut fields: Vec<Field> = self.schema.fields()[..self.group_exprs.len()]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns: Vec<ArrayRef> = if self.group_exprs.is_empty() || ngroups == 0 {
            fields
                .iter()
                .map(|f| arrow::array::new_empty_array(f.data_type()))
                .collect()
        } else {
            self.converter
                .convert_rows((0..ngroups).map(|i| self.keys.row(i)))?
        };
        // Sessions are saved with their bounds (ids are not kept across restarts).
        if ngroups > 0 {
            self.session_bounds(&mut columns)?;
        }
        for (c, call) in self.calls.iter().enumerate() {
            let state_fields = call.func.state_fields()?;
            let mut per_field: Vec<Vec<ScalarValue>> =
                vec![Vec::with_capacity(ngroups); state_fields.len()];
            for g in 0..ngroups {
                // `state()` may consume the accumulator: rebuild it from the state it gave.
                let st = self.accumulators[g][c].state()?;
                let arrays = st
                    .iter()
                    .map(|s| s.to_array_of_size(1))
                    .collect::<datafusion::common::Result<Vec<_>>>()?;
                let mut fresh = call.func.create_accumulator()?;
                fresh.merge_batch(&arrays)?;
                self.accumulators[g][c] = fresh;
                for (i, s) in st.into_iter().enumerate() {
                    per_field[i].push(s);
                }
            }
            for (i, f) in state_fields.iter().enumerate() {
                fields.push(Field::new(
                    format!("{c}:{}", f.name()),
                    f.data_type().clone(),
                    true,
                ));
                columns.push(if ngroups == 0 {
                    arrow::array::new_empty_array(f.data_type())
                } else {
                    ScalarValue::iter_to_array(std::mem::take(&mut per_field[i]))?
                });
            }
        }
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(ngroups)),
        )?;
        let mut out = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut out, &schema)?;
            w.write(&batch)?;
            w.finish()?;
        }
        Ok(out)
    }

    /// Restores groups from a [`snapshot`](Self::snapshot) (into an empty stage).
    pub(crate) fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let reader = StreamReader::try_new(bytes, None)?;
        let nkeys = self.group_exprs.len();
        for batch in reader {
            let batch = batch?;
            let n = batch.num_rows();
            let mut key_columns: Vec<ArrayRef> = batch.columns()[..nkeys].to_vec();
            if n > 0 {
                self.restore_sessions(&mut key_columns)?;
            }
            let ids = self.group_ids(&key_columns, n)?;
            let mut col = nkeys;
            for c in 0..self.calls.len() {
                let width = self.calls[c].func.state_fields()?.len();
                if col + width > batch.num_columns() {
                    return Err(EngineError::internal("checkpoint does not match the query"));
                }
                let states: Vec<ArrayRef> = batch.columns()[col..col + width].to_vec();
                for (row, &id) in ids.iter().enumerate() {
                    let one: Vec<ArrayRef> = states.iter().map(|a| a.slice(row, 1)).collect();
                    self.accumulators[id as usize][c].merge_batch(&one)?;
                }
                col += width;
            }
        }
        Ok(())
    }

    /// Session windows: registers the saved sessions of restored group columns (bounds in
    /// the window columns) and puts their new ids in place of the bounds.
    fn restore_sessions(&mut self, key_columns: &mut [ArrayRef]) -> Result<()> {
        let Some(sw) = self.session.as_mut() else {
            return Ok(());
        };
        let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
        let starts = cast(&key_columns[sw.start_col], &ms)?;
        let ends = cast(&key_columns[sw.end_col], &ms)?;
        let (starts, ends) = (
            starts.as_primitive::<TimestampMillisecondType>(),
            ends.as_primitive::<TimestampMillisecondType>(),
        );
        let key_rows = sw.key_converter.convert_columns(
            &sw.key_cols
                .iter()
                .map(|&c| key_columns[c].clone())
                .collect::<Vec<_>>(),
        )?;
        let mut ids = Vec::with_capacity(starts.len());
        for i in 0..starts.len() {
            if starts.is_null(i) || ends.is_null(i) {
                return Err(EngineError::internal("a saved session has no bounds"));
            }
            let bounds = crate::continuous::session::Bounds {
                start: starts.value(i),
                end: ends.value(i),
            };
            ids.push(match sw.key_cols.is_empty() {
                false => sw.sessions.restore(key_rows.row(i).as_ref(), bounds),
                true => sw.sessions.restore(&[], bounds),
            });
        }
        let ids: ArrayRef = Arc::new(TimestampMillisecondArray::from(ids));
        for c in [sw.start_col, sw.end_col] {
            key_columns[c] = cast(&ids, self.schema.field(c).data_type())?;
        }
        Ok(())
    }

    /// Drops the given groups (renumbering the others).
    fn evict_groups(&mut self, groups: &[u32]) -> Result<usize> {
        let gone: std::collections::HashSet<u32> = groups.iter().copied().collect();
        self.evict(|_, g| gone.contains(&(g as u32)))
    }

    /// Drops the groups for which `expired` is true of their key row, returning how many.
    /// Group ids are renumbered, so call this between batches only.
    pub(crate) fn evict(&mut self, expired: impl Fn(&[ArrayRef], usize) -> bool) -> Result<usize> {
        let ngroups = self.accumulators.len();
        if ngroups == 0 || self.group_exprs.is_empty() {
            return Ok(0);
        }
        let key_columns = self
            .converter
            .convert_rows((0..ngroups).map(|i| self.keys.row(i)))?;
        let keep: Vec<usize> = (0..ngroups)
            .filter(|&g| !expired(&key_columns, g))
            .collect();
        if keep.len() == ngroups {
            return Ok(0);
        }
        let mut accs = std::mem::take(&mut self.accumulators);
        let old_keys = std::mem::replace(&mut self.keys, self.converter.empty_rows(0, 0));
        self.index.clear();
        for (new_id, &g) in keep.iter().enumerate() {
            let row = old_keys.row(g);
            self.keys.push(row);
            self.index.insert(row.as_ref().into(), new_id as u32);
            self.accumulators.push(std::mem::take(&mut accs[g]));
        }
        Ok(ngroups - keep.len())
    }

    /// Whether the key column `name` exists, and its index.
    pub(crate) fn key_index(&self, name: &str) -> Option<usize> {
        self.schema.fields()[..self.group_exprs.len()]
            .iter()
            .position(|f| f.name() == name)
    }
}
