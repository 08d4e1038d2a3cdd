//! Certificates for trying mutual TLS: a private CA, a server certificate, and client
//! certificates for named subjects (`ringlog certs`). ECDSA P-256 keys, made with `rcgen`.
//!
//! These are for development and tests. The CA's key is kept only when asked for
//! ([`Plan::keep_ca_key`], as `ca-key.pem`, readable by its owner only); with it, later runs
//! sign more clients, or a new server certificate, with the same CA ([`Plan::ca_dir`]), so a
//! running server keeps trusting every client. Production deployments should use their own
//! PKI; the server only needs PEM files.

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
    #[error(
        "client name `{0}`: use letters, digits, `.`, `_` and `-` only, and not a name of the CA's or server's files"
    )]
    BadName(String),
    /// Reading the files of an existing CA failed.
    #[error("reading {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The CA's private key is not the key of its certificate.
    #[error("the CA's private key (ca-key.pem) is not the key of its certificate (ca.pem)")]
    KeyMismatch,
    /// With an existing CA, nothing was asked for.
    #[error("nothing to make: name a client, or ask for a server certificate")]
    Nothing,
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

    /// The CA whose certificate and private key are these PEM texts. The key must be the
    /// certificate's, or what it signs would not be trusted.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        let cert = pem.parse_x509().map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        if cert.public_key().subject_public_key.data.as_ref() != issuer.key().public_key_raw() {
            return Err(CertError::KeyMismatch);
        }
        Ok(Authority { issuer, cert_pem: cert_pem.to_owned() })
    }

    /// The CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), whose subject is the
    /// first name. It is a client certificate too: a node of a cluster dials its peers with it.
    pub fn server(&self, names: &[&str]) -> Result<Issued, CertError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name = named(names.first().map_or("ringlog", String::as_str));
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
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

/// What [`write_dir`] makes.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Client certificates: `<name>.pem` + `<name>-key.pem`, the name as the subject.
    pub clients: Vec<String>,
    /// Names of the server certificate besides [`SERVER_NAMES`].
    pub extra_server_names: Vec<String>,
    /// Sign with the CA in this directory (its `ca.pem` and `ca-key.pem`) instead of making
    /// a new one.
    pub ca_dir: Option<PathBuf>,
    /// With a new CA: keep its private key as `ca-key.pem`, so that `ca_dir` can use it.
    pub keep_ca_key: bool,
    /// With `ca_dir`: write a new server certificate too (a new CA always gets one; so does
    /// a plan with `extra_server_names`).
    pub server: bool,
}

/// Writes into `out` (created if missing) what `plan` asks for. With a new CA: `ca.pem`
/// (and `ca-key.pem` if kept), `server.pem` + `server-key.pem` (for [`SERVER_NAMES`] and
/// the extra names), and `<name>.pem` + `<name>-key.pem` for each client. With an existing
/// CA: the clients, the server certificate if asked for, and a copy of `ca.pem` when `out`
/// is another directory. Returns the files written.
pub fn write_dir(out: &Path, plan: &Plan) -> Result<Vec<PathBuf>, CertError> {
    for name in &plan.clients {
        let ok = !name.is_empty()
            && !["ca", "ca-key", "server", "server-key"].contains(&name.as_str())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.starts_with('.');
        if !ok {
            return Err(CertError::BadName(name.clone()));
        }
    }
    let (ca, new_ca) = match &plan.ca_dir {
        Some(dir) => (read_authority(dir)?, false),
        None => (Authority::new("ringlog development CA")?, true),
    };
    let server = new_ca || plan.server || !plan.extra_server_names.is_empty();
    if !server && plan.clients.is_empty() {
        return Err(CertError::Nothing);
    }
    std::fs::create_dir_all(out).map_err(|source| CertError::Write { path: out.to_owned(), source })?;
    let mut written = Vec::new();
    let mut write = |name: String, text: &str, secret: bool| -> Result<(), CertError> {
        let path = out.join(name);
        write_file(&path, text, secret).map_err(|source| CertError::Write { path: path.clone(), source })?;
        written.push(path);
        Ok(())
    };
    let same_dir = |dir: &Path| {
        let canonical = |path: &Path| std::fs::canonicalize(path).ok();
        canonical(dir).is_some() && canonical(dir) == canonical(out)
    };
    if new_ca || !plan.ca_dir.as_deref().is_some_and(same_dir) {
        write("ca.pem".into(), ca.cert_pem(), false)?;
    }
    if new_ca && plan.keep_ca_key {
        write("ca-key.pem".into(), &ca.key_pem(), true)?;
    }
    if server {
        let mut server_names: Vec<&str> = SERVER_NAMES.to_vec();
        server_names.extend(plan.extra_server_names.iter().map(String::as_str));
        let server = ca.server(&server_names)?;
        write("server.pem".into(), &server.cert_pem, false)?;
        write("server-key.pem".into(), &server.key_pem, true)?;
    }
    for name in &plan.clients {
        let client = ca.client(name)?;
        write(format!("{name}.pem"), &client.cert_pem, false)?;
        write(format!("{name}-key.pem"), &client.key_pem, true)?;
    }
    Ok(written)
}

