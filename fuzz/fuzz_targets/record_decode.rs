//! Entry frame decoding: arbitrary bytes through `record::decode_as` and
//! `decode_header_as`, in both formats and under several value-length limits. Decoding
//! never panics; the two decoders agree; a frame that decodes lies within the bytes and the
//! limit, and re-encoding a version-2 frame's fields gives back exactly its bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringlog_engine::record::{self, Format, FrameError};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    for format in [Format::V1, Format::V2] {
        let header_len = format.header_len();
        let limits = [0, 1, 16, data.len().saturating_sub(header_len) as u32, 1 << 20, u32::MAX];
        for max in limits {
            let header = record::decode_header_as(data, max, format);
            match (record::decode_as(&bytes, 0, max, format), header) {
                (Ok((entry, len)), Ok(header)) => {
                    assert_eq!(len, header.frame_len());
                    assert!(len <= data.len() && header.value_len <= max);
                    assert_eq!(
                        (entry.id, entry.kind, entry.timestamp_ms),
                        (header.id, header.kind, header.timestamp_ms)
                    );
                    if format == Format::V2 {
                        let mut encoded = Vec::new();
                        record::encode(
                            &mut encoded,
                            entry.id,
                            entry.kind,
                            entry.timestamp_ms,
                            &entry.payload,
                        );
                        assert_eq!(encoded, &data[..len], "re-encoding changed the frame");
                    }
                }
                (Err(error), Err(header_error)) => {
                    assert_eq!(error, header_error);
                    match error {
                        FrameError::Truncated { available, needed } => {
                            assert!(available < needed && available == data.len())
                        }
                        FrameError::TooLarge { value_len, max: limit } => {
                            assert!(value_len > limit && limit == max)
                        }
                        FrameError::Checksum { stored, computed } => assert_ne!(stored, computed),
                        FrameError::UnknownKind { kind } => assert!(kind > 2 && format == Format::V2),
                    }
                }
                (decoded, header) => panic!("decode and decode_header disagree: {decoded:?} vs {header:?}"),
            }
        }
    }
});
