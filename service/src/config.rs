//! Settings of `ringlog serve`: command-line flags, `RINGLOG_*` environment variables and an
//! optional TOML file, in that order of precedence, over built-in defaults.
//!
//! The file uses the flags' names as keys:
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
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::ValueEnum;
use ringlog_engine::{Backend, Config, Durability, OnCorruption};

/// When appends are acknowledged relative to `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityMode {
    /// When written to the page cache (a process crash loses nothing; a power loss may).
    None,
    /// When written; `fdatasync` in the background every `sync-interval-ms` or `sync-bytes`.
    Interval,
    /// After an `fdatasync` that covers the record (group commit).
    Always,
}

/// The engine's append backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// io_uring where the kernel allows it, otherwise pwrite.
    Auto,
    /// io_uring, or fail to start.
    IoUring,
    /// Plain pwrite(2).
    Pwrite,
}

/// What opening the log does with corruption inside a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CorruptionMode {
    /// Refuse to start, naming the file and byte position.
    Fail,
    /// Cut the log at the first corrupt record.
    Truncate,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured on a terminal).
    Pretty,
    /// One JSON object per line, with the span's fields.
    Json,
}

/// Settings as given: every field is optional so that flags, environment and file can be
/// layered. [`ServeOptions::resolve`] fills in the defaults.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeOptions {
    /// Address to listen on [default: 127.0.0.1:8400]
    #[arg(long, env = "RINGLOG_ADDR", value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Directory of the log's segments [default: ./ringlog-data]
    #[arg(long, env = "RINGLOG_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// When appends are acknowledged [default: interval]
    #[arg(long, env = "RINGLOG_DURABILITY", value_enum)]
    pub durability: Option<DurabilityMode>,
    /// With `--durability interval`: longest time between syncs [default: 100]
    #[arg(long, env = "RINGLOG_SYNC_INTERVAL_MS", value_name = "MS")]
    pub sync_interval_ms: Option<u64>,
    /// With `--durability interval`: sync after this many unsynced bytes [default: 4194304]
    #[arg(long, env = "RINGLOG_SYNC_BYTES", value_name = "BYTES")]
    pub sync_bytes: Option<u64>,
    /// Append backend [default: auto]
    #[arg(long, env = "RINGLOG_BACKEND", value_enum)]
    pub backend: Option<BackendKind>,
    /// Largest store file of a segment; the segment rolls when full [default: 1073741824]
    #[arg(long, env = "RINGLOG_SEGMENT_BYTES", value_name = "BYTES")]
    pub segment_bytes: Option<u64>,
    /// Largest index file of a segment (8 bytes per record) [default: 10485760]
    #[arg(long, env = "RINGLOG_INDEX_BYTES", value_name = "BYTES")]
    pub index_bytes: Option<u64>,
    /// Largest record value accepted; the gRPC message limit follows it [default: 1048576]
    #[arg(long, env = "RINGLOG_MAX_RECORD_BYTES", value_name = "BYTES")]
    pub max_record_bytes: Option<u32>,
    /// What opening the log does with corruption in a sealed segment [default: fail]
    #[arg(long, env = "RINGLOG_ON_CORRUPTION", value_enum)]
    pub on_corruption: Option<CorruptionMode>,
    /// Log filter, e.g. `info` or `ringlog_service=debug,info` [default: `RUST_LOG`, else info]
    #[arg(long, env = "RINGLOG_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format [default: pretty]
    #[arg(long, env = "RINGLOG_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
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
}

/// Settings with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Directory of the log.
    pub data_dir: PathBuf,
    /// When appends are acknowledged.
    pub durability: DurabilityMode,
    /// Sync interval for [`DurabilityMode::Interval`].
    pub sync_interval_ms: u64,
    /// Sync byte threshold for [`DurabilityMode::Interval`].
    pub sync_bytes: u64,
    /// Append backend.
    pub backend: BackendKind,
    /// Largest store file of a segment.
    pub segment_bytes: u64,
    /// Largest index file of a segment.
    pub index_bytes: u64,
    /// Largest record value.
    pub max_record_bytes: u32,
    /// What recovery does with corruption in sealed segments.
    pub on_corruption: CorruptionMode,
    /// The tracing filter.
    pub log_level: String,
    /// The log line format.
    pub log_format: LogFormat,
    /// The server's TLS certificate and key, when serving TLS.
    pub tls: Option<TlsFiles>,
    /// The ACL file.
    pub acl_file: Option<PathBuf>,
    /// Where metrics are served.
    pub metrics_addr: Option<SocketAddr>,
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