/// The CA kept in `dir` by an earlier run with [`Plan::keep_ca_key`].
fn read_authority(dir: &Path) -> Result<Authority, CertError> {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|error| CertError::Read { path: path.to_owned(), error })
    };
    Authority::from_pem(&read(&cert)?, &read(&key)?)
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
        let plan = Plan { clients: vec!["alice".into(), "bob".into()], ..Plan::default() };
        let files = write_dir(dir.path(), &plan).unwrap();
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
        assert!(!dir.path().join("ca-key.pem").exists(), "the CA's key is not kept unless asked");
    }

    fn names(files: &[PathBuf]) -> Vec<String> {
        files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_kept_ca_key_signs_more_clients_later() {
        let dir = tempfile::tempdir().unwrap();
        let keep = Plan { keep_ca_key: true, ..Plan::default() };
        let files = write_dir(dir.path(), &keep).unwrap();
        assert_eq!(names(&files), ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca-key.pem")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        let server_pem = std::fs::read_to_string(dir.path().join("server.pem")).unwrap();

        let carol =
            Plan { clients: vec!["carol".into()], ca_dir: Some(dir.path().into()), ..Plan::default() };
        let files = write_dir(dir.path(), &carol).unwrap();
        assert_eq!(names(&files), ["carol.pem", "carol-key.pem"], "nothing else is rewritten");
        assert_eq!(std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(), ca_pem);
        assert_eq!(std::fs::read_to_string(dir.path().join("server.pem")).unwrap(), server_pem);

        let elsewhere = tempfile::tempdir().unwrap();
        let server = Plan { server: true, ca_dir: Some(dir.path().into()), ..Plan::default() };
        let files = write_dir(elsewhere.path(), &server).unwrap();
        assert_eq!(names(&files), ["ca.pem", "server.pem", "server-key.pem"]);
        assert_eq!(std::fs::read_to_string(elsewhere.path().join("ca.pem")).unwrap(), ca_pem);
    }

    #[test]
    fn an_existing_ca_needs_its_key_and_something_to_sign() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), &Plan::default()).unwrap();
        let plan = Plan { clients: vec!["carol".into()], ca_dir: Some(dir.path().into()), ..Plan::default() };
        let error = write_dir(dir.path(), &plan).unwrap_err();
        assert!(matches!(&error, CertError::Read { path, .. } if path.ends_with("ca-key.pem")), "{error}");

        let other = tempfile::tempdir().unwrap();
        write_dir(other.path(), &Plan { keep_ca_key: true, ..Plan::default() }).unwrap();
        std::fs::copy(other.path().join("ca-key.pem"), dir.path().join("ca-key.pem")).unwrap();
        let error = write_dir(dir.path(), &plan).unwrap_err();
        assert!(matches!(error, CertError::KeyMismatch), "{error}");

        let nothing = Plan { ca_dir: Some(other.path().into()), ..Plan::default() };
        assert!(matches!(write_dir(other.path(), &nothing).unwrap_err(), CertError::Nothing));
    }

    #[test]
    fn client_names_must_be_plain() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a b", "ca", "ca-key", "server-key", ".hidden"] {
            let plan = Plan { clients: vec![bad.to_owned()], ..Plan::default() };
            let error = write_dir(dir.path(), &plan).unwrap_err();
            assert!(matches!(error, CertError::BadName(_)), "{bad}: {error}");
        }
    }
}
