//! Writes the seed corpora under `fuzz/corpus/<target>/`: valid frames and images, so the
//! fuzzer starts from deep states. Run from `fuzz/`: `cargo run --example seeds`.

use std::{fs, path::Path};

use prost::Message;
use ringlog_engine::record;
use ringlog_fuzz::{bases, file_path, image};
use ringlog_service::proto::{ConsumeRequest, ProduceRequest, Record};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    // record_decode: frames of several sizes, one with trailing bytes, one torn.
    for (i, len) in [0usize, 1, 11, 100].into_iter().enumerate() {
        let mut frame = Vec::new();
        record::encode(&mut frame, i as u64 * 1000, 1_700_000_000_000 + i as u64, &vec![b'v'; len]);
        write("record_decode", &format!("frame-{len}"), &frame);
        if i == 2 {
            let mut tail = frame.clone();
            tail.extend_from_slice(b"next frame");
            write("record_decode", "frame-then-more", &tail);
            write("record_decode", "frame-torn", &frame[..frame.len() - 3]);
        }
    }

    let images: [&[u8]; 4] =
        [&[], &[3], &[10, 0, 47, 20, 5, 9, 30], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]];
    for (i, lens) in images.iter().enumerate() {
        let (disk, _) = image(lens);
        let bases = bases(&disk);
        // index_open: the real index of the first (sealed, if any) and of the active
        // segment, after a valid header prefix (flags bit 0).
        for (which, base) in [(0, bases[0]), (bases.len() - 1, *bases.last().unwrap())] {
            let index = disk.read_file(&file_path(base, "index")).unwrap();
            let mut seed = vec![1 | (which as u8) << 4, lens.len() as u8];
            seed.extend_from_slice(lens);
            seed.extend_from_slice(&index[32..]);
            write("index_open", &format!("image-{i}-segment-{which}"), &seed);
        }
        // segment_recovery, mutate mode: the image with one flip, then with no edit.
        let mut seed = vec![0, lens.len() as u8];
        seed.extend_from_slice(lens);
        write("segment_recovery", &format!("image-{i}"), &seed);
        seed.extend_from_slice(&[0, 0, 40, 0, 0x10]);
        write("segment_recovery", &format!("image-{i}-flip"), &seed);
        // segment_recovery, raw mode: the first two segments' real bytes, headers included.
        if bases.len() >= 2 {
            let mut seed = vec![1 | 2 | 8, 0, 0, 0, 0, 0, 0, 0, 0, bases[1] as u8];
            for &base in &bases[..2] {
                for ext in ["store", "index"] {
                    let bytes = disk.read_file(&file_path(base, ext)).unwrap();
                    seed.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                    seed.extend_from_slice(&bytes);
                }
            }
            write("segment_recovery", &format!("raw-image-{i}"), &seed);
        }
    }

    // log_model: byte strings decode to op sequences whatever they hold. The last one, with
    // `Always`: appends, a crash right after a roll, a crash right after a failed sync and
    // one right after dropping segments, each a seeded (any-mix) image, then a reopen.
    let crash_points = [
        1, 0, // Always, writes not deferred
        0, 2, 60, 60, 60, // append 3 records of 60 bytes
        14, 2, 3, 7, 7, 7, 7, 7, 7, 7, 7, // crash after a roll, any mix, seed
        0, 1, 40, 40, // append 2 records
        14, 4, 3, 9, 9, 9, 9, 9, 9, 9, 9, // crash after a failed sync
        0, 0, 30, // append 1 record
        14, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, // crash after dropping segments
        11, // reopen
    ];
    for (i, seed) in [
        &b"\x00appends-and-reads-and-crashes"[..],
        &[1; 64],
        &[2, 0, 14, 1, 0, 5, 11, 3, 16, 0, 1][..],
        &crash_points[..],
    ]
    .iter()
    .enumerate()
    {
        write("log_model", &format!("ops-{i}"), seed);
    }

    // request_handling: a record-limit byte, then (rpc, u16 length, message bytes) triples;
    // rpc 0 Produce, 1 Consume, 2 ConsumeStream, 3 ProduceStream.
    let record = |value: &[u8]| Record { value: value.to_vec().into(), ..Record::default() };
    let produce = |values: &[&[u8]]| {
        let (first, rest) = values.split_first().unwrap();
        ProduceRequest { record: Some(record(first)), records: rest.iter().map(|v| record(v)).collect() }
            .encode_to_vec()
    };
    let consume = |offset: u64, max_records: u64| ConsumeRequest { offset, max_records }.encode_to_vec();
    // A ProduceStream's messages, each after a u8 length.
    let stream = |messages: &[Vec<u8>]| {
        messages
            .iter()
            .flat_map(|m| std::iter::once(m.len() as u8).chain(m.iter().copied()))
            .collect::<Vec<u8>>()
    };
    let session = |limit: u8, messages: &[(u8, Vec<u8>)]| {
        let mut seed = vec![limit];
        for (rpc, bytes) in messages {
            seed.push(*rpc);
            seed.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            seed.extend_from_slice(bytes);
        }
        seed
    };
    let sessions = [
        ("produce-consume", session(2, &[(0, produce(&[b"hello"])), (1, consume(0, 0))])),
        (
            "batch-and-follow",
            session(
                2,
                &[(0, produce(&[b"a", b"bb", b"", b"dddd"])), (1, consume(1, 10)), (2, consume(0, 2))],
            ),
        ),
        (
            "stream",
            session(1, &[(3, stream(&[produce(&[b"x"]), produce(&[b"y", b"z"])])), (2, consume(0, 0))]),
        ),
        (
            "edges",
            session(
                0,
                &[(0, produce(&[b"too large"])), (1, consume(u64::MAX, u64::MAX)), (2, consume(9, 0))],
            ),
        ),
        ("malformed", session(2, &[(0, vec![0x0a, 0xff]), (3, vec![0xff; 7]), (1, vec![0x08])])),
    ];
    for (name, seed) in sessions {
        write("request_handling", name, &seed);
    }
}
