//! Settings of `ringlog serve`: command-line flags, `RINGLOG_*` environment variables and an
//! optional TOML file, in that order of precedence, over built-in defaults.
//!
//! [`Settings`] is the one list of them. clap reads the flags and the environment and holds
//! the defaults; serde reads the file; so a new setting is one field. The file uses the
//! flags' names as keys:
//!
//! ```toml
//! addr = "127.0.0.1:8400"
//! data-dir = "/var/lib/ringlog"
//! durability = "always"
//! max-record-bytes = 1048576
//! tls-cert-file = "certs/server.pem"
//! tls-key-file = "certs/server-key.pem"
//! tls-client-ca-file = "certs/ca.pem"
//! acl-file = "acl.csv"
//! metrics-addr = "127.0.0.1:9400"
//! ```
//!
//! Every error names the setting it is about and fits on one line.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use clap::{ArgMatches, CommandFactory as _, ValueEnum, parser::ValueSource};
use ringlog_engine::{Backend, Config, Durability, OnCorruption};
use serde::{Deserialize, Serialize};

use crate::ServerLimits;

/// When appends are acknowledged relative to `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    /// When written to the page cache (a process crash loses nothing; a power loss may).
    None,
    /// When written; `fdatasync` in the background every `sync-interval-ms` or `sync-bytes`.
    Interval,
    /// After an `fdatasync` that covers the record (group commit).
    Always,
}

/// The engine's append backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// io_uring where the kernel allows it, otherwise pwrite.
    Auto,
    /// io_uring, or fail to start.
    IoUring,
    /// Plain pwrite(2).
    Pwrite,
}

/// What opening the log does with corruption inside a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptionMode {
    /// Refuse to start, naming the file and byte position.
    Fail,
    /// Cut the log at the first corrupt record.
    Truncate,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One human-readable line per event (coloured on a terminal).
    Pretty,
    /// One JSON object per line, with the span's fields.
    Json,
}

/// A length of time as people write it: `7d`, `12h`, `90s`, `1h 30m` (humantime's format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Age(pub Duration);

impl FromStr for Age {
    type Err = String;

    fn from_str(text: &str) -> Result<Age, String> {
        humantime::parse_duration(text)
            .map(Age)
            .map_err(|e| format!("`{text}` is not a duration such as 7d, 12h or 30m ({e})"))
    }
}

impl TryFrom<String> for Age {
    type Error = String;

    fn try_from(text: String) -> Result<Age, String> {
        text.parse()
    }
}

