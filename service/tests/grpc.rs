//! Every RPC of log.v1 and every status code, over a real loopback server.

mod common;

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes};
use common::{TestServer, batch_request, config, produce_request, record};
use ringlog_engine::{Backend, Config, SimDisk, SimFault};
use ringlog_service::proto::{ConsumeRequest, ProduceRequest};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use tonic_types::StatusExt;

fn consume(offset: u64) -> ConsumeRequest {
    ConsumeRequest { offset, max_records: 0 }
}

fn assert_out_of_range(status: &Status, offset: u64, end: (&str, u64)) {
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(status.message(), format!("offset out of range: {offset}"));
    let localized = status.get_details_localized_message().expect("a LocalizedMessage detail");
    assert_eq!(localized.locale, "en-US");
    assert_eq!(localized.message, format!("The requested offset is outside the log's range: {offset}"));
    let info = status.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!(info.reason, "OFFSET_OUT_OF_RANGE");
    assert_eq!(info.domain, "ringlog");
    let expected: HashMap<String, String> =
        [("offset".to_owned(), offset.to_string()), (end.0.to_owned(), end.1.to_string())].into();
    assert_eq!(info.metadata, expected);
}

#[tokio::test]
async fn produce_then_consume_returns_the_record() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let produced = client.produce(produce_request("hello world")).await.unwrap().into_inner();
    assert_eq!((produced.offset, produced.count), (0, 1));
    let consumed = client.consume(consume(produced.offset)).await.unwrap().into_inner();
    let record = consumed.record.expect("the original field carries the record");
    assert_eq!(record.value, "hello world");
    assert_eq!(record.offset, 0);
    assert!(record.timestamp_ms > 0);
    assert!(consumed.records.is_empty());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn produce_stream_then_consume_stream_in_order() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let requests = tokio_stream::iter([produce_request("first message"), produce_request("second message")]);
    let mut answers = client.produce_stream(requests).await.unwrap().into_inner();
    for want in 0..2 {
        let answer = answers.message().await.unwrap().expect("an answer per request");
        assert_eq!((answer.offset, answer.count), (want, 1));
    }
    // W15: the client half-closed (the request stream ended), so the stream ends with OK.
    assert!(answers.message().await.unwrap().is_none());

    let mut stream = client.consume_stream(consume(0)).await.unwrap().into_inner();
    for (offset, value) in [(0, "first message"), (1, "second message")] {
        let record = stream.message().await.unwrap().unwrap().record.unwrap();
        assert_eq!((record.offset, &record.value[..]), (offset, value.as_bytes()));
    }
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn consume_past_the_end_is_out_of_range_with_details() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let offset = client.produce(produce_request("hello world")).await.unwrap().into_inner().offset;
    let status = client.consume(consume(offset + 1)).await.unwrap_err();
    assert_out_of_range(&status, offset + 1, ("next", offset + 1));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn offsets_below_the_lowest_are_out_of_range_for_consume_and_consume_stream() {
    // Small segments so that retention can drop the first ones.
    let config = Config { store_bytes_max: 4096, record_bytes_max: 512, ..config() };
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    for i in 0..100 {
        client.produce(produce_request(format!("record {i:0>100}"))).await.unwrap();
    }
    assert!(server.log.truncate_before(50).unwrap() > 0);
    let lowest = server.log.lowest_offset();
    assert!(lowest > 0);

    let status = client.consume(consume(0)).await.unwrap_err();
    assert_out_of_range(&status, 0, ("lowest", lowest));
    let status = client.consume_stream(consume(lowest - 1)).await.unwrap_err();
    assert_out_of_range(&status, lowest - 1, ("lowest", lowest));

    // The lowest retained offset itself reads, also through a stream.
    let record = client.consume(consume(lowest)).await.unwrap().into_inner().record.unwrap();
    assert_eq!(record.offset, lowest);
    let mut stream = client.consume_stream(consume(lowest)).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().record.unwrap().offset, lowest);
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn produce_without_a_record_is_invalid_and_writes_nothing() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    for request in [ProduceRequest::default(), ProduceRequest { record: None, records: Vec::new() }] {
        let status = client.produce(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("no record"), "{}", status.message());
        let violation = &status.get_details_bad_request().expect("BadRequest detail").field_violations[0];
        assert_eq!(violation.field, "record");
    }
    assert_eq!(server.log.next_offset(), 0, "nothing was written");
    // W16: the server survived the poison pill and still appends.
    assert_eq!(client.produce(produce_request("after")).await.unwrap().into_inner().offset, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_record_over_the_limit_is_invalid_and_nothing_of_its_request_is_written() {
    let server = TestServer::start(Config { record_bytes_max: 1024, ..config() }).await;
    let mut client = server.client().await;
    let big = "x".repeat(1025);

    let status = client.produce(produce_request(big.clone())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "record.value is 1025 bytes, over the limit of 1024 bytes; nothing was written"
    );

    let status = client.produce(batch_request(&["ok", &big, "ok"])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("records[1].value is 1025 bytes"), "{}", status.message());
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "records[1].value");
    assert_eq!(server.log.next_offset(), 0, "nothing was written");

    // Exactly at the limit is fine.
    client.produce(produce_request("x".repeat(1024))).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn batches_are_contiguous_and_clients_that_do_not_ask_see_single_records() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.produce(produce_request("zero")).await.unwrap();
    let both = ProduceRequest { record: Some(record("one")), records: vec![record("two"), record("three")] };
    let produced = client.produce(both).await.unwrap().into_inner();
    assert_eq!((produced.offset, produced.count), (1, 3), "`record` first, then `records`");
    let produced = client.produce(batch_request(&["four", "five"])).await.unwrap().into_inner();
    assert_eq!((produced.offset, produced.count), (4, 2));

    let batch = client.consume(ConsumeRequest { offset: 1, max_records: 3 }).await.unwrap().into_inner();
    assert!(batch.record.is_none());
    let got: Vec<_> = batch.records.iter().map(|r| (r.offset, r.value.clone())).collect();
    assert_eq!(got, vec![(1, Bytes::from("one")), (2, Bytes::from("two")), (3, Bytes::from("three"))]);
    // max_records 1 is the original behaviour.
    let single = client.consume(ConsumeRequest { offset: 5, max_records: 1 }).await.unwrap().into_inner();
    assert_eq!(single.record.unwrap().value, "five");
    assert!(single.records.is_empty());

    // A batched stream from the middle delivers every record once, in order.
    let mut stream =
        client.consume_stream(ConsumeRequest { offset: 2, max_records: 100 }).await.unwrap().into_inner();
    let mut offsets = Vec::new();
    while offsets.len() < 4 {
        let message = stream.message().await.unwrap().unwrap();
        assert!(message.record.is_none() && !message.records.is_empty());
        offsets.extend(message.records.iter().map(|r| r.offset));
    }
    assert_eq!(offsets, vec![2, 3, 4, 5]);
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_request_ends_a_produce_stream_and_earlier_records_stay_written() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let (tx, rx) = mpsc::channel(8);
    let mut answers = client.produce_stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(produce_request("good 0")).await.unwrap();
    tx.send(produce_request("good 1")).await.unwrap();
    tx.send(ProduceRequest::default()).await.unwrap();
    let _ = tx.send(produce_request("never read")).await;

    assert_eq!(answers.message().await.unwrap().unwrap().offset, 0);
    assert_eq!(answers.message().await.unwrap().unwrap().offset, 1);
    let status = answers.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(server.log.next_offset(), 2);
    assert_eq!(server.log.read(1).unwrap().value, "good 1");
    drop((tx, answers));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_disk_is_resource_exhausted_and_appends_resume_when_space_returns() {
    let disk = SimDisk::new();
    let server = TestServer::start(Config { backend: Backend::Simulated(disk.clone()), ..config() }).await;
    let mut client = server.client().await;
    client.produce(produce_request("before")).await.unwrap();
    disk.inject(SimFault::Write { after: 0, errno: libc::ENOSPC });
    let status = client.produce(produce_request("no room")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("disk full"), "{}", status.message());
    disk.clear_faults();
    assert_eq!(client.produce(produce_request("after")).await.unwrap().into_inner().offset, 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_poisoned_log_is_unavailable_with_the_reason() {
    let disk = SimDisk::new();
    let server = TestServer::start(Config { backend: Backend::Simulated(disk.clone()), ..config() }).await;
    let mut client = server.client().await;
    disk.inject(SimFault::Write { after: 0, errno: libc::EIO });
    let first = client.produce(produce_request("fails")).await.unwrap_err();
    assert!(matches!(first.code(), Code::Internal | Code::Unavailable), "{first:?}");
    let status = client.produce(produce_request("poisoned")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("poisoned"), "{}", status.message());
    // Closing a poisoned log reports the poison; the server still stops.
    let _ = server.stop().await;
}

#[tokio::test]
async fn a_closed_log_is_unavailable() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.produce(produce_request("before")).await.unwrap();
    server.log.close().unwrap();
    let status = client.produce(produce_request("after")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "log is closed");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn corruption_found_on_read_is_data_loss_with_the_reason() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.produce(produce_request("soon corrupt")).await.unwrap();
    let store = std::fs::read_dir(server.dir.as_ref().unwrap().path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "store"))
        .expect("a store file");
    let mut bytes = std::fs::read(&store).unwrap();
    let last = bytes.len() - 1; // the last byte of the record's value
    bytes[last] ^= 0xff;
    std::fs::write(&store, bytes).unwrap();
    let status = client.consume(consume(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("corrupt"), "{}", status.message());
    server.stop().await.unwrap();
}

/// Sends raw bytes as a request message, to test what the server does with malformed input.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[tokio::test]
async fn a_malformed_message_is_invalid_argument_and_writes_nothing() {
    let server = TestServer::start(config()).await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    // Field 1 (record), length-delimited, claiming 100 bytes that are not there.
    let malformed = Bytes::from_static(&[0x0a, 0x64, 0x01]);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/log.v1.Log/Produce");
    let status = grpc.unary(tonic::Request::new(malformed), path, RawCodec).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("malformed message"), "{}", status.message());
    assert_eq!(server.log.next_offset(), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn produce_stream_answers_every_request_in_order_when_pipelined() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    let requests =
        tokio_stream::iter(
            (0..2000).map(|i| {
                if i % 3 == 0 { batch_request(&["a", "b"]) } else { produce_request(format!("{i}")) }
            }),
        );
    let answers: Vec<_> =
        client.produce_stream(requests).await.unwrap().into_inner().map(|a| a.unwrap()).collect().await;
    assert_eq!(answers.len(), 2000);
    let mut next = 0;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.offset, next, "answer {i}");
        assert_eq!(answer.count, if i % 3 == 0 { 2 } else { 1 });
        next += answer.count;
    }
    assert_eq!(server.log.next_offset(), next);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn coalesced_produce_stream_requests_never_exceed_a_segment() {
    // Requests that arrive together go to the engine as one batch; with segments of ten
    // small records, a batch of them all would be refused, so groups must split.
    let config = Config { store_bytes_max: 32 + 10 * 40, record_bytes_max: 16, ..config() };
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let requests = tokio_stream::iter((0..500).map(|i| produce_request(format!("v{i}"))));
    let answers: Vec<_> =
        client.produce_stream(requests).await.unwrap().into_inner().map(|a| a.unwrap()).collect().await;
    assert_eq!(answers.len(), 500);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!((answer.offset, answer.count), (i as u64, 1), "answer {i}");
        assert_eq!(server.log.read(i as u64).unwrap().value, format!("v{i}"));
    }
    assert!(server.log.segment_count() >= 30, "about 14 records a segment");
    server.stop().await.unwrap();
}
