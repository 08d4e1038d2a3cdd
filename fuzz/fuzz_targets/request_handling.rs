//! Arbitrary bytes decoded as each request message and run through the service's handlers
//! in-process (the `log.v1.Log` trait impl, called directly with a `tonic::Request`) over a
//! log on the simulated disk: Produce, Consume, ConsumeStream (polled until it would wait)
//! and ProduceStream (a request body of gRPC frames, each holding u8-length-prefixed raw
//! bytes, decoded as the server decodes them: malformed is `INVALID_ARGUMENT`). Nothing panics; every error is a
//! client's status (`INVALID_ARGUMENT` or `OUT_OF_RANGE`), never `INTERNAL`; what succeeds is
//! consistent with the log.
//!
//! Input: a byte choosing the log's record limit, then messages, each a byte choosing the
//! RPC, a u16 length and that many bytes.
#![no_main]

use std::{marker::PhantomData, path::Path, sync::OnceLock};

use bytes::{BufMut, BytesMut};
use futures_util::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use ringlog_engine::{Backend, Config, Durability, Log, SimDisk};
use ringlog_service::{
    LogService,
    proto::{ConsumeRequest, ProduceRequest, log_server::Log as LogRpc},
};
use tonic::{
    Code, Request, Status, Streaming,
    codec::{DecodeBuf, Decoder},
};

/// What the server's codec does: prost, with a malformed message `INVALID_ARGUMENT`.
struct ProstDecoder<T>(PhantomData<T>);

impl<T: Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(buf).map(Some).map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

/// A client's mistake may be refused; nothing else may go wrong on a healthy disk.
fn check(status: &Status, what: &str) {
    assert!(
        matches!(status.code(), Code::InvalidArgument | Code::OutOfRange),
        "{what}: a client's request got {status:?}"
    );
}

/// Every record of a consume answer sits at the offsets asked for.
fn check_records(offset: u64, response: &ringlog_service::proto::ConsumeResponse, max_records: u64) {
    if max_records <= 1 {
        let record = response.record.as_ref().expect("one record in `record`");
        assert_eq!(record.offset, offset);
        assert!(response.records.is_empty(), "never both fields");
    } else {
        assert!(response.record.is_none(), "never both fields");
        assert!(!response.records.is_empty() && response.records.len() as u64 <= max_records);
        for (i, record) in response.records.iter().enumerate() {
            assert_eq!(record.offset, offset + i as u64);
        }
    }
}

async fn run(service: &LogService, log: &Log, rpc: u8, bytes: &[u8]) {
    match rpc % 4 {
        0 => {
            let Ok(request) = ProduceRequest::decode(bytes) else { return };
            let count = u64::from(request.record.is_some()) + request.records.len() as u64;
            let next = log.next_offset();
            match service.produce(Request::new(request)).await {
                Ok(response) => {
                    let response = response.into_inner();
                    assert_eq!((response.offset, response.count), (next, count));
                    assert_eq!(log.next_offset(), next + count);
                }
                Err(status) => {
                    check(&status, "produce");
                    assert_eq!(log.next_offset(), next, "a refused request writes nothing");
                }
            }
        }
        1 => {
            let Ok(request) = ConsumeRequest::decode(bytes) else { return };
            let (offset, max_records) = (request.offset, request.max_records);
            match service.consume(Request::new(request)).await {
                Ok(response) => check_records(offset, &response.into_inner(), max_records),
                Err(status) => check(&status, "consume"),
            }
        }
        2 => {
            let Ok(request) = ConsumeRequest::decode(bytes) else { return };
            let (mut offset, max_records) = (request.offset, request.max_records);
            let mut stream = match service.consume_stream(Request::new(request)).await {
                Ok(response) => response.into_inner(),
                Err(status) => return check(&status, "consume_stream"),
            };
            // Read until the stream would wait for new records.
            for _ in 0..8 {
                match stream.next().now_or_never() {
                    Some(Some(Ok(response))) => {
                        check_records(offset, &response, max_records);
                        offset += (response.records.len() as u64).max(1);
                    }
                    Some(Some(Err(status))) => return check(&status, "consume_stream"),
                    Some(None) | None => return,
                }
            }
        }
        _ => {
            // The bytes as a request body of gRPC frames: each message a u8 length and its
            // bytes; a length past the end takes what is left.
            let mut body = BytesMut::new();
            let mut rest = bytes;
            while let Some((&len, tail)) = rest.split_first() {
                let (message, after) = tail.split_at(usize::from(len).min(tail.len()));
                body.put_u8(0);
                body.put_u32(message.len() as u32);
                body.put_slice(message);
                rest = after;
            }
            let body = http_body_util::Full::new(body.freeze());
            let limit = ringlog_service::message_bytes_max(log.config().record_bytes_max);
            let requests =
                Streaming::new_request(ProstDecoder::<ProduceRequest>(PhantomData), body, None, Some(limit));
            let mut answers = match service.produce_stream(Request::new(requests)).await {
                Ok(response) => response.into_inner(),
                Err(status) => return check(&status, "produce_stream"),
            };
            let mut next = None;
            while let Some(answer) = answers.next().await {
                match answer {
                    Ok(answer) => {
                        if let Some(next) = next {
                            assert_eq!(answer.offset, next, "answers in request order");
                        }
                        next = Some(answer.offset + answer.count);
                    }
                    Err(status) => {
                        check(&status, "produce_stream");
                        break;
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, mut rest)) = data.split_first() else { return };
    let config = Config {
        store_bytes_max: 4096,
        index_bytes_max: 256,
        record_bytes_max: [1, 64, 1024][limit as usize % 3],
        durability: Durability::None,
        backend: Backend::Simulated(SimDisk::new()),
        ..Config::default()
    };
    let log = Log::open(Path::new("/fuzz"), config).unwrap();
    let service = LogService::standalone(log.clone());
    runtime().block_on(async {
        while let [rpc, a, b, tail @ ..] = rest {
            let len = (usize::from(u16::from_le_bytes([*a, *b]))).min(tail.len());
            let (message, after) = tail.split_at(len);
            run(&service, &log, *rpc, message).await;
            rest = after;
        }
    });
    log.close().unwrap();
});
