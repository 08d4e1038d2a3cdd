//! Requests and how they complete: a record batch's ticket gets its first offset once the
//! durability setting is met; a Raft append learns twice (published, then durable). Every
//! completion is answered even if the appender's thread dies: the senders' `Drop` reports
//! the poison.

use bytes::Bytes;

use crate::{
    entry::{Entry, EntryId},
    error::{Error, Result},
};

/// What a request appends: records (placed at the next indexes as data entries of the
/// current term) or entries whose index and term the caller chose (Raft).
pub(crate) enum Payload {
    Records(Vec<Bytes>),
    Entries(Vec<Entry>),
}

impl Payload {
    pub(super) fn len(&self) -> usize {
        match self {
            Payload::Records(values) => values.len(),
            Payload::Entries(entries) => entries.len(),
        }
    }
}

/// Called once an append is durable (or failed); see [`Done::Entries`].
pub(crate) type OnDurable = Box<dyn FnOnce(Result<()>) + Send>;

/// How a request is completed.
pub(crate) enum Done {
    /// With the first record's offset, once the durability setting is met.
    Offset(OffsetSender),
    /// Raft appends: `published` when the entries are readable, `on_durable` once the
    /// durability setting is met.
    Entries { published: oneshot::Sender<Result<()>>, on_durable: DurableCallback },
}

/// A ticket's sender that always answers: if the appender drops it unanswered (its
/// thread panicked), the ticket learns that the log is poisoned.
pub(crate) struct OffsetSender(Option<oneshot::Sender<Result<u64>>>);

impl OffsetSender {
    pub(crate) fn new(sender: oneshot::Sender<Result<u64>>) -> Self {
        OffsetSender(Some(sender))
    }

    fn send(mut self, result: Result<u64>) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(result);
        }
    }
}

impl Drop for OffsetSender {
    fn drop(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(Err(Error::Poisoned(STOPPED.into())));
        }
    }
}

const STOPPED: &str = "the appender stopped without completing this append (see the log's poison reason)";

/// An `on_durable` that is always called: if the appender drops it unanswered (its thread
/// panicked), it reports that the log is poisoned.
pub(crate) struct DurableCallback(Option<OnDurable>);

impl DurableCallback {
    pub(crate) fn new(callback: OnDurable) -> Self {
        DurableCallback(Some(callback))
    }

    fn call(mut self, result: Result<()>) {
        if let Some(callback) = self.0.take() {
            callback(result);
        }
    }
}

impl Drop for DurableCallback {
    fn drop(&mut self) {
        if let Some(callback) = self.0.take() {
            callback(Err(Error::Poisoned(STOPPED.into())));
        }
    }
}

/// One caller's records or entries and how to complete them.
pub(crate) struct Request {
    pub(crate) payload: Payload,
    /// Bytes the frames take, computed once by `Log::submit`.
    pub(crate) frame_bytes: u64,
    pub(crate) done: Done,
}

pub(crate) enum Message {
    Append(Request),
    /// Make everything appended before this message durable.
    Sync(oneshot::Sender<Result<()>>),
    /// Remove every entry after the index (`None`: every entry); see `Log::truncate_after`.
    TruncateAfter(Option<u64>, oneshot::Sender<Result<()>>),
    /// Purge every entry up to the id; see `Log::purge`.
    Purge(EntryId, oneshot::Sender<Result<()>>),
    /// Seal the active segment if its oldest record is older than this (Unix ms); see
    /// `Log::roll_if_older`.
    RollIfOlder(u64, oneshot::Sender<Result<()>>),
    /// Finish the committed install in the log's directory; see `Staging::install`.
    Install(oneshot::Sender<Result<()>>),
    /// Finish queued work, sync, trim the index, then reply and stop.
    Close(oneshot::Sender<Result<()>>),
}

/// The acknowledgement a written request is still owed.
pub(super) enum Ack {
    Offset(OffsetSender, u64),
    Durable(DurableCallback),
}

impl Ack {
    pub(super) fn complete(self, result: Result<()>) {
        match self {
            Ack::Offset(done, first) => done.send(result.map(|()| first)),
            Ack::Durable(callback) => callback.call(result),
        }
    }
}

/// A written request waiting to be published.
pub(super) struct Written {
    pub(super) done: Done,
    /// The offset of its first record.
    pub(super) first: u64,
}

impl Written {
    /// The request's entries are readable: the Raft caller learns it now.
    pub(super) fn published(self) -> Ack {
        match self.done {
            Done::Offset(done) => Ack::Offset(done, self.first),
            Done::Entries { published, on_durable } => {
                let _ = published.send(Ok(()));
                Ack::Durable(on_durable)
            }
        }
    }

    pub(super) fn fail(self, error: Error) {
        match self.done {
            Done::Offset(done) => done.send(Err(error)),
            Done::Entries { published, on_durable } => {
                let _ = published.send(Err(error.duplicate()));
                on_durable.call(Err(error));
            }
        }
    }
}