impl ServeOptions {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<ServeOptions, ConfigError> {
        let file_error = |reason: String| ConfigError::File { path: path.to_owned(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        ServeOptions::from_toml(&text).map_err(|e| match e {
            ConfigError::File { reason, .. } => file_error(reason),
            other => other,
        })
    }

    /// Parses settings from TOML text (keys are the flags' names).
    pub fn from_toml(text: &str) -> Result<ServeOptions, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|span| text[..span.start].lines().count().max(1));
            let reason = e.message().replace('\n', " ");
            ConfigError::File {
                path: PathBuf::new(),
                reason: match line {
                    Some(line) => format!("line {line}: {reason}"),
                    None => reason,
                },
            }
        })?;
        let mut options = ServeOptions::default();
        for (key, value) in table {
            let text = || -> Result<String, ConfigError> {
                match &value {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(invalid(&key, format!("expected a string, found `{other}`"))),
                }
            };
            let number = || -> Result<u64, ConfigError> {
                match &value {
                    toml::Value::Integer(n) => u64::try_from(*n)
                        .map_err(|_| invalid(&key, format!("must not be negative, found {n}"))),
                    other => Err(invalid(&key, format!("expected a number, found `{other}`"))),
                }
            };
            match key.as_str() {
                "addr" => options.addr = Some(parse_addr(&key, &text()?)?),
                "data-dir" => options.data_dir = Some(PathBuf::from(text()?)),
                "durability" => options.durability = Some(parse_enum(&key, &text()?)?),
                "sync-interval-ms" => options.sync_interval_ms = Some(number()?),
                "sync-bytes" => options.sync_bytes = Some(number()?),
                "backend" => options.backend = Some(parse_enum(&key, &text()?)?),
                "segment-bytes" => options.segment_bytes = Some(number()?),
                "index-bytes" => options.index_bytes = Some(number()?),
                "max-record-bytes" => {
                    let n = number()?;
                    let n =
                        u32::try_from(n).map_err(|_| invalid(&key, format!("{n} is over {}", u32::MAX)))?;
                    options.max_record_bytes = Some(n);
                }
                "on-corruption" => options.on_corruption = Some(parse_enum(&key, &text()?)?),
                "log-level" => options.log_level = Some(text()?),
                "log-format" => options.log_format = Some(parse_enum(&key, &text()?)?),
                "tls-cert-file" => options.tls_cert_file = Some(PathBuf::from(text()?)),
                "tls-key-file" => options.tls_key_file = Some(PathBuf::from(text()?)),
                "tls-client-ca-file" => options.tls_client_ca_file = Some(PathBuf::from(text()?)),
                "acl-file" => options.acl_file = Some(PathBuf::from(text()?)),
                "metrics-addr" => options.metrics_addr = Some(parse_addr(&key, &text()?)?),
                _ => return Err(invalid(&key, "unknown setting")),
            }
        }
        Ok(options)
    }

    /// Layers `self` over `lower`: a setting given here wins.
    pub fn or(self, lower: ServeOptions) -> ServeOptions {
        ServeOptions {
            addr: self.addr.or(lower.addr),
            data_dir: self.data_dir.or(lower.data_dir),
            durability: self.durability.or(lower.durability),
            sync_interval_ms: self.sync_interval_ms.or(lower.sync_interval_ms),
            sync_bytes: self.sync_bytes.or(lower.sync_bytes),
            backend: self.backend.or(lower.backend),
            segment_bytes: self.segment_bytes.or(lower.segment_bytes),
            index_bytes: self.index_bytes.or(lower.index_bytes),
            max_record_bytes: self.max_record_bytes.or(lower.max_record_bytes),
            on_corruption: self.on_corruption.or(lower.on_corruption),
            log_level: self.log_level.or(lower.log_level),
            log_format: self.log_format.or(lower.log_format),
            tls_cert_file: self.tls_cert_file.or(lower.tls_cert_file),
            tls_key_file: self.tls_key_file.or(lower.tls_key_file),
            tls_client_ca_file: self.tls_client_ca_file.or(lower.tls_client_ca_file),
            acl_file: self.acl_file.or(lower.acl_file),
            metrics_addr: self.metrics_addr.or(lower.metrics_addr),
        }
    }

    /// Fills in defaults and checks the settings.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let engine = Config::default();
        let config = ServeConfig {
            addr: self.addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8400))),
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("./ringlog-data")),
            durability: self.durability.unwrap_or(DurabilityMode::Interval),
            sync_interval_ms: self.sync_interval_ms.unwrap_or(100),
            sync_bytes: self.sync_bytes.unwrap_or(4 << 20),
            backend: self.backend.unwrap_or(BackendKind::Auto),
            segment_bytes: self.segment_bytes.unwrap_or(engine.store_bytes_max),
            index_bytes: self.index_bytes.unwrap_or(engine.index_bytes_max),
            max_record_bytes: self.max_record_bytes.unwrap_or(engine.record_bytes_max),
            on_corruption: self.on_corruption.unwrap_or(CorruptionMode::Fail),
            log_level: self
                .log_level
                .or_else(|| std::env::var("RUST_LOG").ok().filter(|filter| !filter.is_empty()))
                .unwrap_or_else(|| "info".to_owned()),
            log_format: self.log_format.unwrap_or(LogFormat::Pretty),
            tls: match (self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file) {
                (Some(cert), Some(key), client_ca) => Some(TlsFiles { cert, key, client_ca }),
                (None, None, None) => None,
                (Some(_), None, _) => return Err(invalid("tls-key-file", "is needed with tls-cert-file")),
                (None, Some(_), _) => return Err(invalid("tls-cert-file", "is needed with tls-key-file")),
                (None, None, Some(_)) => {
                    return Err(invalid(
                        "tls-client-ca-file",
                        "needs tls-cert-file and tls-key-file (mutual TLS is TLS)",
                    ));
                }
            },
            acl_file: self.acl_file,
            metrics_addr: self.metrics_addr,
        };
        config.check()?;
        Ok(config)
    }
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| invalid(key, format!("`{text}` is not an address like 127.0.0.1:8400")))
}

