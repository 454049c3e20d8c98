//! The batch frame: how one appended batch is laid out in a segment file, and how it is
//! checked when it is read back. See `docs/storage-format.md` for the byte layout.
//!
//! ```text
//! 0   u32 body_len      bytes after the 8-byte prefix (24 + payload length)
//! 4   u32 crc32c        over body_len's 4 bytes, then the body
//! 8   u64 seq           the batch's sequence number (its LSN) in the shard
//! 16  i64 timestamp_ms  publish time set by the server, non-decreasing per shard
//! 24  u32 record_count  records in the batch (opaque to the store)
//! 28  u16 flags         opaque to the store (the server keeps the compression type here)
//! 30  u16 reserved      zero
//! 32  ..  payload
//! ```
//! All integers are little-endian.

use bytes::Bytes;

/// Length of the fixed part of a frame before the payload.
pub const FRAME_HEADER_LEN: usize = 32;
/// Bytes of the body that precede the payload.
const BODY_FIXED_LEN: usize = FRAME_HEADER_LEN - 8;
/// Sequence numbers at or above this are implausible (a shard appending a million batches a
/// second would take 146,000 years to reach it): recovery and the `ACKED` marker refuse them,
/// so arithmetic on sequence numbers never overflows.
pub const MAX_SEQ: u64 = 1 << 62;
/// The largest sequence number a batch may have, `MAX_SEQ - 2`: recovery takes a frame above
/// it as the end of the valid log, the `ACKED` marker refuses a last acknowledged batch above
/// it, and the committer refuses to append past it.
///
/// Why not `MAX_SEQ - 1`: the number after a shard's last batch is a sequence number the store
/// writes down too (the base of the segment that follows, the first batch of an empty active
/// segment, a trim point), and a base must stay below `MAX_SEQ`. A batch of `MAX_SEQ - 1`
/// would be recovered and make recovery start a segment at `MAX_SEQ`, which the next start
/// refuses (fuzz finding K7). The bound on batches is the one that moves, not the one on
/// bases: a segment based at `MAX_SEQ` could hold no batch at all (its first would already be
/// refused), so every append to it would be cut off at the next start as a torn tail, below
/// an acknowledged end that the marker refuses. With this bound every number the store writes
/// in a file (batch, base, next sequence number, trim point, acknowledged end) stays below
/// `MAX_SEQ`, and `last + 1` is always a base the next start accepts.
pub const MAX_BATCH_SEQ: u64 = MAX_SEQ - 2;

/// The largest frame body the store accepts (guards recovery against absurd lengths).
pub const MAX_BODY_LEN: usize = 256 * 1024 * 1024;

/// The metadata of one stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Sequence number of the batch within its shard.
    pub seq: u64,
    /// Publish time (milliseconds since the Unix epoch).
    pub timestamp_ms: i64,
    /// Number of records the batch holds.
    pub record_count: u32,
    /// Caller-defined flags.
    pub flags: u16,
}

/// Appends the encoded frame for `header` + `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, header: &FrameHeader, payload: &[u8]) {
    let body_len = (BODY_FIXED_LEN + payload.len()) as u32;
    let start = out.len();
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc, filled below
    out.extend_from_slice(&header.seq.to_le_bytes());
    out.extend_from_slice(&header.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&header.record_count.to_le_bytes());
    out.extend_from_slice(&header.flags.to_le_bytes());
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(payload);
    let crc = checksum(&out[start..start + 4], &out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Total encoded length of a frame whose payload is `payload_len` bytes.
pub fn encoded_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

fn checksum(len_bytes: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), body)
}

/// Why bytes at some offset are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the frame needs: `needed` in all, counted from the frame start.
    Incomplete {
        /// Bytes the complete frame occupies.
        needed: usize,
    },
    /// The bytes cannot be a frame (bad length, checksum mismatch, non-zero reserved bits).
    Invalid(String),
}

/// Reads the body length of the frame starting at `buf[0]`, if 8 bytes are there, and checks it
/// is plausible. Returns the total frame length.
pub fn frame_len(buf: &[u8]) -> Result<usize, FrameError> {
    if buf.len() < 8 {
        return Err(FrameError::Incomplete { needed: 8 });
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(BODY_FIXED_LEN..=MAX_BODY_LEN).contains(&body_len) {
        return Err(FrameError::Invalid(format!(
            "implausible frame length {body_len}"
        )));
    }
    Ok(8 + body_len)
}

/// Decodes and verifies the frame at the start of `buf`. On success returns its header, the
/// payload (a zero-copy slice of `buf`) and the frame's total length.
pub fn decode(buf: &Bytes) -> Result<(FrameHeader, Bytes, usize), FrameError> {
    let total = frame_len(buf)?;
    if buf.len() < total {
        return Err(FrameError::Incomplete { needed: total });
    }
    let (header, _) = verify(&buf[..total])?;
    Ok((header, buf.slice(FRAME_HEADER_LEN..total), total))
}

/// Verifies a complete frame held in `frame` (exactly one frame) and returns its header and
/// payload length.
pub fn verify(frame: &[u8]) -> Result<(FrameHeader, usize), FrameError> {
    let total = frame_len(frame)?;
    if frame.len() != total {
        return Err(FrameError::Incomplete { needed: total });
    }
    let stored = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let actual = checksum(&frame[0..4], &frame[8..]);
    if stored != actual {
        return Err(FrameError::Invalid(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        )));
    }
    let u64_at = |o: usize| u64::from_le_bytes(frame[o..o + 8].try_into().unwrap_or([0; 8]));
    let header = FrameHeader {
        seq: u64_at(8),
        timestamp_ms: u64_at(16) as i64,
        record_count: u32::from_le_bytes([frame[24], frame[25], frame[26], frame[27]]),
        flags: u16::from_le_bytes([frame[28], frame[29]]),
    };
    if frame[30] != 0 || frame[31] != 0 {
        return Err(FrameError::Invalid("reserved bytes are not zero".into()));
    }
    Ok((header, total - FRAME_HEADER_LEN))
}

/// Peeks at the sequence number of a frame candidate without verifying it (used to resync after
/// damage: cheap filter before the checksum).
pub fn peek_seq(buf: &[u8]) -> Option<u64> {
    buf.get(8..16)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (FrameHeader, Vec<u8>) {
        let h = FrameHeader {
            seq: 42,
            timestamp_ms: 1_700_000_000_123,
            record_count: 3,
            flags: 1,
        };
        let mut out = Vec::new();
        encode(&mut out, &h, b"hello world");
        (h, out)
    }

    #[test]
    fn round_trip() {
        let (h, out) = sample();
        assert_eq!(out.len(), encoded_len(11));
        let (h2, payload, len) = decode(&Bytes::from(out.clone())).expect("valid frame");
        assert_eq!(h, h2);
        assert_eq!(&payload[..], b"hello world");
        assert_eq!(len, out.len());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let (_, out) = sample();
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&Bytes::from(bad)).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncated_frames_are_incomplete() {
        let (_, out) = sample();
        for cut in 0..out.len() {
            let r = decode(&Bytes::copy_from_slice(&out[..cut]));
            assert!(
                matches!(r, Err(FrameError::Incomplete { .. })),
                "cut at {cut}: {r:?}"
            );
        }
    }

    #[test]
    fn zeros_are_not_a_frame() {
        assert!(matches!(
            decode(&Bytes::from(vec![0u8; 64])),
            Err(FrameError::Invalid(_))
        ));
    }
}
