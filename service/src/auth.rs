//! Who a client is, and whether it may make a call.
//!
//! The subject is read from the client's certificate, which rustls has already verified
//! against `--tls-client-ca-file` during the handshake: the subject's Common Name; when the
//! certificate has none, its first DNS name, else its first URI, from the Subject Alternative
//! Names. A client without a certificate has no subject (only `*` rules match it).
//!
//! The decision, made for every call before any handler runs:
//! - mutual TLS configured and no certificate: `UNAUTHENTICATED` (health and reflection too);
//! - a certificate naming no subject: `UNAUTHENTICATED`;
//! - an ACL set and the call's action not allowed: `PERMISSION_DENIED`,
//!   `<subject> not permitted to <action>` (`anonymous` for a client without a certificate);
//! - otherwise the call goes ahead. Health, reflection, GetServers and the cluster's status
//!   have no action: any authenticated client (any client at all without mutual TLS) may use
//!   them. The Raft service and a produce forwarded by a follower need `replicate`.

use tonic::{
    Status,
    transport::{
        CertificateDer,
        server::{TcpConnectInfo, TlsConnectInfo},
    },
};
use x509_parser::{extensions::GeneralName, prelude::FromDer};

use crate::{
    acl::{Acl, Action},
    status,
};

/// How clients are authenticated and authorized.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    /// Whether every call needs a verified client certificate (mutual TLS).
    pub(crate) client_cert_required: bool,
    /// The ACL; `None` allows every authenticated client everything.
    pub(crate) acl: Option<Acl>,
}

/// What is known about the caller of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The remote address.
    pub(crate) peer: Option<std::net::SocketAddr>,
    /// The subject of its certificate.
    pub(crate) subject: Option<String>,
    /// Whether it presented a certificate.
    pub(crate) has_cert: bool,
}

impl Caller {
    /// The caller of a request, from the connection info tonic puts in its extensions.
    pub(crate) fn of(extensions: &http::Extensions) -> Caller {
        if let Some(tls) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
            let certs = tls.peer_certs();
            let leaf = certs.as_ref().and_then(|certs| certs.first());
            return Caller {
                peer: tls.get_ref().remote_addr,
                subject: leaf.and_then(subject),
                has_cert: leaf.is_some(),
            };
        }
        let peer = extensions.get::<TcpConnectInfo>().and_then(|tcp| tcp.remote_addr);
        Caller { peer, subject: None, has_cert: false }
    }

    /// The subject as written in logs and messages.
    pub(crate) fn name(&self) -> &str {
        self.subject.as_deref().unwrap_or("anonymous")
    }
}

/// The action a gRPC method needs, by its path (`/log.v1.Log/Produce`); `None` for calls
/// that need only authentication (health, reflection, GetServers, the cluster's status).
/// A produce that a follower forwards (`forwarded`) needs `replicate`: the follower has
/// authorized its own client, and only a node may vouch for that.
pub(crate) fn action(path: &str, forwarded: bool) -> Option<Action> {
    match path {
        "/log.v1.Log/Produce" | "/log.v1.Log/ProduceStream" if forwarded => Some(Action::Replicate),
        "/log.v1.Log/Produce" | "/log.v1.Log/ProduceStream" => Some(Action::Produce),
        "/log.v1.Log/Consume" | "/log.v1.Log/ConsumeStream" => Some(Action::Consume),
        "/ringlog.admin.v1.Cluster/AddNode" | "/ringlog.admin.v1.Cluster/RemoveNode" => Some(Action::Admin),
        _ if path.starts_with("/raft.v1.Raft/") => Some(Action::Replicate),
        _ => None,
    }
}

