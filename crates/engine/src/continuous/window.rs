//! Time windows over a source: their definition and the columns a windowed source adds.

/// Name of the window start column a windowed source adds.
pub(crate) const WINDOW_START: &str = "window_start";
/// Name of the window end column a windowed source adds.
pub(crate) const WINDOW_END: &str = "window_end";

/// A time window over a source (`FROM TUMBLE(s, size)` / `HOP(s, size, hop)`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowSpec {
    /// Window length, ms.
    pub size_ms: i64,
    /// Distance between window starts, ms (`size_ms` for a tumbling window).
    pub hop_ms: i64,
    /// The event-time column (a TIMESTAMP or a number of epoch milliseconds); `None` for the
    /// records' publish time.
    pub time_column: Option<String>,
    /// `SESSION(s, gap)`: the gap, ms (`size_ms` and `hop_ms` are unused then).
    pub session_gap_ms: Option<i64>,
}
