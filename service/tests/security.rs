//! TLS, mutual TLS and ACL authorization over a real loopback server, with certificates made
//! in the test (rcgen, through `ringlog_service::certs`).

mod common;

use common::{TestServer, produce_request};
use ringlog_service::{
    Acl, TlsConfig,
    certs::{Authority, Issued, SERVER_NAMES},
    proto::{ConsumeRequest, log_client::LogClient},
};
use tokio_stream::StreamExt;
use tonic::{
    Code, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The policy of the tests: `alice` may do everything, `reader` may only consume.
const POLICY: &str = "# test policy\nalice, produce\nalice, consume\nreader, consume  # read-only\n";

struct Pki {
    ca: Authority,
    server: Issued,
}

impl Pki {
    fn new() -> Pki {
        let ca = Authority::new("test CA").unwrap();
        let server = ca.server(&SERVER_NAMES).unwrap();
        Pki { ca, server }
    }

    /// TLS for the server; mutual when `mutual`.
    fn server_tls(&self, mutual: bool) -> TlsConfig {
        let client_ca = mutual.then(|| self.ca.cert_pem().as_bytes().to_vec());
        TlsConfig::from_pem(self.server.cert_pem.clone(), self.server.key_pem.clone(), client_ca)
    }

    /// A TLS client trusting this CA, presenting `identity` (a client certificate) if given.
    fn client_tls(&self, identity: Option<&Issued>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca.cert_pem()));
        match identity {
            Some(issued) => tls.identity(Identity::from_pem(&issued.cert_pem, &issued.key_pem)),
            None => tls,
        }
    }
}

/// A mutual-TLS server with the test policy.
async fn mtls_server(pki: &Pki) -> TestServer {
    let tls = pki.server_tls(true);
    TestServer::start_with(|server| server.tls(tls).acl(Acl::parse(POLICY).unwrap())).await
}

