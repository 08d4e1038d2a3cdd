//! Shared drivers for ringlog's benches: the engine under a given number of appenders,
//! and the raw baselines that write the same bytes with no log logic, so every result
//! reads as a ratio to what the machine can do.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
};

use bytes::Bytes;
use ringlog_engine::{AppendTicket, Log, record};

/// Appends `records` copies of `value` from `appenders` threads, each keeping up to
/// `window` appends in flight, and waits for every acknowledgement.
pub fn drive_engine(log: &Log, appenders: usize, window: usize, records: u64, value: &Bytes) {
    let per_thread = records / appenders as u64;
    thread::scope(|scope| {
        for _ in 0..appenders {
            scope.spawn(|| {
                let mut in_flight: std::collections::VecDeque<AppendTicket> =
                    std::collections::VecDeque::with_capacity(window);
                for _ in 0..per_thread {
                    if in_flight.len() == window {
                        in_flight.pop_front().expect("window is not empty").wait().expect("append");
                    }
                    in_flight.push_back(log.submit(vec![value.clone()]).expect("submit"));
                }
                for ticket in in_flight {
                    ticket.wait().expect("append");
                }
            });
        }
    });
}

/// Raw baseline: the frames the log would write, buffered into 64 KiB and written with
/// `pwrite`, with no offsets, index, batching or threads.
pub struct RawWriter {
    file: File,
    position: u64,
    buf: Vec<u8>,
}

/// Size of the raw baseline's write buffer.
pub const RAW_BUFFER_BYTES: usize = 64 * 1024;

impl RawWriter {
    /// A writer appending to a new file in `dir`.
    pub fn create(dir: &Path) -> RawWriter {
        let file =
            File::options().create(true).truncate(true).read(true).write(true).open(dir.join("raw")).unwrap();
        RawWriter { file, position: 0, buf: Vec::with_capacity(RAW_BUFFER_BYTES) }
    }

    /// Encodes `records` frames of `value` and writes them in 64 KiB pwrites.
    pub fn append(&mut self, records: u64, value: &[u8]) {
        for offset in 0..records {
            record::encode(&mut self.buf, offset, 0, value);
            if self.buf.len() >= RAW_BUFFER_BYTES {
                self.flush();
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        self.file.write_all_at(&self.buf, self.position).unwrap();
        self.position += self.buf.len() as u64;
        self.buf.clear();
    }

    /// Durable raw baseline: the writer writes 64 KiB chunks while a second thread calls
    /// `fdatasync` back to back; returns once a sync that started after the last write
    /// has finished. This is the best a durable group commit can do on this disk.
    pub fn append_durable(&mut self, records: u64, value: &[u8]) {
        let written = Arc::new(AtomicU64::new(0));
        let file = self.file.try_clone().unwrap();
        let total = records;
        thread::scope(|scope| {
            let syncer_written = Arc::clone(&written);
            let syncer = scope.spawn(move || {
                loop {
                    let target = syncer_written.load(Ordering::Acquire);
                    file.sync_data().unwrap();
                    if target == total {
                        return;
                    }
                }
            });
            for offset in 0..records {
                record::encode(&mut self.buf, offset, 0, value);
                if self.buf.len() >= RAW_BUFFER_BYTES || offset + 1 == records {
                    self.flush();
                    written.store(offset + 1, Ordering::Release);
                }
            }
            syncer.join().unwrap();
        });
    }
}
