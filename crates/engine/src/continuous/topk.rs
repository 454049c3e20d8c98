//! HStream SQL's `TOPK(e, k)` and `TOPKDISTINCT(e, k)` aggregates: the `k` largest values of
//! a numeric expression (distinct ones for `TOPKDISTINCT`), largest first, as an array. `k` must
//! be a positive integer literal. Their state (the values kept) merges like any DataFusion
//! aggregate, so they work in views, continuous queries and checkpoints.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{DataType, Field, Float64Type};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{create_udaf, Accumulator, AggregateUDF, Volatility};
use datafusion::physical_expr::expressions::Literal;

/// Most values a TOPK may keep.
const MAX_K: i64 = 10_000;

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float64, true)))
}

/// `topk` and `topkdistinct`.
pub(crate) fn udafs() -> Vec<AggregateUDF> {
    let make = |name: &'static str, distinct: bool| {
        create_udaf(
            name,
            vec![DataType::Float64, DataType::Int64],
            Arc::new(list_type()),
            Volatility::Immutable,
            Arc::new(move |args: AccumulatorArgs| {
                let k = args
                    .exprs
                    .get(1)
                    .and_then(|e| e.downcast_ref::<Literal>())
                    .and_then(|l| match l.value() {
                        ScalarValue::Int64(Some(k)) => Some(k),
                        _ => None,
                    })
                    .filter(|k| (1..=MAX_K).contains(k))
                    .ok_or_else(|| {
                        DataFusionError::Plan(format!(
                            "{}: k must be an integer literal from 1 to {MAX_K}",
                            name.to_uppercase()
                        ))
                    })?;
                Ok(Box::new(TopK {
                    k: *k as usize,
                    distinct,
                    values: Vec::new(),
                }) as Box<dyn Accumulator>)
            }),
            Arc::new(vec![list_type()]),
        )
    };
    vec![make("topk", false), make("topkdistinct", true)]
}

#[derive(Debug)]
struct TopK {
    k: usize,
    distinct: bool,
    /// Largest first, at most `k`.
    values: Vec<f64>,
}

impl TopK {
    fn add(&mut self, vals: &Float64Array) {
        for v in vals.iter().flatten() {
            if v.is_nan() {
                continue;
            }
            self.values.push(v);
        }
        self.values.sort_by(|a, b| b.total_cmp(a));
        if self.distinct {
            self.values.dedup();
        }
        self.values.truncate(self.k);
    }

    fn list(&self) -> ScalarValue {
        let items: Vec<ScalarValue> = self
            .values
            .iter()
            .map(|v| ScalarValue::Float64(Some(*v)))
            .collect();
        ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Float64))
    }
}

impl Accumulator for TopK {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        if let Some(v) = values.first() {
            self.add(v.as_primitive::<Float64Type>());
        }
        Ok(())
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        Ok(self.list())
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.values.capacity() * 8
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        Ok(vec![self.list()])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        if let Some(lists) = states.first() {
            let lists = lists.as_list::<i32>();
            for i in 0..lists.len() {
                if lists.is_null(i) {
                    continue;
                }
                let inner = lists.value(i);
                self.add(inner.as_primitive::<Float64Type>());
            }
        }
        Ok(())
    }
}
