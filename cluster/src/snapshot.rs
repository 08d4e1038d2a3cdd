//! The data of a snapshot (`replication.md`, decision 7): the state machine's state, and the
//! log's entries through the snapshot's last one, as the frames of its segment files.
//!
//! A node whose leader purged the entries it lacks needs the records themselves, not only
//! the applied mark: the Raft log *is* the record log. So a snapshot built here is the state
//! plus a pinned view of the log ([`ringlog_engine::LogFiles`]); nothing is copied until it
//! is sent. On the wire (after the start message of `raft.v1.InstallSnapshot`) the data is
//!
//! ```text
//! head length u32 | head (codec::SnapshotHead: state, purge point, last entry, parts) | parts' bytes
//! ```
//!
//! read from the segment files chunk by chunk as the transport takes them. The receiver
//! (`Receiver`) parses the head, then writes each part to a staged store file in the log's
//! directory as chunks arrive, so memory stays bounded whatever the log's size. openraft
//! then hands the received data to the state machine, which installs it
//! (`install`): the staged files replace the log's segments (crash-safe, see
//! `docs/format.md`), unless the log already holds the snapshot's last entry.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use bytes::{Buf, Bytes, BytesMut};
use ringlog_engine::{EntryId, Log, LogFiles, Staging};

use crate::codec::{self, FilesHead, SnapshotHead};

/// Snapshots a node sent and installed since it started, for its metrics.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Snapshots sent to followers (the follower answered).
    pub sent: AtomicU64,
    /// Bytes of those snapshots' data.
    pub sent_bytes: AtomicU64,
    /// Snapshots received from a leader and handed to openraft to install.
    pub received: AtomicU64,
    /// Bytes of those snapshots' data.
    pub received_bytes: AtomicU64,
}

