//! `ringlog produce` and `ringlog consume`: a small client for people and scripts.
//!
//! It routes as the book's resolver and picker do: it asks any server it can reach for
//! `GetServers`, produces to the leader and consumes from a follower. When the leader changes
//! (a produce answered `UNAVAILABLE`, a connection lost) it asks again and goes on: a produce
//! resends the values that had no answer yet (so one may be written twice: at-least-once),
//! a follow resumes from the next offset.

use std::{
    collections::VecDeque,
    io::{BufRead, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use base64::Engine as _;
use bytes::Bytes;
use ringlog_service::{
    message_bytes_max,
    proto::{ConsumeRequest, GetServersRequest, ProduceRequest, Record, log_client::LogClient},
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{
    Code, Status,
    transport::{Channel, ClientTlsConfig},
};
use tonic_types::StatusExt;

/// Where the server is.
#[derive(Clone, Debug, clap::Args)]
pub struct Connect {
    /// The server's address; for a cluster, any node's (several, comma-separated, are tried
    /// in turn for the first contact)
    #[arg(long, env = "RINGLOG_ADDR", default_value = "127.0.0.1:8400", value_name = "HOST:PORT[,...]")]
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

/// Which server of a cluster a command wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The leader (produce).
    Leader,
    /// A follower if there is one, else the leader (consume).
    Follower,
}

/// How long the client keeps trying to reach a server (or a leader) before it gives up.
const REACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the server `route` asks for, among those that the servers in `connect.addr`
/// list in GetServers (`host:port` or URLs, with message limits that fit any record; over
/// TLS (`https`) when it names a CA file). A server without GetServers (the book's own) or a
/// single node is used as it is. Retries for [`REACH_TIMEOUT`] while no server answers or no
/// leader is known.
pub(crate) async fn connect_routed(connect: &Connect, route: Route) -> anyhow::Result<Channel> {
    let tls = tls_of(connect)?;
    let started = Instant::now();
    loop {
        let mut failures = Vec::new();
        for addr in connect.addr.split(',').map(str::trim).filter(|addr| !addr.is_empty()) {
            match pick(addr, tls.clone(), route).await {
                Ok(client) => return Ok(client),
                Err(error) => failures.push(format!("{addr}: {error:#}")),
            }
        }
        if failures.is_empty() {
            anyhow::bail!("`--addr` names no server");
        }
        if started.elapsed() >= REACH_TIMEOUT {
            anyhow::bail!("no server to {route:?} after {REACH_TIMEOUT:?}: {}", failures.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client of the first server that `connect` names and that answers.
pub(crate) async fn connect_any(connect: &Connect) -> anyhow::Result<Channel> {
    let tls = tls_of(connect)?;
    let mut failures = Vec::new();
    for addr in connect.addr.split(',').map(str::trim).filter(|addr| !addr.is_empty()) {
        match connect_with(addr, tls.clone()).await {
            Ok(client) => return Ok(client),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    anyhow::bail!("no server answered: {}", failures.join("; "))
}

/// A client of the server at `addr`, with `connect`'s TLS settings.
pub(crate) async fn connect_one(connect: &Connect, addr: &str) -> anyhow::Result<Channel> {
    connect_with(addr, tls_of(connect)?).await
}

/// The TLS settings `connect` asks for.
fn tls_of(connect: &Connect) -> anyhow::Result<Option<ClientTlsConfig>> {
    let tls = match &connect.ca_file {
        Some(ca) => {
            let identity = connect.cert_file.as_deref().zip(connect.key_file.as_deref());
            Some(ringlog_service::tls::client_config(ca, identity)?)
        }
        None => None,
    };
    Ok(tls)
}

/// Asks the server at `addr` for the cluster's servers and connects to the one `route`
/// wants.
async fn pick(addr: &str, tls: Option<ClientTlsConfig>, route: Route) -> anyhow::Result<Channel> {
    let channel = connect_with(addr, tls.clone()).await?;
    let servers = match log_client(channel.clone()).get_servers(GetServersRequest {}).await {
        Ok(answer) => answer.into_inner().servers,
        // Unavailable: try another server. Anything else (the book's server has no
        // GetServers; a client without a certificate is refused every call) is this server's
        // answer to the real call too: make it there, so that its error is the one reported.
        Err(status) if retryable(&status) => return Err(describe(status)),
        Err(_) => return Ok(channel),
    };
    if servers.len() <= 1 {
        return Ok(channel);
    }
    let leader = servers.iter().filter(|server| server.is_leader);
    let candidates: Vec<_> = match route {
        Route::Leader => leader.collect(),
        // Followers first (any may be down), the leader last.
        Route::Follower => servers.iter().filter(|server| !server.is_leader).chain(leader).collect(),
    };
    if candidates.is_empty() {
        anyhow::bail!("no leader known yet");
    }
    let mut failures = Vec::new();
    for server in candidates {
        match connect_with(&server.rpc_addr, tls.clone()).await {
            Ok(channel) => return Ok(channel),
            Err(error) => failures.push(format!("node {} ({}): {error:#}", server.id, server.rpc_addr)),
        }
    }
    anyhow::bail!("{}", failures.join("; "))
}

async fn connect_with(addr: &str, tls: Option<ClientTlsConfig>) -> anyhow::Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
    let mut endpoint =
        Channel::from_shared(url.clone()).with_context(|| format!("`{addr}` is not a server address"))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).context("setting up TLS")?;
    }
    endpoint.tcp_nodelay(true).connect().await.with_context(|| format!("connecting to {url}"))
}

/// A log.v1 client on `channel`, with message limits that fit any record (the server
/// enforces the real limit).
pub(crate) fn log_client(channel: Channel) -> LogClient<Channel> {
    let limit = message_bytes_max(u32::MAX);
    LogClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit)
}

fn request(value: Bytes) -> ProduceRequest {
    ProduceRequest { record: Some(Record { value, ..Record::default() }), records: Vec::new() }
}

/// Appends every value over a pipelined ProduceStream to the leader and prints each
/// offset; when the stream fails as retryable, finds the leader again and resends what had
/// no answer.
pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let (tx, mut values) = mpsc::channel::<Bytes>(256);
    let ProduceArgs { connect, values: given } = args;
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        if given.is_empty() {
            // stdin is read on a thread of its own: it blocks.
            for line in std::io::stdin().lock().lines() {
                if tx.blocking_send(Bytes::from(line.context("reading stdin")?)).is_err() {
                    break; // the produce failed; its error is reported below
                }
            }
        } else {
            for value in given {
                if tx.blocking_send(Bytes::from(value)).is_err() {
                    break;
                }
            }
        }
        Ok(())
    });
    let mut out = std::io::stdout().lock();
    // Values sent and not answered yet, oldest first; resent to a new leader.
    let mut unanswered: VecDeque<Bytes> = VecDeque::new();
    let mut input_done = false;
    let mut outage: Option<Instant> = None;
    loop {
        let mut client = log_client(connect_routed(&connect, Route::Leader).await?);
        let (requests, stream) = mpsc::channel::<ProduceRequest>(256);
        for value in &unanswered {
            requests.send(request(value.clone())).await.expect("the stream is open");
        }
        let mut requests = (!input_done).then_some(requests);
        let failed = match client.produce_stream(ReceiverStream::new(stream)).await {
            Ok(answers) => {
                let mut answers = answers.into_inner();
                loop {
                    tokio::select! {
                        value = values.recv(), if requests.is_some() => match value {
                            Some(value) => {
                                unanswered.push_back(value.clone());
                                let _ = requests.as_ref().expect("open").send(request(value)).await;
                            }
                            None => {
                                input_done = true;
                                requests = None; // half-close: the stream ends once all is answered
                            }
                        },
                        answer = answers.next() => match answer {
                            Some(Ok(answer)) => {
                                outage = None;
                                for offset in answer.offset..answer.offset + answer.count.max(1) {
                                    unanswered.pop_front();
                                    writeln!(out, "{offset}")?;
                                }
                                out.flush()?;
                            }
                            Some(Err(status)) => break status,
                            None if input_done && unanswered.is_empty() => {
                                reader.join().map_err(|_| anyhow::anyhow!("the stdin reader panicked"))??;
                                return Ok(());
                            }
                            None => break Status::unavailable("the stream ended before every value was answered"),
                        },
                    }
                }
            }
            Err(status) => status,
        };
        if !retryable(&failed) {
            return Err(describe(failed));
        }
        let since = *outage.get_or_insert_with(Instant::now);
        if since.elapsed() >= REACH_TIMEOUT {
            return Err(describe(failed).context(format!("the leader was unreachable for {REACH_TIMEOUT:?}")));
        }
        eprintln!("ringlog: {}; finding the leader again", failed.message());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints records from `--from` on.
pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = log_client(connect_routed(&args.connect, Route::Follower).await?);
    let mut out = std::io::stdout().lock();
    let mut next = args.from;
    let mut left = args.count.unwrap_or(u64::MAX);
    const BATCH: u64 = 1000;
    if args.follow {
        // A server that goes away (UNAVAILABLE, or the stream cut) is replaced by another,
        // from the next offset.
        while left > 0 {
            let request = ConsumeRequest { offset: next, max_records: BATCH.min(left).max(2) };
            let status = match client.consume_stream(request).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.next().await {
                            Some(Ok(message)) => {
                                for record in message.records.into_iter().take(left as usize) {
                                    print_record(&mut out, &record, args.format)?;
                                    next = record.offset + 1;
                                    left -= 1;
                                }
                                out.flush()?;
                                if left == 0 {
                                    return Ok(());
                                }
                            }
                            Some(Err(status)) => break status,
                            None => break Status::unavailable("the server ended the stream"),
                        }
                    }
                }
                Err(status) => status,
            };
            if !retryable(&status) {
                return Err(describe(status));
            }
            eprintln!("ringlog: {}; following from offset {next} on another server", status.message());
            client = log_client(connect_routed(&args.connect, Route::Follower).await?);
        }
        return Ok(());
    }
    while left > 0 {
        let request = ConsumeRequest { offset: next, max_records: BATCH.min(left).max(2) };
        let records = match client.consume(request).await {
            Ok(response) => response.into_inner().records,
            Err(status) if ringlog_service::is_not_written(&status) => break,
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

/// Whether a failed call may succeed on another server or later: the server said so
/// (`UNAVAILABLE`), or the connection broke under the call (`UNKNOWN`, as a cut HTTP/2
/// stream surfaces).
fn retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown)
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
pub(crate) fn describe(status: Status) -> anyhow::Error {
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
