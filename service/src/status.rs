//! The one place where failures become gRPC statuses.
//!
//! | failure                                         | code                 |
//! |-------------------------------------------------|----------------------|
//! | offset below the lowest or not written yet      | `OUT_OF_RANGE`       |
//! | no record, record over the limit, malformed     | `INVALID_ARGUMENT`   |
//! | disk full                                       | `RESOURCE_EXHAUSTED` |
//! | log closed, poisoned, or the server stopping    | `UNAVAILABLE`        |
//! | no (usable) client certificate under mutual TLS | `UNAUTHENTICATED`    |
//! | the ACL does not allow the subject the action   | `PERMISSION_DENIED`  |
//! | anything else (IO error, corruption)            | `INTERNAL`           |
//!
//! `OUT_OF_RANGE` carries the book's message, `offset out of range: N`, a
//! `google.rpc.LocalizedMessage` (en-US) and a `google.rpc.ErrorInfo` whose metadata says
//! where the log's ends are, so a client can tell "not written yet" (it may wait) from
//! "dropped by retention" (it must skip ahead). `INVALID_ARGUMENT` carries a
//! `google.rpc.BadRequest` naming the field.

use std::collections::HashMap;

use ringlog_engine::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::acl::Action;

/// `ErrorInfo.domain` of every error the service reports.
pub const DOMAIN: &str = "ringlog";
/// `ErrorInfo.reason` of an offset outside the log.
pub const REASON_OUT_OF_RANGE: &str = "OFFSET_OUT_OF_RANGE";
/// The locale of `LocalizedMessage` details.
pub const LOCALE: &str = "en-US";

/// The status for an engine error.
pub fn from_engine(error: &Error) -> Status {
    match error {
        Error::OffsetNotWritten { offset, next } => out_of_range(*offset, "next", *next),
        Error::OffsetBelowLowest { offset, lowest } => out_of_range(*offset, "lowest", *lowest),
        Error::RecordTooLarge { len, max } => record_too_large("record.value", *len, *max),
        Error::EmptyBatch => missing_record(),
        Error::BatchTooLarge { .. } => invalid_argument("records", error.to_string()),
        Error::DiskFull { .. } | Error::OffsetsExhausted { .. } => {
            Status::resource_exhausted(error.to_string())
        }
        Error::Poisoned(_) | Error::Closed | Error::Truncated { .. } => {
            Status::unavailable(error.to_string())
        }
        // Bytes on disk are not what was written: the record is lost, not the server broken.
        Error::Corrupt { .. } => Status::data_loss(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

/// Whether `status` is `OUT_OF_RANGE` for an offset not written yet (its ErrorInfo names the
/// `next` offset), rather than one dropped below the lowest: a reader may wait for it.
pub fn is_not_written(status: &Status) -> bool {
    status.code() == Code::OutOfRange
        && status.get_details_error_info().is_some_and(|info| info.metadata.contains_key("next"))
}

/// `OUT_OF_RANGE` for `offset`, with the log's end that it fell off (`"lowest"` or `"next"`).
fn out_of_range(offset: u64, end_name: &str, end: u64) -> Status {
    let mut details = ErrorDetails::new();
    details
        .set_localized_message(LOCALE, format!("The requested offset is outside the log's range: {offset}"));
    details.set_error_info(
        REASON_OUT_OF_RANGE,
        DOMAIN,
        HashMap::from([("offset".to_owned(), offset.to_string()), (end_name.to_owned(), end.to_string())]),
    );
    Status::with_error_details(Code::OutOfRange, format!("offset out of range: {offset}"), details)
}

/// `INVALID_ARGUMENT`: a produce request holds no record.
pub fn missing_record() -> Status {
    invalid_argument("record", "request has no record: set `record` (or `records`)")
}

/// `INVALID_ARGUMENT`: the value of `field` is over the record size limit.
pub fn record_too_large(field: &str, len: usize, max: u32) -> Status {
    invalid_argument(
        field,
        format!("{field} is {len} bytes, over the limit of {max} bytes; nothing was written"),
    )
}

/// `INVALID_ARGUMENT`: a message that does not decode as protobuf.
pub fn malformed(error: prost::DecodeError) -> Status {
    invalid_argument("", format!("malformed message: {error}"))
}

fn invalid_argument(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, description.clone());
    Status::with_error_details(Code::InvalidArgument, description, details)
}

/// `UNAVAILABLE`: the server is shutting down (ends streams so that clients reconnect).
pub fn shutting_down() -> Status {
    Status::unavailable("server is shutting down")
}

/// `UNAUTHENTICATED`: the caller did not prove who it is (`reason` says how).
pub fn unauthenticated(reason: &str) -> Status {
    Status::unauthenticated(reason)
}

/// `PERMISSION_DENIED`: `<subject> not permitted to <action>`.
pub fn permission_denied(subject: &str, action: Action) -> Status {
    Status::permission_denied(format!("{subject} not permitted to {action}"))
}

#[cfg(test)]
mod tests {
    use std::{io, sync::Arc};

    use super::*;

    #[test]
    fn offsets_outside_the_log_are_out_of_range_with_details() {
        for (error, end) in [
            (Error::OffsetNotWritten { offset: 7, next: 7 }, ("next", "7")),
            (Error::OffsetBelowLowest { offset: 7, lowest: 9 }, ("lowest", "9")),
        ] {
            let status = from_engine(&error);
            assert_eq!(status.code(), Code::OutOfRange);
            assert_eq!(status.message(), "offset out of range: 7");
            let localized = status.get_details_localized_message().expect("localized message");
            assert_eq!(localized.locale, "en-US");
            assert!(localized.message.contains('7'));
            let info = status.get_details_error_info().expect("error info");
            assert_eq!(info.reason, REASON_OUT_OF_RANGE);
            assert_eq!(info.metadata.get(end.0).map(String::as_str), Some(end.1));
        }
    }

    #[test]
    fn every_engine_error_has_its_code() {
        let io = || io::Error::other("boom");
        let cases = [
            (Error::RecordTooLarge { len: 10, max: 5 }, Code::InvalidArgument),
            (Error::EmptyBatch, Code::InvalidArgument),
            (
                Error::BatchTooLarge { records: 9, bytes: 900, records_max: 3, bytes_max: 300 },
                Code::InvalidArgument,
            ),
            (Error::OffsetsExhausted { next: 5, limit: 5 }, Code::ResourceExhausted),
            (Error::DiskFull { path: "s".into(), source: io() }, Code::ResourceExhausted),
            (Error::Poisoned(Arc::from("bad sync")), Code::Unavailable),
            (Error::Closed, Code::Unavailable),
            (Error::Io { context: "reading x".into(), source: io() }, Code::Internal),
            (Error::Corrupt { path: "s".into(), position: 3, reason: "crc".into() }, Code::DataLoss),
            (Error::Truncated { index: 4 }, Code::Unavailable),
        ];
        for (error, code) in cases {
            let status = from_engine(&error);
            assert_eq!(status.code(), code, "{error}");
            if code == Code::InvalidArgument {
                assert!(status.get_details_bad_request().is_some(), "{error}");
            } else {
                assert_eq!(status.message(), error.to_string(), "the reason is passed on");
            }
        }
    }
}