impl SnapshotStats {
    pub(crate) fn count_sent(&self, bytes: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn count_received(&self, bytes: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Bytes read from a segment file per chunk sent.
const READ_CHUNK: usize = 1 << 20;

/// Largest head a receiver accepts (the state and 16 bytes per segment).
const HEAD_BYTES_MAX: usize = 16 << 20;

/// A snapshot's data: see the module docs. Cloning shares it.
#[derive(Clone)]
pub struct SnapshotData {
    inner: Arc<Inner>,
}

/// The head (state, and what the entries are), kept as built or received, and where the
/// entries are.
struct Inner {
    head: SnapshotHead,
    source: Source,
}

enum Source {
    /// Built on this node: the log's entries, read as they are sent (`None`: no entries).
    Local(Option<Arc<LogFiles>>),
    /// Received from a leader: the entries, staged in this node's log directory.
    Received(Mutex<Option<Staging>>),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.inner.source {
            Source::Local(_) => "local",
            Source::Received(_) => "received",
        };
        f.debug_struct("SnapshotData")
            .field("source", &source)
            .field("state_bytes", &self.inner.head.state.len())
            .field("files", &self.inner.head.files)
            .finish()
    }
}

impl SnapshotData {
    /// The state machine's `state` and, when the log holds entries through the state's
    /// applied one, the view of them.
    pub(crate) fn local(state: Bytes, files: Option<LogFiles>) -> Self {
        let files_head = files.as_ref().map(|f| FilesHead {
            before: f.before,
            last: f.last,
            next_offset: f.next_offset,
            parts: f.parts(),
        });
        let head = SnapshotHead { state, files: files_head };
        SnapshotData { inner: Arc::new(Inner { head, source: Source::Local(files.map(Arc::new)) }) }
    }

    /// The state machine's state, encoded.
    pub fn state(&self) -> &Bytes {
        &self.inner.head.state
    }

    /// The entries' last id, if the data carries entries.
    pub fn last_entry(&self) -> Option<EntryId> {
        self.inner.head.files.as_ref().map(|f| f.last)
    }

    /// The offset the first record after the entries gets, if the data carries entries.
    pub fn next_offset(&self) -> Option<u64> {
        self.inner.head.files.as_ref().map(|f| f.next_offset)
    }

    /// The bytes of the head and the parts, in chunks of at most `chunk_bytes`, read from the
    /// segment files as the returned stream is polled (a snapshot received and not yet
    /// installed cannot be sent on).
    pub(crate) fn chunks(
        &self,
        chunk_bytes: usize,
    ) -> (u64, impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + use<>) {
        let head = codec::encode_snapshot_head(&self.inner.head);
        let mut first = BytesMut::with_capacity(4 + head.len());
        first.extend_from_slice(&(head.len() as u32).to_le_bytes());
        first.extend_from_slice(&head);
        let files = match &self.inner.source {
            Source::Local(files) => files.clone(),
            Source::Received(_) => None,
        };
        let parts = files.as_ref().map(|f| f.parts()).unwrap_or_default();
        let total = first.len() as u64 + parts.iter().map(|p| p.len).sum::<u64>();
        let chunk_bytes = chunk_bytes.clamp(1, READ_CHUNK) as u64;
        // (part, offset in it) of the next read; the head goes first, sliced like the rest.
        let state = (first.freeze(), files, parts, 0usize, 0u64);
        let stream =
            futures_util::stream::unfold(state, move |(mut head, files, parts, part, at)| async move {
                if !head.is_empty() {
                    let chunk = head.split_to(head.len().min(chunk_bytes as usize));
                    return Some((Ok(chunk), (head, files, parts, part, at)));
                }
                let files = files?;
                let &ringlog_engine::FilePart { len, .. } = parts.get(part)?;
                let n = (len - at).min(chunk_bytes) as usize;
                let reading = files.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    reading.read(part, at, &mut buf).map(|()| Bytes::from(buf)).map_err(std::io::Error::other)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                let next = if at + n as u64 == len { (part + 1, 0) } else { (part, at + n as u64) };
                // After a failed read the stream ends with the error.
                let files = read.is_ok().then_some(files);
                Some((read, (head, files, parts, next.0, next.1)))
            });
        (total, stream)
    }
}

/// Receives a snapshot's data stream into a staging of `log`: see the module docs.
pub(crate) struct Receiver {
    log: Log,
    expected: u64,
    received: u64,
    head_buf: BytesMut,
    head: Option<SnapshotHead>,
    staging: Option<Staging>,
    /// The part being written and the bytes written to it.
    part: usize,
    part_written: u64,
}

impl Receiver {
    /// A receiver of `expected` bytes of data into `log`.
    pub(crate) fn new(log: Log, expected: u64) -> Self {
        Receiver {
            log,
            expected,
            received: 0,
            head_buf: BytesMut::new(),
            head: None,
            staging: None,
            part: 0,
            part_written: 0,
        }
    }

    /// Takes the next chunk of data.
    pub(crate) async fn push(&mut self, mut chunk: Bytes) -> std::io::Result<()> {
        let invalid = |reason: String| std::io::Error::new(std::io::ErrorKind::InvalidData, reason);
        self.received += chunk.len() as u64;
        if self.received > self.expected {
            return Err(invalid(format!("snapshot data exceeds the declared {} bytes", self.expected)));
        }
        while self.head.is_none() && !chunk.is_empty() {
            let have = self.head_buf.len();
            let wanted = if have < 4 {
                4 - have
            } else {
                let len = u32::from_le_bytes(self.head_buf[..4].try_into().expect("4 bytes")) as usize;
                if len > HEAD_BYTES_MAX {
                    return Err(invalid(format!("a snapshot head of {len} bytes is over {HEAD_BYTES_MAX}")));
                }
                4 + len - have
            };
            self.head_buf.extend_from_slice(&chunk.split_to(wanted.min(chunk.len())));
            let have = self.head_buf.len();
            if have < 4
                || have != 4 + u32::from_le_bytes(self.head_buf[..4].try_into().expect("4 bytes")) as usize
            {
                continue;
            }
            let head = codec::decode_snapshot_head(&self.head_buf[4..])?;
            let announced = have as u64 + head.files.as_ref().map_or(0, FilesHead::len);
            if announced != self.expected {
                return Err(invalid(format!(
                    "the snapshot head announces {announced} bytes, the start message {}",
                    self.expected
                )));
            }
            if head.files.is_some() {
                let log = self.log.clone();
                self.staging = Some(blocking(move || log.stage_install()).await?);
            }
            self.head = Some(head);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        self.write_parts(chunk).await
    }

    /// Writes bytes after the head into the staged parts, starting each part at its border.
    async fn write_parts(&mut self, mut chunk: Bytes) -> std::io::Result<()> {
        let parts = match self.head.as_ref().and_then(|h| h.files.as_ref()) {
            Some(files) => files.parts.clone(),
            None => return Err(std::io::Error::other("snapshot bytes after a head that announced none")),
        };
        let mut staging = self.staging.take().expect("staging exists with files");
        while chunk.has_remaining() {
            let part = parts[self.part];
            let n = (part.len - self.part_written).min(chunk.len() as u64) as usize;
            let bytes = chunk.split_to(n);
            let begin = self.part_written == 0;
            staging = blocking(move || {
                if begin {
                    staging.begin_part(part.first_index)?;
                }
                staging.write(&bytes)?;
                Ok(staging)
            })
            .await?;
            self.part_written += n as u64;
            if self.part_written == part.len {
                self.part += 1;
                self.part_written = 0;
            }
        }
        self.staging = Some(staging);
        Ok(())
    }

    /// The received data, once every declared byte has arrived.
    pub(crate) fn finish(self) -> std::io::Result<SnapshotData> {
        let head = match self.head {
            Some(head) if self.received == self.expected => head,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("snapshot stream ended after {} of {} bytes", self.received, self.expected),
                ));
            }
        };
        let inner = Inner { head, source: Source::Received(Mutex::new(self.staging)) };
        Ok(SnapshotData { inner: Arc::new(inner) })
    }
}

