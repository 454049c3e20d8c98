//! A protobuf wire-format reader that borrows: fields are visited in the order they were
//! written, and length-delimited values are slices of the input (no allocation). Hot paths use
//! it where decoding into prost messages would allocate per record: walking a stored batch's
//! records ([`crate::records::visit_records`]) and a JSON record's `Struct` fields (the SQL
//! engine's decoder).
//!
//! Every read is bounds-checked; malformed input is a [`WireError`], never a panic.

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The input ends inside a field.
    Truncated,
    /// A varint longer than 10 bytes, a length past the end, a wire type that does not exist,
    /// or a field with the wrong wire type for its declared type.
    Malformed,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => f.write_str("protobuf message is truncated"),
            Self::Malformed => f.write_str("protobuf message is malformed"),
        }
    }
}

impl std::error::Error for WireError {}

/// The value of one field, as the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WireValue<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (`double`, `fixed64`, `sfixed64`).
    Fixed64(u64),
    /// Wire type 2 (strings, bytes, embedded messages, packed repeated fields).
    Bytes(&'a [u8]),
    /// Wire type 5 (`float`, `fixed32`, `sfixed32`).
    Fixed32(u32),
}

/// Reads the fields of one message in order.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over a serialized message.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next field: its number and value, or `None` at the end of the message.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(u32, WireValue<'a>)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| WireError::Malformed)?;
        if field == 0 {
            return Err(WireError::Malformed);
        }
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(self.take_array::<8>()?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Malformed)?;
                if len > self.buf.len() {
                    return Err(WireError::Truncated);
                }
                let (v, rest) = self.buf.split_at(len);
                self.buf = rest;
                WireValue::Bytes(v)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(self.take_array::<4>()?)),
            // Groups (3, 4) are long deprecated and never used by the messages read here.
            _ => return Err(WireError::Malformed),
        };
        Ok(Some((field, value)))
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        if self.buf.len() < N {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(N);
        self.buf = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err(WireError::Truncated);
            };
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError::Malformed)
    }
}

impl WireValue<'_> {
    /// The value as a varint, or `Malformed` for another wire type.
    pub fn varint(self) -> Result<u64, WireError> {
        match self {
            WireValue::Varint(v) => Ok(v),
            _ => Err(WireError::Malformed),
        }
    }
}

impl<'a> WireValue<'a> {
    /// The value as length-delimited bytes, or `Malformed` for another wire type.
    pub fn bytes(self) -> Result<&'a [u8], WireError> {
        match self {
            WireValue::Bytes(b) => Ok(b),
            _ => Err(WireError::Malformed),
        }
    }

    /// The value as a UTF-8 string, or `Malformed` (wrong wire type or invalid UTF-8).
    pub fn str(self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn reads_what_prost_writes() {
        let v = prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(2.5)),
        };
        let s = prost_types::Struct {
            fields: [("a".to_string(), v)].into_iter().collect(),
        };
        let bytes = s.encode_to_vec();
        let mut r = Reader::new(&bytes);
        let (field, entry) = r.next().unwrap().unwrap();
        assert_eq!(field, 1);
        let mut e = Reader::new(entry.bytes().unwrap());
        let (f1, key) = e.next().unwrap().unwrap();
        assert_eq!((f1, key.str().unwrap()), (1, "a"));
        let (f2, value) = e.next().unwrap().unwrap();
        assert_eq!(f2, 2);
        let mut v = Reader::new(value.bytes().unwrap());
        assert_eq!(
            v.next().unwrap(),
            Some((2, WireValue::Fixed64(2.5f64.to_bits())))
        );
        assert_eq!(v.next().unwrap(), None);
        assert_eq!(e.next().unwrap(), None);
        assert_eq!(r.next().unwrap(), None);
    }

    #[test]
    fn malformed_and_truncated_input_are_errors() {
        // A length past the end.
        assert_eq!(
            Reader::new(&[0x0a, 0x05, 1]).next(),
            Err(WireError::Truncated)
        );
        // A varint that never ends.
        assert_eq!(Reader::new(&[0x08, 0xff]).next(), Err(WireError::Truncated));
        assert_eq!(
            Reader::new(
                &[0x08; 1]
                    .iter()
                    .chain(&[0xff; 11])
                    .copied()
                    .collect::<Vec<_>>()
            )
            .next(),
            Err(WireError::Malformed)
        );
        // Wire type 7 and field number 0.
        assert_eq!(Reader::new(&[0x0f]).next(), Err(WireError::Malformed));
        assert_eq!(Reader::new(&[0x00, 0x01]).next(), Err(WireError::Malformed));
        // A fixed64 cut short.
        assert_eq!(Reader::new(&[0x09, 1, 2]).next(), Err(WireError::Truncated));
        // Invalid UTF-8 in a string.
        let mut r = Reader::new(&[0x0a, 0x01, 0xff]);
        let (_, v) = r.next().unwrap().unwrap();
        assert_eq!(v.str(), Err(WireError::Malformed));
    }
}
