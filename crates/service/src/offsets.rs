//! Offsets: turning the client's `ShardOffset` / `StreamOffset` (earliest, latest, a record id,
//! a timestamp) into sequence numbers of a shard log.

use streamcell_proto::api::{
    shard_offset, stream_offset, ErrorCode, ShardOffset, SpecialOffset, StreamOffset,
    TimestampOffset,
};
use streamcell_store::ShardLog;

use crate::error::{Result, ServiceError};

/// A position in a shard, in terms the store understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The first readable batch.
    Earliest,
    /// The next batch to be appended.
    Latest,
    /// The batch with this sequence number.
    Seq(u64),
    /// The first batch published at or after this time (ms).
    Time(i64),
}

impl Position {
    /// From a `ShardOffset` of shard `shard`. A record id of another shard is an error.
    pub fn from_shard_offset(o: Option<&ShardOffset>, shard: u64) -> Result<Position> {
        let Some(off) = o.and_then(|o| o.offset.as_ref()) else {
            return Err(ServiceError::invalid(
                ErrorCode::StreamInvalidOffset,
                "offset is missing: give EARLIEST, LATEST, a record id or a timestamp",
            ));
        };
        Ok(match off {
            shard_offset::Offset::SpecialOffset(s) => special(*s)?,
            shard_offset::Offset::RecordOffset(r) => {
                if r.shard_id != shard {
                    return Err(ServiceError::invalid(
                        ErrorCode::ShardReaderConflictOffset,
                        format!(
                            "offset record id names shard {}, but the request is for shard {shard}",
                            r.shard_id
                        ),
                    ));
                }
                Position::Seq(r.batch_id)
            }
            shard_offset::Offset::TimestampOffset(TimestampOffset {
                timestamp_in_ms, ..
            }) => Position::Time(*timestamp_in_ms),
        })
    }

    /// From a `StreamOffset`.
    pub fn from_stream_offset(o: Option<&StreamOffset>) -> Result<Position> {
        let Some(off) = o.and_then(|o| o.offset.as_ref()) else {
            return Err(ServiceError::invalid(
                ErrorCode::StreamInvalidOffset,
                "offset is missing: give EARLIEST, LATEST or a timestamp",
            ));
        };
        Ok(match off {
            stream_offset::Offset::SpecialOffset(s) => special(*s)?,
            stream_offset::Offset::TimestampOffset(t) => Position::Time(t.timestamp_in_ms),
        })
    }

    /// Where reading from this position starts.
    pub fn start_seq(self, log: &dyn ShardLog, shard: u64) -> Result<u64> {
        let b = log.bounds(shard)?;
        Ok(match self {
            Position::Earliest => b.start_seq,
            Position::Latest => b.next_seq,
            Position::Seq(s) => s.max(b.start_seq),
            Position::Time(t) => log.find_time(shard, t)?,
        })
    }

    /// The last sequence number included when reading up to this position (inclusive), or
    /// `None` if nothing is included. A time includes batches published at or before it.
    pub fn until_seq(self, log: &dyn ShardLog, shard: u64) -> Result<Option<u64>> {
        let b = log.bounds(shard)?;
        let last = match self {
            Position::Earliest => b.start_seq,
            Position::Latest => b.tail_seq,
            Position::Seq(s) => s,
            Position::Time(t) => log.find_time(shard, t.saturating_add(1))?.saturating_sub(1),
        };
        Ok((last >= b.start_seq && last > 0).then_some(last))
    }

    /// The sequence number up to which (inclusive) a trim to this position removes batches,
    /// or `None` if it removes nothing. EARLIEST removes nothing; LATEST removes everything
    /// appended so far; a record id removes up to and including its batch; a time removes
    /// every batch published before it.
    pub fn trim_seq(self, log: &dyn ShardLog, shard: u64) -> Result<Option<u64>> {
        let b = log.bounds(shard)?;
        Ok(match self {
            Position::Earliest => None,
            Position::Latest => (b.tail_seq > 0).then_some(b.tail_seq),
            Position::Seq(s) => Some(s.min(b.tail_seq)).filter(|&s| s > 0),
            Position::Time(t) => log.find_time(shard, t)?.checked_sub(1).filter(|&s| s > 0),
        })
    }

    /// A short text form, stored with shard readers.
    pub fn describe(self) -> String {
        match self {
            Position::Earliest => "EARLIEST".into(),
            Position::Latest => "LATEST".into(),
            Position::Seq(s) => format!("batch {s}"),
            Position::Time(t) => format!("time {t} ms"),
        }
    }
}

fn special(v: i32) -> Result<Position> {
    match SpecialOffset::try_from(v) {
        Ok(SpecialOffset::Earliest) => Ok(Position::Earliest),
        Ok(SpecialOffset::Latest) => Ok(Position::Latest),
        Err(_) => Err(ServiceError::invalid(
            ErrorCode::StreamInvalidOffset,
            format!("unknown special offset {v}"),
        )),
    }
}
