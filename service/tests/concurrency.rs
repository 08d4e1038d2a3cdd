//! Many producers at once: offsets are unique and contiguous, and every record reads back.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::{TestServer, config, produce_request};
use ringlog_service::proto::ConsumeRequest;
use tokio_stream::StreamExt;

const STREAMS: usize = 8;
const RECORDS: usize = 10_000;

/// A value that names its stream and index, with a varying length.
fn value(stream: usize, i: usize) -> Bytes {
    let mut value = format!("stream {stream} record {i} ").into_bytes();
    value.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 97));
    Bytes::from(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_produce_streams_get_unique_contiguous_offsets_and_read_back_identically() {
    let server = TestServer::start(config()).await;
    let mut producers = tokio::task::JoinSet::new();
    for stream in 0..STREAMS {
        let mut client = server.client().await;
        producers.spawn(async move {
            let requests = tokio_stream::iter((0..RECORDS).map(move |i| produce_request(value(stream, i))));
            let answers: Vec<u64> = client
                .produce_stream(requests)
                .await
                .unwrap()
                .into_inner()
                .map(|answer| answer.unwrap().offset)
                .collect()
                .await;
            (stream, answers)
        });
    }
    let mut expected: HashMap<u64, Bytes> = HashMap::new();
    while let Some(done) = producers.join_next().await {
        let (stream, offsets) = done.unwrap();
        assert_eq!(offsets.len(), RECORDS, "stream {stream} got an answer per request");
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "stream {stream}: answers in request order");
        for (i, offset) in offsets.into_iter().enumerate() {
            assert!(expected.insert(offset, value(stream, i)).is_none(), "offset {offset} given twice");
        }
    }
    let total = (STREAMS * RECORDS) as u64;
    let mut offsets: Vec<u64> = expected.keys().copied().collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..total).collect::<Vec<_>>(), "offsets are contiguous from 0");
    assert_eq!(server.log.next_offset(), total);

    let mut client = server.client().await;
    let mut stream =
        client.consume_stream(ConsumeRequest { offset: 0, max_records: 500 }).await.unwrap().into_inner();
    let mut next = 0;
    while next < total {
        for record in stream.message().await.unwrap().unwrap().records {
            assert_eq!(record.offset, next);
            assert_eq!(record.value, expected[&next], "offset {next} reads back byte-identical");
            next += 1;
        }
    }
    drop(stream);
    server.stop().await.unwrap();
}
