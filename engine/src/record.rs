//! The record frame: how one record is laid out in a store file.
//!
//! ```text
//! byte  0..4    crc           u32 LE   CRC32C over bytes 4..24+value_len
//! byte  4..8    value_len     u32 LE   length of the value that follows the header
//! byte  8..16   offset        u64 LE   the record's offset in the log
//! byte 16..24   timestamp_ms  u64 LE   milliseconds since the Unix epoch, set by the appender
//! byte 24..     value         value_len bytes
//! ```
//!
//! The CRC covers every byte after itself (one contiguous run, one CRC call), so a torn header, a torn value, a
//! zero-filled tail and a flipped bit anywhere all fail to decode. Decoding never panics
//! and never allocates more than the bytes it was given: a frame is only trusted once its
//! CRC matches.

use bytes::Bytes;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 24;
const CRC_AT: usize = 0;
const LEN_AT: usize = 4;
const OFFSET_AT: usize = 8;
const TIMESTAMP_AT: usize = 16;

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position of the record in the log, assigned by the appender.
    pub offset: u64,
    /// When the appender wrote the record, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The bytes the producer appended.
    pub value: Bytes,
}

/// The header fields of a frame that decoded cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Offset stored in the frame.
    pub offset: u64,
    /// Timestamp stored in the frame.
    pub timestamp_ms: u64,
    /// Length of the value.
    pub value_len: u32,
}

impl FrameHeader {
    /// Bytes the whole frame occupies, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.value_len as usize
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a header, or than the header's value length: a torn write.
    #[error("truncated frame: {available} bytes, {needed} needed")]
    Truncated {
        /// Bytes present.
        available: usize,
        /// Bytes the frame needs.
        needed: usize,
    },
    /// The value length is larger than any record the log accepts.
    #[error("value length {value_len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length in the header.
        value_len: u32,
        /// The limit in force.
        max: u32,
    },
    /// The checksum does not match the contents.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC stored in the frame.
        stored: u32,
        /// CRC of the bytes present.
        computed: u32,
    },
}

/// Length of the frame that holds a value of `value_len` bytes.
pub fn frame_len(value_len: usize) -> usize {
    HEADER_LEN + value_len
}

/// Appends the frame for one record to `out`.
///
/// # Panics
/// If `value` is 4 GiB or longer: callers enforce the configured record limit first.
pub fn encode(out: &mut Vec<u8>, offset: u64, timestamp_ms: u64, value: &[u8]) {
    let value_len = u32::try_from(value.len()).expect("record limit is checked before encoding");
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(value);
    let crc = checksum(&out[start..]);
    out[start + CRC_AT..start + LEN_AT].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C of a whole frame: every byte after the CRC field.
fn checksum(frame: &[u8]) -> u32 {
    crc32c::crc32c(&frame[LEN_AT..])
}

/// The value length a frame header claims, before anything is verified: how many bytes
/// to read for the whole frame. `header` holds at least [`HEADER_LEN`] bytes.
pub fn claimed_value_len(header: &[u8]) -> u32 {
    u32_at(header, LEN_AT)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

/// Decodes and verifies the frame at the start of `buf`; bytes after it are ignored.
///
/// `value_len_max` bounds the length field before anything is trusted, so a corrupt length
/// cannot make a caller read or allocate gigabytes.
pub fn decode_header(buf: &[u8], value_len_max: u32) -> Result<FrameHeader, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Truncated { available: buf.len(), needed: HEADER_LEN });
    }
    let value_len = u32_at(buf, LEN_AT);
    if value_len > value_len_max {
        return Err(FrameError::TooLarge { value_len, max: value_len_max });
    }
    let header =
        FrameHeader { offset: u64_at(buf, OFFSET_AT), timestamp_ms: u64_at(buf, TIMESTAMP_AT), value_len };
    let needed = header.frame_len();
    if buf.len() < needed {
        return Err(FrameError::Truncated { available: buf.len(), needed });
    }
    let stored = u32_at(buf, CRC_AT);
    let computed = checksum(&buf[..needed]);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(header)
}

/// Decodes the frame at the start of `buf` into a record whose value shares `buf`'s memory.
/// Returns the record and the frame's length.
pub fn decode(buf: &Bytes, value_len_max: u32) -> Result<(Record, usize), FrameError> {
    let header = decode_header(buf, value_len_max)?;
    let record = Record {
        offset: header.offset,
        timestamp_ms: header.timestamp_ms,
        value: buf.slice(HEADER_LEN..header.frame_len()),
    };
    Ok((record, header.frame_len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, offset, 1_700_000_000_000, value);
        out
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let bytes = Bytes::from(frame(42, b"hello world"));
        let (record, len) = decode(&bytes, 1024).unwrap();
        assert_eq!(len, HEADER_LEN + 11);
        assert_eq!(record.offset, 42);
        assert_eq!(record.timestamp_ms, 1_700_000_000_000);
        assert_eq!(&record.value[..], b"hello world");
    }

    #[test]
    fn empty_value_is_a_valid_record() {
        let bytes = Bytes::from(frame(0, b""));
        let (record, len) = decode(&bytes, 0).unwrap();
        assert_eq!(len, HEADER_LEN);
        assert!(record.value.is_empty());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = frame(7, b"abc");
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode_header(&bad, 1 << 20).is_err(), "flip at byte {byte} bit {bit} passed");
            }
        }
    }

    #[test]
    fn every_torn_prefix_is_truncated() {
        let good = frame(7, b"abcdef");
        for cut in 0..good.len() {
            assert!(matches!(decode_header(&good[..cut], 1 << 20), Err(FrameError::Truncated { .. })));
        }
    }

    #[test]
    fn zero_filled_bytes_are_not_a_frame() {
        assert!(matches!(decode_header(&[0; 64], 1 << 20), Err(FrameError::Checksum { .. })));
    }

    #[test]
    fn huge_length_is_rejected_before_reading_the_value() {
        let mut bad = frame(0, b"x");
        bad[LEN_AT..LEN_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_header(&bad, 1024), Err(FrameError::TooLarge { value_len: u32::MAX, max: 1024 }));
    }
}
