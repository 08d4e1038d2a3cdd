//! The log as a Raft log store: entries at the index and term the caller chose, two-stage
//! completion, suffix truncation, purge, and the vote and committed ids of the metadata
//! file. The contracts are openraft's (`docs/format.md` says how each is kept on disk).

use std::sync::{Arc, Mutex, atomic::Ordering};

use bytes::Bytes;

use super::{Log, Published};
use crate::{
    appender::{Done, DurableCallback, Message, Payload, Request},
    entry::{Entry, EntryId},
    error::{Error, Result},
    meta::Meta,
    record,
};

impl Log {
    /// The index the next entry gets ([`Log::append_entries`] must start there).
    pub fn next_index(&self) -> u64 {
        self.shared().next_index.load(Ordering::Acquire)
    }

    /// The lowest index present (equal to `next_index()` when the log holds no entries).
    pub fn first_index(&self) -> u64 {
        self.shared().first_index.load(Ordering::Acquire).min(self.next_index())
    }

    /// The term and index of the last entry, or `None` when the log holds none; an error
    /// when its frame cannot be read.
    pub fn last_entry_id(&self) -> Result<Option<EntryId>> {
        loop {
            let next = self.next_index();
            if next <= self.first_index() {
                return Ok(None);
            }
            match self.shared().read_raw(next - 1, next, 1, 0) {
                Ok(entries) => return Ok(Some(entries[0].id)),
                // A truncation moved the end meanwhile: look again.
                Err(Error::Truncated { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// The record offset of the entry at `index`: for a data entry its offset, for a
    /// blank or membership entry the offset the next record gets. `index` must not lie
    /// below the first index.
    pub fn offset_of_index(&self, index: u64) -> u64 {
        self.shared().offsets().offset_of(index)
    }

    /// Lets record readers (`read`, `read_from`, `wait_for`, and so Consume and
    /// ConsumeStream) see only entries below `index` from now on, on top of what they see
    /// anyway (published, or durable under `Always`). A Raft replica sets it to its applied
    /// mark, so that it serves committed records only; a lone log never sets it. Waiting
    /// readers are woken. The caller keeps it from moving back (an applied mark never does).
    pub fn set_read_limit(&self, index: u64) {
        self.shared().read_limit.store(index, Ordering::Release);
        self.shared().appended.notify(usize::MAX);
    }

    /// Appends entries at the indexes they carry: the first must be [`Log::next_index`],
    /// the rest contiguous, terms never decreasing ([`Error::InvalidEntry`] otherwise).
    /// The ticket completes once they are readable; `on_durable` is called (on an engine
    /// thread, so it must be quick and must not panic: a panic there poisons the log)
    /// once the durability setting is met for all of them, or with the error. Unlike a
    /// record batch, entries need not fit in one segment: a long list is appended in
    /// segment-sized groups (a failure may leave a prefix of it appended, as Raft allows).
    pub fn append_entries(
        &self,
        entries: Vec<Entry>,
        on_durable: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<Published> {
        let limits = self.batch_limits();
        let mut groups: Vec<(Vec<Entry>, u64)> = Vec::new();
        for entry in entries {
            let max = self.shared().config.record_bytes_max;
            if entry.payload.len() > max as usize {
                return Err(Error::RecordTooLarge { len: entry.payload.len(), max });
            }
            let bytes = record::frame_len(entry.payload.len()) as u64;
            match groups.last_mut() {
                Some((group, group_bytes))
                    if group.len() < limits.records_max && *group_bytes + bytes <= limits.bytes_max =>
                {
                    group.push(entry);
                    *group_bytes += bytes;
                }
                _ => groups.push((vec![entry], bytes)),
            }
        }
        if groups.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let on_durable = Arc::new(Mutex::new(JoinedCallback {
            remaining: groups.len(),
            error: None,
            callback: Some(Box::new(on_durable)),
        }));
        let mut published = Vec::with_capacity(groups.len());
        for (group, frame_bytes) in groups {
            let (done, rx) = oneshot::channel();
            let joined = Arc::clone(&on_durable);
            let on_durable =
                DurableCallback::new(Box::new(move |result| JoinedCallback::complete(&joined, result)));
            let request = Request {
                payload: Payload::Entries(group),
                frame_bytes,
                done: Done::Entries { published: done, on_durable },
            };
            self.send(Message::Append(request))?;
            published.push(rx);
        }
        Ok(Published { rx: published })
    }

    /// Entries with indexes in `start..end` that the log holds (purged ones and ones past
    /// the end are left out; there is never a hole): at most `max_bytes` of frames but at
    /// least one entry when any is in range, from one segment, so it may return fewer
    /// than the range holds; call again from the next index. Entries are readable as soon
    /// as they are published, whatever the durability setting.
    pub fn read_entries(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<Entry>> {
        loop {
            let start = start.max(self.first_index());
            let end = end.min(self.next_index());
            if start >= end {
                return Ok(Vec::new());
            }
            match self.shared().read_raw(start, end, usize::MAX, max_bytes) {
                Err(Error::Truncated { .. }) => continue,
                result => return result,
            }
        }
    }

    /// Removes every entry after `index` (`None`: every entry the log holds), newest first,
    /// across segments; durable before it returns. Readers inside the removed range get
    /// [`Error::Truncated`]. The offsets of records after `index` will be given again.
    pub fn truncate_after(&self, index: Option<u64>) -> Result<()> {
        self.call(|reply| Message::TruncateAfter(index, reply))
    }

    /// Purges every entry up to and including `upto`: recorded durably, then readers no
    /// longer see them and whole segments below it are deleted. `upto` may lie past the
    /// last entry: the log is then empty and continues at `upto.index + 1` (entries it
    /// never held are counted as records for offsets).
    pub fn purge(&self, upto: EntryId) -> Result<()> {
        self.call(|reply| Message::Purge(upto, reply))
    }

    /// The vote, committed and purged ids the log keeps.
    pub fn meta(&self) -> Meta {
        self.shared().meta_file().meta.clone()
    }

    /// Stores `vote` durably, after every append submitted before this call is durable
    /// (openraft's IO ordering: a vote is never on disk ahead of earlier entries).
    pub fn save_vote(&self, vote: Bytes) -> Result<()> {
        self.sync()?;
        self.shared().write_meta(|file| file.meta.vote = Some(vote))
    }

    /// Keeps `committed`; it reaches the disk with the next metadata write or on close
    /// (best effort, as openraft allows).
    pub fn save_committed(&self, committed: Option<EntryId>) -> Result<()> {
        let shared = self.shared();
        if shared.poison.get().is_some() {
            return Err(shared.poison_error());
        }
        shared.meta_file().meta.committed = committed;
        shared.meta_unwritten.store(true, Ordering::Release);
        Ok(())
    }
}

/// The `on_durable` of an `append_entries` split into several groups: called once, when
/// every group is durable, with the first error.
pub(super) struct JoinedCallback {
    remaining: usize,
    error: Option<Error>,
    callback: Option<Box<dyn FnOnce(Result<()>) + Send>>,
}

impl JoinedCallback {
    fn complete(joined: &Mutex<JoinedCallback>, result: Result<()>) {
        let mut joined = joined.lock().unwrap_or_else(|p| p.into_inner());
        joined.remaining -= 1;
        if let Err(error) = result {
            joined.error.get_or_insert(error);
        }
        if joined.remaining == 0
            && let Some(callback) = joined.callback.take()
        {
            let error = joined.error.take();
            drop(joined);
            callback(error.map_or(Ok(()), Err));
        }
    }
}
