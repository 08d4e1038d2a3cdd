//! `ringlog`: serve a log over gRPC, or talk to one.
//!
//! `ringlog serve` runs the server; `ringlog produce` and `ringlog consume` are a small
//! client for people and scripts; `ringlog cluster` shows and changes a cluster;
//! `ringlog certs` makes certificates for trying TLS. The
//! load generator is a binary of its own (`ringlog-bench`, in `benches/loadgen`). See
//! `ringlog --help`.

#![forbid(unsafe_code)]

mod cli;
mod client;
mod cluster_commands;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (command, matches) = match cli::parse() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    match cli::run(command, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringlog: {error:#}");
            ExitCode::FAILURE
        }
    }
}