impl From<Age> for String {
    fn from(age: Age) -> String {
        age.to_string()
    }
}

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Every setting of `ringlog serve`. Flags and environment variables are clap's; the
/// `--config` file layers under them with [`Settings::with_file`]; [`Settings::check`] says
/// whether they can work together.
#[derive(Clone, Debug, PartialEq, Eq, clap::Parser, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on
    #[arg(long, env = "RINGLOG_ADDR", value_name = "HOST:PORT", default_value = "127.0.0.1:8400")]
    pub addr: SocketAddr,
    /// Directory of the log's segments
    #[arg(long, env = "RINGLOG_DATA_DIR", value_name = "DIR", default_value = "./ringlog-data")]
    pub data_dir: PathBuf,
    /// When appends are acknowledged
    #[arg(long, env = "RINGLOG_DURABILITY", value_enum, default_value_t = DurabilityMode::Interval)]
    pub durability: DurabilityMode,
    /// With `--durability interval`: longest time between syncs
    #[arg(long, env = "RINGLOG_SYNC_INTERVAL_MS", value_name = "MS", default_value_t = 100)]
    pub sync_interval_ms: u64,
    /// With `--durability interval`: sync after this many unsynced bytes
    #[arg(long, env = "RINGLOG_SYNC_BYTES", value_name = "BYTES", default_value_t = 4 << 20)]
    pub sync_bytes: u64,
    /// With `--durability none` or `interval`: start writing appended data to the disk each
    /// time this many more bytes are written, so that a sync has little left to wait for (0:
    /// leave it to the kernel)
    #[arg(long, env = "RINGLOG_WRITEBACK_BYTES", value_name = "BYTES",
          default_value_t = Config::default().writeback_bytes)]
    pub writeback_bytes: u64,
    /// Append backend
    #[arg(long, env = "RINGLOG_BACKEND", value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// Largest store file of a segment; the segment rolls when full
    #[arg(long, env = "RINGLOG_SEGMENT_BYTES", value_name = "BYTES",
          default_value_t = Config::default().store_bytes_max)]
    pub segment_bytes: u64,
    /// Largest index file of a segment (8 bytes per record)
    #[arg(long, env = "RINGLOG_INDEX_BYTES", value_name = "BYTES",
          default_value_t = Config::default().index_bytes_max)]
    pub index_bytes: u64,
    /// Largest record value accepted; the gRPC message limit follows it
    #[arg(long, env = "RINGLOG_MAX_RECORD_BYTES", value_name = "BYTES",
          default_value_t = Config::default().record_bytes_max)]
    pub max_record_bytes: u32,
    /// What opening the log does with corruption in a sealed segment
    #[arg(long, env = "RINGLOG_ON_CORRUPTION", value_enum, default_value_t = CorruptionMode::Fail)]
    pub on_corruption: CorruptionMode,
    /// Delete the oldest segments while the log's files hold more than this [default: keep
    /// everything]
    #[arg(long, env = "RINGLOG_RETENTION_BYTES", value_name = "BYTES")]
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this, e.g. `7d` or `12h` [default:
    /// keep everything]
    #[arg(long, env = "RINGLOG_RETENTION_AGE", value_name = "AGE")]
    pub retention_age: Option<Age>,
    /// Seal the active segment once its oldest record is this old, so that a quiet log still
    /// ages out [default: `retention-age`]
    #[arg(long, env = "RINGLOG_SEGMENT_AGE", value_name = "AGE")]
    pub segment_age: Option<Age>,
    /// How often retention runs
    #[arg(long, env = "RINGLOG_RETENTION_CHECK_INTERVAL", value_name = "AGE", default_value = "30s")]
    pub retention_check_interval: Age,
    /// Log filter, e.g. `info` or `ringlog_service=debug,info` [default: `RUST_LOG`, else `info,openraft=warn`]
    #[arg(long, env = "RINGLOG_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format
    #[arg(long, env = "RINGLOG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Serve TLS with this certificate (PEM, chain allowed); needs `--tls-key-file`
    #[arg(long, env = "RINGLOG_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert-file`
    #[arg(long, env = "RINGLOG_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Mutual TLS: require client certificates signed by this CA (PEM)
    #[arg(long, env = "RINGLOG_TLS_CLIENT_CA_FILE", value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Authorize produce and consume by this policy (lines of `subject, action`)
    #[arg(long, env = "RINGLOG_ACL_FILE", value_name = "FILE")]
    pub acl_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: off]
    #[arg(long, env = "RINGLOG_METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Most connections open at a time; more wait in the listen backlog (lowered at start to
    /// what `ulimit -n` leaves room for)
    #[arg(long, env = "RINGLOG_MAX_CONNECTIONS", value_name = "N",
          default_value_t = ServerLimits::default().max_connections)]
    pub max_connections: usize,
    /// Most concurrent calls (HTTP/2 streams) on one connection
    #[arg(long, env = "RINGLOG_MAX_STREAMS_PER_CONNECTION", value_name = "N",
          default_value_t = ServerLimits::default().max_streams_per_connection)]
    pub max_streams_per_connection: u32,
    /// HTTP/2 receive window of one call: what a client may send before the server reads it
    #[arg(long, env = "RINGLOG_STREAM_WINDOW_BYTES", value_name = "BYTES",
          default_value_t = ServerLimits::default().stream_window_bytes)]
    pub stream_window_bytes: u32,
    /// HTTP/2 receive window of one connection, shared by its calls
    #[arg(long, env = "RINGLOG_CONNECTION_WINDOW_BYTES", value_name = "BYTES",
          default_value_t = ServerLimits::default().connection_window_bytes)]
    pub connection_window_bytes: u32,
    /// How often an HTTP/2 PING checks each connection's peer; 0: never
    #[arg(long, env = "RINGLOG_HTTP2_KEEPALIVE_INTERVAL_MS", value_name = "MS", default_value_t = 30_000)]
    pub http2_keepalive_interval_ms: u64,
    /// How long a PING may go unanswered before the connection (and its calls) is dropped
    #[arg(long, env = "RINGLOG_HTTP2_KEEPALIVE_TIMEOUT_MS", value_name = "MS", default_value_t = 20_000)]
    pub http2_keepalive_timeout_ms: u64,
    /// Idle time before TCP keepalive probes (every 10 s, 3 unanswered close); 0: none
    #[arg(long, env = "RINGLOG_TCP_KEEPALIVE_MS", value_name = "MS", default_value_t = 60_000)]
    pub tcp_keepalive_ms: u64,
    /// Most value bytes one ProduceStream may have appended but not yet answered
    #[arg(long, env = "RINGLOG_PRODUCE_IN_FLIGHT_BYTES", value_name = "BYTES",
          default_value_t = ServerLimits::default().produce_in_flight_bytes)]
    pub produce_in_flight_bytes: usize,
    /// This node's id (in `--peers`; a single node reports it in GetServers) [default: 1]
    #[arg(long, env = "RINGLOG_NODE_ID", value_name = "ID")]
    pub node_id: Option<u64>,
    /// Run as a node of a cluster whose first voters are these (`ID=HOST:PORT,...`, the
    /// addresses peers and clients dial); without it, a single node
    #[arg(long, env = "RINGLOG_PEERS", value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,
    /// The address clients dial for this node, when not its address in `--peers` (or, for a
    /// single node, its listen address)
    #[arg(long, env = "RINGLOG_ADVERTISE_ADDR", value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,
    /// Cluster: how often the leader sends heartbeats; also the deadline of one replication
    /// call, so it must cover a follower's fdatasync
    #[arg(long, env = "RINGLOG_RAFT_HEARTBEAT_MS", value_name = "MS", default_value_t = 250)]
    pub raft_heartbeat_ms: u64,
    /// Cluster: a follower that hears no leader for between this and twice this starts an
    /// election
    #[arg(long, env = "RINGLOG_RAFT_ELECTION_TIMEOUT_MS", value_name = "MS", default_value_t = 1000)]
    pub raft_election_timeout_ms: u64,
}