/// Installs `data`'s entries in `log` in place of what it holds, unless it carries none or
/// the log already holds its last entry (then the log's entries are the snapshot's).
pub(crate) async fn install(data: &SnapshotData, log: &Log) -> std::io::Result<()> {
    let Some(last) = data.last_entry() else { return Ok(()) };
    let holds_last = {
        let log = log.clone();
        blocking(move || {
            Ok(log.read_entries(last.index, last.index + 1, 0)?.first().map(|e| e.id) == Some(last))
        })
        .await?
    };
    if holds_last {
        return Ok(());
    }
    let files = data.inner.head.files.clone().expect("entries come with their head");
    match &data.inner.source {
        Source::Received(staging) => {
            let staging = staging.lock().unwrap().take().ok_or_else(|| {
                std::io::Error::other("this snapshot's staged entries were installed already")
            })?;
            blocking(move || staging.install(files.before, files.last, files.next_offset)).await
        }
        Source::Local(view) => {
            // Installing a snapshot built by another state machine in this process (tests,
            // openraft's storage suite): copy its parts through a staging.
            let view = view.clone().expect("entries come with their view");
            let log = log.clone();
            blocking(move || {
                let mut staging = log.stage_install()?;
                for (i, part) in files.parts.iter().enumerate() {
                    staging.begin_part(part.first_index)?;
                    let mut at = 0;
                    while at < part.len {
                        let mut buf = vec![0u8; (part.len - at).min(READ_CHUNK as u64) as usize];
                        view.read(i, at, &mut buf)?;
                        staging.write(&buf)?;
                        at += buf.len() as u64;
                    }
                }
                staging.install(files.before, files.last, files.next_offset)
            })
            .await
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ringlog_engine::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?.map_err(crate::log_store::io_error)
}
