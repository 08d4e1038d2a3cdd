//! `--tls`: `ringlog serve` processes with mutual TLS, and the bench's clients with a client
//! certificate, so that a run measures what TLS costs (on the Raft transport as well: a
//! cluster's nodes dial one another with their server certificate). The certificates come
//! from `ringlog certs` (a fresh development CA per run). The bare tonic baseline and the
//! in-process server stay plaintext.

use std::{path::Path, sync::OnceLock};

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The clients' TLS, once `enable` ran.
static CLIENT_TLS: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Makes certificates in `dir` with `ringlog` (the binary at `ringlog`), turns TLS on for
/// every client the bench makes from now on, and returns the `ringlog serve` flags that
/// serve with them.
pub fn enable(ringlog: &Path, dir: &Path) -> anyhow::Result<Vec<String>> {
    let made = std::process::Command::new(ringlog)
        .args(["certs", "--client", "bench", "--out"])
        .arg(dir)
        .output()
        .context("running ringlog certs")?;
    anyhow::ensure!(made.status.success(), "ringlog certs failed: {}", String::from_utf8_lossy(&made.stderr));
    let read = |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("reading {name}"));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")?))
        .identity(Identity::from_pem(read("bench.pem")?, read("bench-key.pem")?))
        .domain_name("localhost");
    anyhow::ensure!(CLIENT_TLS.set(tls).is_ok(), "TLS enabled twice");
    let path = |name: &str| dir.join(name).display().to_string();
    Ok(vec![
        "--tls-cert-file".to_owned(),
        path("server.pem"),
        "--tls-key-file".to_owned(),
        path("server-key.pem"),
        "--tls-client-ca-file".to_owned(),
        path("ca.pem"),
    ])
}

/// An endpoint for `addr` (`HOST:PORT`, or a URL), with TLS once `enable` ran.
pub fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    let tls = CLIENT_TLS.get();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") { addr.to_owned() } else { format!("{scheme}://{addr}") };
    let endpoint = Endpoint::from_shared(url).with_context(|| format!("`{addr}` is not a server address"))?;
    match tls {
        Some(tls) => endpoint.tls_config(tls.clone()).context("client TLS"),
        None => Ok(endpoint),
    }
}
