//! The generated `log.v1` messages, client and server (from `proto/log/v1/log.proto`), the
//! cluster administration's ([`admin`], from `proto/admin/v1/admin.proto`), and the encoded
//! file descriptor set of both that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("log.v1");

/// `ringlog.admin.v1`: `ringlog cluster status|add|remove`.
pub mod admin {
    tonic::include_proto!("ringlog.admin.v1");
}

/// The encoded `FileDescriptorSet` of `log.v1` and `ringlog.admin.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ringlog_descriptor");
