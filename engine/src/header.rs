//! The 32-byte header that starts every store and index file.
//!
//! ```text
//! byte  0..8    magic         "RLOGSTOR" (store) or "RLOGINDX" (index)
//! byte  8..12   version       u32 LE: 2 (version-1 files are still read)
//! byte 12..16   reserved      zero
//! byte 16..24   base_index    u64 LE, the index of the segment's first entry
//! byte 24..28   reserved      zero
//! byte 28..32   crc           u32 LE, CRC32C of bytes 0..28
//! ```
//!
//! The base index is also the file's name; the two must agree, so a file copied or
//! renamed into the wrong place is caught on open.

/// Bytes in a file header.
pub(crate) const LEN: usize = 32;
const VERSION: u32 = 2;

use crate::record::Format;

/// Which file of a segment a header belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Store,
    Index,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Store => b"RLOGSTOR",
            FileKind::Index => b"RLOGINDX",
        }
    }
}

pub(crate) fn encode(kind: FileKind, base_index: u64) -> [u8; LEN] {
    let mut header = [0u8; LEN];
    header[0..8].copy_from_slice(kind.magic());
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&base_index.to_le_bytes());
    let crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a header and returns the frame format of its file; the error says what is wrong.
pub(crate) fn validate(bytes: &[u8], kind: FileKind, base_index: u64) -> Result<Format, String> {
    let Some(header) = bytes.get(..LEN) else {
        return Err(format!("file header is torn: {} of {LEN} bytes", bytes.len()));
    };
    if &header[0..8] != kind.magic() {
        return Err(format!("bad magic {:?}, expected {:?}", &header[0..8], kind.magic()));
    }
    let crc = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&header[..28]) {
        return Err("file header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let format = match version {
        1 => Format::V1,
        VERSION => Format::V2,
        _ => return Err(format!("unsupported format version {version}, this build reads 1 and {VERSION}")),
    };
    let base = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if base != base_index {
        return Err(format!("header says base index {base} but the file name says {base_index}"));
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_the_wrong_kind_or_base() {
        let header = encode(FileKind::Store, 77);
        assert_eq!(validate(&header, FileKind::Store, 77), Ok(Format::V2));
        assert!(validate(&header, FileKind::Index, 77).unwrap_err().contains("magic"));
        assert!(validate(&header, FileKind::Store, 78).unwrap_err().contains("base index"));
        assert!(validate(&header[..10], FileKind::Store, 77).unwrap_err().contains("torn"));
        let mut flipped = header;
        flipped[20] ^= 1;
        assert!(validate(&flipped, FileKind::Store, 77).unwrap_err().contains("checksum"));
    }
}
