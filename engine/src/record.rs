//! The entry frame: how one entry is laid out in a store file (format version 2).
//!
//! ```text
//! byte  0..4    crc           u32 LE   CRC32C over bytes 4..32+value_len
//! byte  4..8    len_kind      u32 LE   bits 0..28 value length, bits 28..32 kind (0 data, 1 blank, 2 membership)
//! byte  8..16   index         u64 LE   the entry's index in the log
//! byte 16..24   term          u64 LE   the Raft term that wrote it (0 on a single node)
//! byte 24..32   timestamp_ms  u64 LE   milliseconds since the Unix epoch
//! byte 32..     value         value_len bytes
//! ```
//!
//! Version 1 frames, still read from version-1 segments, have a 24-byte header (crc,
//! value_len, offset, timestamp_ms) and hold data entries of term 0.
//!
//! The CRC covers every byte after itself (one contiguous run, one CRC call), so a torn
//! header, a torn value, a zero-filled tail and a flipped bit anywhere all fail to decode.
//! Decoding never panics and never allocates more than the bytes it was given: a frame is
//! only trusted once its CRC matches.

use std::ops::Range;

use bytes::Bytes;

use crate::entry::{Entry, EntryId, EntryKind};

/// Bytes in a frame header (version 2).
pub const HEADER_LEN: usize = 32;
/// The largest value a frame can carry: its length shares a u32 with the kind.
pub const VALUE_LEN_LIMIT: u32 = (1 << 28) - 1;
const KIND_SHIFT: u32 = 28;
const CRC_AT: usize = 0;
const LEN_AT: usize = 4;

/// The frame layout of a segment, from its file header's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Version 1: offset and timestamp, data entries only.
    V1,
    /// Version 2: index, term, kind and timestamp.
    V2,
}

impl Format {
    /// Bytes in a frame header of this format.
    pub fn header_len(self) -> usize {
        match self {
            Format::V1 => 24,
            Format::V2 => HEADER_LEN,
        }
    }
}

/// One record of the log, as producers and consumers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position of the record among the log's records (data entries).
    pub offset: u64,
    /// When the record was appended, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The bytes the producer appended.
    pub value: Bytes,
}

/// A record lent by [`Log::read_each`](crate::Log::read_each): its value borrows the
/// read's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Position of the record among the log's records (data entries).
    pub offset: u64,
    /// When the record was appended, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The bytes the producer appended.
    pub value: &'a [u8],
}

/// The header fields of a frame that decoded cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Term and index stored in the frame.
    pub id: EntryId,
    /// The entry's kind.
    pub kind: EntryKind,
    /// Timestamp stored in the frame.
    pub timestamp_ms: u64,
    /// Length of the value.
    pub value_len: u32,
    /// Bytes of the header (by format).
    pub header_len: u8,
}

impl FrameHeader {
    /// Bytes the whole frame occupies, header included.
    pub fn frame_len(&self) -> usize {
        usize::from(self.header_len) + self.value_len as usize
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
    /// The checksum matches but the kind is none this build knows.
    #[error("unknown entry kind {kind}")]
    UnknownKind {
        /// The kind field.
        kind: u32,
    },
}

/// Length of the (version 2) frame that holds a value of `value_len` bytes.
pub fn frame_len(value_len: usize) -> usize {
    HEADER_LEN + value_len
}

/// Appends the (version 2) frame of one entry to `out`.
///
/// # Panics
/// If `value` is longer than [`VALUE_LEN_LIMIT`]: callers enforce the record limit first.
pub fn encode(out: &mut Vec<u8>, id: EntryId, kind: EntryKind, timestamp_ms: u64, value: &[u8]) {
    let value_len = u32::try_from(value.len()).ok().filter(|&len| len <= VALUE_LEN_LIMIT);
    let value_len = value_len.expect("record limit is checked before encoding");
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(value_len | kind.code() << KIND_SHIFT).to_le_bytes());
    out.extend_from_slice(&id.index.to_le_bytes());
    out.extend_from_slice(&id.term.to_le_bytes());
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
/// to read for the whole frame. `header` holds at least `format.header_len()` bytes.
pub fn claimed_value_len(header: &[u8], format: Format) -> u32 {
    match format {
        Format::V1 => u32_at(header, LEN_AT),
        Format::V2 => u32_at(header, LEN_AT) & VALUE_LEN_LIMIT,
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

/// Decodes and verifies the (version 2) frame at the start of `buf`; bytes after it are
/// ignored. See [`decode_header_as`].
pub fn decode_header(buf: &[u8], value_len_max: u32) -> Result<FrameHeader, FrameError> {
    decode_header_as(buf, value_len_max, Format::V2)
}

/// Decodes and verifies the frame of `format` at the start of `buf`.
///
/// `value_len_max` bounds the length field before anything is trusted, so a corrupt length
/// cannot make a caller read or allocate gigabytes.
pub fn decode_header_as(buf: &[u8], value_len_max: u32, format: Format) -> Result<FrameHeader, FrameError> {
    let header_len = format.header_len();
    if buf.len() < header_len {
        return Err(FrameError::Truncated { available: buf.len(), needed: header_len });
    }
    let value_len = claimed_value_len(buf, format);
    if value_len > value_len_max {
        return Err(FrameError::TooLarge { value_len, max: value_len_max });
    }
    let needed = header_len + value_len as usize;
    if buf.len() < needed {
        return Err(FrameError::Truncated { available: buf.len(), needed });
    }
    let stored = u32_at(buf, CRC_AT);
    let computed = checksum(&buf[..needed]);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    let header_len = header_len as u8;
    match format {
        Format::V1 => Ok(FrameHeader {
            id: EntryId { term: 0, index: u64_at(buf, 8) },
            kind: EntryKind::Data,
            timestamp_ms: u64_at(buf, 16),
            value_len,
            header_len,
        }),
        Format::V2 => {
            let code = u32_at(buf, LEN_AT) >> KIND_SHIFT;
            let kind = EntryKind::from_code(code).ok_or(FrameError::UnknownKind { kind: code })?;
            Ok(FrameHeader {
                id: EntryId { index: u64_at(buf, 8), term: u64_at(buf, 16) },
                kind,
                timestamp_ms: u64_at(buf, 24),
                value_len,
                header_len,
            })
        }
    }
}

/// Decodes the (version 2) frame at the start of `buf` into an entry whose payload shares
/// `buf`'s memory. Returns the entry and the frame's length.
pub fn decode(buf: &Bytes, value_len_max: u32) -> Result<(Entry, usize), FrameError> {
    decode_as(buf, 0, value_len_max, Format::V2)
}

/// [`decode`] for a frame of `format` that starts at byte `at` of `buf`: the payload is a
/// slice of `buf`, not a copy.
pub fn decode_as(
    buf: &Bytes,
    at: usize,
    value_len_max: u32,
    format: Format,
) -> Result<(Entry, usize), FrameError> {
    let frame = decode_in_place(buf, at, value_len_max, format)?;
    Ok((frame.to_entry(), frame.header.frame_len()))
}

/// Decodes and verifies the frame of `format` at byte `at` of `buf` without taking its
/// payload out: reads of many frames lend them one by one.
pub(crate) fn decode_in_place(
    buf: &Bytes,
    at: usize,
    value_len_max: u32,
    format: Format,
) -> Result<FrameRef<'_>, FrameError> {
    let header = decode_header_as(&buf[at..], value_len_max, format)?;
    let payload = at + usize::from(header.header_len)..at + header.frame_len();
    Ok(FrameRef { header, buf, payload })
}

/// A frame decoded in place: its header, and where its payload lies in the buffer it was
/// read into (borrowed: no copy and no reference count until an owned entry is wanted).
pub(crate) struct FrameRef<'a> {
    pub(crate) header: FrameHeader,
    buf: &'a Bytes,
    payload: Range<usize>,
}

impl<'a> FrameRef<'a> {
    pub(crate) fn payload(&self) -> &'a [u8] {
        &self.buf[self.payload.clone()]
    }

