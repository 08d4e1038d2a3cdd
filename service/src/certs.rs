//! Certificates for trying mutual TLS: a private CA, a server certificate, and client
//! certificates for named subjects (`ringlog certs`). ECDSA P-256 keys, made with `rcgen`.
//!
//! These are for development and tests. The CA's key is not kept, so nothing more can be
//! signed with it: run the command again to add clients. Production deployments should use
//! their own PKI; the server only needs PEM files.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

/// The names the server certificate is valid for by default.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Making or writing certificates failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A client name cannot be a subject and a file name.
    #[error("client name `{0}`: use letters, digits, `.`, `_` and `-` only")]
    BadName(String),
    /// Writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A certificate authority that lives in memory.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

impl Authority {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Authority, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Authority { issuer: Issuer::new(params, key), cert_pem })
    }

    /// The CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Result<Issued, CertError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name = named(names.first().map_or("ringlog", String::as_str));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate whose subject (Common Name) is `subject`.
    pub fn client(&self, subject: &str) -> Result<Issued, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(subject);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<Issued, CertError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// Writes `ca.pem`, `server.pem` + `server-key.pem` (for [`SERVER_NAMES`] and
/// `extra_server_names`), and `<name>.pem` + `<name>-key.pem` for each client into `out`
/// (created if missing). Returns the files written.
pub fn write_dir(
    out: &Path,
    clients: &[String],
    extra_server_names: &[String],
) -> Result<Vec<PathBuf>, CertError> {
    for name in clients {
        let ok = !name.is_empty()
            && name != "ca"
            && name != "server"
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.starts_with('.');
        if !ok {
            return Err(CertError::BadName(name.clone()));
        }
    }
    std::fs::create_dir_all(out).map_err(|source| CertError::Write { path: out.to_owned(), source })?;
    let ca = Authority::new("ringlog development CA")?;
    let mut server_names: Vec<&str> = SERVER_NAMES.to_vec();
    server_names.extend(extra_server_names.iter().map(String::as_str));
    let server = ca.server(&server_names)?;
    let mut written = Vec::new();
    let mut write = |name: String, text: &str, secret: bool| -> Result<(), CertError> {
        let path = out.join(name);
        write_file(&path, text, secret).map_err(|source| CertError::Write { path: path.clone(), source })?;
        written.push(path);
        Ok(())
    };
    write("ca.pem".into(), ca.cert_pem(), false)?;
    write("server.pem".into(), &server.cert_pem, false)?;
    write("server-key.pem".into(), &server.key_pem, true)?;
    for name in clients {
        let client = ca.client(name)?;
        write(format!("{name}.pem"), &client.cert_pem, false)?;
        write(format!("{name}-key.pem"), &client.key_pem, true)?;
    }
    Ok(written)
}

/// Writes a file; private keys are readable by the owner only.
fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_ca_server_and_clients() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_dir(dir.path(), &["alice".into(), "bob".into()], &[]).unwrap();
        let names: Vec<String> =
            files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "server.pem",
                "server-key.pem",
                "alice.pem",
                "alice-key.pem",
                "bob.pem",
                "bob-key.pem"
            ]
        );
        let alice = std::fs::read_to_string(dir.path().join("alice.pem")).unwrap();
        assert!(alice.starts_with("-----BEGIN CERTIFICATE-----"), "{alice}");
        let key = std::fs::read_to_string(dir.path().join("alice-key.pem")).unwrap();
        assert!(key.contains("PRIVATE KEY-----"));
    }

    #[test]
    fn client_names_must_be_plain() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a b", "ca", ".hidden"] {
            let error = write_dir(dir.path(), &[bad.to_owned()], &[]).unwrap_err();
            assert!(matches!(error, CertError::BadName(_)), "{bad}: {error}");
        }
    }
}
