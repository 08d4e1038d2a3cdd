//! The workers: one per RPC stream (or unary caller), each with its own histogram, merged at
//! the end. Producers embed their send time ([`now_ns`], the intended time in open loop) in
//! the first 8 bytes of every value, so followers can measure append-to-delivery.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use ringlog_service::{
    message_bytes_max,
    proto::{ConsumeRequest, ConsumeResponse, ProduceRequest, Record, log_client::LogClient},
};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::{
    report::{histogram, record},
    schedule::{Source, now_ns},
};

/// What one worker counted.
pub struct Tally {
    /// Records acknowledged (producers) or received (consumers).
    pub records: u64,
    /// Requests answered or responses received.
    pub messages: u64,
    /// Per-record latency: acknowledgement (producers) or append-to-delivery (followers).
    pub latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally { records: 0, messages: 0, latency: histogram() }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        self.records += other.records;
        self.messages += other.messages;
        self.latency.add(&other.latency).expect("histograms with the same bounds");
    }

    /// An empty tally to merge into.
    pub fn empty() -> Tally {
        Tally::new()
    }
}

/// One plaintext HTTP/2 connection to a loopback server, with message limits that fit any
/// record.
pub async fn connect(addr: &str) -> anyhow::Result<LogClient<Channel>> {
    let channel = crate::tls::endpoint(addr)?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let limit = message_bytes_max(u32::MAX);
    Ok(LogClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit))
}

/// A value of `record_bytes` bytes that starts with `sent_ns` (little-endian) when it has
/// room for it.
pub fn value(record_bytes: usize, sent_ns: u64) -> Bytes {
    let mut value = BytesMut::with_capacity(record_bytes);
    if record_bytes >= 8 {
        value.put_u64_le(sent_ns);
    }
    value.resize(record_bytes, 0);
    value.freeze()
}

/// The send time embedded in a value by [`value`], if it has one.
pub fn sent_ns(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// The shape of a produce request.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Bytes per value.
    pub record_bytes: usize,
    /// Records per request; `None` is the original API (one record, in `record`).
    pub batch: Option<u64>,
}

impl Shape {
    /// Records per request.
    pub fn records(&self) -> u64 {
        self.batch.unwrap_or(1)
    }

    /// A request whose values carry `sent_ns`.
    pub fn request(&self, sent_ns: u64) -> ProduceRequest {
        let record = Record { value: value(self.record_bytes, sent_ns), ..Record::default() };
        match self.batch {
            None => ProduceRequest { record: Some(record), records: Vec::new() },
            Some(n) => ProduceRequest { record: None, records: vec![record; n as usize] },
        }
    }
}

/// Unary Produce: one call at a time, latency from the send (or intended) time to the answer.
pub async fn produce_unary(
    mut client: LogClient<Channel>,
    mut source: Source,
    shape: Shape,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new();
    while let Some(sent) = source.next().await {
        let answer = client.produce(shape.request(sent)).await.context("Produce")?.into_inner();
        record(&mut tally.latency, now_ns().saturating_sub(sent), answer.count);
        tally.records += answer.count;
        tally.messages += 1;
        progress.fetch_add(answer.count, Ordering::Relaxed);
    }
    Ok(tally)
}