fn parse_enum<T: ValueEnum>(key: &str, text: &str) -> Result<T, ConfigError> {
    T::from_str(text, true).map_err(|_| {
        let allowed: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        invalid(key, format!("`{text}` is not one of {}", allowed.join(", ")))
    })
}

impl ServeConfig {
    fn check(&self) -> Result<(), ConfigError> {
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
        Ok(())
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
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_settings() {
        let config = ServeOptions::default().resolve().unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8400");
        assert_eq!(config.data_dir, PathBuf::from("./ringlog-data"));
        assert_eq!(config.max_record_bytes, 1 << 20);
        assert_eq!(config.durability, DurabilityMode::Interval);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = ServeOptions::from_toml("addr = \"127.0.0.1:9000\"\ndurability = \"always\"\n").unwrap();
        let flags = ServeOptions { durability: Some(DurabilityMode::None), ..ServeOptions::default() };
        let config = flags.or(file).resolve().unwrap();
        assert_eq!(config.addr.port(), 9000);
        assert_eq!(config.durability, DurabilityMode::None);
    }

    #[test]
    fn file_keys_are_the_flag_names() {
        let text = r#"
            addr = "127.0.0.1:1"
            data-dir = "/tmp/x"
            durability = "interval"
            sync-interval-ms = 5
            sync-bytes = 10
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
        let config = ServeOptions::from_toml(text).unwrap().resolve().unwrap();
        let engine = config.engine_config();
        assert_eq!(engine.durability, Durability::Interval { interval_ms: 5, bytes: 10 });
        assert!(matches!(engine.backend, Backend::Pwrite));
        assert_eq!(engine.record_bytes_max, 1000);
        assert_eq!(engine.on_corruption, OnCorruption::Truncate);
        assert_eq!(config.log_format, LogFormat::Json);
        let tls = config.tls.expect("tls");
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(config.acl_file, Some(PathBuf::from("acl")));
        assert_eq!(config.metrics_addr.map(|a| a.port()), Some(9400));
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
            let error =
                ServeOptions::from_toml(text).and_then(ServeOptions::resolve).unwrap_err().to_string();
            assert!(error.contains(setting), "{text}: {error}");
        }
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
            let error =
                ServeOptions::from_toml(text).and_then(ServeOptions::resolve).unwrap_err().to_string();
            assert!(error.contains(setting), "{text}: {error}");
            assert!(!error.contains('\n'), "{text}: {error}");
        }
        let error = ServeOptions::from_toml("addr = ").unwrap_err().to_string();
        assert!(!error.contains('\n') && error.contains("line 1"), "{error}");
    }
}