/// What `--peers` and the Raft settings make: this node's place in its cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// This node's id.
    pub node_id: u64,
    /// Every first voter's address (what peers and clients dial), by id.
    pub peers: std::collections::BTreeMap<u64, String>,
    /// openraft's and the engine's settings.
    pub config: ringlog_cluster::ClusterConfig,
}

/// The files of the server's TLS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA of client certificates (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting has a bad value.
    #[error("invalid setting `{setting}`: {reason}")]
    Invalid {
        /// The setting's name (as a flag and a file key).
        setting: String,
        /// What is wrong.
        reason: String,
    },
    /// The config file cannot be read or parsed.
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting: setting.to_owned(), reason: reason.into() }
}

impl Settings {
    /// Puts the TOML file at `path` under these settings: each key of the file sets its
    /// setting unless `given` (the matches these settings were parsed from) says a flag or
    /// an environment variable set it.
    pub fn with_file(self, path: &Path, given: &ArgMatches) -> Result<Settings, ConfigError> {
        let file_error = |reason: String| ConfigError::File { path: path.to_owned(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let file = parse_toml(&text).map_err(file_error)?;
        let mut merged = toml::Table::try_from(&self)
            .map_err(|e| file_error(format!("cannot be merged with the flags and environment: {e}")))?;
        let command = Settings::command();
        for (key, value) in file {
            let Some(arg) = command.get_arguments().find(|arg| arg.get_long() == Some(key.as_str())) else {
                return Err(invalid(&key, "unknown setting"));
            };
            let source = given.value_source(arg.get_id().as_str());
            if matches!(source, Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                continue;
            }
            let found = value.to_string();
            merged.insert(key.clone(), value);
            // One key at a time, so that an error names its setting.
            toml::Value::Table(merged.clone())
                .try_into::<Settings>()
                .map_err(|e| invalid(&key, format!("{} (found {found})", e.message().replace('\n', " "))))?;
        }
        Ok(toml::Value::Table(merged).try_into().expect("every key was checked"))
    }

    /// Checks that the settings can work together.
    pub fn check(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file, &self.tls_client_ca_file) {
            (Some(_), None, _) => return Err(invalid("tls-key-file", "is needed with tls-cert-file")),
            (None, Some(_), _) => return Err(invalid("tls-cert-file", "is needed with tls-key-file")),
            (None, None, Some(_)) => {
                return Err(invalid(
                    "tls-client-ca-file",
                    "needs tls-cert-file and tls-key-file (mutual TLS is TLS)",
                ));
            }
            _ => {}
        }
        if self.max_record_bytes == 0 {
            return Err(invalid("max-record-bytes", "must be at least 1"));
        }
        if self.durability == DurabilityMode::Interval {
            if self.sync_interval_ms == 0 {
                return Err(invalid("sync-interval-ms", "must be at least 1"));
            }
            if self.sync_bytes == 0 {
                return Err(invalid("sync-bytes", "must be at least 1"));
            }
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return Err(invalid("segment-bytes", format!("{} is over {}", self.segment_bytes, u32::MAX)));
        }
        // Room for one record of the largest size plus the store's and the frame's headers.
        let needed = u64::from(self.max_record_bytes) + 1024;
        if self.segment_bytes < needed {
            return Err(invalid(
                "segment-bytes",
                format!(
                    "{} cannot hold one record of max-record-bytes {} (needs at least {needed})",
                    self.segment_bytes, self.max_record_bytes
                ),
            ));
        }
        if self.index_bytes < 1024 {
            return Err(invalid("index-bytes", format!("{} is below the minimum of 1024", self.index_bytes)));
        }
        if self.retention_check_interval.0.is_zero() {
            return Err(invalid("retention-check-interval", "must be longer than 0s"));
        }
        for (setting, value) in [
            ("max-connections", self.max_connections as u64),
            ("max-streams-per-connection", u64::from(self.max_streams_per_connection)),
            ("produce-in-flight-bytes", self.produce_in_flight_bytes as u64),
        ] {
            if value == 0 {
                return Err(invalid(setting, "must be at least 1"));
            }
        }
        // HTTP/2 windows: at least the protocol's initial 65535, at most 2^31 - 1 (RFC 9113).
        for (setting, value) in [
            ("stream-window-bytes", self.stream_window_bytes),
            ("connection-window-bytes", self.connection_window_bytes),
        ] {
            if !(65_535..=(1 << 31) - 1).contains(&value) {
                return Err(invalid(setting, format!("{value} is not between 65535 and 2147483647")));
            }
        }
        if self.http2_keepalive_interval_ms > 0 && self.http2_keepalive_timeout_ms == 0 {
            return Err(invalid(
                "http2-keepalive-timeout-ms",
                "must be at least 1 with http2-keepalive-interval-ms",
            ));
        }
        self.cluster()?;
        Ok(())
    }

    /// What retention deletes and how often, `None` when nothing is set (the log is kept
    /// whole).
    pub fn retention(&self) -> Option<crate::retention::RetentionPolicy> {
        let segment_age = self.segment_age.or(self.retention_age).map(|age| age.0);
        if self.retention_bytes.is_none() && self.retention_age.is_none() && segment_age.is_none() {
            return None;
        }
        Some(crate::retention::RetentionPolicy {
            max_bytes: self.retention_bytes,
            max_age: self.retention_age.map(|age| age.0),
            segment_age,
            check_every: self.retention_check_interval.0,
        })
    }

    /// This node's cluster settings, `None` for a single node (no `--peers`).
    pub fn cluster(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let Some(text) = &self.peers else { return Ok(None) };
        let peers = parse_peers(text).map_err(|reason| invalid("peers", reason))?;
        let node_id = self.node_id.ok_or_else(|| invalid("node-id", "is needed with peers"))?;
        if !peers.contains_key(&node_id) {
            let ids: Vec<String> = peers.keys().map(u64::to_string).collect();
            return Err(invalid("node-id", format!("{node_id} is not in peers ({})", ids.join(", "))));
        }
        if self.tls_cert_file.is_some() && self.tls_client_ca_file.is_none() {
            // Nodes know each other by their certificates: a node dials its peers with its own.
            return Err(invalid(
                "tls-client-ca-file",
                "is needed for a cluster with TLS: nodes authenticate each other by certificate (mutual TLS)",
            ));
        }
        let config = ringlog_cluster::ClusterConfig {
            heartbeat_interval_ms: self.raft_heartbeat_ms,
            election_timeout_min_ms: self.raft_election_timeout_ms,
            election_timeout_max_ms: self.raft_election_timeout_ms.saturating_mul(2),
            engine: self.engine_config(),
            ..ringlog_cluster::ClusterConfig::default()
        };
        config.raft_config().map_err(|e| invalid("raft-election-timeout-ms", e.to_string()))?;
        Ok(Some(ClusterSettings { node_id, peers, config }))
    }

    /// The server's TLS files, when it serves TLS (after [`Settings::check`], the certificate
    /// and key come together).
    pub fn tls(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            client_ca: self.tls_client_ca_file.clone(),
        })
    }

    /// The server's limits these settings ask for.
    pub fn server_limits(&self) -> ServerLimits {
        let millis = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        ServerLimits {
            max_connections: self.max_connections,
            max_streams_per_connection: self.max_streams_per_connection,
            stream_window_bytes: self.stream_window_bytes,
            connection_window_bytes: self.connection_window_bytes,
            http2_keepalive_interval: millis(self.http2_keepalive_interval_ms),
            http2_keepalive_timeout: Duration::from_millis(self.http2_keepalive_timeout_ms),
            tcp_keepalive: millis(self.tcp_keepalive_ms),
            produce_in_flight_bytes: self.produce_in_flight_bytes,
        }
    }

    /// The tracing filter: `log-level`, else `RUST_LOG`, else `info` (with openraft at
    /// `warn`: at `info` it logs its whole state at every start and every election).
    pub fn log_filter(&self) -> String {
        self.log_level
            .clone()
            .or_else(|| std::env::var("RUST_LOG").ok().filter(|filter| !filter.is_empty()))
            .unwrap_or_else(|| "info,openraft=warn".to_owned())
    }

    /// The engine configuration these settings ask for.
    pub fn engine_config(&self) -> Config {
        Config {
            store_bytes_max: self.segment_bytes,
            index_bytes_max: self.index_bytes,
            record_bytes_max: self.max_record_bytes,
            durability: match self.durability {
                DurabilityMode::None => Durability::None,
                DurabilityMode::Interval => {
                    Durability::Interval { interval_ms: self.sync_interval_ms, bytes: self.sync_bytes }
                }
                DurabilityMode::Always => Durability::Always,
            },
            backend: match self.backend {
                BackendKind::Auto => Backend::Auto,
                BackendKind::IoUring => Backend::IoUring,
                BackendKind::Pwrite => Backend::Pwrite,
            },
            on_corruption: match self.on_corruption {
                CorruptionMode::Fail => OnCorruption::Fail,
                CorruptionMode::Truncate => OnCorruption::Truncate,
            },
            writeback_bytes: self.writeback_bytes,
            ..Config::default()
        }
    }
}