/// ProduceStream: requests go out as the source gives them (closed loop: as fast as flow
/// control takes them), answers are matched to send times in order.
pub async fn produce_stream(
    mut client: LogClient<Channel>,
    source: Source,
    shape: Shape,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<Tally> {
    let sent = Arc::new(Mutex::new(VecDeque::<u64>::new()));
    let requests =
        futures_util::stream::unfold((source, sent.clone()), move |(mut source, sent)| async move {
            let time = source.next().await?;
            sent.lock().expect("not poisoned").push_back(time);
            Some((shape.request(time), (source, sent)))
        });
    let mut answers = client.produce_stream(requests).await.context("ProduceStream")?.into_inner();
    let mut tally = Tally::new();
    while let Some(answer) = answers.message().await.context("ProduceStream")? {
        let now = now_ns();
        let time = sent.lock().expect("not poisoned").pop_front().context("an answer to no request")?;
        record(&mut tally.latency, now.saturating_sub(time), answer.count);
        tally.records += answer.count;
        tally.messages += 1;
        progress.fetch_add(answer.count, Ordering::Relaxed);
    }
    Ok(tally)
}

/// Records in a ConsumeResponse.
fn records(message: &ConsumeResponse) -> impl Iterator<Item = &Record> {
    message.record.iter().chain(message.records.iter())
}

/// A ConsumeStream from `offset` with `max_records`, read until `until` records have
/// arrived (it can grow while reading, as producers finish). With `delivery`, each record's
/// embedded send time is subtracted from its arrival time.
pub async fn consume_stream(
    mut client: LogClient<Channel>,
    offset: u64,
    max_records: u64,
    mut until: watch::Receiver<u64>,
    delivery: bool,
    progress: Arc<AtomicU64>,
) -> anyhow::Result<Tally> {
    let mut stream = client
        .consume_stream(ConsumeRequest { offset, max_records })
        .await
        .context("ConsumeStream")?
        .into_inner();
    let mut tally = Tally::new();
    loop {
        if tally.records >= *until.borrow_and_update() {
            return Ok(tally);
        }
        let message = tokio::select! {
            message = stream.message() => message.context("ConsumeStream")?.context("ConsumeStream ended early")?,
            changed = until.changed() => {
                changed.context("the run ended before the follower had every record")?;
                continue;
            }
        };
        let now = now_ns();
        let mut count = 0;
        for record in records(&message) {
            count += 1;
            if delivery && let Some(sent) = sent_ns(&record.value) {
                crate::report::record(&mut tally.latency, now.saturating_sub(sent), 1);
            }
        }
        tally.records += count;
        tally.messages += 1;
        progress.fetch_add(count, Ordering::Relaxed);
    }
}

/// Appends `records` records of `record_bytes` bytes over one ProduceStream in batches of
/// up to `batch` and returns the first offset. Not measured: it fills the log for consumers.
pub async fn prefill(
    mut client: LogClient<Channel>,
    records: u64,
    record_bytes: usize,
    batch: u64,
) -> anyhow::Result<u64> {
    let requests = (0..records.div_ceil(batch)).map(move |i| {
        let n = batch.min(records - i * batch);
        Shape { record_bytes, batch: Some(n) }.request(now_ns())
    });
    let mut answers =
        client.produce_stream(futures_util::stream::iter(requests)).await.context("prefill")?.into_inner();
    let mut first = None;
    while let Some(answer) = answers.message().await.context("prefill")? {
        first.get_or_insert(answer.offset);
    }
    first.context("prefill appended nothing")
}

/// The offset the next record will get: appends one marker record and returns its offset + 1.
pub async fn end_offset(mut client: LogClient<Channel>) -> anyhow::Result<u64> {
    let marker = Record { value: Bytes::from_static(b"m"), ..Record::default() };
    let marker = ProduceRequest { record: Some(marker), records: Vec::new() };
    Ok(client.produce(marker).await.context("Produce (marker)")?.into_inner().offset + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_send_time_when_they_have_room() {
        let v = value(100, 123_456_789);
        assert_eq!(v.len(), 100);
        assert_eq!(sent_ns(&v), Some(123_456_789));
        assert_eq!(value(4, 7).len(), 4);
        assert_eq!(sent_ns(&value(4, 7)), None);
    }

    #[test]
    fn requests_use_the_original_field_unless_batched() {
        let one = Shape { record_bytes: 16, batch: None }.request(5);
        assert!(one.record.is_some() && one.records.is_empty());
        let many = Shape { record_bytes: 16, batch: Some(3) }.request(5);
        assert!(many.record.is_none() && many.records.len() == 3);
        assert!(many.records.iter().all(|r| sent_ns(&r.value) == Some(5)));
    }
}