async fn tls_channel(server: &TestServer, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

async fn client_as(server: &TestServer, pki: &Pki, subject: Option<&str>) -> LogClient<Channel> {
    let issued = subject.map(|s| pki.ca.client(s).unwrap());
    LogClient::new(tls_channel(server, pki.client_tls(issued.as_ref())).await.expect("TLS handshake"))
}

fn consume(offset: u64) -> ConsumeRequest {
    ConsumeRequest { offset, max_records: 0 }
}

/// The four RPCs' statuses for `client` (OK as `Code::Ok`); streams are judged on open and
/// first message.
async fn four_rpcs(client: &mut LogClient<Channel>) -> [(&'static str, Result<(), Status>); 4] {
    let produce = client.produce(produce_request("p")).await.map(drop);
    let consume_one = client.consume(consume(0)).await.map(drop);
    let produce_stream = async {
        let mut answers =
            client.produce_stream(tokio_stream::iter([produce_request("s")])).await?.into_inner();
        answers.message().await.map(drop)
    }
    .await;
    let consume_stream = async {
        let mut records = client.consume_stream(consume(0)).await?.into_inner();
        records.message().await.map(drop)
    }
    .await;
    [
        ("Produce", produce),
        ("Consume", consume_one),
        ("ProduceStream", produce_stream),
        ("ConsumeStream", consume_stream),
    ]
}

/// How tonic reports a connection the server's TLS refused: no gRPC status came back.
fn assert_transport_error(status: &Status) {
    assert!(matches!(status.code(), Code::Unknown | Code::Unavailable), "{status:?}");
    assert!(status.message().contains("transport error") || status.code() == Code::Unavailable, "{status:?}");
}

async fn health(channel: Channel) -> Result<i32, Status> {
    let request = HealthCheckRequest { service: "log.v1.Log".into() };
    Ok(HealthClient::new(channel).check(request).await?.into_inner().status)
}

#[tokio::test]
async fn mutual_tls_permitted_subject_uses_every_rpc() {
    let pki = Pki::new();
    let server = mtls_server(&pki).await;
    let mut alice = client_as(&server, &pki, Some("alice")).await;

    let produced = alice.produce(produce_request("first")).await.unwrap().into_inner();
    assert_eq!(produced.offset, 0);
    let read = alice.consume(consume(0)).await.unwrap().into_inner();
    assert_eq!(read.record.unwrap().value, "first");

    let requests = tokio_stream::iter([produce_request("second"), produce_request("third")]);
    let answers: Vec<u64> = alice
        .produce_stream(requests)
        .await
        .unwrap()
        .into_inner()
        .map(|answer| answer.unwrap().offset)
        .collect()
        .await;
    assert_eq!(answers, [1, 2]);

    let mut follow = alice.consume_stream(consume(0)).await.unwrap().into_inner();
    for want in ["first", "second", "third"] {
        let record = follow.message().await.unwrap().expect("a record").record.unwrap();
        assert_eq!(record.value, want);
    }
    drop(follow);

    let issued = pki.ca.client("alice").unwrap();
    let channel = tls_channel(&server, pki.client_tls(Some(&issued))).await.unwrap();
    assert_eq!(health(channel).await.unwrap(), 1, "SERVING");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn no_client_certificate_is_unauthenticated_on_every_rpc_and_health() {
    let pki = Pki::new();
    let server = mtls_server(&pki).await;
    // The handshake completes (client certificates are optional in TLS) and every call is
    // refused, so the client learns why.
    let mut anonymous = client_as(&server, &pki, None).await;
    for (rpc, result) in four_rpcs(&mut anonymous).await {
        let status = result.expect_err(rpc);
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
        assert_eq!(status.message(), "a client certificate is required", "{rpc}");
    }
    let channel = tls_channel(&server, pki.client_tls(None)).await.unwrap();
    assert_eq!(health(channel).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(server.log.next_offset(), 0, "nothing was written");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_subject_is_permission_denied_on_every_rpc() {
    let pki = Pki::new();
    let server = mtls_server(&pki).await;
    server.log.append("existing").unwrap();
    let mut mallory = client_as(&server, &pki, Some("mallory")).await;
    for (rpc, result) in four_rpcs(&mut mallory).await {
        let status = result.expect_err(rpc);
        assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
        let action = if rpc.starts_with("Produce") { "produce" } else { "consume" };
        assert_eq!(status.message(), format!("mallory not permitted to {action}"), "{rpc}");
    }
    assert_eq!(server.log.next_offset(), 1, "nothing was written");
    // Authenticated, so health answers.
    let issued = pki.ca.client("mallory").unwrap();
    let channel = tls_channel(&server, pki.client_tls(Some(&issued))).await.unwrap();
    assert_eq!(health(channel).await.unwrap(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn consume_only_subject_cannot_produce() {
    let pki = Pki::new();
    let server = mtls_server(&pki).await;
    server.log.append("existing").unwrap();
    let mut reader = client_as(&server, &pki, Some("reader")).await;
    let results = four_rpcs(&mut reader).await;
    for (rpc, result) in results {
        if rpc.starts_with("Produce") {
            let status = result.expect_err(rpc);
            assert_eq!(status.code(), Code::PermissionDenied, "{rpc}");
            assert_eq!(status.message(), "reader not permitted to produce", "{rpc}");
        } else {
            result.unwrap_or_else(|status| panic!("{rpc}: {status:?}"));
        }
    }
    assert_eq!(server.log.next_offset(), 1, "nothing was written");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let pki = Pki::new();
    let server = mtls_server(&pki).await;
    let stranger = Authority::new("someone else's CA").unwrap().client("alice").unwrap();
    // The client trusts the server, but its certificate does not chain to the server's client CA.
    let tls = pki.client_tls(Some(&stranger));
    // With TLS 1.3 the client finishes its side of the handshake before the server checks the
    // certificate, so the refusal (an `unknown CA` alert) arrives with the first call.
    match tls_channel(&server, tls).await {
        Err(error) => assert!(format!("{error:?}").contains("UnknownCA"), "{error:?}"),
        Ok(channel) => {
            let status = LogClient::new(channel).produce(produce_request("x")).await.unwrap_err();
            assert_transport_error(&status);
            assert!(format!("{status:?}").contains("UnknownCA"), "{status:?}");
        }
    }
    assert_eq!(server.log.next_offset(), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_plaintext_client_cannot_talk_to_a_tls_server() {
    let pki = Pki::new();
    let server = mtls_server(&pki).await;
    let plain = Endpoint::from_shared(format!("http://{}", server.addr)).unwrap();
    match plain.connect().await {
        Err(_) => {}
        Ok(channel) => {
            let status = LogClient::new(channel).produce(produce_request("x")).await.unwrap_err();
            assert_transport_error(&status);
        }
    }
    assert_eq!(server.log.next_offset(), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_tls_client_cannot_talk_to_a_plaintext_server() {
    let pki = Pki::new();
    let server = TestServer::start(common::config()).await;
    match tls_channel(&server, pki.client_tls(None)).await {
        Err(_) => {}
        Ok(channel) => {
            let status = LogClient::new(channel).produce(produce_request("x")).await.unwrap_err();
            assert_transport_error(&status);
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn server_only_tls_serves_anonymous_clients_by_wildcard_rules() {
    let pki = Pki::new();
    let tls = pki.server_tls(false);
    let acl = Acl::parse("*, consume").unwrap();
    let server = TestServer::start_with(|server| server.tls(tls).acl(acl)).await;
    server.log.append("public").unwrap();
    let mut anonymous = client_as(&server, &pki, None).await;
    let read = anonymous.consume(consume(0)).await.unwrap().into_inner();
    assert_eq!(read.record.unwrap().value, "public");
    let status = anonymous.produce(produce_request("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "anonymous not permitted to produce");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_acl_without_tls_applies_wildcard_rules_to_plaintext_clients() {
    let acl = Acl::parse("*, produce").unwrap();
    let server = TestServer::start_with(|server| server.acl(acl)).await;
    let mut client = server.client().await;
    client.produce(produce_request("x")).await.unwrap();
    let status = client.consume(consume(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "anonymous not permitted to consume");
    // Plaintext health probes still answer.
    assert_eq!(health(server.channel().await).await.unwrap(), 1);
    server.stop().await.unwrap();
}

#[test]
fn acl_file_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl");
    std::fs::write(&path, "# policy\nalice, produce\n\nbob, delete\n").unwrap();
    let error = Acl::from_file(&path).unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("line 4: unknown action `delete`"), "{error}");

    std::fs::write(&path, "alice produce\n").unwrap();
    let error = Acl::from_file(&path).unwrap_err().to_string();
    assert!(error.contains("line 1: expected `subject, action`"), "{error}");

    let error = Acl::from_file(&dir.path().join("missing")).unwrap_err().to_string();
    assert!(error.contains("missing"), "{error}");
}
