//! The command line: `serve`, the client subcommands, and how errors are reported.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, error::ContextKind};
use ringlog_cluster::{Faults, Node, Peer};
use ringlog_engine::Log;
use ringlog_service::{
    Acl, Server, TlsConfig,
    cluster::Replica,
    config::{ClusterSettings, ConfigError, LogFormat, Settings},
};
use tracing_subscriber::EnvFilter;

use crate::client;

/// A durable, segmented commit log served over gRPC.
#[derive(Debug, Parser)]
#[command(name = "ringlog", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a log over gRPC (log.v1, health, reflection) until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Append values (the arguments, or one per stdin line) and print their offsets.
    Produce(client::ProduceArgs),
    /// Print records as `offset<TAB>value`, from an offset on.
    Consume(client::ConsumeArgs),
    /// Show a cluster's state (`status`), or add or remove a node.
    Cluster(crate::cluster_commands::ClusterArgs),
    /// Write a development CA, a server certificate for localhost and client certificates,
    /// or more certificates signed by a CA kept earlier (`--ca-dir`).
    Certs(CertsArgs),
}

#[derive(Debug, clap::Args)]
struct CertsArgs {
    /// Directory to write the PEM files to (created if missing) [default with --ca-dir: that
    /// directory]
    #[arg(long, value_name = "DIR", required_unless_present = "ca_dir")]
    out: Option<PathBuf>,
    /// A client certificate with this subject (Common Name); repeat for more
    #[arg(long = "client", value_name = "NAME")]
    clients: Vec<String>,
    /// Another DNS name or IP address for the server certificate (besides localhost,
    /// 127.0.0.1 and ::1); repeat for more
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    /// Keep the new CA's private key as ca-key.pem (readable by its owner only), so that
    /// `--ca-dir` can sign more certificates with it later
    #[arg(long, conflicts_with = "ca_dir")]
    keep_ca_key: bool,
    /// Sign with the CA in DIR (its ca.pem and ca-key.pem, from `--keep-ca-key`) instead of
    /// making a new one; only the certificates asked for are written
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// With --ca-dir: write a new server certificate too
    #[arg(long, requires = "ca_dir")]
    server: bool,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML file of settings (keys are the flags' names); flags and environment win over it
    #[arg(long, env = "RINGLOG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the settings as serving would (the TLS and ACL files included), print them, and
    /// exit: no log is opened, no port bound
    #[arg(long)]
    check_config: bool,
    #[command(flatten)]
    settings: Settings,
}

/// Parses the command line; the matches say where each setting came from. Help and version
/// are printed here; a usage error is printed as one line naming the setting, and its exit
/// code returned.
pub fn parse() -> Result<(Cli, ArgMatches), ExitCode> {
    let parsed =
        Cli::command().try_get_matches().and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    parsed.map_err(|error| {
        use clap::error::ErrorKind;
        if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
            || matches!(error.kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand)
        {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
        let rendered = error.render().to_string();
        let first = rendered.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
        let mut line = format!("ringlog: {first}");
        if let Some(clap::error::ContextValue::Strings(missing)) = error.get(ContextKind::InvalidArg)
            && error.kind() == ErrorKind::MissingRequiredArgument
        {
            line.push_str(&format!(" {}", missing.join(", ")));
        }
        if let Some(clap::error::ContextValue::Strings(valid)) = error.get(ContextKind::ValidValue) {
            line.push_str(&format!(" (expected one of: {})", valid.join(", ")));
        }
        eprintln!("{line}");
        ExitCode::from(2)
    })
}

/// Runs a parsed command.
pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(*args, matches.subcommand_matches("serve").expect("serve's matches")),
        Command::Produce(args) => runtime()?.block_on(client::produce(args)),
        Command::Consume(args) => runtime()?.block_on(client::consume(args)),
        Command::Cluster(args) => runtime()?.block_on(crate::cluster_commands::run(args)),
        Command::Certs(args) => certs(args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// What `serve` reads and checks before it opens anything: the settings, the log filter, and
/// the security files (read before the log is opened, so that a bad one fails fast).
struct Checked {
    config: Settings,
    filter: EnvFilter,
    tls: Option<TlsConfig>,
    acl: Option<Acl>,
    cluster: Option<ClusterSettings>,
}

fn check(args: ServeArgs, matches: &ArgMatches) -> anyhow::Result<Checked> {
    let config = match &args.config {
        Some(path) => args.settings.with_file(path, matches)?,
        None => args.settings,
    };
    config.check()?;
    let log_level = config.log_filter();
    let filter = EnvFilter::try_new(&log_level).map_err(|e| ConfigError::Invalid {
        setting: "log-level".into(),
        reason: format!("`{log_level}`: {e}"),
    })?;
    let tls = match &config.tls() {
        Some(files) => Some(TlsConfig::from_files(&files.cert, &files.key, files.client_ca.as_deref())?),
        None => None,
    };
    let acl = config.acl_file.as_deref().map(Acl::from_file).transpose()?;
    let mut cluster = config.cluster()?;
    if let (Some(cluster), Some(files)) = (&mut cluster, config.tls()) {
        // A node dials its peers with its own certificate, and trusts a peer whose
        // certificate chains to the CA its clients must chain to.
        let ca = files.client_ca.as_deref().expect("checked: a cluster with TLS has a client CA");
        cluster.config.peer_tls =
            Some(ringlog_service::tls::client_config(ca, Some((&files.cert, &files.key)))?);
    }
    Ok(Checked { config, filter, tls, acl, cluster })
}

/// `serve --check-config`: the effective settings as a config file (paths only, never the
/// files' contents), then what they make.
fn print_checked(checked: &Checked) -> anyhow::Result<()> {
    let Checked { config, tls, acl, cluster, .. } = checked;
    let table = toml::Table::try_from(config).context("printing the settings")?;
    let mut out = format!("# ringlog serve: the settings are valid\n{table}");
    let dir = if config.data_dir.is_dir() { "exists" } else { "does not exist yet; serve creates it" };
    out.push_str(&format!("# data-dir: {dir}\n# log filter: {}\n", config.log_filter()));
    let security = match (tls, acl) {
        (None, _) => "plaintext".to_owned(),
        (Some(tls), _) if !tls.client_cert_required() => "tls".to_owned(),
        (Some(_), None) => "mutual tls".to_owned(),
        (Some(_), Some(acl)) => format!("mutual tls + acl ({} rules)", acl.len()),
    };
    out.push_str(&format!("# security: {security}\n"));
    match cluster {
        Some(cluster) => {
            let voters: Vec<String> = cluster.peers.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
            out.push_str(&format!(
                "# cluster: node {} of first voters {}\n",
                cluster.node_id,
                voters.join(",")
            ));
        }
        None => out.push_str("# cluster: none (a single node)\n"),
    }
    print!("{out}");
    Ok(())
}

fn serve(args: ServeArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let check_only = args.check_config;
    let checked = check(args, matches)?;
    if check_only {
        return print_checked(&checked);
    }
    let Checked { config, filter, tls, acl, cluster } = checked;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Pretty => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
    }

    let log = match &cluster {
        Some(_) => None,
        None => Some(
            Log::open(&config.data_dir, config.engine_config())
                .with_context(|| format!("opening the log in {}", config.data_dir.display()))?,
        ),
    };
    runtime()?.block_on(async {
        // Caught from here on: the server announces itself only after this, so a signal sent
        // as soon as it does never meets the default action (death without closing the log).
        let mut signals = ShutdownSignals::install().context("installing the SIGINT and SIGTERM handlers")?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("listening on {} (setting `addr`)", config.addr))?;
        let mut server = match (log, cluster) {
            (Some(log), _) => {
                Server::new(log).identity(config.node_id.unwrap_or(1), config.advertise_addr.clone())
            }
            (None, Some(cluster)) => Server::replica(start_node(&config, cluster).await?),
            (None, None) => unreachable!("a log or a cluster"),
        };
        server = server.limits(config.server_limits());
        if let Some(tls) = tls {
            server = server.tls(tls);
        }
        if let Some(acl) = acl {
            server = server.acl(acl);
        }
        if let Some(policy) = config.retention() {
            server = server.retention(policy);
        }
        if let Some(addr) = config.metrics_addr {
            let metrics = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (setting `metrics-addr`)"))?;
            server = server.metrics_listener(metrics);
        }
        let shutdown = async move {
            signals.next().await;
            // A second signal means "now": someone is done waiting for a slow shutdown.
            tokio::spawn(async move {
                signals.next().await;
                eprintln!("ringlog: second signal during shutdown: exiting at once (the log was not closed)");
                std::process::exit(2);
            });
        };
        server.serve(listener, shutdown).await?;
        anyhow::Ok(())
    })
}

/// Starts this node of the cluster (its storage in the data directory).
async fn start_node(config: &Settings, cluster: ClusterSettings) -> anyhow::Result<Replica> {
    let ClusterSettings { node_id, peers, config: cluster_config } = cluster;
    let members = peers.iter().map(|(id, addr)| (*id, Peer { addr: addr.clone() })).collect();
    let message_bytes_max = ringlog_service::message_bytes_max(config.max_record_bytes);
    let node = Node::start(node_id, &config.data_dir, members, cluster_config, Faults::new())
        .await
        .with_context(|| format!("starting node {node_id} on {}", config.data_dir.display()))?;
    let mut addrs = peers;
    if let Some(advertised) = &config.advertise_addr {
        addrs.insert(node_id, advertised.clone());
    }
    Ok(Replica::new(node, addrs, message_bytes_max))
}

fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let out = args.out.or_else(|| args.ca_dir.clone()).expect("clap requires --out or --ca-dir");
    let plan = ringlog_service::certs::Plan {
        clients: args.clients,
        extra_server_names: args.server_names,
        ca_dir: args.ca_dir,
        keep_ca_key: args.keep_ca_key,
        server: args.server,
    };
    for path in ringlog_service::certs::write_dir(&out, &plan)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment they are installed.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Registers both handlers now (in a tokio runtime), not when first awaited.
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
