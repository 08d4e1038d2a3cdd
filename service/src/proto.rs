//! The generated `log.v1` messages, client and server (from `proto/log/v1/log.proto`), and
//! the encoded file descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("log.v1");

/// The encoded `FileDescriptorSet` of `log.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("log_v1_descriptor");
