//! `ringlog produce` and `ringlog consume`: a small client for people and scripts.

use std::{
    io::{BufRead, Write},
    path::PathBuf,
};

use anyhow::Context;
use base64::Engine as _;
use bytes::Bytes;
use ringlog_service::{
    message_bytes_max,
    proto::{ConsumeRequest, ProduceRequest, Record, log_client::LogClient},
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{
    Code, Status,
    transport::{Channel, ClientTlsConfig},
};
use tonic_types::StatusExt;

/// Where the server is.
#[derive(Debug, clap::Args)]
pub struct Connect {
    /// The server's address
    #[arg(long, env = "RINGLOG_ADDR", default_value = "127.0.0.1:8400", value_name = "HOST:PORT")]
    pub(crate) addr: String,
    /// Connect with TLS, trusting server certificates signed by this CA (PEM)
    #[arg(long, env = "RINGLOG_CA_FILE", value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Mutual TLS: this client certificate (PEM); needs `--key-file` and `--ca-file`
    #[arg(long, env = "RINGLOG_CERT_FILE", value_name = "FILE", requires_all = ["key_file", "ca_file"])]
    pub(crate) cert_file: Option<PathBuf>,
    /// The private key (PEM) of `--cert-file`
    #[arg(long, env = "RINGLOG_KEY_FILE", value_name = "FILE", requires = "cert_file")]
    pub(crate) key_file: Option<PathBuf>,
}

/// Arguments of `ringlog produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    connect: Connect,
    /// Values to append; without any, each line of stdin is one value
    values: Vec<String>,
}

/// Arguments of `ringlog consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    connect: Connect,
    /// The first offset to print
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Stop after this many records
    #[arg(long)]
    count: Option<u64>,
    /// At the end of the log, wait for new records instead of stopping
    #[arg(long)]
    follow: bool,
    /// How values are printed
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// How `consume` prints a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// UTF-8, with control characters and invalid bytes escaped (one line per record)
    Text,
    /// Standard base64
    Base64,
    /// The bytes as they are
    Raw,
}

/// Connects as `connect` says (`host:port` or a URL, with message limits that fit any
/// record): over TLS (`https`) when it names a CA file.
pub async fn connect_to(connect: &Connect) -> anyhow::Result<LogClient<Channel>> {
    let tls = match &connect.ca_file {
        Some(ca) => {
            let identity = connect.cert_file.as_deref().zip(connect.key_file.as_deref());
            Some(ringlog_service::tls::client_config(ca, identity)?)
        }
        None => None,
    };
    connect_with(&connect.addr, tls).await
}

async fn connect_with(addr: &str, tls: Option<ClientTlsConfig>) -> anyhow::Result<LogClient<Channel>> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
    let mut endpoint =
        Channel::from_shared(url.clone()).with_context(|| format!("`{addr}` is not a server address"))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).context("setting up TLS")?;
    }
    let channel =
        endpoint.tcp_nodelay(true).connect().await.with_context(|| format!("connecting to {url}"))?;
    // The server enforces the real record limit; accept whatever it can send.
    let limit = message_bytes_max(u32::MAX);
    Ok(LogClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit))
}

fn request(value: Bytes) -> ProduceRequest {
    ProduceRequest { record: Some(Record { value, ..Record::default() }), records: Vec::new() }
}

/// Appends every value over one pipelined ProduceStream and prints each offset.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let mut client = connect_to(&args.connect).await?;
    let (tx, rx) = mpsc::channel::<ProduceRequest>(256);
    let sender = if args.values.is_empty() {
        // stdin is read on a thread of its own: it blocks.
        std::thread::spawn(move || -> anyhow::Result<()> {
            for line in std::io::stdin().lock().lines() {
                let line = line.context("reading stdin")?;
                if tx.blocking_send(request(Bytes::from(line))).is_err() {
                    break; // the stream failed; its status is reported below
                }
            }
            Ok(())
        })
    } else {
        let values = args.values;
        std::thread::spawn(move || -> anyhow::Result<()> {
            for value in values {
                if tx.blocking_send(request(Bytes::from(value))).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };
    let mut answers = client.produce_stream(ReceiverStream::new(rx)).await.map_err(describe)?.into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(answer) = answers.next().await {
        let answer = answer.map_err(describe)?;
        for offset in answer.offset..answer.offset + answer.count.max(1) {
            writeln!(out, "{offset}")?;
        }
        out.flush()?;
    }
    sender.join().map_err(|_| anyhow::anyhow!("the stdin reader panicked"))??;
    Ok(())
}

/// Prints records from `--from` on.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = connect_to(&args.connect).await?;
    let mut out = std::io::stdout().lock();
    let mut next = args.from;
    let mut left = args.count.unwrap_or(u64::MAX);
    const BATCH: u64 = 1000;
    if args.follow {
        let request = ConsumeRequest { offset: next, max_records: BATCH.min(left).max(2) };
        let mut stream = client.consume_stream(request).await.map_err(describe)?.into_inner();
        while left > 0 {
            let Some(message) = stream.next().await else { break };
            for record in message.map_err(describe)?.records.into_iter().take(left as usize) {
                print_record(&mut out, &record, args.format)?;
                left -= 1;
            }
            out.flush()?;
        }
        return Ok(());
    }
    while left > 0 {
        let request = ConsumeRequest { offset: next, max_records: BATCH.min(left).max(2) };
        let records = match client.consume(request).await {
            Ok(response) => response.into_inner().records,
            Err(status) if reached_end(&status) => break,
            Err(status) => return Err(describe(status)),
        };
        for record in records.into_iter().take(left as usize) {
            print_record(&mut out, &record, args.format)?;
            next = record.offset + 1;
            left -= 1;
        }
    }
    out.flush()?;
    Ok(())
}

/// Whether an error says the offset is not written yet (rather than dropped).
fn reached_end(status: &Status) -> bool {
    status.code() == Code::OutOfRange
        && status.get_details_error_info().is_some_and(|info| info.metadata.contains_key("next"))
}

fn print_record(out: &mut impl Write, record: &Record, format: Format) -> std::io::Result<()> {
    write!(out, "{}\t", record.offset)?;
    match format {
        Format::Text => write!(out, "{}", escape(&record.value))?,
        Format::Base64 => write!(out, "{}", base64::engine::general_purpose::STANDARD.encode(&record.value))?,
        Format::Raw => out.write_all(&record.value)?,
    }
    writeln!(out)
}

/// UTF-8 text with control characters and backslashes escaped, invalid bytes as `\xNN`.
fn escape(value: &[u8]) -> String {
    let mut text = String::with_capacity(value.len());
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                text.extend(c.escape_default());
            } else {
                text.push(c);
            }
        }
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

/// A status as an error line: its code and message, and where the log starts when the
/// offset was dropped by retention.
fn describe(status: Status) -> anyhow::Error {
    let lowest = (status.code() == Code::OutOfRange)
        .then(|| status.get_details_error_info())
        .flatten()
        .and_then(|info| info.metadata.get("lowest").cloned());
    match lowest {
        Some(lowest) => anyhow::anyhow!("{} (the lowest retained offset is {lowest})", status.message()),
        None => anyhow::anyhow!("{:?}: {}", status.code(), status.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_stay_on_one_line() {
        assert_eq!(escape(b"plain text"), "plain text");
        assert_eq!(escape("tab\there\nnewline é".as_bytes()), "tab\\there\\nnewline é");
        assert_eq!(escape(b"bad \xff byte"), "bad \\xff byte");
    }
}