    /// The payload as an owned slice of the buffer.
    pub(crate) fn payload_bytes(&self) -> Bytes {
        self.buf.slice(self.payload.clone())
    }

    pub(crate) fn to_entry(&self) -> Entry {
        let FrameHeader { id, kind, timestamp_ms, .. } = self.header;
        Entry { id, kind, timestamp_ms, payload: self.payload_bytes() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(index: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, EntryId { term: 3, index }, EntryKind::Data, 1_700_000_000_000, value);
        out
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let bytes = Bytes::from(frame(42, b"hello world"));
        let (entry, len) = decode(&bytes, 1024).unwrap();
        assert_eq!(len, HEADER_LEN + 11);
        assert_eq!(entry.id, EntryId { term: 3, index: 42 });
        assert_eq!(entry.kind, EntryKind::Data);
        assert_eq!(entry.timestamp_ms, 1_700_000_000_000);
        assert_eq!(&entry.payload[..], b"hello world");
    }

    #[test]
    fn empty_value_is_a_valid_record() {
        let bytes = Bytes::from(frame(0, b""));
        let (entry, len) = decode(&bytes, 0).unwrap();
        assert_eq!(len, HEADER_LEN);
        assert!(entry.payload.is_empty());
    }

    #[test]
    fn every_kind_round_trips_and_an_unknown_kind_is_refused() {
        for kind in [EntryKind::Data, EntryKind::Blank, EntryKind::Membership, EntryKind::Control] {
            let mut out = Vec::new();
            encode(&mut out, EntryId { term: 9, index: 1 }, kind, 5, b"m");
            assert_eq!(decode_header(&out, 16).unwrap().kind, kind);
        }
        let mut out = frame(0, b"x");
        out[7] |= 0x70; // kind 7, CRC recomputed so only the kind is wrong
        let crc = checksum(&out);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_header(&out, 16), Err(FrameError::UnknownKind { kind: 7 }));
    }

    #[test]
    fn version_1_frames_read_as_data_of_term_0() {
        // A version-1 frame: crc, value_len, offset, timestamp_ms, value.
        let mut v1 = vec![0u8; 4];
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(&77u64.to_le_bytes());
        v1.extend_from_slice(&123u64.to_le_bytes());
        v1.extend_from_slice(b"hi");
        let crc = checksum(&v1);
        v1[..4].copy_from_slice(&crc.to_le_bytes());
        let (entry, len) = decode_as(&Bytes::from(v1), 0, 16, Format::V1).unwrap();
        assert_eq!(len, 26);
        assert_eq!(
            (entry.id, entry.kind, entry.timestamp_ms),
            (EntryId { term: 0, index: 77 }, EntryKind::Data, 123)
        );
        assert_eq!(&entry.payload[..], b"hi");
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
        bad[LEN_AT..LEN_AT + 4].copy_from_slice(&VALUE_LEN_LIMIT.to_le_bytes());
        assert_eq!(
            decode_header(&bad, 1024),
            Err(FrameError::TooLarge { value_len: VALUE_LEN_LIMIT, max: 1024 })
        );
    }
}
