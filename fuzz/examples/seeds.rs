//! Writes the seed corpora under `fuzz/corpus/<target>/`: valid frames and images, so the
//! fuzzer starts from deep states. Run from `fuzz/`: `cargo run --example seeds`.

use std::{fs, path::Path};

use ringlog_engine::record;
use ringlog_fuzz::{bases, file_path, image};

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

    // log_model: byte strings decode to op sequences whatever they hold.
    for (i, seed) in
        [&b"\x00appends-and-reads-and-crashes"[..], &[1; 64], &[2, 0, 14, 1, 0, 5, 11, 3, 16, 0, 1][..]]
            .iter()
            .enumerate()
    {
        write("log_model", &format!("ops-{i}"), seed);
    }
}
