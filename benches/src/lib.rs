//! Shared drivers for ringlog's criterion benches: the engine under a given number of
//! appenders, and the raw baselines that write or read the same bytes with no log logic,
//! so every result reads as a ratio to what the machine can do.
//!
//! Benches run a quick matrix by default (a few minutes on a 2-core machine); set
//! `RINGLOG_BENCH_FULL=1` for the full one.

use std::{
    collections::VecDeque,
    fs::File,
    os::unix::fs::FileExt,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use bytes::Bytes;
use ringlog_engine::{AppendTicket, Backend, Config, EntryId, EntryKind, Log, record};

/// Whether to run the full matrix (`RINGLOG_BENCH_FULL=1`) rather than the quick one.
pub fn full_matrix() -> bool {
    std::env::var_os("RINGLOG_BENCH_FULL").is_some_and(|v| v != "0")
}

/// Measurement time per benchmark: short in quick mode.
pub fn measurement_time() -> Duration {
    if full_matrix() { Duration::from_secs(10) } else { Duration::from_secs(3) }
}

/// The backend named on an example's command line: `io_uring`, else `pwrite`.
pub fn backend_named(name: Option<&str>) -> Backend {
    match name {
        Some("io_uring") => Backend::IoUring,
        _ => Backend::Pwrite,
    }
}

/// The engine backends this machine can run, by name.
pub fn backends() -> Vec<(&'static str, Backend)> {
    let mut backends = vec![("pwrite", Backend::Pwrite)];
    let probe = tempfile::tempdir().expect("temp dir");
    if Log::open(probe.path(), Config { backend: Backend::IoUring, ..Config::default() }).is_ok() {
        backends.push(("io_uring", Backend::IoUring));
    }
    backends
}

/// A value of `size` bytes whose clones are free: as a producer's own buffers would be,
/// where clones of one shared `Bytes` would make every thread bump one reference count
/// (measured: a quarter of the time at 100 B). Leaked once per call, so call it once per
/// benchmark group.
pub fn static_value(size: usize) -> Bytes {
    Bytes::from_static(Box::leak(vec![0xA5; size].into_boxed_slice()))
}

/// Appends `records` records from `appenders` threads (pass a [`static_value`]). Each thread submits `batch`
/// records per append and keeps up to `window` appends in flight (1 = a closed-loop
/// client that waits for each acknowledgement). `window` 0 calls the blocking
/// `Log::append_batch` instead, which runs the appender on the calling thread when it is idle.
pub fn drive_engine(log: &Log, appenders: usize, window: usize, batch: usize, records: u64, value: &Bytes) {
    let per_thread = records / appenders as u64 / batch as u64;
    let values: Vec<Bytes> = vec![value.clone(); batch];
    thread::scope(|scope| {
        for _ in 0..appenders {
            scope.spawn(|| {
                if window == 0 {
                    for _ in 0..per_thread {
                        log.append_batch(values.clone()).expect("append");
                    }
                    return;
                }
                let mut in_flight: VecDeque<AppendTicket> = VecDeque::with_capacity(window);
                for _ in 0..per_thread {
                    if in_flight.len() == window {
                        in_flight.pop_front().expect("window is not empty").wait().expect("append");
                    }
                    in_flight.push_back(log.submit(values.clone()).expect("submit"));
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
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("raw"))
            .expect("raw file");
        RawWriter { file, position: 0, buf: Vec::with_capacity(RAW_BUFFER_BYTES) }
    }

    /// Encodes `records` frames of `value` and writes them in 64 KiB pwrites.
    pub fn append(&mut self, records: u64, value: &[u8]) {
        for offset in 0..records {
            record::encode(&mut self.buf, EntryId { term: 0, index: offset }, EntryKind::Data, 0, value);
            if self.buf.len() >= RAW_BUFFER_BYTES {
                self.flush();
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        self.file.write_all_at(&self.buf, self.position).expect("pwrite");
        self.position += self.buf.len() as u64;
        self.buf.clear();
    }

    /// Durable raw baseline for `clients` closed-loop clients: each round writes one
    /// record per client in one `pwrite`, then `fdatasync`s, which is the most a durable
    /// group commit can batch when every client waits for its acknowledgement. Returns
    /// the latency of each round (what each client waits).
    pub fn append_durable(&mut self, records: u64, value: &[u8], clients: usize) -> Vec<Duration> {
        let mut rounds = Vec::with_capacity((records as usize).div_ceil(clients));
        let mut offset = 0;
        while offset < records {
            let start = std::time::Instant::now();
            for _ in 0..clients.min((records - offset) as usize) {
                record::encode(&mut self.buf, EntryId { term: 0, index: offset }, EntryKind::Data, 0, value);
                offset += 1;
            }
            self.flush();
            self.file.sync_data().expect("fdatasync");
            rounds.push(start.elapsed());
        }
        rounds
    }

    /// Pipelined durable raw baseline: a writer writes 64 KiB chunks while a second
    /// thread calls `fdatasync` back to back, until a sync that started after the last
    /// write has finished (open loop: nobody waits per record).
    pub fn append_durable_pipelined(&mut self, records: u64, value: &[u8]) {
        let written = Arc::new(AtomicU64::new(0));
        let file = self.file.try_clone().expect("clone fd");
        thread::scope(|scope| {
            let syncer_written = Arc::clone(&written);
            let syncer = scope.spawn(move || {
                loop {
                    let target = syncer_written.load(Ordering::Acquire);
                    file.sync_data().expect("fdatasync");
                    if target == records {
                        return;
                    }
                }
            });
            for offset in 0..records {
                record::encode(&mut self.buf, EntryId { term: 0, index: offset }, EntryKind::Data, 0, value);
                if self.buf.len() >= RAW_BUFFER_BYTES || offset + 1 == records {
                    self.flush();
                    written.store(offset + 1, Ordering::Release);
                }
            }
            syncer.join().expect("syncer");
        });
    }
}

/// Percentile of a set of durations (`q` in 0..=1).
pub fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[rank]
}