/// Parses `ID=HOST:PORT,...`.
fn parse_peers(text: &str) -> Result<std::collections::BTreeMap<u64, String>, String> {
    let mut peers = std::collections::BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("`{part}` is not ID=HOST:PORT"))?;
        let id: u64 =
            id.trim().parse().map_err(|_| format!("`{id}` in `{part}` is not a node id (a number)"))?;
        let addr = addr.trim();
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("`{addr}` has no :PORT"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("`{addr}` is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".into());
    }
    Ok(peers)
}

/// Parses TOML text into a table; the error says on which line.
fn parse_toml(text: &str) -> Result<toml::Table, String> {
    text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|span| text[..span.start].lines().count().max(1));
        let reason = e.message().replace('\n', " ");
        match line {
            Some(line) => format!("line {line}: {reason}"),
            None => reason,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::{FromArgMatches as _, Parser as _};

    use super::*;

    /// The settings of `flags` (and this process's environment) over a file of `text`.
    fn layered(flags: &[&str], text: &str) -> Result<Settings, ConfigError> {
        let matches = Settings::command()
            .try_get_matches_from(std::iter::once("serve").chain(flags.iter().copied()))
            .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let settings = Settings::from_arg_matches(&matches).unwrap().with_file(file.path(), &matches)?;
        settings.check()?;
        Ok(settings)
    }

    fn file(text: &str) -> Result<Settings, ConfigError> {
        layered(&[], text)
    }

    #[test]
    fn defaults_need_no_settings() {
        let settings = Settings::parse_from(["serve"]);
        settings.check().unwrap();
        assert_eq!(settings.addr.to_string(), "127.0.0.1:8400");
        assert_eq!(settings.data_dir, PathBuf::from("./ringlog-data"));
        assert_eq!(settings.max_record_bytes, 1 << 20);
        assert_eq!(settings.durability, DurabilityMode::Interval);
        assert_eq!(settings.tls(), None);
    }

    #[test]
    fn server_limits_default_to_the_servers_and_are_checked() {
        let settings = Settings::parse_from(["serve"]);
        assert_eq!(settings.server_limits(), ServerLimits::default());
        let text = "max-connections = 2\nmax-streams-per-connection = 3\nhttp2-keepalive-interval-ms = 0\n\
                    tcp-keepalive-ms = 0\nstream-window-bytes = 70000\nconnection-window-bytes = 140000\n";
        let limits = file(text).unwrap().server_limits();
        assert_eq!((limits.max_connections, limits.max_streams_per_connection), (2, 3));
        assert_eq!((limits.http2_keepalive_interval, limits.tcp_keepalive), (None, None));
        assert_eq!((limits.stream_window_bytes, limits.connection_window_bytes), (70_000, 140_000));
        for (text, setting) in [
            ("max-connections = 0", "`max-connections`"),
            ("max-streams-per-connection = 0", "`max-streams-per-connection`"),
            ("stream-window-bytes = 1000", "`stream-window-bytes`"),
            ("connection-window-bytes = 4294967295", "`connection-window-bytes`"),
            ("http2-keepalive-timeout-ms = 0", "`http2-keepalive-timeout-ms`"),
        ] {
            let error = file(text).unwrap_err().to_string();
            assert!(error.contains(setting), "{text}: {error}");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let text = "addr = \"127.0.0.1:9000\"\ndurability = \"always\"\n";
        let settings = layered(&["--durability", "none"], text).unwrap();
        assert_eq!(settings.addr.port(), 9000);
        assert_eq!(settings.durability, DurabilityMode::None);
    }

    #[test]
    fn a_flag_at_its_default_value_still_wins_over_the_file() {
        let settings = layered(&["--durability", "interval"], "durability = \"always\"").unwrap();
        assert_eq!(settings.durability, DurabilityMode::Interval);
    }

    #[test]
    fn file_keys_are_the_flag_names() {
        let text = r#"
            addr = "127.0.0.1:1"
            data-dir = "/tmp/x"
            durability = "interval"
            sync-interval-ms = 5
            sync-bytes = 10
            writeback-bytes = 0
            backend = "pwrite"
            segment-bytes = 100000000
            index-bytes = 100000
            max-record-bytes = 1000
            on-corruption = "truncate"
            log-level = "debug"
            log-format = "json"
            tls-cert-file = "s.pem"
            tls-key-file = "s-key.pem"
            tls-client-ca-file = "ca.pem"
            acl-file = "acl"
            metrics-addr = "127.0.0.1:9400"
        "#;
        let settings = file(text).unwrap();
        let engine = settings.engine_config();
        assert_eq!(engine.durability, Durability::Interval { interval_ms: 5, bytes: 10 });
        assert_eq!(engine.writeback_bytes, 0);
        assert!(matches!(engine.backend, Backend::Pwrite));
        assert_eq!(engine.record_bytes_max, 1000);
        assert_eq!(engine.on_corruption, OnCorruption::Truncate);
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.log_filter(), "debug");
        let tls = settings.tls().expect("tls");
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(settings.acl_file, Some(PathBuf::from("acl")));
        assert_eq!(settings.metrics_addr.map(|a| a.port()), Some(9400));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors_naming_the_key() {
        for key in ["colour", "data_dir", "config", "tls"] {
            let error = file(&format!("{key} = \"x\"")).unwrap_err().to_string();
            assert_eq!(error, format!("invalid setting `{key}`: unknown setting"));
        }
        let error = file("[addr]\nport = 1").unwrap_err().to_string();
        assert!(error.contains("`addr`"), "{error}");
    }

    #[test]
    fn tls_files_come_in_pairs() {
        for (text, setting) in [
            ("tls-cert-file = \"c\"", "`tls-key-file`"),
            ("tls-key-file = \"k\"", "`tls-cert-file`"),
            ("tls-client-ca-file = \"ca\"", "`tls-client-ca-file`"),
            ("log-format = \"xml\"", "`log-format`"),
            ("metrics-addr = \"9400\"", "`metrics-addr`"),
        ] {
            let error = file(text).unwrap_err().to_string();
            assert!(error.contains(setting), "{text}: {error}");
        }
    }

    #[test]
    fn retention_is_off_unless_set_and_ages_read_as_people_write_them() {
        assert_eq!(file("").unwrap().retention(), None);
        let policy = file("retention-bytes = 1000\nretention-age = \"7d\"\n").unwrap().retention().unwrap();
        assert_eq!((policy.max_bytes, policy.max_age), (Some(1000), Some(Duration::from_secs(7 * 86_400))));
        assert_eq!(
            policy.segment_age, policy.max_age,
            "a segment ages out with the retention age by default"
        );
        assert_eq!(policy.check_every, Duration::from_secs(30));
        let policy = file("segment-age = \"1h 30m\"").unwrap().retention().unwrap();
        assert_eq!((policy.max_age, policy.segment_age), (None, Some(Duration::from_secs(5400))));
        let error = file("retention-age = \"a week\"").unwrap_err().to_string();
        assert!(error.contains("`retention-age`") && error.contains("not a duration such as 7d"), "{error}");
        let cluster = "node-id = 1\npeers = \"1=127.0.0.1:8401\"\nretention-bytes = 1000\n";
        assert!(file(cluster).unwrap().retention().is_some(), "a cluster retains too (through Raft)");
    }

    #[test]
    fn a_cluster_with_tls_needs_mutual_tls() {
        let cluster = "node-id = 1\npeers = \"1=127.0.0.1:8401,2=127.0.0.1:8402\"\n";
        let tls = "tls-cert-file = \"c\"\ntls-key-file = \"k\"\n";
        let error = file(&format!("{cluster}{tls}")).unwrap_err().to_string();
        assert!(error.contains("`tls-client-ca-file`") && error.contains("mutual TLS"), "{error}");
        let settings = file(&format!("{cluster}{tls}tls-client-ca-file = \"ca\"\n")).unwrap();
        assert!(settings.cluster().unwrap().is_some());
    }

    #[test]
    fn errors_name_the_setting_on_one_line() {
        let cases = [
            ("durability = \"sometimes\"", "`durability`"),
            ("max-record-bytes = -1", "`max-record-bytes`"),
            ("addr = \"nowhere\"", "`addr`"),
            ("colour = \"blue\"", "`colour`"),
            ("segment-bytes = 10", "`segment-bytes`"),
            ("durability = 3", "`durability`"),
        ];
        for (text, setting) in cases {
            let error = file(text).unwrap_err().to_string();
            assert!(error.contains(setting), "{text}: {error}");
            assert!(!error.contains('\n'), "{text}: {error}");
        }
        let error = file("addr = ").unwrap_err().to_string();
        assert!(!error.contains('\n') && error.contains("line 1"), "{error}");
    }
}
