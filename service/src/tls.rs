//! Transport security: the server's TLS settings and a client's, from PEM files.
//!
//! TLS is rustls (with the `ring` provider) through tonic. With a client CA the server asks
//! every client for a certificate and verifies any it is given against that CA during the
//! handshake: a certificate that does not verify fails the handshake, and the client's call
//! fails with tonic's `UNKNOWN "transport error"` whose source is the TLS alert (`UnknownCA`)
//! (with TLS 1.3 the alert arrives with the first call, not at connect). A client that presents none still completes the
//! handshake, so that it can be told why it is refused: each of its calls answers
//! `UNAUTHENTICATED` (see the `auth` module). Refusing in the handshake instead would leave
//! such a client with a bare connection error, which says nothing about a missing certificate.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{setting} {}: {reason}", path.display())]
#[non_exhaustive]
pub struct TlsError {
    /// The setting that names the file (`tls-cert-file`, ...).
    pub setting: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// The server's TLS material, PEM-encoded. Its `Debug` leaves out the private key.
#[derive(Clone)]
pub struct TlsConfig {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificate,
    PrivateKey,
}

/// Reads a PEM file, checking that it holds what `setting` needs (rustls would otherwise
/// fail later with a less helpful message, or only at the first connection).
fn read_pem(setting: &'static str, path: &Path, kind: Pem) -> Result<Vec<u8>, TlsError> {
    let fail = |reason: String| TlsError { setting, path: path.to_owned(), reason };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let (marker, what) = match kind {
        Pem::Certificate => ("-----BEGIN CERTIFICATE-----", "a certificate"),
        Pem::PrivateKey => ("PRIVATE KEY-----", "a private key"),
    };
    if !String::from_utf8_lossy(&pem).contains(marker) {
        return Err(fail(format!("expected a PEM file holding {what}")));
    }
    Ok(pem)
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .field("client_cert_required", &self.client_cert_required())
            .finish()
    }
}

impl TlsConfig {
    /// TLS from PEM files: the server's certificate (chain) and private key, and for mutual
    /// TLS the CA that client certificates must chain to.
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsConfig, TlsError> {
        Ok(TlsConfig {
            cert_pem: read_pem("tls-cert-file", cert, Pem::Certificate)?,
            key_pem: read_pem("tls-key-file", key, Pem::PrivateKey)?,
            client_ca_pem: client_ca
                .map(|ca| read_pem("tls-client-ca-file", ca, Pem::Certificate))
                .transpose()?,
        })
    }

    /// TLS from PEM text.
    pub fn from_pem(
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        client_ca: Option<Vec<u8>>,
    ) -> TlsConfig {
        TlsConfig { cert_pem: cert.into(), key_pem: key.into(), client_ca_pem: client_ca }
    }

    /// Whether clients must present a certificate (mutual TLS).
    pub fn client_cert_required(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// tonic's server configuration.
    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.client_ca_pem {
            // Optional in the handshake, required by `auth`: see the module docs.
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)).client_auth_optional(true),
            None => config,
        }
    }
}

/// A client's TLS settings: the CA that signed the server's certificate, and for mutual TLS
/// the client's own certificate and key.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(
        "ca-file",
        ca,
        Pem::Certificate,
    )?));
    if let Some((cert, key)) = identity {
        let cert = read_pem("cert-file", cert, Pem::Certificate)?;
        let key = read_pem("key-file", key, Pem::PrivateKey)?;
        config = config.identity(Identity::from_pem(cert, key));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_out_the_key() {
        let tls = TlsConfig::from_pem("CERT", "-----BEGIN PRIVATE KEY-----secret", None);
        assert!(!format!("{tls:?}").contains("secret"));
    }

    #[test]
    fn files_must_hold_what_their_setting_needs() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let error = TlsConfig::from_files(&cert, &cert, None).unwrap_err();
        assert_eq!(error.setting, "tls-key-file");
        assert!(error.to_string().contains("expected a PEM file holding a private key"), "{error}");
        let error = TlsConfig::from_files(&dir.path().join("none"), &cert, None).unwrap_err();
        assert_eq!(error.setting, "tls-cert-file");
    }
}
