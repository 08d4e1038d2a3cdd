//! Generates the internal Raft transport (`raft.v1.Raft`, server and client) from
//! `proto/raft/v1/raft.proto` with protox (a pure-Rust protobuf compiler, so no system `protoc`
//! is needed), as `service/build.rs` does for log.v1.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let proto = root.join("raft/v1/raft.proto");
    println!("cargo:rerun-if-changed={}", proto.display());

    let fds = protox::compile([&proto], [&root])?;
    tonic_prost_build::configure()
        // Payloads are handed to the codec as `Bytes`, so record values are sliced, not copied.
        .bytes(".")
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
