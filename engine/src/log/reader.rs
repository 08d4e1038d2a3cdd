//! A consistent snapshot reader over the log's frames.

use std::{
    io,
    sync::{Arc, atomic::Ordering},
};

use super::Log;
use crate::{segment::Segment, store};

impl Log {
    /// A reader over the frames of every entry from the first segment to the next index at
    /// the time of the call, in each segment's format: a consistent snapshot (later
    /// appends, retention and close do not change what it returns). Decode version-2
    /// frames with [`record::decode`](crate::record::decode).
    pub fn reader(&self) -> LogReader {
        let next = self.shared().next_index.load(Ordering::Acquire);
        let segments = self.shared().segments().clone();
        let parts = segments
            .into_iter()
            .filter(|s| s.base() < next)
            .map(|s| {
                let end = if s.next_index() <= next { s.size() } else { s.frame_start(next) };
                (s, end)
            })
            .collect();
        LogReader { parts, part: 0, position: store::HEADER_LEN as u64 }
    }
}

/// Reads a snapshot of the log's frames; see [`Log::reader`].
pub struct LogReader {
    parts: Vec<(Arc<Segment>, u64)>,
    part: usize,
    position: u64,
}

impl io::Read for LogReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some((segment, end)) = self.parts.get(self.part) {
            if self.position >= *end {
                self.part += 1;
                self.position = store::HEADER_LEN as u64;
                continue;
            }
            let len = buf.len().min((*end - self.position) as usize);
            segment.store.file().read_exact_at(&mut buf[..len], self.position)?;
            self.position += len as u64;
            return Ok(len);
        }
        Ok(0)
    }
}
