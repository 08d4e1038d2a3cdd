//! Record frame decoding: arbitrary bytes through `record::decode` and `decode_header`,
//! under several value-length limits. Decoding never panics; the two decoders agree; a
//! frame that decodes lies within the bytes and the limit, and re-encoding its offset,
//! timestamp and value gives back exactly the bytes it was decoded from.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringlog_engine::record::{self, FrameError, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let limits = [0, 1, 16, data.len().saturating_sub(HEADER_LEN) as u32, 1 << 20, u32::MAX];
    for max in limits {
        let header = record::decode_header(data, max);
        match (record::decode(&bytes, max), header) {
            (Ok((record, len)), Ok(header)) => {
                assert_eq!(len, header.frame_len());
                assert!(len <= data.len() && header.value_len <= max);
                assert_eq!((record.offset, record.timestamp_ms), (header.offset, header.timestamp_ms));
                let mut encoded = Vec::new();
                record::encode(&mut encoded, record.offset, record.timestamp_ms, &record.value);
                assert_eq!(encoded, &data[..len], "re-encoding changed the frame");
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
                }
            }
            (decoded, header) => panic!("decode and decode_header disagree: {decoded:?} vs {header:?}"),
        }
    }
});
