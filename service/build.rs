//! Generates the log.v1 server and client from `proto/log/v1/log.proto`, and the cluster
//! administration's from `proto/admin/v1/admin.proto`, with protox (a pure-Rust protobuf
//! compiler, so no system `protoc` is needed), and writes the file descriptor set that
//! server reflection serves.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let protos = [root.join("log/v1/log.proto"), root.join("admin/v1/admin.proto")];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let fds = protox::compile(&protos, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("ringlog_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .codec_path("crate::codec::Codec")
        .bytes(".")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