impl Policy {
    /// Whether `caller` may call the method at `path` (`forwarded`: the request says a
    /// follower forwarded it).
    pub(crate) fn check(&self, caller: &Caller, path: &str, forwarded: bool) -> Result<(), Status> {
        if self.client_cert_required && !caller.has_cert {
            return Err(status::unauthenticated("a client certificate is required"));
        }
        if caller.has_cert && caller.subject.is_none() {
            return Err(status::unauthenticated(
                "the client certificate names no subject (no Common Name, DNS or URI name)",
            ));
        }
        match (&self.acl, action(path, forwarded)) {
            (Some(acl), Some(action)) if !acl.allows(caller.subject.as_deref(), action) => {
                Err(status::permission_denied(caller.name(), action))
            }
            _ => Ok(()),
        }
    }
}

/// The subject of a DER certificate: its Common Name, else its first DNS name, else its
/// first URI. `None` when it has none of them or does not parse.
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()).ok()?;
    if let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        return Some(cn.to_owned());
    }
    let sans = cert.subject_alternative_name().ok().flatten()?;
    let names = &sans.value.general_names;
    let dns = names.iter().find_map(|n| match n {
        GeneralName::DNSName(name) => Some(*name),
        _ => None,
    });
    let uri = names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    dns.or(uri).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::*;

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = sans;
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().clone()
    }

    #[test]
    fn common_name_then_dns_then_uri() {
        let dns = || SanType::DnsName("svc.example".try_into().unwrap());
        let uri = || SanType::URI("spiffe://example/ingest".try_into().unwrap());
        assert_eq!(subject(&cert(Some("alice"), vec![dns()])).as_deref(), Some("alice"));
        assert_eq!(subject(&cert(None, vec![uri(), dns()])).as_deref(), Some("svc.example"));
        assert_eq!(subject(&cert(None, vec![uri()])).as_deref(), Some("spiffe://example/ingest"));
        assert_eq!(subject(&cert(None, vec![])), None);
        assert_eq!(subject(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn decisions() {
        let acl = Acl::parse("writer, produce\n*, consume").unwrap();
        let policy = Policy { client_cert_required: true, acl: Some(acl) };
        let caller = |subject: Option<&str>, has_cert| Caller {
            peer: None,
            subject: subject.map(str::to_owned),
            has_cert,
        };
        let code = |c: &Caller, path: &str| policy.check(c, path, false).err().map(|s| s.code());
        assert_eq!(
            code(&caller(None, false), "/grpc.health.v1.Health/Check"),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(code(&caller(None, true), "/log.v1.Log/Consume"), Some(tonic::Code::Unauthenticated));
        assert_eq!(code(&caller(Some("writer"), true), "/log.v1.Log/ProduceStream"), None);
        assert_eq!(code(&caller(Some("reader"), true), "/log.v1.Log/ConsumeStream"), None);
        assert_eq!(code(&caller(Some("reader"), true), "/grpc.health.v1.Health/Check"), None);
        let denied = policy.check(&caller(Some("reader"), true), "/log.v1.Log/Produce", false).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.message(), "reader not permitted to produce");
    }

    #[test]
    fn nodes_replicate_and_only_nodes_forward() {
        let acl = Acl::parse(
            "writer, produce
node-2, replicate",
        )
        .unwrap();
        let policy = Policy { client_cert_required: true, acl: Some(acl) };
        let caller = |subject: &str| Caller { peer: None, subject: Some(subject.to_owned()), has_cert: true };
        let denied = |subject: &str, path: &str, forwarded| {
            policy.check(&caller(subject), path, forwarded).err().map(|s| s.message().to_owned())
        };
        assert_eq!(denied("node-2", "/raft.v1.Raft/AppendEntries", false), None);
        assert_eq!(
            denied("writer", "/raft.v1.Raft/Vote", false).as_deref(),
            Some("writer not permitted to replicate")
        );
        // A producer may not pass its request off as forwarded by a node...
        assert_eq!(
            denied("writer", "/log.v1.Log/Produce", true).as_deref(),
            Some("writer not permitted to replicate")
        );
        // ... and a node forwards what its own client was allowed to produce.
        assert_eq!(denied("node-2", "/log.v1.Log/ProduceStream", true), None);
        assert_eq!(
            denied("node-2", "/log.v1.Log/Produce", false).as_deref(),
            Some("node-2 not permitted to produce")
        );
    }
}
